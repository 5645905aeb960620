"""False match and false non-match rates per group (NIST FRVT's demographic-effects figures).

Two images *match* when their distance is under the threshold
(``distance < threshold``, as dlib's "< 0.6 is the same person").  Per group:

``fnmr_at_default`` / ``fmr_at_default``
    False non-match rate on the group's genuine pairs (two images of one
    person, ``distance >= threshold``) and false match rate on its impostor
    pairs (two people of the group, ``distance < threshold``), at the
    target's default threshold.
``fnmr_at_fmr_1e-3`` / ``fmr_at_fmr_1e-3``
    The same at the *global* threshold: the largest threshold whose FMR over
    all impostor pairs of the whole population is at most ``target_fmr``.
    One threshold for everyone, as a deployed system has; the groups' FMR
    then spread around ``target_fmr`` (NIST's main demographic finding).
``threshold_at_fmr_1e-3``
    The threshold that would give ``target_fmr`` within the group alone
    (better = higher: a group whose impostors lie closer needs a stricter,
    lower threshold).

(The ``1e-3`` in the names follows ``target_fmr``.)  Disparities per grouping:
max/min and max/geometric-mean ratios (NIST's summary) and max gap.

Pairs: with ``pairs`` (e.g. LFW's pairs.txt, :func:`read_lfw_pairs`) those
pairs are used; a pair is in a group when both its images are.  Otherwise
every genuine pair of every person is used, and per group a seeded sample of
at most ``max_impostor_pairs`` impostor pairs (every pair when the group has
fewer).  For rates ``count`` is the number of errors and ``n_images`` the
number of pairs (the rate's denominator).

Intervals resample people: a genuine pair belongs to its person, an impostor
pair to both its people and is counted ``w_a * w_b`` times in a draw where
they were drawn ``w_a`` and ``w_b`` times.  Rates at the global threshold
are conditional on that threshold (it is not re-estimated per draw).  A rate
needs at least 30 errors to be leant on (``few_errors``): an FMR of 1e-3
needs 30,000 impostor pairs in the group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from audit.distances import check_metric, paired_distances
from audit.errors import InputError
from audit.results import ALL, Disparity, Figure, grouping_name
from probes.stats import (
    DEFAULT_CONFIDENCE,
    DEFAULT_MIN_PEOPLE,
    check_columns,
    check_groupings,
    check_n_resamples,
    disparities,
    iter_groups,
    make_figure,
    rate_flags,
    resample_weights,
)
from probes.volume import check_embeddings

PROBE = "verification"
DEFAULT_TARGET_FMR = 1e-3
#: Impostor pairs sampled per group when no pairs file is given.
DEFAULT_MAX_IMPOSTOR_PAIRS = 200_000
#: Fewer draws than probes.stats' default: each draw weighs every pair.
DEFAULT_N_RESAMPLES = 200
_CHUNK_ELEMENTS = 4_000_000
RATE_KINDS = ("max_min_ratio", "max_geomean_ratio", "max_gap")
THRESHOLD_KINDS = ("max_min_ratio", "max_gap")


@dataclass
class VerificationResult:
    figures: list[Figure]
    disparities: list[Disparity]
    details: dict = field(default_factory=dict)


def fmr_label(target_fmr: float) -> str:
    """``1e-3`` for 0.001: the suffix of the metric names."""
    mantissa, exponent = f"{target_fmr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


# --------------------------------------------------------------------------- pairs

def read_lfw_pairs(path: str | Path, *, folder: str = "images_deepfunneled") -> pd.DataFrame:
    """Read LFW's pairs.txt (or pairsDevTrain/Test.txt) into ``image_id_a, image_id_b, genuine``.

    A line ``Name i j`` is a genuine pair, ``Name1 i Name2 j`` an impostor
    pair; the first line (the number of folds and/or pairs) is skipped.
    Image ids read ``<folder>/<Name>/<Name>_0001.jpg``, as the dataset's manifest.
    """
    rows = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts or (number == 1 and all(p.isdigit() for p in parts)):
            continue
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            a, b = (parts[0], int(parts[1])), (parts[0], int(parts[2]))
        elif len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit():
            a, b = (parts[0], int(parts[1])), (parts[2], int(parts[3]))
        else:
            raise InputError(f"{str(path)!r} line {number}: {line!r} is not 'Name i j' (genuine) or "
                             "'Name1 i Name2 j' (impostor). Pass LFW's pairs.txt unchanged.")
        prefix = f"{folder}/" if folder else ""
        rows.append((f"{prefix}{a[0]}/{a[0]}_{a[1]:04d}.jpg", f"{prefix}{b[0]}/{b[0]}_{b[1]:04d}.jpg",
                     len(parts) == 3))
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


def _impostor_pairs(rows: np.ndarray, persons: np.ndarray, max_pairs: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Every impostor pair among ``rows``, or a seeded sample of about ``max_pairs`` of them."""
    n = len(rows)
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        i = rng.integers(0, n, size=max_pairs)
        j = rng.integers(0, n, size=max_pairs)
    a, b = rows[i], rows[j]
    keep = persons[a] != persons[b]
    return a[keep], b[keep]


def threshold_at_fmr(impostor_distances: np.ndarray, target_fmr: float) -> float:
    """The largest threshold ``t`` with ``mean(d < t) <= target_fmr`` (NaN without pairs)."""
    d = np.sort(np.asarray(impostor_distances, dtype=np.float64))
    if d.size == 0:
        return math.nan
    return float(d[min(int(math.floor(target_fmr * d.size)), d.size - 1)])


# --------------------------------------------------------------------------- probe

def verification_probe(embeddings: np.ndarray, samples: pd.DataFrame, *,
                       groupings: Sequence[Sequence[str]], person: str = "identity", metric: str,
                       threshold: float, target_fmr: float = DEFAULT_TARGET_FMR,
                       pairs: pd.DataFrame | None = None, seed: int = 0,
                       n_resamples: int = DEFAULT_N_RESAMPLES, image_id: str = "image_id",
                       max_impostor_pairs: int = DEFAULT_MAX_IMPOSTOR_PAIRS,
                       confidence: float = DEFAULT_CONFIDENCE,
                       min_people: int = DEFAULT_MIN_PEOPLE) -> VerificationResult:
    """FMR, FNMR and the FMR-``target_fmr`` threshold per group; see the module docstring."""
    groupings = check_groupings(groupings)
    check_columns(samples, {person: "the person column",
                            **{a: "a grouping attribute" for g in groupings for a in g}})
    x = check_embeddings(embeddings, samples)
    check_metric(metric)
    n_resamples = check_n_resamples(n_resamples)
    if not 0 < target_fmr < 1:
        raise InputError(f"target_fmr={target_fmr!r}, must be between 0 and 1 (e.g. 1e-3).")
    persons = samples[person].to_numpy()
    person_codes, _ = pd.factorize(persons)
    rng = np.random.default_rng(seed)
    label = fmr_label(target_fmr)

    groups = [(grouping_name(attrs), lab, mask) for attrs in [[]] + groupings
              for lab, mask in iter_groups(samples, attrs)]
    dropped = 0
    if pairs is not None:
        ga, gb, ia, ib, dropped = _given_pairs(pairs, samples, image_id)
    else:
        ga, gb = _all_genuine_pairs(person_codes)
    genuine_d = paired_distances(x[ga], x[gb], metric)
    impostors: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for g, lab, mask in groups:
        if pairs is not None:
            keep = mask[ia] & mask[ib]
            a, b = ia[keep], ib[keep]
        else:
            a, b = _impostor_pairs(np.flatnonzero(mask), person_codes, max_impostor_pairs, rng)
        impostors[g, lab] = (a, b, paired_distances(x[a], x[b], metric))
    global_threshold = threshold_at_fmr(impostors[ALL, ALL][2], target_fmr)

    names = {"fnmr_at_default": ("lower", RATE_KINDS), "fmr_at_default": ("lower", RATE_KINDS),
             f"fnmr_at_fmr_{label}": ("lower", RATE_KINDS), f"fmr_at_fmr_{label}": ("lower", RATE_KINDS),
             f"threshold_at_fmr_{label}": ("higher", THRESHOLD_KINDS)}
    per_metric: dict[str, dict[str, list[Figure]]] = {m: {} for m in names}
    reps_of: dict[str, dict[str, dict[str, np.ndarray]]] = {m: {} for m in names}
    counts_detail = {}
    for g, lab, mask in groups:
        gk = mask[ga] & mask[gb]
        a, b, d = impostors[g, lab]
        out = _group_figures(person_codes, ga[gk], genuine_d[gk], a, b, d, threshold=threshold,
                             global_threshold=global_threshold, target_fmr=target_fmr,
                             n_resamples=n_resamples, rng=rng, label=label)
        counts_detail[f"{g}: {lab}"] = {"genuine_pairs": int(gk.sum()), "impostor_pairs": int(len(d))}
        for m, (value, reps, count, n, n_people) in out.items():
            better = names[m][0]
            flags = rate_flags(count, n, better) if count is not None and n else []
            fig = make_figure(probe=PROBE, metric=m, grouping=g, group=lab, value=value, replicates=reps,
                              confidence=confidence, n_images=n, n_people=n_people, count=count,
                              better=better, min_people=min_people, flags=flags)
            per_metric[m].setdefault(g, []).append(fig)
            reps_of[m].setdefault(g, {})[lab] = reps
    figures, disparities_out = [], []
    for m, by_grouping in per_metric.items():
        for g, figs in by_grouping.items():
            figures.extend(figs)
            if g != ALL:
                disparities_out.extend(disparities(figs, reps_of[m][g], kinds=names[m][1],
                                                   confidence=confidence))
    details = {"default_threshold": float(threshold), "global_threshold_at_target_fmr": global_threshold,
               "target_fmr": target_fmr, "pairs": "given" if pairs is not None else "generated",
               "pairs_dropped_unknown_images": dropped, "max_impostor_pairs": max_impostor_pairs,
               "n_resamples": n_resamples, "seed": seed, "metric": metric, "pair_counts": counts_detail}
    return VerificationResult(figures, disparities_out, details)


def _group_figures(person_codes, g_rows, g_dist, ia, ib, i_dist, *, threshold, global_threshold,
                   target_fmr, n_resamples, rng, label) -> dict[str, tuple]:
    """Values, replicates and counts of one group's five figures."""
    people = np.unique(np.concatenate([person_codes[g_rows], person_codes[ia], person_codes[ib]]))
    local = {p: i for i, p in enumerate(people)}
    to_local = np.vectorize(local.__getitem__, otypes=[int]) if len(people) else None
    gp = to_local(person_codes[g_rows]) if len(g_rows) else np.zeros(0, int)
    order = np.argsort(i_dist, kind="stable")
    i_dist = i_dist[order]
    pa = to_local(person_codes[ia[order]]) if len(ia) else np.zeros(0, int)
    pb = to_local(person_codes[ib[order]]) if len(ib) else np.zeros(0, int)
    n_gen_people = len(np.unique(gp))
    n_imp_people = len(np.unique(np.concatenate([pa, pb])))

    g_err = {"fnmr_at_default": g_dist >= threshold, f"fnmr_at_fmr_{label}": g_dist >= global_threshold}
    i_err = {"fmr_at_default": i_dist < threshold, f"fmr_at_fmr_{label}": i_dist < global_threshold}
    reps = {m: np.full(n_resamples, np.nan) for m in [*g_err, *i_err, f"threshold_at_fmr_{label}"]}
    n = len(people)
    step = max(1, _CHUNK_ELEMENTS // max(1, len(i_dist), len(g_dist), n))
    with np.errstate(invalid="ignore", divide="ignore"):
        for start in range(0, n_resamples, step):
            sl = slice(start, min(n_resamples, start + step))
            w = resample_weights(n, sl.stop - sl.start, rng)
            if len(gp):
                wg = w[:, gp]
                total = wg.sum(axis=1)
                for m, err in g_err.items():
                    reps[m][sl] = wg[:, err].sum(axis=1) / total
            if len(pa):
                wi = w[:, pa] * w[:, pb]
                cum = np.cumsum(wi, axis=1)
                total = cum[:, -1]
                for m, err in i_err.items():
                    reps[m][sl] = wi[:, err].sum(axis=1) / total
                # weighted version of threshold_at_fmr: first pair whose cumulative weight passes it
                k = np.array([np.searchsorted(c, target_fmr * t, side="right") for c, t in zip(cum, total)])
                reps[f"threshold_at_fmr_{label}"][sl] = np.where(
                    total > 0, i_dist[np.minimum(k, len(i_dist) - 1)], np.nan)
    out = {}
    for m, err in g_err.items():
        out[m] = (err.mean() if len(err) else math.nan, reps[m], int(err.sum()), int(len(err)), n_gen_people)
    for m, err in i_err.items():
        out[m] = (err.mean() if len(err) else math.nan, reps[m], int(err.sum()), int(len(err)), n_imp_people)
    out[f"threshold_at_fmr_{label}"] = (threshold_at_fmr(i_dist, target_fmr), reps[f"threshold_at_fmr_{label}"],
                                        None, int(len(i_dist)), n_imp_people)
    return out

