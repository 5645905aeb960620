"""The target interface: the face model under audit, seen as a black box.

A target turns face images into vectors.  The probes need nothing else
from it: a name, the vectors' dimension, how to compare two vectors, the
threshold at which the model calls two faces the same person, and a
fingerprint that changes whenever the model does (the embedding cache is
keyed by it, so a new model version never reuses an old vector).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Sequence

import numpy as np

from audit.distances import Metric  # noqa: F401 - the targets' metric type lives with the distances

InputKind = Literal["aligned", "image", "precomputed"]

#: Status of one image after embedding.  ``ok`` images carry a vector;
#: the others carry a reason and are counted per group, never dropped.
STATUS_OK = "ok"
STATUS_NO_FACE = "no_face"
STATUS_ERROR = "error"
STATUSES = (STATUS_OK, STATUS_NO_FACE, STATUS_ERROR)


@dataclass(frozen=True)
class EmbedOutcome:
    """What the target said about one image.

    ``n_faces`` is how many faces were found (``ok`` with ``n_faces > 1``
    means one was chosen by the target's documented rule).
    """

    status: str
    vector: np.ndarray | None = None
    n_faces: int = 1
    reason: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r}, must be one of {STATUSES}.")
        if (self.status == STATUS_OK) != (self.vector is not None):
            raise ValueError("an 'ok' outcome needs a vector and only an 'ok' outcome may have one.")

    @classmethod
    def ok(cls, vector: np.ndarray, n_faces: int = 1) -> "EmbedOutcome":
        return cls(STATUS_OK, np.asarray(vector, dtype=np.float32).ravel(), n_faces=n_faces)

    @classmethod
    def no_face(cls, reason: str = "no face found") -> "EmbedOutcome":
        return cls(STATUS_NO_FACE, None, n_faces=0, reason=reason)

    @classmethod
    def error(cls, reason: str) -> "EmbedOutcome":
        return cls(STATUS_ERROR, None, n_faces=0, reason=reason)


@dataclass(frozen=True)
class TargetInfo:
    """The figures of a target that results.json and the report record."""

    name: str
    dimension: int
    metric: Metric
    default_threshold: float
    fingerprint: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "dimension": self.dimension, "metric": self.metric,
                "default_threshold": self.default_threshold, "fingerprint": self.fingerprint,
                "details": dict(self.details)}


class Target(ABC):
    """A face embedding model under audit.

    ``input_kind`` says what :meth:`embed` receives:

    * ``"aligned"``: RGB uint8 chips of ``chip_size`` x ``chip_size``,
      aligned by :mod:`audit.faces` (detection failures are then recorded
      by the faces layer before the target is called);
    * ``"image"``: whole decoded RGB uint8 images; the target finds the
      face itself (cloud APIs) and reports ``no_face`` where it finds none;
    * ``"precomputed"``: vectors exported by another system, looked up by
      image id (``lookup``); new images (reconstructions) are embedded only
      through an optional ``reembed_target``.
    """

    name: ClassVar[str]
    input_kind: ClassVar[InputKind] = "aligned"
    chip_size: int = 150
    #: Whether the embed stage may run this target in several processes.
    parallel_safe: ClassVar[bool] = False

    @property
    @abstractmethod
    def dimension(self) -> int: ...

    @property
    @abstractmethod
    def metric(self) -> Metric: ...

    @property
    @abstractmethod
    def default_threshold(self) -> float: ...

    @abstractmethod
    def fingerprint(self) -> str:
        """A string that changes whenever the model's outputs may change."""

    @abstractmethod
    def embed(self, images: Sequence[np.ndarray]) -> list[EmbedOutcome]:
        """Embed a batch of RGB uint8 images, one outcome per image, in order."""

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """Whether this target can run here, and if not, why (for ``audit targets``)."""
        return True, ""

    def details(self) -> dict:
        """Extra facts for results.json (model file, API model id, engine...)."""
        return {}

    def info(self) -> TargetInfo:
        return TargetInfo(self.name, self.dimension, self.metric, float(self.default_threshold),
                          self.fingerprint(), self.details())

    def close(self) -> None:
        """Release connections or worker processes."""

    # -- optional hooks: each has a default that says "not supported" ----------------
    @property
    def preferred_batch(self) -> int:
        """Images per :meth:`embed` call that keep the target busy (a cloud API's batch x concurrency)."""
        return 1

    def lookup(self, image_ids: Sequence[str]) -> list[EmbedOutcome]:
        """Vectors by image id, for ``input_kind == "precomputed"`` targets; others never look up."""
        raise NotImplementedError(f"target {self.name!r} embeds images; it has no vectors to look up by id")

    @property
    def reembed_target(self) -> "Target | None":
        """The model that embeds new images (reconstructions) for a precomputed target; None elsewhere."""
        return None

    def differentiable_model(self):
        """The network as a differentiable PyTorch module, for white-box probes; None for a black box.

        Returning None (the default) is how a target says that gradient-based
        options such as ``--identity-loss`` cannot use it.
        """
        return None
