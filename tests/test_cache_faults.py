"""A cache that is damaged, read-only, in an unwritable folder or on a full disk: the user's words, no traceback."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from audit.cache import CachedEmbedding, EmbeddingCache
from audit.cli import cli
from audit.embedding import Embedder
from audit.errors import CacheError
from tests.corpus.environment import fill_up, full_disk, read_only
from tests.test_embedding import CountingTarget, face_folder  # noqa: F401 - a fixture

VECTOR = np.arange(8, dtype=np.float32)


def filled_cache(path: Path, n: int = 3000) -> Path:
    with EmbeddingCache(path) as cache:
        rng = np.random.default_rng(0)
        cache.put_embeddings([(f"h{i:05d}", CachedEmbedding("ok", 1, "", rng.random(128).astype(np.float32)))
                              for i in range(n)], target="t", preprocessing="p")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


def test_a_cache_with_damaged_pages_is_refused_with_the_fix(tmp_path):
    """Before: the integrity check's answer was ignored and the damaged cache was used."""
    path = filled_cache(tmp_path / "cache.sqlite")
    data = bytearray(path.read_bytes())
    last_page = len(data) // 4096 - 3
    data[last_page * 4096 + 100:last_page * 4096 + 400] = bytes(range(256)) + bytes(44)
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError) as caught:
        EmbeddingCache(path)
    message = str(caught.value)
    assert message.startswith(f"the cache {str(path)!r} is damaged (")
    assert message.endswith("Delete it to start afresh (embeddings are recomputed; nothing else is lost), "
                            "or point --cache at another path.")
    assert "\n" not in message


def test_a_damaged_chip_in_an_intact_cache_is_computed_again(face_folder, tmp_path):  # noqa: F811
    """Before: 'OSError: unrecognized data stream contents' stopped the run."""
    path = tmp_path / "cache.sqlite"
    with EmbeddingCache(path) as cache:
        first = Embedder(CountingTarget(), cache=cache, workers=1, show_progress=False).embed_dataset(face_folder)
    conn = sqlite3.connect(path)
    png = conn.execute("SELECT png FROM chips WHERE png IS NOT NULL LIMIT 1").fetchone()[0]
    damaged = png[:40] + bytes(b ^ 0x5A for b in png[40:80]) + png[80:]
    conn.execute("UPDATE chips SET png = ? WHERE png = ?", (damaged, png))
    conn.execute("UPDATE embeddings SET vector = ? WHERE rowid = 1", (b"\x00" * 5,))
    conn.commit()
    conn.close()
    with EmbeddingCache(path) as cache:
        again = Embedder(CountingTarget(), cache=cache, workers=1, show_progress=False).embed_dataset(face_folder)
    assert again.n_computed >= 1
    np.testing.assert_array_equal(first.chips, again.chips)
    np.testing.assert_array_equal(first.vectors, again.vectors)


def test_a_valid_cache_in_a_read_only_folder_is_called_read_only_not_corrupt(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    path = filled_cache(folder / "cache.sqlite", n=10)
    with read_only(folder):
        with pytest.raises(CacheError) as caught:
            EmbeddingCache(path)
    message = str(caught.value)
    assert message.startswith(f"the cache {str(path)!r} is valid, but its folder {str(folder)!r} cannot be "
                              "written")
    assert "corrupt" not in message and "damaged" not in message and "Delete" not in message
    assert "copy it to a writable folder and point --cache at the copy, or pass --no-cache" in message


def test_a_new_cache_in_an_unwritable_folder_names_the_path_and_the_fix(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    with read_only(folder):
        with pytest.raises(CacheError) as caught:
            EmbeddingCache(folder / "sub" / "cache.sqlite")
    assert str(caught.value).startswith(f"Cannot write the cache's folder {str(folder / 'sub')!r}: ")
    assert str(caught.value).endswith("Point --cache (or $AUDIT_CACHE) at a path on a writable disk, or pass "
                                      "--no-cache to run without one.")


def test_an_unwritable_cache_folder_without_a_real_mount_is_still_named(tmp_path, monkeypatch):
    """The same path through the code where the test cannot make a folder read-only for real."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))

    path = filled_cache(tmp_path / "cache.sqlite", n=10)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(CacheError, match="is valid, but its folder .* cannot be written \\(Permission denied\\)"):
        EmbeddingCache(path)


def test_a_cache_on_a_full_disk_says_so_before_any_target_is_called(tmp_path, monkeypatch):
    dataset = tmp_path / "ds"
    (dataset / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(dataset / "img" / "a.png")
    (dataset / "manifest.csv").write_text("path,race\nimg/a.png,A\n")
    monkeypatch.setattr("audit.pipeline.open_target", lambda *a, **k: pytest.fail("a target was called"))
    with full_disk(tmp_path / "disk") as disk:
        result = CliRunner().invoke(cli, ["embed", "--dataset", str(dataset), "--cache", str(disk / "c.sqlite")])
    assert result.exit_code == 2, result.output
    assert result.output == (f"Error: no space left on the disk holding the cache {str(disk / 'c.sqlite')!r}. "
                             "Free some space on that disk, or point --cache at a path on another disk. What "
                             "was computed before is kept: rerun to resume.\n")


def test_a_disk_that_fills_up_mid_run_keeps_what_was_committed(tmp_path):
    with full_disk(tmp_path / "disk", size="4m", leave_free=3 << 20) as disk:
        cache = EmbeddingCache(disk / "c.sqlite")
        cache.put_embeddings([("first", CachedEmbedding("ok", 1, "", VECTOR))], target="t", preprocessing="p")
        fill_up(disk)
        big = [(f"h{i}", CachedEmbedding("ok", 1, "", np.zeros(4096, np.float32))) for i in range(400)]
        with pytest.raises(CacheError, match="no space left on the disk holding the cache"):
            cache.put_embeddings(big, target="t", preprocessing="p")
        assert cache.get_embeddings(["first"], target="t", preprocessing="p")["first"].vector.tolist() == \
            VECTOR.tolist()
        cache.close()



def test_a_foreign_sqlite_file_is_refused_without_being_changed(tmp_path):
    """Before: the cache switched another program's database to WAL mode before refusing it."""
    path = tmp_path / "music.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(CacheError, match="an SQLite file of another program"):
        EmbeddingCache(path)
    assert path.read_bytes() == before
    assert not Path(str(path) + "-wal").exists()


def test_a_cache_in_use_by_another_audit_says_so_names_it_and_offers_another_cache(tmp_path, monkeypatch):
    """Before: "Delete it to start afresh", the wrong advice for a cache another audit is writing."""
    import subprocess
    import sys

    import audit.cache as cache_module

    path = tmp_path / "cache.sqlite"
    EmbeddingCache(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
                               "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                               "c.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\ntime.sleep(60)\n",
         str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(cache_module, "LOCK_WAIT_SECONDS", 0.2)
        with EmbeddingCache(path) as cache, pytest.raises(CacheError) as caught:
            cache.put_embeddings([("h", CachedEmbedding("ok", 1, "", np.ones(4, np.float32)))],
                                 target="t", preprocessing="p")
    finally:
        holder.kill()
        holder.wait()
    message = str(caught.value)
    assert "is in use by another audit" in message and f"process {holder.pid} (" in message
    assert "--cache OTHER.sqlite (or AUDIT_CACHE=OTHER.sqlite)" in message
    assert "Delete it" not in message and "Do not delete a cache that is in use" in message
