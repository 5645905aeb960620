"""Every command example in the README, docs/ and the commands' --help texts is a valid command line.

A user copies the first example they see.  This test extracts each shell
line that runs ``audit`` from those texts (fenced code blocks and inline
code in Markdown, example lines in the help) and checks it against the CLI
itself: the command exists, every option is one of its options with the
right number of values, and the positional arguments fit.  It does not run
them (most need a dataset); the quick start runs end to end in
``tests/test_run_corpus.py`` where the research data is present.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from audit.cli import cli

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("examples/*.md"),
                   *ROOT.glob("datasets/*.md")])
_FENCE = re.compile(r"```(?:bash|sh|shell|console)?\n(.*?)```", re.S)
_INLINE = re.compile(r"`(audit [^`]+)`")
_SEPARATORS = {"&&", "||", ";", "|", "&", ">", ">>", "<", "2>", "2>&1"}


def _logical_lines(text: str) -> list[str]:
    return text.replace("\\\n", " ").splitlines()


def _audit_lines(text: str) -> list[str]:
    """The lines of ``text`` that run ``audit`` (a prompt ``$`` stripped)."""
    out = []
    for line in _logical_lines(text):
        line = line.strip().removeprefix("$ ").strip()
        if "audit " in line and not line.startswith("#"):
            out.append(line.split(" #", 1)[0])
    return out


def markdown_examples() -> list[tuple[str, str, bool]]:
    """``(file, line, whole)``: ``whole`` for a line of a code block, which must be a complete command;
    an inline mention (``audit gate``, ``audit run --train-dataset``) names a command or an option, so
    only its command and options are checked."""
    found = []
    for path in MARKDOWN:
        text = path.read_text(encoding="utf-8")
        for block in _FENCE.findall(text):
            found += [(path.name, line, True) for line in _audit_lines(block)]
        outside = _FENCE.sub("", text)
        found += [(path.name, m, False) for m in _INLINE.findall(outside)]
    return found


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from _commands(command, prefix + (name,))


def help_examples() -> list[tuple[str, str, bool]]:
    found = [("audit --help", line, True) for line in _audit_lines(cli.help or "") if line.startswith("audit ")]
    for words, command in _commands(cli):
        text = "\n".join(filter(None, [command.help, command.epilog]))
        found += [("audit " + " ".join(words) + " --help", line, True) for line in _audit_lines(text)
                  if line.lstrip().startswith("audit ")]
    return found


def segments(line: str) -> list[list[str]]:
    """The ``audit ...`` commands of a shell line, split at ``&&``, ``|``, ``;`` and redirections."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:            # an apostrophe in prose around the command: split on spaces
        tokens = line.split()
    out, current = [], []
    for token in tokens + [";"]:
        if token in _SEPARATORS or set(token) <= set(";&|<>"):
            if current and Path(current[0]).name == "audit":
                out.append(current[1:])
            current = []
        else:
            current.append(token)
    return out


def _placeholder(token: str) -> bool:
    return token in ("...", "…") or token.startswith("[") and token.endswith("]") and " " not in token


def check_command_line(args: list[str], whole: bool = True) -> str | None:
    """Why ``audit ARGS`` is not a valid command line, or None (``whole=False``: a mention, whose
    option values and positional arguments may be left out)."""
    args = [t.strip("[]") for t in args if not _placeholder(t)]
    args = [t for t in args if t]
    command: click.Command = cli
    words = ["audit"]
    while isinstance(command, click.Group):
        if not args or args[0] in ("--help", "-h", "--version"):
            return None
        name, args = args[0], args[1:]
        if name not in command.commands:
            return f"{' '.join(words)} has no command {name!r}"
        command = command.commands[name]
        words.append(name)
    options = {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts + p.secondary_opts}
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    positional = 0
    i = 0
    while i < len(args):
        token = args[i]
        if token in ("--help", "-h"):
            return None
        if token.startswith("-") and len(token) > 1 and not re.fullmatch(r"-\d[\d.e-]*", token):
            name, _, inline = token.partition("=")
            option = options.get(name)
            if option is None:
                return f"{' '.join(words)} has no option {name!r}"
            takes = 0 if (option.is_flag or option.count) else option.nargs
            if inline:
                takes -= 1
            values = args[i + 1: i + 1 + takes]
            if whole and (len(values) < takes or any(v.startswith("--") for v in values)):
                return f"{' '.join(words)} {name} needs {option.nargs} value(s)"
            i += 1 + max(takes, 0)
            continue
        positional += 1
        i += 1
    unlimited = any(a.nargs == -1 for a in arguments)
    most = sum(a.nargs for a in arguments if a.nargs > 0)
    least = sum(a.nargs for a in arguments if a.required and a.nargs > 0)
    if positional > most and not unlimited and whole:
        return f"{' '.join(words)} takes at most {most} argument(s), the example gives {positional}"
    if positional < least and whole:
        return f"{' '.join(words)} needs {least} argument(s), the example gives {positional}"
    return None


EXAMPLES = markdown_examples() + help_examples()


def test_the_texts_hold_examples_to_check():
    sources = {source for source, _, _ in EXAMPLES}
    assert "README.md" in sources and "audit --help" in sources
    assert len(EXAMPLES) >= 20


@pytest.mark.parametrize("source, line, whole", EXAMPLES, ids=[f"{s}: {l[:60]}" for s, l, _ in EXAMPLES])
def test_every_example_is_a_valid_command_line(source, line, whole):
    problems = [p for args in segments(line) if (p := check_command_line(args, whole))]
    assert not problems, f"{source}: {line!r}: {problems}"


@pytest.mark.parametrize("line, problem", [
    ("audit run --target dlib --datasett data/x", "has no option '--datasett'"),
    ("audit gate runs/x --policy", "needs 1 value"),
    ("audit dataset imprt utkface a b", "has no command 'imprt'"),
    ("audit report a b c", "takes at most"),
])
def test_a_wrong_example_is_caught(line, problem):
    (args,) = segments(line)
    assert problem in (check_command_line(args) or "")
