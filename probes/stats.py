"""Per-group figures with intervals that hold for people-clustered data, pairwise disparities.

Why people, not images
----------------------
Images of one person are not independent: two photos of the same face err
together.  Treating 5,000 images of 300 people as 5,000 independent draws
gives intervals that are far too narrow.  Every interval here counts the
person as the unit: values are first added up per person (``sum`` and
number of images), and the ``n_people`` beside every figure is the number
of people.

Intervals (see :mod:`probes.estimates` for the methods)
-------------------------------------------------------
* **Rates** (``kind='rate'``): the exact Clopper-Pearson interval on the
  effective sample size ``n_images / design_effect``, the design effect
  estimated from the per-person counts (Korn & Graubard) and shrunk towards
  "every person's images err together" where few people carry errors, so
  people are the floor.  It holds at small counts and never has zero
  width: 0 errors in 60 images of 60 people give [0, 5.96%], in 10 people
  x 420 images [0, 30.8%].
* **Means** (``kind='mean'``): a people bootstrap (``n_resamples`` draws of
  people with replacement, the figure of a draw being the ratio of the
  drawn sums) with a BCa interval (bias-corrected and accelerated, Efron
  1987), whose acceleration uses the exact leave-one-person-out jackknife
  of the ratio estimator, read at Hesterberg's expanded quantile (a plain
  bootstrap interval of 20 people covers about 90%, not 95%) for Kish's
  effective number of people ``(sum m)^2 / sum m^2``.  Where BCa is degenerate a normal interval with
  the bootstrap (or jackknife) standard error is used; its width is zero
  only when every person's values are identical.  A test checks that the
  BCa interval agrees with ``scipy.stats.bootstrap(..., method="BCa")`` on
  per-person sums.

An interval needs at least two people: a group of one person gets ``NaN``
bounds.  Widths shrink roughly like ``1/sqrt(n_people)``;
``benchmarks/coverage.py`` measures how often they cover the truth at 20,
100 and 500 people per group.

Disparities are pairwise: every two groups of a grouping get their
difference and ratio with an interval and a p-value
(:mod:`probes.compare`); which of them are findings is decided once for the
whole run (:mod:`probes.findings`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from audit.errors import InputError
from audit.results import (
    ALL,
    BLOCKING_FLAGS,
    DISPARITY_KINDS,
    FLAG_FEW_ERRORS,
    FLAG_SMALL_GROUP,
    FLAG_UNDEFINED,
    RETIRED_DISPARITY_KINDS,
    Disparity,
    Figure,
    group_label,
    grouping_name,
)
from probes.compare import compare, pairs_of
from probes.estimates import (BootstrapEstimate, Estimate, NormalEstimate, clustered_proportion,
                              kish_effective_count, percentile_interval)

#: Fewer people than this in a group flags its figures ``small_group``.
#: 30 is the usual rule of thumb for a bootstrap or normal interval to be
#: near its nominal coverage; benchmarks/coverage.py measures it at 20, 100
#: and 500 people.
DEFAULT_MIN_PEOPLE = 30
#: A rate resting on fewer errors than this is flagged ``few_errors``
#: (NIST FRVT's "rule of 30": with 30 errors the 90% interval of a rate is
#: about +-30% of it).
DEFAULT_MIN_ERRORS = 30
DEFAULT_N_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_DISPARITY_KINDS = DISPARITY_KINDS
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
        retired = {k: RETIRED_DISPARITY_KINDS[k] for k in unknown if k in RETIRED_DISPARITY_KINDS}
        hint = (f" ({', '.join(f'{k!r} is now {v!r}' for k, v in retired.items())}: every pair of groups "
                "is compared)") if retired else ""
        raise InputError(f"disparity_kinds={kinds!r} holds unknown {unknown!r}; choose among "
                         f"{DISPARITY_KINDS}{hint}.")
    return kinds


# --------------------------------------------------------------------------- resampling

def resample_weights(n_people: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_resamples, n_people)`` float array: how often each person is drawn.

    Each row is one bootstrap draw of ``n_people`` people with replacement
    (a multinomial count vector summing to ``n_people``).  Weighted sums
    ``W @ x`` then give every draw's total at once.
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
    """Per-group mean (or rate) of ``samples[value]`` with people-clustered intervals.

    ``samples`` has one row per image (or per pair): the attribute columns
    named in ``groupings``, the ``person`` column and the ``value`` column.
    Rows whose value is NaN are left out (``n_images`` counts the rows used;
    a person with no usable row does not count in ``n_people``).

    Each :class:`Figure` holds: ``value`` = the mean over the group's
    images (= sum of per-person sums / number of images, so people with
    more images weigh more, as in an image-level error rate); ``ci_low``,
    ``ci_high`` = the ``confidence`` interval (see the module docstring;
    ``interval`` chooses BCa or percentile for means, rates are always
    exact); ``n_images``, ``n_people``; ``count`` = the number of 1s for
    ``kind='rate'`` (None for means).  Flags: ``small_group`` below
    ``min_people`` people, ``few_errors`` for a rate with fewer than
    ``min_errors`` errors (what counts as an error depends on ``better``:
    the 1s when lower is better, the 0s when higher is better, the rarer
    outcome when neither), ``undefined`` for a group without data.

    The overall figure (grouping ``all``, group ``all``) comes first, then
    each grouping's groups.  Disparities compare every two defined groups
    of a grouping; see :func:`disparities`.
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

    collected = GroupedFigures()
    for attrs in [[]] + groupings:
        name = grouping_name(attrs)
        for label, mask in iter_groups(samples, attrs):
            sums, counts = per_person(values[mask], persons[mask])
            estimate = _estimate(sums, counts, kind=kind, interval=interval, n_resamples=n_resamples,
                                 rng=rng)
            n_images = int(counts.sum())
            count = int(round(float(sums.sum()))) if kind == "rate" else None
            flags = rate_flags(count, n_images, better, min_errors) if kind == "rate" and n_images else []
            collected.add(figure_from_estimate(estimate, probe=probe, metric=metric, grouping=name, group=label,
                                               confidence=confidence, n_images=n_images, n_people=len(sums),
                                               count=count, better=better, min_people=min_people, flags=flags),
                          estimate)
    return collected.figures(), collected.disparities(disparity_kinds, confidence=confidence)


@dataclass(frozen=True)
class _PercentileEstimate:
    """A bootstrap mean judged by the plain percentile interval (``interval='percentile'``)."""

    value: float
    replicates: np.ndarray

    def interval(self, confidence: float) -> tuple[float, float]:
        return percentile_interval(self.replicates, confidence)

    def for_ratio(self, other: Estimate) -> Estimate:
        return self


def _estimate(sums: np.ndarray, counts: np.ndarray, *, kind: str, interval: str, n_resamples: int,
              rng: np.random.Generator) -> Estimate:
    n_images = float(counts.sum())
    if n_images == 0:
        return NormalEstimate(math.nan, math.nan)
    if kind == "rate":
        return clustered_proportion(sums, counts)
    total = float(sums.sum())
    estimate = total / n_images
    reps = ratio_replicates(sums, counts, n_resamples=n_resamples, rng=rng)
    if interval == "percentile":
        return _PercentileEstimate(estimate, reps)
    with np.errstate(invalid="ignore", divide="ignore"):
        jack = (total - sums) / (n_images - counts)
    return BootstrapEstimate(estimate, reps, jack, effective_people=kish_effective_count(counts))


def figure_from_estimate(estimate: Estimate, *, probe: str, metric: str, grouping: str, group: str,
                         confidence: float = DEFAULT_CONFIDENCE, n_images: int | None = None,
                         n_people: int | None = None, count: int | None = None, better: str | None = None,
                         min_people: int = DEFAULT_MIN_PEOPLE, flags: Sequence[str] = ()) -> Figure:
    """A :class:`Figure` from any group estimate, with the flags every probe gives.

    ``undefined`` where the value is not finite, ``small_group`` below
    ``min_people`` people; no interval for a group of fewer than two people.
    """
    flags = list(flags)
    value = float(estimate.value) if estimate.value is not None else math.nan
    if not np.isfinite(value):
        value = math.nan
        if FLAG_UNDEFINED not in flags:
            flags.append(FLAG_UNDEFINED)
    if n_people is not None and n_people < min_people and FLAG_SMALL_GROUP not in flags:
        flags.append(FLAG_SMALL_GROUP)
    lo = hi = math.nan
    if not math.isnan(value) and (n_people is None or n_people >= 2):
        lo, hi = estimate.interval(confidence)
    return Figure(probe, metric, grouping, group, value, float(lo), float(hi), n_images, n_people, count,
                  better, flags)


# --------------------------------------------------------------------------- disparities

#: Flags a disparity takes over from either of its two groups.
INHERITED_FLAGS = (FLAG_SMALL_GROUP, FLAG_FEW_ERRORS, *BLOCKING_FLAGS)


def disparities(figures: Sequence[Figure], estimates: Mapping[str, Estimate], *,
                kinds: Sequence[str] = DEFAULT_DISPARITY_KINDS,
                confidence: float = DEFAULT_CONFIDENCE) -> list[Disparity]:
    """Every two defined groups of one grouping, compared (see :mod:`probes.compare`).

    ``figures`` are one grouping's groups and ``estimates[group]`` their
    estimates.  Per pair and kind, one :class:`Disparity`: ``value`` =
    higher minus (over) lower estimate, the MOVER interval and the p-value
    for "no difference"; ``worst_group`` / ``best_group`` by the figures'
    ``better`` (the higher value is the worse where ``better`` is None).
    A disparity takes ``small_group``, ``few_errors`` and blocking flags
    from either of its groups, and ``undefined`` where the comparison has
    no value (a ratio of figures that are not positive).  The pair with the
    largest value of each kind is ``worst_pair``.  With fewer than two
    defined groups, one undefined disparity per kind says so.
    """
    kinds = check_disparity_kinds(kinds)
    if len(figures) < 2:
        return []
    first = figures[0]
    defined = [f for f in figures if f.value is not None and not math.isnan(f.value)]
    out: list[Disparity] = []
    for kind in kinds:
        if len(defined) < 2:
            flags = sorted({fl for f in figures for fl in f.flags if fl in INHERITED_FLAGS}) + [FLAG_UNDEFINED]
            out.append(Disparity(first.probe, first.metric, first.grouping, kind, math.nan, math.nan, math.nan,
                                 None, None, flags))
            continue
        mine: list[Disparity] = []
        for fa, fb in pairs_of(defined):
            mine.append(_pair_disparity(fa, fb, estimates[fa.group], estimates[fb.group], kind, confidence))
        finite = [d for d in mine if math.isfinite(d.value)]
        if finite:
            max(finite, key=lambda d: d.value).worst_pair = True
        out.extend(mine)
    return out


class GroupedFigures:
    """A probe's figures as they are made, kept by metric and grouping, with their estimates.

    The one place where per-group figures become disparities: each probe
    adds a figure and its estimate per group, and :meth:`disparities` compares
    the groups of every grouping but ``all`` (see :func:`disparities`).
    Figures come back metric by metric, grouping by grouping, in the order
    they were first added.
    """

    def __init__(self) -> None:
        self._by_metric: dict[str, dict[str, list[tuple[Figure, Estimate]]]] = {}

    def add(self, figure: Figure, estimate: Estimate) -> None:
        self._by_metric.setdefault(figure.metric, {}).setdefault(figure.grouping, []).append((figure, estimate))

    def estimates(self, metric: str, grouping: str) -> dict[str, Estimate]:
        """The estimate of each group of ``grouping`` for ``metric`` (empty where there is none)."""
        return {f.group: e for f, e in self._by_metric.get(metric, {}).get(grouping, [])}

    def figures(self) -> list[Figure]:
        return [f for groupings in self._by_metric.values() for pairs in groupings.values() for f, _ in pairs]

    def disparities(self, kinds: Sequence[str] | Mapping[str, Sequence[str]], *,
                    confidence: float = DEFAULT_CONFIDENCE) -> list[Disparity]:
        """Pairwise disparities within each grouping; ``kinds`` for every metric, or by metric name
        (a metric without kinds gets none)."""
        out: list[Disparity] = []
        for metric, groupings in self._by_metric.items():
            metric_kinds = kinds.get(metric, ()) if isinstance(kinds, Mapping) else kinds
            if not metric_kinds:
                continue
            for grouping, pairs in groupings.items():
                if grouping != ALL:
                    out.extend(disparities([f for f, _ in pairs], {f.group: e for f, e in pairs},
                                           kinds=metric_kinds, confidence=confidence))
        return out


def _pair_disparity(fa: Figure, fb: Figure, ea: Estimate, eb: Estimate, kind: str,
                    confidence: float) -> Disparity:
    result = compare(ea, eb, kind, confidence)
    high, low = (fa, fb) if result.high == "first" else (fb, fa)
    worst, best = (low, high) if fa.better == "higher" else (high, low)
    flags = sorted({fl for f in (fa, fb) for fl in f.flags if fl in INHERITED_FLAGS})
    if not math.isfinite(result.value):
        flags.append(FLAG_UNDEFINED)
    return Disparity(fa.probe, fa.metric, fa.grouping, kind, float(result.value), float(result.ci_low),
                     float(result.ci_high), worst.group, best.group, flags,
                     p_value=None if math.isnan(result.p_value) else float(result.p_value))


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

