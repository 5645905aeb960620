"""What every probe returns: one shape, so the runner treats the probes alike."""

from __future__ import annotations

from dataclasses import dataclass, field

from audit.json_model import Record
from audit.results import Disparity, Figure


@dataclass
class ProbeResult:
    """A probe's per-group ``figures`` and pairwise ``disparities`` (they go to results.json's lists),
    its ``details`` (its typed section of results.json, the report's material: thresholds, curves,
    counts; see :mod:`audit.result_sections`) and its ``tests`` (permutation tests by grouping, where
    the probe runs one)."""

    figures: list[Figure]
    disparities: list[Disparity]
    details: Record | None = None
    tests: dict[str, dict] = field(default_factory=dict)
