"""probes.volume: known covariances, equal-size subsampling, small groups."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from audit.distances import cross_distances
from audit.errors import InputError
from audit.json_model import to_json
from audit.results import FLAG_SMALL_GROUP, FLAG_UNDEFINED
from probes.volume import volume_probe


def clouds(rng, groups: dict[str, tuple[int, np.ndarray]], *, images=1, within_sd=0.0):
    """groups: name -> (people, per-axis standard deviations of the people's centres)."""
    rows, vectors = [], []
    for name, (n, sd) in groups.items():
        for i in range(n):
            centre = rng.normal(size=len(sd)) * sd
            for _ in range(images):
                vectors.append(centre + within_sd * rng.normal(size=len(sd)))
                rows.append((f"{name}{i}", name))
    return np.array(vectors), pd.DataFrame(rows, columns=["identity", "race"])


def figs(result, metric):
    return {f.group: f for f in result.figures if f.metric == metric}


def test_log_volume_and_effective_dimensionality_match_a_known_covariance():
    rng = np.random.default_rng(0)
    sd = np.sqrt(np.linspace(0.5, 2.0, 8))  # variances 0.5 .. 2.0
    x, df = clouds(rng, {"A": (1200, sd)})
    res = volume_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=1.0,
                       subsample_size=1000, n_draws=5)
    lam = sd ** 2
    assert figs(res, "log_volume_per_dim")["A"].value == pytest.approx(0.5 * np.mean(np.log(lam)), abs=0.03)
    truth_pr = lam.sum() ** 2 / np.sum(lam ** 2)
    assert figs(res, "effective_dimensionality")["A"].value == pytest.approx(truth_pr, rel=0.05)
    # a group twice as wide along every axis has log(2) more log-volume per dimension
    x2, df2 = clouds(rng, {"A": (1200, sd), "B": (1200, 2 * sd)})
    res2 = volume_probe(x2, df2, groupings=[["race"]], metric="euclidean", threshold=1.0,
                        subsample_size=1000, n_draws=5)
    lv = figs(res2, "log_volume_per_dim")
    assert lv["B"].value - lv["A"].value == pytest.approx(math.log(2), abs=0.05)
    rel = figs(res2, "relative_log_volume_per_dim")
    assert rel["all"].value == 0 and rel["A"].value < 0 < rel["B"].value
    gap = next(d for d in res2.disparities if d.metric == "log_volume_per_dim")
    assert (gap.kind, gap.worst_group, gap.best_group) == ("gap", "A", "B")
    assert gap.ci_low > 0.5  # log(2) = 0.69
    assert not [d for d in res2.disparities if d.metric == "relative_log_volume_per_dim"]


def test_spread_ratio_is_total_over_within_spread():
    rng = np.random.default_rng(1)
    x, df = clouds(rng, {"A": (300, np.full(6, 2.0))}, images=4, within_sd=1.0)
    res = volume_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=1.0,
                       subsample_size=300, n_draws=2)
    assert figs(res, "spread_ratio")["A"].value == pytest.approx(math.sqrt((4 + 1) / 1), rel=0.05)
    # one image per person: no within-person spread to compare with
    x1, df1 = clouds(rng, {"A": (50, np.ones(4))})
    f = figs(volume_probe(x1, df1, groupings=[["race"]], metric="cosine", threshold=0.5,
                          n_draws=2), "spread_ratio")["A"]
    assert math.isnan(f.value) and FLAG_UNDEFINED in f.flags


def test_equal_size_subsampling_removes_the_dependence_on_group_size():
    rng = np.random.default_rng(2)
    sd = np.ones(16)
    x, df = clouds(rng, {"small": (50, sd), "large": (500, sd)})
    res = volume_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=4.0, n_draws=20)
    assert res.details.subsample_size == 25   # half the smallest group
    for metric in ("log_volume_per_dim", "nn_distance_impostor", "effective_dimensionality"):
        gap = next(d for d in res.disparities if d.metric == metric and d.kind == "gap")
        assert gap.ci_low <= 0 <= gap.ci_high, metric  # same distribution: no difference
    # the naive figure on all people differs by far more than those intervals
    def naive_nn(group):
        d = cross_distances(x[df.race == group], x[df.race == group], "euclidean")
        np.fill_diagonal(d, np.inf)
        return d.min(axis=1).mean()
    nn = next(d for d in res.disparities if d.metric == "nn_distance_impostor" and d.kind == "gap")
    assert naive_nn("small") - naive_nn("large") > nn.ci_high


def test_groups_smaller_than_the_subsample_are_flagged_and_undefined():
    rng = np.random.default_rng(3)
    x, df = clouds(rng, {"A": (40, np.ones(4)), "B": (40, np.ones(4)), "C": (5, np.ones(4))})
    res = volume_probe(x, df, groupings=[["race"]], metric="cosine", threshold=0.3, n_draws=3)
    assert to_json(res.details)["subsample_size"] == 20  # half of 40: C has fewer than 30 people, not eligible
    c = figs(res, "log_volume_per_dim")["C"]
    assert math.isnan(c.value) and {FLAG_SMALL_GROUP, FLAG_UNDEFINED} <= set(c.flags)
    assert c.n_people == 5
    assert not math.isnan(figs(res, "log_volume_per_dim")["A"].value)
    json.dumps(to_json(res.details))  # JSON-serialisable
    assert set(to_json(res.details)["spectra"]) == {"all: all", "race: A", "race: B"}


def test_bad_embeddings_say_what_to_pass():
    df = pd.DataFrame({"identity": ["a", "b"], "race": ["A", "B"]})
    with pytest.raises(InputError, match=r"embeddings has 3 rows but samples has 2"):
        volume_probe(np.zeros((3, 4)), df, groupings=[["race"]], metric="cosine", threshold=0.5)
    with pytest.raises(InputError, match=r"Expected a 2D array of embeddings"):
        volume_probe(np.zeros(2), df, groupings=[["race"]], metric="cosine", threshold=0.5)
    with pytest.raises(InputError, match=r"subsample_size=1, must be a whole number >= 3"):
        volume_probe(np.zeros((2, 4)), df, groupings=[["race"]], metric="cosine", threshold=0.5,
                     subsample_size=1)


@pytest.mark.parametrize("n, d", [(40, 16), (12, 64)])
def test_log_volume_equals_scikit_learns_ledoit_wolf(n, d):
    """The eigenvalue shortcut gives LedoitWolf's log-determinant, with fewer samples than dimensions too."""
    from sklearn.covariance import LedoitWolf

    from probes.volume import log_volume_per_dim

    x = np.random.default_rng(n).normal(size=(n, d)) * np.linspace(0.5, 2.0, d)
    sign, logdet = np.linalg.slogdet(LedoitWolf().fit(x).covariance_)
    assert sign > 0
    assert log_volume_per_dim(x) == pytest.approx(0.5 * logdet / d, rel=1e-9, abs=1e-12)


def test_the_smallest_groups_interval_does_not_collapse():
    """Half-size subsamples: even the group that sets the size gets different people per draw."""
    rng = np.random.default_rng(5)
    x, df = clouds(rng, {"small": (40, np.ones(8)), "large": (400, np.ones(8))})
    res = volume_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=2.0, n_draws=30)
    for metric in ("log_volume_per_dim", "nn_distance_impostor", "effective_dimensionality"):
        small = figs(res, metric)["small"]
        assert small.ci_high - small.ci_low > 1e-3 * abs(small.value), metric


def _log_volume_figures(rng, n_people: int, size: int, n_datasets: int, seed0: int = 0):
    sd = np.ones(8)
    out = []
    for i in range(n_datasets):
        x, df = clouds(rng, {"A": (n_people, sd)})
        res = volume_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=3.0, subsample_size=size,
                           n_draws=20, seed=seed0 + i)
        out.append(figs(res, "log_volume_per_dim")["A"])
    return out


def test_a_large_groups_interval_is_as_wide_as_its_figure_varies_not_as_one_subsample():
    """The spread of single subsamples of 10 people overstates the uncertainty of the mean over draws
    from 100 people about 3x; rescaled by sqrt(m / (n - m) + 1 / B) it matches the figure's real spread."""
    rng = np.random.default_rng(11)
    found = _log_volume_figures(rng, 100, 10, 40)
    spread = np.std([f.value for f in found], ddof=1)
    implied = np.mean([(f.ci_high - f.ci_low) / (2 * 1.96) for f in found])
    assert 0.7 < implied / spread < 1.4, implied / spread


def test_a_group_just_above_the_subsample_size_gets_a_wider_interval_not_a_narrow_one():
    """15 people measured on subsamples of 10 overlap heavily; the interval must still cover the truth."""
    from probes.volume import _draw_figures

    rng = np.random.default_rng(12)
    truth = np.mean([_draw_figures(x, x, np.arange(10), metric="euclidean", threshold=3.0)[0]["log_volume_per_dim"]
                     for x in (rng.normal(size=(10, 8)) for _ in range(800))])
    found = _log_volume_figures(rng, 15, 10, 60)
    hits = np.mean([f.ci_low <= truth <= f.ci_high for f in found])
    assert hits >= 0.88, hits
    assert all(f.ci_high - f.ci_low > 0 for f in found)


# --------------------------------------------------------------------------- the pair figures, on everyone

def test_a_group_without_a_single_match_still_gets_an_interval_of_positive_width():
    """Every subsample has no match: the draws alone would give [0, 0] (a rate claimed exact)."""
    rng = np.random.default_rng(3)
    x, df = clouds(rng, {"A": (40, np.full(8, 10.0)), "B": (40, np.full(8, 10.0))})
    res = volume_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=0.01, n_draws=10)
    for fig in figs(res, "impostor_match_rate").values():
        assert fig.value == 0.0 and fig.count == 0
        assert fig.ci_low == 0.0 and fig.ci_high > 0.0
    gap = next(d for d in res.disparities if d.metric == "impostor_match_rate" and d.kind == "gap")
    assert gap.ci_high > gap.ci_low


def test_draws_that_are_all_equal_give_no_interval_not_a_zero_width_one():
    from probes.volume import subsample_estimate
    estimate = subsample_estimate(np.full(20, 0.25), n_people=100, size=20)
    assert estimate.value == 0.25 and math.isnan(estimate.standard_error)


def test_the_nearest_neighbour_figure_is_the_mean_over_every_subsample():
    from probes.volume import _draw_figures, nearest_neighbour_mean, nearest_neighbour_weights
    rng = np.random.default_rng(4)
    x = rng.normal(size=(24, 5))
    d = cross_distances(x, x, "euclidean")
    assert nearest_neighbour_weights(24, 12).sum() == pytest.approx(1.0)
    draws = [_draw_figures(x[s], x[s], np.arange(12), metric="euclidean", threshold=1.0)[0]["nn_distance_impostor"]
             for s in (rng.choice(24, 12, replace=False) for _ in range(6000))]
    assert nearest_neighbour_mean(d, 12) == pytest.approx(np.mean(draws), rel=0.005)
    # A subsample of everyone: the plain mean nearest-neighbour distance.
    plain = np.sort(d + np.diag(np.full(24, np.inf)), axis=1)[:, 0].mean()
    assert nearest_neighbour_mean(d, 24) == pytest.approx(plain)


def test_the_match_rate_variance_is_hoeffdings_unbiased_one():
    """Brute force on a small group: the unbiased estimates of p^2 and of the shared-person moment."""
    from itertools import combinations, permutations
    from probes.volume import match_rate_estimate
    rng = np.random.default_rng(6)
    n = 8
    upper = np.triu(rng.random((n, n)) < 0.4, 1)
    m = upper | upper.T
    pairs = list(combinations(range(n), 2))
    h = {p: float(m[p]) for p in pairs}
    p = np.mean(list(h.values()))
    shared = [h[a] * h[b] for a, b in permutations(pairs, 2) if len(set(a) & set(b)) == 1]
    disjoint = [h[a] * h[b] for a, b in permutations(pairs, 2) if not set(a) & set(b)]
    z1 = np.mean(shared) - np.mean(disjoint)
    z2 = p - np.mean(disjoint)
    expected = (4 * (n - 2) * z1 + 2 * z2) / (n * (n - 1))
    estimate = match_rate_estimate(m)
    assert estimate.value == pytest.approx(p) and estimate.variance == pytest.approx(expected)
