"""Does the inversion probe measure anything?  The identity-signal test.

A generator that has not learned to read identity from an embedding still
draws *a* face: an average face of the training set, or of a group.  Its
reconstructions then sit at random-pair distance from their sources, every
"success rate" is a false match rate, and per-group differences describe the
generator's prior, not what the target's embeddings give away.  So before
any inversion figure is reported we test that reconstructions carry
identity: each reconstruction should be closer to its *own* source than to
the other people.

The test (one-sided, paired, exact under its null)
---------------------------------------------------
Take the ``n`` test people of a group who have a reconstruction vector, and
the ``n x n`` matrix ``D[i, j]`` = distance from reconstruction ``i`` to the
real embedding of person ``j``.  The statistic is the mean paired gap

    gap = mean_i ( D[i, i] - mean_{j != i} D[i, j] )

(negative: reconstructions are closer to their own source than to the mean
of the group's other people).  Under the null hypothesis "the reconstruction
carries no information about *which* person of the group it came from",
the pairing of reconstructions with sources is exchangeable, so every
permutation ``s`` of the people gives an equally likely value of
``sum_i D[i, s(i)]``; ``gap`` is an increasing function of that sum (the
row means are fixed), and the p-value is the share of ``n_permutations``
random permutations whose sum is at most the observed one, ``(1 + k) / (1 +
B)``.  This is a Mantel-type permutation test: exact whatever the shape of
the distance distribution (a Wilcoxon test on the gaps would assume a
symmetric null distribution, which a single distance minus a mean of many
is not).

Comparing with the *same group's* other people is the strict version: a
generator that only draws "a typical face of the group" fails it, because
within a group such a face is as far from everyone.  The overall test uses
everyone.  Reconstructions without a vector (a whole-image target found no
face) are left out of the test and counted; the no-face rate is reported
as a figure of its own.  Groups larger than ``max_people`` are tested on a
seeded subsample of that many people (the test stays exact; it loses a
little power it does not need at that size).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from audit.distances import cross_distances
from audit.targets.base import Metric

#: A probe "shows signal" in a group when its p-value is below this.
DEFAULT_ALPHA = 0.01
DEFAULT_N_PERMUTATIONS = 9_999
#: People per test at most (a seeded subsample above it): the matrix is max_people^2 floats.
DEFAULT_MAX_PEOPLE = 2_000
#: With fewer people no permutation p-value can reach 0.01 (4! = 24 orderings).
MIN_PEOPLE = 5


@dataclass(frozen=True)
class SignalTest:
    """The identity-signal test of one group (or of everyone).

    ``gap``: mean over reconstructions of (distance to own source - mean
    distance to the group's other people); negative means identity is
    carried.  ``share_closer``: share of reconstructions closer to their own
    source than to that mean.  ``rank1_rate``: share whose own source is
    the nearest of the group's people (chance: 1 / n_people).
    ``signal``: ``p_value < alpha``; False (with ``reason``) where the
    group is too small to test.
    """

    grouping: str
    group: str
    n_people: int
    n_without_vector: int
    gap: float
    share_closer: float
    rank1_rate: float
    p_value: float
    alpha: float
    signal: bool
    reason: str = ""

    def to_dict(self) -> dict:
        """JSON-ready: NaN (an untested group) becomes None."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def distance_matrix(reconstructions: np.ndarray, sources: np.ndarray, metric: Metric) -> np.ndarray:
    """``D[i, j]``: reconstruction ``i`` against source ``j`` (row ``i`` is the pair's own)."""
    return cross_distances(np.asarray(reconstructions, dtype=np.float64),
                           np.asarray(sources, dtype=np.float64), metric)


def permutation_p_value(matrix: np.ndarray, *, n_permutations: int = DEFAULT_N_PERMUTATIONS,
                        seed: int = 0) -> float:
    """One-sided p-value that the diagonal of ``matrix`` is smaller than a random pairing's.

    ``(1 + #{permutations with sum_i D[i, s(i)] <= observed}) / (1 + B)``:
    never 0, resolution ``1 / (B + 1)``.
    """
    d = np.asarray(matrix, dtype=np.float64)
    n = len(d)
    observed = float(np.trace(d))
    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    at_most = 0
    # Batches of permutations: argsort of uniform keys gives independent uniform permutations.
    batch = max(1, 2_000_000 // max(n, 1))
    done = 0
    tolerance = 1e-12 * max(1.0, abs(observed))
    while done < n_permutations:
        b = min(batch, n_permutations - done)
        perms = np.argsort(rng.random((b, n)), axis=1)
        sums = d[rows[None, :], perms].sum(axis=1)
        at_most += int(np.sum(sums <= observed + tolerance))
        done += b
    return (1 + at_most) / (1 + n_permutations)


def signal_test(reconstructions: np.ndarray, sources: np.ndarray, *, metric: Metric, grouping: str = "all",
                group: str = "all", alpha: float = DEFAULT_ALPHA,
                n_permutations: int = DEFAULT_N_PERMUTATIONS, max_people: int = DEFAULT_MAX_PEOPLE,
                seed: int = 0) -> SignalTest:
    """Test one group: row ``i`` of ``reconstructions`` was generated from row ``i`` of ``sources``.

    Each row is one person (one test image per person).  Several
    generators: pass the rows' distance matrices averaged with
    :func:`signal_test_from_matrix` instead.
    """
    recon = np.asarray(reconstructions, dtype=np.float64)
    real = np.asarray(sources, dtype=np.float64)
    if recon.shape != real.shape or recon.ndim != 2:
        raise ValueError(f"reconstructions {recon.shape} and sources {real.shape} must both be (n_people, d).")
    has = np.all(np.isfinite(recon), axis=1)
    rows = _subsample(np.flatnonzero(has), max_people, seed)
    matrix = distance_matrix(recon[rows], real[rows], metric) if len(rows) else np.zeros((0, 0))
    return signal_test_from_matrix(matrix, grouping=grouping, group=group, alpha=alpha,
                                   n_permutations=n_permutations, seed=seed,
                                   n_without_vector=int((~has).sum()))


def signal_test_from_matrix(matrix: np.ndarray, *, grouping: str = "all", group: str = "all",
                            alpha: float = DEFAULT_ALPHA, n_permutations: int = DEFAULT_N_PERMUTATIONS,
                            seed: int = 0, n_without_vector: int = 0) -> SignalTest:
    """The test on a ready ``(n, n)`` distance matrix (e.g. the mean over several generators')."""
    d = np.asarray(matrix, dtype=np.float64)
    n = len(d)
    if d.shape != (n, n) or not np.all(np.isfinite(d)):
        raise ValueError(f"matrix has shape {d.shape} (or non-finite values); expected a finite (n, n) "
                         "matrix of reconstruction-to-source distances.")
    if n < MIN_PEOPLE:
        return SignalTest(grouping, group, n, n_without_vector, math.nan, math.nan, math.nan, math.nan, alpha,
                          False, reason=f"{n} people with a reconstruction: at least {MIN_PEOPLE} are needed "
                                        "to test whether reconstructions carry identity")
    own = np.diag(d)
    others = (d.sum(axis=1) - own) / (n - 1)
    gaps = own - others
    off = d + np.diag(np.full(n, np.inf))
    rank1 = float(np.mean(own < off.min(axis=1)))
    p = permutation_p_value(d, n_permutations=n_permutations, seed=seed)
    signal = p < alpha
    reason = "" if signal else (f"reconstructions are not significantly closer to their own source than to "
                                f"the other people (p = {p:.3g} >= {alpha:g})")
    return SignalTest(grouping, group, n, n_without_vector, float(gaps.mean()), float(np.mean(gaps < 0)),
                      rank1, p, alpha, bool(signal), reason)


def _subsample(rows: np.ndarray, max_people: int, seed: int) -> np.ndarray:
    if len(rows) <= max_people:
        return rows
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=max_people, replace=False))


def group_signal_tests(reconstructions: Sequence[np.ndarray], sources: np.ndarray, labels_by_grouping: dict,
                       *, metric: Metric, alpha: float = DEFAULT_ALPHA,
                       n_permutations: int = DEFAULT_N_PERMUTATIONS, max_people: int = DEFAULT_MAX_PEOPLE,
                       seed: int = 0) -> list[SignalTest]:
    """Every group's test, the reconstructions of several generators pooled.

    ``reconstructions`` holds one ``(n, d)`` array per generator (rows
    aligned with ``sources``); ``labels_by_grouping`` maps a grouping name
    to an array of each row's group label (``{"all": ["all", ...], "race":
    [...], ...}``).  With several generators the test runs on the mean of
    their distance matrices: the null (no generator's reconstructions know
    whose embedding they came from) still makes the pairing exchangeable.
    A row counts as without a vector if any generator's is missing.
    """
    recon = [np.asarray(r, dtype=np.float64) for r in reconstructions]
    real = np.asarray(sources, dtype=np.float64)
    has = np.all([np.all(np.isfinite(r), axis=1) for r in recon], axis=0)
    out = []
    for grouping, labels in labels_by_grouping.items():
        labels = np.asarray(labels, dtype=object)
        for label in sorted(set(labels.tolist())):
            in_group = labels == label
            rows = _subsample(np.flatnonzero(in_group & has), max_people, seed)
            matrix = (np.mean([distance_matrix(r[rows], real[rows], metric) for r in recon], axis=0)
                      if len(rows) else np.zeros((0, 0)))
            out.append(signal_test_from_matrix(matrix, grouping=grouping, group=str(label), alpha=alpha,
                                               n_permutations=n_permutations, seed=seed,
                                               n_without_vector=int((in_group & ~has).sum())))
    return out
