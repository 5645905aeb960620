"""Outputs that cannot be written (read-only, full disk): refused before any target call, with the path and the fix.

Before: a PermissionError traceback after the whole embedding stage, for
``--out``, the report folder, import and balance destinations, ``--export``
and ``--junit``; and ``gate --junit`` crashed before printing its verdict.
"""

from __future__ import annotations

import errno
import json
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from audit.cli import cli
from tests.corpus.datasets import face_dataset, folders_source
from tests.corpus.environment import full_disk, read_only

POLICY = """[[rule]]
id = "detection"
metric = "detection.failure_rate"
max = 1.0
"""


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture()
def no_target(monkeypatch):
    """Any target call fails the test: the refusal must come first."""
    def refuse(*args, **kwargs):
        pytest.fail("a target was opened before the unwritable output was refused")

    monkeypatch.setattr("audit.runner.open_target", refuse)
    monkeypatch.setattr("audit.pipeline.open_target", refuse)


@pytest.fixture()
def dataset(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("AUDIT_CACHE", str(tmp_path / "cache.sqlite"))
    monkeypatch.setenv("AUDIT_LOG_DIR", str(tmp_path / "logs"))
    return face_dataset(tmp_path / "faces", people=2, per_person=1)


@pytest.fixture()
def locked(tmp_path) -> Path:
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "old.txt").write_text("kept")
    with read_only(folder):
        yield folder
    assert (folder / "old.txt").read_text() == "kept"


@pytest.fixture()
def finished_run(tmp_path, dataset) -> Path:
    out = tmp_path / "run"
    result = invoke("run", "--dataset", dataset, "--out", out, "--probes", "detection", "--no-report", "-q",
                    "--resamples", "100", "--workers", "1", "--target-option", "engine=dlib")
    assert result.exit_code == 0, result.output
    (tmp_path / "policy.toml").write_text(POLICY)
    return out


def assert_refused(result, *, path: Path, words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: Cannot write ") and str(path) in line and words.lower() in line.lower(), line


READ_ONLY = "it is on a read-only file system"


def test_run_refuses_an_unwritable_out_before_any_target_call(dataset, locked, no_target):
    result = invoke("run", "--dataset", dataset, "--out", locked / "out", "--probes", "detection")
    assert_refused(result, path=locked / "out", words="Pass another --out")
    assert not (locked / "out").exists()


@pytest.mark.parametrize("option, name", [("--junit", "verdict.xml"), ("--markdown", "verdict.md")])
def test_run_refuses_an_unwritable_verdict_file_before_any_target_call(tmp_path, dataset, locked, no_target,
                                                                      option, name):
    (tmp_path / "policy.toml").write_text(POLICY)
    result = invoke("run", "--dataset", dataset, "--out", tmp_path / "out", "--probes", "detection",
                    "--policy", tmp_path / "policy.toml", option, locked / name)
    assert_refused(result, path=locked, words=f"Pass another {option}")
    assert not (tmp_path / "out").exists()


def test_run_refuses_a_markdown_verdict_without_a_policy(tmp_path, dataset, no_target):
    result = invoke("run", "--dataset", dataset, "--out", tmp_path / "out", "--markdown", tmp_path / "v.md")
    assert result.exit_code == 2 and "--markdown writes the policy's verdict: give --policy too" in result.output


def test_embed_refuses_an_unwritable_export_before_any_target_call(dataset, locked, no_target):
    result = invoke("embed", "--dataset", dataset, "--export", locked / "vectors.npz")
    assert_refused(result, path=locked, words="Pass another --export")


def test_report_refuses_a_read_only_run_folder_and_keeps_the_old_report(finished_run):
    (finished_run / "report.html").write_text("the old report")
    with read_only(finished_run):
        result = invoke("report", finished_run)
    assert_refused(result, path=finished_run, words="render it from a copy of the run folder")
    assert (finished_run / "report.html").read_text() == "the old report"


def test_gate_prints_its_verdict_first_and_an_unwritable_junit_is_an_input_error(tmp_path, finished_run, locked):
    result = invoke("gate", finished_run, "--policy", tmp_path / "policy.toml", "--junit", locked / "gate.xml")
    assert result.exit_code == 2, result.output          # an input error, not "a rule failed" (1)
    verdict, error = result.output.rsplit("Error: ", 1)
    assert "detection" in verdict and "PASS" in verdict.upper()
    assert error.startswith("Cannot write the JUnit file") and str(locked / "gate.xml") in error


@pytest.mark.parametrize("command", ["import", "balance"])
def test_import_and_balance_refuse_an_unwritable_destination(tmp_path, dataset, locked, command):
    if command == "import":
        src, attributes = folders_source(tmp_path / "src", people=2)
        result = invoke("dataset", "import", "folders", src, locked / "new", "--attributes", attributes)
    else:
        result = invoke("dataset", "balance", dataset, locked / "new", "--by", "race", "--per-group", "1")
    assert_refused(result, path=locked, words="choose another DEST folder")


def test_an_unwritable_out_is_named_without_a_real_mount_too(dataset, tmp_path, monkeypatch, no_target):
    """The same refusal where the test cannot make a folder read-only for real."""
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    result = invoke("run", "--dataset", dataset, "--out", tmp_path / "out", "--probes", "detection")
    assert_refused(result, path=tmp_path / "out", words="permission denied")
    assert not (tmp_path / "out").exists()


def test_run_on_a_full_disk_is_refused_before_any_target_call(dataset, tmp_path, no_target):
    with full_disk(tmp_path / "disk") as disk:
        result = invoke("run", "--dataset", dataset, "--out", disk / "out", "--probes", "detection")
    assert_refused(result, path=disk / "out", words="the disk holding it has 0 bytes free")


def test_a_disk_that_fills_during_an_import_keeps_the_old_dataset(tmp_path):
    src, attributes = folders_source(tmp_path / "src", people=3)
    with full_disk(tmp_path / "disk", size="4m", leave_free=0) as disk:
        (disk / ".ballast").unlink()
        first = invoke("dataset", "import", "folders", src, disk / "ds", "--attributes", attributes, "--copy")
        assert first.exit_code == 0, first.output
        before = {p.name: p.read_bytes() for p in (disk / "ds").iterdir() if p.is_file()}
        big = src / "person0" / "big.png"
        big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(4 << 20))        # cannot fit beside the old dataset
        result = invoke("dataset", "import", "folders", src, disk / "ds", "--attributes", attributes, "--copy",
                        "--overwrite")
        assert result.exit_code == 2, result.output
        assert "no space left on the disk" in result.output and str(disk / "ds") in result.output
        assert {p.name: p.read_bytes() for p in (disk / "ds").iterdir() if p.is_file()} == before
        assert [p.name for p in disk.iterdir()] == ["ds"]            # no half-built folder left
        assert json.loads((disk / "ds" / "dataset.json").read_text())["images"]["mode"] == "copy"


@pytest.mark.slow
def test_a_disk_that_fills_with_checkpoints_is_named_not_a_bug(tmp_path, monkeypatch):
    """Before: PyTorch's RuntimeError from a checkpoint write on a full disk read as an internal error."""
    monkeypatch.setenv("AUDIT_CACHE", str(tmp_path / "cache.sqlite"))
    dataset = face_dataset(tmp_path / "faces", people=12, per_person=2)
    with full_disk(tmp_path / "disk", size="3m", leave_free=2 << 20) as disk:
        result = invoke("run", "--dataset", dataset, "--out", disk / "out", "--probes", "inversion", "--epochs", "2",
                        "--generator-channels", "64", "--batch-size", "16", "--resamples", "100", "-q",
                        "--workers", "1", "--no-report", "--target-option", "engine=dlib")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: Cannot write the generator's checkpoints in "
                                    f"{str(disk / 'out' / 'checkpoints')!r}")
    assert "Free some space on that disk" in result.output
