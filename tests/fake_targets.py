"""Small deterministic stand-ins for a face model, for tests that need a target but no real one."""

from __future__ import annotations

import numpy as np

from audit.targets.base import EmbedOutcome, Target

DIM = 8


class ProjectionTarget(Target):
    """A fixed random projection of the 8x8 downsampled chip: a deterministic stand-in model."""

    name = "projection"
    chip_size = 64

    def __init__(self, seed: int = 1) -> None:
        self.w = np.random.default_rng(seed).normal(size=(8 * 8 * 3, DIM)) / 8.0
        self.seed = seed

    dimension = property(lambda self: DIM)
    metric = property(lambda self: "euclidean")
    default_threshold = property(lambda self: 0.6)

    def fingerprint(self) -> str:
        return f"projection-{self.seed}"

    def vectors(self, images: np.ndarray) -> np.ndarray:
        small = np.asarray(images).reshape(len(images), 8, 8, 8, 8, 3).mean(axis=(2, 4)) / 255.0
        return (small.reshape(len(images), -1) @ self.w).astype(np.float32)

    def embed(self, images):
        return [EmbedOutcome.ok(v) for v in self.vectors(np.stack(images))]

    def embed_fn(self, images):
        return self.vectors(images), np.ones(len(images), bool)
