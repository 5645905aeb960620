"""The embed stage on Dask workers against today's local process pool, faces/s.

The same UTKFace images (../shared/datasets/utkface) go, without a cache,
through ``audit.embedding.Embedder``:

* ``pool``: today's default, a process pool of ``--workers`` processes
  (detection there; the torch descriptor in the main process);
* ``dask local:N cold``: ``--scheduler local:N`` as a user runs it, the
  cluster started (and each worker's model loaded) inside the timing;
* ``dask N warm``: a LocalCluster started and warmed before the timing, the
  steady rate of N workers, from which a larger cluster's time is estimated.

It also times the client's own share per image (writing results to the
SQLite cache), which bounds how many workers one client can keep busy.
On a shared machine, ``--repeat R`` keeps each run's fastest of R (other
people's processes only ever slow a run down).  Usage:

    python benchmarks/bench_embed_cluster.py [--n 200] [--engine torch] [--workers 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.cache import CachedEmbedding, EmbeddingCache  # noqa: E402
from audit.distributed import SchedulerSpec, parse_scheduler  # noqa: E402
from audit.embedding import DEFAULT_CHUNK_SIZE, Embedder  # noqa: E402
from audit.targets.dlib_target import DlibTarget  # noqa: E402

SHARED = Path(os.environ.get("AUDIT_SHARED_DATASETS",
                             Path(__file__).resolve().parents[2] / "shared" / "datasets"))
MILLION = 1_000_000


@dataclass
class _Folder:
    root: Path
    table: pd.DataFrame

    def absolute_path(self, path) -> Path:
        return self.root / path


def _time(make_embedder, dataset: _Folder, repeat: int = 1) -> tuple[float, int]:
    """The fastest of ``repeat`` runs, each with a new embedder (cold runs start their workers)."""
    best, ok = float("inf"), 0
    for _ in range(repeat):
        embedder = make_embedder()
        started = time.perf_counter()
        result = embedder.embed_dataset(dataset, chip_size=None)
        best, ok = min(best, time.perf_counter() - started), int(result.ok.sum())
    return best, ok


def _row(kind: str, workers: int, n: int, seconds: float, ok: int) -> dict:
    return {"run": kind, "workers": workers, "images": n, "ok": ok, "seconds": round(seconds, 2),
            "faces_per_s": round(n / seconds, 2)}


def client_write_rate(n_rows: int = 20_000, dimension: int = 128) -> float:
    """Rows per second the client writes to the cache, in chunks as the cluster returns them."""
    rng = np.random.default_rng(0)
    rows = [(f"{i:064x}", CachedEmbedding("ok", 1, "", rng.standard_normal(dimension).astype(np.float32)))
            for i in range(n_rows)]
    with tempfile.TemporaryDirectory() as folder, EmbeddingCache(Path(folder) / "c.sqlite") as cache:
        started = time.perf_counter()
        for start in range(0, n_rows, DEFAULT_CHUNK_SIZE):
            cache.put_embeddings(rows[start:start + DEFAULT_CHUNK_SIZE], target="t", preprocessing="p")
        return n_rows / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="images per run")
    parser.add_argument("--engine", default="torch", choices=("torch", "dlib"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes of the local pool (today's default: all cores)")
    parser.add_argument("--repeat", type=int, default=1, help="keep the fastest of R runs")
    args = parser.parse_args()
    root = SHARED / "utkface"
    if not root.is_dir():
        sys.exit(f"UTKFace not found at {root}")
    names = sorted(p.name for p in root.glob("*.jpg"))
    random.Random(0).shuffle(names)
    dataset = _Folder(root, pd.DataFrame({"image_id": names[:args.n], "path": names[:args.n]}))
    warmup = _Folder(root, pd.DataFrame({"image_id": names[-16:], "path": names[-16:]}))

    def target() -> DlibTarget:
        made = DlibTarget(engine=args.engine)
        made.engine  # resolve (and self-check) outside the timing, as in bench_embed_stage
        return made

    rows = []
    seconds, ok = _time(lambda: Embedder(target(), cache=None, workers=args.workers, show_progress=False),
                        dataset, args.repeat)
    rows.append(_row("pool", args.workers, args.n, seconds, ok))
    for n_workers in (1, 2):
        spec = parse_scheduler(f"local:{n_workers}")
        seconds, ok = _time(lambda: Embedder(target(), cache=None, scheduler=spec, show_progress=False),
                            dataset, args.repeat)
        rows.append(_row(f"dask local:{n_workers} cold", n_workers, args.n, seconds, ok))
    from distributed import LocalCluster

    for n_workers in (1, 2):
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster:
            spec = SchedulerSpec(address=cluster.scheduler_address)
            _time(lambda: Embedder(target(), cache=None, scheduler=spec, show_progress=False), warmup)
            seconds, ok = _time(lambda: Embedder(target(), cache=None, scheduler=spec, show_progress=False),
                                dataset, args.repeat)
        rows.append(_row(f"dask {n_workers} warm", n_workers, args.n, seconds, ok))

    frame = pd.DataFrame(rows)
    pool = frame.loc[0, "faces_per_s"]
    frame["ratio_vs_pool"] = (frame["faces_per_s"] / pool).round(2)
    print(f"engine={args.engine}, {args.n} UTKFace images, {os.cpu_count()} cores, "
          f"fastest of {args.repeat}")
    print(frame.to_string(index=False))

    per_worker = frame.loc[frame["run"] == "dask 1 warm", "faces_per_s"].iloc[0]
    two = frame.loc[frame["run"] == "dask 2 warm", "faces_per_s"].iloc[0]
    write_rate = client_write_rate()
    print(f"\nOne warm worker: {per_worker:.2f} faces/s; two: {two:.2f} faces/s "
          f"(scaling {two / per_worker:.2f} of an ideal 2).")
    print(f"The client writes {write_rate:,.0f} results/s to the cache "
          f"(a ceiling of about {write_rate / per_worker:,.0f} such workers per client).")
    print(f"\nEstimate for {MILLION:,} images, each worker a core like this one's, linear scaling:")
    for n_workers in (1, 10, 100):
        minutes = MILLION / (n_workers * per_worker) / 60
        print(f"  {n_workers:>3} workers: " + (f"{minutes / 60:6.1f} h" if minutes >= 90 else f"{minutes:6.0f} min"))


if __name__ == "__main__":
    main()
