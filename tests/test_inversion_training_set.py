"""Training corpus minus the audit set, balanced over groups: on made-up tables and vectors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from audit.errors import InputError
from probes.inversion.training_set import (REASON_SAME_IDENTITY, REASON_SAME_IMAGE, balance_attributes,
                                           composition, corpus_origin, near_duplicate_mask, overlap_reasons,
                                           plan_balance, trim_to_balance)


def table(hashes, identities, origin="lfw:/data/lfw", has_identities=True, **attrs):
    data = {"content_hash": hashes, "identity": identities, "origin": origin,
            "has_identities": has_identities}
    data.update(attrs)
    return pd.DataFrame(data)


def test_same_file_is_dropped_whatever_the_corpus():
    train = table(["h1", "h2", "h3"], ["a", "b", "c"], origin="utkface:/u", has_identities=False)
    audit = table(["h2"], ["x"], origin="mine:/m", has_identities=False)
    assert overlap_reasons(train, audit).tolist() == ["", REASON_SAME_IMAGE, ""]


def test_same_person_is_dropped_only_within_one_corpus():
    train = pd.concat([table(["h1", "h2"], ["Ann", "Bob"]),
                       table(["h3"], ["Ann"], origin="other:/o")], ignore_index=True)
    audit = table(["h9"], ["Ann"])
    assert overlap_reasons(train, audit).tolist() == [REASON_SAME_IDENTITY, "", ""]


def test_images_without_real_identities_never_match_by_identity():
    # UTKFace-like: the 'identity' is the image id, one per image.
    train = table(["h1"], ["images/1.jpg"], has_identities=False)
    audit = table(["h2"], ["images/1.jpg"], has_identities=False)
    assert overlap_reasons(train, audit).tolist() == [""]


def test_near_duplicates_found_by_embedding_distance():
    rng = np.random.default_rng(0)
    audit = rng.normal(size=(50, 8))
    train = rng.normal(size=(300, 8))
    train[[7, 123]] = audit[[3, 40]] + 0.001          # re-encoded copies land very close
    train[200] = audit[5] + 0.5                        # another photo: far
    train[201] = np.nan                                # no vector: never matches
    mask = near_duplicate_mask(train, audit, metric="euclidean", max_distance=0.06)
    assert np.flatnonzero(mask).tolist() == [7, 123]


def test_near_duplicates_in_blocks_equal_brute_force(monkeypatch):
    import probes.inversion.training_set as ts

    monkeypatch.setattr(ts, "_BLOCK", 7)
    rng = np.random.default_rng(1)
    audit, train = rng.normal(size=(20, 4)), rng.normal(size=(50, 4))
    full = np.linalg.norm(train[:, None] - audit[None], axis=2).min(axis=1) <= 1.0
    assert np.array_equal(ts.near_duplicate_mask(train, audit, metric="euclidean", max_distance=1.0), full)


def test_corpus_origin_follows_balance_steps(tmp_path):
    raw, imported, balanced = tmp_path / "raw", tmp_path / "imp", tmp_path / "bal"
    for folder in (raw, imported, balanced):
        folder.mkdir()
    info_imported = {"kind": "lfw", "source": str(raw)}
    (imported / "dataset.json").write_text(json.dumps(info_imported))
    info_balanced = {"created_by": "audit dataset balance", "source": str(imported)}
    (balanced / "dataset.json").write_text(json.dumps(info_balanced))
    assert corpus_origin(balanced, info_balanced) == corpus_origin(imported, info_imported) == f"lfw:{raw}"
    assert corpus_origin(tmp_path, {}) == f"folder:{tmp_path.resolve()}"


def corpus(n_per_cell: dict[tuple[str, str], int]) -> pd.DataFrame:
    rows = [(race, gender) for (race, gender), n in n_per_cell.items() for _ in range(n)]
    return pd.DataFrame(rows, columns=["race", "gender"])


def test_balance_picks_the_smallest_cell_plus_a_margin():
    data = corpus({("A", "F"): 100, ("A", "M"): 400, ("B", "F"): 300, ("B", "M"): 250})
    plan = plan_balance(data, ["race", "gender"], seed=0)
    assert plan.per_group == 100
    counts = pd.Series(plan.cells).value_counts().to_dict()
    assert counts["A / F"] == 100                      # all of the smallest cell
    assert all(n == 100 + int(np.ceil(100 * 0.05)) + 2 for cell, n in counts.items() if cell != "A / F")
    assert set(data.iloc[plan.selected][["race", "gender"]].agg(" / ".join, axis=1)) == set(counts)


def test_balance_drops_rows_without_a_label_with_a_count():
    data = corpus({("A", "F"): 10, ("", "M"): 5, ("B", "F"): 12})
    plan = plan_balance(data, ["race", "gender"], per_group=8, seed=0)
    assert len(plan.dropped_no_label) == 5 and set(plan.cells) == {"A / F", "B / F"}


def test_trim_gives_every_cell_the_same_usable_count():
    cells = np.array(["a"] * 6 + ["b"] * 6, dtype=object)
    usable = np.array([1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1], dtype=bool)
    keep = trim_to_balance(cells, usable, per_group=5)
    assert keep[:6].sum() == keep[6:].sum() == 5 and not keep[2]
    assert trim_to_balance(cells, usable, per_group=3).sum() == 6


def test_balance_attributes_resolution():
    data = pd.DataFrame({"race": ["", ""], "gender": ["F", "M"]})
    assert balance_attributes(data, "group-by", ["race", "gender"]) == ("gender",)   # race is blank everywhere
    assert balance_attributes(data, "none", ["race", "gender"]) == ()
    with pytest.raises(InputError, match="no attribute age"):
        balance_attributes(data, "age", ["race"])


def test_composition_per_attribute_and_cell():
    data = corpus({("A", "F"): 2, ("B", "M"): 3})
    assert composition(data, ["race", "gender"]) == {
        "race": {"A": 2, "B": 3}, "gender": {"F": 2, "M": 3}, "race*gender": {"A / F": 2, "B / M": 3}}
