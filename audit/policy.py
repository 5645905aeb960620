"""Release policies: the TOML file that says how biased a model may be.

A policy is a list of rules on the figures and disparities of a results.json
(:mod:`audit.results`).  This module only reads and checks the file; judging
a run against it is :mod:`audit.gate`'s job.

Example::

    [policy]
    name = "release gate"
    judge_on = "bound"

    [[rule]]
    id = "reconstruction-privacy"
    metric = "inversion.success_rate_at_default"
    grouping = "race"
    max = 0.90

A rule bounds either every matching group figure (``max`` / ``min``), or the
disparity between every two groups of a grouping (``disparity = "ratio"``
or ``"gap"`` plus ``max`` / ``min``: one check per pair), or the change
since a baseline run (``baseline = { max_worsening = 0.05 }``).

Why ``judge_on = "bound"`` is the default: a bootstrap interval says how far
the figure could be from the truth given how few people were measured.
Judging ``max`` on ``ci_high`` (and ``min`` on ``ci_low``) means a release
passes only if even the pessimistic end of the interval is within the limit,
so a lucky sample cannot pass a biased model; the price is that a small
dataset (wide intervals) can fail a model whose estimate is fine -- the fix
is more people per group, not a looser limit.  ``judge_on = "estimate"``
judges the point estimate instead: noise can then pass or fail a release.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.errors import PolicyError
from audit.results import DISPARITY_KINDS, RETIRED_DISPARITY_KINDS

JUDGE_ON_CHOICES = ("bound", "estimate")
DEFAULT_JUDGE_ON = "bound"
DEFAULT_POLICY_NAME = "policy"

POLICY_TABLE_KEYS = ("name", "description", "judge_on")
RULE_KEYS = ("id", "description", "metric", "grouping", "group", "disparity",
             "max", "min", "baseline", "judge_on")
BASELINE_KEYS = ("max_worsening", "max_relative_worsening")
TOP_LEVEL_KEYS = ("policy", "rule")

# Messages (tests assert on them exactly).  Rule-level messages are prefixed
# with "Policy '<file>': " by load_policy.
MSG_NO_FILE = "No policy file at {path!r}. Pass the path of a TOML policy, e.g. --policy examples/policy.toml."
MSG_BAD_TOML = "Policy {path!r} is not valid TOML ({error}). Fix the syntax; see examples/policy.toml."
MSG_UNREADABLE = "Policy {path!r} cannot be read ({error}). Check its permissions, or pass a readable copy."
MSG_UNKNOWN_TOP_KEY = ("unknown top-level key {key!r}. Allowed: {allowed}. "
                       "Rules go in [[rule]] tables, settings in [policy].")
MSG_UNKNOWN_POLICY_KEY = "[policy] has unknown key {key!r}. Allowed keys: {allowed}."
MSG_RULES_NOT_ARRAY = "'rule' must be an array of tables: write each rule under its own [[rule]] header, not [rule]."
MSG_NO_RULES = "no rules. Add at least one [[rule]] table; see examples/policy.toml."
MSG_UNKNOWN_RULE_KEY = "rule {rule!r} has unknown key {key!r}. Allowed keys: {allowed}."
MSG_UNKNOWN_BASELINE_KEY = "rule {rule!r}: baseline has unknown key {key!r}. Allowed keys: {allowed}."
MSG_DUPLICATE_ID = "two rules have the id {rule!r}. Give each [[rule]] a unique id."
MSG_NOT_STRING = "rule {rule!r}: {name!r} must be a string, got {value!r}."
MSG_BAD_METRIC = ("rule {rule!r}: metric {value!r} is not named '<probe>.<metric>'. "
                  "Write it as in results.json, e.g. 'inversion.mean_distance'.")
MSG_MISSING_METRIC = "rule {rule!r} has no 'metric'. Name the figure it judges, e.g. metric = \"inversion.mean_distance\"."
MSG_NOT_NUMBER = ("rule {rule!r}: {name!r} must be a finite number, got {value!r}. "
                  "Write it without quotes, e.g. {name} = 0.9.")
MSG_NEGATIVE = "rule {rule!r}: {name!r} must be >= 0, got {value!r}. It is how much worse a group may get."
MSG_MISSING_BOUND = ("rule {rule!r} has no bound. Set 'max' and/or 'min' "
                     "(or baseline = {{ max_worsening = ... }}).")
MSG_BOUND_AND_BASELINE = ("rule {rule!r} sets both a bound ('max'/'min') and 'baseline'. "
                          "Split it into two rules: one with the bound, one with the baseline.")
MSG_MIN_ABOVE_MAX = "rule {rule!r}: min {min!r} is above max {max!r}; no figure can pass. Swap them."
MSG_BAD_DISPARITY = "rule {rule!r}: disparity {value!r} is unknown. Allowed: {allowed}."
MSG_RETIRED_DISPARITY = ("rule {rule!r}: disparity {value!r} (the largest over all groups, whose interval did not "
                         "hold when groups are equal) was replaced by {new!r}, which compares every pair of groups: "
                         "the rule then checks each pair, the worst included. Write disparity = {new!r}.")
MSG_GROUP_WITH_DISPARITY = ("rule {rule!r}: 'group' cannot be used with 'disparity' (a disparity compares "
                            "all groups of a grouping). Remove 'group' or 'disparity'.")
MSG_BAD_JUDGE_ON = "{where}: judge_on {value!r} is unknown. Allowed: 'bound', 'estimate'."
MSG_BASELINE_NOT_TABLE = ("rule {rule!r}: baseline must be a table, got {value!r}. "
                          "Write e.g. baseline = {{ max_worsening = 0.05 }}.")
MSG_BASELINE_ONE = ("rule {rule!r}: baseline must set exactly one of 'max_worsening', "
                    "'max_relative_worsening', got {keys}.")


def _allowed(keys: tuple[str, ...]) -> str:
    return ", ".join(keys)


def _check_number(value: Any, *, rule: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PolicyError(MSG_NOT_NUMBER.format(rule=rule, name=name, value=value))
    return float(value)


def _check_optional_string(value: Any, *, rule: str, name: str) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise PolicyError(MSG_NOT_STRING.format(rule=rule, name=name, value=value))


@dataclass(frozen=True)
class BaselineLimit:
    """How much worse than the baseline run a figure may get.

    ``max_worsening`` is absolute (in the figure's unit); ``max_relative_worsening``
    is a fraction of the baseline's figure (0.10 = ten per cent worse).  The
    direction of "worse" comes from the figure's ``better`` field; a disparity
    is always better lower.
    """

    max_worsening: float | None = None
    max_relative_worsening: float | None = None
    rule_id: str = "baseline"

    def __post_init__(self) -> None:
        given = [k for k in BASELINE_KEYS if getattr(self, k) is not None]
        if len(given) != 1:
            raise PolicyError(MSG_BASELINE_ONE.format(rule=self.rule_id,
                                                      keys=", ".join(given) or "none"))
        name = given[0]
        value = _check_number(getattr(self, name), rule=self.rule_id, name=name)
        if value < 0:
            raise PolicyError(MSG_NEGATIVE.format(rule=self.rule_id, name=name, value=value))
        object.__setattr__(self, name, value)

    @property
    def relative(self) -> bool:
        return self.max_relative_worsening is not None

    @property
    def limit(self) -> float:
        return self.max_relative_worsening if self.relative else self.max_worsening  # type: ignore[return-value]


@dataclass(frozen=True)
class Rule:
    """One rule of a policy, checked at construction."""

    id: str
    metric: str
    grouping: str | None = None
    group: str | None = None
    disparity: str | None = None
    max: float | None = None
    min: float | None = None
    baseline: BaselineLimit | None = None
    judge_on: str = DEFAULT_JUDGE_ON
    description: str = ""

    def __post_init__(self) -> None:
        rid = self.id
        _check_optional_string(self.id, rule=rid, name="id")
        if self.metric is None:
            raise PolicyError(MSG_MISSING_METRIC.format(rule=rid))
        _check_optional_string(self.metric, rule=rid, name="metric")
        probe, dot, metric = self.metric.partition(".")
        if not (probe and dot and metric):
            raise PolicyError(MSG_BAD_METRIC.format(rule=rid, value=self.metric))
        for name in ("grouping", "group", "disparity"):
            _check_optional_string(getattr(self, name), rule=rid, name=name)
        if not isinstance(self.description, str):
            raise PolicyError(MSG_NOT_STRING.format(rule=rid, name="description", value=self.description))
        if self.disparity in RETIRED_DISPARITY_KINDS:
            raise PolicyError(MSG_RETIRED_DISPARITY.format(rule=rid, value=self.disparity,
                                                           new=RETIRED_DISPARITY_KINDS[self.disparity]))
        if self.disparity is not None and self.disparity not in DISPARITY_KINDS:
            raise PolicyError(MSG_BAD_DISPARITY.format(rule=rid, value=self.disparity,
                                                       allowed=_allowed(DISPARITY_KINDS)))
        if self.disparity is not None and self.group is not None:
            raise PolicyError(MSG_GROUP_WITH_DISPARITY.format(rule=rid))
        if self.judge_on not in JUDGE_ON_CHOICES:
            raise PolicyError(MSG_BAD_JUDGE_ON.format(where=f"rule {rid!r}", value=self.judge_on))
        for name in ("max", "min"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _check_number(value, rule=rid, name=name))
        has_bound = self.max is not None or self.min is not None
        if self.baseline is not None and has_bound:
            raise PolicyError(MSG_BOUND_AND_BASELINE.format(rule=rid))
        if self.baseline is None and not has_bound:
            raise PolicyError(MSG_MISSING_BOUND.format(rule=rid))
        if self.max is not None and self.min is not None and self.min > self.max:
            raise PolicyError(MSG_MIN_ABOVE_MAX.format(rule=rid, min=self.min, max=self.max))

    def summary(self) -> str:
        """A one-line reading of the rule, used when it has no description."""
        where = f"grouping {self.grouping}" if self.grouping else "every grouping"
        if self.group:
            where += f", group {self.group}"
        subject = f"{self.disparity} of {self.metric}" if self.disparity else self.metric
        if self.baseline is not None:
            amount = (f"{self.baseline.limit:g} (relative)" if self.baseline.relative
                      else f"{self.baseline.limit:g}")
            return f"{subject} ({where}) worsens by at most {amount} against the baseline"
        bounds = []
        if self.min is not None:
            bounds.append(f">= {self.min:g}")
        if self.max is not None:
            bounds.append(f"<= {self.max:g}")
        return f"{subject} ({where}) {' and '.join(bounds)}, judged on the {self.judge_on}"


@dataclass(frozen=True)
class Policy:
    """A named, ordered set of rules; ``source`` is the file it came from."""

    rules: tuple[Rule, ...]
    name: str = DEFAULT_POLICY_NAME
    description: str = ""
    judge_on: str = DEFAULT_JUDGE_ON
    source: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        if not self.rules:
            raise PolicyError(MSG_NO_RULES)
        if self.judge_on not in JUDGE_ON_CHOICES:
            raise PolicyError(MSG_BAD_JUDGE_ON.format(where="[policy]", value=self.judge_on))
        for name in ("name", "description"):
            if not isinstance(getattr(self, name), str):
                raise PolicyError(f"[policy]: {name!r} must be a string, got {getattr(self, name)!r}.")
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise PolicyError(MSG_DUPLICATE_ID.format(rule=rule.id))
            seen.add(rule.id)

    @property
    def needs_baseline(self) -> bool:
        return any(rule.baseline is not None for rule in self.rules)


def _rule_from_table(table: Any, *, index: int, judge_on: str) -> Rule:
    default_id = f"rule-{index}"
    if not isinstance(table, dict):
        raise PolicyError(MSG_RULES_NOT_ARRAY)
    rid = table.get("id", default_id)
    label = rid if isinstance(rid, str) and rid else default_id
    for key in table:
        if key not in RULE_KEYS:
            raise PolicyError(MSG_UNKNOWN_RULE_KEY.format(rule=label, key=key, allowed=_allowed(RULE_KEYS)))
    kwargs = dict(table)
    kwargs.setdefault("id", default_id)
    kwargs.setdefault("judge_on", judge_on)
    kwargs.setdefault("description", "")
    if "metric" not in kwargs:
        raise PolicyError(MSG_MISSING_METRIC.format(rule=label))
    baseline = kwargs.get("baseline")
    if baseline is not None:
        if not isinstance(baseline, dict):
            raise PolicyError(MSG_BASELINE_NOT_TABLE.format(rule=label, value=baseline))
        for key in baseline:
            if key not in BASELINE_KEYS:
                raise PolicyError(MSG_UNKNOWN_BASELINE_KEY.format(rule=label, key=key,
                                                                  allowed=_allowed(BASELINE_KEYS)))
        kwargs["baseline"] = BaselineLimit(**baseline, rule_id=label)
    return Rule(**kwargs)


def policy_from_dict(data: dict, *, source: str | None = None) -> Policy:
    """Build a :class:`Policy` from parsed TOML (errors are not yet prefixed with the file)."""
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise PolicyError(MSG_UNKNOWN_TOP_KEY.format(key=key, allowed=_allowed(TOP_LEVEL_KEYS)))
    settings = data.get("policy", {})
    if not isinstance(settings, dict):
        raise PolicyError(f"'policy' must be a table ([policy]), got {settings!r}.")
    for key in settings:
        if key not in POLICY_TABLE_KEYS:
            raise PolicyError(MSG_UNKNOWN_POLICY_KEY.format(key=key, allowed=_allowed(POLICY_TABLE_KEYS)))
    judge_on = settings.get("judge_on", DEFAULT_JUDGE_ON)
    if judge_on not in JUDGE_ON_CHOICES:
        raise PolicyError(MSG_BAD_JUDGE_ON.format(where="[policy]", value=judge_on))
    tables = data.get("rule", [])
    if not isinstance(tables, list):
        raise PolicyError(MSG_RULES_NOT_ARRAY)
    rules = tuple(_rule_from_table(t, index=i, judge_on=judge_on) for i, t in enumerate(tables, start=1))
    return Policy(rules=rules, name=settings.get("name", DEFAULT_POLICY_NAME),
                  description=settings.get("description", ""), judge_on=judge_on, source=source)


def load_policy(path: str | os.PathLike) -> Policy:
    """Read and check a policy TOML file; every problem is a :class:`PolicyError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise PolicyError(MSG_NO_FILE.format(path=str(path)))
    try:
        # A byte-order mark (Notepad's "UTF-8 with BOM") is not part of the TOML: read past it.
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except ValueError as exc:   # TOMLDecodeError, UnicodeDecodeError, and an int past Python's digit limit
        raise PolicyError(MSG_BAD_TOML.format(path=str(path), error=exc)) from exc
    except RecursionError as exc:
        raise PolicyError(MSG_BAD_TOML.format(path=str(path), error="nested too deeply")) from exc
    except OSError as exc:
        raise PolicyError(MSG_UNREADABLE.format(path=str(path), error=exc.strerror or exc)) from exc
    try:
        return policy_from_dict(data, source=str(path))
    except PolicyError as exc:
        raise PolicyError(f"Policy {str(path)!r}: {exc}") from exc
