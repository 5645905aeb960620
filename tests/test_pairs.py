"""probes.pairs: distinct impostor pairs drawn without replacement, their counts, what they can estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit.errors import InputError
from probes.pairs import (count_impostor_pairs, fmr_threshold_estimable, min_impostor_pairs, not_estimable_reason,
                          sample_cross_pairs, sample_impostor_pairs, threshold_at_fmr)


def _as_set(pairs):
    return set(zip(pairs.a.tolist(), pairs.b.tolist()))


def test_sixty_images_hold_1710_distinct_impostor_pairs_and_never_more():
    """Drawing 200,000 pairs with replacement from 60 images repeats the same 1,710 pairs; here every
    distinct pair is used once and the counts say so."""
    persons = np.repeat(np.arange(20), 3)
    pairs = sample_impostor_pairs(persons, 200_000, seed=0)
    assert pairs.n_possible == pairs.n_used == 1_710 == 60 * 59 // 2 - 20 * 3
    assert len(_as_set(pairs)) == 1_710
    assert np.all(persons[pairs.a] != persons[pairs.b]) and np.all(pairs.a < pairs.b)
    assert pairs.counts() == {"possible": 1_710, "used": 1_710, "distinct": True, "sampled": False}


def test_a_sample_is_distinct_uniform_and_seeded():
    persons = np.repeat(np.arange(3_000), 3)
    pairs = sample_impostor_pairs(persons, 50_000, seed=1)
    assert pairs.n_used == 50_000 and len(_as_set(pairs)) == 50_000
    assert pairs.n_possible == count_impostor_pairs(persons) == 9_000 * 8_999 // 2 - 3_000 * 3
    assert np.all(persons[pairs.a] != persons[pairs.b])
    # every image is about equally likely to be in a pair: 100,000 slots over 9,000 images
    hits = np.bincount(np.concatenate([pairs.a, pairs.b]), minlength=9_000)
    assert abs(hits.mean() - 100_000 / 9_000) < 1e-9 and hits.std() < 5
    again = sample_impostor_pairs(persons, 50_000, seed=1)
    assert np.array_equal(pairs.a, again.a) and np.array_equal(pairs.b, again.b)


def test_rows_restrict_the_pairs_to_a_group():
    persons = np.repeat(np.arange(10), 2)
    rows = np.arange(6, 14)
    pairs = sample_impostor_pairs(persons, 1_000, seed=2, rows=rows)
    assert set(pairs.a) | set(pairs.b) <= set(rows)
    assert pairs.n_possible == 8 * 7 // 2 - 4


def test_cross_group_pairs_are_distinct_and_skip_a_person_in_both_groups():
    persons = np.array([0, 0, 1, 2, 3, 0])  # person 0 has an image in both groups
    a, b = np.array([0, 1, 2]), np.array([3, 4, 5])
    pairs = sample_cross_pairs(persons, a, b, 100, seed=3)
    assert pairs.n_possible == 9 - 2 and pairs.n_used == 7
    assert np.all(persons[pairs.a] != persons[pairs.b]) and len(_as_set(pairs)) == 7
    big = sample_cross_pairs(np.arange(4_000), np.arange(2_000), np.arange(2_000, 4_000), 10_000, seed=4)
    assert big.n_used == 10_000 and len(_as_set(big)) == 10_000 and big.n_possible == 4_000_000


def test_estimability_needs_thirty_over_f_pairs():
    assert min_impostor_pairs(1e-3) == 30_000
    assert min_impostor_pairs(0.02) == 1_500
    assert fmr_threshold_estimable(30_000, 1e-3) and not fmr_threshold_estimable(29_999, 1e-3)
    assert not_estimable_reason(1_710, 1e-3) == ("a threshold at FMR 0.001 needs at least 30,000 distinct impostor "
                                                 "pairs (30 expected false matches); 1,710 were available")
    with pytest.raises(InputError, match=r"fmr=0, must be between 0 and 1"):
        min_impostor_pairs(0)


def test_threshold_at_fmr_uses_the_match_rule_d_at_most_t():
    d = np.arange(1, 1001) / 1000.0
    t = threshold_at_fmr(d, 0.005)
    assert t == pytest.approx(0.005) and np.mean(d <= t) == pytest.approx(0.005)
    assert threshold_at_fmr(d, 1e-4) < 0.001  # fewer than 1 / f pairs: no distance may match
    assert math.isnan(threshold_at_fmr(np.array([np.nan, np.inf]), 0.1))


def test_bad_sizes_are_refused():
    with pytest.raises(InputError, match=r"max_pairs=0, must be a whole number >= 1"):
        sample_impostor_pairs(np.arange(4), 0)
