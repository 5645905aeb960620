"""Is a difference between groups the target's, or one generator's?  Judging it across generator seeds.

An inversion figure is measured through a generator, and a generator
trained from another seed draws some group a little better or worse: a
generator x group artefact that no people bootstrap sees (the people are
the same under every seed).  Two rules keep such an artefact from
becoming a finding when the run trains ``K >= 2`` generators
(``--generator-seeds K``):

* the worst group must be worse under every generator, or the difference
  is flagged ``unstable`` (never a finding);
* the spread of the per-generator differences is the artefact's size, so
  it is added to the people's variance of the difference (a random-effects
  test with Welch-Satterthwaite degrees of freedom; on the log scale for a
  ratio): the disparity's interval widens by it and its ``p_value``
  becomes the larger of the people's p-value and this one
  (``p_value_generators``).

With one generator (the default) neither rule can run: an artefact as
large as the figure's standard error then passes as a finding in about
one comparison in ten at 0.05, which ``benchmarks/generator_artefacts.py``
measures and the report states; three generators bring it under 5%.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

from audit.results import FLAG_UNSTABLE, Disparity

__all__ = ["across_generators_test", "judge_across_generators"]


def _z(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2))


def across_generators_test(value: float, ci_low: float, ci_high: float, differences: Sequence[float],
                           kind: str = "gap", confidence: float = 0.95) -> tuple[float, float, float] | None:
    """The disparity's interval and p-value with the generators' own spread added: ``(low, high, p)``.

    ``value`` and ``[ci_low, ci_high]`` are the disparity over every
    generator's samples, whose interval counts the people only;
    ``differences`` the same difference under each generator (worst minus
    best, or over it for a ratio, tested on the log scale).  Their spread
    ``s`` is the generator x group artefact (the people are the same under
    every seed), so the difference's variance is the people's plus
    ``s^2 / K``: a random-effects test with Welch-Satterthwaite degrees of
    freedom.  None with fewer than two finite differences (one generator).
    """
    x = np.asarray(differences, dtype=np.float64)
    log = kind == "ratio"
    with np.errstate(divide="ignore", invalid="ignore"):
        if log:
            x, value, ci_low, ci_high = np.log(x), math.log(value), math.log(ci_low), math.log(ci_high)
    x = x[np.isfinite(x)]
    if x.size < 2 or not all(map(math.isfinite, (value, ci_low, ci_high))):
        return None
    z = _z(confidence)
    people_se = max(ci_high - ci_low, 0.0) / (2 * z)
    between = float(np.var(x, ddof=1)) / x.size
    total = people_se ** 2 + between
    null = 0.0
    if total <= 0:
        return None
    df = total ** 2 / ((between ** 2) / (x.size - 1) + 1e-300) if between > 0 else math.inf
    t = abs(value - null) / math.sqrt(total)
    p = float(2 * stats.t.sf(t, df)) if math.isfinite(df) else float(2 * stats.norm.sf(t))
    q = float(stats.t.ppf(0.5 + confidence / 2, df)) if math.isfinite(df) else z
    extra = q * math.sqrt(between)
    low = value - math.sqrt((value - ci_low) ** 2 + extra ** 2)
    high = value + math.sqrt((ci_high - value) ** 2 + extra ** 2)
    if log:
        low, high = math.exp(low), math.exp(high)
    return low, high, p


def judge_across_generators(d: Disparity, worst: Sequence[float], best: Sequence[float],
                            better: str | None, confidence: float = 0.95) -> None:
    """Flag ``d`` unstable, and widen its interval and p-value by the generators' spread, from each
    generator's figure of its worst and best group."""
    w = np.asarray(worst, dtype=np.float64)
    b = np.asarray(best, dtype=np.float64)
    gap = w - b
    worse = gap < 0 if better == "higher" else gap > 0
    if not bool(np.all(worse)) and FLAG_UNSTABLE not in d.flags:
        d.flags.append(FLAG_UNSTABLE)
    if d.ci_low is None or d.ci_high is None:
        return
    # the disparity is oriented higher-first: so are the per-generator differences
    high, low = (w, b) if better != "higher" else (b, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        differences = high / low if d.kind == "ratio" else high - low
    judged = across_generators_test(d.value, d.ci_low, d.ci_high, differences, d.kind, confidence)
    if judged is None:
        return
    d.ci_low, d.ci_high, d.p_value_generators = judged
    if d.p_value is not None:
        d.p_value = max(d.p_value, d.p_value_generators)
