"""Probes: what the audit measures on a target's embeddings.

``probes.stats`` turns per-image (or per-pair) values into per-group
:class:`audit.results.Figure` objects with intervals that resample people,
and compares groups as :class:`audit.results.Disparity` objects.
``probes.volume`` and ``probes.verification`` build on it.
"""
