"""A cloud target through the embed stage: a stopped run resumes without paying twice."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit.cache import EmbeddingCache
from audit.embedding import Embedder
from audit.errors import TargetStopped
from audit.targets.clarifai import ClarifaiTarget
from tests.fake_clarifai import FakeClarifai, face_like_image
from tests.test_embedding import FolderDataset

KEY = "fake-pat-embed-0123456789"
FAST = {"retry_base_delay": "0.001", "retry_max_delay": "0.004", "timeout": "2", "batch_size": "4"}


@pytest.fixture()
def fake(monkeypatch):
    monkeypatch.setenv("CLARIFAI_PAT", KEY)
    with FakeClarifai(key=KEY) as server:
        yield server


@pytest.fixture()
def folder(tmp_path) -> FolderDataset:
    names = []
    for seed in range(12):
        name = f"img{seed:02d}.png"
        Image.fromarray(face_like_image(seed, size=96)).save(tmp_path / name)
        names.append(name)
    return FolderDataset(tmp_path, pd.DataFrame({"image_id": names, "path": names}))


@pytest.mark.parametrize("concurrency, kept, left", [
    ("1", 4, 2),   # one request at a time: the third is never sent
    ("4", 8, 1),   # three in flight at once: the one answered after the stop is kept too
])
def test_hourly_limit_stops_and_a_rerun_pays_only_for_the_rest(fake, folder, tmp_path, concurrency,
                                                                kept, left):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    fake.inject("none", "hourly_limit")            # the second predict request hits the limit
    options = {**FAST, "concurrency": concurrency}
    target = ClarifaiTarget(api_base=fake.url, seed=0, **options)
    embedder = Embedder(target, cache=cache, workers=1, chunk_size=8, show_progress=False)
    with pytest.raises(TargetStopped, match="rerun"):
        embedder.embed_dataset(folder, chip_size=None)
    assert cache.count_embeddings() == kept          # every answered request was paid for and kept
    assert fake.count("POST") == 3 if concurrency == "4" else 2
    posts_before = fake.count("POST")
    result = Embedder(ClarifaiTarget(api_base=fake.url, seed=0, **options), cache=cache, workers=1,
                      chunk_size=8, show_progress=False).embed_dataset(folder, chip_size=None)
    assert (result.table["status"] == "ok").all()
    assert fake.count("POST") - posts_before == left  # only the images left, 4 per request
    again = Embedder(ClarifaiTarget(api_base=fake.url, seed=0, **options), cache=cache, workers=1,
                     show_progress=False).embed_dataset(folder, chip_size=None)
    assert fake.count("POST") - posts_before == left  # nothing asked a third time
    np.testing.assert_array_equal(again.vectors, result.vectors)
