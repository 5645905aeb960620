"""Every reconstruction metric on small hand-made sets with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit.errors import InputError
from probes.inversion.metrics import (crossing_threshold, false_match_rate, random_pair_distances,
                                      success_rate, threshold_at_fmr, threshold_sweep, type2_distances)

NAN = float("nan")


def test_success_rate_counts_no_face_as_failure() -> None:
    d = [0.2, 0.5, 0.6, 0.7, NAN]
    ok = [True, True, True, True, False]
    assert success_rate(d, ok, 0.6) == pytest.approx(3 / 5)  # 0.6 <= 0.6 matches
    assert success_rate(d, ok, 0.59) == pytest.approx(2 / 5)
    assert success_rate(d, ok, 10.0) == pytest.approx(4 / 5)  # the no-face one never matches
    # ok False with a (stale) distance still fails
    assert success_rate([0.1, 0.1], [True, False], 0.6) == pytest.approx(0.5)


def test_success_rate_empty_is_nan_and_shapes_checked() -> None:
    assert math.isnan(success_rate([], [], 0.6))
    with pytest.raises(ValueError, match="distances has 2 entries and ok 1"):
        success_rate([0.1, 0.2], [True], 0.6)


def test_threshold_sweep() -> None:
    d = [0.1, 0.3, 0.5, NAN]
    ok = [True, True, True, False]
    rates = threshold_sweep(d, ok, [0.0, 0.1, 0.3, 0.49, 1.0])
    assert rates.tolist() == [0.0, 0.25, 0.5, 0.5, 0.75]
    assert rates[2] == success_rate(d, ok, 0.3)


def test_crossing_threshold_separated_distributions() -> None:
    # FNMR + FMR is 0 on [0.3, 0.7): the midpoint of the gap.
    assert crossing_threshold([0.1, 0.2, 0.3], [0.7, 0.8, 0.9]) == pytest.approx(0.5)


def test_crossing_threshold_overlapping_distributions() -> None:
    genuine = [0.1, 0.2, 0.4, 0.6]
    impostor = [0.3, 0.5, 0.7, 0.8]
    # candidates and FNMR + FMR:
    # 0.1: .75+0  0.2: .5+0  0.3: .5+.25  0.4: .25+.25  0.5: .25+.5  0.6: 0+.5  0.7: 0+.75 ...
    # minimum 0.5 first reached at 0.2 on [0.2, 0.3): midpoint 0.25
    assert crossing_threshold(genuine, impostor) == pytest.approx(0.25)
    assert crossing_threshold(genuine + [NAN], impostor) == pytest.approx(0.25)  # NaN dropped
    assert math.isnan(crossing_threshold([NAN], impostor))


def test_threshold_at_fmr() -> None:
    impostor = np.arange(1, 2001) / 1000.0  # 0.001 ... 2.000
    t = threshold_at_fmr(impostor, 1e-3)      # k = 2 impostors may match
    assert t == pytest.approx(0.002)
    assert false_match_rate(impostor, t) == pytest.approx(1e-3)
    assert threshold_at_fmr(impostor, 0.01) == pytest.approx(0.020)


def test_threshold_at_fmr_ties_and_too_few_pairs() -> None:
    # k = floor(0.25 * 8) = 2, but 0.2 appears twice after 0.1: count(<= 0.2) = 3 > 2.
    assert threshold_at_fmr([0.1, 0.2, 0.2, 0.5, 0.6, 0.7, 0.8, 0.9], 0.25) == pytest.approx(0.1)
    # fewer than 1 / fmr pairs: just below the smallest, FMR 0
    t = threshold_at_fmr([0.4, 0.5, 0.6], 1e-3)
    assert t < 0.4 and t == pytest.approx(0.4) and false_match_rate([0.4, 0.5, 0.6], t) == 0.0
    assert threshold_at_fmr([0.1, 0.2], 0) < 0.1          # no false match allowed at all
    with pytest.raises(InputError, match="fmr=1, must be below 1"):
        threshold_at_fmr([0.1], 1)


def test_random_pair_distances_within_and_across() -> None:
    # 1-D embeddings make distances easy: euclidean |a - b|.
    real = np.array([[0.0], [1.0], [10.0], [30.0], [100.0]])
    recon = real + 0.5
    persons = ["a", "a", "b", "c", "d"]
    groups = ["G", "G", "G", "H", "H"]
    within = random_pair_distances(recon, real, persons, groups, within_group=True, metric="euclidean",
                                   n_pairs=8, seed=0)
    assert within.shape == (5, 8)
    # row 0 (person a, group G): the only other person in G is b -> |0.5 - 10|
    assert np.allclose(within[0], 9.5) and np.allclose(within[1], 8.5)
    # row 2 (b): partners are rows 0 or 1 (person a)
    assert set(np.round(within[2], 6)) <= {10.5, 9.5}
    assert np.allclose(within[3], 69.5) and np.allclose(within[4], 70.5)
    across = random_pair_distances(recon, real, persons, groups, within_group=False, metric="euclidean",
                                   n_pairs=4, seed=0)
    assert set(np.round(across[0], 6)) <= {29.5, 99.5}
    assert set(np.round(across[3], 6)) <= {30.5, 29.5, 20.5}


def test_random_pair_distances_nan_and_no_partner() -> None:
    real = np.array([[0.0], [1.0], [2.0]])
    recon = np.array([[NAN], [1.0], [2.0]])
    d = random_pair_distances(recon, real, ["a", "b", "c"], ["G", "G", "H"], within_group=True,
                              metric="euclidean", seed=0)
    assert math.isnan(d[0, 0])  # no face in the reconstruction
    assert d[1, 0] == pytest.approx(1.0)
    assert math.isnan(d[2, 0])  # nobody else in group H
    a = random_pair_distances(real + 0.1, real, ["a", "b", "c"], ["G"] * 3, within_group=True,
                              metric="euclidean", n_pairs=5, seed=7)
    b = random_pair_distances(real + 0.1, real, ["a", "b", "c"], ["G"] * 3, within_group=True,
                              metric="euclidean", n_pairs=5, seed=7)
    assert np.array_equal(a, b)


def test_type2_distances() -> None:
    recon = np.array([[0.0], [5.0], [NAN]])
    other = np.array([[1.0], [3.0], [7.0], [9.0]])
    d = type2_distances(recon, ["a", "b", "c"], other, ["a", "a", "c", "x"], metric="euclidean")
    assert d[0] == pytest.approx(2.0)      # mean(|0-1|, |0-3|)
    assert math.isnan(d[1])                # b has no other photo
    assert math.isnan(d[2])                # no face in c's reconstruction
    cos = type2_distances(np.array([[1.0, 0.0]]), ["a"], np.array([[0.0, 2.0]]), ["a"], metric="cosine")
    assert cos[0] == pytest.approx(1.0)


def test_crossing_threshold_is_cross_fitted_never_on_the_sample_itself():
    from probes.inversion.metrics import crossfit_crossing_thresholds, crossing_threshold

    rng = np.random.default_rng(0)
    genuine = rng.normal(0.45, 0.08, size=60)
    impostor = rng.normal(0.75, 0.08, size=60)
    per_sample, folds = crossfit_crossing_thresholds(genuine, impostor, seed=1)
    assert len(folds) == 2 and set(np.round(per_sample, 12)) == set(np.round(folds, 12))
    # Each fold's threshold is what the *other* fold's samples give.
    for t in folds:
        scored = per_sample == t
        assert t == crossing_threshold(genuine[~scored], impostor[~scored])
    # In-sample fitting flatters: its success rate is never below the cross-fitted one on average.
    in_sample, cross = [], []
    for sim in range(200):
        g = rng.normal(0.55, 0.1, size=60)
        i = rng.normal(0.70, 0.1, size=60)
        t_in = crossing_threshold(g, i)
        t_cross, _ = crossfit_crossing_thresholds(g, i, seed=sim)
        in_sample.append(np.mean(g <= t_in) - np.mean(i <= t_in))
        cross.append(np.mean(g <= t_cross) - np.mean(i <= t_cross))
    assert np.mean(in_sample) > np.mean(cross)
