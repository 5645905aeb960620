"""results.json: the one file every later step reads.

``audit report`` renders it, ``audit gate`` judges it, a later release's
gate compares with it.  Its schema is versioned (``SCHEMA_VERSION``) and
documented in ``docs/results-schema.md``; a reader refuses a file of an
unknown major version rather than guess.

Every per-group number is a :class:`Figure` and every comparison between
groups a :class:`Disparity`, in two flat lists, so that a policy can name
any of them by ``probe.metric`` and grouping without knowing the probes.
Probe-specific detail (threshold sweeps, histograms, training history)
lives under ``probes.<name>`` for the report.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import KW_ONLY, asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from audit.errors import ResultsError
from audit.json_model import from_json, json_safe, read_json, to_json
from audit.outputs import replacing
from audit.result_sections import (DatasetSection, DetectionSection, EnvironmentSection, FindingsSummary,
                                   PermutationTest, ProbeSections, TargetSection, ToolSection, VerdictSection)

SCHEMA_VERSION = "1.1"
RESULTS_FILE = "results.json"
GROUPS_FILE = "groups.csv"

#: Grouping and group names for the whole population.
ALL = "all"
#: Joins attribute names into an intersection's grouping ("race*gender")...
GROUPING_JOIN = "*"
#: ...and attribute values into its group label ("Black / Female").
GROUP_JOIN = " / "

Better = Literal["lower", "higher"]
#: Every pair of groups gets its difference ("gap") and, on a positive scale, its ratio.
DISPARITY_KINDS = ("gap", "ratio")
#: Kinds of schema 1.0 (a max over groups, whose intervals did not hold near equality) and the
#: kind a policy names instead.
RETIRED_DISPARITY_KINDS = {"max_gap": "gap", "max_min_ratio": "ratio", "max_geomean_ratio": "ratio"}
#: How findings are chosen among the disparities' p-values (``--correction``).
CORRECTIONS = ("holm", "bh")

#: Flags a figure may carry.  They mark numbers a reader must not lean on.
FLAG_SMALL_GROUP = "small_group"      # fewer people than the documented minimum
FLAG_FEW_ERRORS = "few_errors"        # a rate resting on fewer than 30 errors
FLAG_UNDEFINED = "undefined"          # division by zero or no data: value is NaN
FLAG_NOT_ESTIMABLE = "not_estimable"  # too little data for this kind of figure (e.g. a threshold at
                                      # FMR f from fewer than about 30 / f impostor pairs)
FLAG_NO_SIGNAL = "no_signal"          # the inversion probe found no identity in the reconstructions
FLAG_UNSTABLE = "unstable"            # a disparity whose direction changes between generators
FLAG_GENERATOR_DRIFT = "generator_drift"  # the generator redraws the group's faces as another group's
                                          # (attributes probe): read its inversion figures with care

#: Flags under which a figure or disparity is never a finding and never passes a gate rule:
#: the number exists but does not measure what its name says.  Each maps to the reason a
#: failed gate check gives.
BLOCKING_FLAGS = {
    FLAG_NOT_ESTIMABLE: ("the figure is not estimable from this data (too few pairs or people for it); "
                         "see its count in results.json and audit a larger set"),
    FLAG_NO_SIGNAL: ("the inversion probe found no identity signal (reconstructions are not closer to "
                     "their source than to other people), so its figures measure noise; train the "
                     "generator on more faces or for more epochs (--train-dataset, --epochs)"),
    FLAG_UNSTABLE: ("the disparity changes direction between generators trained with different seeds, "
                    "so it describes the generator, not the target"),
}


def blocking_flags(flags: Iterable[str]) -> list[str]:
    """The flags among ``flags`` that make a number unusable as a finding or a gate input."""
    return [f for f in flags if f in BLOCKING_FLAGS]


def grouping_name(attributes: Iterable[str]) -> str:
    attrs = list(attributes)
    return GROUPING_JOIN.join(attrs) if attrs else ALL


def group_label(values: Iterable[object]) -> str:
    vals = [str(v) for v in values]
    return GROUP_JOIN.join(vals) if vals else ALL


@dataclass
class Figure:
    """One number about one group, with what a reader needs to recompute it.

    ``count``/``n_images`` hold the numerator and denominator of a rate
    (Aequitas' habit: raw counts beside every rate); ``n_people`` is the
    number of distinct people behind it, the unit the intervals resample.
    """

    probe: str
    metric: str
    grouping: str
    group: str
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    n_images: int | None = None
    n_people: int | None = None
    count: int | None = None
    better: Better | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.probe}.{self.metric}"


@dataclass
class Disparity:
    """How far apart two groups of one grouping are on one metric.

    ``value`` is the higher group's figure minus (``gap``) or over
    (``ratio``) the lower one's, so never below 0 (1); ``worst_group`` and
    ``best_group`` are the pair, named by the figure's ``better``
    direction.  ``p_value`` tests "no difference"; ``p_adjusted`` is it
    after the correction for every comparison of the run, and ``finding``
    whether the difference survived it (never under a blocking flag).
    ``worst_pair`` marks the pair with the largest value of its grouping.
    ``p_value_generators`` is the test across generator seeds of an
    inversion figure (None with one generator); ``p_value`` is then the
    larger of the two (:mod:`probes.generator_seeds`).
    """

    probe: str
    metric: str
    grouping: str
    kind: str
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    worst_group: str | None = None
    best_group: str | None = None
    flags: list[str] = field(default_factory=list)
    p_value: float | None = None
    p_adjusted: float | None = None
    finding: bool = False
    worst_pair: bool = False
    p_value_generators: float | None = None

    @property
    def pair(self) -> tuple[str, ...]:
        """The two groups, in a fixed order (the same whichever fares worse)."""
        return tuple(sorted(g for g in (self.worst_group, self.best_group) if g is not None))

    @property
    def key(self) -> str:
        return f"{self.probe}.{self.metric}"


def written_by_audit_run(folder: Path) -> bool:
    """Whether ``folder`` holds a results.json this tool wrote (a run folder of a version that did not
    mark its folders): its ``tool.name`` says so."""
    try:
        data = json.loads((Path(folder) / RESULTS_FILE).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    tool = data.get("tool") if isinstance(data, dict) else None
    return isinstance(tool, dict) and tool.get("name") == ToolSection().name


def write_json_atomic(path: Path, payload: dict, *, private: bool = False) -> None:
    """Write a JSON file so that a crash never leaves half a file behind (NaN written as null);
    owner-only where ``private``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, private=private) as tmp:
        tmp.write_text(json.dumps(json_safe(payload), indent=2, sort_keys=False, allow_nan=False) + "\n",
                       encoding="utf-8")


def figures_to_dicts(figures: Iterable[Figure]) -> list[dict]:
    return [asdict(f) for f in figures]


def disparities_to_dicts(disparities: Iterable[Disparity]) -> list[dict]:
    return [asdict(d) for d in disparities]


#: Required fields of each entry, and the field that names its group (a figure's group, a disparity's kind).
_REQUIRED = {"figures": ("probe", "metric", "grouping", "group", "value"),
             "disparities": ("probe", "metric", "grouping", "kind", "value")}
_TEXT_FIELDS = ("probe", "metric", "grouping", "group", "kind", "worst_group", "best_group", "better")
_NUMBER_FIELDS = ("value", "ci_low", "ci_high", "p_value", "p_adjusted", "p_value_generators")
_COUNT_FIELDS = ("n_images", "n_people", "count")
_BOOL_FIELDS = ("finding", "worst_pair")


#: Probes whose details results.json keeps at its top level rather than under ``probes``.
TOP_LEVEL_PROBE_SECTIONS = ("detection",)


def probe_sections_arguments(sections: Mapping[str, Any]) -> dict[str, Any]:
    """Each probe's details by name as :class:`Results` keywords: ``detection=`` for those kept at the
    top level, ``probes=`` (:meth:`ProbeSections.of`) for the rest."""
    rest = {k: v for k, v in sections.items() if k not in TOP_LEVEL_PROBE_SECTIONS}
    return {**{k: sections.get(k) for k in TOP_LEVEL_PROBE_SECTIONS}, "probes": ProbeSections.of(rest)}


#: Sections of results.json and their types, in the file's order (figures and disparities are typed
#: by :func:`_entry`, which names a bad entry by its index).
SECTION_TYPES: dict[str, Any] = {
    "tool": ToolSection, "created_at": str | None, "command_line": str | None, "seed": int | None,
    "duration_seconds": float | None, "target": TargetSection, "dataset": DatasetSection,
    "settings": dict[str, Any], "environment": EnvironmentSection, "detection": DetectionSection | None,
    "findings": FindingsSummary | None, "tests": dict[str, dict[str, PermutationTest]],
    "probes": ProbeSections, "policy_verdict": VerdictSection | None,
}


@dataclass
class Results:
    """One run's results: what ``audit run`` writes and ``audit gate`` and ``audit report`` read.

    Every section is typed (:mod:`audit.result_sections`); ``settings`` is
    the run's options as given, kept for the record.  :meth:`from_dict` is
    the one place that checks the schema version and every field's type,
    so nothing downstream parses results.json again.  Keys of a newer minor
    version are kept in ``extra`` and written back.
    """

    figures: list[Figure] = field(default_factory=list)
    disparities: list[Disparity] = field(default_factory=list)
    _: KW_ONLY
    tool: ToolSection = field(default_factory=ToolSection)
    created_at: str | None = None
    command_line: str | None = None
    seed: int | None = None
    duration_seconds: float | None = None
    target: TargetSection = field(default_factory=TargetSection)
    dataset: DatasetSection = field(default_factory=DatasetSection)
    settings: dict[str, Any] = field(default_factory=dict)
    environment: EnvironmentSection = field(default_factory=EnvironmentSection)
    detection: DetectionSection | None = None
    findings: FindingsSummary | None = None
    tests: dict[str, dict[str, PermutationTest]] = field(default_factory=dict)
    probes: ProbeSections = field(default_factory=ProbeSections)
    policy_verdict: VerdictSection | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION

    def probe_section(self, probe: str) -> Any:
        """A probe's details by name, wherever results.json keeps them; None where it did not run."""
        if probe in TOP_LEVEL_PROBE_SECTIONS:
            return getattr(self, probe)
        return self.probes.get(probe)

    def to_dict(self) -> dict:
        """results.json as written: ``schema_version`` first, then the sections in order."""
        out: dict[str, Any] = {"schema_version": self.schema_version}
        for name in SECTION_TYPES:
            if name == "detection":      # the file's order: detection, then the two lists
                out[name] = to_json(self.detection)
                out["figures"] = figures_to_dicts(self.figures)
                out["disparities"] = disparities_to_dicts(self.disparities)
            else:
                out[name] = to_json(getattr(self, name))
        for key, value in self.extra.items():
            out.setdefault(key, to_json(value))
        return json_safe(out)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "the results") -> "Results":
        """Check and type a results.json's content; a ResultsError names what is wrong and where."""
        if not isinstance(data, dict) or "schema_version" not in data:
            raise ResultsError(f"{source} has no 'schema_version': it was not written by 'audit run'.")
        major = str(data["schema_version"]).split(".")[0]
        if major != SCHEMA_VERSION.split(".")[0]:
            raise ResultsError(f"{source} has schema_version {data['schema_version']!r}; this version "
                               f"of the tool reads {SCHEMA_VERSION.split('.')[0]}.x. Re-run the audit or "
                               "use a matching version of the tool.")
        typed: dict[str, Any] = {}
        for key, kind in (("figures", Figure), ("disparities", Disparity)):
            if not isinstance(data.get(key), list):
                raise ResultsError(f"{source} lacks the list {key!r}.")
            typed[key] = [_entry(kind, key, index, entry, source) for index, entry in enumerate(data[key])]
        for name, kind in SECTION_TYPES.items():
            if data.get(name) is not None:
                typed[name] = from_json(kind, data[name], f"{source}: {name}")
        extra = {k: v for k, v in data.items() if k not in SECTION_TYPES and k not in typed
                 and k != "schema_version"}
        return cls(**typed, extra=extra, schema_version=str(data["schema_version"]))


def _entry(kind: type, key: str, index: int, entry: Any, source: str) -> Any:
    """One figure or disparity from its JSON object, every field checked for its type."""
    where = f"{source}: {key}[{index}]"
    damaged = "the file was edited or damaged. Re-run the audit, or restore the file."
    if not isinstance(entry, dict):
        raise ResultsError(f"{where} is {type(entry).__name__} {entry!r:.60}, not an object: {damaged}")
    flags = entry.get("flags", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        # A string here would be read letter by letter, and a blocking flag missed.
        raise ResultsError(f"{where} has flags {flags!r:.60}, not a list of names: {damaged}")
    missing = [name for name in _REQUIRED[key] if name not in entry]
    if missing:
        raise ResultsError(f"{where} lacks {', '.join(map(repr, missing))}: {damaged}")
    values: dict[str, Any] = {"flags": list(flags)}
    for name in kind.__dataclass_fields__:
        if name == "flags" or name not in entry:
            continue
        value = entry[name]
        if value is None:
            values[name] = math.nan if name == "value" else None
        elif name in _TEXT_FIELDS and isinstance(value, str):
            values[name] = value
        elif name in _NUMBER_FIELDS and isinstance(value, (int, float)) and not isinstance(value, bool):
            values[name] = float(value)
        elif name in _COUNT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
            values[name] = value
        elif name in _BOOL_FIELDS and isinstance(value, bool):
            values[name] = value
        else:
            raise ResultsError(f"{where} has {name} = {value!r:.40}, not a "
                               f"{'number' if name in _NUMBER_FIELDS + _COUNT_FIELDS else 'valid value'}: {damaged}")
    if values.get("better") not in (None, "lower", "higher"):
        raise ResultsError(f"{where} has better = {values['better']!r:.40}, not 'lower' or 'higher': {damaged}")
    return kind(**values)


def load_results(path: str | os.PathLike) -> Results:
    """Read and check a results.json (or the run folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise ResultsError(f"No results file at {str(path)!r}. Pass a run folder written by "
                           f"'audit run' or the path of its {RESULTS_FILE}.")
    data = read_json(path, error=ResultsError, fix="it is not a results file as 'audit run' writes it. "
                                                   "Re-run the audit, or restore the file.")
    return Results.from_dict(data, source=repr(str(path)))


