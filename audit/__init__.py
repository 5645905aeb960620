"""Bias-probing audit tool for face recognition models.

The layers (CLI, commands, runner, probes and reports, the embed stage,
targets and data, the core) and the contract that enforces them are in
``docs/architecture.md`` and ``pyproject.toml`` (``[tool.importlinter]``).
"""

__version__ = "0.1.0"
__all__ = ["load_results", "__version__"]


def __getattr__(name: str):
    # ``from audit import load_results`` loads pandas only when asked for: the CLI starts without it.
    if name == "load_results":
        from audit.api import load_results   # loaded on first use, as the comment above says

        return load_results
    raise AttributeError(f"module 'audit' has no attribute {name!r}")
