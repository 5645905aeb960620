"""Writing a dataset folder whole or not at all.

``audit dataset import`` and ``audit dataset balance`` build the new folder
beside its destination, in a hidden ``.NAME.partial-XXXXXXXX`` folder, and
swap it into place only when every file is written.  Until that moment the
destination is untouched: a kill, a full disk or an error in the middle
leaves the previous dataset exactly as it was (``--overwrite`` never
deletes it first), and a first import leaves no half-made or empty folder.

Where Linux offers it, the swap is one atomic exchange of the two folders
(``renameat2(RENAME_EXCHANGE)``); elsewhere it is two renames, between
which the old dataset sits whole under a hidden name.  A build folder left
by a killed command is removed by the next command writing the same
destination.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from audit.data.manifest import (EXCLUSIONS_FILE, HASH_CACHE_FILE, INFO_FILE, MANIFEST_FILE, read_info)
from audit.errors import DatasetError
from audit.outputs import check_writable_folder, writing

#: What a dataset folder written by this tool holds besides user files.
WRITTEN_FILES = (MANIFEST_FILE, EXCLUSIONS_FILE, INFO_FILE, HASH_CACHE_FILE)
IMAGE_FOLDERS = ("images", "source")
#: The way round a destination that cannot be written.
ELSEWHERE = "choose another DEST folder"
#: Inside a build folder while it is being written: the process id that writes it.
BUILD_MARKER = ".audit-partial"


def _partial_prefix(dest: Path) -> str:
    return f".{dest.name}.partial-"


def check_destination(dest: str | os.PathLike, *, sources: Sequence[str | os.PathLike],
                      overwrite: bool) -> Path:
    """Refuse a destination that cannot, or may not, receive a dataset; change nothing.

    ``dest`` must not be, or lie inside, a source folder (writing there would
    modify the source), nor hold one (replacing it would delete the source:
    ``DEST/images`` of a copied dataset imported again into ``DEST``).  An existing non-empty folder is refused unless
    ``overwrite`` and it was written by this tool (it has a dataset.json);
    its parent must be writable (the new folder is built there).
    """
    dest = Path(dest).expanduser().absolute()
    if dest.is_symlink() and dest.is_dir():
        dest = Path(os.path.realpath(dest))   # replace the folder the link points to, not the link
    real_dest = Path(os.path.realpath(dest))
    for source in sources:
        real_source = Path(os.path.realpath(source))
        if real_dest == real_source or real_source in real_dest.parents:
            raise DatasetError(f"The destination {str(dest)!r} is inside the source {str(source)!r}; "
                               "writing there would modify the source. Choose a folder outside it.")
        if real_dest in real_source.parents:
            raise DatasetError(f"The source {str(source)!r} lies inside the destination {str(dest)!r}; "
                               "replacing the destination would delete the images it is read from. Import "
                               "into another folder, or move the images out of the destination first.")
    if dest.exists() and not dest.is_dir():
        raise DatasetError(f"The destination {str(dest)!r} is a file; choose a folder.")
    if dest.is_dir() and any(dest.iterdir()):
        if not overwrite:
            raise DatasetError(f"The destination {str(dest)!r} is not empty; choose a new folder, or "
                               "pass --overwrite to replace a dataset written there before.")
        if not (dest / INFO_FILE).is_file():
            raise DatasetError(f"The destination {str(dest)!r} holds no {INFO_FILE}, so it was not "
                               "written by 'audit dataset': refusing to overwrite it. Choose a new folder.")
        copied = (read_info(dest).get("images") or {}).get("mode") == "copy"
        for name in IMAGE_FOLDERS:
            target = dest / name
            if target.is_dir() and not target.is_symlink() and not copied:
                raise DatasetError(f"{str(target)!r} is a folder the tool did not copy; move it "
                                   "away or choose a new destination.")
    check_writable_folder(dest.parent, what="the destination's folder", elsewhere=ELSEWHERE)
    return dest


@contextmanager
def staged_destination(dest: str | os.PathLike, *, sources: Sequence[str | os.PathLike],
                       overwrite: bool) -> Iterator[Path]:
    """A build folder to write the new dataset into; swapped into ``dest`` when the block succeeds.

    On any failure the build folder is removed and ``dest`` (and any
    parent folder this made) is left as it was.
    """
    dest = check_destination(dest, sources=sources, overwrite=overwrite)
    made = _make_parents(dest.parent)
    try:
        _remove_stale_builds(dest)
        with writing(dest.parent, what="the destination's folder", elsewhere=ELSEWHERE):
            build = Path(tempfile.mkdtemp(prefix=_partial_prefix(dest), dir=dest.parent))
    except BaseException:
        _remove_empty(made)
        raise
    try:
        (build / BUILD_MARKER).write_text(str(os.getpid()))
        yield build
        with writing(build, what="the new dataset folder", elsewhere=ELSEWHERE):
            if dest.is_dir():
                _carry_over_user_files(dest, build)
            (build / BUILD_MARKER).unlink()
            os.chmod(build, 0o777 & ~_umask())   # mkdtemp's folder is private; a dataset folder is not
            _swap_into_place(build, dest)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        _remove_empty(made)
        raise


def _make_parents(folder: Path) -> list[Path]:
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        current = current.parent
    with writing(folder, what="the destination's folder", elsewhere=ELSEWHERE):
        folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:   # deepest first
        try:
            folder.rmdir()
        except OSError:
            break


def _build_is_abandoned(folder: Path) -> bool:
    try:
        pid = int((folder / BUILD_MARKER).read_text().strip())
    except (OSError, ValueError):
        return True
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:   # alive, another user's
        return False
    return False


def _remove_stale_builds(dest: Path) -> None:
    """Build folders of a killed earlier command for the same destination (never another's live one)."""
    prefix = _partial_prefix(dest)
    try:
        entries = list(os.scandir(dest.parent))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False):
            if _build_is_abandoned(Path(entry.path)):
                shutil.rmtree(entry.path, ignore_errors=True)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, target, follow_symlinks=False)


def _carry_over_user_files(old: Path, new: Path) -> None:
    """What the user put in the old folder (a pairs.txt, notes) goes into the new one, by hard link."""
    for entry in os.scandir(old):
        if entry.name in WRITTEN_FILES or entry.name in IMAGE_FOLDERS or (new / entry.name).exists():
            continue
        target = new / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            shutil.copytree(entry.path, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry.path, str(target))


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux renameat2); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_into_place(build: Path, dest: Path) -> None:
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        os.replace(build, dest)   # a rename over nothing or an empty folder: atomic
        return
    if _exchange(build, dest):
        old = build               # the exchange left the old dataset at the build's name
    else:
        old = Path(tempfile.mkdtemp(prefix=_partial_prefix(dest), dir=dest.parent))
        os.rmdir(old)
        os.rename(dest, old)      # the old dataset is whole under a hidden name until the next line
        os.rename(build, dest)
    (old / BUILD_MARKER).write_text("0")   # abandoned from here: removable if this removal is killed
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
