"""False match and false non-match rates per group (NIST FRVT's demographic-effects figures).

Two images *match* when their distance is at most the threshold
(``distance <= threshold``; the one rule of the whole tool, see
:mod:`probes.pairs`).  Per group:

``fnmr_at_default`` / ``fmr_at_default``
    False non-match rate on the group's genuine pairs (two images of one
    person that do not match) and false match rate on its impostor pairs
    (two people of the group that match), at the target's default
    threshold: the *operational* threshold of ISO/IEC 19795-10.
``fnmr_at_fmr_1e-3`` / ``fmr_at_fmr_1e-3``
    The same at the *global* threshold: the largest threshold whose FMR
    over the impostor pairs of the whole population is at most
    ``target_fmr``.  One threshold for everyone, as a deployed system has;
    the groups' FMR then spread around ``target_fmr`` (NIST's main
    demographic finding).
``threshold_at_fmr_1e-3``
    The threshold that gives ``target_fmr`` within the group alone (better
    = higher: a group whose impostors lie closer needs a stricter, lower
    threshold), with Woodruff's interval (:class:`probes.estimates.QuantileEstimate`).
``fnmr_at_own_fmr_1e-3``
    FNMR at that group's own threshold, as Balanced Faces in the Wild
    reports it: what the group's genuine users would suffer if the
    threshold were set for their group.

(The ``1e-3`` in the names follows ``target_fmr``.)

Generalised rates (ISO/IEC 19795-1): an image in which no face was found
(``acquired`` False) still belongs to its pairs.  Its genuine pairs count as
non-matches (a person the system cannot see is refused) and its impostor
pairs as non-matches (it cannot be falsely matched), so every FNMR and FMR
here is the *generalised* rate; thresholds are fitted on the pairs of two
acquired images only, since only they have a distance.

Pairs: genuine pairs are those of ``pairs`` (e.g. LFW's pairs.txt, see
:func:`read_lfw_pairs`) where given, else every genuine pair of every
person.  Impostor pairs are, by default, drawn per group without
replacement among all its distinct pairs of different people (at most
``max_impostor_pairs``; :func:`probes.pairs.sample_impostor_pairs`), also
when a pairs file is given: LFW's 3,000 impostor pairs could not estimate an
FMR of 1e-3, which needs 30,000.  ``impostor_pairs="given"`` uses the
file's impostor pairs instead.  A threshold at FMR ``f`` from fewer than
``30 / f`` impostor pairs, and every rate at it, is flagged
``not_estimable``.

Intervals are people-clustered: a genuine pair belongs to its person (a
clustered Clopper-Pearson interval, :func:`probes.estimates.clustered_proportion`),
an impostor pair to both its people (the dyadic variance of
:func:`probes.estimates.pair_proportion`).  Rates at a threshold are
conditional on that threshold (it is not re-estimated).  For rates
``count`` is the number of errors and ``n_images`` the number of pairs.

Beside the figures, ``details`` holds what auditors expect: per-group DET
curves, the cross-group impostor FMR matrix (NIST's demographic-effects
report), the Fairness Discrepancy Rate (de Freitas Pereira & Marcel) with
an interval, and an ISO/IEC 19795-10-style summary table per group.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from audit.distances import check_metric
from audit.errors import InputError
from audit.json_model import from_json, json_safe
from audit.result_sections import VerificationSection
from audit.results import ALL, FLAG_NOT_ESTIMABLE, grouping_name
from probes.compare import difference, pairs_of
from probes.estimates import (Estimate, ProportionEstimate, QuantileEstimate, clustered_proportion,
                              pair_proportion)
from probes.pairs import (ImpostorPairs, effective_person_pairs, fmr_threshold_estimable, min_impostor_pairs,
                          not_estimable_reason, pair_distances, sample_cross_pairs, sample_impostor_pairs, threshold_at_fmr)
from probes.result import ProbeResult
from probes.stats import (DEFAULT_CONFIDENCE, DEFAULT_MIN_PEOPLE, check_columns, check_confidence,
                          check_groupings, figure_from_estimate, GroupedFigures, iter_groups, rate_flags)
from probes.volume import check_embeddings

PROBE = "verification"
DEFAULT_TARGET_FMR = 1e-3
#: Impostor pairs drawn per group (without replacement).
DEFAULT_MAX_IMPOSTOR_PAIRS = 200_000
#: Impostor pairs drawn per cell of the cross-group FMR matrix.
DEFAULT_MAX_CROSS_PAIRS = 50_000
#: Groupings with more groups than this get no cross-group matrix (it would not fit a page).
MAX_MATRIX_GROUPS = 12
#: Points of each DET curve (FMR from the smallest the pairs resolve to 50%).
DET_POINTS = 40
#: The Fairness Discrepancy Rate's weight of FMR differences (its authors' default, 0.5).
FDR_ALPHA = 0.5
RATE_KINDS = ("gap", "ratio")
THRESHOLD_KINDS = ("gap",)
IMPOSTOR_SOURCES = ("generated", "given")


def fmr_label(target_fmr: float) -> str:
    """``1e-3`` for 0.001: the suffix of the metric names."""
    mantissa, exponent = f"{target_fmr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


# --------------------------------------------------------------------------- pairs

#: An image number in a pairs file: ASCII digits only (``str.isdigit`` also takes '²', which int() refuses),
#: at most nine of them.
_PAIR_NUMBER = re.compile(r"[0-9]{1,9}")


def read_lfw_pairs(path: str | Path, *, folder: str = "images_deepfunneled",
                   data: bytes | None = None) -> pd.DataFrame:
    """Read LFW's pairs.txt (or pairsDevTrain/Test.txt) into ``image_id_a, image_id_b, genuine``.

    A line ``Name i j`` is a genuine pair, ``Name1 i Name2 j`` an impostor
    pair; the first line (the number of folds and/or pairs) is skipped.
    Image ids read ``<folder>/<Name>/<Name>_0001.jpg``, as the dataset's manifest.
    The file must be UTF-8 text (LFW's is ASCII) and image numbers ASCII digits:
    anything else is an InputError naming the file and the line, raised before
    any image is embedded (``audit run`` reads the file first).  ``data``: the
    file's bytes, read already (from a URL); ``path`` then only names it.
    """
    rows = []
    data = Path(path).read_bytes() if data is None else data
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{str(path)!r} line {line}: byte 0x{data[exc.start]:02x} is not UTF-8 text. Save the "
                         "file as UTF-8 (LFW's pairs.txt is plain ASCII), or pass LFW's pairs.txt "
                         "unchanged.") from None
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts or (number == 1 and all(_PAIR_NUMBER.fullmatch(p) for p in parts)):
            continue
        if len(parts) == 3 and _PAIR_NUMBER.fullmatch(parts[1]) and _PAIR_NUMBER.fullmatch(parts[2]):
            a, b = (parts[0], int(parts[1])), (parts[0], int(parts[2]))
        elif len(parts) == 4 and _PAIR_NUMBER.fullmatch(parts[1]) and _PAIR_NUMBER.fullmatch(parts[3]):
            a, b = (parts[0], int(parts[1])), (parts[2], int(parts[3]))
        else:
            raise InputError(f"{str(path)!r} line {number}: {line!r} is not 'Name i j' (genuine) or "
                             "'Name1 i Name2 j' (impostor). Pass LFW's pairs.txt unchanged.")
        prefix = f"{folder}/" if folder else ""
        rows.append((f"{prefix}{a[0]}/{a[0]}_{a[1]:04d}.jpg", f"{prefix}{b[0]}/{b[0]}_{b[1]:04d}.jpg",
                     len(parts) == 3))
    if not rows:
        raise InputError(f"{str(path)!r} holds no pair (lines 'Name i j' or 'Name1 i Name2 j'). Pass LFW's "
                         "pairs.txt unchanged, or leave --pairs out to use every genuine pair of the dataset.")
    return pd.DataFrame(rows, columns=["image_id_a", "image_id_b", "genuine"])


def _given_pairs(pairs: pd.DataFrame, samples: pd.DataFrame, image_id: str):
    check_columns(pairs, {"image_id_a": "a pairs column", "image_id_b": "a pairs column",
                          "genuine": "a pairs column"})
    check_columns(samples, {image_id: "the image id column (to find the pairs' images)"})
    position = pd.Series(np.arange(len(samples)), index=samples[image_id].to_numpy())
    a = pairs["image_id_a"].map(position)
    b = pairs["image_id_b"].map(position)
    known = a.notna() & b.notna()
    genuine = pairs["genuine"].astype(bool).to_numpy()[known.to_numpy()]
    a = a[known].to_numpy(dtype=int)
    b = b[known].to_numpy(dtype=int)
    return a[genuine], b[genuine], a[~genuine], b[~genuine], int((~known).sum())


def _all_genuine_pairs(persons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = [], []
    for idx in pd.Series(np.arange(len(persons))).groupby(persons, sort=False).indices.values():
        if len(idx) > 1:
            i, j = np.triu_indices(len(idx), k=1)
            a.append(idx[i])
            b.append(idx[j])
    if not a:
        return np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(a), np.concatenate(b)


# --------------------------------------------------------------------------- rates

def _distances(x: np.ndarray, acquired: np.ndarray, a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Pair distances; NaN where either image has no face (such a pair never matches)."""
    out = np.full(len(a), np.nan)
    both = acquired[a] & acquired[b]
    out[both] = pair_distances(x, a[both], b[both], metric)
    return out


def _matches(d: np.ndarray, threshold: float) -> np.ndarray:
    """The match rule ``d <= t``; a NaN distance (no face) never matches."""
    with np.errstate(invalid="ignore"):
        return d <= threshold


def rate_by_person(persons: np.ndarray, errors: np.ndarray) -> ProportionEstimate:
    """A rate of items (genuine pairs, images) that each belong to one person, clustered by person."""
    codes, _ = pd.factorize(persons)
    n = codes.max() + 1 if len(codes) else 0
    sums = np.bincount(codes, weights=errors.astype(np.float64), minlength=n)
    counts = np.bincount(codes, minlength=n).astype(np.float64)
    return clustered_proportion(sums, counts)


def threshold_estimate(distances: np.ndarray, person_a: np.ndarray, person_b: np.ndarray,
                       target_fmr: float) -> QuantileEstimate:
    """The threshold at ``target_fmr`` of impostor ``distances`` (finite ones), with Woodruff's interval."""
    keep = np.isfinite(distances)
    d, pa, pb = distances[keep], person_a[keep], person_b[keep]
    t = threshold_at_fmr(d, target_fmr)
    at = pair_proportion(_matches(d, t).astype(np.float64), pa, pb) if len(d) else ProportionEstimate(0, 0)
    ordered = np.sort(d)

    def quantile(rate: float) -> float:
        # a rate of 1 is reached only past every distance: no upper bound on the threshold
        return math.inf if rate >= 1 else threshold_at_fmr(ordered, rate)

    return QuantileEstimate(t, target_fmr, at, quantile)


# --------------------------------------------------------------------------- probe

def verification_probe(embeddings: np.ndarray, samples: pd.DataFrame, *,
                       groupings: Sequence[Sequence[str]], person: str = "identity", metric: str,
                       threshold: float, target_fmr: float = DEFAULT_TARGET_FMR,
                       pairs: pd.DataFrame | None = None, impostor_pairs: str = "generated", seed: int = 0,
                       image_id: str = "image_id", max_impostor_pairs: int = DEFAULT_MAX_IMPOSTOR_PAIRS,
                       max_cross_pairs: int = DEFAULT_MAX_CROSS_PAIRS, confidence: float = DEFAULT_CONFIDENCE,
                       min_people: int = DEFAULT_MIN_PEOPLE,
                       acquired: np.ndarray | None = None) -> ProbeResult:
    """FMR, FNMR and the FMR-``target_fmr`` thresholds per group; see the module docstring.

    ``embeddings[i]`` is the vector of ``samples.iloc[i]``; rows where
    ``acquired`` is False (no face found) are not read and may hold NaN.
    One random stream (``seed``) draws every impostor sample, in a fixed order.
    """
    groupings = check_groupings(groupings)
    check_columns(samples, {person: "the person column",
                            **{a: "a grouping attribute" for g in groupings for a in g}})
    acquired = _check_acquired(acquired, len(samples))
    x = _checked_embeddings(embeddings, samples, acquired, metric)
    confidence = check_confidence(confidence)
    _check_pair_settings(target_fmr, impostor_pairs, pairs)
    rng = np.random.default_rng(seed)
    label = fmr_label(target_fmr)
    groups = [(grouping_name(attrs), lab, mask) for attrs in [[]] + groupings
              for lab, mask in iter_groups(samples, attrs)]
    measured = _measure_pairs(x, acquired, pd.factorize(samples[person].to_numpy())[0], groups, metric=metric,
                              pairs=pairs, samples=samples, image_id=image_id, impostor_pairs=impostor_pairs,
                              max_impostor_pairs=max_impostor_pairs, rng=rng)
    global_t, global_ok, global_pairs = measured.global_threshold(target_fmr)
    names = {"fnmr_at_default": "lower", "fmr_at_default": "lower", f"fnmr_at_fmr_{label}": "lower",
             f"fmr_at_fmr_{label}": "lower", f"threshold_at_fmr_{label}": "higher",
             f"fnmr_at_own_fmr_{label}": "lower"}
    tables = _GroupTables(_det_thresholds(measured.everyone()[1], target_fmr))
    for g, lab, mask in groups:
        tables.add(measured, g, lab, mask, names=names, label=label, threshold=threshold, target_fmr=target_fmr,
                   global_t=global_t, global_ok=global_ok, confidence=confidence, min_people=min_people)
    disparities_out = tables.collected.disparities(
        {m: THRESHOLD_KINDS if m.startswith("threshold_") else RATE_KINDS for m in names}, confidence=confidence)
    matrix = _cross_group_fmr(x, acquired, measured.persons, groups, thresholds={
        "default": threshold, f"global_fmr_{label}": global_t.value}, max_pairs=max_cross_pairs, rng=rng,
        metric=metric, confidence=confidence)
    fdr = {g: _fairness_discrepancy(tables.collected, g, label, confidence)
           for g in dict.fromkeys(g for g, _, _ in groups) if g != ALL}
    details = {
        **_rules_and_thresholds(names, threshold, target_fmr, global_t, global_ok, global_pairs, confidence,
                                measured.global_person_pairs),
        "pairs": "given" if pairs is not None else "generated",
        "impostor_pairs": impostor_pairs, "pairs_dropped_unknown_images": measured.dropped,
        "max_impostor_pairs": max_impostor_pairs, "seed": seed, "metric": metric,
        "images_without_face": int((~acquired).sum()), **tables.details(),
        "cross_group_fmr": matrix, "fairness_discrepancy_rate": fdr,
    }
    return ProbeResult(tables.collected.figures(), disparities_out,
                       from_json(VerificationSection, json_safe(details), "verification"))


@dataclass
class _MeasuredPairs:
    """The run's pairs and their distances: every genuine pair, and each group's impostor sample."""

    persons: np.ndarray
    acquired: np.ndarray
    genuine_a: np.ndarray
    genuine_b: np.ndarray
    genuine_d: np.ndarray
    impostors: dict[tuple[str, str], tuple[ImpostorPairs, np.ndarray]]
    dropped: int
    #: Effective pairs of people behind everyone's impostor pairs (set by :meth:`global_threshold`).
    global_person_pairs: float | None = None

    def everyone(self) -> tuple[ImpostorPairs, np.ndarray]:
        return self.impostors[ALL, ALL]

    def global_threshold(self, target_fmr: float) -> tuple[Estimate, bool, int]:
        """The threshold at ``target_fmr`` over everyone's impostor pairs, whether it is estimable, the pairs."""
        sample, distances = self.everyone()
        pa, pb = self.persons[sample.a], self.persons[sample.b]
        estimate = threshold_estimate(distances, pa, pb, target_fmr)
        finite = np.isfinite(distances)
        n_pairs = int(finite.sum())
        person_pairs = effective_person_pairs(pa[finite], pb[finite])
        self.global_person_pairs = person_pairs
        return estimate, fmr_threshold_estimable(n_pairs, target_fmr, person_pairs), n_pairs


def _measure_pairs(x: np.ndarray, acquired: np.ndarray, persons: np.ndarray, groups: list, *, metric: str,
                   pairs: pd.DataFrame | None, samples: pd.DataFrame, image_id: str, impostor_pairs: str,
                   max_impostor_pairs: int, rng: np.random.Generator) -> _MeasuredPairs:
    """Genuine pairs (given, or every pair of one person's images) and each group's impostor pairs, measured."""
    dropped = 0
    ia = ib = None
    if pairs is not None:
        ga, gb, ia, ib, dropped = _given_pairs(pairs, samples, image_id)
    else:
        ga, gb = _all_genuine_pairs(persons)
    impostors = {(g, lab): _impostors_of(mask, persons, x, acquired, metric=metric,
                                         given=(ia, ib) if impostor_pairs == "given" else None,
                                         max_pairs=max_impostor_pairs, rng=rng)
                 for g, lab, mask in groups}
    return _MeasuredPairs(persons, acquired, ga, gb, _distances(x, acquired, ga, gb, metric), impostors, dropped)


class _GroupTables:
    """Each group's figures, and what the probe records beside them: pair counts, the group's own
    threshold, its DET curve and its line of the summary table."""

    def __init__(self, det_thresholds: np.ndarray) -> None:
        self.collected = GroupedFigures()
        self.pair_counts: dict[str, dict] = {}
        self.own_thresholds: dict[str, dict] = {}
        self.det = {"fmr_levels": [], "thresholds": det_thresholds.tolist(), "by_group": {}}
        self.det_thresholds = det_thresholds
        self.summary: list[dict] = []

    def add(self, measured: _MeasuredPairs, g: str, lab: str, mask: np.ndarray, *, names: dict, label: str,
            threshold: float, target_fmr: float, global_t: Estimate, global_ok: bool, confidence: float,
            min_people: int) -> None:
        persons = measured.persons
        gk = mask[measured.genuine_a] & mask[measured.genuine_b]
        g_persons, g_d = persons[measured.genuine_a[gk]], measured.genuine_d[gk]
        sample, i_d = measured.impostors[g, lab]
        pa, pb = persons[sample.a], persons[sample.b]
        n_acquired_pairs = int(np.isfinite(i_d).sum())
        own = threshold_estimate(i_d, pa, pb, target_fmr)
        finite = np.isfinite(i_d)
        person_pairs = effective_person_pairs(pa[finite], pb[finite])
        own_ok = fmr_threshold_estimable(n_acquired_pairs, target_fmr, person_pairs)
        n_imp_people = len(np.unique(np.concatenate([pa, pb])))
        values = _group_rates(g_persons, g_d, pa, pb, i_d, label=label, default=threshold, global_t=global_t,
                              global_ok=global_ok, own=own, own_ok=own_ok)
        _add_figures(self.collected, values, names, grouping=g, group=lab, confidence=confidence,
                     min_people=min_people)
        self.pair_counts[f"{g}: {lab}"] = {"genuine_pairs": int(gk.sum()),
                                           "genuine_pairs_without_face": int(np.isnan(g_d).sum()),
                                           "impostor_pairs": {**sample.counts(), "with_both_faces": n_acquired_pairs}}
        self.own_thresholds[f"{g}: {lab}"] = _own_threshold_record(own, own_ok, n_acquired_pairs, n_imp_people,
                                                                   target_fmr, confidence, person_pairs)
        self.det["by_group"].setdefault(g, {})[lab] = _det_curve(g_d, i_d, self.det_thresholds)
        self.summary.append(_summary_row(g, lab, mask, measured.acquired, persons, values, confidence))

    def details(self) -> dict:
        return {"pair_counts": self.pair_counts, "thresholds_by_group": self.own_thresholds, "det": self.det,
                "summary": self.summary}


def _rules_and_thresholds(names: dict, threshold: float, target_fmr: float, global_t: Estimate, global_ok: bool,
                          global_pairs: int, confidence: float, global_person_pairs: float | None = None) -> dict:
    """The part of the details that says how the rates were counted and where the thresholds lie."""
    return {
        "match_rule": "distance <= threshold",
        "generalised_rates": sorted(m for m in names if not m.startswith("threshold_")),
        "generalised_note": ("rates count images without a face (failure to acquire) as non-matches: their "
                             "genuine pairs as false non-matches, their impostor pairs as correct rejections "
                             "(ISO/IEC 19795-1 generalised FNMR/FMR)"),
        "default_threshold": float(threshold), "target_fmr": target_fmr,
        "global_threshold_at_target_fmr": global_t.value,
        "global_threshold_interval": list(global_t.interval(confidence)) if global_ok else None,
        "global_threshold_estimable": global_ok,
        "impostor_pairs_needed": min_impostor_pairs(target_fmr),
        **({} if global_ok else {"global_threshold_reason": not_estimable_reason(global_pairs, target_fmr,
                                                                                 global_person_pairs)}),
    }


def _checked_embeddings(embeddings: np.ndarray, samples: pd.DataFrame, acquired: np.ndarray, metric: str) -> np.ndarray:
    """The embeddings as float64, checked where a face was found (other rows may hold NaN)."""
    x = np.asarray(embeddings, dtype=np.float64)
    check_embeddings(np.where(acquired[:, None], x, 0.0) if x.ndim == 2 else x, samples)
    check_metric(metric)
    return x


def _add_figures(collected: GroupedFigures, values: dict, names: dict, *, grouping: str, group: str,
                 confidence: float, min_people: int) -> None:
    """One group's figures, flagged where a rate rests on few errors or a threshold is not estimable."""
    for m, (estimate, n, n_people, estimable) in values.items():
        count = int(round(estimate.count)) if isinstance(estimate, ProportionEstimate) else None
        flags = rate_flags(count, n, "lower") if count is not None and n else []
        if not estimable:
            flags.append(FLAG_NOT_ESTIMABLE)
        collected.add(figure_from_estimate(estimate, probe=PROBE, metric=m, grouping=grouping, group=group,
                                           confidence=confidence, n_images=n, n_people=n_people, count=count,
                                           better=names[m], min_people=min_people, flags=flags), estimate)


def _own_threshold_record(own: Estimate, own_ok: bool, n_pairs: int, n_people: int, target_fmr: float,
                          confidence: float, person_pairs: float) -> dict:
    """A group's own threshold at the target FMR, its interval, and why it is not estimable where not."""
    return {"threshold": own.value, "interval": list(own.interval(confidence)) if n_people >= 2 else None,
            "estimable": own_ok, "impostor_pairs": n_pairs, "person_pairs": person_pairs,
            **({} if own_ok else {"reason": not_estimable_reason(n_pairs, target_fmr, person_pairs)})}


def _check_pair_settings(target_fmr: float, impostor_pairs: str, pairs: pd.DataFrame | None) -> None:
    if not 0 < target_fmr < 1:
        raise InputError(f"target_fmr={target_fmr!r}, must be between 0 and 1 (e.g. 1e-3).")
    if impostor_pairs not in IMPOSTOR_SOURCES:
        raise InputError(f"impostor_pairs={impostor_pairs!r}, must be one of {IMPOSTOR_SOURCES}.")
    if impostor_pairs == "given" and pairs is None:
        raise InputError("impostor_pairs='given' needs a pairs table (pairs=read_lfw_pairs(...)); "
                         "or use impostor_pairs='generated'.")


def _impostors_of(mask: np.ndarray, persons: np.ndarray, x: np.ndarray, acquired: np.ndarray, *, metric: str,
                  given: tuple[np.ndarray, np.ndarray] | None, max_pairs: int,
                  rng: np.random.Generator) -> tuple[ImpostorPairs, np.ndarray]:
    """One group's impostor pairs (the given ones inside the group, or distinct sampled ones) and distances."""
    if given is not None:
        ia, ib = given
        keep = mask[ia] & mask[ib]
        sample = ImpostorPairs(ia[keep], ib[keep], int(keep.sum()))
    else:
        sample = sample_impostor_pairs(persons, max_pairs, seed=rng, rows=np.flatnonzero(mask))
    return sample, _distances(x, acquired, sample.a, sample.b, metric)


def _group_rates(g_persons: np.ndarray, g_d: np.ndarray, pa: np.ndarray, pb: np.ndarray, i_d: np.ndarray, *,
                 label: str, default: float, global_t: Estimate, global_ok: bool, own: Estimate,
                 own_ok: bool) -> dict[str, tuple[Estimate, int, int, bool]]:
    """One group's figures: ``metric -> (estimate, n pairs, n people, estimable)``.

    FNMR from the group's genuine pairs (people as clusters), FMR from its
    impostor pairs (both people of a pair share its weight), each at the
    default threshold, at the global FMR threshold and, for FNMR, at the
    group's own FMR threshold.
    """
    n_gen_people = len(np.unique(g_persons))
    n_imp_people = len(np.unique(np.concatenate([pa, pb])))
    n_acquired_pairs = int(np.isfinite(i_d).sum())
    return {
        "fnmr_at_default": (rate_by_person(g_persons, ~_matches(g_d, default)), len(g_d), n_gen_people, True),
        "fmr_at_default": (pair_proportion(_matches(i_d, default), pa, pb), len(i_d), n_imp_people, True),
        f"fnmr_at_fmr_{label}": (rate_by_person(g_persons, ~_matches(g_d, global_t.value)), len(g_d),
                                 n_gen_people, global_ok),
        f"fmr_at_fmr_{label}": (pair_proportion(_matches(i_d, global_t.value), pa, pb), len(i_d),
                                n_imp_people, global_ok),
        f"threshold_at_fmr_{label}": (own, n_acquired_pairs, n_imp_people, own_ok),
        f"fnmr_at_own_fmr_{label}": (rate_by_person(g_persons, ~_matches(g_d, own.value)), len(g_d),
                                     n_gen_people, own_ok),
    }


def _check_acquired(acquired: np.ndarray | None, n: int) -> np.ndarray:
    if acquired is None:
        return np.ones(n, dtype=bool)
    acquired = np.asarray(acquired)
    if acquired.shape != (n,) or acquired.dtype != bool:
        raise InputError(f"acquired must be a boolean array with one entry per row of samples ({n}), got "
                         f"shape {acquired.shape} and dtype {acquired.dtype}. Pass status == 'ok'.")
    return acquired


# --------------------------------------------------------------------------- auditors' views

def _det_thresholds(impostor_d: np.ndarray, target_fmr: float) -> np.ndarray:
    """Thresholds at FMRs from the smallest the pairs resolve (10 false matches) to 50%."""
    d = np.sort(impostor_d[np.isfinite(impostor_d)])
    if len(d) < 20:
        return np.zeros(0)
    low = min(target_fmr, 10.0 / len(d))
    levels = np.geomspace(max(low, 1.0 / len(d)), 0.5, DET_POINTS)
    return np.unique([threshold_at_fmr(d, f) for f in levels])


def _det_curve(genuine_d: np.ndarray, impostor_d: np.ndarray, thresholds: np.ndarray) -> dict:
    """Generalised FMR and FNMR of one group at each threshold (NaN distances never match)."""
    g = np.sort(genuine_d[np.isfinite(genuine_d)])
    i = np.sort(impostor_d[np.isfinite(impostor_d)])
    fnmr = (1.0 - np.searchsorted(g, thresholds, side="right") / len(genuine_d)) if len(genuine_d) else \
        np.full(len(thresholds), np.nan)
    fmr = (np.searchsorted(i, thresholds, side="right") / len(impostor_d)) if len(impostor_d) else \
        np.full(len(thresholds), np.nan)
    return {"fmr": fmr.tolist(), "fnmr": fnmr.tolist(), "genuine_pairs": int(len(genuine_d)),
            "impostor_pairs": int(len(impostor_d))}


def _cross_group_fmr(x, acquired, persons, groups, *, thresholds: dict, max_pairs: int, rng, metric: str,
                     confidence: float) -> dict:
    """FMR of impostor pairs with one person in group ``g`` and one in ``h``, for every ``g``, ``h``.

    One matrix per single-attribute grouping and threshold (NIST's
    cross-demographic false match rates): off the diagonal, how often two
    people of different groups are confused; a model that confuses people
    within a group more than across shows a heavy diagonal.
    """
    out = {}
    by_grouping: dict[str, list[tuple[str, np.ndarray]]] = {}
    for g, lab, mask in groups:
        if g != ALL and "*" not in g and mask.any():
            by_grouping.setdefault(g, []).append((lab, mask))
    for g, members in by_grouping.items():
        if len(members) < 2 or len(members) > MAX_MATRIX_GROUPS:
            continue
        labels = [lab for lab, _ in members]
        cells = {name: [[None] * len(members) for _ in members] for name in thresholds}
        lows = {name: [[None] * len(members) for _ in members] for name in thresholds}
        highs = {name: [[None] * len(members) for _ in members] for name in thresholds}
        counts = [[0] * len(members) for _ in members]
        for r, (_, ma) in enumerate(members):
            for c, (_, mb) in enumerate(members):
                if c < r:
                    continue
                if r == c:
                    sample = sample_impostor_pairs(persons, max_pairs, seed=rng, rows=np.flatnonzero(ma))
                else:
                    sample = sample_cross_pairs(persons, np.flatnonzero(ma), np.flatnonzero(mb), max_pairs, seed=rng)
                d = _distances(x, acquired, sample.a, sample.b, metric)
                counts[r][c] = counts[c][r] = sample.n_used
                for name, t in thresholds.items():
                    if not np.isfinite(t) or sample.n_used == 0:
                        continue
                    est = pair_proportion(_matches(d, t), persons[sample.a], persons[sample.b])
                    lo, hi = est.interval(confidence)
                    cells[name][r][c] = cells[name][c][r] = est.value
                    lows[name][r][c] = lows[name][c][r] = lo
                    highs[name][r][c] = highs[name][c][r] = hi
        out[g] = {"groups": labels, "pairs": counts,
                  "fmr": {name: {"value": cells[name], "ci_low": lows[name], "ci_high": highs[name],
                                 "threshold": float(thresholds[name])} for name in thresholds}}
    return out


def _fairness_discrepancy(collected: GroupedFigures, grouping: str, label: str, confidence: float) -> dict:
    """FDR(t) = 1 - (a * A(t) + (1 - a) * B(t)) at the default and the global threshold.

    ``A`` and ``B`` are the largest differences of FMR and of FNMR between
    two groups (de Freitas Pereira & Marcel, "Fairness in Biometrics: a
    figure of merit to assess biometric verification systems", 2021), ``a``
    = :data:`FDR_ALPHA`.  1 means equal error rates.  Its interval comes
    from simultaneous intervals of every pairwise difference (Bonferroni
    over the pairs of both rates): with that confidence every difference
    lies in its interval at once, so the largest of them lies between the
    largest lower and the largest upper end.  It is therefore conservative
    (wider than it need be), never too narrow.
    """
    out = {}
    for name, fmr_metric, fnmr_metric in (("default", "fmr_at_default", "fnmr_at_default"),
                                          (f"global_fmr_{label}", f"fmr_at_fmr_{label}", f"fnmr_at_fmr_{label}")):
        fmr = {k: e for k, e in collected.estimates(fmr_metric, grouping).items() if math.isfinite(e.value)}
        fnmr = {k: e for k, e in collected.estimates(fnmr_metric, grouping).items() if math.isfinite(e.value)}
        if len(fmr) < 2 or len(fnmr) < 2:
            out[name] = {"value": None, "ci_low": None, "ci_high": None, "alpha": FDR_ALPHA,
                         "reason": "fewer than two groups with both rates"}
            continue
        n_tests = len(pairs_of(list(fmr))) + len(pairs_of(list(fnmr)))
        level = 1 - (1 - confidence) / n_tests
        spans = {}
        for rate_name, ests in (("fmr", fmr), ("fnmr", fnmr)):
            point, low, high = 0.0, 0.0, 0.0
            for a, b in pairs_of(list(ests)):
                c = difference(ests[a], ests[b], level, with_p_value=False)
                point = max(point, c.value)
                low = max(low, max(c.ci_low, 0.0) if math.isfinite(c.ci_low) else 0.0)
                high = max(high, max(abs(c.ci_low), abs(c.ci_high)) if math.isfinite(c.ci_high) else math.inf)
            spans[rate_name] = (point, low, high)
        fdr = 1 - (FDR_ALPHA * spans["fmr"][0] + (1 - FDR_ALPHA) * spans["fnmr"][0])
        lowest = 1 - (FDR_ALPHA * spans["fmr"][2] + (1 - FDR_ALPHA) * spans["fnmr"][2])
        highest = 1 - (FDR_ALPHA * spans["fmr"][1] + (1 - FDR_ALPHA) * spans["fnmr"][1])
        out[name] = {"value": fdr, "ci_low": lowest, "ci_high": highest, "alpha": FDR_ALPHA,
                     "largest_fmr_difference": spans["fmr"][0], "largest_fnmr_difference": spans["fnmr"][0],
                     "interval": "simultaneous (Bonferroni over every pair of groups and both rates): conservative"}
    return out


def _summary_row(grouping, group, mask, acquired, persons, values, confidence) -> dict:
    """One row of the ISO/IEC 19795-10-style table: counts, failure to acquire, operational rates."""
    n_images = int(mask.sum())
    failed = ~acquired[mask]
    fta = rate_by_person(persons[mask], failed) if n_images else ProportionEstimate(0, 0)
    row = {"grouping": grouping, "group": group, "n_images": n_images,
           "n_people": int(len(np.unique(persons[mask]))), "failed_to_acquire": int(failed.sum()),
           "fta": fta.value if n_images else None,
           "fta_ci": list(fta.interval(confidence)) if n_images else None}
    for key in ("fnmr_at_default", "fmr_at_default"):
        estimate, n, n_people, _ = values[key]
        row[key] = estimate.value if n else None
        row[f"{key}_ci"] = list(estimate.interval(confidence)) if n and n_people >= 2 else None
        row[f"{key}_pairs"] = int(n)
    return row
