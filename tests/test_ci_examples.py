"""The CI recipes in examples/ci/ parse, and every ``audit`` command they run is one this CLI accepts.

A recipe that calls an option the tool no longer has fails only in the
user's pipeline, after the install; these tests read each recipe's shell
steps, expand its variables, and check every ``audit ...`` command line
against the click command it names: the subcommand exists, every option
is one of its options with the right number of values (and a valid value
where it is a choice or a number), the required options and arguments are
there.  Nothing is run.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from audit.cli import cli

CI = Path(__file__).resolve().parents[1] / "examples" / "ci"
GITHUB = CI / "github-actions.yml"
GITLAB = CI / "gitlab-ci.yml"

#: ``audit`` where a command starts: a line's start, after ``$(``, an operator, ``then`` or ``do``.
_COMMAND = re.compile(r"(?:^|\$\(|;|&&|\|\||\bthen\b|\bdo\b)\s*audit\s+([^|;&)>\n]*)", re.MULTILINE)
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
#: Parameter types whose values are checked (a path is the user's, and need not exist here).
_CHECKED_TYPES = (click.Choice, click.types.IntParamType, click.types.FloatParamType)


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def github_scripts() -> tuple[list[str], dict[str, str]]:
    data = load(GITHUB)
    env = {k: str(v) for k, v in data.get("env", {}).items()}
    scripts = [step["run"] for job in data["jobs"].values() for step in job["steps"] if "run" in step]
    return scripts, env


def gitlab_job() -> dict:
    return load(GITLAB)["bias-audit"]


def gitlab_scripts() -> tuple[list[str], dict[str, str]]:
    job = gitlab_job()
    env = {k: str(v) for k, v in job.get("variables", {}).items()}
    return [*job.get("before_script", []), *job["script"]], env


def audit_commands(scripts: list[str], env: dict[str, str]) -> list[list[str]]:
    """Every ``audit`` command line of the scripts, variables expanded, as argument lists."""
    commands = []
    for script in scripts:
        text = script.replace("\\\n", " ")
        for match in _COMMAND.finditer(text):
            expanded = _VARIABLE.sub(lambda m: env.get(m.group(1), "VALUE"), match.group(1))
            commands.append(shlex.split(expanded))
    return commands


def _find_option(params: list[click.Parameter], name: str) -> click.Option | None:
    for param in params:
        if isinstance(param, click.Option) and name in (*param.opts, *param.secondary_opts):
            return param
    return None


def command_problem(args: list[str]) -> str | None:
    """Why ``audit ARGS`` would be refused by the CLI's parser (options, arity, required ones), or None."""
    command: click.Command = cli
    ctx = click.Context(cli, info_name="audit", **cli.context_settings)
    words = ["audit"]
    args = list(args)
    while isinstance(command, click.Group):
        if args and args[0].startswith("-"):
            option = _find_option(command.get_params(ctx), args[0])
            if option is None:
                return f"{' '.join(words)} has no option {args[0]}"
            return None if option.is_eager else f"{' '.join(words)}: {args[0]} must follow a subcommand"
        if not args:
            return f"{' '.join(words)} needs a subcommand"
        name = args.pop(0)
        if name not in command.commands:
            return f"{' '.join(words)} has no subcommand {name!r}"
        command, words = command.commands[name], [*words, name]
        ctx = click.Context(command, info_name=name, parent=ctx)
    params = command.get_params(ctx)          # the help option too
    where = " ".join(words)
    given: set[str] = set()
    positionals: list[str] = []
    while args:
        token = args.pop(0)
        if not token.startswith("-") or token == "-":
            positionals.append(token)
            continue
        name, has_value, value = token.partition("=")
        option = _find_option(params, name)
        if option is None:
            return f"{where} has no option {name}"
        if option.is_eager and option.expose_value is False:      # --help
            return None
        given.add(option.name)
        if option.is_flag or option.count:
            if has_value:
                return f"{where}: {name} is a flag and takes no value"
            continue
        values = [value] if has_value else []
        while len(values) < option.nargs:
            if not args or args[0].startswith("--"):
                return f"{where}: {name} needs {option.nargs} value(s)"
            values.append(args.pop(0))
        if isinstance(option.type, _CHECKED_TYPES):
            for v in values:
                try:
                    option.type.convert(v, option, None)
                except click.BadParameter as exc:
                    return f"{where}: {name} {v!r}: {exc.message}"
    for param in params:
        if isinstance(param, click.Option) and param.required and param.name not in given:
            return f"{where} needs {max(param.opts, key=len)}"
    arguments = [p for p in params if isinstance(p, click.Argument)]
    wanted = sum(p.nargs for p in arguments if p.nargs > 0)
    unlimited = any(p.nargs < 0 for p in arguments)
    if len(positionals) < sum(p.nargs for p in arguments if p.required and p.nargs > 0):
        return f"{where} needs {wanted} argument(s), got {positionals}"
    if len(positionals) > wanted and not unlimited:
        return f"{where} takes {wanted} argument(s), got {positionals}"
    return None


# --------------------------------------------------------------------------- the checker itself

@pytest.mark.parametrize("line, problem", [
    ("run --dataset d --bogus", "no option --bogus"),
    ("gate out --policy", "needs 1 value"),
    ("run --dataset d --markdown", "needs 1 value"),
    ("gate --policy p.toml", "needs 1 argument"),
    ("generator train --dataset d", "needs --out"),
    ("generator fit --dataset d", "no subcommand 'fit'"),
    ("run --dataset d --image-size 96", "--image-size '96'"),
    ("run --dataset d --quiet=yes", "is a flag"),
    ("targets extra", "takes 0 argument"),
])
def test_the_checker_refuses_a_command_the_cli_would_refuse(line, problem):
    found = command_problem(shlex.split(line))
    assert found is not None and problem in found, found


@pytest.mark.parametrize("line", ["--version", "run --help", "gate out --policy p.toml --markdown gate.md",
                                  "targets --fingerprint dlib", "run -d d -q --epochs=3"])
def test_the_checker_accepts_a_valid_command(line):
    assert command_problem(shlex.split(line)) is None


# --------------------------------------------------------------------------- the recipes

@pytest.mark.parametrize("recipe", [github_scripts, gitlab_scripts], ids=["github", "gitlab"])
def test_every_audit_command_of_a_recipe_is_valid(recipe):
    commands = audit_commands(*recipe())
    assert commands, "no audit command found"
    problems = [(" ".join(c), command_problem(c)) for c in commands]
    assert [p for p in problems if p[1] is not None] == []
    lines = [" ".join(c[:2]) for c in commands]
    for expected in ("targets --fingerprint", "generator train", "run --target"):
        assert expected in lines, (expected, lines)


@pytest.mark.parametrize("recipe", [github_scripts, gitlab_scripts], ids=["github", "gitlab"])
def test_a_recipe_trains_on_the_corpus_without_the_audit_set_and_audits_with_that_generator(recipe):
    commands = audit_commands(*recipe())
    train = next(c for c in commands if c[:2] == ["generator", "train"])
    run = next(c for c in commands if c[0] == "run")
    value = lambda c, opt: c[c.index(opt) + 1]          # noqa: E731
    assert value(train, "--exclude") == value(run, "--dataset")
    assert value(train, "--dataset") != value(run, "--dataset")
    assert value(train, "--out").rstrip("/") == value(run, "--generator").rstrip("/")
    assert {"--junit", "--markdown", "--policy"} <= set(run)
    assert value(run, "--markdown").startswith(value(run, "--out") + "/")


def test_github_caches_the_generator_on_the_target_fingerprint_and_publishes_the_verdict():
    data = load(GITHUB)
    steps = data["jobs"]["audit"]["steps"]
    keys = next(s for s in steps if s.get("id") == "keys")
    assert "audit targets --fingerprint" in keys["run"]
    restore = next(s for s in steps if s.get("id") == "generator")
    assert restore["uses"].startswith("actions/cache/restore@") and restore["with"]["path"].rstrip("/") == "gen"
    assert "steps.keys.outputs.generator" in restore["with"]["key"]
    train = next(s for s in steps if "generator train" in s.get("run", ""))
    miss = "steps.generator.outputs.cache-hit != 'true'"
    assert train["if"] == miss
    # saved right after training, not at the job's end: a job whose policy fails keeps its generator
    save = steps[steps.index(train) + 1]
    assert save["uses"].startswith("actions/cache/save@") and save["if"] == miss
    assert save["with"] == restore["with"]
    assert ">> \"$GITHUB_STEP_SUMMARY\"" in next(s for s in steps if s.get("id") == "audit")["run"]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"
    assert {"audit-out/gate-junit.xml", "audit-out/gate.md"} <= set(upload["with"]["path"].split())
    final = steps[-1]
    assert final["if"] == "always()" and "1)" in final["run"] and "exit 1" in final["run"]
    assert (data.get("on") or data.get(True))["pull_request"] is None


def test_gitlab_caches_the_generator_and_reports_junit():
    job = gitlab_job()
    variables = job["variables"]
    generator = next(c for c in job["cache"] if "gen/" in c["paths"])
    assert generator["key"]["files"] == [f"{variables['CORPUS']}/manifest.csv",
                                         f"{variables['AUDIT_SET']}/manifest.csv"]
    script = "\n".join(job["script"])
    assert "audit targets --fingerprint" in script and "gen.key" in generator["paths"]
    assert generator["when"] == "always"          # kept when the policy fails the job
    assert 'exit "$code"' in script
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always"
    assert artifacts["reports"]["junit"] == "audit-out/gate-junit.xml"
    assert {"audit-out/gate-junit.xml", "audit-out/gate.md"} <= set(artifacts["paths"])


# --------------------------------------------------------------------------- the shell steps, with a stub audit

STUB = """#!/bin/sh
# 'audit' for the recipes' shell steps: run exits $RUN_CODE, and writes its --markdown verdict
# when it got as far as the verdict (exit 0 or 1).
echo "$*" >> "$STUB_LOG"
case "$1" in
  targets) echo "dlib-resnet-v1:sha256:55533b28a95800a5"; exit "${TARGETS_CODE:-0}" ;;
  --version) echo "audit, version 0.1.0" ;;
  run)
    code="${RUN_CODE:-0}"
    while [ $# -gt 0 ]; do
      if [ "$1" = --markdown ] && [ "$code" -le 1 ]; then printf '## Bias audit gate: stub\\n' > "$2"; fi
      shift
    done
    exit "$code" ;;
esac
"""


def run_shell(script: str, tmp_path: Path, env: dict[str, str], **codes: int):
    import os
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "audit"
    stub.write_text(STUB)
    stub.chmod(0o755)
    full = {**os.environ, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_LOG": str(tmp_path / "log"),
            **{k.upper(): str(v) for k, v in codes.items()}}
    return subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=full, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("run_code, expected", [(0, 0), (1, 1), (2, 2), (3, 3)])
def test_github_publishes_the_verdict_and_fails_the_job_on_its_exit_code(tmp_path, run_code, expected):
    data = load(GITHUB)
    steps = data["jobs"]["audit"]["steps"]
    audit_step = next(s for s in steps if s.get("id") == "audit")
    (tmp_path / "audit-out").mkdir()
    files = {"GITHUB_OUTPUT": str(tmp_path / "output"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")}
    env = {**{k: str(v) for k, v in data["env"].items()}, **files}
    done = run_shell(audit_step["run"], tmp_path, env, run_code=run_code)
    assert done.returncode == 0, done.stderr                 # the step itself never fails: the last one does
    output = (tmp_path / "output").read_text()
    assert output == f"exit_code={run_code}\n"
    summary = (tmp_path / "summary").read_text()
    assert summary.startswith("## Bias audit gate: " + ("stub" if run_code <= 1 else "ERROR"))
    final = steps[-1]["run"].replace("${{ steps.audit.outputs.exit_code }}", str(run_code))
    assert run_shell(final, tmp_path, env).returncode == expected


@pytest.mark.parametrize("run_code", [0, 1, 2])
def test_gitlab_fails_the_job_on_the_exit_code_and_retrains_only_on_a_new_key(tmp_path, run_code):
    job = gitlab_job()
    env = {k: str(v) for k, v in job["variables"].items()}
    script = "\n".join(job["script"])
    (tmp_path / "audit-out").mkdir()
    done = run_shell(script, tmp_path, env, run_code=run_code)
    assert done.returncode == run_code, done.stderr
    assert ("Bias audit gate: stub" in done.stdout) is (run_code <= 1)
    calls = (tmp_path / "log").read_text().splitlines()
    assert sum(c.startswith("generator train") for c in calls) == 1
    again = run_shell(script, tmp_path, env, run_code=run_code)
    calls = (tmp_path / "log").read_text().splitlines()
    assert again.returncode == done.returncode
    assert sum(c.startswith("generator train") for c in calls) == 1          # gen.key matched: not retrained


def test_github_cache_keys_name_the_fingerprint_and_fail_when_it_cannot_be_read(tmp_path):
    data = load(GITHUB)
    keys = next(s for s in data["jobs"]["audit"]["steps"] if s.get("id") == "keys")
    env = {k: str(v) for k, v in data["env"].items()}
    for name in ("CORPUS", "AUDIT_SET"):
        (tmp_path / env[name]).mkdir(parents=True)
        (tmp_path / env[name] / "manifest.csv").write_text(f"path\n{name}.jpg\n")
    env["GITHUB_OUTPUT"] = str(tmp_path / "output")
    done = run_shell(keys["run"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    output = dict(line.split("=", 1) for line in (tmp_path / "output").read_text().splitlines())
    assert output["target"] == "dlib-resnet-v1-sha256-55533b28a95800a5"
    assert re.fullmatch(r"audit-generator-dlib-resnet-v1-sha256-55533b28a95800a5-[0-9a-f]{16}-[0-9a-f]{16}",
                        output["generator"]), output
    (tmp_path / "output").write_text("")
    (tmp_path / env["CORPUS"] / "manifest.csv").write_text("path\nother.jpg\n")
    run_shell(keys["run"], tmp_path, env)
    changed = dict(line.split("=", 1) for line in (tmp_path / "output").read_text().splitlines())
    assert changed["generator"] != output["generator"]              # another corpus: another generator
    (tmp_path / "output").write_text("")
    failed = run_shell(keys["run"], tmp_path, env, targets_code=2)
    assert failed.returncode != 0                                    # never an empty fingerprint in the key


def test_gitlab_stops_when_the_fingerprint_cannot_be_read(tmp_path):
    job = gitlab_job()
    env = {k: str(v) for k, v in job["variables"].items()}
    (tmp_path / "audit-out").mkdir()
    done = run_shell("\n".join(job["script"]), tmp_path, env, targets_code=2)
    assert done.returncode != 0
    assert not any(c.startswith(("generator", "run")) for c in (tmp_path / "log").read_text().splitlines())
