"""Entry-point plugins, read one way for every kind (targets, probes).

A broken metadata file or a name registered twice must never stop the
tool: the first registration of a name wins and the rest are logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)

__all__ = ["Plugin", "read_plugins"]


@dataclass(frozen=True)
class Plugin:
    """One entry point: its name, ``"module:Object"`` as registered, the distribution, its loader."""

    name: str
    value: str
    distribution: str
    load: Callable[[], Any]


def read_plugins(group: str, kind: str,
                 read: Callable[..., Iterable[Any]] = entry_points) -> dict[str, Plugin]:
    """The entry points of ``group`` by name (``kind`` names them in warnings: "target", "probe").

    ``read`` is :func:`importlib.metadata.entry_points`; a registry passes
    its own reference, so that tests can stand in for the installed ones.
    """
    found: dict[str, Plugin] = {}
    try:
        eps = read(group=group)
    except Exception as exc:  # a broken metadata file must not break the tool
        log.warning("could not read entry points %r: %s", group, exc)
        return found
    for ep in eps:
        dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
        if ep.name in found:
            log.warning("%s plugin %r is registered twice (%s and %s); using the first",
                        kind, ep.name, found[ep.name].value, ep.value)
            continue
        found[ep.name] = Plugin(ep.name, ep.value, dist, ep.load)
    return found
