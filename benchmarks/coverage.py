"""How often each interval the tool reports covers the truth, on simulated people-clustered data.

    python benchmarks/coverage.py                  # the full table: 20, 100, 500 people per group
    python benchmarks/coverage.py --sims 100 --people 20,100 --kinds "rate 2%,mean"  # kinds are comma-separated

A 95% interval should contain the true value in about 95% of datasets.
Each *kind* below simulates datasets whose truth is known, runs the very
code the audit runs (``probes.stats.group_figures``,
``probes.verification.verification_probe``, ``probes.volume.volume_probe``)
and counts how often the reported interval contains the truth; the table
gives that coverage and the median width of the intervals.  Everything is
seeded: the same command prints the same table.

How the data are clustered by people
------------------------------------
* Rates: each person has 1-5 images and their own error probability, drawn
  from a Beta distribution with the kind's mean and an intra-person
  correlation of 0.2 (some people are much harder than others).  Kinds
  that name another design say so: unequal images per person (half the
  people with 1 image, half with 20) or many images per person with few or
  no errors (20 or 80 each), at an intra-person correlation of 0.3, and
  groups of unequal size (one twenty times the other).
* Means: each person's level is skewed (a Gamma effect), their 1-5 images
  scatter around it.
* Verification: each person has a centre in an 8-dimensional embedding
  space and 3 images around it, with a person-specific spread (log-normal),
  so pairs that share a person are dependent; the true FNMR, FMR and
  threshold at FMR follow from the chi-square distribution of distances,
  integrated over the spreads.
* Volume: one image per person from a fixed 16-dimensional Gaussian; the
  truth (the figure of ``m`` people drawn from the population) is the mean
  over 2,000 independent samples of ``m``.  The kinds named after
  ``impostor_match_rate``, ``effective_dimensionality`` and
  ``nn_distance_impostor`` check each of those figures: one group of
  ``2m`` people, the gap between groups of ``n`` and ``6.7n`` people (30
  and 200) and between equal groups (truth 0: ``excl. 0`` is the size of
  the gap test), and a real gap (the second group shrunk by 0.93, or with a
  flatter spectrum for the effective dimensionality: ``excl. 0`` is the
  power).  The table also counts intervals of zero width.  At 30 people
  (``--people 30``, seed 0, 400 datasets): the match rate covers 90.5%
  (seeds 1 and 2: 94.3%, 94.5%), its 30-vs-200 gap test has size 7.8%
  (seeds 1 and 2: 4.3%, 4.7%), equal groups 3.0%, power 15.5% (it was
  95.0%, 5.5%, 0.0% and 5.0%, with zero-width intervals); the
  nearest-neighbour distance 96.0%, size 3.8% and 2.5%, power 16.8%; the
  effective dimensionality (unchanged) 99.0%, size 1.5% and 0.0%, power 1.5%.
* Attributes (``probes.attribute_estimates``, ``benchmarks/attribute_cases.py``): three
  classes, 1-3 images per person, a reader whose per-person chance of a right read is
  Beta-distributed around each class's recall (ICC 0.2); fidelity pairs each person's real
  read with one reconstruction's, read right more often where the real one is.
* Identity leakage (``probes.inversion.leakage``): each person has an
  identity, one real embedding and one reconstruction that recovers a
  share of the identity (``benchmarks/leakage_cases.py``); the truths are
  population figures from 4,000 simulated people against 8,000 others.
  Success at the group's own FMR is not estimable below about 30 / FMR
  pairs of people (a blank cell), and a crowded group (a third of the
  spread) with the same leakage has the same truth as a spread-out one.

Disparities are checked at equality (two groups with the same truth: the
truth of the gap is 0, of the ratio 1) and at a real gap, with the truth in
the orientation the tool chose (higher estimate first).

Whole runs under the global null (``--null-runs N``)
----------------------------------------------------
Every group has the same truth, so every finding is false.  Each simulated
run has a race-like grouping of five groups, a gender-like grouping of two
and their crossing, with people per race group either balanced (50 each)
or unbalanced (8, 25, 60, 150, 400); the figures are a 5% rate (1-5 images
per person), a 0.5% rate with 20 images per person (few errors, ICC 0.3),
a mean (all over the three groupings), and the verification FMR (3
images per person; race and gender).  All their
disparities are corrected together, as a run corrects them: the table
gives the family-wise error (runs with at least one finding) for Holm and
for Benjamini-Hochberg, and how often a single comparison's p-value is at
most 0.05 and at most 1e-4 against those nominal rates.  Measured
(``--null-only --null-runs 100``, seed 0, 2026-12-03): balanced, Holm 0.0%,
BH 0.0%, p <= 1e-4 at 0.00x nominal; unbalanced, Holm 0.0%, BH 4.0%,
0.00x (200 unbalanced runs: Holm 0.5%, p <= 1e-4 at 0.28x).  Before the
intersections of two or three people were read at their t quantile
(:func:`probes.estimates.expanded_z`) the unbalanced design gave Holm 7.5%
and p <= 1e-4 at 12.6x, every false finding a mean of such a cell.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probes.findings import mark_findings  # noqa: E402
from probes.stats import group_figures  # noqa: E402
from probes.verification import verification_probe  # noqa: E402
from probes.volume import _draw_figures, volume_probe  # noqa: E402
from leakage_cases import Setting, leakage_case, leakage_gap_case  # noqa: E402
from attribute_cases import balanced_accuracy_case, fidelity_case  # noqa: E402

DEFAULT_PEOPLE = (20, 100, 500)
CONFIDENCE = 0.95
RATE_ICC = 0.2
#: Bootstrap draws per interval of a mean (fewer than the audit's 1,000, to keep the benchmark quick;
#: BCa's coverage barely depends on it beyond a few hundred).
N_RESAMPLES = 500

# Verification model: centres N(0, I_8), three images per person, person spread sigma ~ 0.35 * LogNormal(0, 0.3).
DIM = 8
WITHIN_SD = 0.35
SPREAD_SD = 0.3
IMAGES_PER_PERSON = 3
VERIFICATION_THRESHOLD = 1.92     # FMR about 0.9%, FNMR about 17%
THRESHOLD_FMR = 0.02              # estimable from 20 people x 3 images (1,710 pairs >= 30 / 0.02)
#: Impostor pairs the benchmark's verification draws per group (fewer than the audit's 200,000, for speed).
MAX_IMPOSTOR_PAIRS = 20_000

VOLUME_DIM = 16
VOLUME_SD = np.sqrt(np.linspace(0.5, 2.0, VOLUME_DIM))
VOLUME_DRAWS = 30
#: The match threshold of the volume kinds: about 1% of pairs of people match.
VOLUME_THRESHOLD = 4.0


@dataclass(frozen=True)
class Row:
    kind: str
    people: int
    coverage: float
    median_width: float
    n_sims: int
    seconds: float
    #: Intervals of zero width (a figure claimed exact), and the share of intervals that exclude 0
    #: (for a gap between groups of equal truth: the size of the test; with a real gap: its power).
    zero_width: int = 0
    excludes_zero: float = math.nan


# --------------------------------------------------------------------------- simulations

def one_to_five_images(rng: np.random.Generator, n_people: int) -> np.ndarray:
    return rng.integers(1, 6, size=n_people)


def one_or_twenty_images(rng: np.random.Generator, n_people: int) -> np.ndarray:
    """Half the people with 1 image, half with 20: a few people hold most images."""
    return np.where(np.arange(n_people) % 2 == 0, 1, 20)


def images_each(m: int) -> Callable:
    def sizes(rng: np.random.Generator, n_people: int) -> np.ndarray:
        return np.full(n_people, m)
    return sizes


def rates_by(sizes: Callable = one_to_five_images, icc: float = RATE_ICC) -> Callable:
    """A maker of one group's images: ``sizes`` images per person, each person's error probability
    Beta-distributed around ``p`` with intra-person correlation ``icc``."""
    def make(rng: np.random.Generator, n_people: int, p: float, group: str, start: int) -> pd.DataFrame:
        k = sizes(rng, n_people)
        a, b = p * (1 / icc - 1), (1 - p) * (1 / icc - 1)
        per_person = rng.beta(a, b, size=n_people)
        errors = rng.random(k.sum()) < np.repeat(per_person, k)
        return pd.DataFrame({"identity": np.repeat(np.arange(start, start + n_people), k), "race": group,
                             "v": errors.astype(float)})
    return make


#: One group's images: 1-5 per person, each person's error probability Beta-distributed around ``p``.
clustered_rates = rates_by()


def means_by(sizes: Callable = one_to_five_images) -> Callable:
    def make(rng: np.random.Generator, n_people: int, shift: float, group: str, start: int) -> pd.DataFrame:
        """One group's images: a skewed person level (mean ``shift + 1``), ``sizes`` images around it."""
        k = sizes(rng, n_people)
        level = shift + rng.gamma(2.0, 0.5, size=n_people)
        return pd.DataFrame({"identity": np.repeat(np.arange(start, start + n_people), k), "race": group,
                             "v": rng.normal(np.repeat(level, k), 0.5)})
    return make


clustered_means = means_by()


def _two_groups(make: Callable, rng, n_people: int, truths: tuple[float, float], larger: int = 1) -> pd.DataFrame:
    """Groups A (``n_people``) and B (``larger`` times as many people)."""
    return pd.concat([make(rng, n_people, truths[0], "A", 0),
                      make(rng, larger * n_people, truths[1], "B", n_people)], ignore_index=True)


def _figure(figures, group: str, metric: str | None = None):
    return next(f for f in figures if f.group == group and (metric is None or f.metric == metric))


def _disparity(disparities, kind: str, metric: str | None = None):
    return next(d for d in disparities if d.kind == kind and (metric is None or d.metric == metric))


def _oriented(d, truths: dict[str, float], kind: str) -> float:
    """The truth of a disparity in the tool's orientation (its higher-estimate group first)."""
    high = d.worst_group if d.worst_group is not None else "A"
    low = d.best_group
    if kind == "gap":
        return truths[high] - truths[low]
    return truths[high] / truths[low]


def rate_case(p: float, make: Callable = clustered_rates) -> Callable:
    def run(rng, n_people, seed):
        df = make(rng, n_people, p, "A", 0)
        fig = group_figures(df, probe="b", metric="m", value="v", groupings=[], better="lower", kind="rate",
                            seed=seed, disparity_kinds=())[0][0]
        return p, fig.ci_low, fig.ci_high
    return run


def mean_case_by(make: Callable) -> Callable:
    def run(rng, n_people, seed):
        df = make(rng, n_people, 1.0, "A", 0)
        fig = group_figures(df, probe="b", metric="m", value="v", groupings=[], better=None, kind="mean",
                            n_resamples=N_RESAMPLES, seed=seed, disparity_kinds=())[0][0]
        return 2.0, fig.ci_low, fig.ci_high
    return run


mean_case = mean_case_by(clustered_means)


def disparity_case(kind: str, make: Callable, truths: tuple[float, float], value_kind: str,
                   image_truth: Callable[[float], float], larger: int = 1) -> Callable:
    def run(rng, n_people, seed):
        df = _two_groups(make, rng, n_people, truths, larger)
        _, disparities = group_figures(df, probe="b", metric="m", value="v", groupings=[["race"]], better="lower",
                                       kind=value_kind, n_resamples=N_RESAMPLES, seed=seed, disparity_kinds=(kind,))
        d = _disparity(disparities, kind)
        truth = _oriented(d, {"A": image_truth(truths[0]), "B": image_truth(truths[1])}, kind)
        return truth, d.ci_low, d.ci_high
    return run


# --------------------------------------------------------------------------- verification

def _spreads(rng, n):
    return WITHIN_SD * rng.lognormal(0.0, SPREAD_SD, size=n)


def verification_data(rng, n_people: int | dict[str, int], groups: Iterable[str],
                      images: int = IMAGES_PER_PERSON) -> tuple[np.ndarray, pd.DataFrame]:
    """``images`` per person; ``n_people`` per group, or by group name."""
    vectors, rows = [], []
    start, first_person = 0, 0
    for group in groups:
        n = n_people[group] if isinstance(n_people, dict) else n_people
        centres = rng.normal(size=(n, DIM))
        sigma = _spreads(rng, n)
        x = (np.repeat(centres, images, axis=0)
             + np.repeat(sigma, images)[:, None] * rng.normal(size=(n * images, DIM)))
        vectors.append(x)
        rows += [(f"i{start + i}", first_person + i // images, group) for i in range(len(x))]
        start += len(x)
        first_person += n
    return np.vstack(vectors), pd.DataFrame(rows, columns=["image_id", "identity", "race"])


class VerificationTruth:
    """True FNMR, FMR and threshold at FMR of the verification model, integrated over person spreads."""

    def __init__(self, n: int = 400_000, seed: int = 12345) -> None:
        rng = np.random.default_rng(seed)
        self.s = _spreads(rng, n) ** 2
        self.pair = 2 + _spreads(rng, n) ** 2 + _spreads(rng, n) ** 2

    def fnmr(self, t: float) -> float:
        return float(np.mean(stats.chi2.sf(t ** 2 / (2 * self.s), DIM)))

    def fmr(self, t: float) -> float:
        return float(np.mean(stats.chi2.cdf(t ** 2 / self.pair, DIM)))

    def threshold(self, f: float) -> float:
        from scipy.optimize import brentq

        return float(brentq(lambda t: self.fmr(t) - f, 0.1, 10.0, xtol=1e-10))


_TRUTHS: dict[float, dict[str, float]] = {}


def _verification_truths(target_fmr: float = THRESHOLD_FMR) -> dict[str, float]:
    """The model's true figures, computed once per target FMR."""
    if target_fmr not in _TRUTHS:
        truth = VerificationTruth()
        _TRUTHS[target_fmr] = {"fnmr_at_default": truth.fnmr(VERIFICATION_THRESHOLD),
                               "fmr_at_default": truth.fmr(VERIFICATION_THRESHOLD),
                               "threshold_at_fmr_{label}": truth.threshold(target_fmr)}
    return _TRUTHS[target_fmr]


def verification_case(metric: str, kind: str | None = None, *, larger: int = 1, images: int = IMAGES_PER_PERSON,
                      target_fmr: float = THRESHOLD_FMR, max_pairs: int = MAX_IMPOSTOR_PAIRS) -> Callable:
    label = f"{target_fmr:.0e}".replace("e-0", "e-")

    def run(rng, n_people, seed):
        x, df = verification_data(rng, {"A": n_people, "B": larger * n_people}, ("A", "B") if kind else ("A",),
                                  images)
        res = verification_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=VERIFICATION_THRESHOLD,
                                 target_fmr=target_fmr, seed=seed, max_impostor_pairs=max_pairs,
                                 max_cross_pairs=100)
        name = metric.replace("{label}", label)
        if kind is None:
            fig = _figure([f for f in res.figures if f.grouping == "race"], "A", name)
            if "not_estimable" in fig.flags:
                return math.nan, math.nan, math.nan
            value = _verification_truths(target_fmr)[name.replace(label, "{label}")]
            return value, fig.ci_low, fig.ci_high
        d = _disparity(res.disparities, kind, name)
        return (0.0 if kind == "gap" else 1.0), d.ci_low, d.ci_high
    return run


# --------------------------------------------------------------------------- volume

_VOLUME_TRUTH: dict[int, float] = {}


def volume_truth(m: int, reps: int = 2000) -> float:
    """The log volume per dimension of ``m`` people from the population, by simulation."""
    if m not in _VOLUME_TRUTH:
        rng = np.random.default_rng(777)
        values = []
        for _ in range(reps):
            x = rng.normal(size=(m, VOLUME_DIM)) * VOLUME_SD
            values.append(_draw_figures(x, x, np.arange(m), metric="euclidean", threshold=4.0)[0]["log_volume_per_dim"])
        _VOLUME_TRUTH[m] = float(np.mean(values))
    return _VOLUME_TRUTH[m]


def volume_case(ratio: int, kind: str | None = None) -> Callable:
    """A group of ``ratio * m`` people measured on subsamples of ``m`` = n_people / 2 (the size the
    smallest group sets) -- ``ratio`` 2 is that smallest group, 10 a group five times larger."""
    def run(rng, n_people, seed):
        m = max(3, n_people // 2)
        n = ratio * m
        groups = ("A", "B") if kind else ("A",)
        x = rng.normal(size=(n * len(groups), VOLUME_DIM)) * VOLUME_SD
        df = pd.DataFrame({"identity": np.arange(len(x)), "race": np.repeat(groups, n)})
        res = volume_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=4.0, subsample_size=m,
                           n_draws=VOLUME_DRAWS, seed=seed)
        if kind is None:
            fig = _figure([f for f in res.figures if f.grouping == "race"], "A", "log_volume_per_dim")
            return volume_truth(m), fig.ci_low, fig.ci_high
        d = _disparity(res.disparities, kind, "log_volume_per_dim")
        return 0.0, d.ci_low, d.ci_high
    return run


#: The volume figures checked one by one (beside the log volume above), and what each needs of the data.
VOLUME_FIGURES = ("impostor_match_rate", "effective_dimensionality", "nn_distance_impostor")
#: How much a crowded group's embeddings are shrunk, and the flatter spectrum of a "rounder" group.
CROWDED_SCALE = 0.93
ROUNDER_SD = np.sqrt(np.linspace(0.8, 1.6, VOLUME_DIM))
_FIGURE_TRUTH: dict[tuple, float] = {}


def figure_truth(metric: str, m: int, scale: float = 1.0, rounder: bool = False, reps: int = 2000) -> float:
    """A volume figure of ``m`` people drawn from the population (scaled by ``scale``; with the flatter
    spectrum if ``rounder``), by simulation: the match rate from 400,000 pairs, the others as the
    mean over ``reps`` samples of ``m``."""
    key = (metric, m, scale, rounder)
    if key not in _FIGURE_TRUTH:
        rng = np.random.default_rng(778)
        sd = (ROUNDER_SD if rounder else VOLUME_SD) * scale
        if metric == "impostor_match_rate":
            a, b = rng.normal(size=(2, 400_000, VOLUME_DIM)) * sd
            _FIGURE_TRUTH[key] = float(np.mean(np.linalg.norm(a - b, axis=1) <= VOLUME_THRESHOLD))
        else:
            values = [_draw_figures(x, x, np.arange(m), metric="euclidean", threshold=VOLUME_THRESHOLD)[0][metric]
                      for x in (rng.normal(size=(m, VOLUME_DIM)) * sd for _ in range(reps))]
            _FIGURE_TRUTH[key] = float(np.mean(values))
    return _FIGURE_TRUTH[key]


def volume_figure_case(metric: str, second: float | None = None, change: str | None = None) -> Callable:
    """One volume figure of one group of ``n_people`` people (``second`` None), or its gap between that
    group and one of ``second * n_people`` people, both measured on subsamples of ``m = n_people / 2``.
    ``change``: the second group is ``"crowded"`` (shrunk by :data:`CROWDED_SCALE`) or ``"rounder"``
    (a flatter spectrum); None: the same population (the truth of the gap is 0)."""
    def run(rng, n_people, seed):
        m = max(3, n_people // 2)
        sizes = [n_people] + ([int(round(second * n_people))] if second else [])
        settings = [{}, {"scale": CROWDED_SCALE} if change == "crowded" else
                    {"rounder": True} if change == "rounder" else {}][:len(sizes)]
        xs = []
        for n, setting in zip(sizes, settings):
            sd = (ROUNDER_SD if setting.get("rounder") else VOLUME_SD) * setting.get("scale", 1.0)
            xs.append(rng.normal(size=(n, VOLUME_DIM)) * sd)
        x = np.vstack(xs)
        df = pd.DataFrame({"identity": np.arange(len(x)), "race": np.repeat(["A", "B"][:len(sizes)], sizes)})
        res = volume_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=VOLUME_THRESHOLD,
                           subsample_size=m, n_draws=VOLUME_DRAWS, seed=seed)
        truths = {g: figure_truth(metric, m, **setting) for g, setting in zip("AB", settings)}
        if not second:
            fig = _figure([f for f in res.figures if f.grouping == "race"], "A", metric)
            return truths["A"], fig.ci_low, fig.ci_high
        d = _disparity(res.disparities, "gap", metric)
        # The gap is the higher estimate minus the lower (whichever figure is "better"), and so its truth.
        value = {f.group: f.value for f in res.figures if f.grouping == "race" and f.metric == metric}
        high, low = sorted("AB", key=lambda g: value[g], reverse=True)
        return truths[high] - truths[low], d.ci_low, d.ci_high
    return run


def _identity(value: float) -> float:
    return value


def _mean_truth(shift: float) -> float:
    return shift + 1.0


@dataclass(frozen=True)
class Case:
    """A simulation ``(rng, people per group, seed) -> (truth, ci_low, ci_high)`` and its datasets per cell.

    Cheap kinds run more datasets: a coverage from ``n`` datasets is itself
    uncertain by about ``sqrt(0.95 * 0.05 / n)`` (1 point at 500, 0.5 at 2,000).
    """

    run: Callable
    sims: int


CHEAP, MEDIUM, COSTLY = 2000, 600, 400
#: The leakage figures refit a threshold in every bootstrap draw: a few seconds per dataset at 500 people.
LEAKAGE = 300

CASES: dict[str, Case] = {
    "rate 2%": Case(rate_case(0.02), CHEAP),
    "rate 20%": Case(rate_case(0.20), CHEAP),
    "mean": Case(mean_case, CHEAP),
    "verification FNMR": Case(verification_case("fnmr_at_default"), MEDIUM),
    "verification FMR": Case(verification_case("fmr_at_default"), MEDIUM),
    "threshold at FMR 2%": Case(verification_case("threshold_at_fmr_{label}"), MEDIUM),
    "gap: rates 2% = 2%": Case(disparity_case("gap", clustered_rates, (0.02, 0.02), "rate", _identity), CHEAP),
    "ratio: rates 2% = 2%": Case(disparity_case("ratio", clustered_rates, (0.02, 0.02), "rate", _identity), CHEAP),
    "gap: rates 20% = 20%": Case(disparity_case("gap", clustered_rates, (0.20, 0.20), "rate", _identity), CHEAP),
    "ratio: rates 20% = 20%": Case(disparity_case("ratio", clustered_rates, (0.20, 0.20), "rate", _identity),
                                   CHEAP),
    "gap: rates 20% vs 30%": Case(disparity_case("gap", clustered_rates, (0.20, 0.30), "rate", _identity), CHEAP),
    "ratio: rates 20% vs 30%": Case(disparity_case("ratio", clustered_rates, (0.20, 0.30), "rate", _identity),
                                    CHEAP),
    "gap: means equal": Case(disparity_case("gap", clustered_means, (1.0, 1.0), "mean", _mean_truth), CHEAP),
    "gap: means 2.0 vs 2.5": Case(disparity_case("gap", clustered_means, (1.0, 1.5), "mean", _mean_truth), CHEAP),
    "FMR gap: groups equal": Case(verification_case("fmr_at_default", "gap"), MEDIUM),
    "FNMR ratio: groups equal": Case(verification_case("fnmr_at_default", "ratio"), MEDIUM),
    "volume: group of 2m": Case(volume_case(2), COSTLY),
    "volume: group of 10m": Case(volume_case(10), COSTLY),
    "volume gap: groups equal": Case(volume_case(2, "gap"), COSTLY),
    "rate 10% (1 or 20 images)": Case(rate_case(0.10, rates_by(one_or_twenty_images, 0.3)), CHEAP),
    "rate 0.1% (20 images each)": Case(rate_case(0.001, rates_by(images_each(20), 0.3)), CHEAP),
    "rate 1% (80 images each)": Case(rate_case(0.01, rates_by(images_each(80), 0.3)), MEDIUM),
    "mean (1 or 20 images)": Case(mean_case_by(means_by(one_or_twenty_images)), CHEAP),
    "gap: rates 10% = 10% (1 or 20 images)": Case(disparity_case("gap", rates_by(one_or_twenty_images, 0.3), (0.1, 0.1),
                                                             "rate", _identity), CHEAP),
    "gap: rates 5% = 5% (20x people)": Case(disparity_case("gap", clustered_rates, (0.05, 0.05), "rate", _identity,
                                                          larger=20), MEDIUM),
    "FMR gap: groups equal (8x people)": Case(verification_case("fmr_at_default", "gap", larger=8), COSTLY // 4),
    "threshold at FMR 0.1% (80 images each)": Case(verification_case("threshold_at_fmr_{label}", images=80,
                                                              target_fmr=1e-3, max_pairs=60_000), COSTLY // 4),
    **{kind: case for metric in VOLUME_FIGURES for kind, case in (
        (f"{metric}: group of 2m", Case(volume_figure_case(metric), COSTLY)),
        (f"{metric} gap: n vs 6.7n", Case(volume_figure_case(metric, 20 / 3), COSTLY)),
        (f"{metric} gap: groups equal", Case(volume_figure_case(metric, 1.0), COSTLY)),
        (f"{metric} gap: real difference", Case(volume_figure_case(
            metric, 1.0, "rounder" if metric == "effective_dimensionality" else "crowded"), COSTLY)))},
    "leakage: success at own FMR 10%": Case(leakage_case("sar_at_own_fmr_1e-1"), LEAKAGE),
    "leakage: success at own FMR 1%": Case(leakage_case("sar_at_own_fmr_1e-2"), LEAKAGE),
    "leakage: success at own FMR 0.1%": Case(leakage_case("sar_at_own_fmr_1e-3"), LEAKAGE),
    "leakage: rank 1 in equal gallery": Case(leakage_case("rank1_equal_gallery"), LEAKAGE),
    "leakage: AUC": Case(leakage_case("leakage_auc"), LEAKAGE),
    "leakage AUC gap: crowded = spread": Case(leakage_gap_case("leakage_auc", Setting(spread=0.35),
                                                               Setting(spread=1.0)), LEAKAGE),
    "leakage rank-1 gap: 0.6 vs 0.8": Case(leakage_gap_case("rank1_equal_gallery", Setting(leak=0.6),
                                                            Setting(leak=0.8)), LEAKAGE),
    "attribute balanced accuracy": Case(balanced_accuracy_case(), CHEAP),
    "attribute fidelity": Case(fidelity_case(), CHEAP),
}


def coverage(kind: str, n_people: int, n_sims: int | None = None, seed: int = 0) -> Row:
    """Run ``n_sims`` (default: the kind's own number) seeded simulations of one kind; coverage and
    median width of its intervals."""
    case = CASES[kind].run
    n_sims = CASES[kind].sims if n_sims is None else n_sims
    rng = np.random.default_rng([seed, n_people, sum(map(ord, kind))])
    started = time.monotonic()
    hits, widths, undefined, zero_width, excludes = 0, [], 0, 0, 0
    for i in range(n_sims):
        truth, low, high = case(rng, n_people, i)
        if not (math.isfinite(low) and math.isfinite(high)):
            widths.append(math.inf)
            undefined += 1
            continue
        hits += low <= truth <= high
        widths.append(high - low)
        zero_width += high == low
        excludes += not low <= 0.0 <= high
    if undefined == n_sims:   # not estimable at this size (e.g. a threshold at FMR f from too few pairs)
        return Row(kind, n_people, math.nan, math.nan, n_sims, time.monotonic() - started)
    return Row(kind, n_people, hits / n_sims, float(np.median(widths)), n_sims, time.monotonic() - started,
               zero_width, excludes / n_sims)


def coverage_table(kinds: Iterable[str] = tuple(CASES), people: Iterable[int] = DEFAULT_PEOPLE,
                   n_sims: int | None = None, seed: int = 0, progress: bool = False) -> list[Row]:
    rows = []
    for kind in kinds:
        for n in people:
            rows.append(coverage(kind, n, n_sims, seed))
            if progress:
                r = rows[-1]
                print(f"  {r.kind:<40} {r.people:>4} people: {100 * r.coverage:5.1f}%  ({r.seconds:.0f} s)",
                      file=sys.stderr, flush=True)
    return rows


# --------------------------------------------------------------------------- whole runs under the null

BALANCED_RACES = {"r1": 50, "r2": 50, "r3": 50, "r4": 50, "r5": 50}
UNBALANCED_RACES = {"r1": 8, "r2": 25, "r3": 60, "r4": 150, "r5": 400}
NULL_GROUPINGS = [["race"], ["gender"], ["race", "gender"]]


@dataclass(frozen=True)
class NullRow:
    design: str
    runs: int
    comparisons_per_run: float
    fwer_holm: float
    fwer_bh: float
    share_p_05: float
    share_p_1e4: float
    seconds: float


def _null_people(rng, races: dict[str, int], make: Callable, truth: float) -> pd.DataFrame:
    frames, start = [], 0
    for race, n in races.items():
        df = make(rng, n, truth, race, start)
        frames.append(df)
        start += n
    df = pd.concat(frames, ignore_index=True)
    gender = rng.integers(0, 2, size=start)     # one gender per person, independent of everything
    df["gender"] = np.where(gender[df["identity"].to_numpy()] == 0, "f", "m")
    return df


def null_run(rng, races: dict[str, int], seed: int) -> list:
    """Every disparity of one simulated run in which all groups share the truth (see the module docstring)."""
    disparities = []
    for make, truth, kind in ((clustered_rates, 0.05, "rate"), (rates_by(images_each(20), 0.3), 0.005, "rate"),
                              (clustered_means, 1.0, "mean")):
        df = _null_people(rng, races, make, truth)
        _, d = group_figures(df, probe="b", metric=f"{kind}{truth}", value="v", groupings=NULL_GROUPINGS,
                             better="lower", kind=kind, n_resamples=N_RESAMPLES, seed=seed)
        disparities += d
    x, df = verification_data(rng, races, tuple(races))
    df["gender"] = np.where(rng.integers(0, 2, size=int(df["identity"].max()) + 1)[df["identity"]] == 0, "f", "m")
    # the FMR over race and gender only: the crossed groups' threshold searches would triple the time
    res = verification_probe(x, df, groupings=NULL_GROUPINGS[:2], metric="euclidean", threshold=VERIFICATION_THRESHOLD,
                             target_fmr=THRESHOLD_FMR, seed=seed, max_impostor_pairs=MAX_IMPOSTOR_PAIRS,
                             max_cross_pairs=100)
    disparities += [d for d in res.disparities if d.metric == "fmr_at_default"]
    return disparities


def null_family_error(races: dict[str, int], runs: int, seed: int = 0, design: str = "") -> NullRow:
    rng = np.random.default_rng([seed, sum(races.values())])
    started = time.monotonic()
    holm = bh = 0
    n_p = n_05 = n_1e4 = 0
    for i in range(runs):
        disparities = null_run(rng, races, i)
        holm += mark_findings(disparities, "holm")["n_findings"] > 0
        bh += mark_findings(disparities, "bh")["n_findings"] > 0
        p = np.array([d.p_value for d in disparities if d.p_value is not None and math.isfinite(d.p_value)])
        n_p += len(p)
        n_05 += int(np.sum(p <= 0.05))
        n_1e4 += int(np.sum(p <= 1e-4))
    return NullRow(design, runs, n_p / runs, holm / runs, bh / runs, n_05 / max(n_p, 1), n_1e4 / max(n_p, 1),
                   time.monotonic() - started)


def format_null_table(rows: list[NullRow]) -> str:
    head = (f"{'design':<40}{'runs':>6}{'comparisons':>13}{'FWER Holm':>11}{'FWER BH':>9}"
            f"{'p<=0.05':>9}{'p<=1e-4':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.design:<40}{r.runs:>6}{r.comparisons_per_run:>13.0f}{100 * r.fwer_holm:>10.1f}%"
                     f"{100 * r.fwer_bh:>8.1f}%{100 * r.share_p_05:>8.2f}%{1e4 * r.share_p_1e4:>9.2f}x")
    lines.append("\nEvery group shares the truth: every finding is false.  FWER = runs with at least one finding "
                 "(nominal at most 5%); p<=0.05 = share of single comparisons (nominal 5%, lower for the "
                 "discrete rates); p<=1e-4 = share over the nominal 1e-4 (at most 2x).")
    return "\n".join(lines)


def format_table(rows: list[Row]) -> str:
    """One line per kind: datasets per cell, then at each group size the coverage, the median width,
    the intervals of zero width and the share of intervals excluding 0 (a gap's rejection rate)."""
    people = sorted({r.people for r in rows})
    kinds = list(dict.fromkeys(r.kind for r in rows))
    by = {(r.kind, r.people): r for r in rows}
    cell = 36
    head = f"{'kind':<46}{'sims':>6}" + "".join(f"{f'{n} people':>{cell}}" for n in people)
    sub = f"{'':<52}" + "".join(f"{'coverage   width  zero-w  excl. 0':>{cell}}" for _ in people)
    lines = [head, sub, "-" * len(head)]
    for kind in kinds:
        cells = []
        for n in people:
            r = by.get((kind, n))
            if r is not None and math.isnan(r.coverage):
                cells.append(f"{'not estimable':>{cell}}")
            elif r:
                cells.append(f"{100 * r.coverage:>14.1f}%  {r.median_width:>7.3g}  {r.zero_width:>6d}  "
                             f"{100 * r.excludes_zero:>6.1f}%")
            else:
                cells.append(f"{'':>{cell}}")
        sims = max(r.n_sims for r in rows if r.kind == kind)
        lines.append(f"{kind:<46}{sims:>6}" + "".join(cells))
    lines.append("\nNominal coverage 95%; width = median width of the interval (rates as fractions, volume in "
                 "log units per dimension); zero-w = intervals of zero width; excl. 0 = share of intervals "
                 "without 0 (for a gap of truth 0: the size of the test at 5%; with a real gap: its power).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=None,
                        help="simulated datasets per cell (default: 2,000 for rates and means, 600 for "
                             "verification, 400 for volume, 300 for identity leakage)")
    parser.add_argument("--people", default=",".join(map(str, DEFAULT_PEOPLE)), help="people per group, e.g. 20,100")
    parser.add_argument("--kinds", default=None,
                        help=("comma-separated kinds (default: all): " + "; ".join(CASES)).replace("%", "%%"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--null-runs", type=int, default=0,
                        help="also simulate this many whole runs under the global null, balanced and unbalanced "
                             "groups, and print their family-wise error (e.g. 100)")
    parser.add_argument("--null-only", action="store_true", help="only the global-null table")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",")] if args.kinds else list(CASES)
    unknown = [k for k in kinds if k not in CASES]
    if unknown:
        parser.error(f"unknown kinds {unknown}; choose from: {', '.join(CASES)}")
    people = [int(p) for p in args.people.split(",")]
    if not args.null_only:
        print(format_table(coverage_table(kinds, people, args.sims, args.seed, progress=True)))
    if args.null_runs or args.null_only:
        runs = args.null_runs or 100
        rows = [null_family_error(BALANCED_RACES, runs, args.seed, "balanced: 5 x 50 people"),
                null_family_error(UNBALANCED_RACES, runs, args.seed, "unbalanced: 8, 25, 60, 150, 400 people")]
        print()
        print(format_null_table(rows))


if __name__ == "__main__":
    main()
