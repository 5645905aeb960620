"""The identity-signal test: exact under its null, powerful where identity is carried."""

from __future__ import annotations

import numpy as np
import pytest

from probes.inversion.signal import (MIN_PEOPLE, group_signal_tests, permutation_p_value, signal_test,
                                     signal_test_from_matrix)


def people(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_reconstructions_that_carry_identity_pass():
    real = people(60)
    recon = real + np.random.default_rng(1).normal(scale=0.3, size=real.shape)
    result = signal_test(recon, real, metric="euclidean", n_permutations=999)
    assert result.signal and result.p_value == pytest.approx(1 / 1000)
    assert result.gap < 0 and result.share_closer > 0.9 and result.rank1_rate > 0.5
    assert result.n_people == 60 and result.reason == ""


def test_an_average_face_generator_fails():
    """A generator that draws the group's typical face, whoever's embedding it gets."""
    real = people(60)
    recon = real.mean(axis=0) + np.random.default_rng(2).normal(scale=0.3, size=real.shape)
    result = signal_test(recon, real, metric="euclidean", n_permutations=999, seed=3)
    assert not result.signal and result.p_value > 0.01
    assert "not significantly closer" in result.reason


def test_the_test_holds_its_size_under_the_null():
    """Over 300 simulated no-identity generators, p < 0.05 about 5% of the time (exactness)."""
    rejections = []
    for sim in range(300):
        rng = np.random.default_rng(1000 + sim)
        real = rng.normal(size=(20, 8))
        recon = rng.normal(size=(20, 8))            # independent of whose embedding it was
        rejections.append(signal_test(recon, real, metric="euclidean", n_permutations=199, seed=sim).p_value < 0.05)
    assert 0.02 <= np.mean(rejections) <= 0.09


def test_weak_identity_is_found_with_enough_people():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(200, 16))
    recon = 0.15 * real + rng.normal(size=real.shape)   # mostly noise, a little identity
    assert signal_test(recon, real, metric="euclidean", n_permutations=999).signal


def test_too_few_people_is_no_signal_with_the_reason():
    real = people(MIN_PEOPLE - 1)
    result = signal_test(real, real, metric="euclidean")
    assert not result.signal and np.isnan(result.p_value)
    assert f"at least {MIN_PEOPLE} are needed" in result.reason


def test_rows_without_a_vector_are_left_out_and_counted():
    real = people(30)
    recon = real.copy()
    recon[:4] = np.nan
    result = signal_test(recon, real, metric="cosine", n_permutations=199)
    assert result.n_people == 26 and result.n_without_vector == 4 and result.signal


def test_permutation_p_value_is_never_zero_and_resolves_in_steps():
    d = np.ones((6, 6)) - np.eye(6)        # the diagonal is as small as can be
    assert permutation_p_value(d, n_permutations=99) == pytest.approx(1 / 100)
    flat = np.ones((6, 6))                  # every pairing ties: p = 1
    assert permutation_p_value(flat, n_permutations=99) == 1.0


def test_matrix_must_be_square_and_finite():
    with pytest.raises(ValueError, match="finite"):
        signal_test_from_matrix(np.full((5, 5), np.nan))


def test_groups_are_tested_within_their_own_people_and_generators_pooled():
    rng = np.random.default_rng(7)
    real = rng.normal(size=(80, 12))
    groups = np.array(["A"] * 40 + ["B"] * 40, dtype=object)
    good = real + rng.normal(scale=0.3, size=real.shape)
    # In group B the generator draws B's average face: it carries the group, not the person.
    for recon in (good,):
        recon[40:] = real[40:].mean(axis=0) + rng.normal(scale=0.3, size=(40, 12))
    second = good + rng.normal(scale=0.05, size=good.shape)
    tests = group_signal_tests([good, second], real, {"all": np.full(80, "all"), "g": groups},
                               metric="euclidean", n_permutations=499)
    by_group = {(t.grouping, t.group): t for t in tests}
    assert by_group["all", "all"].signal           # half the people are reconstructed
    assert by_group["g", "A"].signal
    assert not by_group["g", "B"].signal            # only the group's face: no identity
