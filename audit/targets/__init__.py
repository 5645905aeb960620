"""The target registry: built-in targets, ``onnx:PATH``, ``precomputed:FILE``, plugins.

A target is named on the command line by a *spec*:

* ``dlib`` - dlib's ResNet descriptor (offline, the default);
* ``clarifai`` (or ``clarifai:MODEL_ID``) - Clarifai's REST API;
* ``onnx:PATH`` - any face embedding model exported to ONNX;
* ``precomputed:FILE`` - vectors a system exported (CSV or Parquet);
* ``NAME`` (or ``NAME:ARGUMENT``) - a plugin registered by an installed package
  under the entry point group :data:`ENTRY_POINT_GROUP`.

Options come from repeated ``--target-option key=value``
(:func:`parse_target_options`) and reach the target's constructor as keyword
strings; each target converts and checks its own (see ``docs/targets.md``).
Target modules are imported only when used: listing targets never loads a
model, opens a connection or imports onnxruntime.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from audit.errors import InputError, TargetError
from audit.plugins import Plugin, read_plugins
from audit.targets.base import Target
from audit.targets.options import (check_option_keys, option_bool,
                                   option_choice, option_float, option_int, parse_target_options)

log = logging.getLogger(__name__)

#: Entry point group under which packages register extra targets; each
#: entry point's value is a :class:`Target` subclass (``"pkg.module:MyTarget"``).
ENTRY_POINT_GROUP = "face_bias_audit.targets"

# -- built-ins ------------------------------------------------------------------------
#: Option keys of the dlib target (listed here so that `audit targets` need not import dlib).
DLIB_OPTIONS = {
    "engine": "auto (default), torch or dlib",
    "threshold": "same-person distance (default 0.6)",
    "device": "torch engine device: cuda or cpu (default: the GPU if any)",
    "batch_size": "torch engine batch size (default 16 on the CPU, 256 on a GPU)",
}


@dataclass(frozen=True)
class _BuiltIn:
    name: str
    usage: str
    import_path: str          # "module:Class"
    argument: str | None      # the keyword the ":ARGUMENT" part is passed as
    argument_required: bool
    description: str


_BUILT_INS: dict[str, _BuiltIn] = {b.name: b for b in (
    _BuiltIn("dlib", "dlib", "audit.targets.dlib_target:DlibTarget", None, False,
             "dlib ResNet descriptor, offline (128-D, euclidean)"),
    _BuiltIn("clarifai", "clarifai[:MODEL_ID]", "audit.targets.clarifai:ClarifaiTarget",
             "model_id", False, "Clarifai face embedding REST API (key in CLARIFAI_PAT)"),
    _BuiltIn("onnx", "onnx:PATH", "audit.targets.onnx_target:OnnxTarget", "path", True,
             "a face embedding model in an ONNX file, run by onnxruntime"),
    _BuiltIn("precomputed", "precomputed:FILE", "audit.targets.precomputed:PrecomputedTarget",
             "path", True, "vectors exported by another system (CSV or Parquet)"),
)}


def _import_object(import_path: str) -> Any:
    module_name, _, attribute = import_path.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute)


def _load_class(import_path: str, name: str) -> type[Target]:
    try:
        cls = _import_object(import_path)
    except ImportError as exc:
        raise TargetError(f"target {name!r} cannot be loaded: {exc}.") from exc
    return cls


# -- plugins --------------------------------------------------------------------------
def _plugins() -> dict[str, Plugin]:
    """Entry points of :data:`ENTRY_POINT_GROUP`, the first registration of a name winning."""
    return read_plugins(ENTRY_POINT_GROUP, "target", entry_points)


def _load_plugin(plugin: Plugin) -> type[Target]:
    """The plugin's Target subclass, or a TargetError saying why it cannot be used."""
    try:
        cls = plugin.load()
    except Exception as exc:
        raise TargetError(f"target plugin {plugin.name!r} ({plugin.value}, from package "
                          f"{plugin.distribution!r}) failed to load: {type(exc).__name__}: {exc}. "
                          f"Reinstall or fix that package.") from exc
    if not (isinstance(cls, type) and issubclass(cls, Target)):
        raise TargetError(f"target plugin {plugin.name!r} ({plugin.value}) is {cls!r}, not a "
                          f"subclass of audit.targets.base.Target.")
    return cls


def _is_builtin_alias(plugin: Plugin) -> bool:
    """This package registers its own dlib target as an entry point too: not a clash."""
    builtin = _BUILT_INS.get(plugin.name)
    return builtin is not None and plugin.value.replace(" ", "") == builtin.import_path


# -- public API -----------------------------------------------------------------------
def available_specs() -> list[str]:
    """How each known target is named on the command line."""
    specs = [b.usage for b in _BUILT_INS.values()]
    specs += sorted(p.name for p in _plugins().values() if p.name not in _BUILT_INS)
    return specs


def _construct(cls: type[Target], name: str, options: dict, *, spec_argument: str | None) -> Target:
    known = getattr(cls, "OPTIONS", None)
    if name == "dlib" and known is None:
        known = DLIB_OPTIONS
    if known is not None:
        check_option_keys(name, {k: v for k, v in options.items() if k != spec_argument}, known)
    try:
        return cls(**options)
    except TypeError as exc:
        # A plugin without an OPTIONS table that does not take some keyword.
        raise InputError(f"target {name!r} does not accept the options "
                         f"{sorted(options)} ({exc}).") from exc


def get_target(spec: str, **options: Any) -> Target:
    """Build the target named by ``spec`` with its options (strings, from the CLI).

    Raises :class:`InputError` for an unknown spec or option (listing what
    exists) and :class:`TargetError` for a target that cannot run here.
    """
    spec = str(spec).strip()
    name, sep, argument = spec.partition(":")
    name = name.strip().lower()
    options = {str(k).lower().replace("-", "_"): v for k, v in options.items()}
    builtin = _BUILT_INS.get(name)
    if builtin is not None:
        if builtin.argument is None and sep:
            raise InputError(f"target {spec!r}: {name!r} takes no ':...' part; "
                             f"use --target {builtin.usage}.")
        if builtin.argument_required and not argument.strip():
            raise InputError(f"target {spec!r} needs a file: use --target {builtin.usage}.")
        if sep:
            if builtin.argument in options:
                raise InputError(f"target {spec!r}: {builtin.argument!r} is given both in the "
                                 f"spec and as a target option; give it once.")
            options[builtin.argument] = argument.strip()
        cls = _load_class(builtin.import_path, name)
        return _construct(cls, name, options, spec_argument=builtin.argument)
    plugin = _plugins().get(name)
    if plugin is None:
        raise InputError(f"unknown target {spec!r}; available targets: "
                         f"{', '.join(available_specs())} (see `audit targets`).")
    cls = _load_plugin(plugin)
    if sep:
        options["argument"] = argument
    return _construct(cls, name, options, spec_argument="argument")


@dataclass(frozen=True)
class TargetListing:
    """One row of ``audit targets``; ``None`` where the figure depends on the model."""

    name: str
    usage: str
    dimension: int | None
    metric: str | None
    default_threshold: float | None
    available: bool
    reason: str
    description: str = ""
    source: str = "built-in"
    options: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict:
        return {"name": self.name, "usage": self.usage, "dimension": self.dimension,
                "metric": self.metric, "default_threshold": self.default_threshold,
                "available": self.available, "reason": self.reason,
                "description": self.description, "source": self.source,
                "options": dict(self.options)}


def _class_value(cls: type, attribute: str, *fallbacks: str) -> Any:
    """A figure a class states without being built (a plain attribute, not a property)."""
    for name in (attribute, *fallbacks):
        value = getattr(cls, name, None)
        if value is not None and not isinstance(value, property) and not callable(value):
            return value
    module = importlib.import_module(cls.__module__)
    for name in fallbacks:
        value = getattr(module, name, None)
        if value is not None and not callable(value):
            return value
    return None


def _listing_for(cls: type[Target], *, name: str, usage: str, description: str,
                 source: str) -> TargetListing:
    try:
        available, reason = cls.availability()
    except Exception as exc:
        available, reason = False, f"availability check failed: {type(exc).__name__}: {exc}"
    options = getattr(cls, "OPTIONS", None) or (DLIB_OPTIONS if name == "dlib" else {})
    dimension = _class_value(cls, "dimension", "DIMENSION")
    metric = _class_value(cls, "metric", "METRIC")
    threshold = _class_value(cls, "default_threshold", "DEFAULT_THRESHOLD")
    return TargetListing(name, usage, int(dimension) if dimension is not None else None,
                         str(metric) if metric is not None else ("euclidean" if name == "dlib" else None),
                         float(threshold) if threshold is not None else None,
                         bool(available), str(reason), description, source,
                         tuple(sorted(options.items())))


def list_targets() -> list[TargetListing]:
    """Every known target, whether it can run here, and why not.

    A plugin that fails to load is listed as unavailable with the error,
    never a crash: one broken package must not hide the other targets.
    """
    listings: list[TargetListing] = []
    for builtin in _BUILT_INS.values():
        try:
            cls = _load_class(builtin.import_path, builtin.name)
        except (TargetError, Exception) as exc:  # e.g. dlib missing
            listings.append(TargetListing(builtin.name, builtin.usage, None, None, None, False,
                                          str(exc), builtin.description))
            continue
        listings.append(_listing_for(cls, name=builtin.name, usage=builtin.usage,
                                     description=builtin.description, source="built-in"))
    for plugin in sorted(_plugins().values(), key=lambda p: p.name):
        source = f"plugin ({plugin.distribution}: {plugin.value})"
        if plugin.name in _BUILT_INS:
            if not _is_builtin_alias(plugin):
                log.warning("target plugin %r from %r is shadowed by the built-in target of "
                            "that name", plugin.name, plugin.distribution)
                listings.append(TargetListing(plugin.name, plugin.name, None, None, None, False,
                                              "shadowed by the built-in target of the same name; "
                                              "ask its author to rename it", "", source))
            continue
        try:
            cls = _load_plugin(plugin)
        except TargetError as exc:
            listings.append(TargetListing(plugin.name, plugin.name, None, None, None, False,
                                          str(exc), "", source))
            continue
        doc = (cls.__doc__ or "").strip().splitlines()
        listings.append(_listing_for(cls, name=plugin.name, usage=plugin.name,
                                     description=doc[0] if doc else "", source=source))
    return listings


__all__ = ["ENTRY_POINT_GROUP", "TargetListing", "available_specs", "get_target", "list_targets",
           "parse_target_options", "option_bool", "option_choice", "option_float", "option_int",
           "check_option_keys"]
