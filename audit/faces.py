"""Finding, landmarking and aligning faces with dlib.

Every probe works on aligned chips: dlib's descriptor wants 150x150 chips
aligned on five landmarks, the generator learns 64x64 (or 128x128) chips
aligned the same way.  Detection failure is itself a bias measure, so an
image where no face is found is an outcome with a reason, never dropped.

Rules, documented once here:

* HOG detection (the default) with ``upsample`` pyramid steps; detections
  scoring below ``min_score`` are discarded (HOG finds false faces with
  low scores, e.g. a 0.12 one on scikit-image's astronaut).  The mmod CNN
  detector is an option (slower, more robust to pose).
* Images smaller than ``min_side`` pixels are scaled up before detection:
  HOG cannot see faces under 80 px, and reconstructions are 64x64.
* Several faces: the largest box is kept (ties: the higher score), and
  ``n_faces`` records how many were found.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from audit.errors import InputError
from audit.models import LANDMARKS_5_MODEL, MMOD_DETECTOR_MODEL, model_path

DetectorKind = Literal["hog", "cnn"]

DEFAULT_DETECTOR: DetectorKind = "hog"
DEFAULT_UPSAMPLE = 0         # pre-cropped faces are large; upsample 1 finds false faces
DEFAULT_MIN_SCORE = 0.0
DEFAULT_PADDING = 0.25          # dlib's default for get_face_chip and its descriptor
DEFAULT_MIN_SIDE = 150
DESCRIPTOR_CHIP_SIZE = 150      # what dlib's ResNet was trained on


@dataclass(frozen=True)
class FaceConfig:
    """How faces are found and aligned.  Part of every cache key."""

    detector: DetectorKind = DEFAULT_DETECTOR
    upsample: int = DEFAULT_UPSAMPLE
    min_score: float = DEFAULT_MIN_SCORE
    padding: float = DEFAULT_PADDING
    min_side: int = DEFAULT_MIN_SIDE

    def __post_init__(self) -> None:
        if self.detector not in ("hog", "cnn"):
            raise InputError(f"detector={self.detector!r}, must be 'hog' or 'cnn'.")
        if not 0 <= self.upsample <= 3:
            raise InputError(f"upsample={self.upsample!r}, must be between 0 and 3 "
                             "(each step doubles the image and quadruples the time).")
        if not 0.0 <= self.padding <= 1.0:
            raise InputError(f"padding={self.padding!r}, must be in [0, 1].")
        if self.min_side < 0:
            raise InputError(f"min_side={self.min_side!r}, must be >= 0.")

    def key(self) -> str:
        """A short stable string for cache keys."""
        text = json.dumps(asdict(self), sort_keys=True)
        return f"faces-v1:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


@dataclass
class AlignedFace:
    """One image after detection: its status, and chips when a face was found."""

    status: str                       # "ok" or "no_face"
    n_faces: int
    chips: dict[int, np.ndarray] = field(default_factory=dict)
    score: float | None = None
    box: tuple[int, int, int, int] | None = None   # left, top, right, bottom in the input image
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _upscale(image: np.ndarray, min_side: int) -> tuple[np.ndarray, float]:
    side = min(image.shape[:2])
    if min_side <= 0 or side >= min_side:
        return image, 1.0
    from PIL import Image

    factor = min_side / side
    size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC)), factor


class FaceAligner:
    """Detects faces and cuts aligned chips.  One per process: dlib models are not shared."""

    def __init__(self, config: FaceConfig = FaceConfig()) -> None:
        import dlib

        self.config = config
        self._dlib = dlib
        if config.detector == "hog":
            self._detector = dlib.get_frontal_face_detector()
        else:
            self._detector = dlib.cnn_face_detection_model_v1(str(model_path(MMOD_DETECTOR_MODEL)))
        self._landmarks = dlib.shape_predictor(str(model_path(LANDMARKS_5_MODEL)))

    def __getstate__(self) -> dict:
        return {"config": self.config}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"])

    def _detect(self, image: np.ndarray) -> list[tuple[object, float]]:
        if self.config.detector == "hog":
            rects, scores, _ = self._detector.run(image, self.config.upsample, self.config.min_score)
            return list(zip(rects, scores))
        return [(d.rect, d.confidence) for d in self._detector(image, self.config.upsample)
                if d.confidence >= self.config.min_score]

    def align(self, image: np.ndarray, sizes: tuple[int, ...] = (DESCRIPTOR_CHIP_SIZE,)) -> AlignedFace:
        """Find the face of ``image`` (H x W x 3 uint8 RGB) and cut one chip per size."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 RGB image, got shape {image.shape}.")
        work, factor = _upscale(image, self.config.min_side)
        detections = self._detect(work)
        if not detections:
            return AlignedFace("no_face", 0, reason="no face found")
        rect, score = max(detections, key=lambda d: (d[0].area(), d[1]))
        shape = self._landmarks(work, rect)
        chips = {size: np.asarray(self._dlib.get_face_chip(work, shape, size=size,
                                                          padding=self.config.padding))
                 for size in sizes}
        box = tuple(int(round(v / factor)) for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
        return AlignedFace("ok", len(detections), chips=chips, score=float(score), box=box)
