"""The verification probe behind the registry: FMR and FNMR per group (:mod:`probes.verification`)."""

from __future__ import annotations

import numpy as np

from audit.builtin_probes.common import output_of
from audit.probe_registry import ProbeInputs, ProbeOutput
from audit.result_sections import VerificationSection
from probes.verification import verification_probe

#: Why a dataset without genuine pairs has no verification figures.
NO_GENUINE_PAIRS = ("the dataset has no identity with two or more images: verification needs "
                    "genuine pairs (LFW has them; UTKFace does not).")


def run(inputs: ProbeInputs) -> ProbeOutput:
    """Every image, found face or not: the rates are generalised (ISO/IEC 19795-1)."""
    ok = inputs.ok
    samples = inputs.samples()
    if samples.loc[ok, inputs.person].duplicated().sum() == 0:
        return ProbeOutput(section=VerificationSection(skipped=NO_GENUINE_PAIRS))
    result = verification_probe(inputs.vectors, samples, groupings=inputs.groupings, person=inputs.person,
                                metric=inputs.metric, threshold=inputs.threshold, pairs=inputs.pairs,
                                seed=inputs.seed, acquired=np.asarray(ok, dtype=bool))
    return output_of(result)
