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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from audit.errors import ResultsError
from audit.outputs import replacing

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

    @property
    def pair(self) -> tuple[str, ...]:
        """The two groups, in a fixed order (the same whichever fares worse)."""
        return tuple(sorted(g for g in (self.worst_group, self.best_group) if g is not None))

    @property
    def key(self) -> str:
        return f"{self.probe}.{self.metric}"


def json_safe(value: Any) -> Any:
    """JSON has no NaN: write it as null so that every JSON parser reads the file."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        try:
            return json_safe(value.item())
        except (TypeError, ValueError):
            pass
    return value


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write a JSON file so that a crash never leaves half a file behind (NaN written as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(json_safe(payload), indent=2, sort_keys=False, allow_nan=False) + "\n",
                       encoding="utf-8")


def figures_to_dicts(figures: Iterable[Figure]) -> list[dict]:
    return [asdict(f) for f in figures]


def disparities_to_dicts(disparities: Iterable[Disparity]) -> list[dict]:
    return [asdict(d) for d in disparities]


def load_results(path: str | os.PathLike) -> dict:
    """Read and check a results.json (or the run folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise ResultsError(f"No results file at {str(path)!r}. Pass a run folder written by "
                           f"'audit run' or the path of its {RESULTS_FILE}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))   # past a byte-order mark, if an editor added one
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ResultsError(f"{str(path)!r} is not valid JSON ({exc}).") from exc
    except OSError as exc:
        raise ResultsError(f"{str(path)!r} cannot be read ({exc.strerror or exc}). Make it readable "
                           "(chmod u+r).") from exc
    if not isinstance(data, dict) or "schema_version" not in data:
        raise ResultsError(f"{str(path)!r} has no 'schema_version': it was not written by 'audit run'.")
    major = str(data["schema_version"]).split(".")[0]
    if major != SCHEMA_VERSION.split(".")[0]:
        raise ResultsError(f"{str(path)!r} has schema_version {data['schema_version']!r}; this version "
                           f"of the tool reads {SCHEMA_VERSION.split('.')[0]}.x. Re-run the audit or "
                           "use a matching version of the tool.")
    for key in ("figures", "disparities"):
        if not isinstance(data.get(key), list):
            raise ResultsError(f"{str(path)!r} lacks the list {key!r}.")
        for index, entry in enumerate(data[key]):
            if not isinstance(entry, dict):
                raise ResultsError(f"{str(path)!r}: {key}[{index}] is {type(entry).__name__} {entry!r:.60}, not "
                                   "an object: the file was edited or damaged. Re-run the audit, or restore "
                                   "the file.")
            flags = entry.get("flags", [])
            if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
                # A string here would be read letter by letter, and a blocking flag missed.
                raise ResultsError(f"{str(path)!r}: {key}[{index}] has flags {flags!r:.60}, not a list of "
                                   "names: the file was edited or damaged. Re-run the audit, or restore the file.")
    return data


def figure_from_dict(d: dict) -> Figure:
    return Figure(**{k: d.get(k) for k in Figure.__dataclass_fields__ if k in d})


def disparity_from_dict(d: dict) -> Disparity:
    return Disparity(**{k: d.get(k) for k in Disparity.__dataclass_fields__ if k in d})
