"""Pairwise comparisons between groups: differences and ratios with intervals and p-values.

Why pairs, not the largest minus the smallest
---------------------------------------------
A "max gap" (largest group minus smallest) is biased upwards whenever the
groups are close: even four identical groups show a gap, and a percentile
interval of the bootstrapped max never reaches 0, so a fair model fails a
gate on it.  A difference between two named groups has no such problem: its
interval covers 0 when they are equal, at the stated rate.  So every pair
of groups of a grouping gets its difference (``gap``) and, for figures on a
positive scale, its ratio (``ratio``), each oriented so that it is >= 0
(>= 1): the group with the higher estimate first.  The pair with the
largest estimate is marked ``worst_pair``; it is reported, not re-tested.

Intervals: MOVER (method of variance estimates recovery; Zou & Donner 2008
for differences, on the log scale for ratios), which builds the interval of
a difference of two independent estimates from their own intervals::

    L = d - sqrt((v1 - l1)^2 + (u2 - v2)^2)
    U = d + sqrt((u1 - v1)^2 + (v2 - l2)^2)

so each group brings the interval that holds for it (exact Clopper-Pearson
on effective sample sizes for rates, BCa for means, normal for the volume's
subsample means), and the result inherits their coverage.  (With Wilson
intervals for the rates this would be Newcombe's hybrid score method; the
exact intervals make it err slightly wide instead of slightly narrow.)  A ratio involving a zero rate is computed for both
groups with the Haldane-Anscombe correction (half an error more, one trial
more, :data:`probes.estimates.HALDANE_CORRECTION`), so that every ratio is
finite and none is dropped.

p-values: the interval inverted, i.e. the largest ``alpha`` at which the
``1 - alpha`` interval still contains "no difference" (0, or 1 for a
ratio).  The p-value and the interval therefore always agree (p < 0.05
exactly when the 95% interval excludes no difference).  p-values below
:data:`MIN_P_VALUE` are written as that floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from probes.estimates import Estimate

__all__ = ["Comparison", "difference", "ratio", "compare", "MIN_P_VALUE", "COMPARISON_KINDS"]

#: Smallest p-value reported (the search for the crossing level stops there).
MIN_P_VALUE = 1e-12
COMPARISON_KINDS = ("gap", "ratio")
_BISECTION_STEPS = 32


@dataclass(frozen=True)
class Comparison:
    """One pair: ``value`` = high - low (or high / low), its interval and p-value.

    ``high`` says which of the two inputs had the higher estimate
    (``"first"`` or ``"second"``).
    """

    value: float
    ci_low: float
    ci_high: float
    p_value: float
    high: str


def _mover_difference(a: Estimate, b: Estimate, confidence: float) -> tuple[float, float]:
    la, ua = a.interval(confidence)
    lb, ub = b.interval(confidence)
    d = a.value - b.value
    lo = d - math.sqrt((a.value - la) ** 2 + (ub - b.value) ** 2)
    hi = d + math.sqrt((ua - a.value) ** 2 + (b.value - lb) ** 2)
    return lo, hi


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def _mover_log_ratio(a: Estimate, b: Estimate, confidence: float) -> tuple[float, float]:
    la, ua = a.interval(confidence)
    lb, ub = b.interval(confidence)
    va, vb = _log(a.value), _log(b.value)
    d = va - vb
    lo = d - math.sqrt((va - _log(la)) ** 2 + (_log(ub) - vb) ** 2)
    hi = d + math.sqrt((_log(ua) - va) ** 2 + (vb - _log(lb)) ** 2)
    return lo, hi


def _p_value(bounds, null: float) -> float:
    """The largest alpha whose ``1 - alpha`` interval still contains ``null`` (bisection on log alpha)."""
    def contains(alpha: float) -> bool:
        lo, hi = bounds(1.0 - alpha)
        if math.isnan(lo) or math.isnan(hi):  # no interval at that level: nothing can be rejected
            return True
        return lo <= null <= hi

    widest, narrowest = MIN_P_VALUE, 1.0 - 1e-9  # alpha ~ 1: an interval of zero width at the estimate
    if contains(narrowest):
        return 1.0
    if not contains(widest):
        return MIN_P_VALUE
    lo, hi = math.log(widest), math.log(narrowest)  # contains(lo) holds, contains(hi) does not
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        if contains(math.exp(mid)):
            lo = mid
        else:
            hi = mid
    return float(math.exp(lo))


def _all_finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def difference(first: Estimate, second: Estimate, confidence: float, *, with_p_value: bool = True) -> Comparison:
    """``high - low`` of two independent estimates, MOVER interval, p-value for equality."""
    if not _all_finite(first.value, second.value):
        return Comparison(math.nan, math.nan, math.nan, math.nan, "first")
    a, b, high = (first, second, "first") if first.value >= second.value else (second, first, "second")
    lo, hi = _mover_difference(a, b, confidence)
    if not _all_finite(lo, hi):
        return Comparison(a.value - b.value, math.nan, math.nan, math.nan, high)
    p = _p_value(lambda c: _mover_difference(a, b, c), 0.0) if with_p_value else math.nan
    return Comparison(a.value - b.value, lo, hi, p, high)


def ratio(first: Estimate, second: Estimate, confidence: float, *, with_p_value: bool = True) -> Comparison:
    """``high / low`` of two independent positive estimates, log-MOVER interval, p-value for 1.

    NaN when either estimate is not positive (a ratio of distances that can
    be negative means nothing); rates at zero are corrected first.
    """
    a0, b0 = first.for_ratio(second), second.for_ratio(first)
    if not _all_finite(a0.value, b0.value) or a0.value <= 0 or b0.value <= 0:
        return Comparison(math.nan, math.nan, math.nan, math.nan, "first")
    a, b, high = (a0, b0, "first") if a0.value >= b0.value else (b0, a0, "second")
    lo, hi = _mover_log_ratio(a, b, confidence)
    value = a.value / b.value
    if math.isnan(lo) or math.isnan(hi):
        return Comparison(value, math.nan, math.nan, math.nan, high)
    p = _p_value(lambda c: _mover_log_ratio(a, b, c), 0.0) if with_p_value else math.nan
    return Comparison(value, math.exp(lo), math.exp(hi), p, high)


def compare(first: Estimate, second: Estimate, kind: str, confidence: float) -> Comparison:
    if kind == "gap":
        return difference(first, second, confidence)
    if kind == "ratio":
        return ratio(first, second, confidence)
    raise ValueError(f"kind={kind!r}, must be one of {COMPARISON_KINDS}.")


def pairs_of(labels: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair of labels, in the order given."""
    labels = list(labels)
    return [(labels[i], labels[j]) for i in range(len(labels)) for j in range(i + 1, len(labels))]

