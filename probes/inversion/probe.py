"""The inversion probe: train the generator, reconstruct the test faces, measure per group.

What is measured, per test image (one per test person, see
:mod:`probes.inversion.splits`):

* ``distance``: the target's distance between the real embedding and the
  embedding of its reconstruction (NaN where the target found no face in
  the reconstruction; ``recon_ok`` / ``no_face`` say so);
* ``success_at_default`` / ``success_at_crossing`` / ``success_at_fmr_1e-3``:
  1 if the reconstruction is matched at that threshold, 0 otherwise (a
  no-face reconstruction is 0);
* ``random_pair_distance_within`` / ``_across``: the reconstruction against
  another test person of the same / of another group (the finest grouping,
  i.e. the intersection of all attributes);
* ``type2_distance``: the reconstruction against the person's other photos
  (the split's ``test_extra`` rows), NaN where there are none.

The three thresholds: ``default`` is the target's own; ``crossing`` is
where the genuine and random-pair (any other test person) distance
distributions cross (:func:`probes.inversion.metrics.crossing_threshold`);
``fmr_1e-3`` is the threshold at which real different-person pairs match
1 time in 1000 (:func:`probes.inversion.metrics.threshold_at_fmr`).

Per-group figures with intervals are not computed here: the runner feeds
``samples`` to :func:`probes.stats.group_figures`.  ``details`` holds what
the report plots (sweeps, distributions, history, sample images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from audit.distances import cross_distances
from audit.errors import InputError
from audit.results import grouping_name
from audit.targets.base import Metric
from probes.inversion.metrics import (DEFAULT_FMR, crossing_threshold, random_pair_distances,
                                      reconstruction_distances,
                                      success_rate, threshold_at_fmr, threshold_sweep, type2_distances)
from probes.inversion.splits import (SPLIT_TEST, SPLIT_TEST_EXTRA, SPLIT_TRAIN, SPLIT_VAL, SPLITS,
                                     average_identities as average_identity_chips, group_labels,
                                     person_labels)
from probes.inversion.training import (EmbedFn, TrainingConfig, TrainingResult, reconstruct,
                                       train_generator)

#: Sample images written per group (original and reconstruction each).
DEFAULT_SAMPLES_PER_GROUP = 2
#: Points of the success-rate sweep.
DEFAULT_SWEEP_POINTS = 51
SAMPLES_DIR = "samples"
CHECKPOINT_SUBDIR = Path("checkpoints") / "inversion"
FMR_KEY = "fmr_1e-3"
#: Distances in ``details`` are rounded to this many decimals (the report plots them).
DETAIL_DECIMALS = 5


@dataclass
class InversionResult:
    """``samples``: one row per test image; ``details``: JSON-ready, for the report."""

    samples: pd.DataFrame
    details: dict
    training: TrainingResult


def _rounded(values: np.ndarray) -> list:
    values = np.asarray(values, dtype=np.float64)
    return [round(float(v), DETAIL_DECIMALS) for v in values[np.isfinite(values)]]


def _json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(path)


def _sweep_thresholds(values: Sequence[np.ndarray], default_threshold: float, n_points: int) -> np.ndarray:
    finite = np.concatenate([np.asarray(v, dtype=np.float64)[np.isfinite(v)] for v in values] + [np.zeros(0)])
    upper = max([float(default_threshold) * 2] + ([float(finite.max())] if len(finite) else []))
    return np.linspace(0.0, upper, n_points)


def _mean_distance_to_others(vectors: np.ndarray, real: np.ndarray, persons: np.ndarray,
                             metric: Metric) -> np.ndarray:
    """Each reconstruction's mean distance to every OTHER test person's real embedding.

    The noise-free form of the random-pair baseline, per sample: a
    reconstruction that carries identity is closer to its own source
    than to this mean.  NaN where the reconstruction has no vector.
    """
    out = np.full(len(vectors), np.nan)
    has = np.all(np.isfinite(vectors), axis=1)
    if has.sum() == 0 or len(real) < 2:
        return out
    matrix = cross_distances(vectors[has], real, metric)
    other = persons[has][:, None] != persons[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[has] = np.where(other, matrix, 0.0).sum(1) / other.sum(1)
    return out


def run_inversion_probe(*, embeddings: np.ndarray, chips: np.ndarray, table: pd.DataFrame, split: pd.Series,
                        embed_fn: EmbedFn | None, metric: Metric, default_threshold: float,
                        impostor_distances: np.ndarray | None, config: TrainingConfig, out_dir: Path,
                        groupings: Sequence[Sequence[str]], person: str = "identity", seed: int = 0,
                        average_identities: bool = False, samples_per_group: int = DEFAULT_SAMPLES_PER_GROUP,
                        progress: bool = True, identity_model=None) -> InversionResult:
    """Train (or resume) the generator and measure its reconstructions of the test people.

    ``embeddings``, ``chips`` (uint8 aligned chips), ``table`` (``image_id``,
    ``person``, attribute columns) and ``split`` (from
    :func:`probes.inversion.splits.split_identities`) are row-aligned.
    ``impostor_distances`` are real-vs-real different-person distances for
    the FMR threshold (None or empty: that threshold is NaN).  Checkpoints
    go to ``out_dir/checkpoints/inversion`` (rerun to resume), sample
    images to ``out_dir/samples``.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    chips = np.asarray(chips)
    split_values = np.asarray(split, dtype=object)
    n = len(table)
    if not (len(embeddings) == len(chips) == len(split_values) == n):
        raise InputError(f"embeddings ({len(embeddings)}), chips ({len(chips)}), table ({n}) and split "
                         f"({len(split_values)}) must have one row per image each.")
    unknown = sorted(set(map(str, split_values)) - set(SPLITS))
    if unknown:
        raise InputError(f"split has label(s) {unknown}; expected only {SPLITS} (from split_identities).")
    attributes = list(dict.fromkeys(a for g in groupings for a in g))
    missing = [a for a in attributes if a not in table.columns]
    if missing:
        raise InputError(f"groupings name column(s) {missing} that the table lacks.")
    if not math.isfinite(float(default_threshold)):
        raise InputError(f"default_threshold={default_threshold!r}, must be a finite number.")
    for name in (SPLIT_TRAIN, SPLIT_TEST):
        if not (split_values == name).any():
            raise InputError(f"the split has no {name!r} rows: there are too few people to train and test "
                             "a generator. Use a dataset with more identities.")
    persons = person_labels(table, person)
    out_dir = Path(out_dir)

    train = split_values == SPLIT_TRAIN
    val = split_values == SPLIT_VAL
    test = split_values == SPLIT_TEST
    extra = split_values == SPLIT_TEST_EXTRA
    train_chips = chips[train]
    if average_identities:
        train_chips = average_identity_chips(train_chips, persons[train])
    training = train_generator(embeddings[train], train_chips, embeddings[val], chips[val],
                               embed_fn=embed_fn, metric=metric, config=config,
                               checkpoint_dir=out_dir / CHECKPOINT_SUBDIR, progress=progress,
                               identity_model=identity_model)

    # -- reconstruct and measure the test people ---------------------------------
    test_rows = np.flatnonzero(test)
    real = embeddings[test_rows].astype(np.float64)
    images = reconstruct(training.model, embeddings[test_rows], device=training.device,
                         batch_size=config.eval_batch_size)
    reembedded = embed_fn is not None
    if reembedded:
        vectors, ok = embed_fn(images)
    else:   # precomputed vectors without a model: the reconstructions cannot be embedded
        vectors, ok = np.full_like(real, np.nan), np.zeros(len(real), dtype=bool)
    vectors = np.asarray(vectors, dtype=np.float64)
    distance, _, ok = reconstruction_distances(real, vectors, ok, metric)

    test_persons = persons[test_rows]
    finest = max(groupings, key=len) if groupings else []
    finest_groups = group_labels(table.iloc[test_rows], finest)
    within = random_pair_distances(vectors, real, test_persons, finest_groups, within_group=True,
                                   metric=metric, seed=seed)[:, 0]
    across = random_pair_distances(vectors, real, test_persons, finest_groups, within_group=False,
                                   metric=metric, seed=seed + 1)[:, 0]
    anyone = random_pair_distances(vectors, real, test_persons, np.zeros(len(test_rows)), within_group=True,
                                   metric=metric, seed=seed + 2)[:, 0]
    extra_rows = np.flatnonzero(extra)
    type2 = type2_distances(vectors, test_persons, embeddings[extra_rows], persons[extra_rows], metric=metric)

    impostors = np.asarray(impostor_distances if impostor_distances is not None else [], dtype=np.float64)
    thresholds = {"default": float(default_threshold),
                  "crossing": crossing_threshold(distance, anyone) if reembedded else float("nan"),
                  FMR_KEY: threshold_at_fmr(impostors, DEFAULT_FMR) if len(impostors) else float("nan")}

    test_table = table.iloc[test_rows].reset_index(drop=True)
    samples = pd.DataFrame({
        "image_id": (test_table["image_id"].to_numpy() if "image_id" in test_table.columns
                     else test_rows.astype(str)),
        person: test_persons,
    })
    for attribute in attributes:
        samples[attribute] = test_table[attribute].to_numpy()
    samples["distance"] = distance
    samples["recon_ok"] = ok
    samples["no_face"] = (~ok).astype(float) if reembedded else np.nan
    for key, t in thresholds.items():
        if math.isfinite(t) and reembedded:
            with np.errstate(invalid="ignore"):
                samples[f"success_at_{key}"] = (ok & (distance <= t)).astype(float)
        else:
            samples[f"success_at_{key}"] = np.nan
    samples["random_pair_distance_within"] = within
    samples["random_pair_distance_across"] = across
    samples["random_pair_distance_any"] = anyone
    samples["impostor_mean_distance"] = _mean_distance_to_others(vectors, real, test_persons, metric)
    samples["type2_distance"] = type2

    # -- details for the report ------------------------------------------------
    sweep_t = _sweep_thresholds([distance, within, across], default_threshold, DEFAULT_SWEEP_POINTS)
    all_groupings: list[list[str]] = [[]] + [list(g) for g in groupings]
    by_group: dict[str, dict[str, list]] = {}
    distributions: dict[str, dict[str, dict]] = {}
    sample_images: list[dict] = []
    rng = np.random.default_rng(seed)
    for grouping in all_groupings:
        name = grouping_name(grouping)
        by_group[name], distributions[name] = {}, {}
        keys = group_labels(samples, grouping)
        for label in sorted(set(keys)):
            rows = np.flatnonzero(keys == label)
            if reembedded:
                by_group[name][label] = [round(float(r), DETAIL_DECIMALS)
                                         for r in threshold_sweep(distance[rows], ok[rows], sweep_t)]
                distributions[name][label] = {"genuine": _rounded(distance[rows]),
                                              "random_pair": _rounded(within[rows])}
            for i in rng.permutation(rows)[:samples_per_group]:
                row = int(test_rows[i])
                original = f"{SAMPLES_DIR}/test_{row}_original.png"
                recon = f"{SAMPLES_DIR}/test_{row}_reconstruction.png"
                _write_png(out_dir / original, chips[row])
                _write_png(out_dir / recon, images[i])
                sample_images.append({"grouping": name, "group": label, "image_id": str(samples["image_id"][i]),
                                      "original": original, "reconstruction": recon,
                                      "distance": _json_float(distance[i])})

    trained = training.history
    details = {
        "thresholds": {k: _json_float(v) for k, v in thresholds.items()},
        "success_rate_at": {k: _json_float(success_rate(distance, ok, v) if reembedded else float("nan"))
                            for k, v in thresholds.items()},
        "sweep": {"thresholds": [round(float(t), DETAIL_DECIMALS) for t in sweep_t], "by_group": by_group},
        "distributions": distributions,
        "history": [{"epoch": h["epoch"], "train_loss": h["train_loss"],
                     "val_mean_distance": h["val_mean_distance"], "val_failures": h["val_failures"]}
                    for h in trained],
        "best_epoch": int(training.best_epoch),
        "best_val_mean_distance": _json_float(training.best_val_mean_distance),
        "device": str(training.device),
        "training_seconds": float(training.training_seconds),
        "samples_per_second": _json_float(training.samples_per_second),
        "sample_images": sample_images,
        "n_test": int(len(test_rows)),
        "n_no_face": int((~ok).sum()),
        "n_impostor_pairs": int(np.isfinite(impostors).sum()),
        "random_pair_group": grouping_name(finest),
        "training_config": config.to_dict(),
        "average_identities": bool(average_identities),
        "reembedded": reembedded,
    }
    if not reembedded:
        details["unavailable"] = (
            "The target gave precomputed vectors and no model to embed new images, so the "
            "reconstructions could not be embedded: reconstruction distances, success rates, the "
            "random-pair baseline and thresholds are unavailable. The generator was trained and its "
            "checkpoint chosen on pixel error; sample reconstructions are shown. Give the target a model "
            "(--target-option reembed=dlib) to measure them.")
    return InversionResult(samples=samples, details=details, training=training)
