"""The attributes probe: what an embedding, and the face reconstructed from it, say about a person's group.

Two questions, one reader per attribute (:mod:`probes.attribute_reader`,
trained on the generator's training faces, never on an audited person):

Demographic leakage (Terhörst et al., "Beyond Identity", IJCB 2020)
    How much of a person's gender, race or age band the embedding gives
    away: per group of every grouping, the reader's ``accuracy_<attr>``
    (a rate over images, people-clustered interval) and
    ``balanced_accuracy_<attr>`` (the mean of the per-class recalls, people
    bootstrap, :mod:`probes.attribute_estimates`) on the audit set's real
    embeddings, with the chance level beside each (the majority class's
    share; one over the number of classes).  Higher means the embedding
    says more than identity: ``better`` is ``lower``.
Generator fidelity
    Whether the inversion generator redraws some groups as others (a
    generator prior drifting minority faces toward the majority look).  The
    same reader reads each reconstruction's embedding:
    ``recon_accuracy_<attr>`` is the share read as the source's label, and
    ``fidelity_<attr>`` that share over the share of the *same* sources'
    real embeddings read so, so that the reader's own errors are not charged
    to the generator (1: the generator keeps the group; 0.5: half of what
    the reader sees in the real face is lost).  A group whose fidelity's
    upper 95% bound lies below ``drift_bound`` (0.9 by default), in a
    grouping that holds the attribute (:func:`drift_groupings`), *drifts*:
    it is named in ``details.drift`` with the size of the drift and the
    label its reconstructions are read as most, and the runner flags its
    inversion figures ``generator_drift`` (a low inversion figure for it is
    then partly the generator's doing, not the target's).  The confusion of
    source label against the reconstruction's label is in
    ``details.confusion``, per attribute and for the finest intersection.

Only the accuracy figures are compared between groups (``gap``: every
comparison of a run is corrected together, so each one added costs the
others power); fidelity is judged against its bound, the gate's
``attributes.fidelity_<attr>`` with a ``min`` rule.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from audit.json_model import from_json, json_safe, to_json
from audit.result_sections import AttributesSection, DriftRecord
from audit.results import ALL, FLAG_GENERATOR_DRIFT, Disparity, Figure, group_label, grouping_name
from probes.attribute_estimates import balanced_accuracy_estimate, fidelity_estimate
from probes.attribute_reader import Reader, labels_of, train_reader
from probes.result import ProbeResult
from probes.stats import (DEFAULT_CONFIDENCE, DEFAULT_MIN_PEOPLE, DEFAULT_N_RESAMPLES, GroupedFigures,
                          check_columns, check_groupings, figure_from_estimate, group_figures, iter_groups)

PROBE = "attributes"
#: A group whose fidelity's upper 95% bound is below this drifts (the data rule out a loss under 10%).
DEFAULT_DRIFT_BOUND = 0.9
#: The accuracy figures are compared by their difference only (see the module docstring).
DISPARITY_KINDS = ("gap",)
_CORRECT = "_correct"
_RECON_CORRECT = "_recon_correct"
_REAL_CORRECT = "_real_correct"


def metric_name(kind: str, attribute: str) -> str:
    """``accuracy_gender``, ``fidelity_race``: the metric of one figure ``kind`` for ``attribute``."""
    return f"{kind}_{attribute}"


@dataclass
class TrainingFaces:
    """The faces the reader learns from: never an audited person's."""

    vectors: np.ndarray
    table: pd.DataFrame          # the attribute columns (and anything else), one row per vector
    persons: np.ndarray
    source: str


@dataclass
class Reconstructions:
    """The inversion probe's reconstructions: one row per (generator, source image), and their vectors.

    ``table`` has ``image_id`` (the source image), the person column and the
    grouping attributes; ``vectors`` NaN where a reconstruction has none.
    """

    table: pd.DataFrame
    vectors: np.ndarray


def attributes_probe(*, training: TrainingFaces, audit_vectors: np.ndarray, audit_samples: pd.DataFrame,
                     groupings: Sequence[Sequence[str]], attributes: Sequence[str],
                     reconstructions: Reconstructions | None = None, fidelity_unavailable: str | None = None,
                     evaluated_on: str = "every audited person", person: str = "identity",
                     n_resamples: int = DEFAULT_N_RESAMPLES, seed: int = 0,
                     confidence: float = DEFAULT_CONFIDENCE, min_people: int = DEFAULT_MIN_PEOPLE,
                     drift_bound: float = DEFAULT_DRIFT_BOUND) -> ProbeResult:
    """Demographic leakage and generator fidelity per group (see the module docstring).

    ``audit_vectors[i]`` is the real embedding of ``audit_samples.iloc[i]``
    (``image_id``, the person column, the grouping attributes and the
    attributes to read); none of these people may be among ``training``'s.
    """
    groupings = check_groupings(groupings)
    check_columns(audit_samples, {person: "the person column", "image_id": "the image id column",
                                  **{a: "a grouping attribute" for g in groupings for a in g}})
    audit_vectors = np.asarray(audit_vectors, dtype=np.float64)
    section = {"training_source": training.source, "evaluated_on": evaluated_on, "attributes": list(attributes),
               "readers": {}, "chance": {}, "drift_bound": float(drift_bound), "confusion": [], "drift": [],
               "fidelity_unavailable": fidelity_unavailable}
    figures: list[Figure] = []
    disparities: list[Disparity] = []
    readers: dict[str, Reader] = {}
    audit_predictions: dict[str, np.ndarray] = {}
    for attribute in attributes:
        labels = (training.table[attribute].to_numpy() if attribute in training.table.columns
                  else np.full(len(training.table), None, dtype=object))
        reader = train_reader(attribute, training.vectors, labels, training.persons, seed=seed)
        record = reader.summary()
        section["readers"][attribute] = record
        if reader.skipped is not None or attribute not in audit_samples.columns:
            if reader.skipped is None:
                record["skipped"] = f"the audit set has no {attribute!r} labels"
            continue
        readers[attribute] = reader
        truth = labels_of(audit_samples[attribute].to_numpy())
        predicted = reader.predict(audit_vectors)
        audit_predictions[attribute] = predicted
        correct = np.where([t is None or p is None for t, p in zip(truth, predicted)], np.nan,
                           (predicted == truth).astype(float))
        leak_figures, leak_disparities, overall = _leakage(audit_samples, truth, correct, attribute,
                                                           groupings=groupings, person=person, seed=seed,
                                                           n_resamples=n_resamples, confidence=confidence,
                                                           min_people=min_people)
        figures += leak_figures
        disparities += leak_disparities
        labelled = truth[np.array([t is not None for t in truth], dtype=bool)]
        shares = pd.Series(labelled).value_counts(normalize=True) if len(labelled) else pd.Series(dtype=float)
        chance_balanced = 1.0 / len(shares) if len(shares) else math.nan
        record.update(chance_accuracy=float(shares.max()) if len(shares) else math.nan,
                      chance_balanced_accuracy=chance_balanced,
                      readable=bool(overall is not None and overall.ci_low is not None
                                    and math.isfinite(overall.ci_low) and overall.ci_low > chance_balanced),
                      n_audit_images=int(len(labelled)),
                      n_audit_people=int(audit_samples.loc[[t is not None for t in truth], person].nunique()))
        section["chance"][attribute] = _chance(audit_samples, truth, groupings)
    if not readers:
        section["skipped"] = ("no attribute could be read: " + "; ".join(
            f"{a}: {r['skipped']}" for a, r in section["readers"].items()) if section["readers"]
            else "the dataset has no demographic attribute to read")
    if reconstructions is not None and readers:
        fid_figures, drift, confusion, counts = _fidelity(reconstructions, audit_samples, audit_predictions,
                                                          readers, section["readers"], groupings=groupings,
                                                          person=person, n_resamples=n_resamples,
                                                          confidence=confidence, min_people=min_people,
                                                          drift_bound=drift_bound, seed=seed)
        figures += fid_figures
        section.update(drift=drift, n_reconstructions=counts[0], n_reconstructions_without_vector=counts[1])
        section["confusion"] = confusion
    elif readers:
        section["confusion"] = [_confusion(a, labels_of(audit_samples[a].to_numpy()), audit_predictions[a],
                                           None, None, readers[a].classes) for a in readers]
        if section["fidelity_unavailable"] is None:
            section["fidelity_unavailable"] = "the inversion probe did not run, so there are no reconstructions"
    details = from_json(AttributesSection, json_safe(section), "attributes")
    return ProbeResult(figures, disparities, details)


def _leakage(samples: pd.DataFrame, truth: np.ndarray, correct: np.ndarray, attribute: str, *, groupings,
             person: str, seed: int, n_resamples: int, confidence: float,
             min_people: int) -> tuple[list[Figure], list[Disparity], Figure | None]:
    """Accuracy (a rate) and balanced accuracy (a people bootstrap) of one attribute, per group."""
    frame = samples.assign(**{_CORRECT: correct})
    acc_figures, acc_disparities = group_figures(
        frame, probe=PROBE, metric=metric_name("accuracy", attribute), value=_CORRECT, person=person,
        groupings=groupings, better="lower", kind="rate", n_resamples=n_resamples, confidence=confidence,
        seed=seed, min_people=min_people, disparity_kinds=DISPARITY_KINDS)
    collected = GroupedFigures()
    labelled = ~np.isnan(correct)
    persons = samples[person].to_numpy()
    metric = metric_name("balanced_accuracy", attribute)
    for attrs in [[]] + [list(g) for g in groupings]:
        for label, mask in iter_groups(samples, attrs):
            rows = mask & labelled
            estimate = balanced_accuracy_estimate(correct[rows], truth[rows], persons[rows])
            collected.add(figure_from_estimate(estimate, probe=PROBE, metric=metric, grouping=grouping_name(attrs),
                                               group=label, confidence=confidence, n_images=int(rows.sum()),
                                               n_people=int(pd.unique(persons[rows]).size), better="lower",
                                               min_people=min_people), estimate)
    balanced = collected.figures()
    overall = next((f for f in balanced if f.grouping == ALL), None)
    return (acc_figures + balanced, acc_disparities + collected.disparities(DISPARITY_KINDS, confidence=confidence),
            overall)


def _chance(samples: pd.DataFrame, truth: np.ndarray, groupings) -> dict:
    """Per grouping and group: the majority class's share and one over the number of classes."""
    out: dict[str, dict[str, dict]] = {}
    labelled = np.array([t is not None for t in truth], dtype=bool)
    for attrs in [[]] + [list(g) for g in groupings]:
        for label, mask in iter_groups(samples, attrs):
            values = pd.Series(truth[mask & labelled])
            shares = values.value_counts(normalize=True)
            out.setdefault(grouping_name(attrs), {})[label] = {
                "accuracy": float(shares.max()) if len(shares) else None,
                "balanced_accuracy": 1.0 / len(shares) if len(shares) else None}
    return out


def _fidelity(reconstructions: Reconstructions, samples: pd.DataFrame, predictions: dict[str, np.ndarray],
              readers: dict[str, Reader], records: dict[str, dict], *, groupings, person: str, n_resamples: int,
              confidence: float, min_people: int, drift_bound: float,
              seed: int) -> tuple[list[Figure], list[dict], list[dict], tuple[int, int]]:
    """Recon accuracy and fidelity per group and attribute; the drifting groups; the confusion matrices."""
    table = reconstructions.table.reset_index(drop=True)
    vectors = np.asarray(reconstructions.vectors, dtype=np.float64)
    has_vector = np.all(np.isfinite(vectors), axis=1) if len(vectors) else np.zeros(0, dtype=bool)
    source = pd.Index(samples["image_id"].astype(str)).get_indexer(table["image_id"].astype(str))
    known = source >= 0
    figures: list[Figure] = []
    drift: list[dict] = []
    confusion: list[dict] = []
    recon_predictions: dict[str, np.ndarray] = {}
    truths: dict[str, np.ndarray] = {}
    persons = table[person].to_numpy()
    for attribute, reader in readers.items():
        truth = np.full(len(table), None, dtype=object)
        real = np.full(len(table), None, dtype=object)
        all_truth = labels_of(samples[attribute].to_numpy())
        truth[known] = all_truth[source[known]]
        real[known] = predictions[attribute][source[known]]
        recon = reader.predict(vectors)
        recon_predictions[attribute], truths[attribute] = recon, truth
        usable = has_vector & np.array([t is not None and r is not None for t, r in zip(truth, real)], dtype=bool)
        recon_ok = np.where(usable, (recon == truth).astype(float), np.nan)
        real_ok = np.where(usable, (real == truth).astype(float), np.nan)
        frame = table.assign(**{_RECON_CORRECT: recon_ok})
        recon_figures, _ = group_figures(frame, probe=PROBE, metric=metric_name("recon_accuracy", attribute),
                                         value=_RECON_CORRECT, person=person, groupings=groupings, better="higher",
                                         kind="rate", n_resamples=n_resamples, confidence=confidence, seed=seed,
                                         min_people=min_people, disparity_kinds=())
        figures += recon_figures
        recon_by_group = {(f.grouping, f.group): f for f in recon_figures}
        judged = drift_groupings(attribute, groupings)
        for attrs in [[]] + [list(g) for g in groupings]:
            name = grouping_name(attrs)
            for label, mask in iter_groups(table, attrs):
                rows = mask & usable
                estimate = fidelity_estimate(recon_ok[rows], real_ok[rows], persons[rows])
                figure = figure_from_estimate(estimate, probe=PROBE, metric=metric_name("fidelity", attribute),
                                              grouping=name, group=label, confidence=confidence,
                                              n_images=int(rows.sum()), n_people=int(pd.unique(persons[rows]).size),
                                              better="higher", min_people=min_people)
                figures.append(figure)
                if (name in judged and records[attribute].get("readable") and figure.ci_high is not None
                        and math.isfinite(figure.ci_high) and figure.ci_high < drift_bound):
                    drift.append(_drift_record(attribute, figure, recon_by_group.get((name, label)),
                                               real_ok[rows], truth[rows], recon[rows]))
        confusion.append(_confusion(attribute, truth[usable], real[usable], truth[usable], recon[usable],
                                    reader.classes))
    finest = max(groupings, key=len) if groupings else []
    if len(finest) > 1 and all(a in readers for a in finest):
        confusion.append(_joint_confusion(finest, truths, recon_predictions, predictions, samples, table, source,
                                          known, has_vector))
    return figures, drift, confusion, (int(len(table)), int((~has_vector).sum()))


def drift_groupings(attribute: str, groupings: Sequence[Sequence[str]]) -> set[str]:
    """The groupings in which a drift of ``attribute`` is judged: those holding it, else every one but ``all``.

    A group of another attribute mixes sources: where race B is redrawn as
    race A, half of every gender group is too, and naming the gender groups
    would only repeat the race groups' drift.  An attribute that is no
    grouping of the run (age band, read beside race and gender) is judged in
    every grouping: "B's ages are lost" is news.
    """
    holding = {grouping_name(g) for g in groupings if attribute in g}
    return holding or {grouping_name(g) for g in groupings}


def _drift_record(attribute: str, figure: Figure, recon_figure: Figure | None, real_ok: np.ndarray,
                  truth: np.ndarray, recon: np.ndarray) -> dict:
    """How far a group drifts, and the label its reconstructions are read as most, instead of their own."""
    wrong = Counter(str(r) for t, r in zip(truth, recon) if r is not None and r != t)
    to, n_to = (wrong.most_common(1)[0] if wrong else (None, 0))
    return json_safe(to_json(DriftRecord(
        attribute=attribute, grouping=figure.grouping, group=figure.group, fidelity=figure.value,
        ci_low=figure.ci_low, ci_high=figure.ci_high, drift=1.0 - figure.value,
        real_accuracy=float(np.nanmean(real_ok)) if len(real_ok) else math.nan,
        recon_accuracy=recon_figure.value if recon_figure is not None else math.nan,
        drifts_to=to, drifts_to_share=n_to / len(truth) if len(truth) else math.nan,
        n_people=figure.n_people)))


def _counts(truth: np.ndarray, predicted: np.ndarray, sources: list[str], columns: list[str]) -> list[list[int]]:
    matrix = np.zeros((len(sources), len(columns)), dtype=int)
    row_of = {s: i for i, s in enumerate(sources)}
    column_of = {c: j for j, c in enumerate(columns)}
    for t, p in zip(truth, predicted):
        if t in row_of and p in column_of:
            matrix[row_of[t], column_of[p]] += 1
    return matrix.tolist()


def _confusion(grouping: str, real_truth: np.ndarray, real: np.ndarray, recon_truth: np.ndarray | None,
               recon: np.ndarray | None, classes: Sequence[str]) -> dict:
    present = [t for t in real_truth if t is not None] + [t for t in (recon_truth if recon_truth is not None else [])
                                                         if t is not None]
    sources = sorted(set(present))
    columns = list(classes)
    return {"grouping": grouping, "sources": sources, "predicted": columns,
            "real": _counts(real_truth, real, sources, columns),
            "reconstructed": _counts(recon_truth, recon, sources, columns) if recon is not None else []}


def _joint_confusion(finest: Sequence[str], truths, recon_predictions, predictions, samples, table, source,
                     known, has_vector) -> dict:
    """The finest intersection: source group (``Black / Female``) against the group its reconstruction is read as."""
    def joined(parts: Sequence[np.ndarray]) -> np.ndarray:
        out = np.full(len(parts[0]), None, dtype=object)
        for i, values in enumerate(zip(*parts)):
            out[i] = None if any(v is None for v in values) else group_label(values)
        return out

    truth = joined([truths[a] for a in finest])
    real = np.full(len(table), None, dtype=object)
    real[known] = joined([predictions[a] for a in finest])[source[known]]
    recon = joined([recon_predictions[a] for a in finest])
    usable = has_vector & np.array([t is not None for t in truth], dtype=bool)
    sources = sorted({t for t in truth[usable]})
    columns = sorted(set(sources) | {r for r in recon[usable] if r is not None} | {r for r in real[usable]
                                                                                   if r is not None})
    return {"grouping": grouping_name(finest), "sources": sources, "predicted": columns,
            "real": _counts(truth[usable], real[usable], sources, columns),
            "reconstructed": _counts(truth[usable], recon[usable], sources, columns)}


def mark_generator_drift(figures: Sequence[Figure], disparities: Sequence[Disparity],
                         drift: Sequence[DriftRecord], *, probe: str = "inversion") -> int:
    """Flag ``generator_drift`` on the inversion figures of every drifting group and the comparisons it is in.

    Not a blocking flag: the figure still measures what its name says, but a
    low figure for the group is partly the generator's doing.  Returns the
    number of numbers flagged.
    """
    drifting = {(d.grouping, d.group) for d in drift}
    flagged = 0
    for f in figures:
        if f.probe == probe and (f.grouping, f.group) in drifting and FLAG_GENERATOR_DRIFT not in f.flags:
            f.flags.append(FLAG_GENERATOR_DRIFT)
            flagged += 1
    for d in disparities:
        if d.probe == probe and {(d.grouping, d.worst_group), (d.grouping, d.best_group)} & drifting \
                and FLAG_GENERATOR_DRIFT not in d.flags:
            d.flags.append(FLAG_GENERATOR_DRIFT)
            flagged += 1
    return flagged
