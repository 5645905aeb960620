"""The detection probe behind the registry: failure to find a face, per group (:mod:`probes.detection`)."""

from __future__ import annotations

from audit.builtin_probes.common import output_of
from audit.probe_registry import ProbeInputs, ProbeOutput
from probes.detection import detection_probe


def run(inputs: ProbeInputs) -> ProbeOutput:
    """Every image counts, found face or not: the detector's misses are the figure."""
    result = detection_probe(inputs.table, attributes=inputs.group_by, groupings=inputs.groupings,
                             n_resamples=inputs.n_resamples, seed=inputs.seed)
    return output_of(result, tests_key="detection.failure_rate")
