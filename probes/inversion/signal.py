"""Does the inversion probe measure anything?  The identity-signal test.

A generator that has not learned to read identity from an embedding still
draws *a* face: an average face of the training set, or of a group, or a
face with the source's apparent gender and age but nobody's identity.  Its
reconstructions then sit at random-pair distance from their sources, every
"success rate" is a false match rate, and per-group differences describe the
generator's prior, not what the target's embeddings give away.  So before
any inversion figure is reported we test that reconstructions carry
identity: each reconstruction should be closer to its *own* source than to
the other people **who share its labels**.

Why the comparison is restricted to people with the same labels
---------------------------------------------------------------
Embeddings encode gender, age and skin tone as well as identity.  A
generator that reproduces only such an attribute puts each reconstruction
closer to the people of the same gender (say) than to the others, so
against the whole group it *is* closer to its own source than to the mean
of the others, with no identity at all.  In simulation (50 people, the
attribute 3% of the embedding's variance) a comparison against the whole
group declared such a generator "identity-carrying" in 38-44% of groups,
and in all of them at 11% (``benchmarks/signal_size.py``).
Compared only with people who share every known label (the group of every
grouping, and the other low-cardinality attributes the dataset records,
e.g. an age band), an attribute-only generator is as far from its own
source as from the others, and the test holds its level.

The test (one-sided, paired, exact under its null)
---------------------------------------------------
Each tested person belongs to one *stratum*: the people with exactly the
same labels (a missing label is a label of its own).  Take the ``n`` test
people of a group who have a reconstruction vector, and the ``n x n``
matrix ``D[i, j]`` = distance from reconstruction ``i`` to the real
embedding of person ``j``.  The statistic is the mean paired gap

    gap = mean_i ( D[i, i] - mean_{j != i, j in stratum(i)} D[i, j] )

(negative: reconstructions are closer to their own source than to the mean
of the others sharing their labels).  Under the null hypothesis "the
reconstruction carries no information about *which* person it came from
beyond the labels", the pairing of reconstructions with sources is
exchangeable within each stratum, so every within-stratum permutation ``s``
gives an equally likely value of ``sum_i D[i, s(i)]``; ``gap`` is an
increasing function of that sum (the within-stratum row means are fixed),
and the p-value is the share of ``n_permutations`` random within-stratum
permutations whose sum is at most the observed one, ``(1 + k) / (1 + B)``.
This is a stratified Mantel-type permutation test: exact whatever the shape
of the distance distribution and whatever the labels do to the distances.

A person alone in a stratum has nobody to be compared with: such people are
left out of the test and counted (``n_alone``).  A group is untested (no
signal, with the reason) when fewer than ``MIN_PEOPLE`` people remain or
the strata allow fewer than ``MIN_ORDERINGS`` distinct pairings (a
p-value below 0.01 would be out of reach).  Reconstructions without a
vector (a whole-image target found no face) are left out and counted; the
no-face rate is reported as a figure of its own.  Groups larger than
``max_people`` are tested on a seeded subsample of that many people (the
test stays exact; it loses a little power it does not need at that size).

What it does not remove: an attribute the labels only approximate (a
continuous age within an age band) still lets an attribute-only generator
sit a little closer to its own source (in simulation the stratified test
still held its 1% level); an attribute the dataset does not record cannot
be stratified on at all.  ``benchmarks/signal_size.py`` has the table, with
the power the restriction costs at very weak leakage.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from audit.distances import cross_distances
from audit.targets.base import Metric

#: A probe "shows signal" in a group when its p-value is below this.
DEFAULT_ALPHA = 0.01
DEFAULT_N_PERMUTATIONS = 9_999
#: People per test at most (a seeded subsample above it): the matrix is max_people^2 floats.
DEFAULT_MAX_PEOPLE = 2_000
#: With fewer people (in strata of two or more) the group is not tested.
MIN_PEOPLE = 5
#: Fewer distinct within-stratum pairings than this (5! = 120) and no p-value can reach 0.01.
MIN_ORDERINGS = 120
#: An attribute outside the groupings is a label to stratify on only with at most this many values:
#: an age band is; a raw age in years would leave nearly everyone alone in a stratum.
MAX_LABEL_VALUES = 12


@dataclass(frozen=True)
class SignalTest:
    """The identity-signal test of one group (or of everyone).

    ``n_people``: people tested (with a reconstruction and at least one
    other person sharing their labels).  ``n_alone``: people left out
    because nobody else of the group shares all their labels.
    ``stratified_on``: the labels compared people share; ``n_strata``: the
    strata tested.  ``gap``: mean over reconstructions of (distance to own
    source - mean distance to the others sharing its labels); negative
    means identity is carried.  ``share_closer``: share of reconstructions
    closer to their own source than to that mean.  ``rank1_rate``: share
    whose own source is the nearest of the people sharing its labels
    (chance: the mean of 1 / stratum size).  ``signal``: ``p_value <
    alpha``; False (with ``reason``) where the group is too small to test.
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
    stratified_on: tuple[str, ...] = ()
    n_strata: int = 0
    n_alone: int = 0

    def to_dict(self) -> dict:
        """JSON-ready: NaN (an untested group) becomes None."""
        out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}
        out["stratified_on"] = list(self.stratified_on)
        return out


def distance_matrix(reconstructions: np.ndarray, sources: np.ndarray, metric: Metric) -> np.ndarray:
    """``D[i, j]``: reconstruction ``i`` against source ``j`` (row ``i`` is the pair's own)."""
    return cross_distances(np.asarray(reconstructions, dtype=np.float64),
                           np.asarray(sources, dtype=np.float64), metric)


def stratum_codes(strata: Sequence | np.ndarray | None, n: int) -> np.ndarray:
    """Each row's stratum as an integer code (``None``: one stratum); missing values are a stratum of their own."""
    if strata is None:
        return np.zeros(n, dtype=np.int64)
    values = np.asarray(strata, dtype=object)
    if values.shape != (n,):
        raise ValueError(f"strata has shape {values.shape}; expected one label per row, shape ({n},).")
    keys = np.array([repr(v) if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in values],
                    dtype=object)
    _, codes = np.unique(keys.astype(str), return_inverse=True)
    return codes.astype(np.int64).reshape(n)


def permutation_p_value(matrix: np.ndarray, *, strata: Sequence | np.ndarray | None = None,
                        n_permutations: int = DEFAULT_N_PERMUTATIONS, seed: int = 0) -> float:
    """One-sided p-value that the diagonal of ``matrix`` is smaller than a random within-stratum pairing's.

    ``(1 + #{permutations with sum_i D[i, s(i)] <= observed}) / (1 + B)``:
    never 0, resolution ``1 / (B + 1)``.  ``strata`` (one label per row;
    ``None``: one stratum) restricts each permutation to swap people only
    within their stratum.
    """
    d = np.asarray(matrix, dtype=np.float64)
    n = len(d)
    codes = stratum_codes(strata, n)
    order = np.argsort(codes, kind="stable")       # strata contiguous: keys below never cross a stratum
    d = d[np.ix_(order, order)]
    sorted_codes = codes[order].astype(np.float64)
    observed = float(np.trace(d))
    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    at_most = 0
    # Batches of permutations: argsort of (stratum + uniform/2) keys gives independent uniform
    # permutations within each stratum (the half keeps a key below the next stratum's code).
    batch = max(1, 2_000_000 // max(n, 1))
    done = 0
    tolerance = 1e-12 * max(1.0, abs(observed))
    while done < n_permutations:
        b = min(batch, n_permutations - done)
        perms = np.argsort(sorted_codes[None, :] + 0.5 * rng.random((b, n)), axis=1)
        sums = d[rows[None, :], perms].sum(axis=1)
        at_most += int(np.sum(sums <= observed + tolerance))
        done += b
    return (1 + at_most) / (1 + n_permutations)


def signal_test(reconstructions: np.ndarray, sources: np.ndarray, *, metric: Metric, grouping: str = "all",
                group: str = "all", alpha: float = DEFAULT_ALPHA,
                n_permutations: int = DEFAULT_N_PERMUTATIONS, max_people: int = DEFAULT_MAX_PEOPLE,
                seed: int = 0, strata: Sequence | np.ndarray | None = None,
                stratified_on: Sequence[str] = ()) -> SignalTest:
    """Test one group: row ``i`` of ``reconstructions`` was generated from row ``i`` of ``sources``.

    Each row is one person (one test image per person).  ``strata`` gives
    each row's combination of known labels (``stratified_on`` names them):
    a reconstruction is compared only with the people sharing it.  Several
    generators: pass the rows' distance matrices averaged with
    :func:`signal_test_from_matrix` instead.
    """
    recon = np.asarray(reconstructions, dtype=np.float64)
    real = np.asarray(sources, dtype=np.float64)
    if recon.shape != real.shape or recon.ndim != 2:
        raise ValueError(f"reconstructions {recon.shape} and sources {real.shape} must both be (n_people, d).")
    codes = stratum_codes(strata, len(recon))
    has = np.all(np.isfinite(recon), axis=1)
    rows = _subsample(np.flatnonzero(has), max_people, seed)
    matrix = distance_matrix(recon[rows], real[rows], metric) if len(rows) else np.zeros((0, 0))
    return signal_test_from_matrix(matrix, grouping=grouping, group=group, alpha=alpha,
                                   n_permutations=n_permutations, seed=seed,
                                   n_without_vector=int((~has).sum()), strata=codes[rows],
                                   stratified_on=stratified_on)


def signal_test_from_matrix(matrix: np.ndarray, *, grouping: str = "all", group: str = "all",
                            alpha: float = DEFAULT_ALPHA, n_permutations: int = DEFAULT_N_PERMUTATIONS,
                            seed: int = 0, n_without_vector: int = 0, strata: Sequence | np.ndarray | None = None,
                            stratified_on: Sequence[str] = ()) -> SignalTest:
    """The test on a ready ``(n, n)`` distance matrix (e.g. the mean over several generators').

    ``strata``: each row's stratum (``None``: everyone shares the labels).
    """
    d = np.asarray(matrix, dtype=np.float64)
    n_all = len(d)
    if d.shape != (n_all, n_all) or not np.all(np.isfinite(d)):
        raise ValueError(f"matrix has shape {d.shape} (or non-finite values); expected a finite (n, n) "
                         "matrix of reconstruction-to-source distances.")
    codes = stratum_codes(strata, n_all)
    sizes = np.bincount(codes, minlength=1) if n_all else np.zeros(0, dtype=np.int64)
    keep = sizes[codes] >= 2 if n_all else np.zeros(0, dtype=bool)
    d, codes = d[np.ix_(keep, keep)], codes[keep]
    n, n_alone = int(keep.sum()), int(n_all - keep.sum())
    _, codes = np.unique(codes, return_inverse=True)
    codes = codes.reshape(n)
    sizes = np.bincount(codes) if n else np.zeros(0, dtype=np.int64)
    common = dict(stratified_on=tuple(stratified_on), n_strata=int(len(sizes)), n_alone=n_alone)
    log_orderings = float(sum(math.lgamma(s + 1) for s in sizes))
    if n < MIN_PEOPLE or log_orderings < math.log(MIN_ORDERINGS) - 1e-9:
        shared = (f" and someone sharing their labels ({', '.join(stratified_on)}); {n_alone} more have nobody"
                  if stratified_on else "")
        return SignalTest(grouping, group, n, n_without_vector, math.nan, math.nan, math.nan, math.nan, alpha,
                          False, reason=f"{n} people with a reconstruction{shared}: at least {MIN_PEOPLE} are "
                                        f"needed, in label combinations allowing {MIN_ORDERINGS} pairings, to "
                                        "test whether reconstructions carry identity", **common)
    same = codes[:, None] == codes[None, :]
    own = np.diag(d)
    others = (np.where(same, d, 0.0).sum(axis=1) - own) / (sizes[codes] - 1)
    gaps = own - others
    off = np.where(same & ~np.eye(n, dtype=bool), d, np.inf)
    rank1 = float(np.mean(own < off.min(axis=1)))
    p = permutation_p_value(d, strata=codes, n_permutations=n_permutations, seed=seed)
    signal = p < alpha
    versus = (f"the other people sharing their labels ({', '.join(stratified_on)})" if stratified_on
              else "the other people")
    reason = "" if signal else (f"reconstructions are not significantly closer to their own source than to "
                                f"{versus} (p = {p:.3g} >= {alpha:g})")
    return SignalTest(grouping, group, n, n_without_vector, float(gaps.mean()), float(np.mean(gaps < 0)),
                      rank1, p, alpha, bool(signal), reason, **common)


def _subsample(rows: np.ndarray, max_people: int, seed: int) -> np.ndarray:
    if len(rows) <= max_people:
        return rows
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=max_people, replace=False))


def label_attributes(table, grouped: Sequence[str], candidates: Sequence[str] = ()) -> list[str]:
    """The labels to stratify on: every grouped attribute, then each other candidate column of
    ``table`` with 2 to :data:`MAX_LABEL_VALUES` distinct values (e.g. ``age_band``)."""
    out = [a for a in dict.fromkeys(grouped)]
    for name in dict.fromkeys(candidates):
        if name in out or name not in table.columns:
            continue
        if 2 <= table[name].nunique(dropna=True) <= MAX_LABEL_VALUES:
            out.append(name)
    return out


def combined_strata(labels_by_grouping: dict) -> np.ndarray:
    """Each row's combination of every grouping's label: the finest partition the groupings know."""
    columns = [np.asarray(v, dtype=object) for v in labels_by_grouping.values()]
    if not columns:
        raise ValueError("labels_by_grouping is empty; give at least {'all': [...]}.")
    n = len(columns[0])
    return np.array([" | ".join(str(c[i]) for c in columns) for i in range(n)], dtype=object)


def group_signal_tests(reconstructions: Sequence[np.ndarray], sources: np.ndarray, labels_by_grouping: dict,
                       *, metric: Metric, alpha: float = DEFAULT_ALPHA,
                       n_permutations: int = DEFAULT_N_PERMUTATIONS, max_people: int = DEFAULT_MAX_PEOPLE,
                       seed: int = 0, strata: Sequence | np.ndarray | None = None,
                       stratified_on: Sequence[str] = ()) -> list[SignalTest]:
    """Every group's test, the reconstructions of several generators pooled.

    ``reconstructions`` holds one ``(n, d)`` array per generator (rows
    aligned with ``sources``); ``labels_by_grouping`` maps a grouping name
    to an array of each row's group label (``{"all": ["all", ...], "race":
    [...], ...}``).  ``strata`` gives each row's combination of every known
    label (``stratified_on`` names the labels); without it the rows are
    stratified on the combination of every grouping's label.  Every test,
    the overall one included, compares a reconstruction only with the
    people of its stratum.  With several generators the test runs on the
    mean of their distance matrices: the null (no generator's
    reconstructions know whose embedding they came from beyond the labels)
    still makes the pairing exchangeable within strata.  A row counts as
    without a vector if any generator's is missing.
    """
    recon = [np.asarray(r, dtype=np.float64) for r in reconstructions]
    real = np.asarray(sources, dtype=np.float64)
    has = np.all([np.all(np.isfinite(r), axis=1) for r in recon], axis=0)
    if strata is None:
        strata = combined_strata(labels_by_grouping)
        stratified_on = tuple(stratified_on) or tuple(k for k in labels_by_grouping if k != "all")
    codes = stratum_codes(strata, len(real))
    out = []
    for grouping, labels in labels_by_grouping.items():
        labels = np.asarray(labels, dtype=object)
        for label in sorted(set(labels.tolist()), key=str):
            in_group = labels == label
            rows = _subsample(np.flatnonzero(in_group & has), max_people, seed)
            matrix = (np.mean([distance_matrix(r[rows], real[rows], metric) for r in recon], axis=0)
                      if len(rows) else np.zeros((0, 0)))
            out.append(signal_test_from_matrix(matrix, grouping=grouping, group=str(label), alpha=alpha,
                                               n_permutations=n_permutations, seed=seed,
                                               n_without_vector=int((in_group & ~has).sum()),
                                               strata=codes[rows], stratified_on=stratified_on))
    return out
