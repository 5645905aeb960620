"""One group's figure with an interval at any confidence level.

Why objects and not two numbers
-------------------------------
A figure's 95% interval is what the report shows, but comparing two groups
needs more: the interval of a difference or a ratio is built from the two
groups' intervals (:mod:`probes.compare`), and its p-value is found by
asking at which confidence level that interval stops containing "no
difference".  So every kind of figure here answers ``interval(confidence)``
for any level, each with the method that holds for it:

:class:`ProportionEstimate`
    A rate (detection failures, FNMR, FMR, reconstruction matches).  An
    exact Clopper-Pearson interval on the *effective* sample size
    ``n_eff = n / design_effect`` (Korn & Graubard 1998, the ``"beta"``
    method of R's ``survey::svyciprop`` and SAS's modified Clopper-Pearson),
    where the design effect comes from the spread of per-person counts: the
    images (or pairs) of one person err together, so 300 images of 100
    people carry less information than 300 people.  People are the floor:
    a design effect estimated from a handful of errors is itself a guess
    (with one erring person it reads about 1 whatever the clustering), so it
    is shrunk towards the worst case, every person's images erring together
    (``sum m^2 / sum m``, where ``n_eff`` is Kish's effective number of
    people ``(sum m)^2 / sum m^2``), with the weight of half a person
    against the effective number of people who carry the rarer outcome
    (:func:`shrunk_design_effect`).  With no error at all the worst case
    holds: 0 errors in 10 people x 420 images give [0, 30.8%], the exact
    bound counting people; 0 errors in 60 images of 60 people give [0,
    5.96%].  ``n_eff`` is shrunk further for a small number of people (the
    ratio of the normal to the Student-t quantile, squared), with Kish's
    effective number of people as the count, so that a few people holding
    most images count as few.  Never a zero-width interval.
:class:`BootstrapEstimate`
    A mean (a distance): a people bootstrap with a BCa interval, as
    :mod:`probes.stats` draws it, read at Hesterberg's expanded quantile so
    that it holds for 20 people too (:func:`expanded_z`).  Where BCa is
    degenerate, or the level asked for lies beyond what the draws resolve (a
    p-value of 1e-6 from 1,000 draws), a normal-type interval with the
    bootstrap standard error and the same expanded quantile.
:class:`NormalEstimate`
    A figure with a standard error and a normal (or Student-t) interval:
    the volume probe's subsample averages.
:class:`QuantileEstimate`
    A threshold at a false match rate: Woodruff's interval (1952), the
    survey method for quantiles -- the Clopper-Pearson interval of the FMR
    at the estimated threshold, read back through the impostor distances.

Every estimate is for one group; groups are independent samples of people
(each person in one group of a grouping), which is what the comparisons
assume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np
from scipy import special

__all__ = ["Estimate", "ProportionEstimate", "BootstrapEstimate", "NormalEstimate", "QuantileEstimate",
           "clustered_proportion", "pair_proportion", "bca_interval", "percentile_interval", "clopper_pearson",
           "shrunk_design_effect", "kish_effective_count", "HALDANE_CORRECTION", "UNSEEN_CLUSTERING_WEIGHT"]

#: Added to both groups' (effective) error counts, and twice to their sizes, when a ratio of
#: rates has a zero count (the Haldane-Anscombe correction): every ratio is then finite.
HALDANE_CORRECTION = 0.5
#: Draws beyond which a bootstrap quantile is not trusted: tails thinner than this many draws.
_MIN_TAIL_DRAWS = 5
#: The worst-case design effect weighs as much as this many people carrying errors against the
#: design effect the data estimate (benchmarks/coverage.py measures the choice: rates with few errors,
#: many images per person, unequal images per person).
UNSEEN_CLUSTERING_WEIGHT = 0.5


@runtime_checkable
class Estimate(Protocol):
    """What a comparison needs of a group's figure."""

    value: float

    def interval(self, confidence: float) -> tuple[float, float]:
        """The two-sided ``confidence`` interval (NaN bounds where none can be given)."""

    def for_ratio(self, other: "Estimate") -> "Estimate":
        """The estimate to put in a ratio with ``other`` (a zero rate is corrected)."""


def _alpha(confidence: float) -> float:
    return (1.0 - confidence) / 2.0


# --------------------------------------------------------------------------- proportions

@dataclass(frozen=True)
class ProportionEstimate:
    """A rate ``count / n`` with a design-based variance and the number of people behind it.

    ``variance`` is the estimated variance of the rate under people
    sampling (NaN when it cannot be estimated); ``n_clusters`` the number of
    people.  ``count`` and ``n`` may be fractional only after the
    Haldane-Anscombe correction (:meth:`for_ratio`).
    """

    count: float
    n: float
    variance: float = math.nan
    n_clusters: int | None = None
    #: The design effect if every person's trials erred together (``sum m^2 / sum m``); 1 for one
    #: trial per person.
    worst_design_effect: float = 1.0
    #: Kish's effective number of people carrying the rarer outcome (``(sum y)^2 / sum y^2``).
    outcome_people: float = math.inf
    #: Kish's effective number of people, ``(sum m)^2 / sum m^2`` (None: ``n_clusters``).
    effective_people: float | None = None

    @property
    def value(self) -> float:
        return self.count / self.n if self.n > 0 else math.nan

    @property
    def estimated_design_effect(self) -> float:
        """Estimated variance over the binomial variance, at least 1 (1 where not estimable)."""
        p = self.value
        if not (0 < p < 1) or not math.isfinite(self.variance) or self.variance <= 0:
            return 1.0
        return max(1.0, self.variance / (p * (1 - p) / self.n))

    @property
    def design_effect(self) -> float:
        """The estimated design effect, shrunk towards the worst case where few people carry errors."""
        return shrunk_design_effect(self.estimated_design_effect, self.worst_design_effect, self.outcome_people)

    @property
    def people_for_degrees_of_freedom(self) -> float | None:
        return self.effective_people if self.effective_people is not None else self.n_clusters

    def effective_n(self, confidence: float = 0.95) -> float:
        """``n / design_effect``, shrunk for few people (Korn & Graubard's degrees of freedom)."""
        n_eff = self.n / self.design_effect
        people = self.people_for_degrees_of_freedom
        if people is not None and people > 1 and self.n > 1:
            alpha = _alpha(confidence)
            # the t quantile with the images' degrees of freedom over the one with the people's
            n_eff *= degrees_of_freedom_factor(self.n, people, alpha)
        # People are the floor: the worst case counts each person once and needs no variance estimate
        # (unless the data show more dependence than it, as pairs sharing a person can).
        floor = self.n / max(1.0, self.worst_design_effect, self.estimated_design_effect)
        return min(max(n_eff, floor), self.n)

    def interval(self, confidence: float) -> tuple[float, float]:
        """Clopper-Pearson on the effective sample size (errs on the wide side, never the narrow)."""
        if not self.n > 0:
            return math.nan, math.nan
        n_eff = self.effective_n(confidence)
        return clopper_pearson(self.value * n_eff, n_eff, confidence)

    def for_ratio(self, other: Estimate) -> Estimate:
        if isinstance(other, ProportionEstimate) and (self.count == 0 or other.count == 0):
            return self.corrected()
        return self

    def corrected(self) -> "ProportionEstimate":
        """The Haldane-Anscombe corrected rate: 0.5 more errors in 1 more trial, on the effective scale.

        The design effect is kept: the correction adds half an effective
        error, so the count and size grow by ``0.5 * deff`` and ``deff``.
        """
        deff = self.design_effect
        p = (self.count + HALDANE_CORRECTION * deff) / (self.n + 2 * HALDANE_CORRECTION * deff)
        n = self.n + 2 * HALDANE_CORRECTION * deff
        variance = p * (1 - p) / n * deff
        # the corrected rate keeps the design effect it was corrected with
        return ProportionEstimate(p * n, n, variance, self.n_clusters, worst_design_effect=deff,
                                  outcome_people=0.0, effective_people=self.effective_people)


def shrunk_design_effect(estimated: float, worst: float, outcome_people: float,
                         weight: float = UNSEEN_CLUSTERING_WEIGHT) -> float:
    """``(k * estimated + w * worst) / (k + w)``: the data's design effect, trusted as far as ``k`` allows.

    ``k`` is the effective number of people carrying the rarer outcome.
    The cluster-robust variance is estimated from those people alone: with
    one erring person it reads about 1 even when errors come in clusters,
    and with none it cannot be estimated at all.  The worst case ``worst``
    (every person's trials erring together) then holds, and gives way to
    the estimate as the errors spread over more people.
    """
    worst = max(1.0, float(worst))
    estimated = max(1.0, float(estimated))
    if not math.isfinite(outcome_people):
        return estimated
    k = max(0.0, float(outcome_people))
    return (k * estimated + weight * worst) / (k + weight)


def kish_effective_count(weights: np.ndarray) -> float:
    """Kish's effective number of units, ``(sum w)^2 / sum w^2`` (0 where every weight is 0)."""
    w = np.asarray(weights, dtype=np.float64)
    total_sq = float(np.sum(w ** 2))
    return float(w.sum()) ** 2 / total_sq if total_sq > 0 else 0.0


def degrees_of_freedom_factor(n: float, n_clusters: float, alpha: float) -> float:
    """Korn & Graubard's shrinkage of ``n_eff`` for few people: ``(t_{n-1} / t_{people-1})^2``.

    ``n_clusters`` may be fractional: Kish's effective number of people.
    """
    if n <= 1 or n_clusters <= 1:
        return 1.0
    t_people = special.stdtrit(n_clusters - 1, 1 - alpha)
    if not t_people > 0:   # a zero-width level (alpha = 0.5, as a p-value search may ask): nothing to shrink
        return 1.0
    return float((special.stdtrit(n - 1, 1 - alpha) / t_people) ** 2)


def clopper_pearson(x: float, n: float, confidence: float) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of ``x`` successes in ``n`` trials; fractional counts allowed."""
    alpha = _alpha(confidence)
    lo = 0.0 if x <= 0 else float(special.betaincinv(x, n - x + 1, alpha))
    hi = 1.0 if x >= n else float(special.betaincinv(x + 1, n - x, 1 - alpha))
    return lo, hi


def clustered_proportion(sums: np.ndarray, counts: np.ndarray) -> ProportionEstimate:
    """A rate from per-person error counts ``sums`` and trial counts ``counts``.

    The variance is the usual cluster-robust (linearised ratio) variance
    ``G/(G-1) * sum_i (y_i - p m_i)^2 / (sum m)^2`` over the ``G`` people;
    the worst design effect is ``sum m^2 / sum m`` and the people carrying
    the rarer outcome are counted by Kish (see :func:`shrunk_design_effect`).
    """
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    n = float(counts.sum())
    total = float(sums.sum())
    g = len(sums)
    variance = math.nan
    if n > 0 and g > 1:
        p = total / n
        variance = g / (g - 1) * float(np.sum((sums - p * counts) ** 2)) / n ** 2
    if n == 0:
        return ProportionEstimate(total, n, variance, g)
    outcome = min(kish_effective_count(sums), kish_effective_count(counts - sums))
    return ProportionEstimate(total, n, variance, g, worst_design_effect=float(np.sum(counts ** 2)) / n,
                              outcome_people=outcome, effective_people=kish_effective_count(counts))


def pair_proportion(errors: np.ndarray, person_a: np.ndarray, person_b: np.ndarray) -> ProportionEstimate:
    """A rate over pairs of two people each (impostor pairs: the FMR), people sampled.

    A pair shares its people with every other pair of theirs, so its
    errors are dependent both ways.  The variance is the dyadic
    cluster-robust one (Fafchamps & Gubert 2007; Aronow, Samii & Assenova
    2015): with ``e`` the centred errors and ``S_k`` the sum of ``e`` over
    the pairs of person ``k``, ``V = G/(G-1) * (sum_k S_k^2 - sum_pairs e^2) / N^2``,
    which counts each pair's own variance once and each two pairs sharing a
    person once.  (A people bootstrap that weighs a pair ``w_a * w_b``
    counts the pair's own variance three times: its intervals are about
    sqrt(3) = 1.7x too wide where the pair term dominates, as for rare
    false matches.)  As for images, the design effect is shrunk towards
    a worst case where few units carry the rarer outcome; for pairs the
    unit is the pair of people (every image pair of two people erring
    together: ``sum w^2 / sum w`` with ``w`` the image pairs of a pair of
    people), so one image per person leaves it at 1.
    """
    e = np.asarray(errors, dtype=np.float64)
    n = float(len(e))
    if n == 0:
        return ProportionEstimate(0.0, 0.0)
    codes, _ = _factorize(np.concatenate([person_a, person_b]))
    a, b = codes[: len(e)], codes[len(e):]
    g = int(codes.max()) + 1
    p = float(e.mean())
    centred = e - p
    per_person = np.bincount(a, weights=centred, minlength=g) + np.bincount(b, weights=centred, minlength=g)
    variance = math.nan
    if g > 1:
        variance = g / (g - 1) * (float(np.sum(per_person ** 2)) - float(np.sum(centred ** 2))) / n ** 2
    # Person pairs are the floor: all image pairs of two people may err together.
    lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    _, dyad = np.unique(lo * g + hi, return_inverse=True)
    pairs_of_dyad = np.bincount(dyad.ravel()).astype(np.float64)
    errors_of_dyad = np.bincount(dyad.ravel(), weights=e)
    outcome = min(kish_effective_count(errors_of_dyad), kish_effective_count(pairs_of_dyad - errors_of_dyad))
    pairs_of_person = np.bincount(a, minlength=g) + np.bincount(b, minlength=g)
    return ProportionEstimate(float(e.sum()), n, variance, g,
                              worst_design_effect=float(np.sum(pairs_of_dyad ** 2)) / n,
                              outcome_people=outcome, effective_people=kish_effective_count(pairs_of_person))


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniques, codes = np.unique(values, return_inverse=True)
    return codes.ravel(), uniques


# --------------------------------------------------------------------------- bootstrap

def _quantile(replicates: np.ndarray, levels) -> np.ndarray:
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return np.full(np.shape(levels), np.nan)
    # Linear interpolation misbehaves next to +inf (inf * 0 = nan): use the
    # empirical quantile when a draw is infinite.
    method = "linear" if np.all(np.isfinite(reps)) else "inverted_cdf"
    return np.quantile(reps, levels, method=method)


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of the replicates (NaN draws ignored)."""
    alpha = _alpha(confidence)
    lo, hi = _quantile(replicates, [alpha, 1 - alpha])
    return float(lo), float(hi)


def expanded_z(confidence: float, n_people: float) -> float:
    """The normal quantile a bootstrap interval of ``n_people`` people is read at.

    A bootstrap of ``G`` people underestimates the spread by ``(G - 1) / G``
    and, like a normal interval, ignores that the spread itself is estimated:
    at 20 people its 95% intervals cover about 90%.  Hesterberg's expanded
    percentile interval corrects both, reading the draws at
    ``z' = sqrt(G / (G - 1)) * t_{G-1}`` instead of ``z`` (2.15 instead of
    1.96 at 20 people, 1.99 at 100).  ``n_people`` may be Kish's
    effective number of people (fractional).

    Two or three people are where the correction matters most, not least:
    their spread is estimated from one or two degrees of freedom, and the
    normal quantile there made whole-run false findings (a 2-person
    intersection read at z gave p <= 1e-4 several times as often as
    nominal).  One person or fewer has no spread to read: infinity, so no
    interval and no p-value.  Between one and two effective people (one
    holding nearly every image) the quantile is that of a t with less than
    one degree of freedom: very wide, as the data are.
    """
    alpha = _alpha(confidence)
    if not n_people > 1:
        return math.inf
    return float(math.sqrt(n_people / (n_people - 1)) * special.stdtrit(n_people - 1, 1 - alpha))


def bca_interval(replicates: np.ndarray, estimate: float, jackknife: np.ndarray,
                 confidence: float, effective_people: float | None = None) -> tuple[float, float] | None:
    """BCa interval from bootstrap replicates and leave-one-person-out jackknife values.

    Read at the expanded quantile of :func:`expanded_z` with
    ``effective_people`` (default: one per jackknife value).  None where BCa is undefined or degenerate: every draw equal, every draw
    on one side of the estimate, fewer than three jackknife values, or
    levels the draws cannot resolve; the caller then uses a normal interval.
    """
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    jack = np.asarray(jackknife, dtype=np.float64)
    jack = jack[np.isfinite(jack)]
    if reps.size == 0 or not np.isfinite(estimate) or np.ptp(reps) == 0 or jack.size < 3:
        return None
    # Mid-rank bias correction: ties with the estimate count half.
    p0 = (np.sum(reps < estimate) + 0.5 * np.sum(reps == estimate)) / reps.size
    if not 0 < p0 < 1:
        return None
    z0 = special.ndtri(p0)
    d = jack.mean() - jack
    denom = 6.0 * np.sum(d ** 2) ** 1.5
    a = np.sum(d ** 3) / denom if denom > 0 else 0.0
    people = jack.size if effective_people is None else min(jack.size, effective_people)
    z = expanded_z(confidence, people) * np.array([-1.0, 1.0])
    levels = special.ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))
    tail = _MIN_TAIL_DRAWS / reps.size
    if not np.all(np.isfinite(levels)) or levels[0] < tail or levels[1] > 1 - tail:
        return None
    lo, hi = _quantile(reps, levels)
    return float(lo), float(hi)


@dataclass(frozen=True)
class BootstrapEstimate:
    """A figure with people-bootstrap replicates and its leave-one-person-out jackknife."""

    value: float
    replicates: np.ndarray = field(repr=False)
    jackknife: np.ndarray = field(repr=False)
    #: Kish's effective number of people (None: one per finite jackknife value).
    effective_people: float | None = None

    @property
    def standard_error(self) -> float:
        """The bootstrap standard error, or the jackknife's where every draw is equal."""
        reps = self.replicates[np.isfinite(self.replicates)]
        if reps.size > 1 and np.ptp(reps) > 0:
            return float(np.std(reps, ddof=1))
        jack = self.jackknife[np.isfinite(self.jackknife)]
        g = jack.size
        if g > 1:
            return float(math.sqrt((g - 1) / g * np.sum((jack - jack.mean()) ** 2)))
        return math.nan

    def interval(self, confidence: float) -> tuple[float, float]:
        if not math.isfinite(self.value):
            return math.nan, math.nan
        bca = bca_interval(self.replicates, self.value, self.jackknife, confidence, self._people())
        if bca is not None:
            return bca
        g = self._people()
        q = expanded_z(confidence, g)
        se = self.standard_error
        return (self.value - q * se, self.value + q * se) if math.isfinite(se) else (math.nan, math.nan)

    def _people(self) -> float:
        jack = int(np.isfinite(self.jackknife).sum())
        return jack if self.effective_people is None else min(jack, self.effective_people)

    def for_ratio(self, other: Estimate) -> Estimate:
        return self


def _normal_interval(value: float, se: float, confidence: float, df: float | None = None) -> tuple[float, float]:
    if not (math.isfinite(value) and math.isfinite(se)):
        return math.nan, math.nan
    alpha = _alpha(confidence)
    q = special.stdtrit(df, 1 - alpha) if df is not None else special.ndtri(1 - alpha)
    return value - q * se, value + q * se


@dataclass(frozen=True)
class NormalEstimate:
    """A figure with a standard error; ``df`` for a Student-t interval (None: normal)."""

    value: float
    standard_error: float
    df: float | None = None

    def interval(self, confidence: float) -> tuple[float, float]:
        return _normal_interval(self.value, self.standard_error, confidence, self.df)

    def for_ratio(self, other: Estimate) -> Estimate:
        return self


# --------------------------------------------------------------------------- quantiles

@dataclass(frozen=True)
class QuantileEstimate:
    """The threshold at a false match rate, with Woodruff's interval.

    ``at_threshold`` is the FMR's :class:`ProportionEstimate` at the
    estimated threshold (its design effect carries the people clustering);
    ``quantile`` maps a rate back to a threshold (the same rule that gave
    ``value``).  The interval is ``[quantile(lo), quantile(hi)]`` with
    ``[lo, hi]`` the interval of the FMR at the target rate on the FMR's
    effective sample size: the thresholds whose FMR the data cannot tell
    from the target.
    """

    value: float
    target_rate: float
    at_threshold: ProportionEstimate
    quantile: Callable[[float], float] = field(repr=False)

    def interval(self, confidence: float) -> tuple[float, float]:
        n = self.at_threshold.n
        if not math.isfinite(self.value) or not n > 0:
            return math.nan, math.nan
        # The design effect measured at the threshold carries the people clustering over.
        n_eff = self.at_threshold.effective_n(confidence)
        lo_rate, hi_rate = clopper_pearson(self.target_rate * n_eff, n_eff, confidence)
        return float(self.quantile(lo_rate)), float(self.quantile(hi_rate))

    def for_ratio(self, other: Estimate) -> Estimate:
        return self
