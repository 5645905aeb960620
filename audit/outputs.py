"""The places the tool writes: checked before work starts, and OS errors named.

An audit that embeds for an hour and then cannot write its results has
wasted the hour (and, on a cloud target, money).  Commands check every
place they will write before they call a target
(:func:`check_writable_folder`, :func:`check_writable_file`); when writing
fails anyway (the disk filled up meanwhile), :func:`writing` turns the OS
error into an :class:`~audit.errors.OutputError` that names the path and
what to do about it, never a traceback.

The checks create nothing that stays: a folder that does not exist yet is
judged by its nearest existing parent, so that a command stopped by an
input error leaves no empty output folder behind.

What holds faces, embeddings (biometric data) or model weights is the
owner's alone, whatever the umask: such folders are made with
:func:`private_folder` (0700) and such files with ``private=True``
(:func:`replacing`, :func:`write_atomic`: 0600), as the embedding cache is.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from audit.errors import OutputError

#: OS errors that are the user's environment (permissions, a read-only or
#: full disk, a file in the way), not a bug: they get a message, not a traceback.
ENVIRONMENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                                errno.EFBIG, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                                errno.ENAMETOOLONG, errno.EMFILE, errno.ENFILE, errno.ETXTBSY})
#: A disk with less free space than this is refused before any work starts.
MIN_FREE_BYTES = 1 << 20
#: In every output folder the tool makes (a run, a generator): which kind it is.  A later command
#: writes there again (a rerun, a resume); a non-empty folder without it is the user's, never overwritten.
OWNER_MARKER = ".face-bias-audit"
#: The marker's ``written_by``.
TOOL_NAME = "face-bias-audit"
#: Modes of what holds faces, embeddings or weights: readable and writable by the owner alone.
PRIVATE_FOLDER_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def _choose(option: str | None, elsewhere: str | None = None, disk: str = "") -> str:
    """The way round the problem: what the caller says, or another value of the option (on ``disk``)."""
    if elsewhere:
        return elsewhere
    return (f"pass another {option}" if option else "write it elsewhere") + (f" on {disk}" if disk else "")


def describe_os_error(exc: OSError, *, path: str | os.PathLike | None = None, what: str = "the file",
                      option: str | None = None, action: str = "write", elsewhere: str | None = None,
                      prefer_path: bool = False) -> str:
    """One sentence naming the path, what went wrong in plain words, and the fix.

    The path named is the OS error's own file, unless ``prefer_path`` (the
    caller's path means more to the user, e.g. a hidden temporary file's
    destination).
    """
    where = path if (prefer_path and path is not None) or exc.filename is None else exc.filename
    where = None if where is None else str(where)
    shown = (f"{what} {where!r}" if what else repr(where)) if where is not None else (what or "a file")
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        problem = "the disk quota is used up" if code == errno.EDQUOT else (
            "the file is larger than the file system allows" if code == errno.EFBIG else "no space left on the disk")
        return (f"Cannot {action} {shown}: {problem}. Free some space on that disk, or "
                f"{_choose(option, elsewhere, 'another disk')}.")
    if code == errno.EROFS:
        way = _choose(option, elsewhere, "a writable disk")
        return f"Cannot {action} {shown}: it is on a read-only file system. {way[0].upper()}{way[1:]}."
    if code in (errno.EACCES, errno.EPERM):
        folder = f" (or its folder {os.path.dirname(os.path.abspath(where))!r})" if where else ""
        return (f"Cannot {action} {shown}: permission denied. Make it{folder} writable by you, e.g. "
                f"chmod u+w, or {_choose(option, elsewhere)}.")
    if code in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return (f"Cannot {action} {shown}: a file or folder is in the way ({exc.strerror}). "
                f"Move it away, or {_choose(option, elsewhere)}.")
    return f"Cannot {action} {shown}: {exc.strerror or exc}. Fix that, or {_choose(option, elsewhere)}."


def is_environment_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an OS error that the user's environment, not a bug, caused."""
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS


@contextmanager
def writing(path: str | os.PathLike, *, what: str, option: str | None = None,
            elsewhere: str | None = None, prefer_path: bool = False) -> Iterator[None]:
    """Turn an environment OS error raised while writing ``path`` into an :class:`OutputError`."""
    try:
        yield
    except OSError as exc:
        if not is_environment_error(exc):
            raise
        raise OutputError(describe_os_error(exc, path=path, what=what, option=option, elsewhere=elsewhere,
                                            prefer_path=prefer_path)) from exc


def _nearest_existing(path: Path) -> Path:
    current = path
    while not os.path.lexists(current):
        if current.parent == current:
            break
        current = current.parent
    return current


def check_writable_folder(folder: str | os.PathLike, *, what: str, option: str | None = None,
                          elsewhere: str | None = None) -> Path:
    """Check that ``folder`` is (or can be made) a writable folder; create nothing.

    Returns ``folder`` as a Path.  A folder that does not exist yet is judged
    by its nearest existing parent.  The test is a real one (a temporary
    file made and removed), because permission bits do not tell the whole
    story: the superuser ignores them, a read-only mount does not.
    """
    folder = Path(folder).expanduser()
    existing = _nearest_existing(folder.absolute())
    if not existing.is_dir():
        if existing == folder.absolute():
            raise OutputError(f"{what.capitalize()} {str(folder)!r} is a file, not a folder. "
                              f"Move it away, or {_choose(option, elsewhere)}.")
        raise OutputError(f"Cannot create {what} {str(folder)!r}: {str(existing)!r} is a file, not a "
                          f"folder. Move it away, or {_choose(option, elsewhere)}.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".audit-write-check-", dir=existing)
    except OSError as exc:
        exc.filename = str(folder)
        raise OutputError(describe_os_error(exc, what=what, option=option, elsewhere=elsewhere)) from exc
    os.close(fd)
    os.unlink(probe)
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return folder
    if free < MIN_FREE_BYTES:
        raise OutputError(f"Cannot write {what} {str(folder)!r}: the disk holding it has {free:,} bytes "
                          f"free. Free some space on that disk, or {_choose(option, elsewhere, 'another disk')}.")
    return folder


def check_writable_file(path: str | os.PathLike, *, what: str, option: str | None = None) -> Path:
    """Check that the file ``path`` can be written (replaced, if it exists); create nothing."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{what.capitalize()} {str(path)!r} is a folder; give the path of a file, "
                          f"or {_choose(option)}.")
    check_writable_folder(path.parent if str(path.parent) else Path("."), what=f"the folder of {what}",
                          option=option)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"Cannot write {what} {str(path)!r}: permission denied. Make it writable "
                          f"(chmod u+w), or {_choose(option)}.")
    return path


def private_folder(folder: str | os.PathLike) -> Path:
    """Make ``folder`` and leave it owner-only (0700), new or not; the parents it makes are too.

    For folders that hold faces, embeddings or weights: a generator folder,
    a run folder, the generator cache.  A folder that existed is narrowed
    too (the tool is about to put biometric data in it); parents that
    existed are left as they are.  OS errors are the caller's to name
    (:func:`writing`).
    """
    folder = Path(folder)
    missing = []
    current = folder.absolute()
    while not os.path.lexists(current) and current.parent != current:
        missing.append(current)
        current = current.parent
    for made in reversed(missing):
        made.mkdir(mode=PRIVATE_FOLDER_MODE, exist_ok=True)
        os.chmod(made, PRIVATE_FOLDER_MODE)   # mkdir's mode is masked by the umask
    if not missing and stat.S_IMODE(os.stat(folder).st_mode) != PRIVATE_FOLDER_MODE:
        os.chmod(folder, PRIVATE_FOLDER_MODE)
    return folder


@contextmanager
def replacing(path: str | os.PathLike, *, private: bool = False) -> Iterator[Path]:
    """A temporary file beside ``path`` that replaces it when the block succeeds.

    The one way this project writes a file whole or not at all: a crash, a
    kill or a full disk halfway leaves the previous version in place and no
    temporary file (its name ends in ``.tmp``).  The temporary file gets the
    permissions a plain ``open`` would give (mkstemp's are 0600), or 0600
    where ``private`` (a file of faces, embeddings or weights).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, PRIVATE_FILE_MODE if private else 0o666 & ~_umask())
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: bytes | str, *, what: str = "the file",
                 option: str | None = None, elsewhere: str | None = None, private: bool = False) -> Path:
    """Write a file whole or not at all (:func:`replacing`, owner-only where ``private``); an
    environment error becomes an :class:`OutputError` naming ``what`` and the fix."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with writing(path, what=what, option=option, elsewhere=elsewhere, prefer_path=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path, private=private) as tmp:
            tmp.write_bytes(payload)
    return path


def folder_kind(folder: str | os.PathLike) -> str | None:
    """The kind of output folder the tool marked ``folder`` as ("run", "generator"), or None."""
    try:
        data = json.loads((Path(folder) / OWNER_MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("written_by") != TOOL_NAME or not isinstance(data.get("kind"), str):
        return None
    return data["kind"]


def check_own_folder(folder: str | os.PathLike, *, kind: str, option: str, overwrite: bool,
                     written_before: Callable[[Path], bool] | None = None) -> None:
    """Refuse to write into a non-empty folder this tool did not make as a ``kind`` folder; change nothing.

    A folder is the tool's when it carries :data:`OWNER_MARKER` of the same
    kind, or where ``written_before`` recognises what an earlier version
    wrote there (a run's results.json) -- so reruns and resumes work, and a
    folder of the user's own (their results.json, a dataset, their home)
    is never overwritten unless ``overwrite``.  A link is judged by the
    folder it points to.
    """
    folder = Path(folder).expanduser()
    if overwrite or not folder.is_dir():
        return
    try:
        entries = sorted(entry.name for entry in folder.iterdir())
    except OSError:
        return   # an unreadable folder: check_writable_folder names the problem
    if not entries:
        return
    found = folder_kind(folder)
    if found == kind or (found is None and written_before is not None and written_before(folder)):
        return
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    held = (f"it holds a {found} folder of this tool, not a {kind} folder" if found is not None else
            f"it already holds files this tool did not write ({shown})")
    raise OutputError(f"{option} {str(folder)!r}: {held}; refusing to write over them. Choose a new or empty "
                      f"folder, or pass --overwrite to write into this one anyway.")


def mark_own_folder(folder: str | os.PathLike, *, kind: str) -> None:
    """Mark ``folder`` as the tool's ``kind`` output folder (see :func:`check_own_folder`).

    The marker is owner-only like everything else in the folders it marks, so
    a check of the folder's modes finds no exception to explain.
    """
    path = Path(folder) / OWNER_MARKER
    if folder_kind(folder) != kind:
        with replacing(path, private=True) as tmp:
            tmp.write_text(json.dumps({"written_by": TOOL_NAME, "kind": kind}) + "\n", encoding="utf-8")


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in blocks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
