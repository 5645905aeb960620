"""The embed stage on a Dask cluster: a real scheduler and workers on 127.0.0.1."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import dask
import distributed  # noqa: F401 - its config defaults must exist before dask.config.set changes one
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from audit.cache import EmbeddingCache
from audit.data.manifest import load_dataset
from audit.data.remote import load_remote_dataset
from audit.distributed import SchedulerSpec, open_cluster, parse_scheduler
from audit.embedding import Embedder
from audit.errors import ClusterError, InputError
from audit.faces import FaceAligner, FaceConfig
from audit.pipeline import open_embedder
from audit.targets.base import EmbedOutcome, Target
from audit.targets.dlib_target import DlibTarget

N_FACES = 100


# -- parsing -------------------------------------------------------------------------------
def test_scheduler_spec_parsing():
    assert parse_scheduler("local:3") == SchedulerSpec(n_workers=3)
    assert parse_scheduler("local", default_local_workers=5) == SchedulerSpec(n_workers=5)
    assert parse_scheduler("tcp://10.0.0.5:8786") == SchedulerSpec(address="tcp://10.0.0.5:8786")
    assert parse_scheduler("10.0.0.5") == SchedulerSpec(address="tcp://10.0.0.5:8786")
    assert parse_scheduler("tls://sched.example:9000").address == "tls://sched.example:9000"
    with pytest.raises(InputError, match=r"--scheduler 'local:0': the number of local workers"):
        parse_scheduler("local:0")
    with pytest.raises(InputError, match="is not a scheduler address"):
        parse_scheduler("http://a b")
    with pytest.raises(InputError, match="unknown protocol 'http'"):
        parse_scheduler("http://host:80")


def test_workers_and_scheduler_together_are_refused(tmp_path):
    with pytest.raises(InputError, match="--workers 2 and --scheduler 'local:2' both say"):
        with open_embedder(CountingTarget(), face_config=FaceConfig(), cache_path=None,
                            use_cache=False, workers=2, scheduler="local:2"):
            pass


def test_an_unreachable_scheduler_is_a_clear_error():
    with socket.socket() as sock:          # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ClusterError, match=rf"no Dask scheduler answers at tcp://127.0.0.1:{port} "
                                           r"within 2 s .*'dask scheduler'"):
        with open_cluster(SchedulerSpec(address=f"tcp://127.0.0.1:{port}"), connect_timeout=2):
            pass
    assert time.monotonic() - started < 30


# -- datasets at URLs -------------------------------------------------------------------------
class CountingTarget(Target):
    """A cheap aligned-chip target: a chip's 2x2 thumbnail, counted."""

    name = "counting"
    input_kind = "aligned"
    chip_size = 150

    def __init__(self, poison: tuple[bytes, ...] = ()) -> None:
        self.calls = 0
        self.poison = poison

    dimension = property(lambda self: 12)
    metric = property(lambda self: "euclidean")
    default_threshold = property(lambda self: 0.6)

    def fingerprint(self) -> str:
        return "counting-v1"

    def embed(self, images):
        out = []
        for image in images:
            if image.tobytes()[:4096] in self.poison:
                os.kill(os.getpid(), signal.SIGKILL)   # as a native crash would
            self.calls += 1
            small = np.asarray(Image.fromarray(image).resize((2, 2))).astype(np.float32)
            out.append(EmbedOutcome.ok(small.reshape(-1) / 255.0))
        return out


def _write_folder(folder: Path, images: dict[str, np.ndarray | bytes], *, sha: dict[str, str] = {}):
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, content in images.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            Image.fromarray(content).save(path)
        rows.append({"path": name, "group": "A" if len(rows) % 2 else "B", "sha256": sha.get(name, "")})
    with open(folder / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "group", "sha256"])
        writer.writeheader()
        writer.writerows(rows)


def _faces(astronaut, n: int) -> list[np.ndarray]:
    return [np.clip(astronaut.astype(int) + 7 * k, 0, 255).astype(np.uint8) for k in range(n)]


def test_a_file_url_dataset_is_checked_like_a_folder_and_embeds_the_same(tmp_path, astronaut):
    faces = _faces(astronaut, 3)
    folder = tmp_path / "set"
    _write_folder(folder, {"a.png": faces[0], "b.png": faces[1], "copy_of_a.png": faces[0],
                           "empty.png": b"", "gone.png": faces[2], "text.png": b"hello"})
    (folder / "gone.png").unlink()
    remote = load_remote_dataset(folder.as_uri() + "/")
    reasons = dict(zip(remote.exclusions["path"], remote.exclusions["reason"]))
    assert list(remote.table["image_id"]) == ["a.png", "b.png"]
    assert reasons["copy_of_a.png"] == "duplicate of a.png"
    assert reasons["empty.png"].startswith("unreadable file: the file is empty")
    assert reasons["gone.png"].startswith("missing file")
    assert reasons["text.png"].startswith("not an image")
    assert remote.absolute_path("a.png") == folder.as_uri() + "/a.png"
    local = load_dataset(folder)
    assert list(local.table["sha256"]) == list(remote.table["sha256"])
    from_url = Embedder(CountingTarget(), workers=1, show_progress=False).embed_dataset(remote)
    from_disk = Embedder(CountingTarget(), workers=1, show_progress=False).embed_dataset(local)
    np.testing.assert_array_equal(from_url.vectors, from_disk.vectors)
    np.testing.assert_array_equal(from_url.chips, from_disk.chips)


def test_a_url_dataset_trusts_the_manifest_hash_and_the_reader_checks_it(tmp_path, astronaut):
    faces = _faces(astronaut, 2)
    folder = tmp_path / "set"
    _write_folder(folder, {"a.png": faces[0], "b.png": faces[1]}, sha={"a.png": "0" * 64})
    remote = load_remote_dataset(folder.as_uri())
    assert list(remote.table["sha256"])[0] == "0" * 64      # not read here: the manifest says
    result = Embedder(CountingTarget(), workers=1, show_progress=False).embed_dataset(remote)
    rows = result.table.set_index("image_id")
    assert rows.loc["a.png", "status"] == "error"
    assert rows.loc["a.png", "reason"] == "file changed while the audit ran; rerun"
    assert rows.loc["b.png", "status"] == "ok"


def test_a_url_without_a_manifest_says_so(tmp_path):
    from audit.errors import DatasetError

    with pytest.raises(DatasetError, match=r"No manifest.csv at 'file://.*/nothing/manifest.csv'"):
        load_remote_dataset((tmp_path / "nothing").as_uri())


def test_a_chunk_on_a_worker_records_each_image_and_sends_back_only_the_kept_chips(tmp_path, astronaut):
    from audit.distributed import embed_chunk, make_job

    folder = tmp_path / "set"
    _write_folder(folder, {"face.png": astronaut, "blank.png": np.full((200, 200, 3), 127, np.uint8),
                           "broken.jpg": b"not an image", "odd[1].png": _faces(astronaut, 2)[1]})
    root = folder.as_uri()        # manifest paths are joined as they are, never percent-encoded
    items = list(enumerate(f"{root}/{name}" for name in ("face.png", "blank.png", "broken.jpg",
                                                         "gone.png", "odd[1].png")))
    job = make_job(CountingTarget(), face_config=FaceConfig(), align_sizes=(64, 150), chip_size=64,
                   embed_on_workers=True, keep_image=False)
    results = embed_chunk(items, job)
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.status for r in results] == ["ok", "no_face", "error", "error", "ok"]
    assert "not a readable image" in results[2].reason
    assert results[3].reason.startswith(f"{items[3][1]}: not readable (") and "No such file" in results[3].reason
    assert results[0].vector.shape == (12,) and results[1].vector is None
    assert set(results[0].chips) == {64}             # the 150 chip was embedded there, not sent back


# -- a local cluster ------------------------------------------------------------------------------
@pytest.mark.slow
def test_an_image_that_kills_its_worker_is_recorded_not_retried_forever(tmp_path, astronaut):
    faces = _faces(astronaut, 4)
    poison_chip = FaceAligner().align(faces[3], sizes=(150,)).chips[150]
    folder = tmp_path / "set"
    _write_folder(folder, {f"face{k}.png": face for k, face in enumerate(faces)})
    dataset = load_dataset(folder)
    target = CountingTarget(poison=(poison_chip.tobytes()[:4096],))
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    # One death per try (Dask's default allows three more): the test stays short.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        result = Embedder(target, cache=cache, chunk_size=4, show_progress=False,
                          scheduler=SchedulerSpec(n_workers=2)).embed_dataset(dataset, chip_size=None)
    rows = result.table.set_index("image_id")
    assert list(rows["status"]) == ["ok", "ok", "ok", "error"]
    assert rows.loc["face3.png", "reason"].startswith("its worker process died each time it was "
                                                      "embedded (1 attempts")
    assert np.isfinite(result.vectors[:3]).all()
    assert cache.count_embeddings() == 3                       # the crash is not cached


class BrokenTarget(CountingTarget):
    """Fine here, broken on a worker: a missing model file there, or another model version."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how, self.here = how, os.getpid()

    def fingerprint(self) -> str:
        moved = self.how == "other model" and os.getpid() != self.here
        return "counting-v2" if moved else "counting-v1"

    def embed(self, images):
        if self.how == "missing file" and os.getpid() != self.here:
            raise FileNotFoundError("model.onnx")
        return super().embed(images)


@pytest.fixture(scope="module")
def one_worker():
    """A LocalCluster of one worker process, shared by the tests that need any cluster."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                      silence_logs=logging.ERROR) as cluster:
        yield SchedulerSpec(address=cluster.scheduler_address)


@pytest.mark.slow
def test_a_target_that_fails_on_a_worker_stops_the_run_naming_it(tmp_path, astronaut, one_worker):
    from audit.errors import TargetError

    folder = tmp_path / "set"
    _write_folder(folder, {f"face{k}.png": face for k, face in enumerate(_faces(astronaut, 2))})
    dataset = load_dataset(folder)
    with pytest.raises(TargetError, match=r"the target 'counting' failed on worker .* "
                                          r"\(FileNotFoundError: model.onnx\)"):
        Embedder(BrokenTarget("missing file"), scheduler=one_worker,
                 show_progress=False).embed_dataset(dataset)
    with pytest.raises(TargetError, match=r"has target 'counting-v2' where the client has "
                                          r"'counting-v1'"):
        Embedder(BrokenTarget("other model"), scheduler=one_worker,
                 show_progress=False).embed_dataset(dataset)


class InterruptedCache(EmbeddingCache):
    """A cache whose owner is killed (Ctrl-C) while writing its ``after``-th chunk."""

    def __init__(self, path, after: int) -> None:
        super().__init__(path)
        self.writes, self.after = 0, after

    def put_embeddings(self, items, **keys) -> None:
        self.writes += 1
        if self.writes == self.after:
            raise KeyboardInterrupt
        super().put_embeddings(items, **keys)


@pytest.mark.slow
def test_a_killed_client_resumes_from_the_chunks_it_wrote(tmp_path, astronaut, one_worker):
    folder = tmp_path / "set"
    _write_folder(folder, {f"face{k}.png": face for k, face in enumerate(_faces(astronaut, 6))})
    dataset = load_dataset(folder)
    killed = InterruptedCache(tmp_path / "cache.sqlite", after=3)
    with pytest.raises(KeyboardInterrupt):
        Embedder(CountingTarget(), cache=killed, chunk_size=2, scheduler=one_worker,
                 show_progress=False).embed_dataset(dataset, chip_size=None)
    killed.close()
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    assert cache.count_embeddings() == 4                 # two chunks written before the kill
    resumed = Embedder(CountingTarget(), cache=cache, chunk_size=2, scheduler=one_worker,
                       show_progress=False).embed_dataset(dataset, chip_size=None)
    assert (resumed.n_from_cache, resumed.n_computed) == (4, 2)
    assert (resumed.table["status"] == "ok").all()


@pytest.mark.slow
def test_audit_embed_on_a_local_cluster_prints_the_rate(tmp_path, astronaut, monkeypatch):
    from audit.cli import cli

    folder = tmp_path / "set"
    _write_folder(folder, {f"face{k}.png": face for k, face in enumerate(_faces(astronaut, 3))})
    monkeypatch.setenv("AUDIT_CACHE", str(tmp_path / "cache.sqlite"))
    result = CliRunner().invoke(cli, ["embed", "--dataset", folder.as_uri(), "--scheduler", "local:1",
                                      "--target-option", "engine=dlib"])
    assert result.exit_code == 0, (result.output, result.exc_info)
    assert "3 images in" in result.output and "3 computed, 0 from the cache" in result.output
    assert "Embedding (dlib): 3/3 (100%" in result.output and "images/s)" in result.output
    again = CliRunner().invoke(cli, ["embed", "--dataset", folder.as_uri(), "--scheduler", "local:1",
                                     "--target-option", "engine=dlib"])
    assert "0 computed, 3 from the cache" in again.output   # no cluster was needed


# -- a real scheduler and two workers -----------------------------------------------------------------
@pytest.fixture()
def dask_processes(tmp_path):
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, stopped at the end."""
    processes: list[subprocess.Popen] = []
    log = open(tmp_path / "dask.log", "wb")

    def start(*args: str) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)
        processes.append(process)
        return process

    scheduler_file = tmp_path / "scheduler.json"
    try:
        start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
              "--scheduler-file", str(scheduler_file))
        workers = [start("worker", "--scheduler-file", str(scheduler_file), "--nworkers", "1",
                         "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1",
                         "--local-directory", str(tmp_path / f"worker{k}"), "--name", f"worker{k}")
                   for k in range(2)]
        deadline = time.monotonic() + 120
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        from distributed import Client

        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=120)
        yield SimpleNamespace(address=address, workers=workers)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def _utkface_sample(utkface_dir: Path, dest: Path, n: int) -> None:
    names = sorted(p.name for p in utkface_dir.glob("*.jpg"))
    random.Random(14).shuffle(names)
    dest.mkdir(parents=True)
    rows = []
    for name in names:
        parts = name.split("_")
        if len(parts) < 4 or not (parts[1].isdigit() and parts[2].isdigit()):
            continue
        shutil.copyfile(utkface_dir / name, dest / name)
        rows.append({"path": name, "gender": parts[1], "race": parts[2]})
        if len(rows) == n:
            break
    with open(dest / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "gender", "race"])
        writer.writeheader()
        writer.writerows(rows)


def _rescheduled_chunks(address: str) -> list[str]:
    """Chunk tasks the scheduler took back from a worker that went away while running them."""
    from distributed import Client

    with Client(address, timeout=30, set_as_default=False) as client:
        # A lambda travels by value; this test module cannot be imported on the scheduler.
        story = client.run_on_scheduler(lambda dask_scheduler: [
            tuple(map(str, entry[:5])) for entry in dask_scheduler.transition_log
            if str(entry[0]).startswith("audit-embed-")])
    return [key for key, start, finish, *_ in story if start == "processing" and finish != "memory"]


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_cluster_that_loses_a_worker_gives_the_vectors_of_a_local_run(utkface_dir, tmp_path,
                                                                         dask_processes):
    folder = tmp_path / "faces"
    _utkface_sample(utkface_dir, folder, N_FACES)
    local = Embedder(DlibTarget(engine="dlib"), workers=2, chunk_size=8,
                     show_progress=False).embed_dataset(load_dataset(folder), chip_size=64)

    cache_path = tmp_path / "cache.sqlite"
    cache = EmbeddingCache(cache_path)
    killed_at: list[int] = []
    done = threading.Event()

    def kill_one_worker_mid_run() -> None:
        reader = sqlite3.connect(cache_path)
        try:
            while not done.is_set():
                count = reader.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
                if count >= 24:
                    os.killpg(dask_processes.workers[1].pid, signal.SIGKILL)
                    killed_at.append(count)
                    return
                time.sleep(0.05)
        finally:
            reader.close()

    killer = threading.Thread(target=kill_one_worker_mid_run)
    killer.start()
    try:
        on_cluster = Embedder(DlibTarget(engine="dlib"), cache=cache, chunk_size=8, show_progress=False,
                              scheduler=SchedulerSpec(address=dask_processes.address)).embed_dataset(
            load_remote_dataset(folder.as_uri()), chip_size=64)
    finally:
        done.set()
        killer.join()
    assert killed_at and killed_at[0] < N_FACES - 8, "the worker was not killed mid-run"
    assert dask_processes.workers[1].poll() is not None
    # The killed worker was processing a chunk: the scheduler took it back and ran it elsewhere.
    assert _rescheduled_chunks(dask_processes.address)
    # Every image accounted for, with the local run's status, vector and chip.
    assert len(on_cluster.table) == N_FACES
    assert list(on_cluster.table["image_id"]) == list(local.table["image_id"])
    assert list(on_cluster.table["status"]) == list(local.table["status"])
    assert set(local.table["status"]) <= {"ok", "no_face"} and local.ok.sum() >= 90
    np.testing.assert_array_equal(on_cluster.vectors, local.vectors)
    np.testing.assert_array_equal(on_cluster.chips, local.chips)
    assert cache.count_embeddings() == N_FACES
