"""probes.stats: per-group figures, people-resampling intervals, disparities, permutation test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from audit.errors import InputError
from audit.results import FLAG_FEW_ERRORS, FLAG_SMALL_GROUP, FLAG_UNDEFINED
from probes.stats import (
    DEFAULT_MIN_PEOPLE,
    figures_frame,
    group_figures,
    permutation_test,
)


def make_samples(rng, groups: dict[str, tuple[int, float]], *, images=(1, 5), person_sd=1.0,
                 image_sd=0.5) -> pd.DataFrame:
    """groups: name -> (number of people, true mean); person effects make images correlated."""
    rows = []
    pid = 0
    for name, (n_people, mean) in groups.items():
        for _ in range(n_people):
            effect = rng.normal(mean, person_sd)
            k = rng.integers(images[0], images[1] + 1)
            for v in rng.normal(effect, image_sd, size=k):
                rows.append((f"p{pid}", name, "F" if pid % 2 else "M", v))
            pid += 1
    return pd.DataFrame(rows, columns=["identity", "race", "gender", "v"])


def by_group(figures):
    return {(f.grouping, f.group): f for f in figures}


def test_values_and_counts_are_image_level_means_with_people_counted():
    df = pd.DataFrame({"identity": ["a", "a", "a", "b", "c", "c"],
                       "race": ["X", "X", "X", "X", "Y", "Y"],
                       "v": [1.0, 1.0, 0.0, 0.0, 1.0, np.nan]})
    figs, _ = group_figures(df, probe="p", metric="m", value="v", groupings=[["race"]],
                            better="lower", kind="rate", n_resamples=50)
    assert (figs[0].grouping, figs[0].group) == ("all", "all")
    g = by_group(figs)
    assert g["all", "all"].value == pytest.approx(3 / 5)
    assert (g["all", "all"].n_images, g["all", "all"].n_people, g["all", "all"].count) == (5, 3, 3)
    assert g["race", "X"].value == pytest.approx(2 / 4)
    assert (g["race", "X"].n_images, g["race", "X"].n_people, g["race", "X"].count) == (4, 2, 2)
    assert (g["race", "Y"].n_images, g["race", "Y"].n_people) == (1, 1)  # the NaN row is left out
    assert math.isnan(g["race", "Y"].ci_low)  # one person: no interval


def test_duplicating_images_of_the_same_people_does_not_narrow_the_interval():
    rng = np.random.default_rng(3)
    df = make_samples(rng, {"A": (80, 0.0)}, images=(1, 1))
    ten = pd.concat([df] * 10, ignore_index=True)
    kw = dict(probe="p", metric="m", value="v", groupings=[], better=None, seed=5, n_resamples=300)
    one = group_figures(df, **kw)[0][0]
    many = group_figures(ten, **kw)[0][0]
    assert many.n_images == 10 * one.n_images and many.n_people == one.n_people
    assert many.ci_low == pytest.approx(one.ci_low) and many.ci_high == pytest.approx(one.ci_high)


def test_bca_interval_agrees_with_scipy_bootstrap_on_per_person_sums():
    rng = np.random.default_rng(11)
    df = make_samples(rng, {"A": (60, 1.0)})
    fig = group_figures(df, probe="p", metric="m", value="v", groupings=[], better=None,
                        n_resamples=4000, seed=1)[0][0]
    per = df.groupby("identity")["v"].agg(["sum", "count"])
    ref = scipy_stats.bootstrap((per["sum"].to_numpy(), per["count"].to_numpy()),
                                lambda s, c, axis: s.sum(axis=axis) / c.sum(axis=axis),
                                paired=True, vectorized=True, n_resamples=4000, method="BCa",
                                random_state=np.random.default_rng(2)).confidence_interval
    width = ref.high - ref.low
    assert fig.ci_low == pytest.approx(ref.low, abs=0.1 * width)
    assert fig.ci_high == pytest.approx(ref.high, abs=0.1 * width)


@pytest.mark.parametrize("interval", ["bca", "percentile"])
def test_intervals_cover_the_true_mean_at_about_the_stated_rate(interval):
    rng = np.random.default_rng(2024)
    truth = 0.3
    hits = 0
    n_sims = 200
    for i in range(n_sims):
        df = make_samples(rng, {"A": (60, truth)})
        fig = group_figures(df, probe="p", metric="m", value="v", groupings=[], better=None,
                            n_resamples=400, seed=i, interval=interval)[0][0]
        # with equal person effects the image mean's expectation is the truth
        hits += fig.ci_low <= truth <= fig.ci_high
    assert 0.90 <= hits / n_sims <= 0.99


def test_rate_intervals_cover_and_few_errors_follow_better():
    rng = np.random.default_rng(7)
    p = 0.2
    hits = 0
    for i in range(200):
        k = rng.integers(1, 4, size=80)
        df = pd.DataFrame({"identity": np.repeat(np.arange(80), k),
                           "e": (rng.random(k.sum()) < p).astype(float)})
        fig = group_figures(df, probe="p", metric="m", value="e", groupings=[], better="lower",
                            kind="rate", n_resamples=400, seed=i)[0][0]
        hits += fig.ci_low <= p <= fig.ci_high
    assert 0.90 <= hits / 200 <= 0.99

    df = pd.DataFrame({"identity": np.arange(100), "e": [1.0] * 10 + [0.0] * 90})
    kw = dict(probe="p", metric="m", value="e", groupings=[], kind="rate", n_resamples=50)
    assert FLAG_FEW_ERRORS in group_figures(df, better="lower", **kw)[0][0].flags  # 10 errors
    assert FLAG_FEW_ERRORS not in group_figures(df, better="higher", **kw)[0][0].flags  # 90 errors
    assert FLAG_FEW_ERRORS in group_figures(df, better=None, **kw)[0][0].flags  # rarer: 10


def test_small_groups_are_flagged_and_undefined_groups_give_nan_not_a_crash():
    rng = np.random.default_rng(0)
    df = make_samples(rng, {"A": (DEFAULT_MIN_PEOPLE, 0.0), "B": (DEFAULT_MIN_PEOPLE - 1, 0.0)})
    df["race"] = pd.Categorical(df["race"], categories=["A", "B", "C"])
    df.loc[df["race"] == "B", "v"] = np.where(df.loc[df["race"] == "B"].index % 2, 1.0, np.nan)
    figs, disp = group_figures(df, probe="p", metric="m", value="v", groupings=[["race"]],
                               better="lower", n_resamples=100)
    g = by_group(figs)
    assert FLAG_SMALL_GROUP not in g["race", "A"].flags
    assert FLAG_SMALL_GROUP in g["race", "B"].flags
    c = g["race", "C"]
    assert math.isnan(c.value) and FLAG_UNDEFINED in c.flags and c.n_people == 0
    gap = next(d for d in disp if d.kind == "max_gap")
    assert not math.isnan(gap.value)  # computed over the defined groups A and B
    assert FLAG_SMALL_GROUP in gap.flags  # inherits its weakest group's flag


def test_ratio_with_a_zero_group_is_nan_and_flagged_while_the_gap_is_defined():
    df = pd.DataFrame({"identity": np.arange(80), "race": ["A"] * 40 + ["B"] * 40,
                       "e": [0.0] * 40 + [1.0] * 10 + [0.0] * 30})
    _, disp = group_figures(df, probe="p", metric="m", value="e", groupings=[["race"]], better="lower",
                            kind="rate", n_resamples=100,
                            disparity_kinds=("max_min_ratio", "max_geomean_ratio", "max_gap"))
    d = {x.kind: x for x in disp}
    for kind in ("max_min_ratio", "max_geomean_ratio"):
        assert math.isnan(d[kind].value) and FLAG_UNDEFINED in d[kind].flags
    assert d["max_gap"].value == pytest.approx(0.25)
    assert FLAG_UNDEFINED not in d["max_gap"].flags
    assert (d["max_gap"].worst_group, d["max_gap"].best_group) == ("B", "A")


def test_disparities_have_joint_intervals_and_worst_group_follows_better():
    rng = np.random.default_rng(5)
    df = make_samples(rng, {"A": (200, 1.0), "B": (200, 2.0), "C": (200, 1.5)}, person_sd=0.3)
    kw = dict(probe="p", metric="m", value="v", groupings=[["race"], ["gender"], ["race", "gender"]],
              n_resamples=300, disparity_kinds=("max_min_ratio", "max_geomean_ratio", "max_gap"))
    figs, disp = group_figures(df, better="higher", **kw)
    race = {d.kind: d for d in disp if d.grouping == "race"}
    assert set(race) == {"max_min_ratio", "max_geomean_ratio", "max_gap"}
    g = by_group(figs)
    assert race["max_min_ratio"].value == pytest.approx(g["race", "B"].value / g["race", "A"].value)
    vals = [g["race", x].value for x in "ABC"]
    assert race["max_geomean_ratio"].value == pytest.approx(max(vals) / np.exp(np.mean(np.log(vals))))
    for d in race.values():
        assert d.ci_low <= d.value <= d.ci_high
        assert (d.worst_group, d.best_group) == ("A", "B")
    assert race["max_gap"].ci_low > 0.5  # the true gap is 1.0
    assert {d.grouping for d in disp} == {"race", "gender", "race*gender"}
    assert "B / F" in {f.group for f in figs if f.grouping == "race*gender"}
    _, lower = group_figures(df, better="lower", **kw)
    assert (lower[0].worst_group, lower[0].best_group) == ("B", "A")


def test_permutation_test_separates_different_from_identical_groups():
    rng = np.random.default_rng(9)
    df = make_samples(rng, {"A": (60, 0.0), "B": (60, 0.8)})
    res = permutation_test(df, value="v", grouping=["race"], n_permutations=500)
    assert res["p_value"] < 0.01 and res["n_permutations"] == 500 and res["n_people"] == 120
    p_values = []
    for i in range(60):
        same = make_samples(rng, {"A": (30, 0.0), "B": (30, 0.0)}, images=(1, 3))
        p_values.append(permutation_test(same, value="v", grouping=["race"], n_permutations=199,
                                         seed=i)["p_value"])
    p_values = np.array(p_values)
    assert 0.35 <= p_values.mean() <= 0.65  # uniform under the null: mean 0.5
    assert np.mean(p_values < 0.05) <= 0.15
    gap = permutation_test(df, value="v", grouping=["race"], n_permutations=200, statistic="max_gap")
    assert gap["p_value"] < 0.01


def test_figures_frame_has_one_row_per_group_and_column_set_per_metric():
    rng = np.random.default_rng(1)
    df = make_samples(rng, {"A": (5, 0.0), "B": (5, 1.0)})
    figs, _ = group_figures(df, probe="p", metric="m", value="v", groupings=[["race"]], better=None,
                            n_resamples=20)
    frame = figures_frame(figs)
    assert list(frame[["grouping", "group"]].itertuples(index=False, name=None)) == [
        ("all", "all"), ("race", "A"), ("race", "B")]
    for col in ("p.m", "p.m.ci_low", "p.m.ci_high", "p.m.n_people", "p.m.flags"):
        assert col in frame.columns
    assert frame.loc[1, "p.m.flags"] == FLAG_SMALL_GROUP
    assert figures_frame([]).columns.tolist() == ["grouping", "group"]


def test_bad_arguments_name_the_value_and_the_fix():
    df = pd.DataFrame({"identity": [1, 2], "race": ["A", "B"], "v": [0.0, 2.0]})
    kw = dict(probe="p", metric="m", value="v", better=None)
    with pytest.raises(InputError, match=r"groupings='race', must be a list of attribute lists"):
        group_figures(df, groupings="race", **kw)
    with pytest.raises(InputError, match=r"The samples have no column 'age' \(needed as a grouping"):
        group_figures(df, groupings=[["age"]], **kw)
    with pytest.raises(InputError, match=r"kind='rate' needs a 0/1 column, but 'v' holds 2.0"):
        group_figures(df, groupings=[["race"]], kind="rate", **kw)
    with pytest.raises(InputError, match=r"confidence=95, must be between 0 and 1"):
        group_figures(df, groupings=[["race"]], confidence=95, **kw)
    with pytest.raises(InputError, match=r"unknown \['max_ratio'\]"):
        group_figures(df, groupings=[["race"]], disparity_kinds=["max_ratio"], **kw)
