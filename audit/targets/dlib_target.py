"""The dlib target: dlib's ResNet face descriptor (128-D, euclidean, 0.6).

The embedded default: it works offline with nothing but the pip install.
Two engines compute the same descriptor:

* ``dlib``: dlib's own code, one face at a time, about 100 ms per face on
  one core (the reference);
* ``torch``: the same network read from dlib's .dat file into PyTorch
  (:mod:`audit.targets.dlib_torch`), batched, on the GPU when there is one.
  It is used only after a self-check on a packaged real face shows it
  agrees with dlib; ``auto`` (the default) picks it when it does.
"""

from __future__ import annotations

import logging
import re
from typing import ClassVar, Literal, Sequence

import numpy as np

from audit.errors import InputError, TargetError
from audit.faces import DESCRIPTOR_CHIP_SIZE
from audit.models import DESCRIPTOR_MODEL, model_path, model_sha256
from audit.targets.base import EmbedOutcome, Metric, Target
from audit.targets.options import option_choice, option_float, option_int

log = logging.getLogger(__name__)

Engine = Literal["auto", "torch", "dlib"]
ENGINES = ("auto", "torch", "dlib")
DEFAULT_THRESHOLD = 0.6   # dlib's documented same-person threshold (99.38% on LFW)
DIMENSION = 128


class DlibTarget(Target):
    """dlib's ``face_recognition_model_v1`` on aligned 150x150 chips.

    Options: ``engine`` (auto, torch, dlib), ``threshold`` (default 0.6),
    ``device`` for the torch engine (``cuda``, ``cpu``; default: the GPU if any).
    """

    name: ClassVar[str] = "dlib"
    input_kind = "aligned"
    chip_size = DESCRIPTOR_CHIP_SIZE

    def __init__(self, *, engine: Engine = "auto", threshold: float = DEFAULT_THRESHOLD,
                 device: str | None = None, batch_size: int | None = None) -> None:
        self.requested_engine = option_choice("engine", engine, ENGINES)
        self._threshold = option_float("threshold", threshold, positive=True)
        if device is not None and not re.fullmatch(r"cpu|cuda(:\d+)?", str(device).strip()):
            raise InputError(f"target option device={device!r} must be cpu, cuda or cuda:N.")
        self._device = None if device is None else str(device).strip()
        self._batch_size = None if batch_size is None else option_int("batch_size", batch_size, minimum=1)
        self._model_file = model_path(DESCRIPTOR_MODEL)
        self._engine: str | None = None
        self._torch_engine = None
        self._dlib_model = None
        self.self_check_report: dict | None = None

    # The descriptor is only loaded when first needed, and rebuilt in each
    # worker process rather than pickled.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_torch_engine"] = None
        state["_dlib_model"] = None
        return state

    @property
    def parallel_safe(self) -> bool:  # type: ignore[override]
        """dlib's engine is single-threaded: the embed stage fans it out over processes."""
        return self.engine == "dlib"

    @property
    def dimension(self) -> int:
        return DIMENSION

    @property
    def metric(self) -> Metric:
        return "euclidean"

    @property
    def default_threshold(self) -> float:
        return self._threshold

    def fingerprint(self) -> str:
        # Both engines give the same vectors (the self-check enforces it), so
        # the engine is not part of the fingerprint: caches are shared.
        return f"dlib-resnet-v1:sha256:{model_sha256(str(self._model_file))[:16]}"

    @property
    def engine(self) -> str:
        """The engine in use, resolving ``auto`` (and running the self-check) on first use."""
        if self._engine is None:
            self._engine = self._resolve_engine()
        return self._engine

    def _resolve_engine(self) -> str:
        if self.requested_engine == "dlib":
            return "dlib"
        try:
            from audit.targets import dlib_torch  # torch: loaded only for the torch engine
        except ImportError as exc:
            if self.requested_engine == "torch":
                raise TargetError(f"the torch engine is unavailable ({exc}). Use --target-option "
                                  "engine=dlib.") from exc
            log.warning("torch engine unavailable (%s); using dlib's own engine", exc)
            return "dlib"
        try:
            engine = dlib_torch.DlibTorchEngine(device=self._device, batch_size=self._batch_size)
            report = dlib_torch.self_check(engine)
        except TargetError as exc:
            if self.requested_engine == "torch":
                raise
            log.warning("torch engine refused by its self-check (%s); using dlib's own engine", exc)
            return "dlib"
        self._torch_engine = engine
        self.self_check_report = report.to_dict() if hasattr(report, "to_dict") else dict(vars(report))
        return "torch"

    def differentiable_model(self):
        """dlib's network as a differentiable PyTorch module (white-box probes only)."""
        from audit.targets.dlib_torch import load_dlib_descriptor  # torch: loaded only when asked for

        return load_dlib_descriptor(self._model_file)

    def details(self) -> dict:
        return {"engine": self.engine, "model_file": self._model_file.name,
                "model_sha256": model_sha256(str(self._model_file)),
                "self_check": self.self_check_report}

    def _dlib(self):
        if self._dlib_model is None:
            import dlib

            self._dlib_model = dlib.face_recognition_model_v1(str(self._model_file))
        return self._dlib_model

    def embed(self, images: Sequence[np.ndarray]) -> list[EmbedOutcome]:
        """Embed aligned 150x150 RGB chips."""
        chips = [np.ascontiguousarray(im, dtype=np.uint8) for im in images]
        for i, chip in enumerate(chips):
            if chip.shape != (self.chip_size, self.chip_size, 3):
                raise ValueError(f"image {i} has shape {chip.shape}; the dlib target takes aligned "
                                 f"{self.chip_size}x{self.chip_size}x3 chips from audit.faces.")
        if not chips:
            return []
        if self.engine == "torch":
            if self._torch_engine is None:
                self._engine = None
                self._engine = self._resolve_engine()
            if self._torch_engine is not None:
                vectors = self._torch_engine.embed(np.stack(chips))
                return [EmbedOutcome.ok(v) for v in vectors]
        model = self._dlib()
        vectors = model.compute_face_descriptor(chips)
        return [EmbedOutcome.ok(np.asarray(v, dtype=np.float32)) for v in vectors]
