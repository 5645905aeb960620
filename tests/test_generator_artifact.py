"""The generator as an artifact: written, read back, reused, and refused where it must be."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from audit.errors import InputError
from audit.generator_stage import (AuditSide, GeneratorRequest, TrainingSet, check_artifact_against_audit,
                                   obtain_generator, seeded_configs)
from probes.inversion.artifact import (INFO_FILE, check_target, generator_cache_dir, is_complete,
                                       read_artifact)
from probes.inversion.training import TrainingConfig
from tests.fake_targets import DIM, ProjectionTarget



def training_set(n_people: int = 30, seed: int = 0) -> TrainingSet:
    rng = np.random.default_rng(seed)
    chips = rng.integers(0, 256, size=(n_people, 64, 64, 3), dtype=np.uint8)
    vectors = ProjectionTarget().vectors(chips)
    split = ["val" if i % 6 == 0 else "train" for i in range(n_people)]
    table = pd.DataFrame({"content_hash": [f"h{i}" for i in range(n_people)],
                          "identity": [f"p{i}" for i in range(n_people)], "origin": "corpus:/c",
                          "has_identities": True, "dataset": "/c", "image_id": [f"{i}.png" for i in range(n_people)],
                          "race": ["A", "B"] * (n_people // 2), "split": split})
    return TrainingSet(table, vectors, chips, {"same_image": 2}, ("race",), None, n_people + 2,
                       {"race": {"A": 12, "B": 13}})


CONFIG = TrainingConfig(epochs=2, batch_size=8, base_channels=16, validate_every=1, device="cpu")


def make(folder: Path | None, cache: Path | None = None, config: TrainingConfig = CONFIG):
    target = ProjectionTarget()
    request = GeneratorRequest(target, "faces-v1:test", config, progress=False)
    return obtain_generator(request, training_set(), embed_fn=target.embed_fn, folder=folder, cache_path=cache)


def test_round_trip_holds_everything_an_audit_needs(tmp_path: Path) -> None:
    artifact = make(tmp_path / "gen")
    again = read_artifact(tmp_path / "gen")
    info = again.info
    assert info["complete"] and info["target"]["fingerprint"] == "projection-1"
    assert info["settings"]["epochs"] == 2 and info["training_set"]["dropped"] == {"same_image": 2}
    assert info["training_set"]["composition"] == {"race": {"A": 12, "B": 13}}
    assert len(again.history()) == 2 and again.config == CONFIG
    assert again.training_set["content_hash"].tolist() == [f"h{i}" for i in range(30)]
    assert again.training_vectors.dtype == np.float16 and again.training_vectors.shape == (30, DIM)
    x = torch.from_numpy(training_set().vectors[:4])
    with torch.no_grad():
        assert torch.equal(artifact.model()(x), again.model()(x))


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mode & 0o777 for p in [folder, *folder.rglob("*")]}


@pytest.mark.parametrize("where", ["out", "cache"])
def test_a_generator_folder_is_owner_only_whatever_the_umask(tmp_path: Path, where: str) -> None:
    """Its training vectors are biometric data and its weights reconstruct faces."""
    old = os.umask(0o022)
    try:
        artifact = make(tmp_path / "gen" if where == "out" else None, tmp_path / "cache" / "cache.sqlite")
    finally:
        os.umask(old)
    modes = _modes(artifact.folder)
    assert {"best.pt", "last.pt", "training_vectors.npy", "training_set.csv", "generator.json"} <= set(modes)
    assert {name: mode for name, mode in modes.items()
            if mode != (0o700 if (artifact.folder / name).is_dir() else 0o600)} == {}
    if where == "cache":
        assert generator_cache_dir(tmp_path / "cache" / "cache.sqlite").stat().st_mode & 0o777 == 0o700


def test_weights_load_weights_only(tmp_path: Path, monkeypatch) -> None:
    make(tmp_path / "gen")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    read_artifact(tmp_path / "gen").model()
    assert calls and all(c is True for c in calls)


def test_a_second_request_reuses_the_cached_generator(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache.sqlite"
    first = make(None, cache)
    assert first.folder.parent == generator_cache_dir(cache)
    import audit.generator_stage as stage

    monkeypatch.setattr(stage, "train_generator", lambda *a, **k: pytest.fail("trained again"))
    assert make(None, cache).folder == first.folder
    # Other settings are another generator: it would train (and here fail loudly).
    with pytest.raises(BaseException, match="trained again"):
        make(None, cache, TrainingConfig(epochs=3, batch_size=8, base_channels=16, device="cpu"))


def test_seeds_give_distinct_generators(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    folders = {make(None, cache, c).folder for c in seeded_configs(CONFIG, 2)}
    assert len(folders) == 2


def test_an_unfinished_folder_is_not_a_generator(tmp_path: Path) -> None:
    make(tmp_path / "gen")
    info = json.loads((tmp_path / "gen" / INFO_FILE).read_text())
    info["complete"] = False
    (tmp_path / "gen" / INFO_FILE).write_text(json.dumps(info))
    assert not is_complete(tmp_path / "gen")
    with pytest.raises(InputError, match="not finished"):
        read_artifact(tmp_path / "gen")
    with pytest.raises(InputError, match="no generator.json"):
        read_artifact(tmp_path)


def test_another_target_is_refused(tmp_path: Path) -> None:
    artifact = make(tmp_path / "gen")
    check_target(artifact, fingerprint="projection-1", preprocessing="faces-v1:test")
    with pytest.raises(InputError, match="trained against target 'projection' with fingerprint 'projection-1'"):
        check_target(artifact, fingerprint="projection-2", preprocessing="faces-v1:test")
    with pytest.raises(InputError, match="chips aligned with"):
        check_target(artifact, fingerprint="projection-1", preprocessing="faces-v1:other")


def audit_side(hashes, identities, vectors, origin="mine:/m", has_identities=False) -> AuditSide:
    return AuditSide(pd.DataFrame({"content_hash": hashes, "identity": identities, "origin": origin,
                                   "has_identities": has_identities}), np.asarray(vectors, dtype=np.float32))


def test_an_audit_of_its_training_faces_is_refused(tmp_path: Path) -> None:
    artifact = make(tmp_path / "gen")
    far = np.full((1, DIM), 50.0)
    check_artifact_against_audit(artifact, audit_side(["zz"], ["q"], far), metric="euclidean", max_distance=0.06)
    with pytest.raises(InputError, match="same image: 1"):
        check_artifact_against_audit(artifact, audit_side(["h3"], ["q"], far), metric="euclidean",
                                     max_distance=0.06)
    with pytest.raises(InputError, match="same identity: 1"):
        check_artifact_against_audit(artifact, audit_side(["zz"], ["p4"], far, origin="corpus:/c",
                                                          has_identities=True),
                                     metric="euclidean", max_distance=0.06)
    copy = training_set().vectors[[5]] + 0.001
    with pytest.raises(InputError, match="near duplicate: 1"):
        check_artifact_against_audit(artifact, audit_side(["zz"], ["q"], copy), metric="euclidean",
                                     max_distance=0.06)
