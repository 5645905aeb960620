"""Killing the CLI at a chosen moment, for real: SIGKILL, no clean-up, no ``finally``.

:func:`run_killed` starts ``audit ARGS`` in its own process with one
function wrapped: when that function has been called ``after`` times, the
process writes the pids of its child processes to a file and sends itself
SIGKILL.  The moment is exact (a checkpoint written, a batch committed, the
PDF about to be laid out), so the test can say what must have survived.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]

_BOOTSTRAP = r"""
import importlib, json, multiprocessing, os, signal, sys

module_name, attribute, after, when, record, signal_name = sys.argv[1:7]
owner = importlib.import_module(module_name)
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
original = getattr(owner, name)
calls = [0]

def die():
    with open(record, "w") as fh:
        json.dump([child.pid for child in multiprocessing.active_children()], fh)
    os.kill(os.getpid(), getattr(signal, signal_name))

def wrapped(*args, **kwargs):
    calls[0] += 1
    if when == "before" and calls[0] >= int(after):
        die()
    result = original(*args, **kwargs)
    if when == "after" and calls[0] >= int(after):
        die()
    return result

setattr(owner, name, wrapped)
# The signal reaches the CLI as it would from a terminal or a CI runner, even where the tests
# themselves run under nohup (SIGHUP ignored and inherited, which the CLI rightly keeps ignoring).
if signal_name != "SIGKILL":
    signal.signal(getattr(signal, signal_name), signal.SIG_DFL)
sys.argv = ["audit", *sys.argv[7:]]
from audit.cli import main
main()
"""


def run_cli(args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 300
            ) -> subprocess.CompletedProcess:
    """``audit ARGS`` in its own process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "audit.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=REPO_ROOT, timeout=timeout)


def run_killed(args: Sequence[str], *, at: str, after: int = 1, when: str = "after",
               record: Path, env: dict[str, str] | None = None, timeout: float = 300,
               signal_name: str = "SIGKILL") -> tuple[subprocess.CompletedProcess, list[int]]:
    """``audit ARGS`` sent ``signal_name`` (SIGKILL: no clean-up at all) by itself at the ``after``-th call
    of ``at`` ("module:Class.method" or "module:function").

    Returns the finished process and the pids its children had when it died.
    Output goes to files, not pipes: an orphaned child holding a pipe open
    must not keep the test waiting.
    """
    module_name, attribute = at.split(":")
    out, err = record.with_suffix(".stdout"), record.with_suffix(".stderr")
    with open(out, "w") as stdout, open(err, "w") as stderr:
        code = subprocess.run([sys.executable, "-c", _BOOTSTRAP, module_name, attribute, str(after), when,
                               str(record), signal_name, *map(str, args)], stdout=stdout, stderr=stderr,
                              env={**os.environ, **(env or {})}, cwd=REPO_ROOT, timeout=timeout).returncode
    done = subprocess.CompletedProcess(args, code, out.read_text(), err.read_text())
    children = json.loads(record.read_text()) if record.exists() else []
    return done, children


def is_alive(pid: int) -> bool:
    """True for a running process; a zombie (dead, not yet reaped by init) counts as dead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")


def survivors(pids: Sequence[int], *, wait: float = 10.0) -> list[int]:
    """The processes of ``pids`` still alive after waiting up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    alive = [p for p in pids if is_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if is_alive(p)]
    return alive


def orphans(pids: Sequence[int], *, wait: float = 10.0) -> list[int]:
    """The children of a killed process still alive after ``wait`` seconds; they are killed here too,
    so that a failing test leaves no process behind."""
    alive = survivors(pids, wait=wait)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return alive


def comparable(results: dict) -> dict:
    """results.json without what differs between two identical runs: times, paths, the command line."""
    skip = {"created_at", "duration_seconds", "command_line", "training_seconds", "samples_per_second",
            "settings", "path"}

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in skip}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(results)
