"""The embed stage on a Dask cluster (``--scheduler ADDRESS`` or ``--scheduler local[:N]``).

Detection, alignment and (for a target that takes aligned chips) the
descriptor run on Dask workers, a chunk of images per task.  The machine
that runs ``audit`` stays the only writer of the SQLite cache: it sends
only the images the cache lacks, keeps a bounded number of chunks in flight
(two per worker thread), and writes each chunk's results as it comes back,
so a killed client or a lost worker loses at most the chunks in flight and
a rerun resumes from the cache.

Failures, and what happens to them:

* an image that cannot be read or decoded, or that the aligner rejects, is
  that image's ``error`` row with its reason (errors are not cached: a
  rerun tries it again);
* a target that fails on a worker (its model file missing there, say)
  stops the run with a :class:`~audit.errors.TargetError` naming the
  worker: the chips are all alike, so the fault is the worker's;
* a worker that dies mid-chunk (killed, out of memory, its machine lost)
  has its chunk rescheduled by Dask on another worker;
* a chunk that has killed ``distributed.scheduler.allowed-failures + 1``
  workers (Dask's default: 4) is split into single-image tasks, and an
  image that kills its workers alone is recorded as an ``error`` ("crashed
  the worker process ...") instead of being retried forever.  Single
  images rather than a bisection: each round costs that many worker
  deaths, and a bisection of 32 images needs five rounds where splitting
  needs one;
* a scheduler that goes away, or no worker for :data:`DEFAULT_NO_WORKER_TIMEOUT`
  seconds, stops the run (:class:`~audit.errors.ClusterStopped`, exit 3,
  resumable).

Workers need the same face-bias-audit version as the client (checked at
connection) and read the dataset's images themselves: a shared file
system path, or a URL (:mod:`audit.data.remote`).
"""

from __future__ import annotations

import hashlib
import logging
import platform
import re
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

from audit import __version__
from audit.embed_items import ItemResult, apply_outcome, default_workers
from audit.errors import AuditError, ClusterError, ClusterStopped, InputError, TargetError
from audit.faces import FaceAligner, FaceConfig
from audit.data.remote import read_locations
from audit.images import ImageReadError
from audit.images import content_hash as hash_of, decode_image
from audit.targets.base import STATUS_ERROR, STATUS_OK, Target

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

    from audit.progress import Progress

log = logging.getLogger(__name__)

#: ``--scheduler local`` or ``local:N``: a LocalCluster of N worker processes on this machine.
LOCAL_SCHEDULER = "local"
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds without any worker after which a run stops (resumable).
DEFAULT_NO_WORKER_TIMEOUT = 300.0
#: Chunks in flight per worker thread: one running, one queued behind it.
IN_FLIGHT_PER_THREAD = 2
_POLL_SECONDS = 0.05
_WORKER_CHECK_SECONDS = 5.0
_ADDRESS = re.compile(r"^(?:(?P<protocol>[a-z][a-z0-9+.-]*)://)?(?P<host>[^\s/:]+|\[[0-9a-fA-F:]+\])"
                      r"(?::(?P<port>\d+))?$")

CRASH_REASON = ("its worker process died each time it was embedded ({n} attempts: killed, crashed "
                "or out of memory); not retried in this run")


# -- which scheduler -------------------------------------------------------------------
@dataclass(frozen=True)
class SchedulerSpec:
    """Where the embed stage runs: a scheduler's ``address``, or a local cluster of ``n_workers``."""

    address: str | None = None
    n_workers: int | None = None

    @property
    def is_local(self) -> bool:
        return self.address is None

    def describe(self) -> str:
        if self.address is not None:
            return f"the Dask scheduler at {self.address}"
        return f"a local Dask cluster of {self.n_workers} worker processes"


def parse_scheduler(text: str, *, default_local_workers: int | None = None) -> SchedulerSpec:
    """``local``, ``local:N``, ``tcp://host:port`` or ``host:port`` -> :class:`SchedulerSpec`."""

    value = str(text).strip()
    if value == LOCAL_SCHEDULER or value.startswith(LOCAL_SCHEDULER + ":"):
        count = value[len(LOCAL_SCHEDULER) + 1:] if ":" in value else ""
        if not count:
            return SchedulerSpec(n_workers=default_local_workers or default_workers())
        if not count.isdigit() or int(count) < 1:
            raise InputError(f"--scheduler {value!r}: the number of local workers must be a whole "
                             "number of at least 1, e.g. --scheduler local:4.")
        return SchedulerSpec(n_workers=int(count))
    match = _ADDRESS.match(value)
    if not value or match is None:
        raise InputError(f"--scheduler {value!r} is not a scheduler address. Give the address that "
                         "'dask scheduler' prints (e.g. tcp://10.0.0.5:8786), or local[:N] for a "
                         "cluster of N processes on this machine.")
    protocol = match["protocol"] or "tcp"
    if protocol not in ("tcp", "tls", "ws", "wss", "inproc", "ucx"):
        raise InputError(f"--scheduler {value!r}: unknown protocol {protocol!r}; Dask schedulers "
                         "listen on tcp:// (or tls://).")
    port = match["port"] or "8786"
    return SchedulerSpec(address=f"{protocol}://{match['host']}:{port}")


@contextmanager
def open_cluster(spec: SchedulerSpec, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
                 ) -> Iterator["Client"]:
    """A Dask client for ``spec``; a local cluster is started here and stopped on exit."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ClusterError(f"--scheduler needs dask.distributed ({exc}). Install it with: "
                           "pip install 'dask[distributed]'") from exc
    cluster = None
    if spec.is_local:
        # One thread per process: dlib's detector is single-threaded and not
        # thread-safe, so the processes are the parallelism.
        # On the loopback only, and the scheduler's small HTTP server (health,
        # metrics) on any free port rather than 8787, which another cluster may hold.
        try:
            cluster = LocalCluster(n_workers=spec.n_workers, threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                   silence_logs=logging.ERROR)
        except (RuntimeError, OSError, TimeoutError) as exc:
            raise ClusterError(f"{spec.describe()} did not start ({exc}). Worker processes are "
                               "spawned: run audit from a script or the command line (not from "
                               "standard input), with memory for each, or use --workers.") from exc
        client = Client(cluster, set_as_default=False)
    else:
        try:
            client = Client(spec.address, timeout=connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"no Dask scheduler answers at {spec.address} within "
                               f"{connect_timeout:g} s ({type(exc).__name__}). Start one with "
                               "'dask scheduler' and workers with 'dask worker ADDRESS --nworkers N "
                               "--nthreads 1' (docs/cluster.md), or use --scheduler local.") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _worker_versions() -> dict[str, str]:
    """Runs on each worker: the versions that decide whether its vectors match the client's."""
    return {"face-bias-audit": __version__, "python": platform.python_version()}


def check_workers(client: "Client", spec: SchedulerSpec, *,
                  timeout: float = DEFAULT_NO_WORKER_TIMEOUT) -> int:
    """Wait for a worker, check every worker runs this package's version; the number of threads."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise ClusterStopped(f"no worker joined {spec.describe()} within {timeout:g} s. Start "
                             "workers with 'dask worker ADDRESS --nworkers N --nthreads 1', then "
                             "rerun.") from None
    mine = _worker_versions()
    try:
        theirs = client.run(_worker_versions)
    except (ImportError, AttributeError) as exc:
        raise ClusterError(f"the workers of {spec.describe()} cannot import face-bias-audit "
                           f"({type(exc).__name__}: {exc}). Install the same version on every "
                           f"worker: pip install face-bias-audit=={mine['face-bias-audit']}.") from None
    for worker, versions in sorted(theirs.items()):
        if versions["face-bias-audit"] != mine["face-bias-audit"]:
            raise ClusterError(f"worker {worker} runs face-bias-audit {versions['face-bias-audit']}, "
                               f"this machine {mine['face-bias-audit']}: vectors could differ. Install "
                               f"face-bias-audit=={mine['face-bias-audit']} on every worker.")
    return sum(client.nthreads().values())


# -- the worker's side ---------------------------------------------------------------------
@dataclass(frozen=True)
class ChunkJob:
    """What a worker needs to process chunks of one embed run; the same object for every chunk.

    ``target_blob`` is the pickled target (``None`` when the client embeds),
    unpickled once per worker thread and keyed by ``target_key``;
    ``target_fingerprint`` is checked against the worker's own copy, so a
    worker with another model file cannot slip different vectors in under
    the client's cache key.
    """

    face_config: FaceConfig
    align_sizes: tuple[int, ...]
    return_sizes: tuple[int, ...]
    keep_image: bool
    target_blob: bytes | None = None
    target_key: str = ""
    target_fingerprint: str = ""


_state = threading.local()


def _aligner(config: FaceConfig) -> FaceAligner:
    aligners = _state.__dict__.setdefault("aligners", {})
    if config not in aligners:
        aligners[config] = FaceAligner(config)
    return aligners[config]


def _target(job: ChunkJob) -> Target:
    import cloudpickle

    targets = _state.__dict__.setdefault("targets", {})
    if job.target_key not in targets:
        target = cloudpickle.loads(job.target_blob)
        found = target.fingerprint()
        if found != job.target_fingerprint:
            raise TargetError(f"worker {platform.node()} has target {found!r} where the client has "
                              f"{job.target_fingerprint!r}: install the same package and model files "
                              "on every worker.")
        targets[job.target_key] = target
    return targets[job.target_key]


def embed_chunk(items: list[tuple[int, str]], job: ChunkJob) -> list["ItemResult"]:
    """Read, align (and embed) a chunk of images on a worker; one result per item, in order.

    Per-image problems become ``error`` results with their reason; only a
    problem with the run itself (a target that differs from the client's)
    raises.
    """
    aligner = _aligner(job.face_config)
    results: list[ItemResult] = []
    payloads = read_locations([location for _, location in items])   # one round trip per chunk
    for (index, location), payload in zip(items, payloads):
        if isinstance(payload, OSError):
            results.append(ItemResult(index, "", STATUS_ERROR, 0, f"{location}: not readable ({payload})", {}))
            continue
        try:
            image, content_hash = decode_image(payload, name=str(location)), hash_of(payload)
        except ImageReadError as exc:
            results.append(ItemResult(index, "", STATUS_ERROR, 0, str(exc), {}))
            continue
        try:
            face = aligner.align(image, sizes=job.align_sizes) if job.align_sizes else None
        except Exception as exc:  # noqa: BLE001 - one image's problem, recorded with its reason
            results.append(ItemResult(index, content_hash, STATUS_ERROR, 0,
                                       f"alignment failed ({type(exc).__name__}: {exc})", {}))
            continue
        if face is None:
            results.append(ItemResult(index, content_hash, STATUS_OK, 1, "", {},
                                       image=image if job.keep_image else None))
        else:
            results.append(ItemResult(index, content_hash, face.status, face.n_faces, face.reason,
                                       dict(face.chips), image=image if job.keep_image else None))
    if job.target_blob is not None:
        target = _target(job)
        todo = [r for r in results if r.status == STATUS_OK]
        if todo:
            try:
                outcomes = target.embed([r.chips[target.chip_size] for r in todo])
            except AuditError:
                raise
            except Exception as exc:
                # The chips are the aligner's, all of one size: a failure here is the
                # worker's (a model file missing there, a broken install), not an image's.
                raise TargetError(f"the target {target.name!r} failed on worker {platform.node()} "
                                  f"({type(exc).__name__}: {exc}). Every worker needs the package "
                                  "and the target's files at the same paths as this machine.") from exc
            for r, outcome in zip(todo, outcomes):
                apply_outcome(r, outcome)
    for r in results:   # send back only the chips the client keeps
        r.chips = {size: chip for size, chip in r.chips.items() if size in job.return_sizes}
    return results


def can_embed_on_workers(target: Target) -> bool:
    """Whether the workers can run ``target``: it takes aligned chips and can be pickled."""
    import cloudpickle

    if target.input_kind != "aligned":
        return False
    try:
        cloudpickle.dumps(target)
    except Exception:  # noqa: BLE001 - any pickling failure means "keep it here"
        return False
    return True


def make_job(target: Target, *, face_config: FaceConfig, align_sizes: tuple[int, ...],
             chip_size: int | None, embed_on_workers: bool, keep_image: bool) -> ChunkJob:
    import cloudpickle

    blob = cloudpickle.dumps(target) if embed_on_workers else None
    return_sizes = tuple(s for s in align_sizes if s == chip_size or not embed_on_workers)
    return ChunkJob(face_config=face_config, align_sizes=align_sizes, return_sizes=return_sizes,
                    keep_image=keep_image, target_blob=blob,
                    target_key=hashlib.sha256(blob).hexdigest() if blob else "",
                    target_fingerprint=target.fingerprint() if blob else "")


# -- the client's side ------------------------------------------------------------------------
def process_on_cluster(spec: SchedulerSpec, chunks: list[list[tuple[int, str]]], job: ChunkJob,
                       finish: Callable[[list["ItemResult"]], None], bar: "Progress", *,
                       group_size: int = 1,
                       no_worker_timeout: float = DEFAULT_NO_WORKER_TIMEOUT) -> None:
    """Run ``chunks`` on the cluster, handing results to ``finish`` as they come back.

    ``finish`` (the embed stage's: embed on the client where needed, write
    the cache) is called in this thread with at least ``group_size``
    results at a time (a cloud target wants batches of requests), and with
    whatever is left at the end.
    """
    with open_cluster(spec) as client:
        check_workers(client, spec, timeout=no_worker_timeout)
        _ChunkRunner(client, spec, job, finish, bar, group_size=group_size,
                     no_worker_timeout=no_worker_timeout).run(chunks)


class _ChunkRunner:
    """The client's loop: a bounded window of chunk tasks, results written as they arrive."""

    def __init__(self, client: "Client", spec: SchedulerSpec, job: ChunkJob,
                 finish: Callable[[list["ItemResult"]], None], bar: "Progress", *,
                 group_size: int, no_worker_timeout: float) -> None:
        from distributed import as_completed

        self.client, self.spec, self.job, self.finish, self.bar = client, spec, job, finish, bar
        self.group_size = max(1, group_size)
        self.no_worker_timeout = no_worker_timeout
        self.queue: deque[list[tuple[int, str]]] = deque()
        self.in_flight: dict = {}
        self.completed = as_completed(loop=client.loop)
        self.waiting: list = []          # results not yet handed to finish (grouping)
        self.run_id = uuid.uuid4().hex[:12]
        self.n_submitted = 0
        self.last_worker_seen = time.monotonic()
        self.last_check = 0.0

    def run(self, chunks: list[list[tuple[int, str]]]) -> None:
        self.queue.extend(chunks)
        try:
            self._fill()
            while self.in_flight:
                if not self.completed.has_ready():
                    self._check_cluster()
                    time.sleep(_POLL_SECONDS)
                    continue
                for future in self.completed.next_batch(block=False):
                    self._collect(future)
                if len(self.waiting) >= self.group_size:
                    self._flush()
                self._fill()
            self._flush()
        except BaseException:
            if self.in_flight:
                try:
                    self.client.cancel(list(self.in_flight))
                except Exception:  # noqa: BLE001 - the cluster may already be gone
                    pass
            raise

    def _fill(self) -> None:
        try:
            threads = sum(self.client.nthreads().values())
        except (OSError, RuntimeError) as exc:
            raise self._lost(exc) from None
        limit = max(2, IN_FLIGHT_PER_THREAD * threads)
        while self.queue and len(self.in_flight) < limit:
            items = self.queue.popleft()
            self.n_submitted += 1
            future = self.client.submit(embed_chunk, items, self.job, pure=False,
                                        key=f"audit-embed-{self.run_id}-{self.n_submitted}")
            self.in_flight[future] = items
            self.completed.add(future)

    def _collect(self, future) -> None:
        from distributed import KilledWorker

        items = self.in_flight.pop(future)
        status = future.status
        if status == "finished":
            self.waiting.extend(future.result())
        elif status == "error":
            error = future.exception()
            if not isinstance(error, KilledWorker):
                self._flush()           # keep what came back before the error
                raise error
            self._crashed(items, error)
        else:                            # cancelled or lost: the scheduler went away
            raise self._lost(RuntimeError(f"a task was {status}"))
        future.release()

    def _crashed(self, items: list[tuple[int, str]], error: Exception) -> None:
    
        import dask

        deaths = int(dask.config.get("distributed.scheduler.allowed-failures")) + 1
        if len(items) > 1:
            log.warning("a chunk of %d images killed %d workers; retrying its images one by one",
                        len(items), deaths)
            self.queue.extendleft([item] for item in reversed(items))
            return
        index, location = items[0]
        log.warning("%s crashed %d workers; recorded as an error", location, deaths)
        self.waiting.append(ItemResult(index, "", STATUS_ERROR, 0, CRASH_REASON.format(n=deaths), {}))

    def _flush(self) -> None:
        if not self.waiting:
            return
        results, self.waiting = self.waiting, []
        self.finish(results)
        self.bar.advance(len(results))

    def _check_cluster(self) -> None:
        now = time.monotonic()
        if now - self.last_check < _WORKER_CHECK_SECONDS:
            return
        self.last_check = now
        try:
            n_workers = len(self.client.scheduler_info().get("workers", {}))
        except (OSError, RuntimeError) as exc:
            raise self._lost(exc) from None
        if self.client.status not in ("running", "connecting"):
            raise self._lost(RuntimeError(f"client {self.client.status}"))
        if n_workers:
            self.last_worker_seen = now
        elif now - self.last_worker_seen > self.no_worker_timeout:
            raise ClusterStopped(f"no worker left in {self.spec.describe()} for "
                                 f"{self.no_worker_timeout:g} s. Everything embedded so far is cached: "
                                 "start workers ('dask worker ADDRESS') and rerun the same command.")

    def _lost(self, cause: BaseException) -> ClusterStopped:
        return ClusterStopped(f"lost {self.spec.describe()} ({type(cause).__name__}: {cause}). "
                              "Everything embedded so far is cached: rerun the same command to resume.")
