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


# --------------------------------------------------------------------------- stratified on the known labels

def _benchmark():
    """benchmarks/signal_size.py, whose simulation the reduced tests below run."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import signal_size
    return signal_size


@pytest.mark.parametrize("attribute", ["gender", "age band"])
def test_an_attribute_only_generator_fails_in_about_alpha_of_groups(attribute):
    """Reduced benchmarks/signal_size.py: 50 people, the attribute 11% of the variance, no identity.

    Against the whole group nearly every group passed; within shared labels about 1% (alpha) do."""
    bench = _benchmark()
    case = bench.Case("attribute only", 50, 0.11, attribute)
    rates = bench.pass_rates(case, sims=60, permutations=199, seed=11)
    assert rates["before"] >= 0.8            # the unstratified comparison is fooled
    assert rates["after"] <= 0.05            # the stratified test holds its level (0.01)


def test_real_identity_leakage_still_passes_the_stratified_test():
    bench = _benchmark()
    case = bench.Case("identity", 50, 0.03, "gender", rho=0.08)
    assert bench.pass_rates(case, sims=30, permutations=199, seed=12)["after"] >= 0.9


def test_a_gender_only_generator_has_no_signal_in_any_group():
    """The shape of a run: groups by race, the reconstructions keep the source's gender and nothing else."""
    rng = np.random.default_rng(21)
    n, d = 200, 64
    race = rng.choice(["A", "B"], size=n)
    gender = rng.choice(["F", "M"], size=n)
    u = rng.normal(size=d) / np.sqrt(d)
    sign = np.where(gender == "F", 1.0, -1.0)[:, None]
    real = 3 * sign * u + rng.normal(size=(n, d)) / np.sqrt(d)
    recon = 3 * sign * u + rng.normal(size=(n, d)) / np.sqrt(d)
    labels = {"all": np.full(n, "all", dtype=object), "race": race.astype(object)}
    unstratified = group_signal_tests([recon], real, labels, metric="cosine", n_permutations=499,
                                      strata=np.full(n, "x"))
    assert all(t.signal for t in unstratified)          # what the whole-group comparison said
    strata = np.array([f"{r} / {g}" for r, g in zip(race, gender)], dtype=object)
    tests = group_signal_tests([recon], real, labels, metric="cosine", n_permutations=499, strata=strata,
                               stratified_on=["race", "gender"])
    assert not any(t.signal for t in tests)
    assert all(t.stratified_on == ("race", "gender") and t.n_strata == (4 if t.grouping == "all" else 2)
               for t in tests)
    assert "sharing their labels (race, gender)" in tests[0].reason
    assert tests[0].to_dict()["stratified_on"] == ["race", "gender"]


def test_without_strata_the_groupings_labels_are_combined():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(40, 8))
    race = np.array(["A", "B"] * 20, dtype=object)
    gender = np.array(["F"] * 20 + ["M"] * 20, dtype=object)
    tests = group_signal_tests([real + 0.1 * rng.normal(size=real.shape)], real,
                               {"all": np.full(40, "all"), "race": race, "gender": gender},
                               metric="euclidean", n_permutations=199)
    assert all(t.n_strata == (4 if t.grouping == "all" else 2) for t in tests)
    assert tests[0].stratified_on == ("race", "gender")


def test_permutations_never_swap_people_across_strata():
    """Two strata whose cross-stratum distances are large: the diagonal beats any pairing across them."""
    strata = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    d = np.where(strata[:, None] == strata[None, :], 1.0, 5.0)
    # Every within-stratum pairing has the same sum as the diagonal (p = 1), whereas free
    # permutations nearly always pair across the strata, at a larger sum.
    assert permutation_p_value(d, strata=strata, n_permutations=199) == 1.0
    assert permutation_p_value(d, n_permutations=199) < 0.05


def test_people_alone_in_their_labels_are_left_out_and_counted():
    rng = np.random.default_rng(8)
    real = rng.normal(size=(30, 8))
    strata = np.array(["a"] * 14 + ["b"] * 14 + ["c", "d"], dtype=object)
    result = signal_test(real + 0.1 * rng.normal(size=real.shape), real, metric="euclidean",
                         n_permutations=199, strata=strata, stratified_on=["k"])
    assert result.n_people == 28 and result.n_alone == 2 and result.n_strata == 2 and result.signal


def test_strata_too_small_for_a_p_value_below_alpha_are_untested():
    """Three pairs: 2^3 = 8 pairings, so no p-value can reach 0.01."""
    real = people(6)
    result = signal_test(real, real, metric="euclidean", strata=["a", "a", "b", "b", "c", "c"],
                         stratified_on=["k"])
    assert not result.signal and np.isnan(result.p_value) and "120 pairings" in result.reason


def test_a_missing_label_is_a_stratum_of_its_own():
    from probes.inversion.signal import stratum_codes
    codes = stratum_codes(np.array(["a", None, np.nan, "a", None], dtype=object), 5)
    assert codes[0] == codes[3] and codes[1] == codes[4] and len(set(codes.tolist())) == 3
    with pytest.raises(ValueError, match="one label per row"):
        stratum_codes(["a"], 5)


def test_label_attributes_keep_the_grouped_ones_and_few_valued_others():
    import pandas as pd
    from probes.inversion.signal import label_attributes
    table = pd.DataFrame({"race": ["A", "B"] * 50, "gender": ["F"] * 100, "age": [str(a) for a in range(100)],
                          "age_band": ["0-19", "20-39", "40-59", "60+"] * 25, "identity": range(100)})
    assert label_attributes(table, ["race", "gender"], ["race", "gender", "age", "age_band", "missing"]) == \
        ["race", "gender", "age_band"]


def test_everyone_alone_in_their_labels_is_untested_not_an_error():
    real = people(8)
    result = signal_test(real, real, metric="euclidean", strata=[f"s{i}" for i in range(8)], stratified_on=["k"])
    assert not result.signal and result.n_people == 0 and result.n_alone == 8 and result.n_strata == 0
    assert "8 more have nobody" in result.reason and result.to_dict()["p_value"] is None
