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
import shutil
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from audit.errors import CacheError
from audit.outputs import MIN_FREE_BYTES, describe_os_error

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


#: The ways round a cache that cannot be used, in every message about one.
MSG_ELSEWHERE = ("point --cache (or $AUDIT_CACHE) at a path on a writable disk, or pass --no-cache to "
                 "run without one")
MSG_DAMAGED = ("the cache {path!r} is damaged ({detail}). Delete it to start afresh (embeddings are "
               "recomputed; nothing else is lost), or point --cache at another path.")
MSG_READ_ONLY = ("the cache {path!r} is valid, but {why}: SQLite must write beside it even to read it. "
                 "Make it writable (chmod u+w), or copy it to a writable folder and point --cache at the "
                 "copy, or pass --no-cache.")
#: How long a command waits for another one that is writing the cache before it gives up.
LOCK_WAIT_SECONDS = 30.0
MSG_LOCKED = ("the cache {path!r} is in use by another audit{who}: it stayed locked for {seconds:.0f} s. Wait "
              "for that one to finish and rerun this command (what it computed is cached for this one), or "
              "give this one a cache of its own: --cache OTHER.sqlite (or AUDIT_CACHE=OTHER.sqlite). Do not "
              "delete a cache that is in use.")
MSG_FULL = ("no space left on the disk holding the cache {path!r}. Free some space on that disk, or "
            "point --cache at a path on another disk. What was computed before is kept: rerun to resume.")


def _first(problems: list[str]) -> str:
    shown = "; ".join(" ".join(str(p).split()) for p in problems[:2])
    return shown + (f"; and {len(problems) - 2} more problems" if len(problems) > 2 else "")


def _is_locked(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)) or \
        "database is locked" in str(exc).lower()


def _holders(path: Path) -> list[str]:
    """The other processes that have ``path`` open (Linux, this user's), as ``process PID (command)``.

    Only read on the way to an error message: never a cost of normal work.
    """
    try:
        wanted = {os.path.realpath(path), *(os.path.realpath(f"{path}{s}") for s in ("-wal", "-shm"))}
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit() and int(entry) != os.getpid()]
    except OSError:
        return []
    found = []
    for pid in pids:
        try:
            if not any(os.readlink(f"/proc/{pid}/fd/{fd}") in wanted for fd in os.listdir(f"/proc/{pid}/fd")):
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                command = " ".join(part.decode(errors="replace") for part in fh.read().split(b"\0") if part)
        except OSError:
            continue   # gone, or another user's
        found.append(f"process {pid} ({command[:80]})" if command else f"process {pid}")
    return found


def _cache_error(exc: sqlite3.DatabaseError, path: Path) -> CacheError:
    """The SQLite error in the user's words: full disk, read-only, damaged, in use, never a guess."""
    text = str(exc).lower()
    if _is_locked(exc):
        holders = _holders(path)
        who = f" ({', '.join(holders[:3])})" if holders else ""
        return CacheError(MSG_LOCKED.format(path=str(path), who=who, seconds=LOCK_WAIT_SECONDS))
    if "disk is full" in text or ("disk i/o error" in text and _free_bytes(path.parent) < MIN_FREE_BYTES):
        return CacheError(MSG_FULL.format(path=str(path)))
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return CacheError(MSG_READ_ONLY.format(path=str(path), why=f"it cannot be written ({exc})"))
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return CacheError(MSG_DAMAGED.format(path=str(path), detail=str(exc)))
    return CacheError(f"the cache {str(path)!r} cannot be used ({exc}). Delete it to start afresh "
                      "(embeddings are recomputed), or point --cache at another path.")


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return MIN_FREE_BYTES


def _check_cache_writable(path: Path, *, is_new: bool) -> None:
    """Refuse, before any target is called, a cache that could not store what the run computes."""
    folder = path.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".audit-write-check-", dir=folder)
    except OSError as exc:
        if is_new:
            raise CacheError(describe_os_error(exc, path=path, what="the cache",
                                               elsewhere=MSG_ELSEWHERE)) from exc
        raise CacheError(MSG_READ_ONLY.format(path=str(path), why=f"its folder {str(folder)!r} cannot be "
                                              f"written ({exc.strerror})")) from exc
    os.close(fd)
    os.unlink(probe)
    if not is_new and not os.access(path, os.W_OK):
        raise CacheError(MSG_READ_ONLY.format(path=str(path), why="the file is read-only"))
    if _free_bytes(folder) < MIN_FREE_BYTES:
        raise CacheError(MSG_FULL.format(path=str(path)))


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
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise CacheError(describe_os_error(exc, path=folder, what="the cache's folder",
                                               elsewhere=MSG_ELSEWHERE)) from exc
        is_new = not path.exists()
        if not is_new and not path.is_file():
            raise CacheError(f"{str(path)!r} is not a file, so it cannot be the cache. "
                             f"{MSG_ELSEWHERE[0].upper()}{MSG_ELSEWHERE[1:]}.")
        if not is_new and path.stat().st_size > 0:
            try:
                with open(path, "rb") as fh:
                    header = fh.read(16)
            except OSError as exc:
                raise CacheError(describe_os_error(exc, path=path, what="the cache", action="read",
                                                   elsewhere=MSG_ELSEWHERE)) from exc
            if header != b"SQLite format 3\x00":
                raise CacheError(f"{str(path)!r} is not a cache file (not SQLite). Point --cache at "
                                 "another path, or delete the file if it is yours.")
        _check_cache_writable(path, is_new=is_new)
        if is_new:
            try:
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            except OSError as exc:
                raise CacheError(describe_os_error(exc, path=path, what="the cache",
                                                   elsewhere=MSG_ELSEWHERE)) from exc
            os.close(fd)
            os.chmod(path, 0o600)
        try:
            conn = sqlite3.connect(path, timeout=LOCK_WAIT_SECONDS, isolation_level=None)
            # Read and check first, write after: a file that is not our cache is never changed.
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "meta" not in tables:
                raise CacheError(f"{str(path)!r} is an SQLite file of another program, not an "
                                 "embedding cache. Point --cache at another path.")
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise CacheError(MSG_DAMAGED.format(path=str(path), detail=_first(problems)))
            meta = dict(conn.execute("SELECT key, value FROM meta")) if tables else {}
            if meta and meta.get("format") != CACHE_FORMAT:
                raise CacheError(f"{str(path)!r} is not an embedding cache of this tool "
                                 f"(format {meta.get('format')!r}). Point --cache at another path.")
            if meta and meta.get("version") != CACHE_VERSION:
                raise CacheError(f"{str(path)!r} is cache version {meta.get('version')!r}; this tool "
                                 f"writes version {CACHE_VERSION}. Use a new --cache path.")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            if not meta:
                conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [("format", CACHE_FORMAT), ("version", CACHE_VERSION)])
        except sqlite3.DatabaseError as exc:
            raise _cache_error(exc, path) from exc
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
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            # What was committed before stays: a rerun after the fix resumes from it.
            raise _cache_error(exc, self.path) from exc

    def _query(self, sql: str, parameters: list) -> list[tuple]:
        try:
            return self._conn.execute(sql, parameters).fetchall()
        except sqlite3.DatabaseError as exc:
            raise _cache_error(exc, self.path) from exc

    # -- embeddings ---------------------------------------------------------
    def get_embeddings(self, hashes: Iterable[str], *, target: str,
                       preprocessing: str) -> dict[str, CachedEmbedding]:
        hashes = list(dict.fromkeys(hashes))
        found: dict[str, CachedEmbedding] = {}
        for start in range(0, len(hashes), 500):
            chunk = hashes[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._query(
                f"SELECT content_hash, status, n_faces, reason, vector FROM embeddings "
                f"WHERE target=? AND preprocessing=? AND content_hash IN ({marks})",
                [target, preprocessing, *chunk])
            for content_hash, status, n_faces, reason, blob in rows:
                if blob is not None and len(blob) % 4:
                    continue   # a damaged row reads as missing: the caller computes it again
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
            rows = self._query(
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
