"""The embed stage: dataset images -> aligned chips -> target vectors.

Work is cached per image (:mod:`audit.cache`) and written as it finishes,
so a killed run, rerun, picks up where it stopped.  Detection and, for
dlib's single-threaded engine, the descriptor fan out over processes;
a batched engine (torch, a cloud API) embeds in the main process.

Every image of the dataset gets a row with a status (``ok``, ``no_face``,
``error``) and a reason: nothing is dropped, and the per-group failure
rate is a result of its own.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


import numpy as np
import pandas as pd

from audit.cache import CachedChip, CachedEmbedding, EmbeddingCache
from audit.embed_items import ItemResult, apply_outcome, default_workers
from audit.errors import InputError, TargetError, TargetStopped
from audit.faces import FaceAligner, FaceConfig
from audit.data.remote import read_image_at
from audit.distributed import SchedulerSpec, can_embed_on_workers, make_job, process_on_cluster
from audit.images import ImageReadError, decode_png, encode_png
from audit.outputs import file_sha256
from audit.progress import progress
from audit.targets.base import STATUS_ERROR, STATUS_NO_FACE, STATUS_OK, Target


log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 32
DEFAULT_GENERATOR_CHIP_SIZE = 64


@dataclass
class EmbeddingSet:
    """The embed stage's output for one dataset and one target.

    ``table`` has one row per dataset image (``image_id``, ``content_hash``,
    ``status``, ``n_faces``, ``reason``, ``chip_status``, and the dataset's
    identity and attribute columns).  ``vectors`` has one row per table row,
    NaN where the status is not ``ok``.  ``chips`` (when asked for) holds
    the aligned generator chips, zeros where no face was found.
    """

    table: pd.DataFrame
    vectors: np.ndarray
    chips: np.ndarray | None
    target_fingerprint: str
    preprocessing: str
    n_computed: int
    n_from_cache: int

    @property
    def ok(self) -> np.ndarray:
        return (self.table["status"] == STATUS_OK).to_numpy()

    def status_counts(self) -> dict[str, int]:
        return {s: int(n) for s, n in self.table["status"].value_counts().items()}


# -- worker side ---------------------------------------------------------------
_worker_aligner: FaceAligner | None = None
_worker_target: Target | None = None


#: How often a worker checks that the process that started it is still alive.
PARENT_CHECK_SECONDS = 0.5


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker when its parent dies, however it dies (SIGKILL runs no clean-up).

    On Linux the kernel does it at once (``PR_SET_PDEATHSIG``); everywhere, a
    daemon thread notices within half a second that the worker was orphaned.
    """
    import signal
    import threading
    import time

    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)   # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass
    if os.getppid() != parent_pid:   # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_SECONDS)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(face_config: FaceConfig, target: Target | None, parent_pid: int | None = None) -> None:
    global _worker_aligner, _worker_target
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    try:  # one thread per process: the processes are the parallelism
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    _worker_aligner = FaceAligner(face_config)
    _worker_target = target


def _process_items(items: list[tuple[int, str]], sizes: tuple[int, ...], embed_here: bool,
                   keep_image: bool) -> list[ItemResult]:
    """Read, align (and embed, for a parallel-safe target) a chunk of images."""
    assert _worker_aligner is not None
    results = []
    for index, path in items:
        try:
            image, content_hash = read_image_at(path)
        except (ImageReadError, OSError) as exc:
            results.append(ItemResult(index, "", STATUS_ERROR, 0, str(exc), {}))
            continue
        face = _worker_aligner.align(image, sizes=sizes) if sizes else None
        status = face.status if face is not None else STATUS_OK
        result = ItemResult(index, content_hash, status, face.n_faces if face else 1,
                             face.reason if face else "", face.chips if face else {},
                             image=image if keep_image else None)
        results.append(result)
    if embed_here and _worker_target is not None:
        todo = [r for r in results if r.status == STATUS_OK]
        if todo:
            size = _worker_target.chip_size
            outcomes = _worker_target.embed([r.chips[size] for r in todo])
            for r, outcome in zip(todo, outcomes):
                apply_outcome(r, outcome)
    return results


# -- main side -----------------------------------------------------------------
def _resize(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def _cached_chip(png: bytes, size: int) -> np.ndarray:
    """A cached chip's pixels; ValueError where the stored bytes are damaged."""
    try:
        chip = decode_png(png)
    except Exception as exc:  # Pillow raises many types on damaged bytes
        raise ValueError(f"damaged chip ({exc})") from exc
    if chip.shape != (size, size, 3):
        raise ValueError(f"a chip of shape {chip.shape}, not {(size, size, 3)}")
    return chip


@dataclass
class _Rows:
    """The embed stage's per-image outcome, one entry per dataset row, filled from the cache and as work ends."""

    status: np.ndarray
    reasons: np.ndarray
    n_faces: np.ndarray
    chip_status: np.ndarray
    vectors: np.ndarray
    chips: np.ndarray | None

    @classmethod
    def empty(cls, n: int, dimension: int, chip_size: int | None) -> "_Rows":
        return cls(status=np.array([STATUS_ERROR] * n, dtype=object), reasons=np.array([""] * n, dtype=object),
                   n_faces=np.zeros(n, dtype=int), chip_status=np.array([""] * n, dtype=object),
                   vectors=np.full((n, dimension), np.nan, dtype=np.float32),
                   chips=np.zeros((n, chip_size, chip_size, 3), dtype=np.uint8) if chip_size else None)

    def set_outcome(self, i: int, status: str, n_faces: int, reason: str, vector: np.ndarray | None) -> None:
        self.status[i], self.n_faces[i], self.reasons[i] = status, n_faces, reason
        if vector is not None:
            self.vectors[i] = vector


@dataclass(frozen=True)
class _Plan:
    """The images still to do, in chunks, and where each step runs."""

    chunks: list[list[tuple[int, str]]]
    sizes: tuple[int, ...]          # chip sizes to align (the target's, the generator's)
    chip_size: int | None           # the generator's chip size, if chips are wanted
    use_pool: bool                  # local worker processes
    embed_in_workers: bool          # the workers embed too (a parallel-safe aligned target)
    embed_here: bool                # the target embeds in this process, after the workers aligned
    keep_image: bool                # the target takes whole images (a cloud API)
    main_batch: int                 # results handed to the target per call


class _Settler:
    """What happens to each finished chunk: embed it here if needed, record it, cache what is settled.

    Called once per chunk, in order of completion: whatever has been settled
    is in the cache, so a killed run resumes from there.
    """

    def __init__(self, embedder: "Embedder", rows: _Rows, hashes: list[str], cached: set[str],
                 chip_size: int | None, embed_here: bool, precomputed: bool) -> None:
        self.embedder, self.rows, self.hashes, self.cached = embedder, rows, hashes, cached
        self.chip_size, self.embed_here, self.precomputed = chip_size, embed_here, precomputed
        self.fingerprint = embedder.target.fingerprint()

    def __call__(self, results: list[ItemResult]) -> None:
        embedder, rows, hashes, chip_size = self.embedder, self.rows, self.hashes, self.chip_size
        stopped = None
        if self.embed_here:
            stopped = embedder._embed_in_main([r for r in results if hashes[r.index] not in self.cached])
        emb_rows, chip_rows = [], []
        for r in results:
            i = r.index
            if r.content_hash and r.content_hash != hashes[i]:
                r.status, r.reason = STATUS_ERROR, "file changed while the audit ran; rerun"
            if chip_size:
                chip_rows.extend(self._chip(r, i))
            if self.precomputed or hashes[i] in self.cached:
                continue
            rows.set_outcome(i, r.status, r.n_faces, r.reason, r.vector if r.status == STATUS_OK else None)
            # Errors may be passing (a network fault): only settled outcomes are cached.
            if r.status in (STATUS_OK, STATUS_NO_FACE):
                emb_rows.append((hashes[i], CachedEmbedding(r.status, r.n_faces, r.reason,
                                                            r.vector if r.status == STATUS_OK else None)))
        if embedder.cache is not None:
            embedder.cache.put_embeddings(emb_rows, target=self.fingerprint, preprocessing=embedder.preprocessing)
            if chip_size:
                embedder.cache.put_chips(chip_rows, preprocessing=embedder.face_config.key(), size=chip_size)
        if stopped is not None:   # what was answered before the stop is cached above
            raise stopped

    def _chip(self, r: ItemResult, i: int) -> list[tuple[str, CachedChip]]:
        """Record the generator chip of one image; the cache entry to write, if any."""
        rows = self.rows
        chip = r.chips.get(self.chip_size)
        rows.chip_status[i] = STATUS_OK if chip is not None else (r.status if r.status != STATUS_OK else STATUS_NO_FACE)
        if chip is not None:
            rows.chips[i] = chip
        if chip is not None or r.status == STATUS_NO_FACE:
            return [(self.hashes[i], CachedChip(rows.chip_status[i], r.n_faces,
                                                encode_png(chip) if chip is not None else None))]
        return []


class Embedder:
    """Embeds images through one target, with one face configuration and one cache.

    ``cache=None`` neither reads nor writes a cache (``--no-cache``, for
    benchmarks).  ``workers`` processes do detection (and dlib's descriptor);
    with a ``scheduler`` (:func:`audit.distributed.parse_scheduler`) a Dask
    cluster's workers do it instead, started or reached only when there is
    something to compute.
    """

    def __init__(self, target: Target, *, face_config: FaceConfig = FaceConfig(),
                 cache: EmbeddingCache | None = None, workers: int | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, show_progress: bool = True,
                 scheduler: "SchedulerSpec | None" = None) -> None:
        self.target = target
        self.face_config = face_config
        self.cache = cache
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 1:
            raise InputError(f"workers={workers!r}, must be at least 1.")
        self.chunk_size = chunk_size
        self.show_progress = show_progress
        self.scheduler = scheduler
        self._aligner: FaceAligner | None = None

    @property
    def preprocessing(self) -> str:
        """The cache key part that describes what the target was given."""
        if self.target.input_kind == "aligned":
            return f"{self.face_config.key()}:chip{self.target.chip_size}"
        return f"{self.target.input_kind}-v1"

    def _local_aligner(self) -> FaceAligner:
        if self._aligner is None:
            self._aligner = FaceAligner(self.face_config)
        return self._aligner

    # -- datasets ----------------------------------------------------------------
    def embed_dataset(self, dataset, *, chip_size: int | None = DEFAULT_GENERATOR_CHIP_SIZE) -> EmbeddingSet:
        """Embed every image of ``dataset`` (an :class:`audit.data.manifest.Dataset`)."""
        table = dataset.table.reset_index(drop=True)
        paths = [dataset.absolute_path(p) for p in table["path"]]
        if "sha256" in table.columns and table["sha256"].notna().all():
            hashes = table["sha256"].astype(str).tolist()
        else:
            hashes = [file_sha256(p) for p in paths]
        return self._embed(table, paths, hashes, chip_size=chip_size)

    def _embed(self, table: pd.DataFrame, paths: list[Path], hashes: list[str], *,
               chip_size: int | None) -> EmbeddingSet:
        n = len(table)
        target, fingerprint, prep = self.target, self.target.fingerprint(), self.preprocessing
        rows = _Rows.empty(n, target.dimension, chip_size)
        cached_emb = self.cache.get_embeddings(hashes, target=fingerprint, preprocessing=prep) if self.cache else {}
        cached_chip = (self.cache.get_chips(hashes, preprocessing=self.face_config.key(), size=chip_size)
                       if self.cache and chip_size else {})
        precomputed = target.input_kind == "precomputed"
        todo: list[int] = []
        n_damaged = 0
        for i, h in enumerate(hashes):
            emb = None if precomputed else cached_emb.get(h)   # a lookup is free; only chips are worth caching
            if emb is not None and emb.vector is not None and emb.vector.shape != (target.dimension,):
                emb, n_damaged = None, n_damaged + 1     # a damaged row: computed again, never used
                cached_emb.pop(h, None)
            if emb is not None:
                rows.set_outcome(i, emb.status, emb.n_faces, emb.reason, emb.vector)
            chip = cached_chip.get(h) if chip_size else None
            if chip is not None and chip.png is not None:
                try:
                    rows.chips[i] = _cached_chip(chip.png, chip_size)
                except ValueError:
                    chip, n_damaged = None, n_damaged + 1
            if chip is not None:
                rows.chip_status[i] = chip.status
            if (emb is None and not precomputed) or (chip_size and chip is None):
                todo.append(i)
        if n_damaged:
            log.warning("%d damaged entries of the cache %s are computed again.", n_damaged,
                        getattr(self.cache, "path", ""))
        if precomputed:
            for i, outcome in enumerate(target.lookup(table["image_id"].astype(str).tolist())):
                rows.set_outcome(i, outcome.status, outcome.n_faces, outcome.reason, outcome.vector)
        if todo:
            plan = self._plan(todo, paths, chip_size, precomputed)
            settle = _Settler(self, rows, hashes, set(cached_emb), chip_size, plan.embed_here, precomputed)
            self._run_chunks(plan, settle)
        out = table.copy()
        out.insert(1, "content_hash", hashes)
        out["status"] = rows.status
        out["n_faces"] = rows.n_faces
        out["reason"] = rows.reasons
        out["chip_status"] = rows.chip_status if chip_size else ""
        return EmbeddingSet(out, rows.vectors, rows.chips, fingerprint, prep, len(todo), n - len(todo))

    def _plan(self, todo: list[int], paths: list[Path], chip_size: int | None, precomputed: bool) -> "_Plan":
        """How the images still to do are cut into chunks, and who detects and embeds them."""
        target = self.target
        aligned = target.input_kind == "aligned"
        sizes = tuple(sorted(({target.chip_size} if aligned else set()) | ({chip_size} if chip_size else set())))
        # A target that embeds here may want more images per call (a cloud API's
        # concurrent requests); chunks read on a cluster stay small either way.
        chunk_size = self.chunk_size
        if self.scheduler is None and not precomputed and not (aligned and bool(target.parallel_safe)):
            chunk_size = max(self.chunk_size, max(1, int(target.preferred_batch)))
        chunks = [[(i, str(paths[i])) for i in todo[s:s + chunk_size]]
                  for s in range(0, len(todo), chunk_size)]
        # Processes only pay off for more than one chunk; whoever does the work embeds
        # (a resumed run with one chunk left must embed it here, not expect workers to).
        use_pool = self.scheduler is None and self.workers > 1 and len(chunks) > 1
        if self.scheduler is not None:   # a cluster's workers embed whatever they can receive
            embed_in_workers = aligned and can_embed_on_workers(target)
        else:
            embed_in_workers = aligned and bool(target.parallel_safe) and use_pool
        main_batch = 1 if embed_in_workers or precomputed else max(1, int(target.preferred_batch))
        return _Plan(chunks, sizes, chip_size, use_pool, embed_in_workers, not embed_in_workers and not precomputed,
                     target.input_kind == "image", main_batch)

    def _run_chunks(self, plan: "_Plan", settle: Callable[[list[ItemResult]], None]) -> None:
        """Process every chunk on the cluster, in a process pool or here, settling each as it finishes."""
        target = self.target
        with progress(f"Embedding ({target.name})", sum(map(len, plan.chunks)), enabled=self.show_progress) as bar:
            if self.scheduler is not None:
                job = make_job(target, face_config=self.face_config, align_sizes=plan.sizes,
                               chip_size=plan.chip_size, embed_on_workers=plan.embed_in_workers,
                               keep_image=plan.keep_image)
                process_on_cluster(self.scheduler, plan.chunks, job, settle, bar, group_size=plan.main_batch)
            elif plan.use_pool:
                ctx = multiprocessing.get_context("spawn")
                worker_target = target if plan.embed_in_workers else None
                with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                         initargs=(self.face_config, worker_target, os.getpid())) as pool:
                    futures = [pool.submit(_process_items, chunk, plan.sizes, plan.embed_in_workers,
                                           plan.keep_image) for chunk in plan.chunks]
                    try:
                        for future in futures:
                            results = future.result()
                            settle(results)
                            bar.advance(len(results))
                    except BaseException:
                        for f in futures:
                            f.cancel()
                        raise
            else:
                _init_local(self)
                for chunk in plan.chunks:
                    results = _process_items(chunk, plan.sizes, False, plan.keep_image)
                    settle(results)
                    bar.advance(len(results))

    def _embed_in_main(self, results: list[ItemResult], target: Target | None = None) -> TargetStopped | None:
        """Embed in this process: batched engines (torch, cloud APIs) are faster here.

        A target that stops (quota, budget) returns the stop instead of
        raising it, after the outcomes it did pay for are applied, so that
        the caller caches them before the run ends.
        """
        target = target or self.target
        stopped: TargetStopped | None = None
        if target.input_kind == "aligned":
            todo = [r for r in results if r.status == STATUS_OK]
            inputs = [r.chips[target.chip_size] for r in todo]
        else:
            todo = [r for r in results if r.image is not None]
            inputs = [r.image for r in todo]
            for r in todo:   # the target, not the aligner, decides whether there is a face
                r.status, r.reason = STATUS_OK, ""
        if todo:
            try:
                outcomes = target.embed(inputs)
            except TargetStopped as exc:
                stopped = exc
                outcomes = list(exc.partial_outcomes)
            for r, outcome in zip(todo, outcomes):
                apply_outcome(r, outcome)
            for r in todo[len(outcomes):]:
                r.status, r.reason, r.vector = STATUS_ERROR, "not embedded: the target stopped", None
        for r in results:
            r.image = None
        return stopped

    # -- arrays (reconstructions) ------------------------------------------------
    def embed_arrays(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embed reconstructions: ``(vectors, found)``, one row and one flag per image.

        Reconstructions are already aligned chips (the generator learned
        chips cut by :mod:`audit.faces`), so an aligned-chip target embeds
        each one resized to its chip size, every time: the distance is
        defined for every reconstruction, on the same footing.  Separately,
        ``found`` says whether the face detector finds a face in it, as it
        would in any photo; a success needs both.  A target that takes
        whole images (a cloud API) finds the face itself: where it finds
        none, the row is NaN and ``found`` False.

        Results are cached by the pixels' hash: a paid cloud call is never
        repeated when a resumed run regenerates the same reconstruction.
        """
        target = self.reembedding_target
        if target is None:
            raise TargetError(f"target {self.target.name!r} cannot embed new images (reconstructions): "
                              "give it a model, e.g. --target-option reembed=dlib.")
        images = np.asarray(images, dtype=np.uint8)
        n = len(images)
        vectors = np.full((n, target.dimension), np.nan, dtype=np.float32)
        found = np.zeros(n, dtype=bool)
        hashes = [hashlib.sha256(im.tobytes() + str(im.shape).encode()).hexdigest() for im in images]
        fingerprint = target.fingerprint()
        aligned = target.input_kind == "aligned"
        prep = (f"reconstruction-v1:{self.face_config.key()}:chip{target.chip_size}" if aligned
                else f"reconstruction-v1:{target.input_kind}")
        cached = self.cache.get_embeddings(hashes, target=fingerprint, preprocessing=prep) if self.cache else {}
        for i, h in enumerate(hashes):
            if h in cached:
                if cached[h].vector is not None:
                    vectors[i] = cached[h].vector
                found[i] = cached[h].status == STATUS_OK
        todo = [i for i, h in enumerate(hashes) if h not in cached]
        if not todo:
            return vectors, found
        results = []
        for i in todo:
            if aligned:
                face = self._local_aligner().align(images[i], sizes=())
                chip = _resize(images[i], target.chip_size)
                results.append(ItemResult(i, hashes[i], face.status, face.n_faces, face.reason,
                                           {target.chip_size: chip}))
            else:
                results.append(ItemResult(i, hashes[i], STATUS_OK, 1, "", {}, image=images[i]))
        detected = {r.index: (r.status, r.n_faces, r.reason) for r in results}
        if aligned:   # embed every reconstruction, found or not
            for r in results:
                r.status = STATUS_OK
        stopped = self._embed_in_main(results, target)
        rows = []
        for r in results:
            status, n_faces, reason = detected[r.index] if aligned else (r.status, r.n_faces, r.reason)
            if r.vector is not None:
                vectors[r.index] = r.vector
            found[r.index] = status == STATUS_OK and r.vector is not None
            if r.status != STATUS_ERROR and status in (STATUS_OK, STATUS_NO_FACE):
                rows.append((r.content_hash, CachedEmbedding(status, n_faces, reason, r.vector)))
        if self.cache is not None:
            self.cache.put_embeddings(rows, target=fingerprint, preprocessing=prep)
        if stopped is not None:
            raise stopped
        return vectors, found

    @property
    def reembedding_target(self) -> Target | None:
        """The target that embeds reconstructions: the target itself, or a precomputed one's model."""
        if self.target.input_kind == "precomputed":
            return self.target.reembed_target
        return self.target


def _init_local(embedder: Embedder) -> None:
    global _worker_aligner, _worker_target
    _worker_aligner = embedder._local_aligner()
    _worker_target = None

