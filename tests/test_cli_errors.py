"""The CLI's guarantee: one ``Error:`` line and a documented exit code, never a traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import audit.cli as cli_module
from audit.cli import cli
from audit.errors import EXIT_INPUT_ERROR, EXIT_INTERNAL_ERROR, InputError


@pytest.fixture(autouse=True)
def crash_logs(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "logs"
    monkeypatch.setenv("AUDIT_LOG_DIR", str(folder))
    return folder


def _boom(*args, **kwargs):
    raise ZeroDivisionError("division by zero in the target list")


def test_a_bug_is_one_line_naming_the_command_and_a_log_with_the_traceback(monkeypatch, crash_logs):
    monkeypatch.setattr("audit.commands.targets.list_targets", _boom)
    result = CliRunner().invoke(cli, ["targets"])
    assert result.exit_code == EXIT_INTERNAL_ERROR
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: internal error in 'audit targets': ZeroDivisionError: division by "
                               "zero in the target list. This is a bug in face-bias-audit, not a problem "
                               "with your input. The traceback is in ")
    assert "Traceback" not in result.output
    (log,) = crash_logs.iterdir()
    assert str(log) in lines[0]
    text = log.read_text()
    assert "command: audit targets" in text
    assert "Traceback (most recent call last)" in text and "_boom" in text


def test_a_bug_names_the_item_recorded_on_the_way_up(monkeypatch):
    def fails_on_an_item(*args, **kwargs):
        exc = ValueError("unexpected shape")
        exc.add_note("while embedding image 'img/a.png'")
        raise exc

    monkeypatch.setattr("audit.commands.targets.list_targets", fails_on_an_item)
    result = CliRunner().invoke(cli, ["targets"])
    assert result.exit_code == EXIT_INTERNAL_ERROR
    assert "ValueError: unexpected shape (while embedding image 'img/a.png')." in result.output


def test_a_full_disk_is_the_environment_not_a_bug(monkeypatch, crash_logs):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/results.json")

    monkeypatch.setattr("audit.commands.targets.list_targets", full)
    result = CliRunner().invoke(cli, ["targets"])
    assert result.exit_code == EXIT_INPUT_ERROR
    assert result.output == ("Error: Cannot use '/data/out/results.json': no space left on the disk. Free "
                             "some space on that disk, or write it elsewhere on another disk.\n")
    assert not crash_logs.exists()


def test_a_command_module_that_cannot_be_imported_fails_every_command_loudly(monkeypatch):
    monkeypatch.setattr(cli_module, "_BROKEN_COMMANDS", {})
    cli_module._register_commands((("audit.commands.no_such_module", "gone"),))
    assert "audit.commands.no_such_module" in cli_module._BROKEN_COMMANDS
    result = CliRunner().invoke(cli, ["targets"])
    assert result.exit_code == EXIT_INTERNAL_ERROR
    assert ("the command module 'audit.commands.no_such_module' cannot be imported (ModuleNotFoundError"
            in result.output)
    assert "reinstall the tool" in result.output
    assert "Broken installation: audit.commands.no_such_module" in CliRunner().invoke(cli, ["--help"]).output


def test_help_documents_every_exit_code():
    text = CliRunner().invoke(cli, ["--help"]).output
    for code, words in (("0", "success"), ("1", "a rule failed"), ("2", "usage or input error"),
                        ("3", "a target stopped"), ("4", "internal error"), ("130", "interrupted")):
        assert any(line.strip().startswith(f"{code} ") and words in line for line in text.splitlines()), code
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "4 internal error" in readme


def test_no_traceback_reaches_the_terminal_of_a_real_process(tmp_path):
    """The console entry point, in its own process: a bug in a command prints one line."""
    script = ("import audit.commands.targets as t\n"
              "def boom(*a, **k): raise KeyError('missing')\n"
              "t.list_targets = boom\n"
              "from audit.cli import main\n"
              "main()\n")
    env = dict(os.environ, AUDIT_LOG_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script, "targets"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == EXIT_INTERNAL_ERROR
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("Error: internal error in 'audit targets'")


def test_stop_signals_raise_where_ctrl_c_would_and_an_ignored_one_stays_ignored():
    import os
    import signal

    from audit.cli import StopRequested, stop_signals_interrupt

    saved_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)     # as under nohup
    saved_term = signal.getsignal(signal.SIGTERM)
    try:
        with stop_signals_interrupt():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            with pytest.raises(StopRequested) as caught:
                os.kill(os.getpid(), signal.SIGTERM)   # the handler runs before the next line
            assert caught.value.signum == signal.SIGTERM and isinstance(caught.value, KeyboardInterrupt)
        assert signal.getsignal(signal.SIGTERM) == saved_term
    finally:
        signal.signal(signal.SIGHUP, saved_hup)


def test_a_damaged_generator_folder_is_an_input_error_naming_the_file_and_the_fix(tmp_path):
    from tests.corpus.datasets import face_dataset
    from tests.test_generator_artifact import make
    from tests.test_generator_damage import DAMAGES

    make(tmp_path / "gen")
    DAMAGES["checkpoint-without-generator-key"][0](tmp_path / "gen")
    dataset = face_dataset(tmp_path / "faces", people=2, per_person=1)
    result = CliRunner().invoke(cli, ["run", "--dataset", str(dataset), "--generator", str(tmp_path / "gen"),
                                      "--probes", "inversion", "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == EXIT_INPUT_ERROR, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"Error: generator folder '{tmp_path / 'gen'}' is damaged (best.pt: checkpoint ")
    assert "has no 'generator' key" in line and "retrain it with 'audit generator train" in line


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


NUMBER_OPTIONS = [(words, param.opts[0], param.type) for words, command in _commands(cli) for param in command.params
                  if isinstance(param, click.Option) and isinstance(param.type, (click.types.IntParamType,
                                                                                  click.types.FloatParamType))]


def test_every_number_option_is_found():
    names = {(" ".join(words), option) for words, option, _ in NUMBER_OPTIONS}
    assert {("run", "--seed"), ("generator train", "--seed"), ("dataset balance", "--seed"),
            ("run", "--generator-seeds"), ("run", "--epochs"), ("embed", "--workers"),
            ("dataset balance", "--per-group"), ("run", "--min-score")} <= names


@pytest.mark.parametrize("words, option, kind", NUMBER_OPTIONS, ids=[f"{' '.join(w)} {o}" for w, o, _ in NUMBER_OPTIONS])
def test_every_number_option_refuses_what_numpy_and_torch_cannot_take_when_parsed(words, option, kind):
    """A whole number: -1 (or below its least), 10**30, -10**30, 1e3; a float: nan, inf, -inf.

    Each is refused by the option itself, before any work; the bad option comes
    first, so that its error shows before the missing required ones.
    """
    if isinstance(kind, click.types.IntParamType):
        values = [str(min(-1, (kind.min or 0) - 1)), str(10 ** 30), str(-10 ** 30), "1e3"]
    else:
        values = ["nan", "inf", "-inf"] + (["-1"] if getattr(kind, "min", None) is not None else [])
    for value in values:
        result = CliRunner().invoke(cli, [*words, f"{option}={value}"])
        assert result.exit_code == EXIT_INPUT_ERROR, (value, result.output)
        assert f"Invalid value for '{option}'" in result.output, (value, result.output)
        assert "Traceback" not in result.output


def test_a_seed_the_generators_would_count_past_the_largest_is_refused_before_any_work(tmp_path):
    from audit.run_config import RunConfig
    from probes.inversion.config import TrainingConfig
    from probes.inversion.defaults import MAX_SEED

    with pytest.raises(InputError, match=r"--seed -1: must be a whole number from 0 to 4294967295"):
        RunConfig(dataset_dir=tmp_path, out_dir=tmp_path / "out", seed=-1)
    with pytest.raises(InputError, match=r"the generators are seeded 4294967295 to 4294967296, past the largest"):
        RunConfig(dataset_dir=tmp_path, out_dir=tmp_path / "out", seed=MAX_SEED, generator_seeds=2)
    with pytest.raises(InputError, match="--generator-seeds 101: must be from 1 to 100"):
        RunConfig(dataset_dir=tmp_path, out_dir=tmp_path / "out", generator_seeds=101)
    with pytest.raises(InputError, match="--resamples 1000000: at most 100,000"):
        RunConfig(dataset_dir=tmp_path, out_dir=tmp_path / "out", n_resamples=10 ** 6)
    with pytest.raises(InputError, match="seed=4294967296, must be a whole number from 0 to 4294967295"):
        TrainingConfig(seed=MAX_SEED + 1)
    with pytest.raises(InputError, match="base_channels=8192, must be at most 4096"):
        TrainingConfig(base_channels=8192)


def test_a_target_option_past_64_bits_is_refused():
    from audit.targets.options import option_int

    with pytest.raises(InputError, match=r"batch_size=.* must be <= 9223372036854775807"):
        option_int("batch_size", str(2 ** 63), minimum=1)


def test_a_per_group_count_past_every_cell_takes_each_cell_whole_without_a_huge_search():
    from audit.data.balance import pick_identities

    sizes = [(f"p{i}", 1 + i % 3) for i in range(50)]
    assert sorted(pick_identities(sizes, 10 ** 30, seed=0)) == sorted(p for p, _ in sizes)


def test_auditing_a_corpus_with_itself_as_training_set_is_one_clear_error(tmp_path):
    from tests.corpus.datasets import face_dataset

    dataset = face_dataset(tmp_path / "faces", people=2, per_person=2)
    result = CliRunner().invoke(cli, ["run", "--dataset", str(dataset), "--train-dataset", str(dataset),
                                      "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == EXIT_INPUT_ERROR, result.output
    (line,) = result.output.strip().splitlines()
    assert "leaves no image to train the generator on" in line and "(same image: 4)" in line
    assert "--train-dataset OTHER" in line and "--generator GEN" in line
    assert not (tmp_path / "out").exists()
