"""Faults for real: SIGKILL during import, embedding, training and report rendering, then a rerun.

Each kill happens at an exact moment (see ``tests/corpus/faults.py``).  After
it: what was there before is intact, no process the killed one started is
still running, and the same command run again completes with the results an
uninterrupted run gives.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from audit.cli import cli
from tests.corpus.datasets import face_dataset, folders_source
from tests.corpus.faults import comparable, orphans, run_cli, run_killed

pytestmark = pytest.mark.slow

TARGET = ["--target-option", "engine=dlib"]
FAST = ["--resamples", "100", "-q", *TARGET]
TRAIN = ["--epochs", "4", "--generator-channels", "16", "--batch-size", "16", "--validate-every", "2"]
KILLED = -9


def invoke(*args) -> None:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links followed) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def results(out: Path) -> dict:
    return comparable(json.loads((out / "results.json").read_text()))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """40 faces of 20 people: two chunks of work (32 + 8) for two embedding workers."""
    return face_dataset(tmp_path_factory.mktemp("faults") / "faces", people=20, per_person=2)


@pytest.fixture(scope="module")
def trainable(tmp_path_factory) -> Path:
    """24 faces of 12 people: enough people in each group to train and test a tiny generator."""
    return face_dataset(tmp_path_factory.mktemp("faults") / "faces", people=12, per_person=2)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return face_dataset(tmp_path_factory.mktemp("faults") / "faces", people=4, per_person=1)


@pytest.fixture()
def env(tmp_path, monkeypatch) -> dict[str, str]:
    variables = {"AUDIT_CACHE": str(tmp_path / "cache.sqlite"), "AUDIT_LOG_DIR": str(tmp_path / "logs")}
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    return variables


def test_sigkill_during_an_overwriting_import_keeps_the_old_dataset(tmp_path, env):
    """Before: --overwrite deleted the old manifest first; killed mid-way, the destination was empty."""
    src, attributes = folders_source(tmp_path / "src", people=4)
    dest = tmp_path / "dest"
    invoke("dataset", "import", "folders", src, dest, "--attributes", attributes, "--copy")
    (dest / "pairs.txt").write_text("the user's own file\n")
    before = files(dest)
    shutil.copytree(src / "person0", src / "person9")          # the new import differs from the old
    args = ["dataset", "import", "folders", src, dest, "--attributes", attributes, "--copy", "--overwrite"]

    done, children = run_killed(args, at="audit.data.manifest:write_info", record=tmp_path / "pids.json",
                                env=env)
    assert done.returncode == KILLED, done.stderr
    assert files(dest) == before                                # untouched, byte for byte
    assert orphans(children) == []

    invoke(*args)                                               # the rerun completes ...
    invoke("dataset", "import", "folders", src, tmp_path / "reference", "--attributes", attributes, "--copy")
    after = files(dest)
    assert after["manifest.csv"] == (tmp_path / "reference" / "manifest.csv").read_bytes()
    assert after["pairs.txt"] == b"the user's own file\n"       # ... keeps what the user put there ...
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]   # ... and leaves nothing behind


def test_sigkill_during_embedding_leaves_no_worker_and_the_rerun_matches(tmp_path, env, dataset):
    """Before: the workers of a SIGKILLed 'run --workers 2' kept running."""
    args = ["run", "--dataset", dataset, "--out", tmp_path / "out", "--probes", "detection,volume,verification",
            "--workers", "2", "--no-report", *FAST]
    done, children = run_killed(args, at="audit.cache:EmbeddingCache.put_embeddings", record=tmp_path / "pids.json",
                                env=env)
    assert done.returncode == KILLED, done.stderr
    assert len(children) == 2
    assert orphans(children) == []
    assert not (tmp_path / "out" / "results.json").exists()

    invoke(*args)
    reference = ["run", "--dataset", dataset, "--out", tmp_path / "reference", "--probes",
                 "detection,volume,verification", "--workers", "1", "--no-cache", "--no-report", *FAST]
    invoke(*reference)
    assert results(tmp_path / "out") == results(tmp_path / "reference")


def _assert_the_rerun_resumes_to_an_unbroken_runs_results(args, tmp_path, env, trainable) -> None:
    """The same command again finishes, with the results of a run that was never stopped."""
    resumed = run_cli(args, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    reference = run_cli(["run", "--dataset", trainable, "--out", tmp_path / "reference", "--probes", "inversion",
                         "--workers", "1", "--no-report", *TRAIN, *FAST], env=env)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    assert results(tmp_path / "out") == results(tmp_path / "reference")


def test_sigkill_during_training_resumes_to_the_same_results(tmp_path, env, trainable):
    # Every run in its own process with one torch thread: a float sum depends on how many threads
    # share it, and the test process's thread count is whatever earlier tests left behind.
    env = {**env, "OMP_NUM_THREADS": "1"}
    args = ["run", "--dataset", trainable, "--out", tmp_path / "out", "--probes", "inversion", "--workers", "1",
            "--no-report", *TRAIN, *FAST]
    # saves: last.pt after epoch 1; best.pt and last.pt after epoch 2: killed with epoch 2 on disk
    done, children = run_killed(args, at="probes.inversion.training:_atomic_torch_save", after=3,
                                record=tmp_path / "pids.json", env=env)
    assert done.returncode == KILLED, done.stderr
    assert (tmp_path / "out" / "checkpoints" / "inversion" / "last.pt").is_file()
    assert orphans(children) == []

    _assert_the_rerun_resumes_to_an_unbroken_runs_results(args, tmp_path, env, trainable)


def test_sigkill_during_report_rendering_then_a_rerun_completes(tmp_path, env, small):
    out = tmp_path / "out"
    invoke("run", "--dataset", small, "--out", out, "--probes", "detection", "--workers", "1", "--no-report",
           *FAST)
    before = files(out)
    done, children = run_killed(["report", out], at="reports.render:write_pdf", when="before",
                                record=tmp_path / "pids.json", env=env)
    assert done.returncode == KILLED, done.stderr
    assert orphans(children) == []
    assert {k: v for k, v in files(out).items() if k != "report.html"} == before   # results untouched
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    invoke("report", out)
    shutil.copytree(out, tmp_path / "reference", ignore=shutil.ignore_patterns("report.*"))
    invoke("report", tmp_path / "reference")
    assert (out / "report.html").read_bytes() == (tmp_path / "reference" / "report.html").read_bytes()
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("signal_name, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_stop_signal_during_embedding_stops_cleanly_says_how_to_resume_and_the_rerun_resumes(
        tmp_path, env, dataset, signal_name, code):
    """CI cancelling a job, ``timeout`` and ``docker stop`` send SIGTERM; a closed terminal SIGHUP."""
    args = ["embed", "--dataset", dataset, "--workers", "2", "--export", tmp_path / "vectors.csv", *TARGET]
    done, children = run_killed(args, at="audit.cache:EmbeddingCache.put_embeddings", after=1,
                                record=tmp_path / "pids.json", env=env, signal_name=signal_name)
    assert done.returncode == code, done.stderr        # before: -15 (or -1) and not a word
    assert f"Stopped by {signal_name}. Everything computed so far is cached: rerun the same command to resume." \
        in done.stderr
    assert "Traceback" not in done.stderr
    assert orphans(children) == []
    assert not (tmp_path / "vectors.csv").exists()
    again = run_cli(args, env=env)
    assert again.returncode == 0, again.stderr
    assert "32 from the cache" in again.stdout + again.stderr


def test_sigterm_during_training_stops_cleanly_and_the_run_resumes_to_the_same_results(tmp_path, env, trainable):
    env = {**env, "OMP_NUM_THREADS": "1"}
    args = ["run", "--dataset", trainable, "--out", tmp_path / "out", "--probes", "inversion", "--workers", "1",
            "--no-report", *TRAIN, *FAST]
    done, _ = run_killed(args, at="probes.inversion.training:_atomic_torch_save", after=3,
                         record=tmp_path / "pids.json", env=env, signal_name="SIGTERM")
    assert done.returncode == 143, done.stderr
    assert "Stopped by SIGTERM" in done.stderr and "rerun the same command to resume" in done.stderr
    assert (tmp_path / "out" / "checkpoints" / "inversion" / "last.pt").is_file()
    _assert_the_rerun_resumes_to_an_unbroken_runs_results(args, tmp_path, env, trainable)


def test_sigterm_during_an_import_leaves_no_half_made_folder_behind(tmp_path, env):
    """Unlike SIGKILL, a stop signal runs the clean-up: the build folder beside DEST is removed at once."""
    src, attributes = folders_source(tmp_path / "src", people=4)
    args = ["dataset", "import", "folders", src, tmp_path / "dest", "--attributes", attributes, "--copy"]
    done, _ = run_killed(args, at="audit.data.manifest:write_info", record=tmp_path / "pids.json", env=env,
                         signal_name="SIGTERM")
    assert done.returncode == 143, done.stderr
    assert "Stopped by SIGTERM" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(("src", "pids", "logs"))) == []
