"""The probe interface and its registry: built-in probes, plugins, and probes a program adds.

A probe is one measurement of an audit.  It declares, without being run:

* ``name`` - how ``--probes`` names it, the ``probe`` of its figures and
  the key of its section in results.json;
* ``title`` - its report section's heading;
* ``needs`` - the shared inputs the run prepares for it (:data:`INPUTS`):
  the run reads a pairs file, cuts face chips or loads generator corpora
  only for a probe that needs them;
* ``uses`` - other probes whose output it reads when they run in the same
  audit (they run before it: its dependencies);
* ``section`` - the typed record (:class:`audit.json_model.Record`) of its
  details in results.json;
* ``partial`` - the Jinja template of its report section, found in the
  report's templates or in the probe's own ``templates`` folder.

The runner builds one :class:`ProbeInputs` per run and calls each selected
probe's :meth:`Probe.run` in dependency order (:func:`run_order`); each
returns a :class:`ProbeOutput`.

Built-in probes are declared in :data:`_BUILT_INS` with the import path of
their code, loaded only when they run: listing the probes, checking
``--probes`` and rendering a report never import torch.  Installed packages
add probes under the entry point group :data:`ENTRY_POINT_GROUP` (each
entry point's value a :class:`Probe` subclass or instance); a program, or a
test, adds one with :func:`register_probe`.  This mirrors the target
registry (:mod:`audit.targets`).
"""

from __future__ import annotations

import importlib
import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from audit.errors import InputError
from audit.json_model import Record
from audit.plugins import Plugin, read_plugins
from audit.result_sections import (AttributesSection, DetectionSection, GenericSection, InversionSection,
                                   VerificationSection, VolumeSection)
from audit.results import Disparity, Figure

if TYPE_CHECKING:   # annotations only: the registry stays importable without pandas or numpy loaded
    import numpy as np
    import pandas as pd

    from audit.data.manifest import Dataset
    from audit.targets.base import Target

log = logging.getLogger(__name__)

#: Entry point group under which packages register extra probes; each entry point's value is a
#: :class:`Probe` subclass (built with no arguments) or instance (``"pkg.module:MyProbe"``).
ENTRY_POINT_GROUP = "face_bias_audit.probes"

#: The shared inputs a probe may need, and what the run prepares for each.
INPUTS: dict[str, str] = {
    "detections": "each image's detection outcome (a face, none, an error)",
    "embeddings": "the target's vector of each image with a face",
    "identities": "who is who: the person behind each image",
    "chips": "aligned face crops at --image-size (cut and cached during the embed stage)",
    "pairs": "the pairs file (--pairs, or the dataset's pairs.txt), read before any target call",
    "generators": "the generators' corpora or saved folders (--train-dataset, --generator) and the "
                  "identity model, checked before any target call",
}

#: A probe's name: lower case, digits and underscores, so that it reads in ``--probes a,b``, in a
#: figure's key (``probe.metric``) and in a policy rule.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


# -- what a probe gets and returns ----------------------------------------------------------
@dataclass
class ProbeOutput:
    """What one probe returns to the runner.

    ``figures`` and ``disparities`` join results.json's lists; ``section``
    is its details (an instance of the probe's ``section`` class, None for
    none); ``tests`` its permutation tests by key (``"detection.failure_rate"``
    -> grouping -> test); ``tables`` CSV files the run folder gets (file name
    -> DataFrame), written with the run's other files at the end;
    ``products`` what later probes read (never written); ``device`` where it
    computed, for the environment section.
    """

    figures: list[Figure] = field(default_factory=list)
    disparities: list[Disparity] = field(default_factory=list)
    section: Record | None = None
    tests: dict[str, dict] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    products: dict[str, Any] = field(default_factory=dict)
    device: str | None = None


@dataclass
class ProbeInputs:
    """What the runner prepares once and hands to every probe of the run.

    ``embeddings`` is the embed stage's :class:`audit.embedding.EmbeddingSet`
    (``table``: one row per image, its status and labels; ``vectors``, NaN
    where no face; ``chips`` where a probe needs them).  ``person`` is the
    table's column naming who is who: every interval resamples people.
    ``settings`` is the run's :class:`audit.run_config.RunConfig`, for a probe
    with options of its own; ``outputs`` the earlier probes' outputs by name.
    """

    dataset: Dataset
    embeddings: Any
    group_by: tuple[str, ...]
    groupings: list[list[str]]
    metric: str
    threshold: float
    seed: int
    n_resamples: int
    out_dir: Path
    probes: tuple[str, ...] = ()
    person: str = "identity"
    pairs: pd.DataFrame | None = None
    settings: Any = None
    target: Target | None = None
    embedder: Any = None
    corpora: list = field(default_factory=list)
    saved_generators: list = field(default_factory=list)
    identity_model: Any = None
    outputs: dict[str, ProbeOutput] = field(default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        return self.embeddings.table

    @property
    def vectors(self) -> np.ndarray:
        return self.embeddings.vectors

    @property
    def ok(self) -> np.ndarray:
        """Images with a face and a vector."""
        return self.embeddings.ok

    def samples(self, rows: Any = None) -> pd.DataFrame:
        """Image id, person and the grouping attributes of every image (or of ``rows``), indexed from 0."""
        cols = ["image_id", self.person, *self.group_by]
        table = self.table
        frame = table.loc[:, cols] if rows is None else table.loc[rows, cols]
        return frame.reset_index(drop=True)


# -- the interface ----------------------------------------------------------------------------
class Probe(ABC):
    """One measurement of the audit.  Subclass it, set the declarations and write :meth:`run`.

    The declarations are plain attributes so that a built-in probe (one
    class, one instance per probe) and a plugin's class read alike.
    """

    name: str = ""
    title: str = ""
    description: str = ""
    needs: tuple[str, ...] = ("embeddings",)
    uses: tuple[str, ...] = ()
    section: type[Record] = GenericSection
    partial: str = ""
    #: The folder ``partial`` lies in; None: the report's own templates.
    templates: str | Path | None = None
    #: 0 for seconds on cached embeddings, more for probes that train: among probes free to run, the
    #: cheaper run first, so that a mistake in one of them costs seconds, not a generator's training.
    cost: int = 0
    #: The report shows its section, saying so, where it did not run (the built-ins' habit).
    always_in_report: bool = False
    #: The id of its report section; empty: ``probe-<name>``.
    anchor: str = ""

    @abstractmethod
    def run(self, inputs: ProbeInputs) -> ProbeOutput:
        """Measure, from the run's shared inputs; never write results.json (the runner does)."""

    def report_context(self, section: Record | None) -> Mapping[str, Any]:
        """Extra values for the partial, beside the generic ones (``ran``, ``metrics``, ``details``, ``section``)."""
        return {}

    def section_id(self) -> str:
        return self.anchor or f"probe-{self.name}"

    def needs_text(self) -> str:
        """The inputs and the probes it reads, as ``audit probes`` lists them."""
        return ", ".join([*self.needs, *(f"{name}'s output" for name in self.uses)]) or "-"


# -- built-ins --------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, kw_only=True)
class _BuiltIn(Probe):
    """A built-in probe: its declarations here, its code at ``implementation`` (``module:function``),
    imported when it runs.  (Keyword-only: the fields' defaults come from :class:`Probe`.)"""

    name: str
    title: str
    description: str
    needs: tuple[str, ...]
    section: type[Record]
    partial: str
    implementation: str
    uses: tuple[str, ...] = ()
    cost: int = 0
    always_in_report: bool = True
    templates: str | Path | None = None

    @property
    def anchor(self) -> str:   # the built-in partials' section ids are their names
        return self.name

    def run(self, inputs: ProbeInputs) -> ProbeOutput:
        module_name, _, attribute = self.implementation.partition(":")
        # The probe's code (torch, scikit-learn) is imported only when it runs.
        function = getattr(importlib.import_module(module_name), attribute)
        return function(inputs)


#: The built-in probes, in the order the report and ``audit probes`` show them.
_BUILT_INS: dict[str, _BuiltIn] = {p.name: p for p in (
    _BuiltIn(name="detection", title="Face detection", description="failure to find a face, per group",
             needs=("detections",), section=DetectionSection, partial="partials/detection.html.j2",
             implementation="audit.builtin_probes.detection:run"),
    _BuiltIn(name="inversion", title="Inversion: reconstructing faces from embeddings",
             description="faces reconstructed from the embeddings by a trained generator, matched against "
                         "their source",
             needs=("embeddings", "identities", "chips", "generators"), section=InversionSection,
             partial="partials/inversion.html.j2", implementation="audit.builtin_probes.inversion:run", cost=2),
    _BuiltIn(name="volume", title="Embedding-space volume",
             description="how much room the embedding space gives each group",
             needs=("embeddings", "identities"), section=VolumeSection, partial="partials/volume.html.j2",
             implementation="audit.builtin_probes.volume:run"),
    _BuiltIn(name="verification", title="Verification bias",
             description="false match and false non-match rates per group",
             needs=("embeddings", "identities", "pairs"), section=VerificationSection,
             partial="partials/verification.html.j2", implementation="audit.builtin_probes.verification:run"),
    _BuiltIn(name="attributes", title="Attributes: demographic leakage and generator fidelity",
             description="what the embeddings and their reconstructions say about a person's group",
             needs=("embeddings", "identities"), uses=("inversion",), section=AttributesSection,
             partial="partials/attributes.html.j2", implementation="audit.builtin_probes.attributes:run", cost=1),
)}

#: The built-ins' names; ``audit run`` runs them all by default.
BUILT_IN_NAMES: tuple[str, ...] = tuple(_BUILT_INS)

#: Probes added through :func:`register_probe`, in the order they were added.
_REGISTERED: dict[str, Probe] = {}


# -- plugins ----------------------------------------------------------------------------------
def _plugins() -> dict[str, Plugin]:
    """Entry points of :data:`ENTRY_POINT_GROUP`, the first registration of a name winning."""
    return read_plugins(ENTRY_POINT_GROUP, "probe", entry_points)


def _load_plugin(plugin: Plugin) -> Probe:
    """The plugin's probe, checked, or an InputError saying why it cannot be used."""
    where = f"probe plugin {plugin.name!r} ({plugin.value}, from package {plugin.distribution!r})"
    try:
        loaded = plugin.load()
    except Exception as exc:
        raise InputError(f"{where} failed to load: {type(exc).__name__}: {exc}. Reinstall or fix that "
                         "package.") from exc
    probe = _as_probe(loaded, where)
    if probe.name != plugin.name:
        raise InputError(f"{where} is a probe named {probe.name!r}; the entry point and the probe must "
                         "have the same name.")
    return probe


def _as_probe(value: Any, where: str) -> Probe:
    """A Probe instance from a Probe subclass or instance, its declarations checked."""
    if isinstance(value, type) and issubclass(value, Probe):
        try:
            value = value()
        except TypeError as exc:
            raise InputError(f"{where}: {value.__name__} cannot be built without arguments ({exc}).") from exc
    if not isinstance(value, Probe):
        raise InputError(f"{where} is {value!r:.80}, not a subclass or instance of "
                         "audit.probe_registry.Probe.")
    _check_declarations(value, where)
    return value


def _check_declarations(probe: Probe, where: str) -> None:
    """Every declaration a run and a report rely on, checked when the probe is added, not mid-run."""
    problems = []
    if not isinstance(probe.name, str) or not NAME_PATTERN.match(probe.name):
        problems.append(f"its name {probe.name!r} is not lower-case letters, digits and underscores")
    if not isinstance(probe.title, str) or not probe.title.strip():
        problems.append("it has no title")
    unknown = [n for n in probe.needs if n not in INPUTS]
    if unknown:
        problems.append(f"it needs {unknown}, which no run prepares (known inputs: {', '.join(INPUTS)})")
    if not (isinstance(probe.section, type) and issubclass(probe.section, Record)):
        problems.append(f"its section {probe.section!r} is not an audit.json_model.Record subclass")
    if not isinstance(probe.partial, str) or not probe.partial.strip():
        problems.append("it names no report partial (a Jinja template)")
    if probe.name in probe.uses:
        problems.append("it uses its own output")
    if problems:
        raise InputError(f"{where} cannot be used: {'; '.join(problems)}.")


# -- public API -------------------------------------------------------------------------------
def register_probe(probe: Probe | type[Probe]) -> Probe:
    """Add a probe for this process (a program embedding the tool, a test); returns the instance.

    Refused (InputError) where its declarations are incomplete or its name
    is taken by another probe.
    """
    instance = _as_probe(probe, f"probe {getattr(probe, 'name', probe)!r}")
    if instance.name in _BUILT_INS or instance.name in _REGISTERED:
        raise InputError(f"probe {instance.name!r} is already registered; choose another name.")
    _REGISTERED[instance.name] = instance
    return instance


def unregister_probe(name: str) -> None:
    """Remove a probe :func:`register_probe` added (built-ins and plugins stay)."""
    _REGISTERED.pop(name, None)


def probe_names() -> list[str]:
    """Every probe ``--probes`` accepts: the built-ins, the registered, then the plugins by name."""
    names = [*_BUILT_INS, *_REGISTERED]
    names += sorted(n for n in _plugins() if n not in names)
    return names


def get_probe(name: str) -> Probe:
    """The probe called ``name``; an InputError lists the probes there are."""
    name = str(name).strip()
    if name in _BUILT_INS:
        return _BUILT_INS[name]
    if name in _REGISTERED:
        return _REGISTERED[name]
    plugin = _plugins().get(name)
    if plugin is None:
        raise InputError(f"unknown probe {name!r}; available probes: {', '.join(probe_names())} "
                         "(see `audit probes`).")
    return _load_plugin(plugin)


def available_probes() -> list[Probe]:
    """Every probe that can be loaded, in :func:`probe_names` order; a broken plugin is logged and left out
    (the report of a run still renders; its figures show under their raw names)."""
    probes = []
    for name in probe_names():
        try:
            probes.append(get_probe(name))
        except InputError as exc:
            log.warning("%s", exc)
    return probes


def check_probe_selection(names: Sequence[str]) -> tuple[str, ...]:
    """``--probes`` as given, each name known; an InputError names the unknown ones and the valid ones."""
    names = tuple(str(n).strip() for n in names)
    valid = probe_names()
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise InputError(f"--probes {','.join(names)!r}: unknown probe(s) {unknown}; choose from "
                         f"{', '.join(valid)} (see `audit probes`).")
    for name in names:
        get_probe(name)   # a plugin that cannot load is refused before any work
    return names


def run_order(names: Iterable[str]) -> list[Probe]:
    """The selected probes in the order they run: each after the selected probes it uses, and among
    those free to run, the cheaper first (then the registry's order).

    A probe's ``uses`` that are not selected are left out: the probe runs
    without their output.  A cycle among the selected probes is an InputError.
    """
    selected = [get_probe(n) for n in dict.fromkeys(names)]
    position = {p.name: i for i, p in enumerate(sorted(selected, key=lambda p: _registry_index(p.name)))}
    chosen = {p.name for p in selected}
    waiting = {p.name: {u for u in p.uses if u in chosen} for p in selected}
    by_name = {p.name: p for p in selected}
    order: list[Probe] = []
    while waiting:
        ready = [n for n, deps in waiting.items() if not deps]
        if not ready:
            raise InputError(f"the probes {sorted(waiting)} use each other's output in a cycle; none can "
                             "run first. Leave one of them out of --probes.")
        name = min(ready, key=lambda n: (by_name[n].cost, position[n]))
        order.append(by_name[name])
        del waiting[name]
        for deps in waiting.values():
            deps.discard(name)
    return order


def _registry_index(name: str) -> int:
    names = probe_names()
    return names.index(name) if name in names else len(names)


def needed_inputs(names: Iterable[str]) -> set[str]:
    """The inputs the selected probes need between them (what the run must prepare)."""
    return {need for name in names for need in get_probe(name).needs}


@dataclass(frozen=True)
class ProbeListing:
    """One row of ``audit probes``."""

    name: str
    title: str
    needs: str
    source: str
    available: bool = True
    reason: str = ""
    description: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "needs": self.needs, "source": self.source,
                "available": self.available, "reason": self.reason, "description": self.description}


def list_probes() -> list[ProbeListing]:
    """Every probe, where it comes from and what it needs; a plugin that fails to load is listed as
    unavailable with the error, never a crash."""
    listings = [ProbeListing(p.name, p.title, p.needs_text(), "built-in", description=p.description)
                for p in _BUILT_INS.values()]
    listings += [ProbeListing(p.name, p.title, p.needs_text(), "registered", description=p.description)
                 for p in _REGISTERED.values()]
    for plugin in sorted(_plugins().values(), key=lambda p: p.name):
        source = f"plugin ({plugin.distribution}: {plugin.value})"
        if plugin.name in _BUILT_INS or plugin.name in _REGISTERED:
            log.warning("probe plugin %r from %r is shadowed by a probe of that name", plugin.name,
                        plugin.distribution)
            listings.append(ProbeListing(plugin.name, "-", "-", source, False,
                                         "shadowed by the probe of the same name; ask its author to rename it"))
            continue
        try:
            probe = _load_plugin(plugin)
        except InputError as exc:
            listings.append(ProbeListing(plugin.name, "-", "-", source, False, str(exc)))
            continue
        listings.append(ProbeListing(probe.name, probe.title, probe.needs_text(), source,
                                     description=probe.description))
    return listings


__all__ = ["BUILT_IN_NAMES", "ENTRY_POINT_GROUP", "INPUTS", "Probe", "ProbeInputs", "ProbeListing", "ProbeOutput",
           "available_probes", "check_probe_selection", "get_probe", "list_probes", "needed_inputs", "probe_names",
           "register_probe", "run_order", "unregister_probe"]
