"""Intervals for the attributes probe's two figures that are not plain rates.

Accuracy is a rate (:func:`probes.stats.group_figures` on a 0/1 column).
Two figures are not, and both are built from rates whose exact,
people-clustered intervals (:func:`probes.estimates.clustered_proportion`)
the tool already trusts, by MOVER (the method of variance estimates
recovery, Zou & Donner 2008), as :mod:`probes.compare` builds differences:

*Balanced accuracy* is the mean over the ``K`` classes of each class's
recall.  A person has one label, so the classes' recalls rest on disjoint
sets of people: independent rates, whose mean has the MOVER interval
``m - sqrt(sum (r_k - l_k)^2) / K`` to ``m + sqrt(sum (u_k - r_k)^2) / K``
(clipped to [0, 1]), each ``[l_k, u_k]`` Wilson's interval on the class's
effective number of images (people-clustered, as for every rate).  With
the exact intervals there it covered 97.5% at 100 people (2,000
simulations); with Wilson's 95.0-95.7% at 8, 100 and 500 people, 97.2%
at 20.
Unlike a people bootstrap, it never has zero width where every image is read
correctly (a bootstrap of 100 correct reads draws 100% every time).

*Fidelity* is the share of a group's reconstructions read as the source's
label over the same share of the same sources' real embeddings: a ratio of
two rates, with the log-MOVER interval of a ratio.  The two rates are
measured on the same people and correlate (a face the reader misreads tends
to be misread in its reconstruction too), so the interval takes their
correlation ``r``, estimated from the people's paired counts (the
cluster-robust covariance of the two rates), as MOVER does for correlated
estimates (Zou & Donner 2008): ``L = d - sqrt(a^2 + b^2 - 2 r a b)`` with
``a``, ``b`` the two rates' half-widths on the log scale.  Without that
term it would cover about 98-99% where the reads are paired, not 95%.  A
reconstruction rate of 0 has the lower bound 0 and the upper bound
``u_recon / l_real``.

``benchmarks/coverage.py`` measures their coverage (the "attribute ..." kinds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from probes.estimates import Estimate, ProportionEstimate, clustered_proportion
from probes.stats import per_person

__all__ = ["MeanOfRates", "RatioOfRates", "balanced_accuracy_estimate", "fidelity_estimate"]


@dataclass(frozen=True)
class MeanOfRates:
    """The mean of independent rates (a balanced accuracy), with the MOVER interval of a mean."""

    parts: tuple[ProportionEstimate, ...]

    @property
    def value(self) -> float:
        values = [p.value for p in self.parts]
        return float(np.mean(values)) if values else math.nan

    def interval(self, confidence: float) -> tuple[float, float]:
        if not self.parts or not math.isfinite(self.value):
            return math.nan, math.nan
        bounds = [wilson_interval(p.value, p.effective_n(confidence), confidence) for p in self.parts]
        if not all(math.isfinite(lo) and math.isfinite(hi) for lo, hi in bounds):
            return math.nan, math.nan
        k = len(self.parts)
        below = math.sqrt(sum((p.value - lo) ** 2 for p, (lo, _) in zip(self.parts, bounds))) / k
        above = math.sqrt(sum((hi - p.value) ** 2 for p, (_, hi) in zip(self.parts, bounds))) / k
        return max(0.0, self.value - below), min(1.0, self.value + above)

    def for_ratio(self, other: Estimate) -> Estimate:
        return self


@dataclass(frozen=True)
class RatioOfRates:
    """``numerator / denominator`` of two rates (a fidelity), with the log-MOVER interval of a ratio."""

    numerator: ProportionEstimate
    denominator: ProportionEstimate
    #: The correlation of the two rates over people (0 where it cannot be estimated).
    correlation: float = 0.0

    @property
    def value(self) -> float:
        den = self.denominator.value
        return self.numerator.value / den if math.isfinite(den) and den > 0 else math.nan

    def interval(self, confidence: float) -> tuple[float, float]:
        value = self.value
        if not math.isfinite(value):
            return math.nan, math.nan
        ln, un = self.numerator.interval(confidence)
        ld, ud = self.denominator.interval(confidence)
        if not all(math.isfinite(v) for v in (ln, un, ld, ud)) or ld <= 0:
            return math.nan, math.nan
        r, s = self.numerator.value, self.denominator.value
        if r <= 0:
            return 0.0, un / ld
        d, rho = math.log(r) - math.log(s), self.correlation
        below_n, above_d = _log_gap(r, ln), math.log(ud) - math.log(s)
        above_n, below_d = math.log(un) - math.log(r), math.log(s) - math.log(ld)
        if not math.isfinite(below_n):
            return 0.0, math.exp(d + math.sqrt(max(0.0, above_n ** 2 + below_d ** 2 - 2 * rho * above_n * below_d)))
        log_lo = d - math.sqrt(max(0.0, below_n ** 2 + above_d ** 2 - 2 * rho * below_n * above_d))
        log_hi = d + math.sqrt(max(0.0, above_n ** 2 + below_d ** 2 - 2 * rho * above_n * below_d))
        return math.exp(log_lo), math.exp(log_hi)

    def for_ratio(self, other: Estimate) -> Estimate:
        return self


def wilson_interval(rate: float, n: float, confidence: float) -> tuple[float, float]:
    """Wilson's score interval of a rate on ``n`` (effective) trials; NaN where ``n`` is not positive.

    The parts of a balanced accuracy take it instead of the exact interval:
    MOVER adds the parts' half-widths in quadrature, so the exact
    intervals' excess width adds up too (97.5% coverage at 100 people with
    them, see ``benchmarks/coverage.py``); Wilson's sits at about the
    nominal level and, unlike the Wald interval, never has zero width at a
    rate of 0 or 1 (Newcombe 1998 builds differences of rates the same way).
    """
    if not (n > 0 and math.isfinite(rate)):
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    denominator = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(max(0.0, rate * (1 - rate) / n + z * z / (4 * n * n)))
    return max(0.0, centre - half), min(1.0, centre + half)


def _log_gap(value: float, low: float) -> float:
    return math.inf if low <= 0 else math.log(value) - math.log(low)


def _rate(values: np.ndarray, persons: np.ndarray) -> ProportionEstimate:
    sums, counts = per_person(np.asarray(values, dtype=np.float64), np.asarray(persons, dtype=object))
    return clustered_proportion(sums, counts)


def balanced_accuracy_estimate(correct: np.ndarray, classes: Sequence, persons: Sequence) -> MeanOfRates:
    """The mean over the classes present of each class's share read correctly (``correct`` 0/1 per image)."""
    correct = np.asarray(correct, dtype=np.float64)
    labels = pd.Series(np.asarray(classes, dtype=object))
    persons = np.asarray(persons, dtype=object)
    parts = tuple(_rate(correct[(labels == c).to_numpy()], persons[(labels == c).to_numpy()])
                  for c in pd.unique(labels))
    return MeanOfRates(parts)


def fidelity_estimate(recon_correct: np.ndarray, real_correct: np.ndarray, persons: Sequence) -> RatioOfRates:
    """Reconstructions read as the source's label over real embeddings read so, on the same rows.

    Row ``i`` is one reconstruction (one generator, one source image):
    ``recon_correct[i]`` 1 if the reader reads it as the source's label,
    ``real_correct[i]`` 1 if it reads the source's real embedding so.
    """
    persons = np.asarray(persons, dtype=object)
    return RatioOfRates(_rate(recon_correct, persons), _rate(real_correct, persons),
                        correlation=paired_correlation(recon_correct, real_correct, persons))


def paired_correlation(first: np.ndarray, second: np.ndarray, persons: Sequence) -> float:
    """The correlation of two rates measured on the same rows, people as the unit (0 if not estimable).

    From the cluster-robust (co)variances of the two ratio estimators: with
    ``e_i = y_i - p m_i`` and ``f_i = z_i - q m_i`` per person, ``sum e f /
    sqrt(sum e^2 sum f^2)``.
    """
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    keep = ~(np.isnan(first) | np.isnan(second))
    codes, _ = pd.factorize(pd.Series(np.asarray(persons, dtype=object)[keep]), sort=False)
    if codes.size < 2:
        return 0.0
    y = np.bincount(codes, weights=first[keep])
    z = np.bincount(codes, weights=second[keep])
    m = np.bincount(codes).astype(np.float64)
    e, f = y - y.sum() / m.sum() * m, z - z.sum() / m.sum() * m
    scale = math.sqrt(float(np.sum(e ** 2) * np.sum(f ** 2)))
    return float(np.clip(np.sum(e * f) / scale, -1.0, 1.0)) if scale > 0 else 0.0
