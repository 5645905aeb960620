"""Descriptor throughput, faces/s: dlib's compute_face_descriptor against the torch engine.

Aligns UTKFace faces (../shared/datasets/utkface) once, then times, on the
same chips in one run, in turns over several rounds: dlib in 1 process and in a pool of one process per
core (dlib's CPU network is single-threaded), and :class:`DlibTorchEngine`
with torch's threads = all cores, in its default setup (affine fused into
the convolutions, channels-last) and in the plain one.  Alignment is not
timed.  Usage:

    python benchmarks/bench_dlib_descriptor.py [--n 200] [--batch-sizes 64,256]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from audit.targets.dlib_torch import DlibTorchEngine, default_model_path  # noqa: E402
from check_dlib_torch_exactness import aligned_chips, sample_paths  # noqa: E402

DLIB_CHUNK = 16   # dlib's python binding runs its net on batches of 16 chips

_worker_model = None


def _init_worker(model_file: str) -> None:
    global _worker_model
    import dlib

    _worker_model = dlib.face_recognition_model_v1(model_file)


def _dlib_chunk(chips: np.ndarray) -> np.ndarray:
    return np.asarray([np.asarray(v) for v in _worker_model.compute_face_descriptor(list(chips))],
                      dtype=np.float32)


class DlibPool:
    """dlib's descriptor in ``processes`` worker processes, the model loaded once in each."""

    def __init__(self, processes: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pool = ctx.Pool(processes, initializer=_init_worker, initargs=(str(default_model_path()),))
        self.pool.map(_dlib_chunk, [np.zeros((2, 150, 150, 3), np.uint8)] * processes)   # warm up

    def __call__(self, chips: np.ndarray) -> None:
        chunks = [chips[i:i + DLIB_CHUNK] for i in range(0, len(chips), DLIB_CHUNK)]
        self.pool.map(_dlib_chunk, chunks, chunksize=1)

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


def _faces_per_second(run, chips: np.ndarray) -> float:
    start = time.perf_counter()
    run(chips)
    return len(chips) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="faces")
    parser.add_argument("--batch-sizes", default="64,256", help="torch batch sizes to time")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each configuration")
    args = parser.parse_args()

    load_before = tuple(round(v, 2) for v in os.getloadavg())
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    paths = sample_paths(int(args.n * 1.1) + 5, 0)
    chips, _ = aligned_chips(paths, limit=args.n)
    n = len(chips)
    print(f"{n} UTKFace chips, {cores} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)")

    runners = {"dlib, 1 process": DlibPool(1), f"dlib, {cores} processes": DlibPool(cores)}
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        runners[f"torch plain, batch {batch_size}"] = DlibTorchEngine(
            batch_size=batch_size, fuse=False, channels_last=False).embed
        runners[f"torch fused+channels_last, batch {batch_size}"] = DlibTorchEngine(
            batch_size=batch_size).embed
    for name, run in runners.items():
        if name.startswith("torch"):
            run(chips[:8])                                          # warm up

    # The machine is shared: every configuration runs once per round, in
    # turn, and the best round counts (the least disturbed one).
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            rates[name].append(_faces_per_second(run, chips))
    for name, run in runners.items():
        if isinstance(run, DlibPool):
            run.close()

    dlib_one = max(rates["dlib, 1 process"])
    dlib_all = max(rates[f"dlib, {cores} processes"])
    print(f"load average before/after: {load_before} / {tuple(round(v, 2) for v in os.getloadavg())}")
    print(f"\n{'engine':<42} {'best faces/s':>12} {'median':>8} {'x dlib 1 proc':>14} {'x dlib all cores':>17}")
    for name, values in rates.items():
        best = max(values)
        print(f"{name:<42} {best:>12.1f} {float(np.median(values)):>8.1f} "
              f"{best / dlib_one:>14.2f} {best / dlib_all:>17.2f}")

if __name__ == "__main__":
    main()
