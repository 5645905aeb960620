"""The inversion probe: a generator that turns embeddings back into faces.

``generator`` (the network), ``splits`` (identity-disjoint train/val/test),
``training`` (fast, resumable, reproducible training), ``metrics`` (pure
functions on distances) and ``probe`` (:func:`run_inversion_probe`, what the
runner calls).  Submodules are imported on use so that ``import probes``
stays light.
"""
