"""Identity-disjoint, stratified splits with one image per val/test person."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.errors import InputError
from probes.inversion.splits import average_identities, split_identities


def manifest(seed: int = 0) -> pd.DataFrame:
    """200 people: 150 'A' with 1-4 images each, 50 'B' with 1-4 images each."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(200):
        race = "A" if p < 150 else "B"
        gender = "F" if p % 2 else "M"
        for k in range(int(rng.integers(1, 5))):
            rows.append({"image_id": f"p{p}_{k}.jpg", "identity": f"p{p}", "race": race, "gender": gender})
    return pd.DataFrame(rows)


def test_identity_disjoint_and_one_image_per_val_test_person() -> None:
    table = manifest()
    split = split_identities(table, stratify=["race"], seed=1)
    assert split.index.equals(table.index) and split.name == "split"
    roles = table.assign(split=split.replace({"test_extra": "test", "unused": "val"}))
    assert (roles.groupby("identity")["split"].nunique() == 1).all()  # each person in one role
    for chosen in ("val", "test"):
        picked = table[split == chosen]
        assert picked["identity"].is_unique
        everyone = set(table.loc[split.isin([chosen, "test_extra" if chosen == "test" else "unused"]), "identity"])
        assert set(picked["identity"]) == everyone
    assert set(split) == {"train", "val", "test", "test_extra", "unused"}


def test_stratified_counts_per_group() -> None:
    table = manifest()
    split = split_identities(table, stratify=["race"], seed=3)
    tests = table[split == "test"].groupby("race")["identity"].nunique()
    vals = table[split == "val"].groupby("race")["identity"].nunique()
    assert tests.to_dict() == {"A": 30, "B": 10}  # round(150 * 0.2), round(50 * 0.2)
    assert vals.to_dict() == {"A": 15, "B": 5}


def test_intersectional_strata_and_seed() -> None:
    table = manifest()
    a = split_identities(table, stratify=["race", "gender"], seed=0)
    b = split_identities(table, stratify=["race", "gender"], seed=0)
    c = split_identities(table, stratify=["race", "gender"], seed=1)
    assert a.equals(b) and not a.equals(c)
    counts = table[a == "test"].groupby(["race", "gender"])["identity"].nunique()
    assert counts.to_dict() == {("A", "F"): 15, ("A", "M"): 15, ("B", "F"): 5, ("B", "M"): 5}


def test_no_identities_means_each_image_is_a_person() -> None:
    table = pd.DataFrame({"image_id": [f"{i}.jpg" for i in range(50)], "race": ["A"] * 30 + ["B"] * 20})
    split = split_identities(table, stratify=["race"], seed=0)
    assert split.value_counts().to_dict() == {"train": 35, "test": 10, "val": 5}
    assert "test_extra" not in set(split) and "unused" not in set(split)


def test_tiny_groups_keep_a_training_person() -> None:
    table = pd.DataFrame({"identity": ["a", "b", "c"], "race": ["X", "Y", "Y"]})
    split = split_identities(table, stratify=["race"], val_fraction=0.45, test_fraction=0.5, seed=0)
    assert split[0] == "train"  # a group of one person trains
    assert sorted(split[1:]) == ["test", "train"]


@pytest.mark.parametrize("kwargs, message", [
    ({"stratify": ["age"]}, "stratify=['age']: the table has no column(s) ['age']."),
    ({"stratify": ["race"], "test_fraction": 1.2}, "test_fraction=1.2, must be a number in [0, 1)."),
    ({"stratify": ["race"], "val_fraction": 0.5, "test_fraction": 0.5},
     "val_fraction + test_fraction = 1.0, must be < 1"),
])
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError) as exc:
        split_identities(manifest(), **kwargs)
    assert message in str(exc.value)


def test_average_identities() -> None:
    chips = np.zeros((5, 2, 2, 3), dtype=np.uint8)
    chips[0], chips[1], chips[2] = 10, 20, 31  # person a: mean 20.33 -> 20
    chips[3], chips[4] = 100, 200               # person b: only 2 images, kept
    out = average_identities(chips, ["a", "a", "a", "b", "b"], min_images=3)
    assert out.dtype == np.uint8 and out.shape == chips.shape
    assert out[:3].tolist() == np.full((3, 2, 2, 3), 20).tolist()
    assert np.array_equal(out[3:], chips[3:])
    out2 = average_identities(chips, ["a", "a", "a", "b", "b"], min_images=2)
    assert np.all(out2[3:] == 150)
    with pytest.raises(InputError, match="min_images=1, must be an integer >= 2"):
        average_identities(chips, ["a"] * 5, min_images=1)


def test_a_person_with_several_labels_takes_the_most_frequent() -> None:
    table = pd.DataFrame({"identity": ["a", "a", "a", "b", "b"] + [f"x{i}" for i in range(8)],
                          "race": ["Y", "X", "Y", "X", "Y"] + ["Z"] * 8})
    split = split_identities(table, stratify=["race"], val_fraction=0.0, test_fraction=0.5, seed=0)
    # strata: Y = {a} (most frequent), X = {b} (tie, first seen), Z = 8 people -> 4 test
    roles = table.assign(split=split).groupby("identity")["split"].agg(set)
    assert roles["a"] == {"train"} and roles["b"] == {"train"}  # one-person strata keep their person
    assert sum("test" in roles[f"x{i}"] for i in range(8)) == 4


def test_large_table_is_quick() -> None:
    import time
    n = 20_000
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"identity": rng.integers(0, 8000, n).astype(str),
                          "race": rng.choice(list("ABCDE"), n), "gender": rng.choice(list("FM"), n)})
    started = time.perf_counter()
    split = split_identities(table, stratify=["race", "gender"], seed=0)
    assert time.perf_counter() - started < 5.0
    assert table.loc[split == "test", "identity"].is_unique
