"""Identity-leakage figures: they measure what a reconstruction says about *who*, not how crowded a group is."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from probes.findings import mark_findings
from probes.inversion.leakage import (CURVE_FMRS, LeakageEstimate, _hypergeometric_rank1, _weighted_threshold,
                                      gallery_size_for, group_leakage, leakage_by_group, leakage_figures,
                                      leakage_metrics)
from probes.inversion.metrics import success_rate
from probes.pairs import threshold_at_fmr
from probes.stats import group_figures

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from leakage_cases import Setting, simulate  # noqa: E402

N = 120


def _two_groups(first: Setting, second: Setting, seed: int = 0):
    rng = np.random.default_rng(seed)
    real_a, recon_a = simulate(rng, N, first)
    real_b, recon_b = simulate(rng, N, second)
    real = np.vstack([real_a, real_b])
    recon = np.vstack([recon_a, recon_b])
    groups = np.array(["A"] * N + ["B"] * N, dtype=object)
    return real, recon, groups


def _leakage_findings(real, recon, groups):
    labels = {"all": np.full(len(real), "all", dtype=object), "group": groups}
    result = leakage_by_group([recon], [np.ones(len(real), dtype=bool)], real, np.arange(len(real)), labels,
                              metric="euclidean", n_resamples=400, seed=1)
    figures, disparities = leakage_figures(result, groupings=["group"])
    return result, figures, disparities


def _fixed_threshold_disparities(real, recon, groups, threshold: float):
    distance = np.linalg.norm(recon - real, axis=1)
    samples = pd.DataFrame({"identity": np.arange(len(real)), "group": groups,
                            "success": (distance <= threshold).astype(float)})
    return group_figures(samples, probe="inversion", metric="success_rate_at_default", value="success",
                         groupings=[["group"]], better="lower", kind="rate", n_resamples=200)


def test_a_crowded_group_with_equal_leakage_gives_no_finding_while_a_fixed_threshold_does():
    # A is packed three times tighter than B; the generator recovers the same share of identity in both.
    real, recon, groups = _two_groups(Setting(leak=0.6, spread=0.35), Setting(leak=0.6, spread=1.0))
    fixed_figures, fixed_disparities = _fixed_threshold_disparities(real, recon, groups, threshold=2.2)
    by_group = {f.group: f.value for f in fixed_figures if f.grouping == "group"}
    assert by_group["A"] > 0.9 and by_group["B"] < 0.5   # the fixed threshold rewards crowding

    _, figures, disparities = _leakage_findings(real, recon, groups)
    everything = list(fixed_disparities) + list(disparities)
    mark_findings(everything)
    assert any(d.finding for d in fixed_disparities)
    leak_findings = [d for d in disparities if d.finding]
    assert leak_findings == [], [(d.metric, d.kind, d.value, d.p_value) for d in leak_findings]
    assert {f.metric for f in figures} >= {"sar_at_own_fmr_1e-1", "sar_at_own_fmr_1e-2", "rank1_equal_gallery",
                                           "leakage_auc"}


def test_equal_crowding_with_unequal_leakage_is_found():
    real, recon, groups = _two_groups(Setting(leak=0.85, spread=1.0), Setting(leak=0.35, spread=1.0))
    _, figures, disparities = _leakage_findings(real, recon, groups)
    mark_findings(disparities)
    found = {d.metric for d in disparities if d.finding}
    assert {"sar_at_own_fmr_1e-1", "rank1_equal_gallery", "leakage_auc"} <= found
    worst = {d.metric: d.worst_group for d in disparities if d.finding and d.kind == "gap"}
    assert set(worst.values()) == {"A"}   # A's reconstructions give its people away more


def test_a_generator_without_identity_scores_chance():
    rng = np.random.default_rng(3)
    real, _ = simulate(rng, 200, Setting())
    recon = rng.standard_normal(real.shape) * 0.1        # the same average face for everyone
    result = group_leakage([recon], [np.ones(200, dtype=bool)], real, np.arange(200), metric="euclidean",
                           gallery_size=50, n_resamples=200)
    auc = result.estimates["leakage_auc"]
    low, high = auc.interval(0.95)
    assert low <= 0.5 <= high
    sar = result.estimates["sar_at_own_fmr_1e-1"].value
    assert sar < 0.3   # about the FMR itself, never the fixed-threshold "match rate" of a crowded group


def test_no_face_reconstructions_fail_and_count_half_in_the_auc():
    rng = np.random.default_rng(4)
    real, recon = simulate(rng, 60, Setting(leak=0.95))
    ok = np.ones(60, dtype=bool)
    ok[:30] = False
    result = group_leakage([recon], [ok], real, np.arange(60), metric="euclidean", gallery_size=20,
                           n_resamples=50)
    full = group_leakage([recon], [np.ones(60, dtype=bool)], real, np.arange(60), metric="euclidean",
                         gallery_size=20, n_resamples=50)
    assert result.estimates["rank1_equal_gallery"].value <= 0.5 + 1e-9
    assert result.estimates["leakage_auc"].value == pytest.approx(
        0.5 * 0.5 + 0.5 * _auc_of_rows(full, recon, real, np.arange(30, 60)), abs=0.02)


def _auc_of_rows(_, recon, real, rows):
    d = np.linalg.norm(recon[:, None, :] - real[None, :, :], axis=2)
    scores = [np.mean(d[i, np.arange(len(real)) != i] > d[i, i]) for i in rows]
    return float(np.mean(scores))


def test_rank1_is_the_exact_mean_over_galleries():
    rng = np.random.default_rng(5)
    # 3 of 9 others closer than the own source, gallery of 4 (own + 3 others): C(6,3)/C(9,3)
    assert _hypergeometric_rank1(np.array(3.0), np.array(9.0), 4) == pytest.approx(20 / 84)
    closer, pool, k = 3, 9, 3
    draws = [not (set(rng.choice(pool, size=k, replace=False)) & set(range(closer))) for _ in range(20000)]
    assert np.mean(draws) == pytest.approx(20 / 84, abs=0.01)


def test_the_weighted_threshold_is_threshold_at_fmr_with_unit_weights():
    rng = np.random.default_rng(6)
    d = np.round(rng.random(5000), 3)        # ties on purpose
    s = np.sort(d)
    run_end = np.append(s[1:] != s[:-1], True)
    for fmr in (1e-1, 1e-2, 1e-3):
        got = _weighted_threshold(s, run_end, np.ones((1, len(s))), np.array([len(s)]), [fmr])[0, 0]
        assert got == threshold_at_fmr(d, fmr)
        head = _weighted_threshold(s, run_end, np.ones((1, 2000)), np.array([len(s)]), [fmr])
        assert head[0, 0] == got          # the head of the sorted pairs is enough for these rates
    assert _weighted_threshold(s, run_end, np.ones((1, 100)), np.array([len(s)]), [1e-1]) is None


def test_the_gallery_is_the_smallest_group_at_most_50_and_ignores_tiny_groups():
    assert gallery_size_for([500, 120, 80]) == 50
    assert gallery_size_for([500, 30, 80]) == 30
    assert gallery_size_for([500, 3, 80]) == 50


def test_too_few_pairs_for_a_rate_are_not_estimable_and_flagged():
    rng = np.random.default_rng(7)
    real, recon = simulate(rng, 40, Setting())
    labels = {"all": np.full(40, "all", dtype=object)}
    result = leakage_by_group([recon], [np.ones(40, dtype=bool)], real, np.arange(40), labels, metric="euclidean",
                              n_resamples=50)
    group = result.groups[("all", "all")]
    assert "sar_at_own_fmr_1e-3" in group.not_estimable and "sar_at_own_fmr_1e-1" not in group.not_estimable
    figures, _ = leakage_figures(result, groupings=[])
    flagged = {f.metric for f in figures if "not_estimable" in f.flags}
    assert flagged == {"sar_at_own_fmr_1e-2", "sar_at_own_fmr_1e-3"}
    assert len(group.curve) == len(CURVE_FMRS) and group.curve[-1] is not None and group.curve[0] is None


def test_type2_figures_use_the_persons_other_photos():
    rng = np.random.default_rng(8)
    real, recon = simulate(rng, 80, Setting(leak=0.9))
    other_photos = [real[i:i + 1] + 0.05 * rng.standard_normal((2, real.shape[1])) for i in range(80)]
    other_photos[:40] = [np.zeros((0, real.shape[1]))] * 40
    result = group_leakage([recon], [np.ones(80, dtype=bool)], real, np.arange(80), metric="euclidean",
                           gallery_size=40, extras=other_photos, n_resamples=50)
    assert result.n_type2_people == 40
    assert set(leakage_metrics(type2=True)) <= set(result.estimates)
    assert result.estimates["type2_leakage_auc"].value > 0.8


def test_the_interval_is_clipped_and_needs_replicates():
    est = LeakageEstimate(0.99, np.array([0.9, 1.0, 1.0, 0.95]), n_people=30)
    low, high = est.interval(0.95)
    assert high == 1.0 and low < 0.99
    assert all(math.isnan(x) for x in LeakageEstimate(0.5, np.array([np.nan]), 30).interval(0.95))


def test_a_group_without_a_single_usable_reconstruction_leaks_nothing_and_fits_no_threshold():
    rng = np.random.default_rng(9)
    real, recon = simulate(rng, 30, Setting())
    result = group_leakage([recon], [np.zeros(30, dtype=bool)], real, np.arange(30), metric="euclidean",
                           gallery_size=20, n_resamples=20)
    assert result.estimates["sar_at_own_fmr_1e-1"].value == 0.0
    assert result.estimates["rank1_equal_gallery"].value == 0.0
    assert result.estimates["leakage_auc"].value == pytest.approx(0.5)
    assert result.thresholds["1e-1"] is None


def test_a_leakage_difference_that_flips_between_generators_is_unstable():
    from audit.results import Disparity
    from audit.runner import leakage_spread, mark_unstable_leakage
    from probes.inversion.leakage import GroupLeakage, LeakageResult

    def group(values):
        return GroupLeakage(n_people=50, estimates={}, not_estimable={}, thresholds={},
                            per_generator={"leakage_auc": values}, curve=[])

    result = LeakageResult({("race", "A"): group([0.9, 0.7]), ("race", "B"): group([0.8, 0.8])}, gallery_size=50)
    flips = Disparity("inversion", "leakage_auc", "race", "gap", 0.0, worst_group="A", best_group="B")
    steady = Disparity("inversion", "leakage_auc", "race", "gap", 0.0, worst_group="B", best_group="A")
    result.groups[("race", "A")].per_generator["leakage_auc"] = [0.9, 0.85]
    mark_unstable_leakage([steady], result)
    assert "unstable" in steady.flags          # B is not worse than A under either generator
    result.groups[("race", "A")].per_generator["leakage_auc"] = [0.9, 0.7]
    mark_unstable_leakage([flips], result)
    assert "unstable" in flips.flags
    result.groups[("race", "A")].per_generator["leakage_auc"] = [0.9, 0.85]
    holds = Disparity("inversion", "leakage_auc", "race", "gap", 0.0, worst_group="A", best_group="B")
    mark_unstable_leakage([holds], result)
    assert holds.flags == []
    spread = leakage_spread(result)["inversion.leakage_auc"]["race"]["A"]
    assert spread["min"] == 0.85 and spread["max"] == 0.9
