"""Running the CLI over the corpus and checking its promises, command by command.

For every command run, :class:`CorpusRunner` checks:

* **no traceback**: nothing escapes the CLI, no ``Traceback`` in the output,
  and no exit code 4 (an internal error is a bug this corpus must not find);
* **a documented exit code**: 0, 1, 2, 3, 129, 130 or 143, and a failure ends with one
  ``Error:`` line;
* **every input accounted for** (a *silent drop* otherwise): each manifest
  row is a usable image or an exclusion with a reason; each usable image
  gets a vector or is named with its reason; each source file of an import
  is in the manifest or in the exclusions;
* **nothing written outside the output**, and **the old outputs intact
  after a failure** (a *data-loss case* otherwise), from snapshots of the
  case's whole folder taken before and after;
* **no injection into an output**: no control character a terminal would
  obey in what a command prints; and (checked by :mod:`tests.corpus.exercise`
  on the files) no CSV report cell a spreadsheet would run as a formula, a
  well-formed JUnit file, a Markdown verdict whose table rows keep their
  cells and hold no link, image or HTML, a report without raw control
  characters or markup from a label.

Problems are collected, not raised at the first one, so that a run of the
corpus says everything that is wrong; :data:`TALLY` adds them up for the
summary line the test session prints.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import stat
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from click.testing import CliRunner

from audit.cli import cli

DOCUMENTED_EXIT_CODES = (0, 1, 2, 3, 129, 130, 143)
#: Files a command may write beside its output, by design: the dataset folder's hash cache.
SIDE_FILES = (".sha256-cache.csv",)

TRACEBACK = "traceback"
SILENT_DROP = "silent drop"
DATA_LOSS = "data loss"
OUTSIDE_WRITE = "write outside the output"
EXIT_CODE = "undocumented exit code"
EXPECTATION = "expectation"
INJECTION = "output injection"
#: A raw character a terminal would obey or that hides text (line feeds and tabs are the tool's own).
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: First characters that make a spreadsheet run a cell (audit.sinks.CSV_FORMULA_PREFIXES, but the quote).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\0")


@dataclass
class Tally:
    """What the corpus found, over the whole session."""

    cases: set[str] = field(default_factory=set)
    runs: int = 0
    problems: list[tuple[str, str, str, str]] = field(default_factory=list)   # case, command, kind, detail

    def count(self, kind: str) -> int:
        return sum(1 for p in self.problems if p[2] == kind)

    def count_cases(self, *kinds: str) -> int:
        return len({p[0] for p in self.problems if p[2] in kinds})

    def summary(self) -> str:
        return (f"bad-input corpus: {len(self.cases)} cases tried ({self.runs} command runs); "
                f"{self.count(TRACEBACK)} tracebacks, {self.count(SILENT_DROP)} silent drops, "
                f"{self.count_cases(DATA_LOSS, OUTSIDE_WRITE)} data-loss cases; "
                f"{self.count(EXIT_CODE)} undocumented exit codes, {self.count(EXPECTATION)} failed expectations, "
                f"{self.count(INJECTION)} output injections")


TALLY = Tally()


# --------------------------------------------------------------------------- snapshots

def _digest(path: str, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed, special files never opened) and its content."""
    entries: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, root)
            if os.path.basename(relative) in SIDE_FILES:
                continue
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                entries[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                entries[relative] = ("folder",)
            elif stat.S_ISREG(info.st_mode):
                entries[relative] = ("file", info.st_size, _digest(path, info.st_size))
            else:
                entries[relative] = ("special", stat.S_IFMT(info.st_mode))
    return entries


def _under(relative: str, outputs: Iterable[str]) -> bool:
    return any(relative == out or relative.startswith(out.rstrip("/") + "/") for out in outputs)


# --------------------------------------------------------------------------- running

@dataclass
class Run:
    """One command run and what came of it."""

    case: str
    command: str
    args: list[str]
    exit_code: int
    output: str
    problems: list[tuple[str, str]] = field(default_factory=list)

    def problem(self, kind: str, detail: str) -> None:
        self.problems.append((kind, detail))


class CorpusRunner:
    """Runs commands of one case inside its folder ``root`` and checks every promise."""

    def __init__(self, case: str, root: Path) -> None:
        self.case = case
        self.root = root
        self.runs: list[Run] = []
        TALLY.cases.add(case)

    def invoke(self, command: str, args: Sequence[object], *, outputs: Sequence[Path] = (),
               keep_on_failure: Sequence[Path] = ()) -> Run:
        """Run ``audit ARGS``; ``outputs`` may change, ``keep_on_failure`` must not change unless it succeeds."""
        before = snapshot(self.root)
        result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
        after = snapshot(self.root)
        run = Run(self.case, command, [str(a) for a in args], result.exit_code, result.output)
        self._check_exit(run, result)
        self._check_writes(run, before, after, outputs, keep_on_failure)
        if (raw := RAW_CONTROL.search(run.output)) is not None:
            run.problem(INJECTION, f"the terminal got a raw {raw.group()!r}: "
                                   f"{run.output[max(0, raw.start() - 80):raw.end() + 80]!r}")
        self.runs.append(run)
        TALLY.runs += 1
        return run

    def _check_exit(self, run: Run, result) -> None:
        escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
        if escaped or "Traceback (most recent call last)" in run.output or run.exit_code == 4:
            run.problem(TRACEBACK, f"exit {run.exit_code}: {type(result.exception).__name__ if escaped else ''} "
                                   f"{run.output.strip()[-400:]}")
            return
        if run.exit_code not in DOCUMENTED_EXIT_CODES:
            run.problem(EXIT_CODE, f"exit {run.exit_code}: {run.output.strip()[-300:]}")
        elif run.exit_code == 2 and not run.output.strip().splitlines()[-1:] [0].startswith("Error: "):
            run.problem(EXIT_CODE, f"exit 2 without an 'Error:' line: {run.output.strip()[-300:]}")

    def _check_writes(self, run: Run, before: dict, after: dict, outputs: Sequence[Path],
                      keep_on_failure: Sequence[Path]) -> None:
        allowed = [os.path.relpath(p, self.root) for p in outputs]
        kept = [os.path.relpath(p, self.root) for p in keep_on_failure]
        for relative in sorted(set(before) | set(after)):
            if before.get(relative) == after.get(relative):
                continue
            if _under(relative, kept) and run.exit_code not in (0, 1):
                run.problem(DATA_LOSS, f"{relative} changed although the command failed (exit {run.exit_code})")
            elif not _under(relative, allowed + kept):
                kind = DATA_LOSS if relative in before else OUTSIDE_WRITE
                run.problem(kind, f"{relative} {'changed or removed' if relative in before else 'written'} "
                                  "outside the command's output")

    def expect(self, run: Run, condition: bool, detail: str, *, kind: str = EXPECTATION) -> None:
        if not condition:
            run.problem(kind, detail)

    def report(self) -> list[str]:
        """Every problem of this case, recorded in the session's tally; the lines to fail the test with."""
        lines = []
        for run in self.runs:
            for kind, detail in run.problems:
                TALLY.problems.append((self.case, run.command, kind, detail))
                lines.append(f"{self.case} / {run.command}: {kind}: {detail}")
        return lines


# --------------------------------------------------------------------------- accounting

def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def formula_cells(path: Path) -> list[str]:
    """The cells of a CSV report that a spreadsheet would run: text starting with a formula sign."""
    with open(path, newline="", encoding="utf-8") as fh:
        cells = [cell for row in csv.reader(fh) for cell in row]
    bad = []
    for cell in cells:
        if cell.startswith(FORMULA_START):
            try:
                float(cell)
            except ValueError:
                bad.append(cell)
    return bad


def junit_problem(path: Path) -> str | None:
    """Why a JUnit file is not well-formed XML, or None."""
    try:
        ET.parse(path)
    except ET.ParseError as exc:
        return f"{path.name} is not well-formed XML: {exc}"
    return None


#: What GitHub and GitLab turn into a mention, an issue or merge-request reference, or a link in plain text.
_MARKDOWN_REFERENCE = re.compile(r"[@#!][A-Za-z0-9]|://|\bwww\.", re.IGNORECASE)


def markdown_problem(path: Path, columns: int) -> str | None:
    """Why a Markdown verdict's table is not one row of ``columns`` plain cells per check, or None.

    Rendered as CommonMark with GitHub's tables (markdown-it): a label must
    not split a cell, end a row, or become a link, an image, HTML, a mention
    or a reference.
    """
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(path.read_text(encoding="utf-8"))
    cells, rows = 0, 0
    for token in tokens:
        if token.type == "tr_open":
            cells, rows = 0, rows + 1
        elif token.type in ("th_open", "td_open"):
            cells += 1
        elif token.type == "tr_close" and cells != columns:
            return f"{path.name}: a table row has {cells} cells, not {columns}"
        elif token.type.startswith("html"):
            return f"{path.name} holds HTML: {token.content!r}"
        for child in token.children or ():
            if child.type.startswith(("html", "link", "image", "code")):
                return f"{path.name} holds a {child.type}: {child.content or child.attrs!r}"
            if child.type == "text" and (found := _MARKDOWN_REFERENCE.search(child.content)) is not None:
                return f"{path.name} holds a mention, reference or address a renderer acts on: {found.group()!r}"
    return None if rows else f"{path.name} has no table"


def report_problem(html: str, labels: Iterable[str]) -> str | None:
    """A raw control character, or a label's markup unescaped, in a report's HTML; or None."""
    if (raw := RAW_CONTROL.search(html.replace("\t", " "))) is not None:
        return f"the report holds a raw {raw.group()!r}"
    markup = [label for label in labels if "<" in label and label in html]
    return f"the report holds the markup {markup[0]!r} unescaped" if markup else None


def describe_counts(output: str) -> dict:
    """The JSON of 'audit dataset describe --json' (the progress line, if any, before it)."""
    start = output.index("{")
    return json.loads(output[start:])


def source_files(src: Path) -> set[str]:
    """Non-hidden files under ``src`` (symlinked folders followed once), as the importers list them."""
    from audit.data.importers import _walk

    return set(_walk(src))


def parse_csv_text(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


Check = Callable[[CorpusRunner, Run], None]
