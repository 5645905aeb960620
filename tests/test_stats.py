"""probes.stats: per-group figures, people-clustered intervals, pairwise disparities, permutation test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from audit.errors import InputError
from audit.gate import evaluate_policy
from audit.policy import Policy, Rule
from audit.results import (FLAG_FEW_ERRORS, FLAG_NOT_ESTIMABLE, FLAG_SMALL_GROUP, FLAG_UNDEFINED,
                           Results)
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
    gap = next(d for d in disp if d.kind == "gap")
    assert len([d for d in disp if d.kind == "gap"]) == 1  # one pair: the defined groups A and B
    assert not math.isnan(gap.value) and {gap.worst_group, gap.best_group} == {"A", "B"}
    assert FLAG_SMALL_GROUP in gap.flags  # inherits its weaker group's flag


def test_zero_errors_in_60_images_give_an_upper_bound_near_6_percent_not_zero():
    """Exact interval: 0 of 60 gives Clopper-Pearson's [0, 0.0596], never the point [0, 0]."""
    df = pd.DataFrame({"identity": np.arange(60), "e": 0.0})
    fig = group_figures(df, probe="p", metric="m", value="e", groupings=[], better="lower", kind="rate")[0][0]
    assert (fig.value, fig.ci_low) == (0.0, 0.0)
    assert fig.ci_high == pytest.approx(1 - 0.025 ** (1 / 60), abs=1e-9)  # 0.0596
    assert fig.ci_high == pytest.approx(0.0596, abs=5e-5)
    # 20 people with 3 images each: without an error nothing says the images of a person do not err
    # together, so the exact bound counts the 20 people
    df3 = pd.DataFrame({"identity": np.repeat(np.arange(20), 3), "e": 0.0})
    fig3 = group_figures(df3, probe="p", metric="m", value="e", groupings=[], better="lower", kind="rate")[0][0]
    assert fig3.ci_high == pytest.approx(1 - 0.025 ** (1 / 20), abs=1e-9)  # 0.168


def test_zero_errors_in_many_images_of_few_people_count_the_people():
    """0 errors in 10 people x 420 images: the exact bound counting people is 30.8%, not 0.12%."""
    df = pd.DataFrame({"identity": np.repeat(np.arange(10), 420), "e": 0.0})
    fig = group_figures(df, probe="p", metric="m", value="e", groupings=[], better="lower", kind="rate")[0][0]
    assert fig.ci_high == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-9)


def test_few_errors_in_one_person_do_not_give_an_image_level_interval():
    """Two errors, both from one of 40 people with 20 images each: the estimated design effect reads
    about 2, the people-shrunk one is far nearer the worst case (20), so the interval is wider."""
    from probes.estimates import clustered_proportion

    sums = np.zeros(40)
    sums[0] = 2
    estimate = clustered_proportion(sums, np.full(40, 20.0))
    assert estimate.estimated_design_effect < 3
    assert estimate.design_effect > 5
    lo, hi = estimate.interval(0.95)
    image_level = clustered_proportion(np.r_[np.ones(2), np.zeros(798)], np.ones(800)).interval(0.95)
    assert hi > 3 * image_level[1]


def test_unequal_images_per_person_count_as_kish_effective_people():
    """One person with 100 images and 9 with 1: the degrees of freedom and the bootstrap quantile count
    Kish's effective people, (sum m)^2 / sum m^2 = 1.2, not 10."""
    from probes.estimates import kish_effective_count

    counts = np.r_[100.0, np.ones(9)]
    assert kish_effective_count(counts) == pytest.approx(109 ** 2 / 10_009)
    rng = np.random.default_rng(0)
    persons = np.repeat(np.arange(10), counts.astype(int))
    df = pd.DataFrame({"identity": persons, "v": rng.normal(size=len(persons))})
    unequal = group_figures(df, probe="p", metric="m", value="v", groupings=[], better=None, kind="mean",
                            n_resamples=200)[0][0]
    assert unequal.ci_high - unequal.ci_low > 0


def test_a_gate_rule_on_a_group_with_zero_errors_is_judged_on_the_upper_bound():
    df = pd.DataFrame({"identity": np.arange(120), "race": ["A"] * 60 + ["B"] * 60,
                       "e": [0.0] * 60 + [1.0] * 3 + [0.0] * 57})
    figs, disp = group_figures(df, probe="detection", metric="failure_rate", value="e", groupings=[["race"]],
                               better="lower", kind="rate")
    results = Results(figs, disp)
    rule = Rule(id="cap", metric="detection.failure_rate", grouping="race", group="A", max=0.05)
    (check,) = evaluate_policy(Policy(rules=(rule,)), results).checks
    assert check.judged_on == "ci_high" and check.judged_value == pytest.approx(0.0596, abs=5e-5)
    assert not check.passed  # 0 errors in 60 images cannot show a rate below 5%


def test_rate_intervals_count_people_through_the_design_effect():
    """Errors that come in whole people widen the interval; scattered errors do not."""
    people = np.repeat(np.arange(100), 4)
    clustered = pd.DataFrame({"identity": people, "e": (people < 10).astype(float)})  # 10 people fail always
    scattered = pd.DataFrame({"identity": people, "e": (np.arange(400) % 10 == 0).astype(float)})
    kw = dict(probe="p", metric="m", value="e", groupings=[], better="lower", kind="rate")
    a = group_figures(clustered, **kw)[0][0]
    b = group_figures(scattered, **kw)[0][0]
    assert a.value == b.value == pytest.approx(0.1)
    assert (a.ci_high - a.ci_low) > 1.6 * (b.ci_high - b.ci_low)


def test_pairwise_gap_and_ratio_have_mover_intervals_and_p_values():
    df = pd.DataFrame({"identity": np.arange(400), "race": ["A"] * 200 + ["B"] * 200,
                       "e": [1.0] * 20 + [0.0] * 180 + [1.0] * 50 + [0.0] * 150})
    figs, disp = group_figures(df, probe="p", metric="m", value="e", groupings=[["race"]], better="lower",
                               kind="rate")
    d = {x.kind: x for x in disp}
    assert set(d) == {"gap", "ratio"}
    assert d["gap"].value == pytest.approx(0.15) and d["ratio"].value == pytest.approx(2.5)
    for x in d.values():
        assert (x.worst_group, x.best_group) == ("B", "A") and x.worst_pair
        assert 0 < x.p_value < 1e-3 and x.p_adjusted is None and x.finding is False
    assert 0.07 < d["gap"].ci_low < 0.15 < d["gap"].ci_high < 0.23
    assert 1.5 < d["ratio"].ci_low < 2.5 < d["ratio"].ci_high < 4.5


def test_p_value_agrees_with_the_interval():
    """p < 0.05 exactly when the 95% interval excludes no difference."""
    rng = np.random.default_rng(4)
    for i in range(30):
        df = pd.DataFrame({"identity": np.arange(160), "race": ["A"] * 80 + ["B"] * 80,
                           "e": (rng.random(160) < np.repeat([0.2, 0.2 + 0.01 * i], 80)).astype(float)})
        _, disp = group_figures(df, probe="p", metric="m", value="e", groupings=[["race"]], better="lower",
                                kind="rate")
        for x in disp:
            excludes = x.ci_low > (0 if x.kind == "gap" else 1)
            assert (x.p_value < 0.05) == excludes, (i, x)


def test_ratio_with_a_zero_rate_is_finite_by_the_haldane_correction_never_dropped():
    df = pd.DataFrame({"identity": np.arange(80), "race": ["A"] * 40 + ["B"] * 40,
                       "e": [0.0] * 40 + [1.0] * 10 + [0.0] * 30})
    _, disp = group_figures(df, probe="p", metric="m", value="e", groupings=[["race"]], better="lower",
                            kind="rate")
    d = {x.kind: x for x in disp}
    assert d["gap"].value == pytest.approx(0.25)
    ratio = d["ratio"]
    assert FLAG_UNDEFINED not in ratio.flags
    # half an (effective) error more on both sides: about (10.5 / 41) / (0.5 / 41) = 21
    assert ratio.value == pytest.approx(21.0, rel=0.01)
    assert 1 < ratio.ci_low < ratio.value < ratio.ci_high < math.inf
    assert ratio.p_value < 0.01
    assert (ratio.worst_group, ratio.best_group) == ("B", "A")


def test_ratio_of_figures_that_are_not_positive_is_undefined():
    rng = np.random.default_rng(3)
    df = make_samples(rng, {"A": (40, -2.0), "B": (40, 1.0)}, person_sd=0.2)
    _, disp = group_figures(df, probe="p", metric="m", value="v", groupings=[["race"]], better=None,
                            n_resamples=200)
    ratio = next(x for x in disp if x.kind == "ratio")
    assert math.isnan(ratio.value) and FLAG_UNDEFINED in ratio.flags and ratio.p_value is None


def test_pairwise_intervals_cover_no_difference_when_four_groups_are_equal():
    """A max-over-groups gap never covers 0 at equality; every pair's own gap does, about 95% of the time."""
    rng = np.random.default_rng(8)
    hits = total = 0
    for i in range(40):
        df = pd.concat([pd.DataFrame({"identity": np.arange(100) + 100 * g, "race": name,
                                      "e": (rng.random(100) < 0.2).astype(float)})
                        for g, name in enumerate("ABCD")], ignore_index=True)
        _, disp = group_figures(df, probe="p", metric="m", value="e", groupings=[["race"]], better="lower",
                                kind="rate", disparity_kinds=("gap",))
        assert len(disp) == 6 and sum(x.worst_pair for x in disp) == 1
        hits += sum(x.ci_low <= 0 <= x.ci_high for x in disp)
        total += len(disp)
    assert 0.90 <= hits / total <= 0.995


def test_blocking_flags_pass_from_a_group_to_its_disparities():
    from probes.stats import disparities, figure_from_estimate
    from probes.estimates import ProportionEstimate

    a = ProportionEstimate(5, 100, n_clusters=50)
    b = ProportionEstimate(9, 100, n_clusters=50)
    fa = figure_from_estimate(a, probe="p", metric="m", grouping="g", group="A", n_people=50, better="lower",
                              flags=[FLAG_NOT_ESTIMABLE])
    fb = figure_from_estimate(b, probe="p", metric="m", grouping="g", group="B", n_people=50, better="lower")
    (gap,) = disparities([fa, fb], {"A": a, "B": b}, kinds=("gap",))
    assert FLAG_NOT_ESTIMABLE in gap.flags


def test_old_disparity_kinds_are_refused_with_their_replacement():
    df = pd.DataFrame({"identity": [1, 2], "race": ["A", "B"], "v": [0.0, 1.0]})
    with pytest.raises(InputError, match=r"'max_gap' is now 'gap': every pair of groups is compared"):
        group_figures(df, probe="p", metric="m", value="v", groupings=[["race"]], better=None,
                      disparity_kinds=("max_gap",))


def test_disparities_have_pairwise_intervals_and_worst_group_follows_better():
    rng = np.random.default_rng(5)
    df = make_samples(rng, {"A": (200, 1.0), "B": (200, 2.0), "C": (200, 1.5)}, person_sd=0.3)
    kw = dict(probe="p", metric="m", value="v", groupings=[["race"], ["gender"], ["race", "gender"]],
              n_resamples=300)
    figs, disp = group_figures(df, better="higher", **kw)
    race = [d for d in disp if d.grouping == "race"]
    assert len(race) == 6  # 3 pairs x (gap, ratio)
    g = by_group(figs)
    ab = next(d for d in race if d.kind == "ratio" and {d.worst_group, d.best_group} == {"A", "B"})
    assert ab.value == pytest.approx(g["race", "B"].value / g["race", "A"].value)
    assert (ab.worst_group, ab.best_group) == ("A", "B")  # higher is better: A, the lower, fares worse
    assert ab.worst_pair
    for d in race:
        assert d.ci_low <= d.value <= d.ci_high
    gap_ab = next(d for d in race if d.kind == "gap" and d.worst_pair)
    assert gap_ab.ci_low > 0.5  # the true gap is 1.0
    assert {d.grouping for d in disp} == {"race", "gender", "race*gender"}
    assert "B / F" in {f.group for f in figs if f.grouping == "race*gender"}
    _, lower = group_figures(df, better="lower", **kw)
    worst = next(d for d in lower if d.grouping == "race" and d.kind == "gap" and d.worst_pair)
    assert (worst.worst_group, worst.best_group) == ("B", "A")


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
