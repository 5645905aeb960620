"""Distances between embeddings, in the metric the target uses."""

from __future__ import annotations

from typing import Literal

import numpy as np

#: How a target compares two embeddings; smaller always means more alike.
Metric = Literal["euclidean", "cosine"]
METRICS = ("euclidean", "cosine")


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}, must be one of {METRICS}.")
    return metric


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm == 0, 1.0, norm)


def paired_distances(a: np.ndarray, b: np.ndarray, metric: Metric) -> np.ndarray:
    """Distance between ``a[i]`` and ``b[i]`` for every row ``i``.

    Cosine distance is ``1 - cos``, in [0, 2], so that for both metrics a
    smaller number means "more alike" and a threshold is an upper bound.
    """
    check_metric(metric)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}.")
    if metric == "euclidean":
        return np.linalg.norm(a - b, axis=-1)
    return 1.0 - np.sum(_unit(a) * _unit(b), axis=-1)


def cross_distances(a: np.ndarray, b: np.ndarray, metric: Metric) -> np.ndarray:
    """The ``len(a) x len(b)`` matrix of distances."""
    check_metric(metric)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if metric == "euclidean":
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return np.sqrt(np.maximum(sq, 0.0))
    return 1.0 - _unit(a) @ _unit(b).T
