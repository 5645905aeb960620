"""Reproduce the method's LFW experiment exactly, and score it under both protocols.

The method ("Inverting Facial Recognition Models", 2019; its code's
train.py / dataset.py / notebooks) trained on LFW with:

* identities split 5,521 / 114 / 114 (train / val / test), every image of a
  training identity used for training, one image per val and test identity;
* the DCGAN generator (512 channels at 4x4, 64x64 output), MSE loss,
  ``optim.Adam(model.parameters())`` at PyTorch's defaults (lr 1e-3,
  betas 0.9 / 0.999), batch 300, 150 epochs, Gaussian noise 1e-4 on the
  training embeddings, a checkpoint every 5 epochs and the best one chosen by
  the validation mean distance;
* its evaluation: dlib's HOG detector with upsample 1 on each 64x64
  reconstruction, 5-point landmarks, the descriptor; reconstructions where
  the detector does not find exactly one face are excluded (and counted).

It reported, on the test identities: mean distance 0.489 and 95% under
0.6 (all images), 0.467 and 96% with per-identity averaged training images.

This script runs that protocol with this project's code (the generator,
``train_generator``, the dlib target and its cached embeddings) and scores
the chosen checkpoint twice:

* **method**: as above (exactly one face, else excluded; share under 0.6
  among the embedded);
* **ours**: every reconstruction embedded as the aligned chip it is; a
  success needs a face found *and* distance <= 0.6; no face counts as a
  failure (what ``audit run`` reports).

It takes hours on a CPU (about 2.5 h alone on a 2-core machine for 150
epochs); it checkpoints every epoch, so a killed run started again with the
same command resumes.  ``--averaged`` trains on per-identity averaged chips
(identities with 3+ training images), the method's second experiment.

Example::

    audit dataset import lfw ../shared/datasets/lfw /tmp/lfw
    AUDIT_CACHE=/tmp/cache.sqlite python benchmarks/reproduce_method_lfw.py --dataset /tmp/lfw --out /tmp/method
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from audit.cache import default_cache_path
from audit.data.manifest import load_dataset
from audit.distances import paired_distances
from audit.faces import DESCRIPTOR_CHIP_SIZE, FaceAligner, FaceConfig
from audit.pipeline import open_embedder, open_target
from audit.targets.base import STATUS_OK
from probes.inversion.splits import average_identities
from probes.inversion.training import TrainingConfig, reconstruct, train_generator

#: The method's split of LFW's 5,749 identities.
METHOD_VAL_IDENTITIES = 114
METHOD_TEST_IDENTITIES = 114
#: What the article reported on its test identities (mean distance, share under 0.6).
ARTICLE = {"all images": (0.489, 0.95), "averaged": (0.467, 0.96)}
THRESHOLD = 0.6


def method_config(epochs: int, seed: int, channels: int) -> TrainingConfig:
    """The method's training settings (PyTorch's default Adam, batch 300, noise 1e-4)."""
    return TrainingConfig(epochs=epochs, batch_size=300, lr=1e-3, betas=(0.9, 0.999), noise_std=1e-4,
                          validate_every=5, seed=seed, device="auto", image_size=64,
                          base_channels=channels)


class MethodEvaluation:
    """The method's scoring of a reconstruction: HOG upsample 1 on the 64x64 image, exactly one face."""

    def __init__(self, target) -> None:
        self.target = target
        self.aligner = FaceAligner(FaceConfig(upsample=1, min_side=0))

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.full((len(images), self.target.dimension), np.nan, dtype=np.float32)
        found = np.zeros(len(images), dtype=bool)
        rows, chips = [], []
        for i, image in enumerate(images):
            face = self.aligner.align(image, sizes=(DESCRIPTOR_CHIP_SIZE,))
            if face.ok and face.n_faces == 1:
                rows.append(i)
                chips.append(face.chips[DESCRIPTOR_CHIP_SIZE])
        for i, outcome in zip(rows, self.target.embed(chips)):
            vectors[i] = outcome.vector
            found[i] = True
        return vectors, found


def split_method(identities: np.ndarray, seed: int) -> np.ndarray:
    """train / val / test labels per row: 114 val and 114 test identities, one image each."""
    rng = np.random.default_rng(seed)
    people = np.array(sorted(set(identities)), dtype=object)
    people = people[rng.permutation(len(people))]
    role = {p: "test" for p in people[:METHOD_TEST_IDENTITIES]}
    role.update({p: "val" for p in people[METHOD_TEST_IDENTITIES:METHOD_TEST_IDENTITIES + METHOD_VAL_IDENTITIES]})
    split = np.array([role.get(p, "train") for p in identities], dtype=object)
    chosen: set = set()
    for i in rng.permutation(len(identities)):
        if split[i] in ("val", "test"):
            if identities[i] in chosen:
                split[i] = "unused"
            else:
                chosen.add(identities[i])
    return split


def score(real: np.ndarray, vectors: np.ndarray, found: np.ndarray) -> dict:
    has = np.all(np.isfinite(vectors), axis=1)
    distance = np.full(len(real), np.nan)
    distance[has] = paired_distances(real[has].astype(np.float64), vectors[has].astype(np.float64), "euclidean")
    matched = found & has & (distance <= THRESHOLD)
    return {"n": int(len(real)), "n_embedded": int(has.sum()), "n_found": int(found.sum()),
            "mean_distance_embedded": float(np.nanmean(distance)) if has.any() else None,
            "share_under_0.6_of_embedded": float(np.mean(distance[has] <= THRESHOLD)) if has.any() else None,
            "success_rate_all": float(matched.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="an LFW folder from 'audit dataset import lfw'")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--averaged", action="store_true", help="train on per-identity averaged chips")
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()

    started = time.monotonic()
    target = open_target("dlib")
    dataset = load_dataset(args.dataset)
    with open_embedder(target, face_config=FaceConfig(), cache_path=args.cache or default_cache_path(),
                        use_cache=True, workers=None, show_progress=True) as embedder:
        embset = embedder.embed_dataset(dataset, chip_size=64)
        usable = embset.ok & (embset.table["chip_status"].to_numpy() == STATUS_OK)
        identities = embset.table["identity"].to_numpy(dtype=object)[usable]
        vectors = embset.vectors[usable]
        chips = embset.chips[usable]
        split = split_method(identities, args.seed)
        train, val, test = (split == s for s in ("train", "val", "test"))
        train_chips = average_identities(chips[train], identities[train]) if args.averaged else chips[train]
        method_eval = MethodEvaluation(target)
        config = method_config(args.epochs, args.seed, args.channels)
        result = train_generator(vectors[train], train_chips, vectors[val], chips[val], embed_fn=method_eval,
                                 metric="euclidean", config=config, checkpoint_dir=args.out / "checkpoints",
                                 progress=True)
        images = reconstruct(result.model, vectors[test], device=result.device)
        real = vectors[test]
        method = score(real, *method_eval(images))
        ours = score(real, *embedder.embed_arrays(images))
    report = {
        "protocol": "method", "averaged": args.averaged, "epochs": args.epochs, "channels": args.channels,
        "seed": args.seed, "n_train_images": int(train.sum()), "n_train_identities": int(len(set(identities[train]))),
        "n_val": int(val.sum()), "n_test": int(test.sum()), "n_usable_images": int(usable.sum()),
        "best_epoch": result.best_epoch, "best_val_mean_distance": result.best_val_mean_distance,
        "history": result.history, "training_samples_per_second": result.samples_per_second,
        "test_method_protocol": method, "test_our_protocol": ours,
        "article": ARTICLE["averaged" if args.averaged else "all images"],
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                   f"{'cuda' if torch.cuda.is_available() else 'cpu'}",
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reproduction.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    article_mean, article_share = report["article"]
    print(f"\nLFW, the method's protocol ({'averaged' if args.averaged else 'all images'}), "
          f"best epoch {result.best_epoch} of {args.epochs}, {int(test.sum())} test identities")
    print(f"{'':34} {'mean distance':>14} {'matched at 0.6':>15} {'excluded/no face':>17}")
    print(f"{'article':34} {article_mean:>14.3f} {article_share:>15.1%} {'-':>17}")
    print(f"{'ours, method evaluation':34} {_fmt(method['mean_distance_embedded'], '.3f'):>14} "
          f"{_fmt(method['share_under_0.6_of_embedded'], '.1%'):>15} {method['n'] - method['n_found']:>17d}")
    print(f"{'ours, our protocol (no face fails)':34} {_fmt(ours['mean_distance_embedded'], '.3f'):>14} "
          f"{_fmt(ours['success_rate_all'], '.1%'):>15} {ours['n'] - ours['n_found']:>17d}")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    main()
