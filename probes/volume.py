"""How much room each group gets in the embedding space.

A face model that packs one group's faces into a small, crowded region of
its embedding space will confuse that group's people with one another more
often (more false matches).  This probe measures that room on the real
embeddings, per group:

``log_volume_per_dim``
    Half the log-determinant of the group's covariance, divided by the
    dimension ``d``: the log of the geometric-mean standard deviation, i.e.
    the log-volume of the covariance ellipsoid per dimension.  The
    covariance is scikit-learn's Ledoit-Wolf shrinkage estimate, which stays
    invertible when there are fewer people than dimensions.
``relative_log_volume_per_dim``
    The same minus the whole population's figure at the same subsample
    size: 0 means "as much room as everyone", -0.1 means each axis is
    exp(-0.1) = 0.90 times as long.
``effective_dimensionality``
    Participation ratio ``(sum l)^2 / sum l^2`` of the eigenvalues ``l`` of
    the group's (plain, unshrunk) sample covariance: how many directions the
    group really spreads along (1 .. d).
``nn_distance_impostor``
    Mean distance, in the target's metric, from each person to the nearest
    *other* person of the group (one image per person).
``impostor_match_rate``
    Share of pairs of different people of the group (one image each) whose
    distance is under the target's match threshold.
``spread_ratio``
    ``sqrt(trace(S_total) / trace(S_within))``: the group's whole spread
    (between + within people) over the spread of one person's images.  A
    capacity-style figure after Gong, Boddeti & Jain, "On the Capacity of
    Face Representation" (the ratio of the population ellipsoid to the
    per-identity ellipsoid, per axis, on average); needs people with several
    images, else NaN and ``undefined``.

Why equal subsamples
--------------------
All these figures depend on how many points they are computed on (a
log-determinant, a nearest-neighbour distance and an effective dimension
all grow with the sample), so comparing a group of 50 people with a group
of 5,000 would mostly measure their sizes.  Each group is therefore
measured on ``n_draws`` seeded subsamples of the same number of people
(``subsample_size``; by default **half** the smallest group with at least
``min_people`` people, capped at :data:`DEFAULT_MAX_SUBSAMPLE_SIZE`), one
random image per person (all their images for ``spread_ratio``).  A group
with fewer people than the subsample size gets NaN and ``undefined`` (and
``small_group``).  The figure is the mean over draws.

What the interval means
-----------------------
The figure is the mean over ``n_draws`` subsamples of ``m`` people taken
without replacement from the group's ``n``: an (incomplete) U-statistic of
order ``m``, whose target is the figure of ``m`` people drawn from the
population the group's people come from.  The spread of single-subsample
values, ``s``, is not its uncertainty: subsamples of a group overlap, the
more so the closer ``m`` is to ``n``, so ``s`` shrinks to 0 as ``n``
approaches ``m`` and overstates the uncertainty for ``n`` much larger than
``m``.  To first order (Hoeffding), one subsample's figure is the mean of
``m`` per-person terms, so ``s^2 = sigma^2 (1/m - 1/n)`` (sampling without
replacement) while the mean over all subsamples has variance
``sigma^2 / n``; drawing only ``B`` subsamples adds ``s^2 / B``.  Hence the
standard error ``s * sqrt(m / (n - m) + 1 / B)`` and a normal interval
around the mean over draws; ``benchmarks/coverage.py`` shows its coverage
for groups of ``2m`` people and of many more.  A group of exactly ``m``
people has no interval (every subsample is the group).
If every draw gives the same value the spread says nothing about the
uncertainty: the figure then has no interval (rather than one of zero
width, which would claim it exact).

The two pair figures need no draws: their mean over *every* subsample of
``m`` people can be computed on all the group's people (one random image
each, at most :data:`MAX_PAIR_PEOPLE`), so they carry no draw noise and
their uncertainty is estimated from the people alone.  A pair of people
is in a random subsample with the same chance as any other, so
``impostor_match_rate`` is the match rate over all the group's pairs, with
a Clopper-Pearson interval on its effective number of pairs, the variance
the unbiased one of a U-statistic of order 2 (:func:`match_rate_estimate`):
never of zero width, even with no match at all (the subsample draws of a
rare match all gave 0, and a zero-width interval).  For ``nn_distance_impostor`` a
person's nearest neighbour in a random subsample is their ``k``-th nearest
of the group with a hypergeometric chance (:func:`nearest_neighbour_weights`),
which gives the all-subsamples mean exactly; its standard error is a
delete-a-group jackknife over people (:data:`JACKKNIFE_GROUPS` groups, a
Student t).  ``effective_dimensionality`` keeps the draws and the formula
above, which errs wide (a participation ratio of ``m`` points varies far
more from draw to draw than its mean over draws does between groups).
``benchmarks/coverage.py`` has the coverage, the zero-width count and the
size and power of the gaps of each.
``relative_log_volume_per_dim`` is the group's figure minus the whole
population's, its standard error theirs combined (the population holds the
group, so this errs on the wide side).  Disparities compare every two
groups (:mod:`probes.compare`); the relative volume has none of its own
(its differences are those of ``log_volume_per_dim``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.covariance import ledoit_wolf_shrinkage

from audit.distances import check_metric, cross_distances
from audit.errors import InputError
from audit.json_model import from_json, json_safe
from audit.result_sections import Spectrum, VolumeSection
from audit.results import ALL, FLAG_SMALL_GROUP, grouping_name
from probes.estimates import Estimate, NormalEstimate, ProportionEstimate
from probes.result import ProbeResult
from probes.stats import (
    DEFAULT_CONFIDENCE,
    DEFAULT_MIN_PEOPLE,
    check_columns,
    check_groupings,
    check_n_resamples,
    GroupedFigures,
    figure_from_estimate,
    iter_groups,
)

PROBE = "volume"
#: Default cap on the people per subsample: enough for stable figures,
#: small enough that ``n_draws`` Ledoit-Wolf fits and distance matrices stay fast.
DEFAULT_MAX_SUBSAMPLE_SIZE = 300
DEFAULT_N_DRAWS = 50
#: Smallest subsample on which a covariance and a nearest neighbour mean anything.
MIN_SUBSAMPLE_SIZE = 3
#: Eigenvalues kept per group in ``details`` (the head of the spectrum).
N_EIGENVALUES_REPORTED = 10
#: People per group on whom the pair figures (match rate, nearest neighbour) are computed at most
#: (a seeded subsample above it): their distance matrix is this squared.
MAX_PAIR_PEOPLE = 1_000
#: Groups of people left out in turn by the nearest-neighbour figure's jackknife (its degrees of freedom + 1).
JACKKNIFE_GROUPS = 20

METRICS = {  # name -> (better, disparity kinds)
    "log_volume_per_dim": ("higher", ("gap",)),   # a log: only differences mean something
    "relative_log_volume_per_dim": ("higher", ()),  # its differences are log_volume_per_dim's
    "effective_dimensionality": ("higher", ("gap", "ratio")),
    "nn_distance_impostor": ("higher", ("gap", "ratio")),
    "impostor_match_rate": ("lower", ("gap", "ratio")),
    "spread_ratio": ("higher", ("gap", "ratio")),
}


def check_embeddings(embeddings: np.ndarray, samples: pd.DataFrame) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"Expected a 2D array of embeddings (one row per image), got shape {x.shape}. "
                         "Reshape your data with x.reshape(len(samples), -1).")
    if len(x) != len(samples):
        raise InputError(f"embeddings has {len(x)} rows but samples has {len(samples)}: pass one "
                         "embedding per row of samples, in the same order.")
    if not np.all(np.isfinite(x)):
        raise InputError("embeddings holds NaN or infinite values; drop those images first.")
    return x


def covariance_eigenvalues(x: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending, ``d`` of them) of the maximum-likelihood covariance of ``x``.

    With fewer samples than dimensions (a 1024-D cloud model, a subsample
    of 50 people) the ``d x d`` covariance has at most ``n - 1`` non-zero
    eigenvalues, and they are those of the ``n x n`` Gram matrix: far
    cheaper to find.  The rest are zeros.
    """
    xc = x - x.mean(axis=0)
    n, d = xc.shape
    if n < d:
        eig = np.linalg.eigvalsh(xc @ xc.T / n)
        eig = np.concatenate([eig, np.zeros(d - n)])
    else:
        eig = np.linalg.eigvalsh(xc.T @ xc / n)
    return np.sort(np.clip(eig, 0.0, None))[::-1]


def log_volume_per_dim(x: np.ndarray, eigenvalues: np.ndarray | None = None) -> float:
    """Half the log-determinant of the Ledoit-Wolf covariance of ``x``, over the dimension.

    Ledoit-Wolf shrinks the empirical covariance ``S`` towards ``mu * I``
    (``mu`` = mean variance): ``(1 - delta) S + delta mu I``, whose
    eigenvalues are ``(1 - delta) lambda_i + delta mu``.  So the log-det
    comes from ``S``'s eigenvalues and scikit-learn's shrinkage ``delta``
    without forming (or inverting) the ``d x d`` matrix, the same number
    ``LedoitWolf().fit(x).covariance_`` gives.
    """
    lam = covariance_eigenvalues(x) if eigenvalues is None else np.asarray(eigenvalues, dtype=np.float64)
    d = x.shape[1]
    delta = ledoit_wolf_shrinkage(x)
    mu = lam.sum() / d
    shrunk = (1.0 - delta) * lam + delta * mu
    if np.any(shrunk <= 0):
        return -math.inf
    return float(0.5 * np.sum(np.log(shrunk)) / d)


def participation_ratio(eigenvalues: np.ndarray) -> float:
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0, None)
    s2 = np.sum(lam ** 2)
    return float(np.sum(lam) ** 2 / s2) if s2 > 0 else math.nan


def spread_ratio(x: np.ndarray, persons: np.ndarray) -> float:
    """``sqrt(trace(total covariance) / trace(pooled within-person covariance))``; NaN without repeats."""
    codes, _ = pd.factorize(persons)
    counts = np.bincount(codes)
    if np.sum(counts >= 2) < 2:
        return math.nan
    means = np.zeros((len(counts), x.shape[1]))
    np.add.at(means, codes, x)
    means /= counts[:, None]
    within_ss = np.sum((x - means[codes]) ** 2)
    within = within_ss / (len(x) - len(counts))  # pooled: one mean per person estimated
    total = np.sum((x - x.mean(axis=0)) ** 2) / (len(x) - 1)
    return float(np.sqrt(total / within)) if within > 0 else math.nan


def _draw_figures(x_one: np.ndarray, x_all: np.ndarray, persons_all: np.ndarray, *, metric: str,
                  threshold: float) -> tuple[dict[str, float], np.ndarray]:
    d = cross_distances(x_one, x_one, metric)
    iu = np.triu_indices(len(x_one), k=1)
    np.fill_diagonal(d, np.inf)
    eig = covariance_eigenvalues(x_one)
    return {
        "log_volume_per_dim": log_volume_per_dim(x_one, eig),
        "effective_dimensionality": participation_ratio(eig),
        "nn_distance_impostor": float(d.min(axis=1).mean()),
        "impostor_match_rate": float(np.mean(d[iu] <= threshold)),  # the match rule d <= t
        "spread_ratio": spread_ratio(x_all, persons_all),
    }, eig


def volume_probe(embeddings: np.ndarray, samples: pd.DataFrame, *, groupings: Sequence[Sequence[str]],
                 person: str = "identity", metric: str, threshold: float,
                 subsample_size: int | None = None, n_draws: int = DEFAULT_N_DRAWS, seed: int = 0,
                 min_people: int = DEFAULT_MIN_PEOPLE,
                 max_subsample_size: int = DEFAULT_MAX_SUBSAMPLE_SIZE,
                 confidence: float = DEFAULT_CONFIDENCE) -> ProbeResult:
    """Volume, dimensionality and crowding of each group on equal-size subsamples of people.

    ``embeddings[i]`` is the vector of ``samples.iloc[i]``.  See the module
    docstring for the figures, the subsample size and what the intervals mean.
    """
    groupings = check_groupings(groupings)
    check_columns(samples, {person: "the person column",
                            **{a: "a grouping attribute" for g in groupings for a in g}})
    x = check_embeddings(embeddings, samples)
    check_metric(metric)
    n_draws = check_n_resamples(n_draws, "n_draws")
    persons = samples[person].to_numpy()
    groups = [(grouping_name(attrs), label, mask) for attrs in [[]] + groupings
              for label, mask in iter_groups(samples, attrs)]
    people_of = {(g, lab): pd.unique(persons[mask]) for g, lab, mask in groups}
    size = _subsample_size(subsample_size, people_of, min_people, max_subsample_size)

    rng = np.random.default_rng(seed)
    values: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    spectra: dict[str, dict] = {}
    for g, lab, mask in groups:
        people = people_of[g, lab]
        if size is None or len(people) < size:
            values[g, lab] = {m: np.full(n_draws, np.nan) for m in METRICS}
            continue
        values[g, lab], mean_eig = _group_draws(x, persons, mask, people, size=size, n_draws=n_draws, rng=rng,
                                                metric=metric, threshold=threshold)
        spectra[f"{g}: {lab}"] = {"top_eigenvalues": mean_eig[:N_EIGENVALUES_REPORTED].tolist(),
                                  "total_variance": float(mean_eig.sum())}
    estimates: dict[tuple[str, str], dict[str, Estimate]] = {
        key: {m: subsample_estimate(draws, len(people_of[key]), size) for m, draws in v.items()}
        for key, v in values.items()}
    pair_rng = np.random.default_rng([seed, 1])   # its own stream: the subsample draws stay as they were
    for g, lab, mask in groups:
        people = people_of[g, lab]
        if size is not None and len(people) >= size:
            estimates[g, lab].update(pair_figures(x, persons, mask, people, size=size, metric=metric,
                                                  threshold=threshold, rng=pair_rng))
    population = estimates[ALL, ALL].get("log_volume_per_dim", NormalEstimate(math.nan, math.nan))
    for key, by_metric in estimates.items():
        own = by_metric.get("log_volume_per_dim", NormalEstimate(math.nan, math.nan))
        se = math.nan if key == (ALL, ALL) else math.hypot(own.standard_error, population.standard_error)
        by_metric["relative_log_volume_per_dim"] = NormalEstimate(own.value - population.value, se)
    collected = GroupedFigures()
    for name, (better, _) in METRICS.items():
        for g, lab, mask in groups:
            estimate = estimates[g, lab][name]
            n_people = len(people_of[g, lab])
            flags = [FLAG_SMALL_GROUP] if (size is not None and n_people < size) else []
            count = int(round(estimate.count)) if isinstance(estimate, ProportionEstimate) else None
            collected.add(figure_from_estimate(estimate, probe=PROBE, metric=name, grouping=g, group=lab,
                                               confidence=confidence, n_images=int(mask.sum()), n_people=n_people,
                                               count=count, better=better, min_people=min_people, flags=flags),
                          estimate)
    figures = collected.figures()
    disparities_out = collected.disparities({name: kinds for name, (_, kinds) in METRICS.items()},
                                            confidence=confidence)
    details = VolumeSection(subsample_size=size, n_draws=n_draws, seed=seed, metric=metric,
                            threshold=float(threshold), dimension=int(x.shape[1]),
                            unit="people (one image each; all their images for spread_ratio)",
                            spectra=from_json(dict[str, Spectrum], json_safe(spectra), "volume spectra"))
    return ProbeResult(figures, disparities_out, details)


def _group_draws(x: np.ndarray, persons: np.ndarray, mask: np.ndarray, people: np.ndarray, *, size: int,
                 n_draws: int, rng: np.random.Generator, metric: str,
                 threshold: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One group's figures on ``n_draws`` subsamples of ``size`` people, and its mean eigenvalue spectrum.

    Each draw takes ``size`` people without replacement and one image of
    each (all their images for the spread ratio).
    """
    pos = np.flatnonzero(mask)
    idx_of = {p: pos[i] for p, i in pd.Series(persons[mask]).groupby(persons[mask], sort=False).indices.items()}
    per_draw = {m: np.empty(n_draws) for m in METRICS if m != "relative_log_volume_per_dim"}
    eigs = []
    for b in range(n_draws):
        chosen = rng.choice(len(people), size=size, replace=False)
        rows = [idx_of[people[i]] for i in chosen]
        one = np.array([r[rng.integers(len(r))] for r in rows])
        every = np.concatenate(rows)
        figs, eig = _draw_figures(x[one], x[every], persons[every], metric=metric, threshold=threshold)
        for m, v in figs.items():
            per_draw[m][b] = v
        eigs.append(eig)
    return per_draw, np.mean(eigs, axis=0)


def pair_figures(x: np.ndarray, persons: np.ndarray, mask: np.ndarray, people: np.ndarray, *, size: int,
                 metric: str, threshold: float, rng: np.random.Generator) -> dict[str, Estimate]:
    """The match rate and the nearest-neighbour distance of one group, on all its people at once.

    One random image per person, at most :data:`MAX_PAIR_PEOPLE` people (a
    seeded subsample).  Both figures are what the mean over every subsample
    of ``size`` people would give, computed exactly instead of from a few
    draws (see the module docstring), so their uncertainty is the people's
    alone.
    """
    pos = np.flatnonzero(mask)
    rows = pd.Series(np.arange(len(pos))).groupby(persons[mask], sort=False).indices
    chosen_people = people if len(people) <= MAX_PAIR_PEOPLE else rng.choice(people, MAX_PAIR_PEOPLE,
                                                                                 replace=False)
    one = np.array([pos[rows[p][rng.integers(len(rows[p]))]] for p in chosen_people])
    d = cross_distances(x[one], x[one], metric)
    matched = (d <= threshold) & ~np.eye(len(one), dtype=bool)   # the match rule d <= t
    return {"impostor_match_rate": match_rate_estimate(matched),
            "nn_distance_impostor": nearest_neighbour_estimate(d, size, rng)}


def match_rate_estimate(matched: np.ndarray) -> ProportionEstimate:
    """The share of pairs of different people that match, with the unbiased variance of a U-statistic.

    ``matched``: the symmetric ``n x n`` match indicator of all the group's
    people (False on the diagonal).  The rate over all pairs is a
    U-statistic of order 2, whose variance is ``(4 (n - 2) z1 + 2 z2) / (n
    (n - 1))`` (Hoeffding) with ``z2 = p (1 - p)`` the variance of one pair
    and ``z1`` the covariance of two pairs sharing a person; ``p``, ``p^2``
    and the shared-person moment each have an unbiased estimate from the
    counts (pairs, pairs of pairs at a person, disjoint pairs of pairs), so
    the variance estimate is unbiased too.  The interval is Clopper-Pearson
    on the effective number of pairs (:class:`~probes.estimates.ProportionEstimate`),
    never of zero width.
    """
    m = np.asarray(matched, dtype=np.float64)
    n = len(m)
    pairs = n * (n - 1) / 2
    if n < 2:
        return ProportionEstimate(0.0, 0.0)
    per_person = m.sum(axis=1)
    total = float(per_person.sum() / 2)
    if n < 4:
        return ProportionEstimate(total, pairs, math.nan, n)
    at_a_person = float(np.sum(per_person * (per_person - 1)))   # ordered matched pairs of pairs sharing a person
    disjoint = total * total - total - at_a_person                  # ordered matched pairs of disjoint pairs
    p = total / pairs
    p_squared = disjoint / (pairs * (pairs - 1) - n * (n - 1) * (n - 2))
    shared = at_a_person / (n * (n - 1) * (n - 2)) - p_squared
    variance = (4 * (n - 2) * shared + 2 * (p - p_squared)) / (n * (n - 1))
    return ProportionEstimate(total, pairs, variance, n)


def nearest_neighbour_weights(n: int, size: int) -> np.ndarray:
    """``w[k - 1]``: chance that a person's nearest neighbour in a random subsample of ``size`` of ``n``
    people (the person included) is their ``k``-th nearest of all ``n - 1`` others.

    The other ``size - 1`` members are a random subset of the ``n - 1``;
    ``P(smallest rank >= k) = C(n - k, size - 1) / C(n - 1, size - 1)``,
    whose successive ratios are ``(n - k - size + 1) / (n - k)``.
    """
    k = np.arange(1, n)
    ratio = np.clip((n - k - size + 1) / (n - k), 0.0, None)
    at_least = np.concatenate([[1.0], np.cumprod(ratio)])[: n - 1]      # P(smallest rank >= k), k = 1..n-1
    return at_least - np.concatenate([at_least[1:], [0.0]])


def nearest_neighbour_mean(d: np.ndarray, size: int) -> float:
    """Mean over every subsample of ``size`` people of the mean nearest-neighbour distance (``d``: all pairs)."""
    n = len(d)
    ordered = np.sort(d + np.diag(np.full(n, np.inf)), axis=1)[:, : n - 1]
    return float(np.mean(ordered @ nearest_neighbour_weights(n, size)))


def nearest_neighbour_estimate(d: np.ndarray, size: int, rng: np.random.Generator) -> NormalEstimate:
    """:func:`nearest_neighbour_mean` with a delete-a-group jackknife standard error over people.

    The people are split at random into :data:`JACKKNIFE_GROUPS` groups
    (fewer where removing one would leave fewer than ``size`` people); the
    figure is recomputed without each group and ``v = (K - 1) / K *
    sum_k (f_k - mean f)^2``, read on a Student t with ``K - 1`` degrees
    of freedom.  NaN where fewer than two groups can be left out or ``v`` is 0.
    """
    n = len(d)
    value = nearest_neighbour_mean(d, size)
    k = min(JACKKNIFE_GROUPS, n)
    while k >= 2 and n - math.ceil(n / k) < size:
        k -= 1
    if k < 2:
        return NormalEstimate(value, math.nan)
    fold = rng.permutation(n) % k
    left_out = np.array([nearest_neighbour_mean(d[np.ix_(fold != j, fold != j)], size) for j in range(k)])
    variance = (k - 1) / k * float(np.sum((left_out - left_out.mean()) ** 2))
    if not variance > 0:
        return NormalEstimate(value, math.nan)
    return NormalEstimate(value, math.sqrt(variance), df=k - 1)


def subsample_estimate(draws: np.ndarray, n_people: int, size: int | None) -> NormalEstimate:
    """The mean over subsample draws, with the standard error ``s * sqrt(m / (n - m) + 1 / B)``.

    ``s`` is the standard deviation of the ``B`` finite draws, ``m`` the
    subsample size and ``n`` the group's people (see the module docstring).
    NaN where there are fewer than two draws, ``n <= m``, or every draw is
    the same (a zero-width interval would claim the figure exact).
    """
    draws = np.asarray(draws, dtype=np.float64)
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return NormalEstimate(math.nan, math.nan)
    value = float(finite.mean())
    if finite.size < 2 or size is None or n_people <= size:
        return NormalEstimate(value, math.nan)
    spread = float(np.std(finite, ddof=1))
    if not spread > 0:   # every draw alike: the draws cannot tell the figure's uncertainty, and 0 is not it
        return NormalEstimate(value, math.nan)
    return NormalEstimate(value, spread * math.sqrt(size / (n_people - size) + 1.0 / finite.size))


def _subsample_size(requested, people_of, min_people, cap) -> int | None:
    if requested is not None:
        if int(requested) != requested or requested < MIN_SUBSAMPLE_SIZE:
            raise InputError(f"subsample_size={requested!r}, must be a whole number >= "
                             f"{MIN_SUBSAMPLE_SIZE} (people per subsample), or None for the default.")
        return int(requested)
    sizes = [len(p) for key, p in people_of.items() if key != (ALL, ALL)] or [len(people_of[ALL, ALL])]
    eligible = ([n for n in sizes if n >= min_people]
                or [n for n in sizes if n >= 2 * MIN_SUBSAMPLE_SIZE])
    if not eligible:
        return None
    return int(max(MIN_SUBSAMPLE_SIZE, min(min(eligible) // 2, cap)))
