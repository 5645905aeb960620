"""Hostile environments for a test: a read-only folder, a full disk.

Permission bits do not stop the superuser, and tests often run as root
(containers, CI): there a read-only *bind mount* makes a folder truly
unwritable and a small *tmpfs* makes a disk that fills up.  Where the test
may not mount, the fault cannot be made for real and the test is skipped
with the reason.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def _can_mount() -> str | None:
    """None when this process may mount, else why not."""
    if os.geteuid() != 0:
        return "not running as root, so no file system can be mounted"
    if shutil.which("mount") is None:
        return "no 'mount' command on this machine"
    return None


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` (which exists) made unwritable for as long as the block runs."""
    folder = Path(folder)
    if os.geteuid() != 0:
        saved = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if not p.is_symlink()}
        for path, mode in saved.items():
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield folder
        finally:
            for path, mode in saved.items():
                path.chmod(mode)
        return
    why = _can_mount()
    if why is None:
        bound = _run("mount", "--bind", str(folder), str(folder))
        if bound.returncode != 0:
            why = f"a read-only bind mount is not allowed here ({bound.stderr.strip()})"
        elif _run("mount", "-o", "remount,bind,ro", str(folder)).returncode != 0:
            _run("umount", str(folder))
            why = "a bind mount cannot be remounted read-only here"
    if why is not None:
        pytest.skip(f"cannot make a folder read-only for real: {why}")
    try:
        yield folder
    finally:
        _run("umount", "-l", str(folder))


@contextmanager
def full_disk(folder: Path, *, size: str = "2m", leave_free: int = 0) -> Iterator[Path]:
    """A small tmpfs mounted at ``folder`` and filled up (all but ``leave_free`` bytes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    why = _can_mount()
    if why is None:
        mounted = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder))
        if mounted.returncode != 0:
            why = f"mounting a tmpfs is not allowed here ({mounted.stderr.strip()})"
    if why is not None:
        pytest.skip(f"cannot make a full disk for real: {why}")
    try:
        fill_up(folder, leave_free=leave_free)
        yield folder
    finally:
        _run("umount", "-l", str(folder))


def fill_up(folder: Path, *, leave_free: int = 0) -> None:
    """Write a ballast file until the disk holding ``folder`` has ``leave_free`` bytes or fewer left."""
    ballast = folder / ".ballast"
    with open(ballast, "ab") as fh:
        while True:
            free = shutil.disk_usage(folder).free
            if free <= leave_free:
                break
            try:
                fh.write(b"\0" * min(1 << 16, max(free - leave_free, 1)))
                fh.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
