"""Can we beat the method's generator?  Variants trained on the same LFW faces with the same budget.

Every variant trains on the same LFW training identities for the same
number of epochs and is scored on the same held-out people, under this
project's protocol (every reconstruction embedded as the aligned chip it
is; a success needs a face found *and* distance <= 0.6; no face is a
failure) and, beside it, the method's (HOG upsample 1 on the 64x64 image,
exactly one face, else excluded).  The test set is larger than the
method's 114 people (``--test-people``, default 1,000) so that differences
of a few points are not noise.  The identity-signal gap (mean of distance
to own source minus mean distance to the other test people) is shown too.

Variants (``--variants``, comma list):

* ``method``: the method's recipe: Adam at PyTorch's defaults (lr 1e-3,
  betas 0.9/0.999), batch 300, embedding noise 1e-4, transposed convolutions;
* ``dcgan``: DCGAN's Adam (lr 2e-4, beta1 0.5), batch 200, noise 0.01;
* ``resize``: the method with nearest-resize + 3x3 convolution instead of
  transposed convolutions (no checkerboard);
* ``cosine``: the method with a cosine learning-rate decay to 0;
* ``averaged``: the method trained on per-identity averaged chips (identities
  with 3+ training images), the method's second experiment;
* ``noise``: the method with embedding noise 0.01 (a regulariser);
* ``beta05``: the method with DCGAN's beta1 = 0.5 (its learning rate kept);
* ``noise-beta05``: both of the above.

Example (about 10 minutes per variant on a quiet 2-core CPU at the defaults)::

    AUDIT_CACHE=/tmp/cache.sqlite python benchmarks/inversion_variants.py --dataset /tmp/lfw --out /tmp/variants
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit.cache import default_cache_path  # noqa: E402
from audit.data.manifest import load_dataset  # noqa: E402
from audit.faces import FaceConfig  # noqa: E402
from audit.pipeline import open_embedder, open_target  # noqa: E402
from audit.targets.base import STATUS_OK  # noqa: E402
from probes.inversion.signal import signal_test  # noqa: E402
from probes.inversion.splits import average_identities  # noqa: E402
from probes.inversion.training import reconstruct, train_generator  # noqa: E402
from reproduce_method_lfw import MethodEvaluation, method_config, score  # noqa: E402

VARIANTS = {
    "method": {},
    "dcgan": {"lr": 2e-4, "betas": (0.5, 0.999), "batch_size": 200, "noise_std": 0.01},
    "resize": {"upsampling": "resize"},
    "cosine": {"lr_schedule": "cosine"},
    "averaged": {},
    "noise": {"noise_std": 0.01},
    "beta05": {"betas": (0.5, 0.999)},
    "noise-beta05": {"noise_std": 0.01, "betas": (0.5, 0.999)},
}


def split_people(identities: np.ndarray, n_test: int, n_val: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    people = np.array(sorted(set(identities)), dtype=object)
    people = people[rng.permutation(len(people))]
    role = {p: "test" for p in people[:n_test]}
    role.update({p: "val" for p in people[n_test:n_test + n_val]})
    split = np.array([role.get(p, "train") for p in identities], dtype=object)
    chosen: set = set()
    for i in rng.permutation(len(identities)):
        if split[i] in ("val", "test"):
            split[i] = "unused" if identities[i] in chosen else split[i]
            chosen.add(identities[i])
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="an LFW folder from 'audit dataset import lfw'")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--test-people", type=int, default=1000)
    parser.add_argument("--val-people", type=int, default=200)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")

    target = open_target("dlib")
    dataset = load_dataset(args.dataset)
    rows = []
    with open_embedder(target, face_config=FaceConfig(), cache_path=default_cache_path(), use_cache=True,
                        workers=None, show_progress=False) as embedder:
        embset = embedder.embed_dataset(dataset, chip_size=64)
        usable = embset.ok & (embset.table["chip_status"].to_numpy() == STATUS_OK)
        identities = embset.table["identity"].to_numpy(dtype=object)[usable]
        vectors, chips = embset.vectors[usable], embset.chips[usable]
        split = split_people(identities, args.test_people, args.val_people, args.seed)
        train, val, test = (split == s for s in ("train", "val", "test"))
        method_eval = MethodEvaluation(target)
        for name in names:
            config = dataclasses.replace(method_config(args.epochs, args.seed, args.channels), **VARIANTS[name])
            train_chips = (average_identities(chips[train], identities[train]) if name == "averaged"
                           else chips[train])
            started = time.monotonic()
            result = train_generator(vectors[train], train_chips, vectors[val], chips[val],
                                     embed_fn=embedder.embed_arrays, metric="euclidean", config=config,
                                     checkpoint_dir=args.out / name, progress=False)
            images = reconstruct(result.model, vectors[test], device=result.device)
            recon, found = embedder.embed_arrays(images)
            ours = score(vectors[test], recon, found)
            method = score(vectors[test], *method_eval(images))
            signal = signal_test(recon, vectors[test], metric="euclidean", n_permutations=999, seed=args.seed)
            rows.append({"variant": name, "config": config.to_dict(), "best_epoch": result.best_epoch,
                         "best_val_mean_distance": result.best_val_mean_distance,
                         "seconds": round(time.monotonic() - started, 1), "ours": ours, "method": method,
                         "signal_gap": signal.gap, "rank1_rate": signal.rank1_rate,
                         "no_face_rate": 1 - ours["n_found"] / ours["n"]})
            (args.out / "variants.json").write_text(json.dumps(
                {"epochs": args.epochs, "channels": args.channels, "n_train_images": int(train.sum()),
                 "n_test": int(test.sum()), "rows": rows}, indent=2))
            print(f"done {name}: {rows[-1]['ours']}", flush=True)
    print(f"\nLFW, {int(train.sum())} training images, {args.epochs} epochs, {args.channels} channels, "
          f"{int(test.sum())} test people")
    print(f"{'variant':10} {'mean dist':>9} {'matched@0.6':>11} {'no face':>8} {'gap':>7} {'rank-1':>7} "
          f"{'method: dist':>12} {'method: <0.6':>12} {'excluded':>8} {'best ep':>7}")
    for r in rows:
        o, m = r["ours"], r["method"]
        print(f"{r['variant']:10} {o['mean_distance_embedded']:>9.3f} {o['success_rate_all']:>11.1%} "
              f"{r['no_face_rate']:>8.1%} {r['signal_gap']:>7.3f} {r['rank1_rate']:>7.1%} "
              f"{(m['mean_distance_embedded'] or float('nan')):>12.3f} "
              f"{(m['share_under_0.6_of_embedded'] or float('nan')):>12.1%} {m['n'] - m['n_found']:>8d} "
              f"{r['best_epoch']:>7d}")


if __name__ == "__main__":
    main()
