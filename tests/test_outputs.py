"""Outputs that cannot be written (read-only, full disk): refused before any target call, with the path and the fix.

Before: a PermissionError traceback after the whole embedding stage, for
``--out``, the report folder, import and balance destinations, ``--export``
and ``--junit``; and ``gate --junit`` crashed before printing its verdict.
"""

from __future__ import annotations

import errno
import json
import os
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


def test_private_folders_and_files_are_the_owners_alone_whatever_the_umask(tmp_path):
    from audit.outputs import private_folder, replacing, write_atomic

    old = os.umask(0o002)
    try:
        folder = private_folder(tmp_path / "made" / "deeper")
        (tmp_path / "existing").mkdir(mode=0o755)
        existing = private_folder(tmp_path / "existing")
        with replacing(folder / "weights.pt", private=True) as tmp:
            tmp.write_bytes(b"w")
        write_atomic(folder / "vectors.npy", b"v", private=True)
        write_atomic(folder / "results.json", b"{}")
    finally:
        os.umask(old)
    mode = lambda p: p.stat().st_mode & 0o777   # noqa: E731
    assert [mode(tmp_path / "made"), mode(folder), mode(existing)] == [0o700, 0o700, 0o700]
    assert [mode(folder / "weights.pt"), mode(folder / "vectors.npy"), mode(folder / "results.json")] == \
        [0o600, 0o600, 0o664]


RUN_FAST = ["--probes", "detection", "--no-report", "--resamples", "100", "-q", "--target-option", "engine=dlib",
            "--workers", "1"]


def _foreign_out(tmp_path: Path) -> Path:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.json").write_text('{"my": "own results"}')
    (out / "groups.csv").write_text("my,own\n1,2\n")
    return out


def test_run_refuses_an_out_folder_of_the_users_own_files_before_any_target_call(dataset, tmp_path, no_target):
    out = _foreign_out(tmp_path)
    result = invoke("run", "--dataset", dataset, "--out", out, *RUN_FAST)
    assert result.exit_code == 2, result.output     # before: exit 0, both files replaced
    assert "already holds files this tool did not write (groups.csv, results.json)" in result.output
    assert "pass --overwrite" in result.output
    assert (out / "results.json").read_text() == '{"my": "own results"}'
    assert (out / "groups.csv").read_text() == "my,own\n1,2\n"


def test_a_link_to_a_folder_of_the_users_own_files_is_refused_too(dataset, tmp_path, no_target):
    os.symlink(_foreign_out(tmp_path), tmp_path / "link")
    result = invoke("run", "--dataset", dataset, "--out", tmp_path / "link", *RUN_FAST)
    assert result.exit_code == 2 and "did not write" in result.output


def test_run_into_the_dataset_folder_is_refused(dataset, no_target):
    result = invoke("run", "--dataset", dataset, "--out", dataset, *RUN_FAST)
    assert result.exit_code == 2 and "did not write (img, manifest.csv" in result.output


def test_a_folder_of_another_kind_is_refused(dataset, tmp_path, no_target):
    from audit.outputs import mark_own_folder

    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "last.pt").write_bytes(b"w")
    mark_own_folder(tmp_path / "gen", kind="generator")
    result = invoke("run", "--dataset", dataset, "--out", tmp_path / "gen", *RUN_FAST)
    assert result.exit_code == 2 and "holds a generator folder of this tool, not a run folder" in result.output


def test_run_writes_again_where_it_wrote_before_and_with_overwrite_where_asked(dataset, tmp_path):
    out = tmp_path / "run"
    assert invoke("run", "--dataset", dataset, "--out", out, *RUN_FAST).exit_code == 0
    assert json.loads((out / ".face-bias-audit").read_text()) == {"written_by": "face-bias-audit", "kind": "run"}
    again = invoke("run", "--dataset", dataset, "--out", out, *RUN_FAST)
    assert again.exit_code == 0, again.output
    (out / ".face-bias-audit").unlink()   # a run folder of a version that did not mark it: its results.json
    assert invoke("run", "--dataset", dataset, "--out", out, *RUN_FAST).exit_code == 0
    foreign = _foreign_out(tmp_path)
    forced = invoke("run", "--dataset", dataset, "--out", foreign, "--overwrite", *RUN_FAST)
    assert forced.exit_code == 0, forced.output
    assert (foreign / ".face-bias-audit").is_file() and "schema_version" in (foreign / "results.json").read_text()


def test_generator_train_refuses_a_folder_of_the_users_own_files(dataset, tmp_path, no_target):
    out = _foreign_out(tmp_path)
    result = invoke("generator", "train", "--dataset", dataset, "--out", out, "-q")
    assert result.exit_code == 2, result.output
    assert "already holds files this tool did not write" in result.output
    assert (out / "results.json").read_text() == '{"my": "own results"}'


def test_a_resumed_generator_folder_is_the_tools(tmp_path):
    from audit.outputs import check_own_folder, mark_own_folder
    from probes.inversion.artifact import is_generator_folder

    folder = tmp_path / "gen"
    folder.mkdir()
    (folder / "last.pt").write_bytes(b"w")
    with pytest.raises(Exception, match="did not write \\(last.pt\\)"):
        check_own_folder(folder, kind="generator", option="--out", overwrite=False, written_before=is_generator_folder)
    mark_own_folder(folder, kind="generator")     # what a training writes before its first checkpoint
    check_own_folder(folder, kind="generator", option="--out", overwrite=False, written_before=is_generator_folder)
