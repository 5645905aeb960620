"""Does the torch engine give dlib's descriptors on real faces?  Max abs difference and threshold flips.

Aligns faces from UTKFace and LFW (../shared/datasets) the way dlib's
descriptor expects (HOG detection, highest score, 5-point landmarks,
``get_face_chip(size=150, padding=0.25)``), computes every descriptor with
dlib's ``compute_face_descriptor`` and with :class:`DlibTorchEngine`, and
prints the largest per-component difference and how many of the pairs of
faces change side of the 0.6 same-person threshold.  Usage:

    python benchmarks/check_dlib_torch_exactness.py [--n 1000]

Exits 1 when the difference exceeds --tolerance or a pair flips.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.targets.dlib_torch import (  # noqa: E402
    CHIP_SIZE, DEFAULT_TOLERANCE, SAME_PERSON_THRESHOLD, DlibTorchEngine, count_threshold_flips,
    dlib_descriptors,
)

SHARED = Path(os.environ.get("AUDIT_SHARED_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


def sample_paths(n_utkface: int, n_lfw: int) -> list[Path]:
    """Evenly spaced files of each dataset (sorted names), so every run sees the same faces."""
    paths: list[Path] = []
    for files, n in ((sorted((SHARED / "utkface").glob("*.jpg")), n_utkface),
                     (sorted((SHARED / "lfw" / "images_deepfunneled").glob("*/*.jpg")), n_lfw)):
        if n and not files:
            raise SystemExit(f"no images under {SHARED}: set AUDIT_SHARED_DATASETS")
        step = max(1, len(files) // max(n, 1))
        paths.extend(files[::step][:n])
    return paths


def aligned_chips(paths: list[Path], upsample: int = 0, limit: int | None = None) -> tuple[np.ndarray, list[Path]]:
    """150x150 chips of the faces dlib finds (images without one are skipped), and their paths."""
    import dlib

    from audit.models import LANDMARKS_5_MODEL, model_path

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_path(LANDMARKS_5_MODEL)))
    chips, kept = [], []
    for path in paths:
        image = np.asarray(Image.open(path).convert("RGB"))
        rects, scores, _ = detector.run(image, upsample, 0.0)
        if not rects:
            continue
        shape = predictor(image, rects[int(np.argmax(scores))])
        chips.append(np.asarray(dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=0.25)))
        kept.append(path)
        if limit and len(chips) >= limit:
            break
    return np.stack(chips).astype(np.uint8), kept


def _distances(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64)
    sq = (v * v).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * v @ v.T, 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="faces to check, half UTKFace, half LFW")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    args = parser.parse_args()

    start = time.perf_counter()
    # Ask for a few more images than faces: HOG misses some.
    paths = sample_paths(int(args.n / 2 * 1.1) + 5, int(args.n / 2 * 1.1) + 5)
    utk = [p for p in paths if "utkface" in p.parts]
    lfw = [p for p in paths if "utkface" not in p.parts]
    chips_u, _ = aligned_chips(utk, limit=args.n // 2)
    chips_l, _ = aligned_chips(lfw, limit=args.n - len(chips_u))
    chips = np.concatenate([chips_u, chips_l])
    print(f"aligned {len(chips)} faces ({len(chips_u)} UTKFace, {len(chips_l)} LFW) "
          f"in {time.perf_counter() - start:.0f} s")

    start = time.perf_counter()
    expected = dlib_descriptors(chips)
    print(f"dlib descriptors in {time.perf_counter() - start:.0f} s")
    engine = DlibTorchEngine()
    start = time.perf_counter()
    got = engine.embed(chips)
    print(f"torch descriptors ({engine.device}) in {time.perf_counter() - start:.0f} s")

    diff = np.abs(got - expected)
    flips = count_threshold_flips(got, expected)
    pairs = len(chips) * (len(chips) - 1) // 2
    dist_gap = np.abs(_distances(got) - _distances(expected)).max()
    print(f"faces: {len(chips)}")
    print(f"max abs difference per component: {diff.max():.3g} (mean {diff.mean():.3g}, tolerance {args.tolerance:g})")
    print(f"max abs difference of pair distances: {dist_gap:.3g}")
    print(f"pairs changing side of {SAME_PERSON_THRESHOLD}: {flips} of {pairs}")
    sys.exit(0 if diff.max() <= args.tolerance and flips == 0 else 1)


if __name__ == "__main__":
    main()
