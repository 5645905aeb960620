"""What every probe returns: one shape, so the runner treats the probes alike."""

from __future__ import annotations

from dataclasses import dataclass, field

from audit.results import Disparity, Figure


@dataclass
class ProbeResult:
    """A probe's per-group ``figures`` and pairwise ``disparities`` (they go to results.json's lists),
    its ``details`` (JSON-ready, the report's material: thresholds, curves, counts) and its
    ``tests`` (permutation tests by grouping, where the probe runs one)."""

    figures: list[Figure]
    disparities: list[Disparity]
    details: dict = field(default_factory=dict)
    tests: dict[str, dict] = field(default_factory=dict)
