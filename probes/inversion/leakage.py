"""Identity leakage per group: inversion figures that a group's crowding cannot inflate.

Why not the match rate at a fixed threshold
-------------------------------------------
A reconstruction "matches" its source at the target's threshold ``t`` when
their distance is ``<= t``.  In a group the target packs tightly (its
people sit close together in the embedding space), a reconstruction that
lands near the group's average face is within ``t`` of its source *and* of
many other people of the group: the fixed-threshold match rate then reads
high although the reconstruction does not say *who* it is.  That rate mixes
two things: how much identity the embedding gives away (what the inversion
probe is for) and how crowded the group is (what the volume probe
measures).  The figures here compare each reconstruction with its own
source *against the other people of its own group*, so a crowded group
gains nothing from being crowded:

* ``sar_at_own_fmr_<f>``: success at the group's own false match rate.
  The threshold is where reconstructions match *other people of the same
  group* at rate ``f`` (1e-1, 1e-2, 1e-3), fitted on other people than
  those it is applied to (the people are split into folds; each fold is
  scored at the threshold fitted on the others).  A reconstruction without
  a usable face fails.  A generator that draws no identity scores about
  ``f``; one that draws the person scores near 1.
* ``rank1_equal_gallery``: the share of reconstructions whose own source is
  nearer than every other person of a same-group gallery of ``G`` people
  (the own source and ``G - 1`` others), averaged over every such gallery
  in closed form (hypergeometric).  Rank 1 falls as a gallery grows, so
  every group is judged at the same ``G``: the smallest group's size, at
  most 50.
* ``leakage_auc``: the probability that a reconstruction is closer to its
  own source than to a random other person of its group (ties count half;
  a reconstruction without a usable face counts 1/2, no information).
  Chance is 0.5.
* ``type2_*``: the same against *another photo* of the person rather than
  the photo the embedding came from (only people with several images).

Intervals
---------
Each figure depends on pairs of people (a reconstruction and someone
else's real embedding), so a person enters both as a reconstruction and as
somebody else's look-alike.  The interval resamples *people* with
replacement and recomputes the whole figure, threshold refit and folds
included, with each drawn person's row and column both weighted by the
number of times it was drawn (a two-way people bootstrap).  The interval
is the estimate plus or minus the bootstrap standard error read at
Hesterberg's expanded quantile (:func:`probes.estimates.expanded_z`),
clipped to [0, 1]; ``benchmarks/coverage.py`` measures its coverage at 20,
100 and 500 people.  Groups larger than ``max_people`` are measured on a
seeded subsample of that many people (the intervals then count that many).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import special

from audit.distances import cross_distances
from audit.targets.base import Metric
from probes.estimates import expanded_z
from audit.results import ALL, FLAG_NOT_ESTIMABLE, Disparity, Figure
from probes.pairs import fmr_threshold_estimable, not_estimable_reason
from probes.stats import DEFAULT_CONFIDENCE, GroupedFigures, figure_from_estimate

#: The same-group false match rates of the success figures (the threshold table).
LEAKAGE_FMRS = (1e-1, 1e-2, 1e-3)
#: The headline rate: estimable from about 60 people per group on.
HEADLINE_FMR = 1e-2
#: The same-group gallery of the rank-1 figure, at most this many people.
DEFAULT_GALLERY_SIZE = 50
#: Below this many people a gallery says little (chance is 1 / G).
MIN_GALLERY_SIZE = 5
DEFAULT_MAX_PEOPLE = 2_000
#: Impostor pairs kept per fold for fitting a threshold (a seeded subsample above it).
DEFAULT_MAX_PAIRS = 100_000
DEFAULT_N_FOLDS = 5
#: Points of the success-against-FMR curve (log-spaced from 1e-3 to about 0.3).
CURVE_FMRS = tuple(float(f) for f in np.logspace(-3, -0.5, 16))
#: Replicates handled at once (bounds the B x pairs work arrays).
_CHUNK = 64


def fmr_key(fmr: float) -> str:
    """``1e-2`` -> ``'1e-2'``: the suffix of the metric names."""
    exponent = int(round(math.log10(fmr)))
    return f"1e{exponent}" if math.isclose(10.0 ** exponent, fmr) else f"{fmr:g}"


def leakage_metrics(type2: bool = False) -> tuple[str, ...]:
    """The metric names this module estimates (type I, or type II with ``type2``)."""
    names = [f"sar_at_own_fmr_{fmr_key(f)}" for f in LEAKAGE_FMRS] + ["rank1_equal_gallery", "leakage_auc"]
    return tuple(f"type2_{n}" for n in names) if type2 else tuple(names)


@dataclass(frozen=True)
class LeakageEstimate:
    """A leakage figure with its two-way people-bootstrap replicates.

    The interval is ``value +- z' * sd(replicates)`` with Hesterberg's
    expanded quantile ``z'`` for ``n_people`` people, clipped to [0, 1].
    """

    value: float
    replicates: np.ndarray = field(repr=False)
    n_people: int

    @property
    def standard_error(self) -> float:
        reps = self.replicates[np.isfinite(self.replicates)]
        return float(np.std(reps, ddof=1)) if reps.size > 1 else math.nan

    def interval(self, confidence: float) -> tuple[float, float]:
        se = self.standard_error
        if not (math.isfinite(self.value) and math.isfinite(se)):
            return math.nan, math.nan
        q = expanded_z(confidence, self.n_people)
        return max(0.0, self.value - q * se), min(1.0, self.value + q * se)

    def for_ratio(self, other) -> "LeakageEstimate":
        return self


@dataclass
class GroupLeakage:
    """One group's leakage figures, pooled over generators.

    ``estimates`` by metric name (see :func:`leakage_metrics`);
    ``not_estimable`` the metrics whose threshold rests on too few pairs,
    with the reason; ``thresholds`` the fitted same-group threshold at each
    FMR (the mean over folds and generators); ``per_generator`` each
    metric's point value under each generator; ``curve`` the in-sample
    success at each of :data:`CURVE_FMRS` (None where not estimable);
    ``n_people`` the people measured (after any subsample).
    """

    n_people: int
    estimates: dict[str, LeakageEstimate]
    not_estimable: dict[str, str]
    thresholds: dict[str, float | None]
    per_generator: dict[str, list[float]]
    curve: list[float | None]
    n_type2_people: int = 0


def gallery_size_for(group_sizes: Sequence[int], *, largest: int = DEFAULT_GALLERY_SIZE) -> int:
    """The one gallery size every group of a run is judged at: the smallest group's, at most ``largest``.

    Groups too small for a gallery (under :data:`MIN_GALLERY_SIZE` people)
    do not pull the size down; their rank-1 figure is undefined instead.
    """
    usable = [int(n) for n in group_sizes if int(n) >= MIN_GALLERY_SIZE]
    return min([largest] + usable)


# --------------------------------------------------------------------------- the pair matrices

@dataclass(frozen=True)
class _Pairs:
    """One generator's distances within a group, as every statistic reads them.

    ``genuine[i]``: reconstruction ``i`` to its own source (``inf`` where it
    has no usable face); ``impostor[i, j]``: to person ``j``'s real
    embedding (``inf`` for a reconstruction without a usable face: it
    matches nobody); ``others[i, j]``: ``j`` is another person than ``i``.
    """

    genuine: np.ndarray
    impostor: np.ndarray
    others: np.ndarray
    ok: np.ndarray


def _pairs(recon: np.ndarray, ok: np.ndarray, real: np.ndarray, persons: np.ndarray, metric: Metric) -> _Pairs:
    n = len(real)
    usable = np.asarray(ok, dtype=bool) & np.all(np.isfinite(recon), axis=1)
    impostor = np.full((n, n), np.inf)
    if usable.any():
        impostor[usable] = cross_distances(recon[usable], real, metric)
    genuine = np.diagonal(impostor).copy()
    others = persons[:, None] != persons[None, :]
    return _Pairs(genuine, impostor, others, usable)


def _hypergeometric_rank1(closer: np.ndarray, pool: np.ndarray, gallery: int) -> np.ndarray:
    """P(no one of ``gallery - 1`` people drawn from ``pool`` is among the ``closer`` ones)."""
    k = np.asarray(gallery, dtype=np.float64) - 1
    closer = np.asarray(closer, dtype=np.float64)
    pool = np.asarray(pool, dtype=np.float64)
    free = pool - closer
    out = np.zeros(np.broadcast(closer, pool).shape)
    good = free >= k
    with np.errstate(invalid="ignore"):
        log_p = (special.gammaln(free + 1) - special.gammaln(free - k + 1)
                 - special.gammaln(pool + 1) + special.gammaln(pool - k + 1))
    out[good] = np.exp(log_p[good])
    out[pool < k] = np.nan
    return out


def _head_length(n: int, fmrs: Sequence[float]) -> int:
    """How many of the sorted pairs a threshold at FMR <= max(fmrs) can reach under bootstrap weights.

    A draw's weighted share of the first ``p`` pairs is close to ``p / n``;
    three times the largest FMR (plus 5 points) leaves a wide margin, and
    :func:`_weighted_threshold` checks it and falls back to every pair.
    """
    top = max(fmrs)
    if top >= 0.25 or n <= 1000:
        return n
    return int(min(n, math.ceil(n * (3.0 * top + 0.05))))


def _weighted_threshold(sorted_d: np.ndarray, run_end: np.ndarray, pair_w: np.ndarray, total: np.ndarray,
                        fmrs: Sequence[float]) -> np.ndarray | None:
    """:func:`probes.pairs.threshold_at_fmr` on weighted pairs: one threshold per row of ``pair_w`` and FMR.

    ``sorted_d`` ascending (its first ``pair_w.shape[1]`` entries are
    weighted by ``pair_w``, the head of the pairs); ``total`` each row's
    weight of every pair; ``run_end[p]`` marks the last of a run of tied
    distances (tied distances match together).  The threshold is the
    largest distance whose weighted share at or below it is at most
    ``fmr``; below the smallest distance where none is.  Returns
    ``(rows, len(fmrs))``, or None where the head is too short for a row
    (the caller then passes every pair).
    """
    head = pair_w.shape[1]
    total = np.asarray(total, dtype=np.float64).reshape(-1, 1)
    cum = np.cumsum(pair_w, axis=1)
    if head < len(sorted_d) and np.any(cum[:, -1:] <= max(fmrs) * total):
        return None
    # no usable reconstruction at all (every distance infinite): no threshold
    below = np.nextafter(sorted_d[0], -np.inf) if len(sorted_d) and np.isfinite(sorted_d[0]) else np.nan
    out = np.empty((len(pair_w), len(fmrs)))
    ends = run_end[:head][None, :]
    for c, fmr in enumerate(fmrs):
        limit = fmr * total + 1e-9 * np.maximum(total, 1.0)
        allowed = (cum <= limit) & ends
        idx = np.where(allowed.any(axis=1), head - 1 - np.argmax(allowed[:, ::-1], axis=1), -1)
        out[:, c] = np.where(idx >= 0, sorted_d[np.maximum(idx, 0)], below)
    return out


@dataclass(frozen=True)
class _Pool:
    """One fold's impostor pairs for fitting its threshold, sorted by distance."""

    rows: np.ndarray
    cols: np.ndarray
    distance: np.ndarray
    run_end: np.ndarray
    n_distinct: int
    fit_rows: np.ndarray      # the reconstructions whose pairs the threshold is fitted on
    kept: float               # the share of their pairs kept (1 unless subsampled)


def _fold_pool(pairs: _Pairs, in_fold: np.ndarray, max_pairs: int, rng: np.random.Generator) -> _Pool:
    fit_rows = np.flatnonzero(~in_fold)
    mask = np.zeros_like(pairs.others)
    mask[fit_rows] = pairs.others[fit_rows]
    rows, cols = np.nonzero(mask)
    n_distinct = len(rows)
    if n_distinct > max_pairs:
        keep = np.sort(rng.choice(n_distinct, size=max_pairs, replace=False))
        rows, cols = rows[keep], cols[keep]
    d = pairs.impostor[rows, cols]
    order = np.argsort(d, kind="stable")
    rows, cols, d = rows[order], cols[order], d[order]
    run_end = np.ones(len(d), dtype=bool)
    if len(d) > 1:
        run_end[:-1] = d[1:] != d[:-1]
    return _Pool(rows, cols, d, run_end, n_distinct, fit_rows, len(rows) / n_distinct if n_distinct else 1.0)


# --------------------------------------------------------------------------- the statistics

def _per_person_mean_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _rank1(weights: np.ndarray, pairs: _Pairs, genuine: np.ndarray, owner: np.ndarray, item_share: np.ndarray,
           gallery: int) -> np.ndarray:
    """Rank 1 in a same-group gallery of ``gallery`` people, for each weight row."""
    others = pairs.others[owner].astype(np.float64)
    closer = ((pairs.impostor[owner] <= genuine[:, None]) & pairs.others[owner]).astype(np.float64)
    n_closer = weights @ closer.T           # (B, items): drawn others at least as close as the own source
    n_pool = weights @ others.T
    # a person drawn several times leaves fewer others than a full gallery: the gallery shrinks to them
    r = _hypergeometric_rank1(n_closer, n_pool, np.minimum(gallery, n_pool + 1))
    r[:, ~pairs.ok[owner]] = 0.0
    item_w = weights[:, owner] * item_share[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (item_w * r).sum(1) / item_w.sum(1)


def _thresholds(weights: np.ndarray, pools: list[_Pool], others: np.ndarray, fmrs: Sequence[float]) -> np.ndarray:
    """Each fold's threshold at each same-group FMR, refitted under each weight row: (B, folds, fmrs).

    A draw weighs pair ``(i, j)`` by ``w_i * w_j``.  The total weight of a
    fold's pairs is computed in closed form (scaled by the share kept where
    the pairs were subsampled), so only the head of the sorted pairs, where
    the thresholds lie, is gathered.
    """
    b = len(weights)
    thresholds = np.full((b, len(pools), len(fmrs)), np.nan)
    for k, pool in enumerate(pools):
        if not len(pool.distance):
            continue
        fit_others = others[pool.fit_rows].astype(np.float64)
        totals = (weights[:, pool.fit_rows] * (weights @ fit_others.T)).sum(axis=1) * pool.kept
        head = _head_length(len(pool.distance), fmrs)
        for start in range(0, b, _CHUNK):
            w = weights[start:start + _CHUNK]
            t = totals[start:start + _CHUNK]
            fitted = _weighted_threshold(pool.distance, pool.run_end, w[:, pool.rows[:head]] * w[:, pool.cols[:head]],
                                         t, fmrs)
            if fitted is None:
                fitted = _weighted_threshold(pool.distance, pool.run_end, w[:, pool.rows] * w[:, pool.cols], t, fmrs)
            thresholds[start:start + _CHUNK, k] = fitted
    return thresholds


def _success(weights: np.ndarray, thresholds: np.ndarray, folds: np.ndarray, genuine: np.ndarray,
             owner: np.ndarray, item_share: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Success at the fold thresholds (each item scored at its fold's, fitted on the other folds)."""
    success = np.zeros((len(weights), len(owner)))
    for k in range(thresholds.shape[1]):
        items = folds[owner] == k
        with np.errstate(invalid="ignore"):
            success[:, items] = (genuine[items][None, :] <= thresholds[:, k:k + 1]) & ok[owner][items][None, :]
    item_w = weights[:, owner] * item_share[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (item_w * success).sum(1) / item_w.sum(1)


# --------------------------------------------------------------------------- one group

def _items(pairs: _Pairs, recon: np.ndarray, extras: Sequence[np.ndarray] | None, metric: Metric, type2: bool):
    """The scored items: each reconstruction (type I), or each (reconstruction, other photo) (type II).

    Returns ``genuine`` distances, ``owner`` (the reconstruction's row) and
    ``share`` (1 / the owner's number of items, so each person weighs once).
    """
    n = len(pairs.genuine)
    if not type2:
        return pairs.genuine, np.arange(n), np.ones(n)
    genuine, owner, share = [], [], []
    for i in range(n):
        photos = np.asarray(extras[i], dtype=np.float64) if extras is not None else np.zeros((0, 1))
        if photos.ndim != 2 or len(photos) == 0:
            continue
        if pairs.ok[i]:
            d = cross_distances(recon[i:i + 1], photos, metric)[0]
        else:
            d = np.full(len(photos), np.inf)
        genuine.extend(d)
        owner.extend([i] * len(d))
        share.extend([1.0 / len(d)] * len(d))
    return np.asarray(genuine, dtype=np.float64), np.asarray(owner, dtype=np.int64), np.asarray(share)


def _statistics(weights: np.ndarray, pairs: _Pairs, thresholds_by_fmr: dict[float, np.ndarray], folds: np.ndarray,
                recon: np.ndarray, extras, metric: Metric, gallery: int, type2: bool) -> dict[str, np.ndarray]:
    genuine, owner, share = _items(pairs, recon, extras, metric, type2)
    prefix = "type2_" if type2 else ""
    out: dict[str, np.ndarray] = {}
    if not len(owner):
        return out
    for fmr, thresholds in thresholds_by_fmr.items():
        out[f"{prefix}sar_at_own_fmr_{fmr_key(fmr)}"] = _success(weights, thresholds, folds, genuine, owner, share,
                                                                 pairs.ok)
    out[f"{prefix}rank1_equal_gallery"] = _rank1(weights, pairs, genuine, owner, share, gallery)
    out[f"{prefix}leakage_auc"] = _auc_items(weights, pairs, genuine, owner, share)
    return out


def _auc_items(weights: np.ndarray, pairs: _Pairs, genuine: np.ndarray, owner: np.ndarray,
               share: np.ndarray) -> np.ndarray:
    """Leakage AUC with each person weighing once (its items share the person's weight)."""
    g = genuine[:, None]
    imp = pairs.impostor[owner]
    others = pairs.others[owner]
    score = np.where(others, (g < imp) + 0.5 * (g == imp), 0.0)
    no_face = ~pairs.ok[owner]
    score[no_face] = 0.5 * others[no_face]
    item_w = weights[:, owner] * share[None, :]
    num = np.einsum("bi,ij,bj->b", item_w, score, weights, optimize=True)
    den = np.einsum("bi,ij,bj->b", item_w, others.astype(np.float64), weights, optimize=True)
    return _per_person_mean_ratio(num, den)


def group_leakage(recons: Sequence[np.ndarray], oks: Sequence[np.ndarray], real: np.ndarray,
                  persons: Sequence[object], *, metric: Metric, gallery_size: int,
                  extras: Sequence[np.ndarray] | None = None, n_resamples: int = 1000, seed: int = 0,
                  max_people: int = DEFAULT_MAX_PEOPLE, max_pairs: int = DEFAULT_MAX_PAIRS,
                  n_folds: int = DEFAULT_N_FOLDS) -> GroupLeakage:
    """Every leakage figure of one group, pooled over generators, with two-way bootstrap replicates.

    ``recons[k]`` / ``oks[k]``: generator ``k``'s reconstruction vectors of
    the group's test people (NaN rows where none) and whether the target
    found a usable face in each; ``real`` their real embeddings;
    ``persons`` who they are; ``extras[i]`` (optional) the real embeddings
    of person ``i``'s *other* photos, for the type II figures.  A figure
    pooled over generators is the mean of the generators' figures.
    """
    real = np.asarray(real, dtype=np.float64)
    persons = np.asarray(persons, dtype=object).astype(str)
    n_all = len(real)
    if len(recons) != len(oks) or not recons:
        raise ValueError(f"recons ({len(recons)}) and oks ({len(oks)}) need one entry per generator, at least one.")
    if n_resamples < 2:
        raise ValueError(f"n_resamples={n_resamples!r}, must be at least 2.")
    if n_folds < 2:
        raise ValueError(f"n_folds={n_folds!r}, must be at least 2.")
    rng = np.random.default_rng(seed)
    keep = np.arange(n_all)
    if n_all > max_people:
        keep = np.sort(rng.choice(n_all, size=max_people, replace=False))
    real, persons = real[keep], persons[keep]
    extras = [extras[i] for i in keep] if extras is not None else None
    n = len(real)
    if n < 2:   # nobody else to be mistaken for: no figure
        return GroupLeakage(n_people=n, estimates={}, not_estimable={}, thresholds={}, per_generator={},
                            curve=[None] * len(CURVE_FMRS))
    folds = rng.permutation(n) % n_folds
    weights = np.vstack([np.ones((1, n)), rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples)])
    n_type2 = sum(1 for e in (extras or []) if np.asarray(e).ndim == 2 and len(e))

    per_generator: dict[str, list[float]] = {}
    sums: dict[str, np.ndarray] = {}
    threshold_sums: dict[str, list[float]] = {}
    curve_sums = np.zeros(len(CURVE_FMRS))
    not_estimable: dict[str, str] = {}
    for recon, ok in zip(recons, oks):
        recon = np.asarray(recon, dtype=np.float64)[keep]
        ok = np.asarray(ok, dtype=bool)[keep]
        pairs = _pairs(recon, ok, real, persons, metric)
        pools = [_fold_pool(pairs, folds == k, max_pairs, rng) for k in range(n_folds)]
        fewest = min(p.n_distinct for p in pools)
        fitted = _thresholds(weights, pools, pairs.others, LEAKAGE_FMRS)
        thresholds_by_fmr = {fmr: fitted[:, :, c] for c, fmr in enumerate(LEAKAGE_FMRS)}
        for fmr in LEAKAGE_FMRS:
            if not fmr_threshold_estimable(fewest, fmr):
                reason = not_estimable_reason(fewest, fmr)
                for name in (f"sar_at_own_fmr_{fmr_key(fmr)}", f"type2_sar_at_own_fmr_{fmr_key(fmr)}"):
                    not_estimable[name] = reason
            first = thresholds_by_fmr[fmr][0]
            threshold_sums.setdefault(fmr_key(fmr), []).extend(float(x) for x in first if np.isfinite(x))
        for type2 in (False, True):
            if type2 and not n_type2:
                continue
            stats = _statistics(weights, pairs, thresholds_by_fmr, folds, recon, extras, metric, gallery_size, type2)
            for name, values in stats.items():
                sums[name] = sums.get(name, 0.0) + values
                per_generator.setdefault(name, []).append(float(values[0]))
        curve_sums += _curve(pairs)
    k = len(recons)
    estimates = {name: LeakageEstimate(float(total[0] / k), total[1:] / k, n) for name, total in sums.items()}
    curve = [float(v / k) if fmr_threshold_estimable(int(n * (n - 1)), f) else None
             for v, f in zip(curve_sums, CURVE_FMRS)]
    thresholds = {key: (float(np.mean(v)) if v else None) for key, v in threshold_sums.items()}
    return GroupLeakage(n_people=n, estimates=estimates, not_estimable=not_estimable, thresholds=thresholds,
                        per_generator=per_generator, curve=curve, n_type2_people=n_type2)


def _curve(pairs: _Pairs) -> np.ndarray:
    """In-sample success at each of :data:`CURVE_FMRS` (the threshold fitted on every pair)."""
    d = np.sort(pairs.impostor[pairs.others])
    out = np.zeros(len(CURVE_FMRS))
    if not len(d):
        return np.full(len(CURVE_FMRS), np.nan)
    run_end = np.ones(len(d), dtype=bool)
    run_end[:-1] = d[1:] != d[:-1]
    thresholds = _weighted_threshold(d, run_end, np.ones((1, len(d))), np.array([len(d)]), CURVE_FMRS)[0]
    for i, t in enumerate(thresholds):
        with np.errstate(invalid="ignore"):
            out[i] = float(np.mean(pairs.ok & (pairs.genuine <= t)))
    return out


# --------------------------------------------------------------------------- every group of a run

@dataclass
class LeakageResult:
    """Every group's :class:`GroupLeakage`, keyed by (grouping name, group label), and the gallery size."""

    groups: dict[tuple[str, str], GroupLeakage]
    gallery_size: int

    def details(self) -> dict:
        """What results.json keeps and the report plots: thresholds, curves, what was not estimable."""
        by_grouping: dict[str, dict[str, dict]] = {}
        for (grouping, group), g in self.groups.items():
            by_grouping.setdefault(grouping, {})[group] = {
                "n_people": g.n_people, "n_type2_people": g.n_type2_people,
                "thresholds": g.thresholds, "curve": g.curve,
                "not_estimable": dict(g.not_estimable)}
        return {"gallery_size": self.gallery_size, "fmrs": list(LEAKAGE_FMRS), "curve_fmrs": list(CURVE_FMRS),
                "headline_fmr": HEADLINE_FMR, "groups": by_grouping}


def leakage_by_group(recons: Sequence[np.ndarray], oks: Sequence[np.ndarray], real: np.ndarray,
                     persons: Sequence[object], labels: dict[str, np.ndarray], *, metric: Metric,
                     extras: Sequence[np.ndarray] | None = None, n_resamples: int = 1000, seed: int = 0,
                     largest_gallery: int = DEFAULT_GALLERY_SIZE) -> LeakageResult:
    """:func:`group_leakage` for every group of every grouping; ``labels[grouping][i]`` is row ``i``'s group
    (None or ``"nan"`` for a row outside every group of that grouping).

    Every group is judged at one gallery size (:func:`gallery_size_for`
    over all the groups), so that rank 1 means the same in each.
    """
    members: dict[tuple[str, str], np.ndarray] = {}
    for grouping, row_labels in labels.items():
        row_labels = np.asarray(row_labels, dtype=object)
        for label in dict.fromkeys(row_labels):
            if label is None or str(label) == "nan":
                continue
            members[(grouping, str(label))] = np.flatnonzero(row_labels == label)
    gallery = gallery_size_for([len(rows) for rows in members.values()], largest=largest_gallery)
    persons = np.asarray(persons, dtype=object)
    groups = {}
    for i, (key, rows) in enumerate(members.items()):
        groups[key] = group_leakage([np.asarray(r)[rows] for r in recons], [np.asarray(o)[rows] for o in oks],
                                    np.asarray(real)[rows], persons[rows], metric=metric, gallery_size=gallery,
                                    extras=[extras[j] for j in rows] if extras is not None else None,
                                    n_resamples=n_resamples, seed=seed + 7919 * i)
    return LeakageResult(groups, gallery)


#: (metric, better for the people of the group): every leakage figure counts what an attacker gains.
LEAKAGE_BETTER = "lower"


def leakage_figures(result: LeakageResult, *, groupings: Sequence[str], confidence: float = DEFAULT_CONFIDENCE,
                    disparity_kinds: Sequence[str] = ("gap", "ratio"),
                    min_people: int | None = None) -> tuple[list[Figure], list[Disparity]]:
    """Figures (overall first, then each grouping in ``groupings`` order) and pairwise disparities.

    A success figure whose threshold rests on too few pairs is flagged
    ``not_estimable`` (it is then neither a finding nor passes a rule).
    """
    collected = GroupedFigures()
    order = {name: i for i, name in enumerate([ALL, *groupings])}
    keys = sorted(result.groups, key=lambda k: (order.get(k[0], len(order)), k[0]))
    metrics = [m for m in (*leakage_metrics(), *leakage_metrics(type2=True))
               if any(m in result.groups[k].estimates for k in keys)]
    extra = {} if min_people is None else {"min_people": min_people}
    for metric in metrics:
        for grouping, group in keys:
            g = result.groups[(grouping, group)]
            estimate = g.estimates.get(metric)
            if estimate is None:
                continue
            flags = [FLAG_NOT_ESTIMABLE] if metric in g.not_estimable else []
            n_people = g.n_type2_people if metric.startswith("type2_") else g.n_people
            figure = figure_from_estimate(estimate, probe="inversion", metric=metric, grouping=grouping, group=group,
                                          confidence=confidence, n_images=n_people, n_people=n_people,
                                          better=LEAKAGE_BETTER, flags=flags, **extra)
            collected.add(figure, estimate)
    return collected.figures(), collected.disparities(disparity_kinds, confidence=confidence)
