"""One image's way through the embed stage, shared by the local pool and the Dask workers.

Kept apart from :mod:`audit.embedding` (the stage) and :mod:`audit.distributed`
(the cluster) so that neither has to import the other's internals.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from audit.targets.base import STATUS_OK, EmbedOutcome


def default_workers() -> int:
    """Worker processes when none are asked for: one per core (detection is CPU-bound)."""
    return max(1, os.cpu_count() or 1)


@dataclass
class ItemResult:
    """What became of one image: its status and reason, aligned chips by size, and its vector.

    ``image`` holds the decoded picture only while a target that takes whole
    images still has to embed it.
    """

    index: int
    content_hash: str
    status: str
    n_faces: int
    reason: str
    chips: dict[int, np.ndarray]
    vector: np.ndarray | None = None
    image: np.ndarray | None = None


def apply_outcome(result: ItemResult, outcome: EmbedOutcome) -> None:
    """Record the target's answer; the target's own no-face or error replaces the aligner's ok."""
    result.vector = outcome.vector
    if outcome.status != STATUS_OK:
        result.status, result.reason, result.n_faces = outcome.status, outcome.reason, outcome.n_faces
    elif outcome.n_faces != 1 and result.n_faces == 1:
        result.n_faces = outcome.n_faces
