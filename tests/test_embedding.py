"""The embed stage: statuses per image, the cache, resuming a killed run."""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit.cache import CachedEmbedding, EmbeddingCache
from audit.embedding import Embedder
from audit.errors import CacheError
from audit.targets.base import EmbedOutcome, Target


class CountingTarget(Target):
    """A cheap aligned-chip target that counts what it was asked to embed."""

    name = "counting"
    input_kind = "aligned"
    chip_size = 150

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    dimension = property(lambda self: 8)
    metric = property(lambda self: "euclidean")
    default_threshold = property(lambda self: 0.6)

    def fingerprint(self) -> str:
        return "counting-v1"

    def embed(self, images):
        out = []
        for image in images:
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise KeyboardInterrupt("killed")
            self.calls += 1
            small = np.asarray(Image.fromarray(image).resize((2, 2))).astype(np.float32)
            out.append(EmbedOutcome.ok(small.reshape(-1)[:8] / 255.0))
        return out


@dataclass
class FolderDataset:
    root: Path
    table: pd.DataFrame

    def absolute_path(self, path) -> Path:
        return self.root / path


@pytest.fixture()
def face_folder(tmp_path, astronaut) -> FolderDataset:
    """Three copies of a real face (altered so their bytes differ), a blank image and a broken file."""
    rows = []
    for i, shift in enumerate((0, 10, 20)):
        face = np.clip(astronaut.astype(int) + shift, 0, 255).astype(np.uint8)
        Image.fromarray(face).save(tmp_path / f"face{i}.png")
        rows.append((f"face{i}.png", "A" if i < 2 else "B"))
    Image.fromarray(np.full((200, 200, 3), 127, np.uint8)).save(tmp_path / "blank.png")
    rows.append(("blank.png", "B"))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    rows.append(("broken.jpg", "B"))
    table = pd.DataFrame(rows, columns=["path", "group"])
    table.insert(0, "image_id", table["path"])
    return FolderDataset(tmp_path, table)


def test_every_image_gets_a_status_and_nothing_is_dropped(face_folder, tmp_path):
    target = CountingTarget()
    result = Embedder(target, workers=1, show_progress=False).embed_dataset(face_folder)
    statuses = dict(zip(result.table["image_id"], result.table["status"]))
    assert statuses == {"face0.png": "ok", "face1.png": "ok", "face2.png": "ok",
                        "blank.png": "no_face", "broken.jpg": "error"}
    assert "not a readable image" in result.table.set_index("image_id").loc["broken.jpg", "reason"]
    assert np.isfinite(result.vectors[:3]).all() and np.isnan(result.vectors[3:]).all()
    assert result.chips.shape == (5, 64, 64, 3)
    assert result.chips[0].std() > 10 and result.chips[3].max() == 0


def test_second_run_comes_from_the_cache(face_folder, tmp_path):
    cache = EmbeddingCache(tmp_path / "c" / "cache.sqlite")
    first = CountingTarget()
    Embedder(first, cache=cache, workers=1, show_progress=False).embed_dataset(face_folder)
    assert first.calls == 3
    second = CountingTarget()
    again = Embedder(second, cache=cache, workers=1, show_progress=False).embed_dataset(face_folder)
    assert second.calls == 0
    # errors are not cached: the broken file is tried again, the rest is not
    assert again.n_from_cache == 4 and again.n_computed == 1
    assert dict(zip(again.table["image_id"], again.table["status"]))["blank.png"] == "no_face"


def test_killed_run_resumes_without_recomputing(face_folder, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    killed = CountingTarget(fail_after=2)
    embedder = Embedder(killed, cache=cache, workers=1, chunk_size=2, show_progress=False)
    with pytest.raises(KeyboardInterrupt):
        embedder.embed_dataset(face_folder)
    assert cache.count_embeddings() == 2       # the first chunk was committed
    resumed = CountingTarget()
    Embedder(resumed, cache=cache, workers=1, chunk_size=2, show_progress=False).embed_dataset(face_folder)
    assert resumed.calls == 1                  # only face2 was left


def test_parallel_workers_give_the_same_result(face_folder):
    one = Embedder(CountingTarget(), workers=1, chunk_size=1, show_progress=False).embed_dataset(face_folder)
    two = Embedder(CountingTarget(), workers=2, chunk_size=1, show_progress=False).embed_dataset(face_folder)
    assert list(one.table["status"]) == list(two.table["status"])
    np.testing.assert_array_equal(one.vectors, two.vectors)
    np.testing.assert_array_equal(one.chips, two.chips)


def test_cache_file_is_private(tmp_path):
    path = tmp_path / "private" / "cache.sqlite"
    EmbeddingCache(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


def test_cache_refuses_foreign_and_corrupt_files(tmp_path):
    text = tmp_path / "notes.sqlite"
    text.write_text("hello")
    with pytest.raises(CacheError, match="is not a cache file"):
        EmbeddingCache(text)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(CacheError, match="SQLite file of another program"):
        EmbeddingCache(other)
    corrupt = tmp_path / "corrupt.sqlite"
    EmbeddingCache(corrupt).close()
    data = bytearray(corrupt.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)
    corrupt.write_bytes(bytes(data))
    with pytest.raises(CacheError):
        EmbeddingCache(corrupt)


def test_cache_keys_separate_targets_and_preprocessing(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    vec = CachedEmbedding("ok", 1, "", np.arange(4, dtype=np.float32))
    cache.put_embeddings([("h1", vec)], target="t1", preprocessing="p1")
    assert cache.get_embeddings(["h1"], target="t1", preprocessing="p1")["h1"].vector.tolist() == [0, 1, 2, 3]
    assert cache.get_embeddings(["h1"], target="t2", preprocessing="p1") == {}
    assert cache.get_embeddings(["h1"], target="t1", preprocessing="p2") == {}


def test_reconstructions_are_embedded_and_cached(tmp_path, astronaut):
    from audit.faces import FaceAligner

    chip = FaceAligner().align(astronaut, sizes=(64,)).chips[64]
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    target = CountingTarget()
    embedder = Embedder(target, cache=cache, workers=1, show_progress=False)
    images = np.stack([chip, np.full_like(chip, 128)])
    vectors, found = embedder.embed_arrays(images)
    # every reconstruction is embedded (it is an aligned chip already); the
    # detector's verdict is reported beside it
    assert found.tolist() == [True, False] and np.isfinite(vectors).all()
    again, found_again = embedder.embed_arrays(images)
    assert target.calls == 2 and found_again.tolist() == [True, False]
    np.testing.assert_array_equal(again, vectors)
