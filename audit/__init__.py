"""Bias-probing audit tool for face recognition models.

The layers (CLI, commands, runner, probes and reports, the embed stage,
targets and data, the core) and the contract that enforces them are in
``docs/architecture.md`` and ``pyproject.toml`` (``[tool.importlinter]``).
"""

__version__ = "0.1.0"
