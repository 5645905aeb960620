"""Throughput of the embed stage: detection + alignment + descriptor, faces/s.

Runs the same UTKFace images (../shared/datasets/utkface) through
``audit.embedding.Embedder`` without a cache, in one process and in all
cores, for each dlib engine, and prints a table.  Usage:

    python benchmarks/bench_embed_stage.py [--n 200] [--engines dlib,torch]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.embedding import Embedder  # noqa: E402
from audit.targets.dlib_target import DlibTarget  # noqa: E402

SHARED = Path(os.environ.get("AUDIT_SHARED_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


@dataclass
class _Folder:
    root: Path
    table: pd.DataFrame

    def absolute_path(self, path) -> Path:
        return self.root / path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--engines", default="dlib,torch")
    args = parser.parse_args()
    root = SHARED / "utkface"
    if not root.is_dir():
        sys.exit(f"UTKFace not found at {root}")
    names = sorted(p.name for p in root.glob("*.jpg"))
    random.Random(0).shuffle(names)
    table = pd.DataFrame({"image_id": names[:args.n], "path": names[:args.n]})
    dataset = _Folder(root, table)
    cores = os.cpu_count() or 1
    rows = []
    for engine in args.engines.split(","):
        for workers in sorted({1, cores}):
            target = DlibTarget(engine=engine)
            target.engine  # resolve (and self-check) outside the timing
            embedder = Embedder(target, cache=None, workers=workers, show_progress=False)
            started = time.perf_counter()
            result = embedder.embed_dataset(dataset, chip_size=None)
            elapsed = time.perf_counter() - started
            rows.append({"engine": target.engine, "workers": workers, "images": args.n,
                         "ok": int(result.ok.sum()), "seconds": round(elapsed, 2),
                         "faces_per_s": round(args.n / elapsed, 1)})
    frame = pd.DataFrame(rows)
    base = frame.loc[0, "faces_per_s"]
    frame["ratio_vs_first"] = (frame["faces_per_s"] / base).round(2)
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
