"""The dataset folder and its ``manifest.csv``: reading, validating, writing.

A dataset is a folder holding images and one ``manifest.csv`` with a row per
image: its ``path`` relative to the folder, an optional ``identity`` and any
number of attribute columns (``race``, ``gender``, ``age_band``, ...).  The
format is documented for people in ``datasets/README.md``.

:func:`load_dataset` checks everything before any probe spends a second on
the data: the manifest's columns, every row, every file (present, readable,
an image, inside the folder) and the images' contents (byte-identical
copies are kept once).  A problem with the whole dataset raises a
:class:`~audit.errors.DatasetError` that says how to fix it; a problem with
one row excludes that row and records why in ``Dataset.exclusions``.
Nothing is dropped silently: an audit that quietly loses the images of one
group would report a bias that is not there, or hide one that is.
"""

from __future__ import annotations

import csv
from collections import deque
import hashlib
import json
import os
import posixpath
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import pandas as pd
from PIL import Image, UnidentifiedImageError

from audit import __version__
from audit.data.csv_records import CsvRecord, read_csv_records
from audit.errors import DatasetError
from audit.images import FORMATS_TEXT, ImageReadError, open_image, read_regular_file
from audit.json_model import read_json
from audit.outputs import replacing
from audit.progress import Progress

MANIFEST_FILE = "manifest.csv"
#: What an import could not use (``row``, ``path``, ``reason``), beside the manifest.
EXCLUSIONS_FILE = "exclusions.csv"
#: How the folder was made (importer, source, image references, notes).
INFO_FILE = "dataset.json"
#: ``path,size,mtime_ns,ctime_ns,inode,sha256`` of files already hashed: a rerun reads no image twice.
HASH_CACHE_FILE = ".sha256-cache.csv"
#: What says a file is the one hashed: size and modification time alone miss a face replaced by
#: another of the same size with its modification time set back (``cp -p``, ``touch -r``, an
#: unpacked archive); the change time (set by the system on every write, rename or utime) and the
#: inode (new for a file written in its place and renamed over it) do not.
HASH_CACHE_STAMP = ("size", "mtime_ns", "ctime_ns", "inode")

PATH_COLUMN = "path"
IDENTITY_COLUMN = "identity"
SHA256_COLUMN = "sha256"
IMAGE_ID_COLUMN = "image_id"
#: Columns the manifest may not have: the table derives them.
RESERVED_COLUMNS = (IMAGE_ID_COLUMN,)
#: Manifest columns that are not attributes.
NON_ATTRIBUTE_COLUMNS = (PATH_COLUMN, IDENTITY_COLUMN, SHA256_COLUMN)
EXCLUSION_COLUMNS = ("row", "path", "reason")

DATASET_FORMAT = "face-bias-audit-dataset"
DATASET_FORMAT_VERSION = 1

#: Files whose extension says "image"; importers skip (and record) anything else.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Threads that read and hash files: enough to hide disk latency on 2 cores.
HASH_THREADS = 4
#: Files per task handed to a thread.
HASH_CHUNK = 64

# Reasons a row is excluded.  Each starts with its kind (the text before the
# first colon), which `describe` counts; tests assert on these texts.
REASON_MALFORMED_ROW = ("malformed row: {n_fields} fields where the header has {n_columns}; "
                        "quote values that contain commas")
REASON_UNPARSABLE_ROW = "malformed row: {problem}"
REASON_EMPTY_PATH = ("empty path: every row needs the image's path relative to the dataset "
                     "folder")
REASON_ABSOLUTE_PATH = ("path leaves the dataset folder: {path!r} is an absolute path outside "
                        "it; put the image inside the folder and write its relative path")
REASON_PARENT_PATH = ("path leaves the dataset folder: {path!r} goes above it with '..'; put "
                      "the image inside the folder and write its relative path")
REASON_SYMLINK_OUTSIDE = ("path leaves the dataset folder: it is a symlink to {target!r}, which "
                          "'audit dataset import' did not make; copy the image into the folder")
REASON_REPEATED_ROW = "repeated row: the same path as row {row}; remove one of the two rows"
REASON_MISSING_IDENTITY = ("missing identity: the identity cell is blank; fill it in, or drop the "
                           "identity column if the dataset has no identities")
REASON_MISSING_VALUE = ("missing value: {attribute!r} is blank; fill it in, or group by other "
                        "attributes")
REASON_MISSING_FILE = "missing file: nothing at this path; fix the path or remove the row"
REASON_NOT_A_FILE = ("not a file: the path is a folder, a named pipe or a device (it was not opened); point "
                     "the row at an image file")
REASON_UNREADABLE = "unreadable file: {error}"
REASON_EMPTY_FILE = "unreadable file: the file is empty (0 bytes)"
REASON_NOT_AN_IMAGE = "not an image: {error}"
REASON_CHANGED = ("changed since the manifest was written: its sha256 is {actual}, the manifest "
                  "says {expected}; re-import the dataset or clear that sha256 cell")
#: Fixed by the dataset format's documentation: the first copy is kept.
REASON_DUPLICATE = "duplicate of {path}"


def exclusion_kind(reason: str) -> str:
    """The kind of an exclusion reason ("duplicate", "missing file", ...), for counting."""
    if reason.startswith("duplicate of "):
        return "duplicate"
    return reason.split(":", 1)[0].strip()


@dataclass(frozen=True, eq=False)
class Dataset:
    """A validated dataset folder.

    ``table`` has one row per usable image: ``image_id`` (the manifest's
    path, unique), ``path`` (normalised, relative to ``root``), ``identity``
    (the manifest's, or the image id where the manifest has no identity
    column: each image its own person), ``sha256`` (of the file's bytes;
    empty when loaded with ``check_files=False`` from a manifest without
    hashes) and the attribute columns, all strings.  ``exclusions`` holds the
    manifest rows that cannot be used (``row`` is the manifest's line
    number, the header being line 1); ``import_exclusions`` what the
    importer could not use (the folder's ``exclusions.csv``).
    """

    root: Path
    table: pd.DataFrame
    exclusions: pd.DataFrame
    attributes: tuple[str, ...]
    has_identities: bool
    #: Every well-formed manifest row (``row``, ``image_id``, attributes),
    #: usable or not: what the manifest says, before exclusions.
    manifest_rows: pd.DataFrame = field(default_factory=lambda: _empty_frame(("row", IMAGE_ID_COLUMN)))
    import_exclusions: pd.DataFrame = field(default_factory=lambda: _empty_frame(EXCLUSION_COLUMNS))
    #: The folder's dataset.json (how it was made), or {} where it has none.
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_FILE

    @property
    def notes(self) -> tuple[str, ...]:
        """What the importer noticed but did not exclude (label conflicts, gaps)."""
        return tuple(str(n) for n in self.info.get("notes", ()))

    @cached_property
    def _path_of_image_id(self) -> dict[str, str]:
        return dict(zip(self.table[IMAGE_ID_COLUMN].tolist(), self.table[PATH_COLUMN].tolist()))

    def absolute_path(self, image_id_or_path: str | os.PathLike) -> Path:
        """Where an image is on disk, from its image id or relative path."""
        key = os.fspath(image_id_or_path)
        relative = self._path_of_image_id.get(key)
        if relative is None:
            relative = _normalise_relative(key)
            if relative is None:
                raise DatasetError(f"{key!r} is not a path inside the dataset folder {str(self.root)!r}: "
                                   "pass an image id from the dataset's table or a relative path.")
        return self.root / relative


def _empty_frame(columns: Iterable[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})


def exclusions_frame(rows: Iterable[tuple[Any, str, str]]) -> pd.DataFrame:
    """Exclusions as the DataFrame every caller sees: ``row``, ``path``, ``reason``."""
    rows = list(rows)
    if not rows:
        return _empty_frame(EXCLUSION_COLUMNS)
    return pd.DataFrame(rows, columns=list(EXCLUSION_COLUMNS))


# --------------------------------------------------------------------------- paths

def _normalise_relative(path: str) -> str | None:
    """The posix relative form of a manifest path, or None if it leaves the folder."""
    if not path or path.startswith("/") or os.path.isabs(path):
        return None
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../") or normal == ".":
        return None
    return normal


def is_inside(real: str, roots: Sequence[str]) -> bool:
    """Whether the real path ``real`` is one of ``roots`` or lies under one."""
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


class Resolver:
    """``os.path.realpath`` for many files of few folders: one lstat per file."""

    def __init__(self) -> None:
        self._folders: dict[str, str] = {}

    def __call__(self, full: str) -> str:
        folder, name = os.path.split(full)
        real_folder = self._folders.get(folder)
        if real_folder is None:
            real_folder = self._folders[folder] = os.path.realpath(folder)
        candidate = os.path.join(real_folder, name)
        return os.path.realpath(candidate) if os.path.islink(candidate) else candidate


# --------------------------------------------------------------------------- hashing

@dataclass(frozen=True)
class FileDigest:
    """The outcome of reading one file: its hash, or why it cannot be used."""

    sha256: str | None
    reason: str | None = None
    data: bytes | None = None


#: Leading bytes of the common image formats: checking them costs nothing,
#: where asking Pillow costs ~0.1 ms a file (seconds on 20k images).
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM",
                     b"II*\x00", b"MM\x00*")


def _looks_like_image(data: bytes) -> str | None:
    """None if ``data`` starts like an image of a format the tool reads, else why not.

    Pillow decides what the signatures miss, asked only about
    :data:`audit.images.FORMATS`: a PostScript or PDF file is refused here,
    never handed to the program that would interpret it.
    """
    if data.startswith(_IMAGE_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return None
    try:
        with open_image(data) as img:
            img.size  # noqa: B018 - parsing the header is the check
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError):
        return f"it is not one of the image formats the tool reads ({FORMATS_TEXT})"
    return None


def digest_file(path: str | os.PathLike, *, keep_data: bool = False) -> FileDigest:
    """Read a file once: SHA-256 of its bytes and a check that it starts like an image.

    Only the format's signature is checked (cheap); a truncated or corrupt
    body is caught later, per image, by the embed stage.
    """
    try:
        data = read_regular_file(path)   # a FIFO or a device is refused, never read (a read would block)
    except ImageReadError:
        return FileDigest(None, REASON_NOT_A_FILE)
    except FileNotFoundError:
        return FileDigest(None, REASON_MISSING_FILE)
    except IsADirectoryError:
        return FileDigest(None, REASON_NOT_A_FILE)
    except OSError as exc:
        return FileDigest(None, REASON_UNREADABLE.format(error=exc.strerror or str(exc)))
    if not data:
        return FileDigest(None, REASON_EMPTY_FILE)
    problem = _looks_like_image(data)
    if problem is not None:
        return FileDigest(None, REASON_NOT_AN_IMAGE.format(error=problem))
    return FileDigest(hashlib.sha256(data).hexdigest(), None, data if keep_data else None)


def _digest_chunk(paths: Sequence[str], keep_data: bool) -> list[FileDigest]:
    return [digest_file(p, keep_data=keep_data) for p in paths]


def digest_files(paths: Sequence[str], *, keep_data: bool = False,
                 progress_label: str | None = None) -> Iterator[FileDigest]:
    """:func:`digest_file` over many files, in order, a few threads at a time.

    Files go to the threads in chunks: a future per file costs more than
    hashing a small JPEG.
    """
    if not paths:
        return
    chunks = [paths[i:i + HASH_CHUNK] for i in range(0, len(paths), HASH_CHUNK)]
    bar = None
    if progress_label:
        bar = Progress(progress_label, len(paths))
        bar.__enter__()
    try:
        with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
            # A bounded window of chunks in flight: with keep_data, the bytes of
            # a whole dataset never sit in memory at once.
            pending: deque = deque()
            for chunk in chunks:
                pending.append(pool.submit(_digest_chunk, chunk, keep_data))
                if len(pending) >= 2 * HASH_THREADS:
                    yield from _advance(pending.popleft().result(), bar)
            while pending:
                yield from _advance(pending.popleft().result(), bar)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def _advance(digests: list[FileDigest], bar) -> list[FileDigest]:
    if bar is not None:
        bar.advance(len(digests))
    return digests


#: A file's stamp (:data:`HASH_CACHE_STAMP`) and its sha256.
Stamp = tuple[int, int, int, int]
HashEntry = tuple[Stamp, str]


def file_stamp(st: os.stat_result) -> Stamp:
    """What :data:`HASH_CACHE_STAMP` records of ``os.stat``: equal stamps mean the same bytes."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _read_hash_cache(folder: Path) -> dict[str, HashEntry]:
    path = folder / HASH_CACHE_FILE
    cache: dict[str, HashEntry] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for record in csv.DictReader(fh):
                stamp = tuple(int(record[name]) for name in HASH_CACHE_STAMP)
                cache[record["path"]] = (stamp, record["sha256"])   # type: ignore[assignment]
    except (OSError, KeyError, ValueError, TypeError, csv.Error):
        return {}  # a cache only: a missing, damaged or older-format one is rebuilt
    return cache


def write_hash_cache(folder: str | os.PathLike, entries: Mapping[str, HashEntry]) -> None:
    """Record ``real path -> (stamp, sha256)``; silently skipped on a read-only folder."""
    try:
        with replacing(Path(folder) / HASH_CACHE_FILE) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", *HASH_CACHE_STAMP, "sha256"])
            for real, (stamp, sha) in sorted(entries.items()):
                writer.writerow([real, *stamp, sha])
    except OSError:
        pass  # a cache only: the next run hashes again


def hash_cache_entry(path: str | os.PathLike, sha256: str, *,
                     resolve: "Resolver | None" = None) -> tuple[str, HashEntry] | None:
    """The cache entry of a file just hashed (keyed by its real path), or None if gone."""
    try:
        real = resolve(os.fspath(path)) if resolve is not None else os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return real, (file_stamp(st), sha256)


# --------------------------------------------------------------------------- reading

def _check_header(header: list[str], manifest: Path) -> list[str]:
    columns = [c.strip() for c in header]
    if PATH_COLUMN not in columns:
        raise DatasetError(
            f"{str(manifest)!r} has no {PATH_COLUMN!r} column (its header is {', '.join(columns)!s}). "
            f"The first line must name the columns, one of them {PATH_COLUMN!r}: each image's path "
            "relative to the dataset folder (see datasets/README.md).")
    for i, name in enumerate(columns):
        if not name:
            raise DatasetError(f"{str(manifest)!r}: column {i + 1} of the header has no name; "
                               "name it or delete the column.")
        if name in RESERVED_COLUMNS:
            raise DatasetError(f"{str(manifest)!r}: the column name {name!r} is reserved (the tool "
                               "derives it from 'path'); rename or delete that column.")
    seen = set()
    for name in columns:
        if name in seen:
            raise DatasetError(f"{str(manifest)!r}: the column {name!r} appears twice in the "
                               "header; rename or delete one of them.")
        seen.add(name)
    return columns


def check_group_by(attributes: Sequence[str], group_by: Sequence[str] | None, *,
                   manifest: str | os.PathLike = MANIFEST_FILE) -> tuple[str, ...]:
    """Check that every grouping attribute is a column of the manifest; return them."""
    if not group_by:
        return ()
    wanted = tuple(group_by)
    for name in wanted:
        if name in NON_ATTRIBUTE_COLUMNS:
            raise DatasetError(f"{name!r} cannot be a grouping attribute: it is the manifest's "
                               f"{name} column. Group by one of: {', '.join(attributes) or '(none)'}.")
        if name not in attributes:
            available = ", ".join(attributes) if attributes else "(none: the manifest has no attribute columns)"
            raise DatasetError(f"Unknown attribute {name!r}: the manifest {str(manifest)!r} has no such "
                               f"column. Its attribute columns are: {available}.")
    if len(set(wanted)) != len(wanted):
        raise DatasetError(f"An attribute is named twice in the grouping {', '.join(wanted)!s}; "
                           "name each once.")
    return wanted


def check_not_blank(wanted: Sequence[str], values: Sequence[Sequence[str]], *, attributes: Sequence[str],
                    manifest: str | os.PathLike) -> None:
    """Refuse to group by an attribute that is blank in every row: it forms no group at all."""
    for name, column in zip(wanted, values):
        if len(column) and all(not v for v in column):
            raise DatasetError(f"The attribute {name!r} is blank in every row of {str(manifest)!r}, "
                               "so it forms no group: fill it in, or group by another of: "
                               f"{', '.join(a for a in attributes if a != name) or '(none)'}.")


def manifest_attributes(folder: str | os.PathLike) -> tuple[str, ...]:
    """The attribute columns of a folder's manifest, from its header alone (a cheap early check)."""
    manifest = Path(folder).expanduser() / MANIFEST_FILE
    if not manifest.is_file():
        return ()
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None) or []
    except (OSError, UnicodeDecodeError, csv.Error):
        return ()
    return tuple(c.strip() for c in header if c.strip() not in NON_ATTRIBUTE_COLUMNS)


def read_info(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's dataset.json, or {} where there is none."""
    path = Path(folder) / INFO_FILE
    if not path.exists():
        return {}
    fix = ("it only records how the folder was made: re-import the dataset, or delete the file if you "
           "wrote the manifest yourself.")
    info = read_json(path, error=DatasetError, fix=fix)
    if not isinstance(info, dict):
        raise DatasetError(f"{str(path)!r} is not a JSON object: {fix}")
    _check_info_fields(info, path)
    return info


#: dataset.json fields the tool reads, each of one type: a string where a list belongs would be
#: read character by character (``"/srv/faces"`` would make ``/`` a folder the images may lie in).
_TEXT_FIELDS = ("created_by", "kind", "source")


def _info_error(path: Path, field_name: str, problem: str, example: str) -> DatasetError:
    return DatasetError(f"{str(path)!r}: {field_name} {problem}; write it as {example}, or re-import the "
                        "dataset (the file only records how the folder was made).")


def _check_info_fields(info: Mapping[str, Any], path: Path) -> None:
    """Every field the tool reads from dataset.json has its documented type, or a DatasetError names it."""
    for name in _TEXT_FIELDS:
        value = info.get(name)
        if value is not None and not isinstance(value, str):
            raise _info_error(path, repr(name), f"is {type(value).__name__} {value!r:.60}, not text", '"..."')
    for name in ("references", "notes"):
        value = info.get(name)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise _info_error(path, repr(name), f"is {type(value).__name__} {value!r:.60}, not a list of text",
                              '["/srv/faces"]' if name == "references" else '["..."]')
    for i, reference in enumerate(info.get("references") or ()):
        if not os.path.isabs(reference):
            raise _info_error(path, f"'references'[{i}]", f"{reference!r} is not an absolute path",
                              "the absolute path of a folder the images lie in")
    images = info.get("images")
    if images is not None:
        if not isinstance(images, dict):
            raise _info_error(path, "'images'", f"is {type(images).__name__} {images!r:.60}, not an object",
                              '{"mode": "link"} or {"mode": "copy"}')
        if images.get("mode") not in (None, "link", "copy"):
            raise _info_error(path, "'images'.'mode'", f"is {images.get('mode')!r:.60}", '"link" or "copy"')


def reference_roots(root: str | os.PathLike, info: Mapping[str, Any]) -> list[str]:
    """The real folders the dataset's files may lie in: the folder itself and its recorded references.

    A reference that holds the dataset folder itself (``/``, or a folder
    above it) would let the manifest reach any file beside it: refused,
    since no import records one.
    """
    real_root = os.path.realpath(root)
    roots = [real_root]
    for i, reference in enumerate(info.get("references") or ()):
        real = os.path.realpath(reference)
        if real != real_root and is_inside(real_root, [real]):
            raise DatasetError(
                f"{str(Path(root) / INFO_FILE)!r}: 'references'[{i}] {reference!r} holds the dataset folder "
                f"itself, so any file under {real!r} could be read as one of its images; name the folder the "
                "images lie in, or re-import the dataset.")
        roots.append(real)
    return roots


def _read_import_exclusions(folder: Path) -> pd.DataFrame:
    path = folder / EXCLUSIONS_FILE
    if not path.exists():
        return exclusions_frame([])
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(f"{str(path)!r} cannot be read ({exc}); re-import the dataset, or delete "
                           "the file.") from exc
    missing = [c for c in EXCLUSION_COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(f"{str(path)!r} lacks the column(s) {', '.join(missing)}; it must have "
                           f"{', '.join(EXCLUSION_COLUMNS)}.")
    return frame[list(EXCLUSION_COLUMNS)].astype(object).reset_index(drop=True)


def _read_manifest(manifest: Path) -> tuple[list[str], list[CsvRecord]]:
    """Header and every non-blank record (with its line), with the file's own errors raised."""
    header, records = read_csv_records(manifest, what="manifest")
    if header is None:
        raise DatasetError(f"{str(manifest)!r} is empty. Its first line must name the "
                           "columns, e.g. 'path,identity,race,gender' (see datasets/README.md).")
    return header.fields, records


def _relative_path(image_id: str, root: Path) -> tuple[str | None, str | None]:
    """A manifest path as a normalised path relative to ``root``, or why it cannot be one."""
    if not image_id:
        return None, REASON_EMPTY_PATH
    relative = _normalise_relative(image_id)
    if relative is not None:
        return relative, None
    if not os.path.isabs(image_id):
        return None, REASON_PARENT_PATH.format(path=image_id)
    try:  # an absolute path is fine where it points inside the folder
        inside = Path(os.path.normpath(image_id)).relative_to(root).as_posix()
    except ValueError:
        inside = None
    if not inside or inside == ".":
        return None, REASON_ABSOLUTE_PATH.format(path=image_id)
    return inside, None


def load_dataset(folder: str | os.PathLike, *, group_by: Sequence[str] | None = None,
                 check_files: bool = True, show_progress: bool = False,
                 not_blank: Sequence[str] = ()) -> Dataset:
    """Read and validate a dataset folder.

    ``group_by`` names the attributes the audit will group by: each must be
    a manifest column, and rows with a blank value in one of them are
    excluded (an image without a group cannot be counted in one).  With
    ``check_files`` (the default) every file is checked and hashed; hashes
    are cached in the folder by size and modification time, so a second
    load reads no image.  Without it only the manifest is checked, and
    ``sha256`` comes from the manifest's column where it has one.
    ``not_blank`` names attributes that must have a value somewhere (they
    will be counted by, not filtered on), checked before any file is read.
    """
    root, manifest = _dataset_folder(folder)
    info = read_info(root)
    header, records = _read_manifest(manifest)
    columns = _check_header(header, manifest)
    attributes = tuple(c for c in columns if c not in NON_ATTRIBUTE_COLUMNS)
    wanted = check_group_by(attributes, group_by, manifest=manifest)
    has_identities = IDENTITY_COLUMN in columns
    has_sha = SHA256_COLUMN in columns
    if not records:
        raise DatasetError(f"{str(manifest)!r} has a header but no rows: add one row per image.")

    excluded: list[tuple[Any, str, str]] = []
    rows = _well_formed_rows(records, columns, excluded)

    required = tuple(dict.fromkeys([*wanted, *check_group_by(attributes, not_blank, manifest=manifest)]))
    check_not_blank(required, [[r[name] for r in rows] for name in required], attributes=attributes,
                    manifest=manifest)

    manifest_rows = pd.DataFrame(
        [[r["row"], r[PATH_COLUMN]] + [r[a] for a in attributes] for r in rows],
        columns=["row", IMAGE_ID_COLUMN, *attributes]) if rows else _empty_frame(
            ("row", IMAGE_ID_COLUMN, *attributes))

    usable = _rows_with_a_place_and_labels(rows, root, excluded, has_identities=has_identities, wanted=wanted)

    if check_files:
        usable = _check_files(root, info, usable, excluded, has_sha=has_sha,
                              show_progress=show_progress)
    else:
        for row in usable:
            row["_sha256"] = row.get(SHA256_COLUMN, "").lower() if has_sha else ""

    kept = _without_duplicate_content(usable, excluded)

    exclusions = exclusions_frame(sorted(excluded, key=lambda e: e[0]))
    if not kept:
        counts = exclusions["reason"].map(exclusion_kind).value_counts()
        summary = "; ".join(f"{kind}: {n}" for kind, n in counts.items())
        raise DatasetError(f"No usable image in {str(root)!r}: all {len(records)} manifest rows were "
                           f"excluded ({summary}). Example: row {exclusions.iloc[0]['row']}: "
                           f"{exclusions.iloc[0]['reason']}.")

    table = pd.DataFrame({
        IMAGE_ID_COLUMN: [r[PATH_COLUMN] for r in kept],
        PATH_COLUMN: [r["_relative"] for r in kept],
        IDENTITY_COLUMN: [r[IDENTITY_COLUMN] if has_identities else r[PATH_COLUMN] for r in kept],
        SHA256_COLUMN: [r["_sha256"] for r in kept],
        **{a: [r[a] for r in kept] for a in attributes},
    })
    return Dataset(root=root, table=table, exclusions=exclusions, attributes=attributes,
                   has_identities=has_identities, manifest_rows=manifest_rows,
                   import_exclusions=_read_import_exclusions(root), info=info)


def _dataset_folder(folder: str | os.PathLike) -> tuple[Path, Path]:
    """The dataset folder (resolved) and its manifest, or an error that says how to make one."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise DatasetError(f"No dataset folder at {str(root)!r}. Create one with 'audit dataset "
                           "import KIND SRC DEST' or point at a folder holding a manifest.csv.")
    if not root.is_dir():
        raise DatasetError(f"{str(root)!r} is a file, not a dataset folder. Pass the folder that "
                           f"holds {MANIFEST_FILE}.")
    root = root.resolve()
    manifest = root / MANIFEST_FILE
    if not manifest.is_file():
        raise DatasetError(f"No {MANIFEST_FILE} in {str(root)!r}. A dataset folder needs one (see "
                           "datasets/README.md); 'audit dataset import KIND SRC DEST' writes it.")
    return root, manifest


def _well_formed_rows(records: Sequence[CsvRecord], columns: Sequence[str],
                      excluded: list[tuple[Any, str, str]]) -> list[dict[str, str]]:
    """Rows as ``column -> stripped value`` (plus ``row``, the line), in manifest order; the others into
    ``excluded`` with the reason."""
    rows = []
    for record in records:
        line, fields = record.line, record.fields
        if record.problem is not None:
            excluded.append((line, "", REASON_UNPARSABLE_ROW.format(problem=record.problem)))
            continue
        if len(fields) != len(columns):
            excluded.append((line, fields[0].strip() if fields else "",
                             REASON_MALFORMED_ROW.format(n_fields=len(fields), n_columns=len(columns))))
            continue
        row = {name: value.strip() for name, value in zip(columns, fields)}
        row["row"] = line
        rows.append(row)
    return rows


def _rows_with_a_place_and_labels(rows: list[dict[str, str]], root: Path, excluded: list[tuple[Any, str, str]],
                                  *, has_identities: bool, wanted: Sequence[str]) -> list[dict[str, str]]:
    """Rows whose path is safe and first of its kind, with an identity and every grouped attribute."""
    usable = []
    first_row_of_path: dict[str, int] = {}
    for row in rows:
        image_id = row[PATH_COLUMN]
        relative, reason = _relative_path(image_id, root)
        if reason is None:
            if relative in first_row_of_path:
                reason = REASON_REPEATED_ROW.format(row=first_row_of_path[relative])
            else:
                first_row_of_path[relative] = row["row"]
                row["_relative"] = relative
        if reason is None and has_identities and not row[IDENTITY_COLUMN]:
            reason = REASON_MISSING_IDENTITY
        if reason is None:
            reason = next((REASON_MISSING_VALUE.format(attribute=name) for name in wanted if not row[name]), None)
        if reason is not None:
            excluded.append((row["row"], image_id, reason))
        else:
            usable.append(row)
    return usable


def _without_duplicate_content(rows: list[dict[str, str]],
                               excluded: list[tuple[Any, str, str]]) -> list[dict[str, str]]:
    """The first row of each file content (by sha256); later copies into ``excluded``, naming the first."""
    kept = []
    first_of_hash: dict[str, str] = {}
    for row in rows:
        sha = row["_sha256"]
        if sha and sha in first_of_hash:
            excluded.append((row["row"], row[PATH_COLUMN], REASON_DUPLICATE.format(path=first_of_hash[sha])))
            continue
        if sha:
            first_of_hash[sha] = row[PATH_COLUMN]
        kept.append(row)
    return kept


def _check_files(root: Path, info: Mapping[str, Any], rows: list[dict[str, str]],
                 excluded: list[tuple[Any, str, str]], *, has_sha: bool,
                 show_progress: bool) -> list[dict[str, str]]:
    """Existence, containment, readability and hash of every file; the rows that pass."""
    roots = reference_roots(root, info)
    resolve = Resolver()
    cache = _read_hash_cache(root)
    new_cache: dict[str, HashEntry] = {}
    passed: list[dict[str, str]] = []
    to_hash: list[tuple[dict[str, str], str, Stamp]] = []
    for row in rows:
        full = os.path.join(root, row["_relative"])
        real = resolve(full)
        if not is_inside(real, roots):
            excluded.append((row["row"], row[PATH_COLUMN], REASON_SYMLINK_OUTSIDE.format(target=real)))
            continue
        try:
            st = os.stat(real)
        except FileNotFoundError:
            excluded.append((row["row"], row[PATH_COLUMN], REASON_MISSING_FILE))
            continue
        except OSError as exc:
            excluded.append((row["row"], row[PATH_COLUMN],
                             REASON_UNREADABLE.format(error=exc.strerror or str(exc))))
            continue
        if not stat.S_ISREG(st.st_mode):
            excluded.append((row["row"], row[PATH_COLUMN], REASON_NOT_A_FILE))
            continue
        cached = cache.get(real)
        stamp = file_stamp(st)
        if cached is not None and cached[0] == stamp and os.access(real, os.R_OK):
            row["_sha256"] = cached[1]
            new_cache[real] = cached
            passed.append(row)
        else:
            to_hash.append((row, real, stamp))
            passed.append(row)

    failed: set[int] = set()
    label = "Checking images" if show_progress and to_hash else None
    for (row, real, stamp), digest in zip(
            to_hash, digest_files([real for _, real, _ in to_hash], progress_label=label)):
        if digest.reason is not None:
            excluded.append((row["row"], row[PATH_COLUMN], digest.reason))
            failed.add(id(row))
            continue
        row["_sha256"] = digest.sha256
        new_cache[real] = (stamp, digest.sha256)
    if to_hash or len(new_cache) != len(cache):
        write_hash_cache(root, new_cache)

    checked = []
    for row in passed:
        if id(row) in failed:
            continue
        expected = row.get(SHA256_COLUMN, "").lower() if has_sha else ""
        if expected and expected != row["_sha256"]:
            excluded.append((row["row"], row[PATH_COLUMN],
                             REASON_CHANGED.format(actual=row["_sha256"], expected=expected)))
            continue
        checked.append(row)
    return checked


# --------------------------------------------------------------------------- writing

def _atomic_text(path: Path, write) -> None:
    """Write a text file whole or not at all."""
    with replacing(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        write(fh)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # an integer column with gaps is float in pandas: write 31, not 31.0
    return str(value)


def write_dataset_folder(build: str | os.PathLike, *, manifest: pd.DataFrame,
                         exclusions: pd.DataFrame | Iterable[tuple[Any, str, str]], info: Mapping[str, Any]) -> None:
    """Write the files of a new dataset folder (``audit dataset import`` and ``balance``).

    ``exclusions.csv`` and ``dataset.json`` (with ``created_at``) first,
    ``manifest.csv`` last: a folder with a manifest is a finished dataset.
    """
    write_exclusions(build, exclusions)
    write_info(build, {"created_by": info.get("created_by"),
                       "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info})
    write_manifest(build, manifest)


def write_dataset_hash_cache(dest: str | os.PathLike, paths: Iterable[str], sha256s: Iterable[str]) -> None:
    """Record the hashes a new dataset folder already knows, keyed by the files' final paths.

    Called after the folder is in place (the paths must resolve), so that
    the first run on it reads no image only to hash it.
    """
    cache: dict[str, HashEntry] = {}
    resolve = Resolver()
    for relative, sha in zip(paths, sha256s):
        entry = hash_cache_entry(os.path.join(dest, relative), sha, resolve=resolve) if sha else None
        if entry:
            cache[entry[0]] = entry[1]
    write_hash_cache(dest, cache)


def write_manifest(dest: str | os.PathLike, table: pd.DataFrame) -> Path:
    """Write ``dest/manifest.csv`` from a table with a ``path`` column; return its path.

    Columns are written ``path``, ``identity``, ``sha256`` (where present),
    then the attributes in the table's order; ``image_id`` is derived on
    loading and not written.  Empty cells stand for missing values.
    """
    dest = Path(dest)
    if PATH_COLUMN not in table.columns:
        raise DatasetError(f"A manifest needs a {PATH_COLUMN!r} column; the table has "
                           f"{', '.join(map(str, table.columns))}.")
    first = [c for c in NON_ATTRIBUTE_COLUMNS if c in table.columns]
    rest = [c for c in table.columns if c not in NON_ATTRIBUTE_COLUMNS and c != IMAGE_ID_COLUMN]
    columns = first + rest
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / MANIFEST_FILE

    def write(fh) -> None:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        for values in table[columns].itertuples(index=False, name=None):
            writer.writerow([_cell(v) for v in values])

    _atomic_text(path, write)
    return path


def write_exclusions(dest: str | os.PathLike, exclusions: pd.DataFrame | Iterable[tuple[Any, str, str]]) -> Path:
    """Write ``dest/exclusions.csv`` (``row``, ``path``, ``reason``), header even when empty."""
    frame = exclusions if isinstance(exclusions, pd.DataFrame) else exclusions_frame(exclusions)
    path = Path(dest) / EXCLUSIONS_FILE

    def write(fh) -> None:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(EXCLUSION_COLUMNS)
        for values in frame[list(EXCLUSION_COLUMNS)].itertuples(index=False, name=None):
            writer.writerow([_cell(v) for v in values])

    _atomic_text(path, write)
    return path


def write_info(dest: str | os.PathLike, info: Mapping[str, Any]) -> Path:
    """Write ``dest/dataset.json``: how the folder was made, and its image references."""
    payload = {"format": DATASET_FORMAT, "format_version": DATASET_FORMAT_VERSION,
               "tool_version": __version__, **info}
    path = Path(dest) / INFO_FILE
    _atomic_text(path, lambda fh: (json.dump(payload, fh, indent=2), fh.write("\n")))
    return path
