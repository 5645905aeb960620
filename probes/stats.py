"""Per-group figures with intervals that resample people, disparities, permutation test.

Why people, not images
----------------------
Images of one person are not independent: two photos of the same face err
together.  Treating 5,000 images of 300 people as 5,000 independent draws
gives intervals that are far too narrow.  Every interval here is a *cluster
bootstrap*: values are first added up per person (``sum`` and number of
images), then people are drawn with replacement, and the figure of a draw is
the ratio of the drawn sums (the mean over the drawn people's images).  The
unit of sampling, and the ``n_people`` beside every figure, is the person.

Groups are resampled independently of one another (a stratified bootstrap:
each group keeps its own number of people in every draw).  Replicate ``b``
of every group of a grouping is therefore a joint draw, and a disparity
(max/min ratio, max gap, ...) computed on replicate ``b`` of each group is a
replicate of the disparity: that is where disparity intervals come from.

Intervals
---------
Group figures get BCa intervals (bias-corrected and accelerated, Efron 1987)
by default: their acceleration uses the leave-one-person-out jackknife of the
ratio estimator, which is exact and O(people), so a group of 20,000 people
costs no more than its draws.  We use our own vectorised draws rather than
``scipy.stats.bootstrap`` because the disparities need the very same joint
draws for every group, which scipy cannot share between calls; a test checks
that the intervals agree with ``scipy.stats.bootstrap(..., paired=True,
method="BCa")`` on per-person sums.  Where BCa is degenerate (every draw
equal, e.g. a rate of 0 or a constant value; or every draw on one side of
the estimate) the percentile interval is used, and where it too is
degenerate the interval is the point ``[value, value]``.  Disparities get
percentile intervals.  An interval needs at least two people: a group of one
person gets ``NaN`` bounds.

How they depend on sample size: the width of an interval shrinks roughly
like ``1/sqrt(n_people)`` (not ``1/sqrt(n_images)``); a figure on a few
people, or a rate resting on a few errors, has an interval that is wide and
whose coverage is below the nominal 95%.  Such figures carry flags
(:data:`audit.results.FLAG_SMALL_GROUP`, :data:`audit.results.FLAG_FEW_ERRORS`).
"""

from __future__ import annotations

import math
from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special

from audit.errors import InputError
from audit.results import (
    ALL,
    DISPARITY_KINDS,
    FLAG_FEW_ERRORS,
    FLAG_SMALL_GROUP,
    FLAG_UNDEFINED,
    Disparity,
    Figure,
    group_label,
    grouping_name,
)

#: Fewer people than this in a group flags its figures ``small_group``.
#: 30 is the usual rule of thumb for a bootstrap or normal interval to be
#: near its nominal coverage; the simulation in tests/test_stats.py shows
#: coverage is about right from a few dozen people on.
DEFAULT_MIN_PEOPLE = 30
#: A rate resting on fewer errors than this is flagged ``few_errors``
#: (NIST FRVT's "rule of 30": with 30 errors the 90% interval of a rate is
#: about +-30% of it).
DEFAULT_MIN_ERRORS = 30
DEFAULT_N_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_DISPARITY_KINDS = ("max_min_ratio", "max_gap")
INTERVAL_METHODS = ("bca", "percentile")
KINDS = ("mean", "rate")
BETTER = ("lower", "higher", None)
#: Draws are made in chunks of about this many person weights, to bound memory.
_CHUNK_ELEMENTS = 2_000_000

GROUPINGS_MESSAGE = ("groupings={!r}, must be a list of attribute lists such as "
                     "[['race'], ['gender'], ['race', 'gender']].")
MISSING_COLUMN_MESSAGE = ("The samples have no column {!r} (needed as {}). Columns present: {}. "
                          "Check the --group-by attributes and the dataset's manifest.")
RATE_VALUES_MESSAGE = ("kind='rate' needs a 0/1 column, but {!r} holds {!r}. Use kind='mean' for "
                       "other numbers.")


# --------------------------------------------------------------------------- checks

def check_groupings(groupings: Sequence[Sequence[str]]) -> list[list[str]]:
    """Return ``groupings`` as a list of lists of attribute names, or raise."""
    if isinstance(groupings, str) or not isinstance(groupings, Sequence):
        raise InputError(GROUPINGS_MESSAGE.format(groupings))
    out = []
    for g in groupings:
        if isinstance(g, str) or not isinstance(g, Sequence) or not all(isinstance(a, str) for a in g):
            raise InputError(GROUPINGS_MESSAGE.format(groupings))
        out.append(list(g))
    return out


def check_columns(samples: pd.DataFrame, columns: Mapping[str, str]) -> None:
    """``columns`` maps a column name to its role ("the person column", ...)."""
    for column, role in columns.items():
        if column not in samples.columns:
            raise InputError(MISSING_COLUMN_MESSAGE.format(column, role, list(samples.columns)))


def check_confidence(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise InputError(f"confidence={confidence!r}, must be between 0 and 1 (e.g. 0.95).")
    return float(confidence)


def check_n_resamples(n_resamples: int, name: str = "n_resamples") -> int:
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise InputError(f"{name}={n_resamples!r}, must be a whole number >= 1 (e.g. 1000).")
    return int(n_resamples)


def check_better(better: str | None) -> str | None:
    if better not in BETTER:
        raise InputError(f"better={better!r}, must be 'lower', 'higher' or None.")
    return better


def check_disparity_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = [k for k in kinds if k not in DISPARITY_KINDS]
    if unknown:
        raise InputError(f"disparity_kinds={kinds!r} holds unknown {unknown!r}; choose among "
                         f"{DISPARITY_KINDS}.")
    return kinds


# --------------------------------------------------------------------------- resampling

def resample_weights(n_people: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_resamples, n_people)`` float array: how often each person is drawn.

    Each row is one bootstrap draw of ``n_people`` people with replacement
    (a multinomial count vector summing to ``n_people``).  Weighted sums
    ``W @ x`` then give every draw's total at once; a pair of people gets
    weight ``w_a * w_b`` (see probes.verification).
    """
    if n_people == 0:
        return np.zeros((n_resamples, 0))
    idx = rng.integers(0, n_people, size=(n_resamples, n_people))
    idx += (np.arange(n_resamples) * n_people)[:, None]
    return np.bincount(idx.ravel(), minlength=n_resamples * n_people).reshape(
        n_resamples, n_people).astype(np.float64)


def ratio_replicates(sums: np.ndarray, counts: np.ndarray, *, n_resamples: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of ``sum(sums) / sum(counts)``, resampling people.

    ``sums[i]`` and ``counts[i]`` are person ``i``'s total and number of
    images.  Returns ``n_resamples`` floats (NaN where a draw has no image).
    """
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    n = len(sums)
    out = np.empty(n_resamples)
    if n == 0:
        out[:] = np.nan
        return out
    step = max(1, _CHUNK_ELEMENTS // n)
    with np.errstate(invalid="ignore", divide="ignore"):
        for start in range(0, n_resamples, step):
            stop = min(n_resamples, start + step)
            w = resample_weights(n, stop - start, rng)
            out[start:stop] = (w @ sums) / (w @ counts)
    return out


def _quantile(replicates: np.ndarray, levels) -> np.ndarray:
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return np.full(np.shape(levels), np.nan)
    # Linear interpolation misbehaves next to +inf (inf * 0 = nan): use the
    # empirical quantile when a draw is infinite (a ratio over a zero).
    method = "linear" if np.all(np.isfinite(reps)) else "inverted_cdf"
    return np.quantile(reps, levels, method=method)


def percentile_interval(replicates: np.ndarray, confidence: float = DEFAULT_CONFIDENCE
                        ) -> tuple[float, float]:
    """The central ``confidence`` interval of the replicates (NaN draws ignored)."""
    alpha = (1 - confidence) / 2
    lo, hi = _quantile(replicates, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bca_interval(replicates: np.ndarray, estimate: float, jackknife: np.ndarray,
                 confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """BCa interval from bootstrap replicates and leave-one-out jackknife values.

    Falls back to the percentile interval where BCa is undefined: all
    draws on one side of the estimate (bias correction infinite) or fewer
    than three jackknife values.
    """
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    jack = np.asarray(jackknife, dtype=np.float64)
    jack = jack[np.isfinite(jack)]
    if reps.size == 0 or not np.isfinite(estimate):
        return math.nan, math.nan
    if np.ptp(reps) == 0:
        return float(reps[0]), float(reps[0])
    # Mid-rank bias correction: ties with the estimate (common for rates)
    # count half, so a discrete statistic is not pushed to one side.
    p0 = (np.sum(reps < estimate) + 0.5 * np.sum(reps == estimate)) / reps.size
    if not 0 < p0 < 1 or jack.size < 3:
        return percentile_interval(reps, confidence)
    z0 = special.ndtri(p0)
    d = jack.mean() - jack
    denom = 6.0 * np.sum(d ** 2) ** 1.5
    a = np.sum(d ** 3) / denom if denom > 0 else 0.0
    alpha = (1 - confidence) / 2
    z = special.ndtri(np.array([alpha, 1 - alpha]))
    levels = special.ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))
    if not np.all(np.isfinite(levels)):
        return percentile_interval(reps, confidence)
    lo, hi = _quantile(reps, levels)
    return float(lo), float(hi)


# --------------------------------------------------------------------------- grouping

def iter_groups(table: pd.DataFrame, attributes: Sequence[str]):
    """Yield ``(group_label, row_mask)`` for each group of ``attributes``.

    Rows whose attribute is missing belong to no group of that grouping.
    Categorical attributes yield every category, even unobserved ones
    (their figures are then NaN and flagged ``undefined``), so that a group
    absent from the data shows in the results rather than vanishing.
    """
    if not attributes:
        yield ALL, np.ones(len(table), dtype=bool)
        return
    keys = table[list(attributes)]
    grouped = keys.groupby(list(attributes), sort=True, observed=False, dropna=True)
    for values, index in grouped.indices.items():
        values = values if isinstance(values, tuple) else (values,)
        mask = np.zeros(len(table), dtype=bool)
        mask[index] = True
        yield group_label(values), mask
    for attr in attributes:  # unobserved categories of a single categorical attribute
        if len(attributes) == 1 and isinstance(keys[attr].dtype, pd.CategoricalDtype):
            seen = set(keys[attr].dropna().unique())
            for cat in keys[attr].cat.categories:
                if cat not in seen:
                    yield group_label([cat]), np.zeros(len(table), dtype=bool)


def per_person(values: np.ndarray, persons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum and number of (non-NaN) values of each person, in order of first appearance."""
    keep = ~np.isnan(values)
    codes, _ = pd.factorize(persons[keep], sort=False)
    n = codes.max() + 1 if codes.size else 0
    sums = np.bincount(codes, weights=values[keep], minlength=n)
    counts = np.bincount(codes, minlength=n).astype(np.float64)
    return sums, counts


def _errors_of_rate(count: int, n: int, better: str | None) -> int:
    """The number of errors behind a rate (for the rule of 30).

    ``better='lower'``: the rate counts errors (FNMR, FMR): errors = the 1s.
    ``better='higher'``: the rate counts successes: errors = the 0s.
    ``better=None``: the rarer outcome, min(1s, 0s).
    """
    if better == "lower":
        return count
    if better == "higher":
        return n - count
    return min(count, n - count)


def rate_flags(count: int, n: int, better: str | None, min_errors: int = DEFAULT_MIN_ERRORS) -> list[str]:
    return [FLAG_FEW_ERRORS] if _errors_of_rate(count, n, better) < min_errors else []


# --------------------------------------------------------------------------- figures

def group_figures(samples: pd.DataFrame, *, probe: str, metric: str, value: str,
                  person: str = "identity", groupings: Sequence[Sequence[str]],
                  better: Literal["lower", "higher"] | None, kind: Literal["mean", "rate"] = "mean",
                  n_resamples: int = DEFAULT_N_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                  seed: int = 0, min_people: int = DEFAULT_MIN_PEOPLE,
                  disparity_kinds: Sequence[str] = DEFAULT_DISPARITY_KINDS,
                  interval: Literal["bca", "percentile"] = "bca",
                  min_errors: int = DEFAULT_MIN_ERRORS) -> tuple[list[Figure], list[Disparity]]:
    """Per-group mean (or rate) of ``samples[value]`` with people-resampling intervals.

    ``samples`` has one row per image (or per pair): the attribute columns
    named in ``groupings``, the ``person`` column and the ``value`` column.
    Rows whose value is NaN are left out (``n_images`` counts the rows used;
    a person with no usable row does not count in ``n_people``).

    Each :class:`Figure` holds: ``value`` = the mean over the group's
    images (= sum of per-person sums / number of images, so people with
    more images weigh more, as in an image-level error rate); ``ci_low``,
    ``ci_high`` = the ``confidence`` interval from ``n_resamples`` draws of
    people (see the module docstring); ``n_images``, ``n_people``;
    ``count`` = the number of 1s for ``kind='rate'`` (None for means).
    Flags: ``small_group`` below ``min_people`` people, ``few_errors`` for a
    rate with fewer than ``min_errors`` errors (what counts as an error
    depends on ``better``: the 1s when lower is better, the 0s when higher
    is better, the rarer outcome when neither), ``undefined`` for a group
    without data (value NaN).

    The overall figure (grouping ``all``, group ``all``) comes first, then
    each grouping's groups.  Disparities are computed per grouping with at
    least two defined groups; see :func:`disparities`.
    """
    groupings = check_groupings(groupings)
    check_columns(samples, {person: "the person column", value: "the value column",
                            **{a: "a grouping attribute" for g in groupings for a in g}})
    better = check_better(better)
    if kind not in KINDS:
        raise InputError(f"kind={kind!r}, must be one of {KINDS}.")
    if interval not in INTERVAL_METHODS:
        raise InputError(f"interval={interval!r}, must be one of {INTERVAL_METHODS}.")
    n_resamples = check_n_resamples(n_resamples)
    confidence = check_confidence(confidence)
    disparity_kinds = check_disparity_kinds(disparity_kinds)
    if min_people < 1:
        raise InputError(f"min_people={min_people!r}, must be >= 1 (the default is {DEFAULT_MIN_PEOPLE}).")

    values = pd.to_numeric(samples[value], errors="coerce").to_numpy(dtype=np.float64)
    if kind == "rate":
        bad = ~np.isnan(values) & (values != 0) & (values != 1)
        if bad.any():
            raise InputError(RATE_VALUES_MESSAGE.format(value, float(values[bad][0])))
    persons = samples[person].to_numpy()
    rng = np.random.default_rng(seed)

    figures: list[Figure] = []
    disparities_out: list[Disparity] = []
    for attrs in [[]] + groupings:
        name = grouping_name(attrs)
        reps_by_group: dict[str, np.ndarray] = {}
        figs: list[Figure] = []
        for label, mask in iter_groups(samples, attrs):
            sums, counts = per_person(values[mask], persons[mask])
            fig, reps = _figure(sums, counts, probe=probe, metric=metric, grouping=name, group=label,
                                better=better, kind=kind, n_resamples=n_resamples,
                                confidence=confidence, rng=rng, min_people=min_people,
                                interval=interval, min_errors=min_errors)
            figs.append(fig)
            reps_by_group[label] = reps
        figures.extend(figs)
        if attrs:
            disparities_out.extend(disparities(figs, reps_by_group, kinds=disparity_kinds,
                                               confidence=confidence))
    return figures, disparities_out


def _figure(sums, counts, *, probe, metric, grouping, group, better, kind, n_resamples, confidence,
            rng, min_people, interval, min_errors) -> tuple[Figure, np.ndarray]:
    n_people = int(len(sums))
    n_images = int(counts.sum())
    total = float(sums.sum())
    count = int(round(total)) if kind == "rate" else None
    flags: list[str] = []
    if n_images == 0:
        return (Figure(probe, metric, grouping, group, math.nan, math.nan, math.nan, 0, 0, count,
                       better, [FLAG_UNDEFINED, FLAG_SMALL_GROUP]), np.full(n_resamples, np.nan))
    estimate = total / n_images
    reps = ratio_replicates(sums, counts, n_resamples=n_resamples, rng=rng)
    if n_people < 2:
        lo = hi = math.nan
    elif interval == "bca":
        with np.errstate(invalid="ignore", divide="ignore"):
            jack = (total - sums) / (n_images - counts)
        lo, hi = bca_interval(reps, estimate, jack, confidence)
    else:
        lo, hi = percentile_interval(reps, confidence)
    if n_people < min_people:
        flags.append(FLAG_SMALL_GROUP)
    if kind == "rate":
        flags.extend(rate_flags(count, n_images, better, min_errors))
    return (Figure(probe, metric, grouping, group, estimate, lo, hi, n_images, n_people, count, better,
                   flags), reps)


def make_figure(*, probe: str, metric: str, grouping: str, group: str, value: float,
                replicates: np.ndarray | None, confidence: float = DEFAULT_CONFIDENCE,
                n_images: int | None = None, n_people: int | None = None, count: int | None = None,
                better: str | None = None, min_people: int = DEFAULT_MIN_PEOPLE,
                flags: Sequence[str] = ()) -> Figure:
    """A :class:`Figure` with a percentile interval from ``replicates``.

    For probes whose figure is not a mean of per-image values (a volume, a
    threshold): they make their own replicates (people resampled) and get
    the same flags as :func:`group_figures`.
    """
    flags = list(flags)
    value = float(value) if value is not None else math.nan
    if not np.isfinite(value):
        value = math.nan
        if FLAG_UNDEFINED not in flags:
            flags.append(FLAG_UNDEFINED)
    if n_people is not None and n_people < min_people and FLAG_SMALL_GROUP not in flags:
        flags.append(FLAG_SMALL_GROUP)
    lo = hi = math.nan
    if replicates is not None and not math.isnan(value) and (n_people is None or n_people >= 2):
        lo, hi = percentile_interval(replicates, confidence)
    return Figure(probe, metric, grouping, group, value, lo, hi, n_images, n_people, count, better, flags)


# --------------------------------------------------------------------------- disparities

def _disparity_value(kind: str, values: np.ndarray) -> np.ndarray:
    """Disparity of each row of ``values`` (draws x groups); NaN where undefined.

    Ratios are defined only for positive group values: a zero or negative
    minimum (or geometric mean) gives NaN, never a division error.
    """
    values = np.atleast_2d(values)
    vmax = values.max(axis=1)
    vmin = values.min(axis=1)
    if kind == "max_gap":
        return vmax - vmin
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "max_min_ratio":
            out = vmax / vmin
        else:  # max_geomean_ratio
            out = vmax / np.exp(np.mean(np.log(values), axis=1))
    out = np.where(vmin > 0, out, np.inf if kind == "max_min_ratio" else np.nan)
    # 0/0 (every group zero) or a negative value: undefined
    return np.where((vmin < 0) | (vmax <= 0), np.nan, out)


def disparities(figures: Sequence[Figure], replicates: Mapping[str, np.ndarray], *,
                kinds: Sequence[str] = DEFAULT_DISPARITY_KINDS,
                confidence: float = DEFAULT_CONFIDENCE) -> list[Disparity]:
    """Compare the groups of one grouping, each kind with a percentile interval.

    ``figures`` are one grouping's groups; ``replicates[group]`` the
    group's bootstrap draws, drawn independently per group so that draw
    ``b`` of all groups is a joint draw.  Groups whose value is NaN are left
    out.  Kinds: ``max_min_ratio`` (largest group value / smallest),
    ``max_geomean_ratio`` (largest / geometric mean of all groups, NIST's
    summary that one outlier group cannot dominate as much), ``max_gap``
    (largest - smallest, in the figure's unit).  Ratios are NaN and flagged
    ``undefined`` when the smallest value is 0 or any is negative.  A
    disparity carries ``small_group`` / ``few_errors`` if any of its groups
    does: it is only as solid as its weakest group.  ``worst_group`` is the
    group that fares worst by the figures' ``better`` (the largest value
    where ``better`` is None), ``best_group`` the other end.
    """
    kinds = check_disparity_kinds(kinds)
    defined = [f for f in figures if f.value is not None and not math.isnan(f.value)]
    if len(figures) < 2:
        return []
    first = figures[0]
    inherited = [fl for fl in (FLAG_SMALL_GROUP, FLAG_FEW_ERRORS) if any(fl in f.flags for f in defined)]
    worst = best = None
    if defined:
        hi = max(defined, key=lambda f: f.value).group
        lo = min(defined, key=lambda f: f.value).group
        worst, best = (lo, hi) if first.better == "higher" else (hi, lo)
    out = []
    for kind in kinds:
        flags = list(inherited)
        if len(defined) < 2:
            out.append(Disparity(first.probe, first.metric, first.grouping, kind, math.nan, math.nan,
                                 math.nan, worst, best, flags + [FLAG_UNDEFINED]))
            continue
        point = float(_disparity_value(kind, np.array([[f.value for f in defined]]))[0])
        lo_ci = hi_ci = math.nan
        if math.isfinite(point):
            reps = np.column_stack([replicates[f.group] for f in defined]) if replicates else None
            if reps is not None and reps.size:
                reps = reps[~np.isnan(reps).any(axis=1)]
                if len(reps):
                    lo_ci, hi_ci = percentile_interval(_disparity_value(kind, reps), confidence)
        else:
            point = math.nan
            flags.append(FLAG_UNDEFINED)
        out.append(Disparity(first.probe, first.metric, first.grouping, kind, point, lo_ci, hi_ci,
                             worst, best, flags))
    return out


# --------------------------------------------------------------------------- permutation test

def permutation_test(samples: pd.DataFrame, *, value: str, grouping: Sequence[str],
                     person: str = "identity", n_permutations: int = 1000, seed: int = 0,
                     statistic: Literal["between_variance", "max_gap"] = "between_variance") -> dict:
    """Do the groups differ at all?  Permutation test that shuffles people, not images.

    Each person keeps all their images; people's group labels are shuffled
    (so group sizes in people stay fixed) and the statistic is recomputed.
    ``between_variance`` is the image-weighted variance of the group means
    around the overall mean (sum_g n_g (mean_g - mean)^2 / n, the numerator
    of a one-way ANOVA); ``max_gap`` is the largest minus the smallest group
    mean.  ``p_value = (1 + #{permuted >= observed}) / (1 + n_permutations)``,
    never 0; its resolution is ``1/(n_permutations+1)``.  A small p-value
    says the groups differ by more than a random split of these people
    would; it says nothing about how much (see the disparities for that).
    A person found in several groups counts as one unit per group.

    Returns a dict: ``statistic`` (observed), ``statistic_name``,
    ``p_value``, ``n_permutations``, ``n_groups``, ``n_people``.
    """
    attrs = list(grouping) if not isinstance(grouping, str) else [grouping]
    check_columns(samples, {person: "the person column", value: "the value column",
                            **{a: "a grouping attribute" for a in attrs}})
    n_permutations = check_n_resamples(n_permutations, "n_permutations")
    if statistic not in ("between_variance", "max_gap"):
        raise InputError(f"statistic={statistic!r}, must be 'between_variance' or 'max_gap'.")
    values = pd.to_numeric(samples[value], errors="coerce").to_numpy(dtype=np.float64)
    keep = ~np.isnan(values) & samples[attrs].notna().all(axis=1).to_numpy()
    table = samples.loc[keep, attrs + [person]]
    units = table.groupby(attrs + [person], sort=False, observed=True).indices
    sums, counts, labels = [], [], []
    group_codes: dict[tuple, int] = {}
    vals = values[keep]
    for key, idx in units.items():
        gkey = tuple(key[:-1])
        labels.append(group_codes.setdefault(gkey, len(group_codes)))
        sums.append(vals[idx].sum())
        counts.append(len(idx))
    sums, counts, labels = np.array(sums), np.array(counts, dtype=float), np.array(labels, dtype=int)
    n_groups = len(group_codes)
    result = {"statistic_name": statistic, "n_permutations": n_permutations, "n_groups": n_groups,
              "n_people": int(len(sums))}
    if n_groups < 2:
        return {**result, "statistic": math.nan, "p_value": math.nan}
    grand = sums.sum() / counts.sum()

    def stat(lab: np.ndarray) -> float:
        gs = np.bincount(lab, weights=sums, minlength=n_groups)
        gc = np.bincount(lab, weights=counts, minlength=n_groups)
        means = gs / gc
        if statistic == "max_gap":
            return float(means.max() - means.min())
        return float(np.sum(gc * (means - grand) ** 2) / gc.sum())

    observed = stat(labels)
    rng = np.random.default_rng(seed)
    permuted = np.array([stat(rng.permutation(labels)) for _ in range(n_permutations)])
    # a tolerance so that float noise in an exact tie does not count against it
    exceed = int(np.sum(permuted >= observed - 1e-12 * max(1.0, abs(observed))))
    return {**result, "statistic": observed, "p_value": (1 + exceed) / (1 + n_permutations)}


# --------------------------------------------------------------------------- tables

def figures_frame(figures: Sequence[Figure]) -> pd.DataFrame:
    """groups.csv: one row per (grouping, group), one column set per ``probe.metric``.

    Columns: ``grouping``, ``group``, then for each figure key ``k``:
    ``k``, ``k.ci_low``, ``k.ci_high``, ``k.n_people``, ``k.n_images``,
    ``k.count``, ``k.flags`` (flags joined with ``;``).  Rows keep the
    order in which groups first appear.  Always a DataFrame, even empty.
    """
    rows: dict[tuple[str, str], dict] = {}
    columns: list[str] = ["grouping", "group"]
    for f in figures:
        row = rows.setdefault((f.grouping, f.group), {"grouping": f.grouping, "group": f.group})
        k = f.key
        cells = {k: f.value, f"{k}.ci_low": f.ci_low, f"{k}.ci_high": f.ci_high,
                 f"{k}.n_people": f.n_people, f"{k}.n_images": f.n_images, f"{k}.count": f.count,
                 f"{k}.flags": ";".join(f.flags)}
        for c in cells:
            if c not in columns:
                columns.append(c)
        row.update(cells)
    return pd.DataFrame(list(rows.values()), columns=columns)

