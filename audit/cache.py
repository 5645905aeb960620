"""The SQLite cache of embeddings and aligned chips.

Everything already paid for (a cloud call, a second of CPU) is kept: a
rerun, or a run killed halfway and started again, recomputes nothing that
is here.  Rows are keyed by the image's content hash, the target's
fingerprint and the preprocessing settings, so a new model version or
new alignment settings never reuse an old vector.

Embeddings are biometric data: the file is created readable and writable
by its owner only (0600), in a folder only its owner can enter.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from audit.errors import CacheError

CACHE_FORMAT = "face-bias-audit-cache"
CACHE_VERSION = "1"
CACHE_FILE_NAME = "cache.sqlite"
CACHE_ENV_VAR = "AUDIT_CACHE"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS embeddings (
    content_hash TEXT NOT NULL,
    target TEXT NOT NULL,
    preprocessing TEXT NOT NULL,
    status TEXT NOT NULL,
    n_faces INTEGER NOT NULL,
    reason TEXT NOT NULL,
    vector BLOB,
    created_at REAL NOT NULL,
    PRIMARY KEY (content_hash, target, preprocessing)
);
CREATE TABLE IF NOT EXISTS chips (
    content_hash TEXT NOT NULL,
    preprocessing TEXT NOT NULL,
    size INTEGER NOT NULL,
    status TEXT NOT NULL,
    n_faces INTEGER NOT NULL,
    png BLOB,
    PRIMARY KEY (content_hash, preprocessing, size)
);
"""


def default_cache_path() -> Path:
    """``$AUDIT_CACHE``, else ``$XDG_CACHE_HOME/face-bias-audit/cache.sqlite``."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "face-bias-audit" / CACHE_FILE_NAME


@dataclass(frozen=True)
class CachedEmbedding:
    status: str
    n_faces: int
    reason: str
    vector: np.ndarray | None


@dataclass(frozen=True)
class CachedChip:
    status: str
    n_faces: int
    png: bytes | None


class EmbeddingCache:
    """A SQLite file of embeddings and chips, safe to kill at any moment.

    Each :meth:`put_embeddings` / :meth:`put_chips` call is one transaction:
    after a crash the file holds every batch that was committed and none of
    the batch in flight.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._conn = self._open(self.path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        is_new = not path.exists()
        if is_new:
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
            os.chmod(path, 0o600)
        elif path.stat().st_size > 0:
            with open(path, "rb") as fh:
                header = fh.read(16)
            if header != b"SQLite format 3\x00":
                raise CacheError(f"{str(path)!r} is not a cache file (not SQLite). Point --cache at "
                                 "another path, or delete the file if it is yours.")
        try:
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "meta" not in tables:
                raise CacheError(f"{str(path)!r} is an SQLite file of another program, not an "
                                 "embedding cache. Point --cache at another path.")
            conn.executescript(_SCHEMA)
            meta = dict(conn.execute("SELECT key, value FROM meta"))
            if not meta:
                conn.executemany("INSERT INTO meta VALUES (?, ?)",
                                 [("format", CACHE_FORMAT), ("version", CACHE_VERSION)])
            elif meta.get("format") != CACHE_FORMAT:
                raise CacheError(f"{str(path)!r} is not an embedding cache of this tool "
                                 f"(format {meta.get('format')!r}). Point --cache at another path.")
            elif meta.get("version") != CACHE_VERSION:
                raise CacheError(f"{str(path)!r} is cache version {meta.get('version')!r}; this tool "
                                 f"writes version {CACHE_VERSION}. Use a new --cache path.")
            conn.execute("PRAGMA integrity_check").fetchone()
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"{str(path)!r} is corrupt or not a cache ({exc}). Delete it to start "
                             "afresh (embeddings will be recomputed), or use another --cache path.") from exc
        for suffix in ("-wal", "-shm"):
            side = Path(str(path) + suffix)
            if side.exists():
                os.chmod(side, 0o600)
        return conn

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- embeddings ---------------------------------------------------------
    def get_embeddings(self, hashes: Iterable[str], *, target: str,
                       preprocessing: str) -> dict[str, CachedEmbedding]:
        hashes = list(dict.fromkeys(hashes))
        found: dict[str, CachedEmbedding] = {}
        for start in range(0, len(hashes), 500):
            chunk = hashes[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT content_hash, status, n_faces, reason, vector FROM embeddings "
                f"WHERE target=? AND preprocessing=? AND content_hash IN ({marks})",
                [target, preprocessing, *chunk])
            for content_hash, status, n_faces, reason, blob in rows:
                vector = None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()
                found[content_hash] = CachedEmbedding(status, n_faces, reason, vector)
        return found

    def put_embeddings(self, items: Iterable[tuple[str, CachedEmbedding]], *, target: str,
                       preprocessing: str) -> None:
        now = time.time()
        rows = [(h, target, preprocessing, e.status, int(e.n_faces), e.reason,
                 None if e.vector is None else np.asarray(e.vector, np.float32).tobytes(), now)
                for h, e in items]
        if rows:
            with self._transaction() as conn:
                conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?,?,?,?,?,?,?,?)", rows)

    # -- chips ----------------------------------------------------------------
    def get_chips(self, hashes: Iterable[str], *, preprocessing: str, size: int) -> dict[str, CachedChip]:
        hashes = list(dict.fromkeys(hashes))
        found: dict[str, CachedChip] = {}
        for start in range(0, len(hashes), 500):
            chunk = hashes[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT content_hash, status, n_faces, png FROM chips "
                f"WHERE preprocessing=? AND size=? AND content_hash IN ({marks})",
                [preprocessing, size, *chunk])
            for content_hash, status, n_faces, png in rows:
                found[content_hash] = CachedChip(status, n_faces, png)
        return found

    def put_chips(self, items: Iterable[tuple[str, CachedChip]], *, preprocessing: str, size: int) -> None:
        rows = [(h, preprocessing, size, c.status, int(c.n_faces), c.png) for h, c in items]
        if rows:
            with self._transaction() as conn:
                conn.executemany("INSERT OR REPLACE INTO chips VALUES (?,?,?,?,?,?)", rows)

    def count_embeddings(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
