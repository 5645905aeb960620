"""``audit dataset fetch``: a dataset's published archive, downloaded, verified, unpacked and imported.

Only a dataset whose authors publish one archive at a stable address with a
checksum can be fetched: LFW.  UTKFace and FairFace are behind cloud-drive
links; they are downloaded by hand (``datasets/README.md`` says where).

The archive and what it unpacks to live in a *source* folder beside the
dataset folder (``DEST-source/`` unless ``--source`` says otherwise), because
the imported dataset links to the images there, as ``audit dataset import``
does.  Each step can be stopped and rerun:

* the download goes to ``<file>.part`` with explicit timeouts; a broken
  connection is retried with exponential backoff and jitter, and every retry,
  like a later run, resumes where the file stopped (an HTTP ``Range``
  request); when the retries are spent the part is kept (exit code 3, rerun
  to resume);
* the whole file is checked against the published MD5 (and a SHA-256 where
  one is given) before anything is unpacked: a file that does not match is
  deleted, and nothing is unpacked or imported;
* the archive is unpacked into a hidden staging folder, each member checked
  first (a regular file or a folder, a relative path that stays inside) and
  extracted with tarfile's ``data`` filter, then moved into place whole;
* the import is :func:`audit.data.importers.import_dataset`, exactly what
  ``audit dataset import lfw SOURCE DEST --images lfw-deepfunneled`` does.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import httpx

from audit import __version__
from audit.data.destination import check_destination
from audit.data.importers import ImportSummary, import_dataset
from audit.errors import DatasetError, DownloadStopped, InputError
from audit.outputs import writing
from audit.progress import Progress

MEGABYTE = 1_000_000


@dataclass(frozen=True)
class PublishedArchive:
    """A dataset archive as its authors publish it: address, checksum, the folder it unpacks to."""

    kind: str
    url: str
    file_name: str
    md5: str
    folder: str
    page: str


#: LFW's deep-funneled images.  The MD5 is the one the LFW page publishes beside the link
#: ("All images aligned with deep funneling (111MB, md5sum 68331da3eb755a505a502b5aacb3c201)"),
#: and the one torchvision's LFW dataset checks.
LFW_DEEPFUNNELED = PublishedArchive(
    kind="lfw", url="http://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz", file_name="lfw-deepfunneled.tgz",
    md5="68331da3eb755a505a502b5aacb3c201", folder="lfw-deepfunneled", page="http://vis-www.cs.umass.edu/lfw/")

PUBLISHED_ARCHIVES: dict[str, PublishedArchive] = {"lfw": LFW_DEEPFUNNELED}

#: HTTP answers that mean "come back shortly": retried like a broken connection.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class DownloadConfig:
    """Timeouts and retries of a download (the Clarifai client's style: every wait bounded).

    Retry ``k`` (from 0) waits a uniform random time in ``[d/2, d]`` with
    ``d = min(max_delay, base_delay * 2**k)``.
    """

    timeout: float = 60.0
    connect_timeout: float = 15.0
    max_retries: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    #: Bytes per read of a file:// mirror.
    chunk_size: int = 1 << 20

    def __post_init__(self) -> None:
        if not (self.timeout > 0 and self.connect_timeout > 0):
            raise InputError(f"timeout={self.timeout!r}, connect_timeout={self.connect_timeout!r}: "
                             "both must be positive seconds.")
        if self.max_retries < 0 or not 0 <= self.base_delay <= self.max_delay:
            raise InputError(f"max_retries={self.max_retries!r}, base_delay={self.base_delay!r}, "
                             f"max_delay={self.max_delay!r}: need max_retries >= 0 and "
                             "0 <= base_delay <= max_delay.")

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.max_delay, self.base_delay * (2.0 ** attempt))
        return rng.uniform(ceiling / 2.0, ceiling)


DEFAULT_DOWNLOAD_CONFIG = DownloadConfig()


class _Retry(Exception):
    """An attempt that ended early for a reason worth another try (the message says which)."""


@dataclass(frozen=True)
class FetchSummary:
    """What ``audit dataset fetch`` did: the archive, its digests, the source folder and the import."""

    archive: Path
    url: str
    downloaded_bytes: int
    md5: str
    sha256: str
    source: Path
    images: Path
    unpacked: bool
    imported: ImportSummary


# --------------------------------------------------------------------------- download

def _part(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(start, total)`` from ``bytes 100-199/1000`` or ``bytes */1000``; None where absent."""
    if not value or not value.startswith("bytes "):
        return None, None
    spec, _, total = value[6:].partition("/")
    first = spec.split("-")[0].strip()
    return (int(first) if first.isdigit() else None), (int(total) if total.strip().isdigit() else None)


class _Bar:
    """The download's progress in MB, from the bytes already there (a resumed file starts part-way)."""

    def __init__(self, name: str, total: int | None, done: int, enabled: bool) -> None:
        self._total = total
        self._bar = Progress(f"Downloading {name}", -(-(total or 0) // MEGABYTE), unit="MB",
                             enabled=enabled and bool(total))
        self._shown = 0
        self.update(done)

    def __enter__(self) -> "_Bar":
        self._bar.__enter__()
        return self

    def update(self, done: int) -> None:
        megabytes = -(-done // MEGABYTE) if done == self._total else done // MEGABYTE   # the last MB counts whole
        if megabytes > self._shown:
            self._bar.advance(megabytes - self._shown)
            self._shown = megabytes

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)


def _attempt(client: httpx.Client, url: str, part: Path, *, show_progress: bool, received: list[int]) -> None:
    """One request: append to ``part`` from where it stops; return when the file is whole, else raise _Retry.

    Every byte written is added to ``received[0]`` as it arrives, so that an
    attempt cut short still counts what it brought.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with client.stream("GET", url, headers=headers) as response:
        status = response.status_code
        if status == 416 and offset:
            _, total = _content_range(response.headers.get("content-range"))
            if total == offset:
                return                                   # the part was already whole
            part.unlink()
            raise _Retry(f"the server cannot resume at byte {offset} (HTTP 416): starting again")
        if status in RETRY_STATUSES:
            raise _Retry(f"HTTP {status} {response.reason_phrase}")
        if status >= 400:
            raise InputError(f"{url} answered HTTP {status} {response.reason_phrase}: check the address "
                             "(--url), or download the archive by hand into the source folder.")
        if status == 206:
            start, total = _content_range(response.headers.get("content-range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retry(f"the server resumed at byte {start}, not {offset}: starting again")
            mode = "ab"
        else:                                            # 200: the whole file (a server may ignore Range)
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
            mode, offset = "wb", 0
        with _Bar(part.name[:-len(".part")], total, offset, show_progress) as bar, open(part, mode) as fh:
            # Raw bytes: the checksum and the Range offsets are the file's, whatever
            # Content-Encoding a server adds.  Written as they arrive (no re-chunking),
            # so a dropped line loses nothing that came before it.
            for chunk in response.iter_raw():
                fh.write(chunk)
                offset += len(chunk)
                received[0] += len(chunk)
                bar.update(offset)
    if total is not None and offset < total:
        raise _Retry(f"the connection ended at byte {offset} of {total}")


def _copy_local(url: str, part: Path, *, config: DownloadConfig, show_progress: bool) -> None:
    """A ``file://`` address (a mirror on a shared disk): copied, resuming like a download."""
    source = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if not source.is_file():
        raise InputError(f"No file at {str(source)!r} (from --url {url}); give the path of the archive.")
    total = source.stat().st_size
    offset = part.stat().st_size if part.exists() else 0
    if offset > total:
        part.unlink()
        offset = 0
    with open(source, "rb") as src, open(part, "ab" if offset else "wb") as dst, \
            _Bar(part.name[:-len(".part")], total, offset, show_progress) as bar:
        src.seek(offset)
        while chunk := src.read(config.chunk_size):
            dst.write(chunk)
            offset += len(chunk)
            bar.update(offset)


def download(url: str, target: Path, *, config: DownloadConfig = DEFAULT_DOWNLOAD_CONFIG,
             show_progress: bool = True, sleep: Callable[[float], None] = time.sleep,
             rng: random.Random | None = None) -> int:
    """Download ``url`` to ``target`` through ``target.part``, resuming a part left by an earlier try.

    Returns the bytes transferred by this call.  A broken connection, a
    timeout or a "come back later" answer is retried (``config``); when the
    retries are spent, :class:`~audit.errors.DownloadStopped` says how much
    is kept and that a rerun resumes.
    """
    part = _part(target)
    if urllib.parse.urlparse(url).scheme == "file":
        before = part.stat().st_size if part.exists() else 0
        with writing(part, what="the download", option="--source"):
            _copy_local(url, part, config=config, show_progress=show_progress)
            part.replace(target)
        return target.stat().st_size - before
    received = [0]
    rng = rng or random.Random()
    timeout = httpx.Timeout(config.timeout, connect=config.connect_timeout)
    headers = {"User-Agent": f"face-bias-audit/{__version__}", "Accept-Encoding": "identity"}
    with httpx.Client(timeout=timeout, follow_redirects=True, headers=headers) as client, \
            writing(part, what="the download", option="--source"):
        attempt = 0
        while True:
            try:
                _attempt(client, url, part, show_progress=show_progress, received=received)
                break
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                raise InputError(f"--url {url!r} is not an http(s):// or file:// address ({exc}).") from None
            except (httpx.TransportError, _Retry) as exc:     # timeouts, refused or reset connections, cut bodies
                problem = str(exc) or type(exc).__name__
            if attempt >= config.max_retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadStopped(f"Could not download {url} after {attempt + 1} attempts (last: {problem}). "
                                      f"{kept:,} bytes are kept in {str(part)!r}: rerun the same command to "
                                      "resume from there.")
            sleep(config.delay(attempt, rng))
            attempt += 1
        part.replace(target)
    return received[0]


# --------------------------------------------------------------------------- checksum

def file_digests(path: Path, chunk_size: int = 1 << 20) -> tuple[str, str]:
    """``(md5, sha256)`` of a file's bytes, in one read."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


def _hex(value: str | None, *, option: str, length: int) -> str | None:
    if value is None:
        return None
    text = value.strip().lower()
    if len(text) != length or any(c not in "0123456789abcdef" for c in text):
        raise InputError(f"{option} {value!r} is not a {length}-digit hexadecimal digest; copy it as published.")
    return text


def verify_archive(path: Path, *, url: str, md5: str | None, sha256: str | None) -> tuple[str, str]:
    """The file's ``(md5, sha256)``; a file that matches neither given digest is deleted and refused."""
    got_md5, got_sha256 = file_digests(path)
    wrong = [f"{name} {got} where {expected} was expected" for name, got, expected in
             (("MD5", got_md5, md5), ("SHA-256", got_sha256, sha256)) if expected is not None and got != expected]
    if wrong:
        path.unlink()
        raise DatasetError(f"{path.name} from {url} has {'; '.join(wrong)}: it is damaged or not the published "
                           "file. It was deleted; nothing was unpacked or imported. Rerun to download it again "
                           "(if a mirror given with --url serves another file on purpose, pass its --md5 or "
                           "--sha256).")
    return got_md5, got_sha256


# --------------------------------------------------------------------------- unpacking

def _member_problem(member: tarfile.TarInfo) -> str | None:
    """Why an archive member may not be unpacked (None when it is a plain file or folder inside)."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in parts or "\\" in name:
        return "a path that leaves the folder"
    if not (member.isfile() or member.isdir()):
        return "a link or a special file, which a published image archive does not hold"
    return None


def unpack_archive(archive: Path, into: Path, *, folder: str) -> Path:
    """Unpack ``archive`` (a tar, any compression) so that ``into/folder`` holds its ``folder``; returns it.

    Every member is checked before anything is written: an absolute path,
    ``..``, a link, a device or a pipe refuses the whole archive.  The
    members are then extracted with tarfile's ``data`` filter (Python
    3.11.4+, which checks the same again) into a hidden staging folder in
    ``into``, and the finished folder is moved into place: a kill halfway
    leaves no half-unpacked folder under the final name.
    """
    final = into / folder
    staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=into))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for member in members:
                    problem = _member_problem(member)
                    if problem is not None:
                        raise DatasetError(f"{archive.name} holds {member.name!r}, {problem}: refusing to unpack "
                                           "it. Nothing was written; delete the archive if it is not the "
                                           "published one.")
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members=members, filter="data")
                else:  # pragma: no cover - Python before 3.11.4: every member was checked above
                    tar.extractall(staging, members=members)
        except (tarfile.TarError, EOFError) as exc:
            raise DatasetError(f"{archive.name} cannot be unpacked ({type(exc).__name__}: {exc}); delete it "
                               "and rerun to download it again.") from None
        unpacked = staging / folder
        if not unpacked.is_dir():
            raise DatasetError(f"{archive.name} holds no {folder}/ folder: it is not the archive this command "
                               "expects (check --url).")
        if final.exists():
            shutil.rmtree(final)
        os.replace(unpacked, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


# --------------------------------------------------------------------------- the command

def default_source(dest: Path) -> Path:
    """``data/lfw`` -> ``data/lfw-source``: where the archive and its images live beside the dataset."""
    dest = Path(dest).expanduser().absolute()
    return dest.with_name(dest.name + "-source")


def fetch_dataset(kind: str, dest: str | os.PathLike, *, source: str | os.PathLike | None = None,
                  url: str | None = None, md5: str | None = None, sha256: str | None = None,
                  copy: bool = False, overwrite: bool = False, show_progress: bool = True,
                  config: DownloadConfig = DEFAULT_DOWNLOAD_CONFIG,
                  sleep: Callable[[float], None] = time.sleep) -> FetchSummary:
    """Download, verify, unpack and import the published archive of ``kind`` into the dataset folder ``dest``.

    ``md5`` replaces the published MD5 (for a mirror serving another
    version); ``sha256`` is checked as well when given.  A verified archive
    already in the source folder is not downloaded again, and one already
    unpacked is not unpacked again.
    """
    if kind not in PUBLISHED_ARCHIVES:
        raise InputError(f"{kind!r} cannot be fetched: only {', '.join(PUBLISHED_ARCHIVES)} is published as one "
                         "archive with a checksum. Download the others by hand (datasets/README.md says where) "
                         "and use 'audit dataset import'.")
    spec = PUBLISHED_ARCHIVES[kind]
    url = url or spec.url
    expected_md5 = _hex(md5, option="--md5", length=32) or spec.md5
    expected_sha256 = _hex(sha256, option="--sha256", length=64)
    source_dir = Path(source).expanduser().absolute() if source is not None else default_source(Path(dest))
    dest = check_destination(dest, sources=[source_dir], overwrite=overwrite)     # before any download
    if dest == source_dir or dest in source_dir.parents:
        raise InputError(f"The source folder {str(source_dir)!r} lies inside the dataset folder {str(dest)!r}; "
                         "give --source a folder beside it (the default is DEST-source).")
    with writing(source_dir, what="the source folder", option="--source"):
        source_dir.mkdir(parents=True, exist_ok=True)
    archive = source_dir / spec.file_name
    downloaded = 0
    if not archive.is_file():
        downloaded = download(url, archive, config=config, show_progress=show_progress, sleep=sleep)
    got_md5, got_sha256 = verify_archive(archive, url=url, md5=expected_md5, sha256=expected_sha256)
    marker = source_dir / f".{spec.folder}.unpacked"
    images = source_dir / spec.folder
    unpacked = False
    with writing(source_dir, what="the source folder", option="--source"):
        if not (images.is_dir() and marker.is_file() and marker.read_text().strip() == got_sha256):
            marker.unlink(missing_ok=True)
            unpack_archive(archive, source_dir, folder=spec.folder)
            marker.write_text(got_sha256 + "\n")
            unpacked = True
    imported = import_dataset(spec.kind, source_dir, dest, copy=copy, overwrite=overwrite,
                              show_progress=show_progress, images=spec.folder)
    return FetchSummary(archive=archive, url=url, downloaded_bytes=downloaded, md5=got_md5, sha256=got_sha256,
                        source=source_dir, images=images, unpacked=unpacked, imported=imported)


__all__ = ["DEFAULT_DOWNLOAD_CONFIG", "DownloadConfig", "FetchSummary", "LFW_DEEPFUNNELED", "PUBLISHED_ARCHIVES",
           "PublishedArchive", "default_source", "download", "fetch_dataset", "file_digests", "unpack_archive",
           "verify_archive"]
