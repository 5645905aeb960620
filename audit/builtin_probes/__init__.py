"""The built-in probes as the registry runs them (:mod:`audit.probe_registry`).

Each module's ``run(inputs)`` takes the run's shared
:class:`audit.probe_registry.ProbeInputs` and returns a
:class:`audit.probe_registry.ProbeOutput`; the measurement itself lives in
:mod:`probes`.  The registry imports a module only when its probe runs.
"""
