"""probes.verification: exact FMR/FNMR on pairs with known distances, thresholds, LFW pairs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from audit.errors import InputError
from audit.results import FLAG_FEW_ERRORS, FLAG_UNDEFINED
from probes.verification import read_lfw_pairs, threshold_at_fmr, verification_probe


def by(result, metric):
    return {f.group: f for f in result.figures if f.metric == metric}


def line_dataset():
    """Images on a line (1-D embeddings), so every pair's euclidean distance is known."""
    rows = [  # image_id, identity, race, position
        ("a1", "a", "X", 0.0), ("a2", "a", "X", 0.5),    # genuine 0.5: match at 1.0
        ("b1", "b", "X", 10.0), ("b2", "b", "X", 11.5),  # genuine 1.5: non-match
        ("c1", "c", "Y", 20.0), ("c2", "c", "Y", 20.2),  # genuine 0.2: match
        ("d1", "d", "Y", 20.9),
    ]
    df = pd.DataFrame(rows, columns=["image_id", "identity", "race", "pos"])
    return df["pos"].to_numpy()[:, None], df


def test_exact_rates_and_counts_on_given_pairs():
    x, df = line_dataset()
    pairs = pd.DataFrame([("a1", "a2", True), ("b1", "b2", True), ("c1", "c2", True),
                          ("a1", "b1", False),   # 10.0: no match
                          ("c2", "d1", False),   # 0.7: false match at 1.0
                          ("c1", "d1", False),   # 0.9: false match at 1.0
                          ("a2", "d1", False),   # 20.4, across groups: only in "all"
                          ("a1", "zz", True)],   # unknown image: dropped
                         columns=["image_id_a", "image_id_b", "genuine"])
    res = verification_probe(x, df, groupings=[["race"]], metric="euclidean", threshold=1.0,
                             pairs=pairs, n_resamples=50, target_fmr=0.3)
    fnmr, fmr = by(res, "fnmr_at_default"), by(res, "fmr_at_default")
    assert (fnmr["all"].value, fnmr["all"].count, fnmr["all"].n_images) == (pytest.approx(1 / 3), 1, 3)
    assert (fnmr["X"].value, fnmr["X"].count, fnmr["X"].n_images) == (pytest.approx(1 / 2), 1, 2)
    assert (fnmr["Y"].value, fnmr["Y"].count) == (0.0, 0)
    assert (fmr["all"].value, fmr["all"].count, fmr["all"].n_images) == (pytest.approx(2 / 4), 2, 4)
    assert (fmr["X"].value, fmr["X"].n_images) == (0.0, 1)
    assert (fmr["Y"].value, fmr["Y"].count, fmr["Y"].n_images) == (1.0, 2, 2)
    assert FLAG_FEW_ERRORS in fmr["Y"].flags
    assert res.details["pairs_dropped_unknown_images"] == 1
    # global threshold at FMR 0.3 over the 4 impostor distances 0.7, 0.9, 10, 20.4: floor(1.2) = 1
    assert res.details["global_threshold_at_target_fmr"] == pytest.approx(0.9)
    assert by(res, "fmr_at_fmr_3e-1")["all"].value == pytest.approx(1 / 4)
    assert by(res, "fnmr_at_fmr_3e-1")["all"].value == pytest.approx(1 / 3)  # only 1.5 >= 0.9
    assert by(res, "threshold_at_fmr_3e-1")["Y"].value == pytest.approx(0.7)
    ratio = next(d for d in res.disparities if d.metric == "fmr_at_default" and d.kind == "max_min_ratio")
    assert math.isnan(ratio.value) and FLAG_UNDEFINED in ratio.flags  # X's FMR is 0
    gap = next(d for d in res.disparities if d.metric == "fmr_at_default" and d.kind == "max_gap")
    assert (gap.value, gap.worst_group, gap.best_group) == (1.0, "Y", "X")


def test_threshold_at_fmr_is_the_largest_threshold_within_the_target():
    rng = np.random.default_rng(0)
    d = rng.random(10_000)
    t = threshold_at_fmr(d, 1e-3)
    assert np.mean(d < t) <= 1e-3 < np.mean(d <= t) + 1e-12
    assert math.isnan(threshold_at_fmr(np.array([]), 1e-3))


def test_generated_pairs_global_threshold_and_group_spread():
    rng = np.random.default_rng(1)
    rows, vectors = [], []
    for group, spread in (("A", 1.0), ("B", 0.6)):
        for i in range(120):
            centre = rng.normal(size=8) * spread
            for k in range(3):
                vectors.append(centre + 0.2 * rng.normal(size=8))
                rows.append((f"{group}{i}", group))
    df = pd.DataFrame(rows, columns=["identity", "race"])
    res = verification_probe(np.array(vectors), df, groupings=[["race"]], metric="euclidean",
                             threshold=0.8, n_resamples=100, max_impostor_pairs=20_000)
    assert res.details["pair_counts"]["race: A"]["genuine_pairs"] == 120 * 3
    assert res.details["pair_counts"]["all: all"]["genuine_pairs"] == 240 * 3
    fmr = by(res, "fmr_at_fmr_1e-3")
    assert fmr["all"].value <= 1e-3
    # the crowded group B takes more than its share of the false matches at the common threshold
    assert fmr["B"].value > fmr["A"].value
    thr = by(res, "threshold_at_fmr_1e-3")
    assert thr["B"].value < thr["A"].value
    for f in res.figures:
        if not math.isnan(f.value) and not math.isnan(f.ci_low):
            assert f.ci_low - 1e-12 <= f.value <= f.ci_high + 1e-12, (f.metric, f.group)


def test_group_without_genuine_pairs_is_undefined():
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"identity": ["a", "a", "b", "c", "d"], "race": ["X", "X", "Y", "Y", "Y"]})
    res = verification_probe(rng.normal(size=(5, 4)), df, groupings=[["race"]], metric="cosine",
                             threshold=0.5, n_resamples=20)
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
