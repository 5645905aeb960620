"""The volume probe behind the registry: the room the embedding space gives each group (:mod:`probes.volume`)."""

from __future__ import annotations

from audit.builtin_probes.common import output_of
from audit.probe_registry import ProbeInputs, ProbeOutput
from probes.volume import volume_probe


def run(inputs: ProbeInputs) -> ProbeOutput:
    """Measured on the images with a vector only."""
    ok = inputs.ok
    result = volume_probe(inputs.vectors[ok], inputs.samples(ok), groupings=inputs.groupings,
                          person=inputs.person, metric=inputs.metric, threshold=inputs.threshold, seed=inputs.seed)
    return output_of(result)
