"""What the built-in probes share: a :class:`probes.result.ProbeResult` as the registry's output."""

from __future__ import annotations

from audit.probe_registry import ProbeOutput
from probes.result import ProbeResult


def output_of(result: ProbeResult, *, tests_key: str | None = None) -> ProbeOutput:
    """A probe's result as its output; its permutation tests, if it ran some, under ``tests_key``."""
    tests = {tests_key: result.tests} if tests_key is not None else {}
    return ProbeOutput(list(result.figures), list(result.disparities), result.details, tests)
