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
  (the split's ``test_extra`` rows), NaN where there are none;
* ``random_match_at_default``: 1 if the within-group random partner is
  matched at the target's threshold: how much of ``success_at_default`` a
  group's crowding alone gives.

The identity-leakage figures (each reconstruction against its own group's
other people: :mod:`probes.inversion.leakage`) depend on pairs of people,
not on one row, so they are not columns here: ``Measurement.leakage`` holds
them with their intervals.

The three thresholds: ``default`` is the target's own; ``crossing`` is
where the genuine and random-pair (any other test person) distance
distributions cross (:func:`probes.inversion.metrics.crossing_threshold`),
cross-fitted so that no sample is scored at a threshold fitted on itself;
``fmr_1e-3`` is the threshold at which real different-person pairs match
1 time in 1000 (:func:`probes.inversion.metrics.threshold_at_fmr`).  A
match is ``distance <= threshold`` everywhere in this tool.

Generators: the test people can be reconstructed by several generators
(trained with different seeds); ``samples`` then has one row per
(generator, person), so that a figure is the mean over generators and its
people-resampling interval still counts each person once per draw.

Where the generators come from is not this module's business: the
single-dataset path (:func:`run_inversion_probe`) trains them on the
dataset's own training split; ``audit run --train-dataset`` trains them on
a corpus (:mod:`audit.generator_stage`) and measures every audit person
with :func:`measure_reconstructions`.

Per-group figures with intervals are not computed here: the runner feeds
``samples`` to :func:`probes.stats.group_figures`.  ``details`` holds what
the report plots (sweeps, distributions, history, sample images) and the
identity-signal tests (:mod:`probes.inversion.signal`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from audit.distances import cross_distances
from audit.errors import InputError
from audit.outputs import private_folder, replacing
from audit.results import grouping_name
from audit.targets.base import Metric
from probes.inversion.metrics import (DEFAULT_FMR, crossfit_crossing_thresholds, random_pair_distances,
                                      reconstruction_distances, threshold_at_fmr, threshold_sweep,
                                      type2_distances)
from probes.inversion.leakage import LeakageResult, leakage_by_group
from probes.inversion.signal import SignalTest, group_signal_tests, label_attributes
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
    """``samples``: one row per (generator, test image); ``details``: JSON-ready, for the report;
    ``signal``: the identity-signal test of every group."""

    samples: pd.DataFrame
    details: dict
    training: TrainingResult
    signal: list[SignalTest] = field(default_factory=list)
    leakage: LeakageResult | None = None
    #: The reconstructions' embeddings, one row per row of ``samples`` (NaN where none).
    reconstruction_vectors: np.ndarray | None = None


def _rounded(values: np.ndarray) -> list:
    values = np.asarray(values, dtype=np.float64)
    return [round(float(v), DETAIL_DECIMALS) for v in values[np.isfinite(values)]]


def _json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _write_png(path: Path, image: np.ndarray) -> None:
    """A face (an audit image's chip or its reconstruction): owner-only, in an owner-only folder."""
    private_folder(path.parent)
    with replacing(path, private=True) as tmp:
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(tmp, format="PNG")


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


@dataclass
class Reconstructor:
    """One trained generator, as the measurement needs it."""

    model: object
    device: str = "cpu"
    label: str = "seed 0"


@dataclass
class Measurement:
    """What :func:`measure_reconstructions` returns: samples, details, signal tests, leakage per group."""

    samples: pd.DataFrame
    details: dict
    signal: list[SignalTest]
    leakage: LeakageResult | None = None
    #: The reconstructions' embeddings, one row per row of ``samples`` (NaN where none): the attributes
    #: probe reads them.
    reconstruction_vectors: np.ndarray | None = None


def check_probe_inputs(*, embeddings: np.ndarray, chips: np.ndarray, table: pd.DataFrame, split: pd.Series,
                       groupings: Sequence[Sequence[str]], default_threshold: float) -> tuple:
    """Row-aligned arrays and a split made by :func:`split_identities`, or an InputError naming what is off."""
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
    return embeddings, chips, split_values, attributes


def run_inversion_probe(*, embeddings: np.ndarray, chips: np.ndarray, table: pd.DataFrame, split: pd.Series,
                        embed_fn: EmbedFn | None, metric: Metric, default_threshold: float,
                        impostor_distances: np.ndarray | None, config: TrainingConfig, out_dir: Path,
                        groupings: Sequence[Sequence[str]], person: str = "identity", seed: int = 0,
                        average_identities: bool = False, samples_per_group: int = DEFAULT_SAMPLES_PER_GROUP,
                        progress: bool = True, identity_model=None, n_generators: int = 1,
                        n_resamples: int = 1000, label_columns: Sequence[str] = ()) -> InversionResult:
    """Train (or resume) the generator(s) on one dataset's split and measure them on its test people.

    The single-dataset path: ``embeddings``, ``chips`` (uint8 aligned
    chips), ``table`` (``image_id``, ``person``, attribute columns) and
    ``split`` (from :func:`probes.inversion.splits.split_identities`) are
    row-aligned.  ``n_generators`` generators are trained with seeds
    ``config.seed``, ``+1``, ...; checkpoints go to
    ``out_dir/checkpoints/inversion`` (and ``inversion-seedK`` for the
    others; rerun to resume), sample images to ``out_dir/samples``.  See
    :func:`measure_reconstructions` for what is measured.
    """
    embeddings, chips, split_values, _ = check_probe_inputs(
        embeddings=embeddings, chips=chips, table=table, split=split, groupings=groupings,
        default_threshold=default_threshold)
    for name in (SPLIT_TRAIN, SPLIT_TEST):
        if not (split_values == name).any():
            raise InputError(f"the split has no {name!r} rows: there are too few people to train and test "
                             "a generator. Use a dataset with more identities, or train on a corpus "
                             "(--train-dataset).")
    persons = person_labels(table, person)
    out_dir = Path(out_dir)
    train = split_values == SPLIT_TRAIN
    val = split_values == SPLIT_VAL
    train_chips = chips[train]
    if average_identities:
        train_chips = average_identity_chips(train_chips, persons[train])
    trained: list[TrainingResult] = []
    for k in range(n_generators):
        folder = out_dir / CHECKPOINT_SUBDIR if k == 0 else out_dir / f"{CHECKPOINT_SUBDIR}-seed{config.seed + k}"
        trained.append(train_generator(embeddings[train], train_chips, embeddings[val], chips[val],
                                       embed_fn=embed_fn, metric=metric,
                                       config=replace(config, seed=config.seed + k), checkpoint_dir=folder,
                                       progress=progress, identity_model=identity_model))
    generators = [Reconstructor(t.model, t.device, f"seed {config.seed + k}") for k, t in enumerate(trained)]
    measured = measure_reconstructions(
        generators=generators, embeddings=embeddings, chips=chips, table=table, split=split_values,
        embed_fn=embed_fn, metric=metric, default_threshold=default_threshold,
        impostor_distances=impostor_distances, out_dir=out_dir, groupings=groupings, person=person, seed=seed,
        samples_per_group=samples_per_group, eval_batch_size=config.eval_batch_size, n_resamples=n_resamples,
        label_columns=label_columns)
    details = {**measured.details, **training_details(trained[0], config),
               "generators": [generator_summary(t, f"seed {config.seed + k}", "trained in this run")
                              for k, t in enumerate(trained)],
               "average_identities": bool(average_identities)}
    return InversionResult(samples=measured.samples, details=details, training=trained[0], signal=measured.signal,
                           leakage=measured.leakage, reconstruction_vectors=measured.reconstruction_vectors)


def training_details(training: TrainingResult, config: TrainingConfig) -> dict:
    """The first generator's training, as the report's training-curve section reads it."""
    return {
        "history": [{"epoch": h["epoch"], "train_loss": h["train_loss"],
                     "val_mean_distance": h["val_mean_distance"], "val_failures": h["val_failures"]}
                    for h in training.history],
        "best_epoch": int(training.best_epoch),
        "best_val_mean_distance": _json_float(training.best_val_mean_distance),
        "device": str(training.device),
        "training_seconds": float(training.training_seconds),
        "samples_per_second": _json_float(training.samples_per_second),
        "training_config": config.to_dict(),
    }


def generator_summary(training: TrainingResult, label: str, source: str) -> dict:
    return {"label": label, "source": source, "best_epoch": int(training.best_epoch),
            "best_val_mean_distance": _json_float(training.best_val_mean_distance),
            "training_seconds": float(training.training_seconds)}


@dataclass(frozen=True)
class _TestSet:
    """The test people as every generator's reconstructions are measured against them."""

    real: np.ndarray               # their embeddings, one row per test person
    persons: np.ndarray
    table: pd.DataFrame
    rows: np.ndarray               # their rows in the caller's table
    finest_groups: np.ndarray      # their group in the finest grouping (for within-group random pairs)
    extra_embeddings: np.ndarray   # their other photos (type II distances)
    extra_persons: np.ndarray
    attributes: Sequence[str]
    person: str


def _one_generator_samples(k: int, vectors: np.ndarray, ok: np.ndarray, test: _TestSet, *, metric: Metric,
                           reembedded: bool, thresholds: dict[str, float], seed: int) -> tuple[pd.DataFrame, list]:
    """One row per test person for generator ``k``: distance, success at each threshold, and baselines.

    Returns the rows and the crossing thresholds of the cross-fitting folds.
    """
    real, n = test.real, len(test.real)
    distance, _, ok = reconstruction_distances(real, vectors, ok, metric)
    within = random_pair_distances(vectors, real, test.persons, test.finest_groups, within_group=True,
                                   metric=metric, seed=seed)[:, 0]
    across = random_pair_distances(vectors, real, test.persons, test.finest_groups, within_group=False,
                                   metric=metric, seed=seed + 1)[:, 0]
    anyone = random_pair_distances(vectors, real, test.persons, np.zeros(n), within_group=True,
                                   metric=metric, seed=seed + 2)[:, 0]
    type2 = type2_distances(vectors, test.persons, test.extra_embeddings, test.extra_persons, metric=metric)
    crossing, folds = (crossfit_crossing_thresholds(distance, anyone, seed=seed + 3) if reembedded
                       else (np.full(n, np.nan), []))
    frame = pd.DataFrame({
        "generator": k,
        "image_id": (test.table["image_id"].to_numpy() if "image_id" in test.table.columns
                     else test.rows.astype(str)),
        test.person: test.persons,
    })
    for attribute in test.attributes:
        frame[attribute] = test.table[attribute].to_numpy()
    frame["distance"] = distance
    frame["recon_ok"] = ok
    frame["no_face"] = (~ok).astype(float) if reembedded else np.nan
    for key, t in (("default", np.full(n, thresholds["default"])), ("crossing", crossing),
                   (FMR_KEY, np.full(n, thresholds[FMR_KEY]))):
        usable = np.isfinite(t)
        if reembedded and usable.any():
            with np.errstate(invalid="ignore"):
                frame[f"success_at_{key}"] = np.where(usable, (ok & (distance <= t)).astype(float), np.nan)
        else:
            frame[f"success_at_{key}"] = np.nan
    if reembedded:   # the share of the fixed-threshold match rate that a group's crowding alone gives
        with np.errstate(invalid="ignore"):
            matched_other = (ok & (within <= thresholds["default"])).astype(float)
        frame["random_match_at_default"] = np.where(ok & np.isnan(within), np.nan, matched_other)
    else:
        frame["random_match_at_default"] = np.nan
    frame["threshold_crossing"] = crossing
    frame["random_pair_distance_within"] = within
    frame["random_pair_distance_across"] = across
    frame["random_pair_distance_any"] = anyone
    frame["impostor_mean_distance"] = _mean_distance_to_others(vectors, real, test.persons, metric)
    frame["type2_distance"] = type2
    return frame, folds


def measure_reconstructions(*, generators: Sequence[Reconstructor], embeddings: np.ndarray, chips: np.ndarray,
                            table: pd.DataFrame, split: Sequence[str], embed_fn: EmbedFn | None, metric: Metric,
                            default_threshold: float, impostor_distances: np.ndarray | None, out_dir: Path,
                            groupings: Sequence[Sequence[str]], person: str = "identity", seed: int = 0,
                            samples_per_group: int = DEFAULT_SAMPLES_PER_GROUP,
                            eval_batch_size: int = 500, n_resamples: int = 1000,
                            label_columns: Sequence[str] = ()) -> Measurement:
    """Reconstruct every test person with every generator and measure (see the module doc).

    ``split`` labels rows ``test`` (one image per test person: the figures)
    and ``test_extra`` (their other photos: type II); other labels are
    ignored.  ``samples`` has one row per (generator, test person), with a
    ``generator`` column: per-group figures pool them, their intervals
    resample people.  The crossing threshold is cross-fitted
    (:func:`~probes.inversion.metrics.crossfit_crossing_thresholds`).
    ``signal`` holds the identity-signal test of every group, the
    generators pooled (:mod:`probes.inversion.signal`): each reconstruction
    is compared only with the people sharing all its labels, the grouped
    attributes and those of ``label_columns`` (the dataset's other
    attribute columns) with few values (:func:`~probes.inversion.signal.label_attributes`).
    """
    if not generators:
        raise InputError("measure_reconstructions needs at least one generator.")
    embeddings = np.asarray(embeddings, dtype=np.float32)
    split_values = np.asarray(split, dtype=object)
    attributes = list(dict.fromkeys(a for g in groupings for a in g))
    persons = person_labels(table, person)
    out_dir = Path(out_dir)
    test_rows = np.flatnonzero(split_values == SPLIT_TEST)
    extra_rows = np.flatnonzero(split_values == SPLIT_TEST_EXTRA)
    if not len(test_rows):
        raise InputError("there is no test image to reconstruct (no row labelled 'test').")
    real = embeddings[test_rows].astype(np.float64)
    test_persons = persons[test_rows]
    test_table = table.iloc[test_rows].reset_index(drop=True)
    finest = max(groupings, key=len) if groupings else []
    finest_groups = group_labels(test_table, finest)
    reembedded = embed_fn is not None
    impostors = np.asarray(impostor_distances if impostor_distances is not None else [], dtype=np.float64)
    fmr_threshold = threshold_at_fmr(impostors, DEFAULT_FMR) if len(impostors) else float("nan")

    test = _TestSet(real=real, persons=test_persons, table=test_table, rows=test_rows, finest_groups=finest_groups,
                    extra_embeddings=embeddings[extra_rows], extra_persons=persons[extra_rows],
                    attributes=attributes, person=person)
    thresholds_fixed = {"default": float(default_threshold), FMR_KEY: fmr_threshold}
    frames, recon_vectors, recon_ok, fold_thresholds, first_images = [], [], [], [], None
    for k, generator in enumerate(generators):
        images = reconstruct(generator.model, embeddings[test_rows], device=generator.device,
                             batch_size=eval_batch_size)
        if first_images is None:
            first_images = images
        if reembedded:
            vectors, ok = embed_fn(images)
        else:   # precomputed vectors without a model: the reconstructions cannot be embedded
            vectors, ok = np.full_like(real, np.nan), np.zeros(len(real), dtype=bool)
        vectors = np.asarray(vectors, dtype=np.float64)
        recon_vectors.append(vectors)
        recon_ok.append(np.asarray(ok, dtype=bool))
        frame, folds = _one_generator_samples(k, vectors, ok, test, metric=metric, reembedded=reembedded,
                                              thresholds=thresholds_fixed, seed=seed + 10 * k)
        fold_thresholds.extend(folds)
        frames.append(frame)
    samples = pd.concat(frames, ignore_index=True)

    all_groupings: list[list[str]] = [[]] + [list(g) for g in groupings]
    labels = {grouping_name(g): group_labels(test_table, g) for g in all_groupings}
    stratified_on = label_attributes(test_table, attributes, label_columns)
    signal = (group_signal_tests(recon_vectors, real, labels, metric=metric, seed=seed,
                                 strata=group_labels(test_table, stratified_on), stratified_on=stratified_on)
              if reembedded else [])
    leakage = (leakage_by_group(recon_vectors, recon_ok, real, test_persons, _complete_labels(test_table, labels,
                                                                                            all_groupings),
                                metric=metric, extras=_other_photos(test), n_resamples=n_resamples, seed=seed)
               if reembedded else None)
    crossing_value = float(np.mean(fold_thresholds)) if fold_thresholds else float("nan")
    thresholds = {"default": float(default_threshold), "crossing": crossing_value, FMR_KEY: fmr_threshold}
    details = _details(samples, thresholds, fold_thresholds, groupings=all_groupings, chips=chips,
                       images=first_images, test_rows=test_rows, out_dir=out_dir, seed=seed,
                       samples_per_group=samples_per_group, default_threshold=default_threshold,
                       reembedded=reembedded, finest=finest, n_impostors=int(np.isfinite(impostors).sum()),
                       n_generators=len(generators))
    details["signal"] = [t.to_dict() for t in signal]
    if leakage is not None:
        details["leakage"] = leakage.details()
    return Measurement(samples, details, signal, leakage, reconstruction_vectors=np.concatenate(recon_vectors))


def _complete_labels(table: pd.DataFrame, labels: dict[str, np.ndarray],
                     groupings: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """Each grouping's labels with None for a row missing one of its attributes (it is in no group)."""
    out = {}
    for grouping in groupings:
        name = grouping_name(grouping)
        row_labels = np.asarray(labels[name], dtype=object).copy()
        if grouping:
            row_labels[~table[list(grouping)].notna().all(axis=1).to_numpy()] = None
        out[name] = row_labels
    return out


def _other_photos(test: _TestSet) -> list[np.ndarray] | None:
    """Each test person's other photos (real embeddings), for the type II leakage figures; None if nobody has any."""
    if not len(test.extra_persons):
        return None
    by_person: dict[str, list[int]] = {}
    for j, p in enumerate(np.asarray(test.extra_persons, dtype=object).astype(str)):
        by_person.setdefault(p, []).append(j)
    extra = np.asarray(test.extra_embeddings, dtype=np.float64)
    return [extra[by_person.get(str(p), [])] for p in test.persons]


def _details(samples: pd.DataFrame, thresholds: dict, fold_thresholds: list, *, groupings, chips, images,
             test_rows, out_dir: Path, seed: int, samples_per_group: int, default_threshold: float,
             reembedded: bool, finest, n_impostors: int, n_generators: int) -> dict:
    """What the report plots: sweeps and distributions (all generators pooled), sample images."""
    distance = samples["distance"].to_numpy()
    ok = samples["recon_ok"].to_numpy(dtype=bool)
    within = samples["random_pair_distance_within"].to_numpy()
    across = samples["random_pair_distance_across"].to_numpy()
    sweep_t = _sweep_thresholds([distance, within, across], default_threshold, DEFAULT_SWEEP_POINTS)
    by_group: dict[str, dict[str, list]] = {}
    distributions: dict[str, dict[str, dict]] = {}
    sample_images: list[dict] = []
    rng = np.random.default_rng(seed)
    first = (samples["generator"] == 0).to_numpy()
    for grouping in groupings:
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
            for i in rng.permutation(np.flatnonzero(first & (keys == label)))[:samples_per_group]:
                row = int(test_rows[i])
                original = f"{SAMPLES_DIR}/test_{row}_original.png"
                recon = f"{SAMPLES_DIR}/test_{row}_reconstruction.png"
                _write_png(out_dir / original, chips[row])
                _write_png(out_dir / recon, images[i])
                sample_images.append({"grouping": name, "group": label, "image_id": str(samples["image_id"][i]),
                                      "original": original, "reconstruction": recon,
                                      "distance": _json_float(distance[i])})
    success_at = {}
    for key in thresholds:
        column = samples[f"success_at_{key}"]
        success_at[key] = _json_float(column.mean()) if reembedded and column.notna().any() else None
    details = {
        "thresholds": {k: _json_float(v) for k, v in thresholds.items()},
        "crossing_fold_thresholds": [_json_float(t) for t in fold_thresholds],
        "success_rate_at": success_at,
        "sweep": {"thresholds": [round(float(t), DETAIL_DECIMALS) for t in sweep_t], "by_group": by_group},
        "distributions": distributions,
        "sample_images": sample_images,
        "n_test": int(len(test_rows)),
        "n_generators": int(n_generators),
        "n_no_face": int((~ok[first]).sum()),
        "n_impostor_pairs": n_impostors,
        "random_pair_group": grouping_name(finest),
        "reembedded": reembedded,
    }
    if not reembedded:
        details["unavailable"] = (
            "The target gave precomputed vectors and no model to embed new images, so the "
            "reconstructions could not be embedded: reconstruction distances, success rates, the "
            "random-pair baseline and thresholds are unavailable. The generator was trained and its "
            "checkpoint chosen on pixel error; sample reconstructions are shown. Give the target a model "
            "(--target-option reembed=dlib) to measure them.")
    return details
