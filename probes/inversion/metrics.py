"""Reconstruction metrics: pure functions on arrays of distances and embeddings.

Vocabulary (the method's):

* **genuine** distance: a reconstruction's embedding against the real
  embedding it was generated from (type I);
* **type II** distance: a reconstruction against a *different* photo of the
  same person: does the face look like the person, not only like the photo;
* **random-pair** distance: a reconstruction against the real embedding of
  *another* person, drawn within the same group or across groups.  If
  reconstructions carry identity, genuine distances are well below
  random-pair ones; if they were only "an average face of the group",
  within-group random pairs would be as close as genuine ones.

A reconstruction is *matched* at threshold ``t`` when the target found a
face in it and its distance is ``<= t`` (thresholds are upper bounds for
both metrics, see :mod:`audit.distances`).  A reconstruction with no face
counts as a failure, never as missing: dropping it would flatter the
groups whose reconstructions the target cannot even detect.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from audit.distances import cross_distances, paired_distances
from audit.targets.base import Metric
from probes.pairs import threshold_at_fmr  # noqa: F401  (one definition, match rule d <= t)

DEFAULT_FMR = 1e-3


def _as_1d(name: str, values: object, dtype: type = np.float64) -> np.ndarray:
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} has shape {arr.shape}; expected a 1-D array.")
    return arr


def _matched(distances: np.ndarray, ok: np.ndarray, threshold: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return ok & np.isfinite(distances) & (distances <= threshold)


def _check_pair(distances: object, ok: object) -> tuple[np.ndarray, np.ndarray]:
    d = _as_1d("distances", distances)
    k = _as_1d("ok", ok, dtype=bool)
    if d.shape != k.shape:
        raise ValueError(f"distances has {len(d)} entries and ok {len(k)}; pass one ok flag per distance.")
    return d, k


def success_rate(distances: object, ok: object, threshold: float) -> float:
    """Share of reconstructions matched at ``threshold``; no-face ones are failures.

    NaN for no reconstructions at all (0 / 0), never a crash.
    """
    d, k = _check_pair(distances, ok)
    if len(d) == 0 or not np.isfinite(threshold):
        return float("nan")
    return float(_matched(d, k, float(threshold)).mean())


def threshold_sweep(distances: object, ok: object, thresholds: Sequence[float]) -> np.ndarray:
    """:func:`success_rate` at every threshold (one float per threshold)."""
    d, k = _check_pair(distances, ok)
    t = _as_1d("thresholds", thresholds)
    if len(d) == 0:
        return np.full(len(t), np.nan)
    with np.errstate(invalid="ignore"):
        matched = k[None, :] & np.isfinite(d)[None, :] & (d[None, :] <= t[:, None])
    return matched.mean(axis=1)


def crossing_threshold(genuine: object, impostor: object) -> float:
    """Where the genuine and random-pair distance distributions cross.

    Defined as the threshold minimising ``FNMR(t) + FMR(t)``, with
    ``FNMR(t)`` the share of genuine distances ``> t`` and ``FMR(t)`` the
    share of impostor (random-pair) distances ``<= t``.  The sum's
    derivative is ``f_impostor(t) - f_genuine(t)``, so its minimum is where
    the two densities cross: the method's choice, made exact on samples.
    The sum is a step function; the first (lowest) interval on which it is
    smallest is ``[a, b)`` with ``a`` and ``b`` consecutive observed
    distances, and the midpoint ``(a + b) / 2`` is returned (halfway in the
    gap between separated distributions).  NaN and infinite distances
    (no-face reconstructions) are dropped; NaN if either set is then empty.
    """
    g = _as_1d("genuine", genuine)
    i = _as_1d("impostor", impostor)
    g, i = np.sort(g[np.isfinite(g)]), np.sort(i[np.isfinite(i)])
    if len(g) == 0 or len(i) == 0:
        return float("nan")
    candidates = np.unique(np.concatenate([g, i]))
    fnmr = 1.0 - np.searchsorted(g, candidates, side="right") / len(g)
    fmr = np.searchsorted(i, candidates, side="right") / len(i)
    total = fnmr + fmr
    best = int(np.argmin(total))
    low = candidates[best]
    high = candidates[best + 1] if best + 1 < len(candidates) else low
    return float((low + high) / 2.0)


def crossfit_crossing_thresholds(genuine: object, impostor: object, *, n_folds: int = 2,
                                 seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """The crossing threshold for each sample, fitted on the *other* samples (cross-fitting).

    Fitting :func:`crossing_threshold` on the same reconstructions it then
    scores flatters them (the minimum of FNMR + FMR is chosen where these
    very samples do best: about +3 points of success at 60 people).  So the
    samples (one per test person) are split at random into ``n_folds``
    folds; each fold is scored at the threshold fitted on the others.
    ``genuine[i]`` and ``impostor[i]`` belong to sample ``i`` (its own
    distance and its random-pair distance).  Returns each sample's
    threshold (NaN where its complement has no finite distances) and the
    folds' thresholds.
    """
    g = _as_1d("genuine", genuine)
    i = _as_1d("impostor", impostor)
    if g.shape != i.shape:
        raise ValueError(f"genuine has {len(g)} entries and impostor {len(i)}; pass one of each per sample.")
    if n_folds < 2:
        raise ValueError(f"n_folds={n_folds!r}, must be at least 2.")
    rng = np.random.default_rng(seed)
    folds = rng.permutation(len(g)) % n_folds
    per_sample = np.full(len(g), np.nan)
    fitted = []
    for k in range(n_folds):
        rest = folds != k
        t = crossing_threshold(g[rest], i[rest])
        fitted.append(t)
        per_sample[folds == k] = t
    return per_sample, fitted


def false_match_rate(impostor_distances: object, threshold: float) -> float:
    """Share of impostor distances ``<= threshold`` (NaN for none)."""
    d = _as_1d("impostor_distances", impostor_distances)
    d = d[np.isfinite(d)]
    return float((d <= threshold).mean()) if len(d) else float("nan")


def random_pair_distances(recon_embeddings: np.ndarray, real_embeddings: np.ndarray,
                          persons: Sequence[object], groups: Sequence[object], *, within_group: bool,
                          metric: Metric, n_pairs: int = 1, seed: int = 0) -> np.ndarray:
    """Distances from each reconstruction to the real embeddings of *other* people.

    ``recon_embeddings[i]`` is the reconstruction of ``real_embeddings[i]``,
    whose person is ``persons[i]`` and group ``groups[i]``.  For every
    ``i``, ``n_pairs`` partners ``j`` are drawn uniformly with replacement
    among the rows with ``persons[j] != persons[i]`` and
    ``groups[j] == groups[i]`` (``within_group=True``) or
    ``groups[j] != groups[i]`` (``False``); pass one group for all rows to
    draw among every other person.  Returns an ``(N, n_pairs)`` array, NaN
    where reconstruction ``i`` is NaN (no face) or has no eligible partner.
    """
    recon = np.asarray(recon_embeddings, dtype=np.float64)
    real = np.asarray(real_embeddings, dtype=np.float64)
    persons = np.asarray(persons, dtype=object).astype(str)
    groups = np.asarray(groups, dtype=object).astype(str)
    if recon.shape != real.shape or recon.ndim != 2:
        raise ValueError(f"recon_embeddings {recon.shape} and real_embeddings {real.shape} must be the "
                         "same (N, d) shape: row i is the reconstruction of real row i.")
    if len(persons) != len(recon) or len(groups) != len(recon):
        raise ValueError(f"persons ({len(persons)}) and groups ({len(groups)}) need one entry per "
                         f"embedding ({len(recon)}).")
    if not isinstance(n_pairs, int) or n_pairs < 1:
        raise ValueError(f"n_pairs={n_pairs!r}, must be a positive integer.")
    # Integer codes: comparing ints is much faster than comparing strings, N times over.
    persons = np.unique(persons, return_inverse=True)[1]
    groups = np.unique(groups, return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    n = len(recon)
    out = np.full((n, n_pairs), np.nan)
    partners = np.full((n, n_pairs), -1, dtype=np.int64)
    for i in range(n):
        same_group = groups == groups[i]
        eligible = (persons != persons[i]) & (same_group if within_group else ~same_group)
        candidates = np.flatnonzero(eligible)
        if len(candidates):
            partners[i] = candidates[rng.integers(0, len(candidates), size=n_pairs)]
    have = partners[:, 0] >= 0
    for p in range(n_pairs):
        rows = np.flatnonzero(have)
        out[rows, p] = paired_distances(recon[rows], real[partners[rows, p]], metric)
    return out


def type2_distances(recon_embeddings: np.ndarray, persons: Sequence[object], other_embeddings: np.ndarray,
                    other_persons: Sequence[object], *, metric: Metric) -> np.ndarray:
    """Type II: each reconstruction against *different* photos of the same person.

    ``other_embeddings`` are real embeddings of other photos (the
    ``test_extra`` rows of the split, never the reconstruction's source).
    Returns, per reconstruction, the mean distance to its person's other
    photos; NaN where the person has none or the reconstruction is NaN.
    """
    recon = np.asarray(recon_embeddings, dtype=np.float64)
    other = np.asarray(other_embeddings, dtype=np.float64)
    persons = np.asarray(persons, dtype=object).astype(str)
    other_persons = np.asarray(other_persons, dtype=object).astype(str)
    if len(persons) != len(recon) or len(other_persons) != len(other):
        raise ValueError("persons and other_persons need one entry per embedding.")
    out = np.full(len(recon), np.nan)
    if len(other) == 0:
        return out
    by_person: dict[str, list[int]] = {}
    for j, p in enumerate(other_persons):
        by_person.setdefault(p, []).append(j)
    for i, p in enumerate(persons):
        rows = by_person.get(p)
        if rows and np.all(np.isfinite(recon[i])):
            out[i] = float(cross_distances(recon[i:i + 1], other[rows], metric).mean())
    return out


def reconstruction_distances(real: np.ndarray, vectors: np.ndarray, found: np.ndarray,
                             metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(distance, has_vector, found)`` for reconstructions embedded by the target.

    A distance wherever the target returned a vector (an aligned-chip target
    embeds every reconstruction, which is an aligned chip already; a
    whole-image target returns NaN where it finds no face).  ``found`` is
    the target's face detection on the reconstruction, and only counts
    where there is a vector: a success needs both (see
    ``audit.embedding.Embedder.embed_arrays``).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    has_vector = np.all(np.isfinite(vectors), axis=1)
    found = np.asarray(found, dtype=bool) & has_vector
    distance = np.full(len(vectors), np.nan)
    if has_vector.any():
        distance[has_vector] = paired_distances(np.asarray(real, dtype=np.float64)[has_vector],
                                                vectors[has_vector], metric)
    return distance, has_vector, found
