"""probes.verification: exact FMR/FNMR on pairs with known distances, thresholds, estimability, intervals."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from audit.errors import InputError
from audit.json_model import to_json
from audit.result_sections import VerificationSection
from audit.results import FLAG_FEW_ERRORS, FLAG_NOT_ESTIMABLE, FLAG_UNDEFINED
from probes.pairs import threshold_at_fmr
from probes.verification import read_lfw_pairs, verification_probe


def by(result, metric, grouping=None):
    return {f.group: f for f in result.figures if f.metric == metric and (grouping is None or f.grouping == grouping)}


def line_dataset():
    """Images on a line (1-D embeddings), so every pair's euclidean distance is known."""
    rows = [  # image_id, identity, race, position
        ("a1", "a", "X", 0.0), ("a2", "a", "X", 0.5),    # genuine 0.5: match at 1.0
        ("b1", "b", "X", 10.0), ("b2", "b", "X", 11.5),  # genuine 1.5: non-match
        ("c1", "c", "Y", 20.0), ("c2", "c", "Y", 21.0),  # genuine 1.0: exactly the threshold, a match
        ("d1", "d", "Y", 20.9),
    ]
    df = pd.DataFrame(rows, columns=["image_id", "identity", "race", "pos"])
    return df["pos"].to_numpy()[:, None], df


GIVEN = pd.DataFrame([("a1", "a2", True), ("b1", "b2", True), ("c1", "c2", True),
                      ("a1", "b1", False),   # 10.0: no match
                      ("c2", "d1", False),   # 0.1: false match at 1.0
                      ("c1", "d1", False),   # 0.9: false match at 1.0
                      ("a2", "d1", False),   # 20.4, across groups: only in "all"
                      ("a1", "zz", True)],   # unknown image: dropped
                     columns=["image_id_a", "image_id_b", "genuine"])


def test_exact_rates_and_counts_on_given_pairs_with_the_match_rule_d_at_most_t():
    x, df = line_dataset()
    res = verification_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=1.0, pairs=GIVEN,
                             impostor_pairs="given", target_fmr=0.3)
    fnmr, fmr = by(res, "fnmr_at_default"), by(res, "fmr_at_default")
    assert (fnmr["all"].value, fnmr["all"].count, fnmr["all"].n_images) == (pytest.approx(1 / 3), 1, 3)
    assert (fnmr["X"].value, fnmr["X"].count, fnmr["X"].n_images) == (pytest.approx(1 / 2), 1, 2)
    assert (fnmr["Y"].value, fnmr["Y"].count) == (0.0, 0)  # distance 1.0 at threshold 1.0 matches
    assert (fmr["all"].value, fmr["all"].count, fmr["all"].n_images) == (pytest.approx(2 / 4), 2, 4)
    assert (fmr["X"].value, fmr["X"].n_images) == (0.0, 1)
    assert (fmr["Y"].value, fmr["Y"].count, fmr["Y"].n_images) == (1.0, 2, 2)
    assert FLAG_FEW_ERRORS in fmr["Y"].flags
    assert to_json(res.details)["pairs_dropped_unknown_images"] == 1
    assert to_json(res.details)["match_rule"] == "distance <= threshold"
    # global threshold at FMR 0.3 over the 4 impostor distances 0.1, 0.9, 10, 20.4: at most floor(1.2) = 1 of
    # them may match, so t = 0.1 (d <= 0.1 matches one pair)
    assert to_json(res.details)["global_threshold_at_target_fmr"] == pytest.approx(0.1)
    assert by(res, "fmr_at_fmr_3e-1")["all"].value == pytest.approx(1 / 4)
    assert by(res, "fnmr_at_fmr_3e-1")["all"].value == pytest.approx(1.0)  # no genuine distance <= 0.1
    # 4 pairs cannot estimate a threshold at FMR 0.3 (30 / 0.3 = 100 pairs needed)
    assert FLAG_NOT_ESTIMABLE in by(res, "fmr_at_fmr_3e-1")["all"].flags
    gap = next(d for d in res.disparities if d.metric == "fmr_at_default" and d.kind == "gap")
    assert (gap.value, gap.worst_group, gap.best_group) == (1.0, "Y", "X")


def test_threshold_at_fmr_is_the_largest_threshold_within_the_target():
    rng = np.random.default_rng(0)
    d = rng.random(10_000)
    t = threshold_at_fmr(d, 1e-3)
    assert np.mean(d <= t) <= 1e-3 < np.mean(d <= np.min(d[d > t]))
    assert threshold_at_fmr(np.array([1.0, 1.0, 1.0, 2.0]), 0.5) < 1.0  # ties count together
    assert threshold_at_fmr(np.arange(1, 11.0), 0.05) < 1.0  # fewer than 1 / f pairs: below every distance
    assert math.isnan(threshold_at_fmr(np.array([]), 1e-3))


def people_in_space(rng, groups, *, images=3, dim=8, noise=0.2):
    """groups: name -> (people, spread of their centres)."""
    rows, vectors = [], []
    for group, (n, spread) in groups.items():
        for i in range(n):
            centre = rng.normal(size=dim) * spread
            for _ in range(images):
                vectors.append(centre + noise * rng.normal(size=dim))
                rows.append((f"{group}{i}", group))
    return np.array(vectors), pd.DataFrame(rows, columns=["identity", "race"])


def test_generated_pairs_global_threshold_and_group_spread():
    rng = np.random.default_rng(1)
    x, df = people_in_space(rng, {"A": (120, 1.0), "B": (120, 0.6)})
    res = verification_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=0.8,
                             max_impostor_pairs=60_000)
    counts = to_json(res.details)["pair_counts"]
    assert counts["race: A"]["genuine_pairs"] == 120 * 3
    assert counts["all: all"]["genuine_pairs"] == 240 * 3
    # 360 images of 120 people: 64,620 - 360 = 64,260 distinct impostor pairs, 60,000 drawn without replacement
    assert counts["race: A"]["impostor_pairs"]["possible"] == 360 * 359 // 2 - 120 * 3
    assert counts["race: A"]["impostor_pairs"]["used"] == 60_000
    fmr = by(res, "fmr_at_fmr_1e-3")
    assert fmr["all"].value <= 1e-3
    # the crowded group B takes more than its share of the false matches at the common threshold
    assert fmr["B"].value > fmr["A"].value
    thr = by(res, "threshold_at_fmr_1e-3")
    assert thr["B"].value < thr["A"].value
    # 60,000 image pairs, but of 120 people: 7,140 pairs of people, fewer than the 30,000 FMR 1e-3 needs
    assert thr["A"].n_images == 60_000 and FLAG_NOT_ESTIMABLE in thr["A"].flags
    record = to_json(res.details)["thresholds_by_group"]["race: A"]
    assert record["person_pairs"] < 7_141 and "pairs of people" in record["reason"]
    own = by(res, "fnmr_at_own_fmr_1e-3")
    assert own["B"].value > by(res, "fnmr_at_fmr_1e-3")["B"].value  # B's own, stricter threshold rejects more
    for f in res.figures:
        if not math.isnan(f.value) and not math.isnan(f.ci_low):
            assert f.ci_low - 1e-12 <= f.value <= f.ci_high + 1e-12, (f.metric, f.group)
            assert f.ci_high > f.ci_low, (f.metric, f.group)  # never a zero-width interval
    json.dumps(to_json(res.details))  # JSON-serialisable


def test_a_threshold_from_too_few_impostor_pairs_is_not_estimable_with_its_count():
    """60 images of 20 people hold 1,710 distinct impostor pairs: far from the 30,000 FMR 1e-3 needs."""
    rng = np.random.default_rng(2)
    x, df = people_in_space(rng, {"A": (20, 1.0)})
    res = verification_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=0.8)
    thr = by(res, "threshold_at_fmr_1e-3")["A"]
    assert FLAG_NOT_ESTIMABLE in thr.flags and thr.n_images == 1_710
    assert to_json(res.details)["pair_counts"]["race: A"]["impostor_pairs"] == {
        "possible": 1_710, "used": 1_710, "distinct": True, "sampled": False, "with_both_faces": 1_710}
    assert "needs at least 30,000" in to_json(res.details)["thresholds_by_group"]["race: A"]["reason"]
    assert "1,710 were available" in to_json(res.details)["thresholds_by_group"]["race: A"]["reason"]
    for metric in ("fnmr_at_fmr_1e-3", "fmr_at_fmr_1e-3", "fnmr_at_own_fmr_1e-3"):
        assert FLAG_NOT_ESTIMABLE in by(res, metric)["A"].flags, metric
    assert FLAG_NOT_ESTIMABLE not in by(res, "fmr_at_default")["A"].flags
    assert to_json(res.details)["global_threshold_estimable"] is False
    # and a gate rule on it fails with that reason
    from audit.gate import evaluate_policy
    from audit.policy import Policy, Rule
    from audit.results import Results

    results = Results(res.figures, res.disparities)
    rule = Rule(id="t", metric="verification.threshold_at_fmr_1e-3", grouping="race", min=0.0)
    (check,) = evaluate_policy(Policy(rules=(rule,)), results).checks
    assert not check.passed and "not estimable" in check.reason


def test_a_threshold_needs_pairs_of_people_not_only_image_pairs():
    """10 people x 80 images hold 316,000 impostor image pairs but 45 pairs of people: not estimable at
    FMR 1e-3; 250 people with one image each (31,125 pairs of people) are."""
    rng = np.random.default_rng(4)
    x, df = people_in_space(rng, {"A": (10, 1.0)}, images=80)
    res = verification_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=0.8,
                             max_impostor_pairs=40_000)
    thr = by(res, "threshold_at_fmr_1e-3")["A"]
    assert thr.n_images == 40_000 and FLAG_NOT_ESTIMABLE in thr.flags
    assert to_json(res.details)["thresholds_by_group"]["race: A"]["person_pairs"] == pytest.approx(45, abs=1)
    x, df = people_in_space(rng, {"A": (250, 1.0)}, images=1)
    res = verification_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=0.8,
                             max_impostor_pairs=40_000)
    assert FLAG_NOT_ESTIMABLE not in by(res, "threshold_at_fmr_1e-3")["A"].flags


def test_fmr_interval_width_matches_the_spread_of_the_estimate():
    """A people bootstrap that weighs a pair w_a * w_b counts the pair's own variance three times: where
    pairs are sparse (20,000 drawn among 2,000,000, as in a large dataset) its intervals are 1.4-1.7x too
    wide.  The dyadic variance counts it once: the implied standard error matches the real spread."""
    rng = np.random.default_rng(3)
    values, implied = [], []
    for i in range(40):
        x, df = people_in_space(rng, {"A": (1000, 1.0)}, images=2, noise=0.3)
        f = by(verification_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=2.0, seed=i,
                                  max_impostor_pairs=20_000, max_cross_pairs=100), "fmr_at_default", "race")["A"]
        values.append(f.value)
        implied.append((f.ci_high - f.ci_low) / (2 * 1.96))
    assert 0.01 < np.mean(values) < 0.02  # rare false matches, where the pair's own variance matters
    ratio = np.mean(implied) / np.std(values, ddof=1)
    assert 0.8 < ratio < 1.25, ratio


def test_images_without_a_face_make_generalised_rates():
    """ISO/IEC 19795-1: a genuine pair with an image where no face was found is a non-match, an impostor
    pair with one is a correct rejection; the images' vectors are never read."""
    x, df = line_dataset()
    acquired = np.array([True, False, True, True, True, True, True])  # a2: no face
    x = x.copy()
    x[1] = np.nan
    res = verification_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=1.0, pairs=GIVEN,
                             impostor_pairs="given", target_fmr=0.3, acquired=acquired)
    fnmr, fmr = by(res, "fnmr_at_default"), by(res, "fmr_at_default")
    assert (fnmr["X"].value, fnmr["X"].count, fnmr["X"].n_images) == (1.0, 2, 2)  # a1-a2 now fails too
    assert (fmr["all"].count, fmr["all"].n_images) == (2, 4)  # a2-d1 cannot match: still 2 of 4
    assert to_json(res.details)["images_without_face"] == 1
    assert "fnmr_at_default" in to_json(res.details)["generalised_rates"]
    assert to_json(res.details)["pair_counts"]["race: X"]["genuine_pairs_without_face"] == 1
    with pytest.raises(InputError, match=r"acquired must be a boolean array with one entry per row"):
        verification_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=1.0,
                           acquired=np.ones(3, bool))


def test_auditor_views_det_matrix_fdr_and_summary():
    rng = np.random.default_rng(4)
    x, df = people_in_space(rng, {"A": (80, 1.0), "B": (80, 0.6)})
    res = verification_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=0.8,
                             max_cross_pairs=5_000)
    assert isinstance(res.details, VerificationSection)
    det = to_json(res.details)["det"]
    assert len(det["by_group"]["race"]["A"]["fmr"]) == len(det["thresholds"]) > 10
    assert np.all(np.diff(det["by_group"]["race"]["A"]["fmr"]) >= 0)  # FMR grows with the threshold
    assert np.all(np.diff(det["by_group"]["race"]["A"]["fnmr"]) <= 0)
    matrix = to_json(res.details)["cross_group_fmr"]["race"]
    assert matrix["groups"] == ["A", "B"] and matrix["pairs"][0][1] == 5_000
    at_default = matrix["fmr"]["default"]["value"]
    assert at_default[1][1] > at_default[0][0]  # the crowded group confuses its own people more
    assert at_default[0][1] == at_default[1][0]
    fdr = to_json(res.details)["fairness_discrepancy_rate"]["race"]["default"]
    assert fdr["ci_low"] <= fdr["value"] <= fdr["ci_high"] <= 1
    fmr = by(res, "fmr_at_default", "race")
    fnmr = by(res, "fnmr_at_default", "race")
    a_fmr = abs(fmr["A"].value - fmr["B"].value)
    a_fnmr = abs(fnmr["A"].value - fnmr["B"].value)
    assert fdr["value"] == pytest.approx(1 - 0.5 * a_fmr - 0.5 * a_fnmr)
    summary = {(r["grouping"], r["group"]): r for r in to_json(res.details)["summary"]}
    assert summary["race", "A"]["n_images"] == 240 and summary["race", "A"]["failed_to_acquire"] == 0
    assert summary["race", "A"]["fmr_at_default"] == pytest.approx(fmr["A"].value)


def test_group_without_genuine_pairs_is_undefined():
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"identity": ["a", "a", "b", "c", "d"], "race": ["X", "X", "Y", "Y", "Y"]})
    res = verification_probe(rng.normal(size=(5, 4)), df, groupings=[["race"]], metric="cosine",
                             threshold=0.5)
    f = by(res, "fnmr_at_default")["Y"]
    assert math.isnan(f.value) and FLAG_UNDEFINED in f.flags and f.n_images == 0


def test_read_lfw_pairs(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("10\t300\nAbel_Pacheco\t1\t4\nAbdel_Madi_Shabneh\t1\tDean_Barker\t1\n")
    pairs = read_lfw_pairs(path)
    assert pairs.to_dict("records") == [
        {"image_id_a": "images_deepfunneled/Abel_Pacheco/Abel_Pacheco_0001.jpg",
         "image_id_b": "images_deepfunneled/Abel_Pacheco/Abel_Pacheco_0004.jpg", "genuine": True},
        {"image_id_a": "images_deepfunneled/Abdel_Madi_Shabneh/Abdel_Madi_Shabneh_0001.jpg",
         "image_id_b": "images_deepfunneled/Dean_Barker/Dean_Barker_0001.jpg", "genuine": False}]
    path.write_text("10\t300\nAbel_Pacheco\tone\t4\n")
    with pytest.raises(InputError, match=r"line 2: 'Abel_Pacheco\\tone\\t4' is not 'Name i j'"):
        read_lfw_pairs(path)


@pytest.mark.shared_data
def test_read_the_real_lfw_pairs(lfw_dir):
    pairs = read_lfw_pairs(lfw_dir / "pairs.txt")
    assert len(pairs) == 6000 and pairs["genuine"].sum() == 3000
