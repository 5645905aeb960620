"""Impostor pairs: distinct pairs of images of different people, and what they can estimate.

Why distinct pairs, and why count them
--------------------------------------
A threshold at a false match rate ``f`` is a low quantile of the impostor
distances: with ``N`` pairs, about ``f * N`` of them lie below it.  Drawing
pairs *with* replacement repeats pairs (60 images hold 1,710 distinct
pairs; 190,000 draws of them hold the same 1,710 values), so the threshold
looks estimated from far more evidence than exists.  Here pairs are drawn
without replacement from all distinct pairs ``(i, j)``, ``i < j``, of
different people, and every sample says how many pairs exist
(``n_possible``) and how many were used (``n_used``).

A rate near ``f`` rests on about ``f * N`` false matches, and a rate on
fewer than 30 events is not to be leant on (NIST FRVT's "rule of 30"): so a
threshold at FMR ``f`` needs at least ``30 / f`` impostor pairs (30,000 at
``f = 1e-3``), and as many pairs of *people*: the image pairs of two people
fall on the same side of a threshold together, so 10 people with 80 images
each hold 200,000 image pairs but only 45 pairs of people
(:func:`effective_person_pairs` counts them by Kish, ``(sum w)^2 / sum
w^2`` over the image pairs ``w`` of each pair of people, so 246 people with
one image each suffice at 1e-3).  Below that it is flagged ``not_estimable``
(:data:`audit.results.FLAG_NOT_ESTIMABLE`), which keeps it out of findings
and fails any gate rule on it.

The match rule, everywhere in the tool: two images match when their
distance is **at most** the threshold (``d <= t``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from audit.distances import paired_distances
from audit.errors import InputError

__all__ = ["ImpostorPairs", "sample_impostor_pairs", "sample_cross_pairs", "count_impostor_pairs",
           "threshold_at_fmr", "fmr_threshold_estimable", "min_impostor_pairs", "MIN_FALSE_MATCHES",
           "pair_distances", "not_estimable_reason", "effective_person_pairs"]

#: False matches a rate must rest on (NIST's rule of 30): a threshold at FMR f needs 30 / f pairs.
MIN_FALSE_MATCHES = 30
#: Pairs whose distances are computed at once (200k pairs of 1024-D vectors would take gigabytes).
_DISTANCE_CHUNK = 10_000
#: Above this many candidate pairs, pairs are sampled rather than enumerated.
_ENUMERATE_LIMIT = 5_000_000


@dataclass(frozen=True)
class ImpostorPairs:
    """Row indices ``a[k], b[k]`` of the ``k``-th pair; ``n_possible`` distinct pairs existed."""

    a: np.ndarray
    b: np.ndarray
    n_possible: int

    @property
    def n_used(self) -> int:
        return int(len(self.a))

    def counts(self) -> dict:
        """What results.json records: how many distinct pairs existed and how many were used."""
        return {"possible": int(self.n_possible), "used": self.n_used, "distinct": True,
                "sampled": self.n_used < self.n_possible}

    def distances(self, vectors: np.ndarray, metric: str) -> np.ndarray:
        """The pairs' distances in the target's metric."""
        return pair_distances(vectors, self.a, self.b, metric)


def pair_distances(vectors: np.ndarray, a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Distances of rows ``a[k]`` and ``b[k]``, in chunks to bound memory."""
    if len(a) == 0:
        return np.empty(0)
    return np.concatenate([paired_distances(vectors[a[i:i + _DISTANCE_CHUNK]], vectors[b[i:i + _DISTANCE_CHUNK]],
                                            metric) for i in range(0, len(a), _DISTANCE_CHUNK)])


def _check_max_pairs(max_pairs: int) -> int:
    if int(max_pairs) != max_pairs or max_pairs < 1:
        raise InputError(f"max_pairs={max_pairs!r}, must be a whole number >= 1 (e.g. 200000).")
    return int(max_pairs)


def count_impostor_pairs(persons: np.ndarray) -> int:
    """Distinct pairs of images of different people: all pairs minus each person's own."""
    n = len(persons)
    if n < 2:
        return 0
    _, per_person = np.unique(pd.factorize(np.asarray(persons))[0], return_counts=True)
    return int(n * (n - 1) // 2 - int(np.sum(per_person * (per_person - 1) // 2)))


def _triangle_rows(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(i, j)``, ``i < j``, of the ``k``-th pair of ``n`` items in row-major order."""
    k = k.astype(np.int64)
    i = np.floor((2 * n - 1 - np.sqrt((2.0 * n - 1) ** 2 - 8.0 * k)) / 2).astype(np.int64)
    start = i * n - i * (i + 1) // 2  # index of pair (i, i + 1)
    # float rounding can put i one row off: correct it
    over = start > k
    i[over] -= 1
    start = i * n - i * (i + 1) // 2
    under = k - start >= n - i - 1
    i[under] += 1
    start = i * n - i * (i + 1) // 2
    return i, k - start + i + 1


def sample_impostor_pairs(persons: np.ndarray, max_pairs: int, *, seed: int | np.random.Generator = 0,
                          rows: np.ndarray | None = None) -> ImpostorPairs:
    """Every impostor pair among ``rows`` (all rows by default), or ``max_pairs`` of them drawn
    without replacement, uniformly among the distinct pairs.

    ``persons[r]`` is the person of row ``r``; the returned indices are rows.
    Pairs come in random order; a pair is never repeated and never joins a
    person with themself.
    """
    max_pairs = _check_max_pairs(max_pairs)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    persons = np.asarray(persons)
    rows = np.arange(len(persons)) if rows is None else np.asarray(rows, dtype=np.int64)
    codes = pd.factorize(persons[rows])[0]
    n = len(rows)
    total = n * (n - 1) // 2
    n_possible = count_impostor_pairs(codes)
    if n_possible == 0:
        return ImpostorPairs(np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
    if n_possible <= max_pairs and total <= _ENUMERATE_LIMIT:
        i, j = np.triu_indices(n, k=1)
        keep = codes[i] != codes[j]
        i, j = i[keep], j[keep]
        order = rng.permutation(len(i))
        return ImpostorPairs(rows[i[order]], rows[j[order]], n_possible)
    wanted = min(max_pairs, n_possible)
    share = n_possible / total
    draw = min(total, int(math.ceil(wanted / share * 1.05)) + 64)
    while True:
        k = rng.choice(total, size=draw, replace=False)
        i, j = _triangle_rows(k, n)
        keep = codes[i] != codes[j]
        if keep.sum() >= wanted or draw == total:
            break
        draw = min(total, draw * 2)
    i, j = i[keep][:wanted], j[keep][:wanted]
    return ImpostorPairs(rows[i], rows[j], n_possible)


def sample_cross_pairs(persons: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray, max_pairs: int, *,
                       seed: int | np.random.Generator = 0) -> ImpostorPairs:
    """Impostor pairs with one image in ``rows_a`` and one in ``rows_b`` (two disjoint groups).

    Drawn without replacement among the ``len(rows_a) * len(rows_b)``
    pairs, leaving out any pair of one person (a person in both groups).
    """
    max_pairs = _check_max_pairs(max_pairs)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    persons = np.asarray(persons)
    rows_a, rows_b = np.asarray(rows_a, dtype=np.int64), np.asarray(rows_b, dtype=np.int64)
    total = len(rows_a) * len(rows_b)
    if total == 0:
        return ImpostorPairs(np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
    shared = np.intersect1d(persons[rows_a], persons[rows_b])
    same = 0
    if len(shared):
        ca = pd.Series(persons[rows_a]).value_counts()
        cb = pd.Series(persons[rows_b]).value_counts()
        same = int(sum(int(ca[p]) * int(cb[p]) for p in shared))
    n_possible = total - same
    wanted = min(max_pairs, n_possible)
    draw = total if total <= wanted * 1.2 + 64 else int(math.ceil(wanted * total / max(n_possible, 1) * 1.05)) + 64
    draw = min(draw, total)
    while True:
        k = rng.choice(total, size=draw, replace=False) if draw < total else rng.permutation(total)
        a, b = rows_a[k // len(rows_b)], rows_b[k % len(rows_b)]
        keep = persons[a] != persons[b]
        if keep.sum() >= wanted or draw == total:
            break
        draw = min(total, draw * 2)
    return ImpostorPairs(a[keep][:wanted], b[keep][:wanted], n_possible)


def threshold_at_fmr(impostor_distances: np.ndarray, fmr: float) -> float:
    """The largest threshold whose false match rate on the impostor pairs is at most ``fmr``.

    Match rule ``d <= t``.  With ``n`` distances, at most ``k = floor(fmr * n)``
    may be ``<= t``: ``t`` is the largest observed distance that keeps the
    count within ``k`` (tied distances count together).  Where ``k`` is 0
    (fewer than ``1 / fmr`` pairs) or ``fmr <= 0``, ``t`` is the float just
    below the smallest distance (no false match on the sample).  NaN and
    infinite distances are dropped; NaN if none is left.  Whether the
    result means anything depends on ``n``: see :func:`fmr_threshold_estimable`.
    """
    if not fmr < 1.0:
        raise InputError(f"fmr={fmr!r}, must be below 1 (e.g. 1e-3).")
    d = np.asarray(impostor_distances, dtype=np.float64)
    d = np.sort(d[np.isfinite(d)])
    if len(d) == 0:
        return math.nan
    k = int(np.floor(max(fmr, 0.0) * len(d) + 1e-9))  # the epsilon guards 0.001 * 1000 = 0.9999...
    if k == 0:
        return float(np.nextafter(d[0], -np.inf))
    at_or_below = np.searchsorted(d, d[: k + 1], side="right")
    allowed = d[: k + 1][at_or_below <= k]
    if len(allowed) == 0:
        return float(np.nextafter(d[0], -np.inf))
    return float(allowed[-1])


def min_impostor_pairs(fmr: float) -> int:
    """Impostor pairs needed for a threshold at FMR ``fmr``: ``30 / fmr`` (30,000 at 1e-3)."""
    if not 0.0 < fmr < 1.0:
        raise InputError(f"fmr={fmr!r}, must be between 0 and 1 (e.g. 1e-3).")
    return int(math.ceil(MIN_FALSE_MATCHES / fmr - 1e-9))


def effective_person_pairs(person_a: np.ndarray, person_b: np.ndarray) -> float:
    """Kish's effective number of pairs of people behind image pairs ``(person_a[k], person_b[k])``."""
    a, b = np.asarray(person_a), np.asarray(person_b)
    if len(a) == 0:
        return 0.0
    codes, _ = pd.factorize(np.concatenate([a, b]))
    ca, cb = codes[: len(a)].astype(np.int64), codes[len(a):].astype(np.int64)
    g = int(codes.max()) + 1
    _, per_pair = np.unique(np.minimum(ca, cb) * g + np.maximum(ca, cb), return_counts=True)
    per_pair = per_pair.astype(np.float64)
    return float(per_pair.sum() ** 2 / np.sum(per_pair ** 2))


def fmr_threshold_estimable(n_pairs: int, fmr: float, person_pairs: float | None = None) -> bool:
    """Whether ``n_pairs`` distinct impostor pairs of ``person_pairs`` (effective) pairs of people can
    estimate a threshold at FMR ``fmr``: both must reach ``30 / fmr``."""
    needed = min_impostor_pairs(fmr)
    return int(n_pairs) >= needed and (person_pairs is None or person_pairs >= needed - 1e-9)


def not_estimable_reason(n_pairs: int, fmr: float, person_pairs: float | None = None) -> str:
    """One sentence for the report and results: why a threshold at ``fmr`` is not estimable."""
    needed = min_impostor_pairs(fmr)
    if int(n_pairs) >= needed and person_pairs is not None and person_pairs < needed:
        return (f"a threshold at FMR {fmr:g} needs at least {needed:,} distinct pairs of people "
                f"({MIN_FALSE_MATCHES} expected false matches between different pairs of people); "
                f"the {int(n_pairs):,} impostor pairs come from about {person_pairs:,.0f} pairs of people")
    return (f"a threshold at FMR {fmr:g} needs at least {needed:,} distinct impostor pairs "
            f"({MIN_FALSE_MATCHES} expected false matches); {int(n_pairs):,} were available")
