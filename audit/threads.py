"""How many threads compute, and how idle ones wait: settings that hold on a busy machine.

OpenMP threads (torch's CPU kernels) spin on their core between parallel
regions by default.  On a machine with a core taken by another program (a
browser, a second job on a CI runner) the spinning threads fight that
program and each other for it, and a training step can run many times
slower than on a quiet machine.  Waiting passively costs little when the
machine is quiet and keeps most of the throughput when it is not
(``benchmarks/bench_contention.py`` measures both).  The wait policy is
read once, when OpenMP loads with torch, so :func:`prepare_environment`
runs before anything imports torch; a policy the user set is kept.

The thread count is the number of CPUs this process may use (its affinity
mask and any cgroup CPU quota, as a container or CI runner sets), not the
machine's: ``os.cpu_count()`` counts cores the process cannot run on.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from audit.errors import InputError

__all__ = ["usable_cpus", "prepare_environment", "set_threads", "WAIT_POLICY"]

#: How idle OpenMP threads wait unless the user's environment says otherwise.
WAIT_POLICY = "PASSIVE"
_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
_CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def _cgroup_quota() -> float | None:
    """CPUs allowed by a cgroup CPU quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if unlimited."""
    try:
        if _CGROUP_V2.is_file():
            quota, period = _CGROUP_V2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if _CGROUP_V1_QUOTA.is_file() and _CGROUP_V1_PERIOD.is_file():
            quota = int(_CGROUP_V1_QUOTA.read_text())
            return None if quota <= 0 else quota / int(_CGROUP_V1_PERIOD.read_text())
    except (OSError, ValueError):
        return None
    return None


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup quota; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):      # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def prepare_environment(environ: dict | None = None) -> None:
    """Before torch loads: idle OpenMP threads wait passively, unless the user chose otherwise."""
    environ = os.environ if environ is None else environ
    environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def set_threads(threads: int | None) -> int:
    """Use ``threads`` compute threads (None: :func:`usable_cpus`) in torch, if loaded or when loaded.

    Returns the count.  ``OMP_NUM_THREADS`` is set too where the user has
    not set it, so that a torch loaded later starts with the same count.
    """
    if threads is not None and (isinstance(threads, bool) or int(threads) != threads or threads < 1):
        raise InputError(f"--threads {threads!r}: must be a whole number >= 1 (default: the CPUs this "
                         f"process may use, {usable_cpus()} here).")
    count = int(threads) if threads is not None else usable_cpus()
    if threads is not None or "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(count)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)
    return count
