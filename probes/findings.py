"""Which disparities are findings: p-values corrected for every comparison of the run.

A run compares every pair of groups on every metric of every grouping:
hundreds of comparisons, of which some would show p < 0.05 by chance alone
if the model were perfectly fair.  So a disparity is a *finding* only if it
survives a correction over all of them, done once, after every probe ran:

``holm`` (the default)
    Holm's step-down procedure: the chance of even one false finding in the
    whole report stays below ``alpha`` (family-wise error), whatever the
    dependence between the comparisons.
``bh``
    Benjamini-Hochberg (``scipy.stats.false_discovery_control``): among the
    findings, the expected share of false ones stays below ``alpha`` (false
    discovery rate; valid for the positively dependent comparisons here).
    More findings than Holm, each less certain.

A disparity under a blocking flag (:data:`audit.results.BLOCKING_FLAGS`:
not estimable, no signal, unstable) measures something other than its name
says: it is left out of the family, gets no adjusted p-value and is never a
finding.  So is a disparity without a p-value (no interval).
"""

from __future__ import annotations

import math
from typing import Iterable, MutableSequence

import numpy as np
from scipy import stats

from audit.errors import InputError
from audit.results import CORRECTIONS, Disparity, blocking_flags

__all__ = ["mark_findings", "adjust_p_values", "DEFAULT_CORRECTION", "DEFAULT_ALPHA"]

DEFAULT_CORRECTION = "holm"
#: Findings are disparities whose adjusted p-value is at most this (1 - the intervals' 95%).
DEFAULT_ALPHA = 0.05


def check_correction(method: str) -> str:
    if method not in CORRECTIONS:
        raise InputError(f"correction={method!r}, must be one of {', '.join(CORRECTIONS)} (Holm: family-wise "
                         "error; bh: Benjamini-Hochberg false discovery rate).")
    return method


def adjust_p_values(p_values: Iterable[float], method: str = DEFAULT_CORRECTION) -> np.ndarray:
    """Holm- or Benjamini-Hochberg-adjusted p-values, in the order given."""
    method = check_correction(method)
    p = np.asarray(list(p_values), dtype=np.float64)
    if p.size == 0:
        return p
    if method == "bh":
        return stats.false_discovery_control(p, method="bh")
    order = np.argsort(p, kind="stable")
    m = p.size
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def _eligible(d: Disparity) -> bool:
    return (d.p_value is not None and math.isfinite(d.p_value) and not blocking_flags(d.flags)
            and d.value is not None and math.isfinite(d.value))


def mark_findings(disparities: MutableSequence[Disparity], method: str = DEFAULT_CORRECTION, *,
                  alpha: float = DEFAULT_ALPHA) -> dict:
    """Set ``p_adjusted`` and ``finding`` on every disparity; return a summary for results.json.

    Called once per run, after every probe (and every flag) is in.  The
    summary says the method, ``alpha``, how many comparisons were corrected
    for, how many were left out (blocked or without a p-value) and how many
    findings survived.
    """
    method = check_correction(method)
    if not 0 < alpha < 1:
        raise InputError(f"alpha={alpha!r}, must be between 0 and 1 (e.g. 0.05).")
    family = [d for d in disparities if _eligible(d)]
    adjusted = adjust_p_values([d.p_value for d in family], method)
    for d in disparities:
        d.p_adjusted, d.finding = None, False
    for d, p in zip(family, adjusted):
        d.p_adjusted = float(p)
        d.finding = bool(p <= alpha)
    blocked = sum(1 for d in disparities if blocking_flags(d.flags))
    return {"method": method, "alpha": alpha, "n_comparisons": len(family), "n_blocked": blocked,
            "n_without_p_value": sum(1 for d in disparities if not _eligible(d) and not blocking_flags(d.flags)),
            "n_findings": sum(1 for d in family if d.finding)}
