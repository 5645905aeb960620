"""Dataset roots as URLs (``file://``, ``s3://``, ``gcs://``...), read through fsspec.

A cluster's workers rarely share a disk with the machine that starts the
audit, but they can all reach an object store.  A dataset folder may
therefore live at a URL: the same ``manifest.csv`` (format unchanged), the
images beside it under the same relative paths.  The machine running
``audit`` reads the manifest and the folder's small side files; each
worker reads only the images it is given.

Checks, compared with a local folder (:func:`audit.data.manifest.load_dataset`):

* the manifest is validated the same way (columns, rows, groups);
* one listing of the folder finds missing and empty files, which are
  excluded with the same reasons as for a local folder (a missing file
  must never count as a detection failure of its group);
* where the manifest has a ``sha256`` for a row (``audit dataset import``
  writes one), that hash is the cache key and the image is not read here;
  the worker that reads it checks the bytes against it ("file changed"
  when they differ).  Rows without one are read here once to hash them
  (and to check they start like an image), in a few threads;
* byte-identical copies are kept once, as for a local folder.

Protocols other than ``file://`` need their fsspec package installed on
the client and on every worker (``s3fs`` for ``s3://``, ``gcsfs`` for
``gcs://``/``gs://``); credentials come from the usual places of that
package (environment, instance role), never from the command line.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from audit.data.manifest import (EXCLUSIONS_FILE, IMAGE_ID_COLUMN, INFO_FILE, MANIFEST_FILE,
                                 PATH_COLUMN, REASON_DUPLICATE, REASON_EMPTY_FILE,
                                 REASON_MISSING_FILE, REASON_NOT_AN_IMAGE, REASON_UNREADABLE,
                                 SHA256_COLUMN, Dataset, _looks_like_image, exclusions_frame,
                                 load_dataset)
from audit.errors import DatasetError
from audit.images import content_hash, decode_image, read_regular_file

#: ``scheme://`` at the start of a location (two letters at least, so that a
#: Windows drive such as ``C:\\`` is never taken for one).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+://")
#: Small files of a dataset folder copied beside the manifest (``pairs.txt``:
#: LFW's official verification pairs, found by ``audit run``).
PAIRS_FILE = "pairs.txt"
SIDE_FILES = (INFO_FILE, EXCLUSIONS_FILE, PAIRS_FILE)
#: Threads that read and hash remote files: requests wait on the network, not the CPU.
REMOTE_READ_THREADS = 16
#: Threads a worker reads one chunk's URLs with.
CHUNK_READ_THREADS = 8


def is_url(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a URL (``file://...``, ``s3://...``) rather than a local path."""
    return isinstance(location, str) and bool(_URL.match(location))


def join_location(root: str, relative: str) -> str:
    """``root`` (a URL) and a manifest's relative posix path, joined."""
    return root.rstrip("/") + "/" + relative.lstrip("/")


def read_location(location: str | os.PathLike) -> bytes:
    """The bytes of a local file or of a URL (fsspec); OSError when it cannot be read.

    A local named pipe or device is refused unread (:class:`~audit.images.ImageReadError`): a read would
    wait forever.
    """
    if not is_url(location):
        return read_regular_file(location)
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(str(location))
    except (ImportError, ValueError) as exc:   # fsspec: protocol unknown, or its package missing
        raise OSError(f"cannot open {location!r}: {exc}") from exc
    return fs.cat_file(path)


def read_locations(locations: Sequence[str | os.PathLike]) -> list[bytes | OSError]:
    """The bytes of many files or URLs, in order; an ``OSError`` in place of each that failed.

    URLs are fetched a few at a time (:data:`CHUNK_READ_THREADS`): against an
    object store a worker then waits about one round trip per few images,
    not one per image.  Paths are read as they are, never glob-expanded (a
    file may be called ``photo[1].jpg``).
    """
    def read_one(location: str | os.PathLike) -> bytes | OSError:
        try:
            return read_location(location)
        except OSError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - a store's own error class (botocore...)
            return OSError(f"cannot read {str(location)!r}: {type(exc).__name__}: {exc}")

    if sum(is_url(location) for location in locations) < 2:
        return [read_one(location) for location in locations]
    with ThreadPoolExecutor(CHUNK_READ_THREADS) as pool:
        return list(pool.map(read_one, locations))


def read_image_at(location: str | os.PathLike):
    """Read an image once from a path or URL: ``(RGB uint8 array, sha256 of its bytes)``.

    Raises :class:`~audit.images.ImageReadError` (undecodable) or ``OSError``
    (unreadable), which the embed stage records per image.
    """
    data = read_location(location)
    return decode_image(data, name=str(location)), content_hash(data)


@dataclass(frozen=True, eq=False)
class RemoteDataset(Dataset):
    """A :class:`Dataset` whose images live at a URL.

    ``root`` is a local folder holding copies of the manifest and its side
    files (kept as long as this object lives); ``url`` is where the images
    are, and :meth:`absolute_path` returns URLs the workers can read.
    """

    url: str = ""
    _side_folder: Any = field(default=None, repr=False, compare=False)

    def absolute_path(self, image_id_or_path: str | os.PathLike) -> str:  # type: ignore[override]
        local = super().absolute_path(image_id_or_path)
        return join_location(self.url, local.relative_to(self.root).as_posix())


def _filesystem(url: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise DatasetError(f"--dataset {url!r}: {exc}. Install it here and on every worker.") from exc
    except ValueError as exc:
        raise DatasetError(f"--dataset {url!r}: fsspec cannot read this URL ({exc}). Use a local "
                           "folder or a URL such as file:///data/set, s3://bucket/set.") from exc


def load_remote_dataset(url: str, *, group_by: Sequence[str] | None = None) -> RemoteDataset:
    """Read and validate a dataset folder at ``url`` (see the module's docstring)."""
    url = url.rstrip("/")
    fs, root = _filesystem(url)
    side_folder = tempfile.TemporaryDirectory(prefix="audit-remote-dataset-")
    local = Path(side_folder.name)
    manifest_url = join_location(url, MANIFEST_FILE)
    try:
        fs.get_file(f"{root}/{MANIFEST_FILE}", str(local / MANIFEST_FILE))
    except FileNotFoundError:
        raise DatasetError(f"No {MANIFEST_FILE} at {manifest_url!r}. A dataset folder needs one (see "
                           "datasets/README.md); 'audit dataset import KIND SRC DEST' writes it, "
                           "then copy the folder to the store.") from None
    except OSError as exc:
        raise DatasetError(f"{manifest_url!r} cannot be read ({exc}). Check the URL and the "
                           "store's credentials.") from exc
    for name in SIDE_FILES:
        try:
            fs.get_file(f"{root}/{name}", str(local / name))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DatasetError(f"{join_location(url, name)!r} cannot be read ({exc}).") from exc
    dataset = load_dataset(local, group_by=group_by, check_files=False)
    table, exclusions = _check_remote_files(fs, root, dataset)
    values = {f.name: getattr(dataset, f.name) for f in fields(Dataset)}
    values.update(table=table, exclusions=exclusions)
    return RemoteDataset(**values, url=url, _side_folder=side_folder)


def _check_remote_files(fs, root: str, dataset: Dataset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Missing and empty files from one listing; hashes where the manifest has none; duplicates."""
    table = dataset.table.reset_index(drop=True)
    row_of = dict(zip(dataset.manifest_rows[IMAGE_ID_COLUMN], dataset.manifest_rows["row"]))
    try:
        listing = fs.find(root, detail=True)
    except OSError as exc:
        raise DatasetError(f"the dataset folder {root!r} cannot be listed ({exc}).") from exc
    prefix = root.rstrip("/") + "/"
    sizes = {name[len(prefix):] if name.startswith(prefix) else name: info.get("size")
             for name, info in listing.items()}
    excluded: list[tuple[Any, str, str]] = []
    keep = []
    for i, relative in enumerate(table[PATH_COLUMN]):
        size = sizes.get(relative, -1)
        if size == -1:
            excluded.append((row_of.get(table.at[i, IMAGE_ID_COLUMN]), table.at[i, IMAGE_ID_COLUMN],
                             REASON_MISSING_FILE))
        elif size == 0:
            excluded.append((row_of.get(table.at[i, IMAGE_ID_COLUMN]), table.at[i, IMAGE_ID_COLUMN],
                             REASON_EMPTY_FILE))
        else:
            keep.append(i)
    table = table.iloc[keep].reset_index(drop=True)
    hashes = table[SHA256_COLUMN].fillna("").astype(str).tolist()
    unhashed = [i for i, h in enumerate(hashes) if not h]
    if unhashed:
        paths = [prefix + table.at[i, PATH_COLUMN] for i in unhashed]
        with ThreadPoolExecutor(REMOTE_READ_THREADS) as pool:
            digests = list(pool.map(lambda p: _digest(fs, p), paths))
        for i, (sha, reason) in zip(unhashed, digests):
            hashes[i] = sha or ""
            if reason:
                excluded.append((row_of.get(table.at[i, IMAGE_ID_COLUMN]), table.at[i, IMAGE_ID_COLUMN],
                                 reason))
    table[SHA256_COLUMN] = hashes
    kept, first_of_hash = [], {}
    for i, sha in enumerate(hashes):
        if not sha:
            continue                      # unreadable: excluded above with its reason
        if sha in first_of_hash:
            image_id = table.at[i, IMAGE_ID_COLUMN]
            excluded.append((row_of.get(image_id), image_id,
                             REASON_DUPLICATE.format(path=first_of_hash[sha])))
            continue
        first_of_hash[sha] = table.at[i, IMAGE_ID_COLUMN]
        kept.append(i)
    table = table.iloc[kept].reset_index(drop=True)
    if table.empty:
        raise DatasetError(f"No usable image at {root!r}: every manifest row was excluded "
                           f"(first: {excluded[0][2] if excluded else 'none'}).")
    previous = [tuple(r) for r in dataset.exclusions.itertuples(index=False)]
    merged = sorted(previous + excluded, key=lambda e: (e[0] is None, e[0] or 0))
    return table, exclusions_frame(merged)


def _digest(fs, path: str) -> tuple[str | None, str | None]:
    """``(sha256, None)`` for a file that starts like an image, else ``(None, reason)``."""
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None, REASON_MISSING_FILE
    except OSError as exc:
        return None, REASON_UNREADABLE.format(error=exc.strerror or str(exc))
    if not data:
        return None, REASON_EMPTY_FILE
    problem = _looks_like_image(data)
    if problem is not None:
        return None, REASON_NOT_AN_IMAGE.format(error=problem)
    return hashlib.sha256(data).hexdigest(), None
