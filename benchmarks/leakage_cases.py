"""Simulated groups for the coverage of the identity-leakage intervals (``probes.inversion.leakage``).

Each simulated person has an identity ``z`` in a 16-dimensional space
(spread ``spread`` around the group's centre), one real embedding
``x = z + image noise`` and one reconstruction ``r = centre + leak * (z -
centre) + generator noise``: ``leak`` is how much identity the generator
recovers, ``spread`` how crowded the group is.  The truths are population
figures, computed once per setting from 4,000 simulated people against
8,000 others: success at the group's own FMR ``f`` (the share of genuine
distances at or below the ``f``-quantile of the impostor distances), rank 1
in a gallery of ``G`` (the mean over reconstructions of ``(1 - F_i(g_i))^(G
- 1)``, ``F_i`` the reconstruction's impostor distribution) and the AUC.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from probes.inversion.leakage import gallery_size_for, group_leakage
from probes.stats import GroupedFigures, figure_from_estimate

DIM = 16
IMAGE_NOISE = 0.5
GENERATOR_NOISE = 0.9
#: Bootstrap draws per interval in the benchmark (the audit draws 1,000).
N_RESAMPLES = 200


@dataclass(frozen=True)
class Setting:
    leak: float = 0.6
    spread: float = 1.0


def simulate(rng: np.random.Generator, n: int, setting: Setting) -> tuple[np.ndarray, np.ndarray]:
    """Real embeddings and reconstructions of ``n`` people of one group."""
    centre = np.zeros(DIM)
    z = centre + setting.spread * rng.standard_normal((n, DIM))
    real = z + IMAGE_NOISE * setting.spread * rng.standard_normal((n, DIM))
    recon = centre + setting.leak * (z - centre) + GENERATOR_NOISE * setting.spread * rng.standard_normal((n, DIM))
    return real, recon


@lru_cache(maxsize=None)
def truths(setting: Setting, gallery: int) -> dict[str, float]:
    rng = np.random.default_rng(12345)
    real, recon = simulate(rng, 4_000, setting)
    others, _ = simulate(rng, 8_000, setting)
    genuine = np.linalg.norm(recon - real, axis=1)
    d = np.sqrt(np.maximum((recon ** 2).sum(1)[:, None] + (others ** 2).sum(1)[None, :]
                           - 2 * recon @ others.T, 0))
    out = {}
    for f in (1e-1, 1e-2, 1e-3):
        t = np.quantile(d, f)
        out[f"sar_at_own_fmr_{f:.0e}".replace("e-0", "e-")] = float(np.mean(genuine <= t))
    p = (d <= genuine[:, None]).mean(1)
    out["rank1_equal_gallery"] = float(np.mean((1 - p) ** (gallery - 1)))
    out["leakage_auc"] = float(np.mean(d > genuine[:, None]))
    return out


def leakage_case(metric: str, setting: Setting = Setting()) -> Callable:
    """One figure's interval against its truth, for a group of ``n`` people."""

    def run(rng: np.random.Generator, n: int, seed: int) -> tuple[float, float, float]:
        real, recon = simulate(rng, n, setting)
        gallery = gallery_size_for([n])
        result = group_leakage([recon], [np.ones(n, dtype=bool)], real, np.arange(n), metric="euclidean",
                               gallery_size=gallery, n_resamples=N_RESAMPLES, seed=seed)
        if metric in result.not_estimable or metric not in result.estimates:
            return truths(setting, gallery)[metric], float("nan"), float("nan")
        low, high = result.estimates[metric].interval(0.95)
        return truths(setting, gallery)[metric], low, high

    return run


def leakage_gap_case(metric: str, first: Setting, second: Setting) -> Callable:
    """The gap between two groups' figures (interval of the difference against the true difference)."""

    def run(rng: np.random.Generator, n: int, seed: int) -> tuple[float, float, float]:
        gallery = gallery_size_for([n])
        collected = GroupedFigures()
        truth = {}
        for label, setting in (("A", first), ("B", second)):
            real, recon = simulate(rng, n, setting)
            result = group_leakage([recon], [np.ones(n, dtype=bool)], real, np.arange(n), metric="euclidean",
                                   gallery_size=gallery, n_resamples=N_RESAMPLES, seed=seed)
            if metric in result.not_estimable:
                return 0.0, float("nan"), float("nan")
            estimate = result.estimates[metric]
            collected.add(figure_from_estimate(estimate, probe="inversion", metric=metric, grouping="g", group=label,
                                               n_people=n, better="lower"), estimate)
            truth[label] = truths(setting, gallery)[metric]
        gap = next(d for d in collected.disparities(("gap",)) if d.kind == "gap")
        high_group = gap.worst_group   # better='lower': the worst group is the higher one
        low_group = "B" if high_group == "A" else "A"
        return truth[high_group] - truth[low_group], gap.ci_low, gap.ci_high

    return run
