"""The ONNX target (``onnx:PATH``): any face embedding model exported to ONNX.

The model receives aligned chips of ``input_size`` pixels from
:mod:`audit.faces` (dlib's 5-point alignment, the same for every target so
that targets are compared on the same crops; it is close to, not identical
with, the ArcFace or FaceNet training crops; a model very sensitive to its
own crop will show it as lower accuracy overall, not as a group disparity).

Preprocessing is what the model was trained with, and the user must say it
(or pick a preset):

============  ==========  ======  ============================  ======
preset        input_size  layout  normalisation                 colour
============  ==========  ======  ============================  ======
``arcface``   112         NCHW    ``(x - 127.5) / 127.5``        RGB
``facenet``   160         NCHW    ``(x - 127.5) / 128``          RGB
============  ==========  ======  ============================  ======

Explicit options override the preset.  Without a preset the input size and
layout are read from the model's input shape where it is static, and the
normalisation defaults to the ArcFace one (logged).

The metric is cosine by default.  The default threshold (cosine distance
0.6, i.e. cosine similarity 0.4) is a placeholder: **set your model's own
operating threshold** with ``threshold=``; a warning says so when it is not
set.  The fingerprint is the model file's SHA-256 plus a short hash of the
preprocessing (a different normalisation gives different vectors, which
must not be mixed in the cache).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from audit.errors import InputError, TargetError
from audit.outputs import file_sha256
from audit.targets.options import option_bool, option_choice, option_float, option_int
from audit.targets.base import EmbedOutcome, Metric, Target

log = logging.getLogger(__name__)

_INSTALL_HINT = "Install it with: pip install onnxruntime  (or: pip install 'face-bias-audit[onnx]')"
LAYOUTS = ("NCHW", "NHWC")
COLOR_ORDERS = ("RGB", "BGR")
METRICS = ("cosine", "euclidean")
DEFAULT_METRIC = "cosine"
#: Cosine distance 0.6 (similarity 0.4): a placeholder, not any model's figure.
DEFAULT_COSINE_THRESHOLD = 0.6
DEFAULT_BATCH_SIZE = 32
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


@dataclass(frozen=True)
class OnnxPreprocessing:
    """How an RGB uint8 chip becomes the model's input tensor: ``(x - mean) / std``."""

    input_size: int
    layout: str = "NCHW"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    color_order: str = "RGB"

    def __post_init__(self) -> None:
        if not 8 <= self.input_size <= 1024:
            raise InputError(f"input_size={self.input_size!r}, must be between 8 and 1024 pixels.")
        if self.layout not in LAYOUTS:
            raise InputError(f"layout={self.layout!r}, must be one of {LAYOUTS}.")
        if self.color_order not in COLOR_ORDERS:
            raise InputError(f"color_order={self.color_order!r}, must be one of {COLOR_ORDERS}.")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise InputError(f"mean={self.mean!r}, std={self.std!r}: give one value or three "
                             f"(R,G,B), comma-separated.")
        if any(not s > 0 for s in self.std):
            raise InputError(f"std={self.std!r}, every value must be positive.")

    def key(self) -> str:
        """A short, stable description for the fingerprint."""
        text = (f"{self.input_size}|{self.layout}|{self.color_order}|"
                f"{','.join(f'{m:g}' for m in self.mean)}|{','.join(f'{s:g}' for s in self.std)}")
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def apply(self, chips: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """``N x H x W x 3`` uint8 RGB -> the model's tensor."""
        x = chips.astype(np.float32)
        if self.color_order == "BGR":
            x = x[..., ::-1]
            mean, std = self.mean[::-1], self.std[::-1]
        else:
            mean, std = self.mean, self.std
        x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=dtype)


PRESETS: dict[str, OnnxPreprocessing] = {
    # InsightFace ArcFace (w600k_r50, glint360k_r100...): 112x112, RGB, (x-127.5)/127.5.
    "arcface": OnnxPreprocessing(112, "NCHW", (127.5,) * 3, (127.5,) * 3, "RGB"),
    # facenet-pytorch InceptionResnetV1: 160x160, fixed_image_standardization (x-127.5)/128.
    "facenet": OnnxPreprocessing(160, "NCHW", (127.5,) * 3, (128.0,) * 3, "RGB"),
}


def _triple(name: str, value: Any) -> tuple[float, float, float]:
    if isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        parts = [p for p in str(value).replace(";", ",").split(",") if p.strip()]
    numbers = [option_float(name, p) for p in parts]
    if len(numbers) == 1:
        numbers *= 3
    if len(numbers) != 3:
        raise InputError(f"target option {name}={value!r}: give one number or three (R,G,B), "
                         f"comma-separated.")
    return (numbers[0], numbers[1], numbers[2])


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise TargetError(f"the onnx target needs onnxruntime ({exc}). {_INSTALL_HINT}") from exc
    return onnxruntime


class OnnxTarget(Target):
    """A face embedding model in an ONNX file, run by onnxruntime on aligned chips."""

    name: ClassVar[str] = "onnx"
    input_kind = "aligned"
    parallel_safe: ClassVar[bool] = False
    METRIC: ClassVar[str] = DEFAULT_METRIC
    DEFAULT_THRESHOLD: ClassVar[float] = DEFAULT_COSINE_THRESHOLD
    OPTIONS: ClassVar[dict[str, str]] = {
        "preset": f"one of {tuple(PRESETS)}: input size, layout, normalisation, colour order",
        "input_size": "chip side in pixels (default: the preset's, else the model's input shape)",
        "layout": "NCHW or NHWC (default: the preset's, else read from the model)",
        "mean": "subtracted per channel, in 0-255 units: one number or R,G,B (default 127.5)",
        "std": "divides per channel, in 0-255 units: one number or R,G,B (default 127.5)",
        "scale": "multiply pixels by this instead of mean/std (e.g. 0.00392156862745098 for x/255)",
        "color_order": "RGB or BGR: the channel order the model expects (default RGB)",
        "metric": "cosine (default) or euclidean",
        "threshold": "same-person distance; SET YOUR MODEL'S (placeholder default: cosine 0.6; "
                     "required for euclidean)",
        "l2_normalize": "true to L2-normalise the vectors (default false)",
        "output": "output name when the model has several (default: the first)",
        "batch_size": f"chips per run (default {DEFAULT_BATCH_SIZE})",
        "providers": "onnxruntime execution providers, comma-separated (default CPUExecutionProvider)",
    }

    def __init__(self, *, path: str, preset: str | None = None, input_size: Any = None,
                 layout: str | None = None, mean: Any = None, std: Any = None, scale: Any = None,
                 color_order: str | None = None, metric: str = DEFAULT_METRIC,
                 threshold: Any = None, l2_normalize: Any = False, output: str | None = None,
                 batch_size: Any = DEFAULT_BATCH_SIZE, providers: Any = None) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise InputError(f"onnx model file {str(self.path)!r} does not exist; give "
                             f"--target onnx:PATH with the path of a .onnx file.")
        ort = _import_onnxruntime()
        self.metric_name: str = option_choice("metric", metric, METRICS)
        if threshold is None or threshold == "":
            if self.metric_name == "euclidean":
                raise InputError("target option threshold= is required with metric=euclidean: "
                                 "euclidean distances depend on the model's vector scale. Set "
                                 "your model's same-person distance, e.g. threshold=1.1.")
            log.warning("onnx target: no threshold given; using the placeholder cosine distance "
                        "%.2f. Set your model's own with --target-option threshold=...",
                        DEFAULT_COSINE_THRESHOLD)
            self._threshold = DEFAULT_COSINE_THRESHOLD
            self.threshold_source = "placeholder default"
        else:
            self._threshold = option_float("threshold", threshold, positive=True)
            self.threshold_source = "user"
        self.l2_normalize = option_bool("l2_normalize", l2_normalize)
        self.batch_size = option_int("batch_size", batch_size, minimum=1)
        if isinstance(providers, str):
            providers = [p.strip() for p in providers.split(",") if p.strip()]
        self.providers = tuple(providers or DEFAULT_PROVIDERS)
        try:
            self._session = ort.InferenceSession(str(self.path), providers=list(self.providers))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise TargetError(f"onnxruntime cannot load {str(self.path)!r}: {exc}") from exc
        model_input = self._session.get_inputs()[0]
        self.input_name = model_input.name
        self._input_dtype = {"tensor(float)": np.float32,
                             "tensor(float16)": np.float16}.get(model_input.type)
        if self._input_dtype is None:
            raise TargetError(f"the model's input {model_input.name!r} is {model_input.type}; the "
                              f"onnx target feeds float or float16 tensors.")
        self.preprocessing = self._resolve_preprocessing(
            list(model_input.shape), preset=preset, input_size=input_size, layout=layout,
            mean=mean, std=std, scale=scale, color_order=color_order)
        self.chip_size = self.preprocessing.input_size
        outputs = [o.name for o in self._session.get_outputs()]
        if output is not None and output not in outputs:
            raise InputError(f"target option output={output!r}: the model's outputs are {outputs}.")
        self.output_name = output or outputs[0]
        batch_dim = model_input.shape[0] if model_input.shape else None
        self._fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        self._dimension = self._find_dimension()
        self._sha256 = file_sha256(str(self.path.resolve()))

    # -- set-up ----------------------------------------------------------------------
    @staticmethod
    def _resolve_preprocessing(shape: list, *, preset, input_size, layout, mean, std, scale,
                               color_order) -> OnnxPreprocessing:
        if len(shape) != 4:
            raise TargetError(f"the model's input has shape {shape}; the onnx target needs a "
                              f"4-D image batch (NCHW or NHWC).")
        if preset is not None:
            name = option_choice("preset", preset, tuple(PRESETS))
            base = PRESETS[name]
        else:
            base = None
        model_layout = ("NCHW" if shape[1] == 3 else "NHWC" if shape[3] == 3 else None)
        if layout is not None:
            layout = option_choice("layout", layout, LAYOUTS)
        else:
            layout = base.layout if base else (model_layout or "NCHW")
        if model_layout is not None and layout != model_layout:
            raise TargetError(f"layout={layout!r}, but the model's input shape {shape} is "
                              f"{model_layout}; pass --target-option layout={model_layout}.")
        spatial = shape[2:4] if layout == "NCHW" else shape[1:3]
        static = [d for d in spatial if isinstance(d, int) and d > 0]
        if input_size is not None:
            size = option_int("input_size", input_size, minimum=8, maximum=1024)
        elif base is not None:
            size = base.input_size
        elif static:
            size = static[0]
        else:
            raise InputError("the model's input size is dynamic: pass --target-option "
                             "input_size=N (e.g. 112) or preset=arcface.")
        if any(d != size for d in static):
            raise TargetError(f"input_size={size}, but the model's input shape {shape} wants "
                              f"{static[0]}x{static[-1]}; pass --target-option input_size={static[0]}.")
        if scale is not None and (mean is not None or std is not None):
            raise InputError("give either scale= or mean=/std=, not both: scale=s means mean=0, "
                             "std=1/s.")
        if scale is not None:
            factor = option_float("scale", scale, positive=True)
            mean_t, std_t = (0.0,) * 3, (1.0 / factor,) * 3
        else:
            default = base or OnnxPreprocessing(size)
            if base is None and mean is None and std is None:
                log.info("onnx target: no preset and no mean/std; using (x - 127.5) / 127.5")
            mean_t = _triple("mean", mean) if mean is not None else default.mean
            std_t = _triple("std", std) if std is not None else default.std
        order = (option_choice("color_order", color_order, COLOR_ORDERS) if color_order is not None
                 else base.color_order if base else "RGB")
        return OnnxPreprocessing(size, layout, mean_t, std_t, order)  # type: ignore[arg-type]

    def _find_dimension(self) -> int:
        for out in self._session.get_outputs():
            if out.name != self.output_name:
                continue
            tail = list(out.shape[1:])
            if tail and all(isinstance(d, int) and d > 0 for d in tail):
                return int(np.prod(tail))
        probe = np.zeros((self._fixed_batch or 1, self.chip_size, self.chip_size, 3), dtype=np.uint8)
        return int(self._run(probe).shape[1])

    # -- pickling: the session is rebuilt, not copied ---------------------------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_session"] = None
        return state

    def _sessionobj(self):
        if self._session is None:
            ort = _import_onnxruntime()
            self._session = ort.InferenceSession(str(self.path), providers=list(self.providers))
        return self._session

    def __repr__(self) -> str:
        return (f"OnnxTarget(path={str(self.path)!r}, preprocessing={self.preprocessing!r}, "
                f"metric={self.metric_name!r}, threshold={self._threshold!r})")

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False, f"onnxruntime is not installed. {_INSTALL_HINT}"
        return True, ""

    # -- the Target interface ----------------------------------------------------------
    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def metric(self) -> Metric:
        return self.metric_name  # type: ignore[return-value]

    @property
    def default_threshold(self) -> float:
        return self._threshold

    def fingerprint(self) -> str:
        tag = f"onnx:sha256:{self._sha256}:prep:{self.preprocessing.key()}"
        if self.l2_normalize:
            tag += ":l2"
        if self.output_name != self._session_outputs()[0]:
            tag += f":out:{self.output_name}"
        return tag

    def _session_outputs(self) -> list[str]:
        return [o.name for o in self._sessionobj().get_outputs()]

    def details(self) -> dict:
        p = self.preprocessing
        return {"model_file": self.path.name, "model_sha256": self._sha256,
                "input_size": p.input_size, "layout": p.layout, "mean": list(p.mean),
                "std": list(p.std), "color_order": p.color_order, "output": self.output_name,
                "l2_normalize": self.l2_normalize, "threshold_source": self.threshold_source,
                "providers": list(self.providers)}

    def _run(self, chips: np.ndarray) -> np.ndarray:
        tensor = self.preprocessing.apply(chips, self._input_dtype)
        (out,) = self._sessionobj().run([self.output_name], {self.input_name: tensor})
        return np.asarray(out, dtype=np.float32).reshape(len(chips), -1)

    def embed(self, images: Sequence[np.ndarray]) -> list[EmbedOutcome]:
        """Embed aligned ``chip_size`` x ``chip_size`` RGB uint8 chips."""
        size = self.chip_size
        for i, chip in enumerate(images):
            if chip.shape != (size, size, 3):
                raise ValueError(f"image {i} has shape {chip.shape}; this onnx target takes "
                                 f"aligned {size}x{size}x3 chips (input_size={size}).")
        if len(images) == 0:
            return []
        chips = np.stack([np.asarray(c, dtype=np.uint8) for c in images])
        step = self._fixed_batch or self.batch_size
        parts = []
        for start in range(0, len(chips), step):
            part = chips[start:start + step]
            if self._fixed_batch and len(part) < self._fixed_batch:   # a model with a fixed batch
                pad = np.zeros((self._fixed_batch - len(part),) + part.shape[1:], np.uint8)
                parts.append(self._run(np.concatenate([part, pad]))[:len(part)])
            else:
                parts.append(self._run(part))
        vectors = np.concatenate(parts)
        if self.l2_normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms == 0, 1.0, norms)
        outcomes = []
        for vector in vectors:
            if np.all(np.isfinite(vector)):
                outcomes.append(EmbedOutcome.ok(vector))
            else:
                outcomes.append(EmbedOutcome.error("the model returned a non-finite vector"))
        return outcomes


__all__ = ["OnnxTarget", "OnnxPreprocessing", "PRESETS", "DEFAULT_COSINE_THRESHOLD"]
