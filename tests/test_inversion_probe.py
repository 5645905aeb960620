"""The probe end to end on tiny data: the samples table and the details the report reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit.errors import InputError
from probes.inversion.probe import run_inversion_probe
from probes.inversion.splits import split_identities
from probes.inversion.training import TrainingConfig

DIM = 8


class FlakyProjection:
    """A fixed random projection of the 8x8 downsampled image; with ``fail``, 'no face'
    for every second image of a call."""

    def __init__(self, fail: bool) -> None:
        self.w = np.random.default_rng(1).normal(size=(8 * 8 * 3, DIM)) / 8.0
        self.fail = fail

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        small = images.reshape(len(images), 8, 8, 8, 8, 3).mean(axis=(2, 4)) / 255.0
        vectors = (small.reshape(len(images), -1) @ self.w).astype(np.float32)
        ok = np.arange(len(images)) % 2 == 0 if self.fail else np.ones(len(images), bool)
        vectors[~ok] = np.nan
        return vectors, ok


@pytest.fixture(scope="module")
def dataset() -> dict:
    rng = np.random.default_rng(0)
    rows = []
    for p in range(40):
        for k in range(1 + p % 3):
            rows.append({"image_id": f"p{p}/{k}.png", "identity": f"p{p}",
                         "race": ["A", "B"][p % 2], "gender": ["F", "M"][(p // 2) % 2]})
    table = pd.DataFrame(rows)
    chips = rng.integers(0, 256, size=(len(table), 64, 64, 3), dtype=np.uint8)
    embeddings, _ = FlakyProjection(fail=False)(chips)
    return {"table": table, "chips": chips, "embeddings": embeddings}


def run(dataset: dict, out: Path, *, fail: bool = False, impostors=None):
    table = dataset["table"]
    split = split_identities(table, stratify=["race", "gender"], seed=0)
    config = TrainingConfig(epochs=2, batch_size=16, base_channels=16, validate_every=1, device="cpu")
    if impostors is None:
        impostors = np.linspace(0.0, 2.0, 2001)[1:]  # 2000 pairs: threshold at FMR 1e-3 is 0.002
    return split, run_inversion_probe(
        embeddings=dataset["embeddings"], chips=dataset["chips"], table=table, split=split,
        embed_fn=FlakyProjection(fail), metric="euclidean", default_threshold=0.6,
        impostor_distances=impostors, config=config, out_dir=out,
        groupings=[["race"], ["gender"], ["race", "gender"]], person="identity", seed=0, progress=False)


def test_samples_table(dataset: dict, tmp_path: Path) -> None:
    split, result = run(dataset, tmp_path, fail=True)
    s = result.samples
    test_ids = dataset["table"].loc[split == "test", "image_id"].tolist()
    assert s["image_id"].tolist() == test_ids and s["identity"].is_unique
    assert {"race", "gender", "distance", "recon_ok", "no_face", "success_at_default", "success_at_crossing",
            "success_at_fmr_1e-3", "random_pair_distance_within", "random_pair_distance_across",
            "type2_distance"} <= set(s.columns)
    assert s["distance"].isna().tolist() == (~s["recon_ok"]).tolist()
    assert 0 < (~s["recon_ok"]).sum() < len(s)  # the flaky target failed on some
    expected = (s["recon_ok"] & (s["distance"] <= 0.6)).astype(float)
    assert s["success_at_default"].tolist() == expected.tolist()
    assert (s.loc[~s["recon_ok"], ["success_at_default", "success_at_crossing"]] == 0).all().all()
    # type II only for test people with another photo
    extra_people = set(dataset["table"].loc[split == "test_extra", "identity"])
    has_type2 = s["type2_distance"].notna()
    assert set(s.loc[has_type2, "identity"]) <= extra_people
    assert set(s.loc[s["recon_ok"] & s["identity"].isin(extra_people), "identity"]) == set(s.loc[has_type2, "identity"])


def test_details_structure_and_files(dataset: dict, tmp_path: Path) -> None:
    _, result = run(dataset, tmp_path)
    d = result.details
    json.dumps(d, allow_nan=False)  # JSON-serialisable as it is
    assert set(d["thresholds"]) == {"default", "crossing", "fmr_1e-3"} == set(d["success_rate_at"])
    assert d["thresholds"]["default"] == 0.6 and d["thresholds"]["fmr_1e-3"] == pytest.approx(0.002)
    s = result.samples
    assert d["success_rate_at"]["default"] == pytest.approx(s["success_at_default"].mean())
    assert set(d["sweep"]["by_group"]) == {"all", "race", "gender", "race*gender"}
    assert set(d["sweep"]["by_group"]["race*gender"]) == {"A / F", "A / M", "B / F", "B / M"}
    n_t = len(d["sweep"]["thresholds"])
    assert all(len(r) == n_t for g in d["sweep"]["by_group"].values() for r in g.values())
    assert d["sweep"]["by_group"]["all"]["all"][-1] == pytest.approx(s["recon_ok"].mean())
    genuine = d["distributions"]["race"]["A"]["genuine"]
    assert len(genuine) == int((s["race"] == "A").sum())
    assert [h["epoch"] for h in d["history"]] == [1, 2]
    assert set(d["history"][0]) == {"epoch", "train_loss", "val_mean_distance", "val_failures"}
    assert d["device"] == "cpu" and d["best_epoch"] in (1, 2) and d["training_seconds"] > 0
    images = d["sample_images"]
    assert {(i["grouping"], i["group"]) for i in images} >= {("race", "A"), ("race*gender", "B / M")}
    for item in images:
        for key in ("original", "reconstruction"):
            assert item[key].startswith("samples/")
            with Image.open(tmp_path / item[key]) as im:
                assert im.size == (64, 64) and im.mode == "RGB"
    assert (tmp_path / "checkpoints" / "inversion" / "best.pt").is_file()


def test_random_pairs_respect_groups(dataset: dict, tmp_path: Path) -> None:
    _, result = run(dataset, tmp_path)
    s = result.samples
    # Within-group pairs exist wherever the finest group has another test person.
    sizes = s.groupby(["race", "gender"])["identity"].transform("size")
    assert s.loc[sizes > 1, "random_pair_distance_within"].notna().all()
    assert s.loc[sizes == 1, "random_pair_distance_within"].isna().all()
    assert s["random_pair_distance_across"].notna().all()


def test_no_impostors_gives_nan_threshold_and_bad_split(dataset: dict, tmp_path: Path) -> None:
    _, result = run(dataset, tmp_path, impostors=np.array([]))
    assert result.details["thresholds"]["fmr_1e-3"] is None
    assert result.samples["success_at_fmr_1e-3"].isna().all()
    with pytest.raises(InputError, match="split has label"):
        run_inversion_probe(embeddings=dataset["embeddings"], chips=dataset["chips"], table=dataset["table"],
                            split=pd.Series(["x"] * len(dataset["table"])), embed_fn=FlakyProjection(False),
                            metric="euclidean", default_threshold=0.6, impostor_distances=None,
                            config=TrainingConfig(epochs=1), out_dir=tmp_path / "x", groupings=[["race"]])


def test_several_generators_pool_their_rows_and_report_signal(dataset: dict, tmp_path: Path) -> None:
    table = dataset["table"]
    split = split_identities(table, stratify=["race", "gender"], seed=0)
    config = TrainingConfig(epochs=1, batch_size=16, base_channels=16, validate_every=1, device="cpu")
    result = run_inversion_probe(
        embeddings=dataset["embeddings"], chips=dataset["chips"], table=table, split=split,
        embed_fn=FlakyProjection(False), metric="euclidean", default_threshold=0.6, impostor_distances=None,
        config=config, out_dir=tmp_path, groupings=[["race"]], person="identity", seed=0, progress=False,
        n_generators=2)
    s = result.samples
    n_test = int((split == "test").sum())
    assert sorted(s["generator"].unique()) == [0, 1] and len(s) == 2 * n_test
    assert (s.groupby("generator")["image_id"].apply(list).iloc[0]
            == s.groupby("generator")["image_id"].apply(list).iloc[1])
    assert (tmp_path / "checkpoints" / "inversion-seed1" / "best.pt").is_file()
    assert [g["label"] for g in result.details["generators"]] == ["seed 0", "seed 1"]
    signal = {(t["grouping"], t["group"]) for t in result.details["signal"]}
    assert signal == {("all", "all"), ("race", "A"), ("race", "B")}
    # The crossing threshold of each sample is one of the cross-fitted fold thresholds.
    folds = result.details["crossing_fold_thresholds"]
    assert len(folds) == 4
    assert set(np.round(s["threshold_crossing"].dropna(), 9)) <= set(np.round(folds, 9))
