"""Resuming the embed stage with fewer images left than a chunk: every 'ok' image gets its vector."""

from __future__ import annotations

import numpy as np

from audit.cache import EmbeddingCache
from audit.embedding import Embedder
from tests.test_embedding import CountingTarget, face_folder  # noqa: F401 - a fixture


class ParallelSafeTarget(CountingTarget):
    """Like dlib's own engine: safe to embed in worker processes."""

    parallel_safe = True


def test_one_chunk_left_with_several_workers_is_embedded(face_folder, tmp_path):  # noqa: F811
    """Before: with --workers 2 and one chunk to do (a resumed run, or a small dataset) nothing
    embedded it, and 'ok' images came back with NaN vectors."""
    result = Embedder(ParallelSafeTarget(), workers=2, show_progress=False).embed_dataset(face_folder)
    ok = result.ok
    assert ok.sum() == 3
    assert np.isfinite(result.vectors[ok]).all()


def test_a_resumed_run_with_workers_matches_one_run_without(face_folder, tmp_path):  # noqa: F811
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    Embedder(ParallelSafeTarget(), cache=cache, workers=1, chunk_size=2,
             show_progress=False).embed_dataset(face_folder.__class__(face_folder.root, face_folder.table.head(2)))
    resumed = Embedder(ParallelSafeTarget(), cache=cache, workers=2, chunk_size=2,
                       show_progress=False).embed_dataset(face_folder)
    fresh = Embedder(ParallelSafeTarget(), workers=1, show_progress=False).embed_dataset(face_folder)
    np.testing.assert_array_equal(resumed.vectors, fresh.vectors)
    assert list(resumed.table["status"]) == list(fresh.table["status"])
