"""Bias-probing audit tool for face recognition models.

Data flows one way: ``audit`` (datasets, faces, targets, cache, runner) ->
``probes`` (inversion, volume, verification, statistics) -> ``reports``.
"""

__version__ = "0.1.0"
