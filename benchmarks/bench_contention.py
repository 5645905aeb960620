"""Training and embedding throughput on a quiet machine and beside one busy process, per thread setting.

    python benchmarks/bench_contention.py                  # every setting, about 4 minutes on 2 cores
    python benchmarks/bench_contention.py --seconds 10 --settings "2 threads, PASSIVE;2 threads, spin"

A laptop with a browser open and a shared CI runner are busy machines.
Each setting (torch's thread count, and how idle OpenMP threads wait:
``spin`` is libgomp's default, ``PASSIVE`` no spinning at all, ``spin 10k``
a shorter spin before sleeping; see ``audit/threads.py``) runs in a fresh process, because the wait policy is
read once when torch loads.  Each workload runs for about ``--seconds``
quiet, then again beside one competing process that keeps a core busy.
Settings and conditions take turns, ``--rounds`` times, and the table gives
the median throughput and the median ratio busy / quiet of each setting:
the share of its quiet throughput a setting keeps when a core is taken.

Workloads: generator training steps (:func:`probes.inversion.training.train_steps`,
128 channels, batch 64, 128-D embeddings) and descriptor batches of the
torch dlib engine (:class:`audit.targets.dlib_torch.DlibTorchEngine`, 150x150 chips).
Absolute figures depend on what else the machine runs; compare within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Each setting: torch's thread count and the OpenMP environment it starts with.  libgomp's
#: default spins about 300,000 times before sleeping; GOMP_SPINCOUNT shortens that spin.
SETTINGS = {"2 threads, spin": (2, {}), "2 threads, PASSIVE": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
            "2 threads, spin 10k": (2, {"GOMP_SPINCOUNT": "10000"}),
            "2 threads, spin 1k": (2, {"GOMP_SPINCOUNT": "1000"}),
            "2 threads, spin 100": (2, {"GOMP_SPINCOUNT": "100"}),
            "1 thread, spin": (1, {}), "1 thread, PASSIVE": (1, {"OMP_WAIT_POLICY": "PASSIVE"})}
BUSY = "while True: pass"


def _child(kind: str, threads: int, seconds: float) -> dict:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    if kind == "train":
        from probes.inversion.generator import InversionGenerator
        from probes.inversion.training import make_optimizer, place_model, stage_on_device, train_steps

        model = place_model(InversionGenerator(128, base_channels=128), "cpu")
        optimizer = make_optimizer(model, device="cpu")
        emb, chips = stage_on_device(rng.normal(size=(512, 128)).astype(np.float32),
                                     rng.integers(0, 256, size=(512, 64, 64, 3), dtype=np.uint8), "cpu")

        def work() -> int:
            idx = torch.randint(0, 512, (64,))
            train_steps(model, optimizer, chips, emb, [idx])
            return 64
    else:
        from audit.targets.dlib_torch import DlibTorchEngine

        engine = DlibTorchEngine(batch_size=32)
        batch = rng.integers(0, 256, size=(32, 150, 150, 3), dtype=np.uint8)

        def work() -> int:
            engine.embed(batch)
            return 32
    work()                                      # warm up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        done += work()
    return {"per_second": done / (time.perf_counter() - started)}


def measure(kind: str, setting: str, busy: bool, seconds: float) -> float:
    threads, openmp = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    env.update(openmp)
    competitor = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        out = subprocess.run([sys.executable, __file__, "--child", kind, "--threads", str(threads),
                              "--seconds", str(seconds)], env=env, capture_output=True, text=True, check=True)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])["per_second"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default=";".join(SETTINGS), help="';'-separated, from: " + "; ".join(SETTINGS))
    parser.add_argument("--kinds", default="train,embed", help="train, embed or both")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.threads, args.seconds)))
        return
    settings = [s.strip() for s in args.settings.split(";")]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    kinds = [k.strip() for k in args.kinds.split(",")]
    rates: dict[tuple, list[float]] = {}
    for _ in range(args.rounds):
        for kind in kinds:
            for setting in settings:
                for busy in (False, True):
                    rate = measure(kind, setting, busy, args.seconds)
                    rates.setdefault((kind, setting, busy), []).append(rate)
                    print(f"  {kind:<6} {setting:<20} {'busy' if busy else 'quiet':<6} {rate:8.1f}/s",
                          file=sys.stderr, flush=True)
    unit = {"train": "samples/s", "embed": "faces/s"}
    print(f"{'workload':<10}{'setting':<22}{'quiet':>12}{'busy':>12}{'busy / quiet':>14}{'quiet vs first':>16}")
    for kind in kinds:
        first = statistics.median(rates[kind, settings[0], False])
        for setting in settings:
            quiet, busy = rates[kind, setting, False], rates[kind, setting, True]
            ratio = statistics.median(b / q for b, q in zip(busy, quiet))
            print(f"{kind:<10}{setting:<22}{statistics.median(quiet):>12.1f}{statistics.median(busy):>12.1f}"
                  f"{100 * ratio:>13.0f}%{statistics.median(quiet) / first:>15.2f}x")
    print(f"\n{unit.get(kinds[0], '')} for {kinds[0]}, {unit.get(kinds[-1], '')} for {kinds[-1]}; medians over "
          f"{args.rounds} rounds of {args.seconds:g} s each; 'busy' = beside one process spinning on a core; "
          f"{os.cpu_count()} CPUs, load average at the end {tuple(round(v, 2) for v in os.getloadavg())}.")


if __name__ == "__main__":
    main()
