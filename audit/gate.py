"""Judge a results.json against a release policy: verdicts, table, JUnit XML.

``audit gate`` and ``audit run --policy`` call :func:`evaluate_policy`; the
report's first page shows :func:`format_verdict_table`'s rows.  Every rule
becomes one :class:`Check` per figure it covers (one per group, or one per
disparity), so a reader sees which group failed, by how much, and on which
end of the interval.

Rules that name a metric, grouping or group the results lack are a
:class:`~audit.errors.PolicyError` (exit 2), never a rule that silently
checks nothing.  A figure that is NaN (no data, division by zero) or
infinite (-Infinity is below every max, Infinity above every min) fails its
check with the reason: a release never passes on a number that is not one.

The policy file format and the bound-versus-estimate choice are documented
in :mod:`audit.policy` and ``examples/policy.toml``.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from audit.errors import EXIT_GATE_FAILED, EXIT_OK, PolicyError
from audit.policy import Policy, Rule, load_policy
from audit.json_model import to_json
from audit.result_sections import Check, VerdictSection, subject_label
from audit.results import BLOCKING_FLAGS, Disparity, Results, blocking_flags
from audit.sinks import markdown_text, terminal_text, xml_text

__all__ = ["Check", "Verdict", "load_policy", "evaluate_policy", "verdict_to_junit",
           "format_verdict_table", "verdict_to_json", "verdict_to_markdown"]

MSG_NO_BASELINE = ("rule {rule!r} compares with a baseline run, but none was given. Pass the earlier "
                   "release's results with --baseline OLD_RESULTS (or remove the rule).")
MSG_UNKNOWN_METRIC = ("rule {rule!r}: the results have no {what} for metric {metric!r}. "
                      "Available metrics: {available}.")
MSG_UNKNOWN_KIND = ("rule {rule!r}: the results have no {kind!r} disparity for metric {metric!r}. "
                    "Available kinds for it: {available}.")
MSG_UNKNOWN_GROUPING = ("rule {rule!r}: the results have no grouping {grouping!r} for metric {metric!r}. "
                        "Available groupings: {available}.")
MSG_UNKNOWN_GROUP = ("rule {rule!r}: the results have no group {group!r} {where}for metric {metric!r}. "
                     "Available groups: {available}.")
MSG_BASELINE_LACKS_METRIC = ("rule {rule!r}: the baseline results have no {what} for metric {metric!r}, "
                             "so nothing can be compared. Use a baseline run of the same probes.")
MSG_NO_DIRECTION = ("rule {rule!r}: figure {metric!r} ({grouping} / {group}) has no 'better' direction "
                    "('lower' or 'higher'), so a baseline cannot say whether it got worse. "
                    "Use 'max' or 'min' for this metric instead.")

REASON_UNDEFINED = ("the figure is undefined (NaN{flags}): a rule never passes on a missing number. "
                    "See why the group has no data in results.json (n_images, flags).")
REASON_NOT_FINITE = ("the figure is {value}, not a finite number{flags}: a rule never passes on it. "
                     "'audit run' writes no infinity to results.json, so a file holding one was edited or "
                     "damaged: re-run the audit, or restore the file.")
NOTE_NO_INTERVAL = "no confidence interval: judged on the estimate"


def _pair_label(disparity: Disparity) -> str | None:
    """``Black vs White`` (the worse group first) for a pairwise disparity; None for an older record."""
    if disparity.worst_group is None or disparity.best_group is None:
        return None
    return f"{disparity.worst_group} vs {disparity.best_group}"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    return f"{value:.4g}"


@dataclass(frozen=True)
class _Subject:
    """A figure or a disparity, as the gate sees it (kind is None for a figure)."""

    metric: str
    grouping: str
    group: str | None
    kind: str | None
    value: float
    ci_low: float | None
    ci_high: float | None
    better: str | None
    flags: tuple[str, ...]

    @property
    def key(self) -> tuple:
        """What a baseline run's figure is matched on: for a disparity, the pair in either order."""
        group = self.group if self.kind is None else " vs ".join(sorted((self.group or "").split(" vs ")))
        return (self.metric, self.grouping, group, self.kind)

    @property
    def subject(self) -> str:
        return subject_label(self.grouping, self.group, self.kind)


def _subjects(results: Results) -> list[_Subject]:
    """Every figure and disparity of a run, as the rules see them."""
    figures = [_Subject(metric=f.key, grouping=f.grouping, group=f.group, kind=None, value=float(f.value),
                        ci_low=f.ci_low, ci_high=f.ci_high, better=f.better, flags=tuple(f.flags))
               for f in results.figures]
    disparities = [_Subject(metric=d.key, grouping=d.grouping, group=_pair_label(d), kind=d.kind,
                            value=float(d.value), ci_low=d.ci_low, ci_high=d.ci_high, better="lower",
                            flags=tuple(d.flags))
                   for d in results.disparities]
    return figures + disparities


def _as_results(results: Results | Mapping, which: str) -> Results:
    """Results as read by :func:`audit.results.load_results`; a plain dict is checked the same way."""
    return results if isinstance(results, Results) else Results.from_dict(results, source=f"{which} results")


@dataclass(frozen=True)
class Verdict:
    """The outcome of a policy: every check, and whether the release may go."""

    checks: tuple[Check, ...]
    policy_name: str = "policy"
    policy_source: str | None = None
    compared_with_baseline: bool = False

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.passed)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_GATE_FAILED

    def summary(self) -> str:
        n = len(self.checks)
        if self.passed:
            return f"PASSED: all {n} checks of policy {self.policy_name!r} passed."
        rules = ", ".join(dict.fromkeys(c.rule_id for c in self.failures))
        return (f"FAILED: {len(self.failures)} of {n} checks of policy {self.policy_name!r} "
                f"failed (rules: {rules}).")

    def to_section(self) -> VerdictSection:
        """The verdict as results.json records it."""
        return VerdictSection(policy=self.policy_name, policy_file=self.policy_source, passed=self.passed,
                              exit_code=self.exit_code, n_checks=len(self.checks), n_failed=len(self.failures),
                              compared_with_baseline=self.compared_with_baseline, summary=self.summary(),
                              checks=list(self.checks))

    def to_dict(self) -> dict:
        return to_json(self.to_section())


def _prefix(policy: Policy) -> str:
    return f"Policy {policy.source!r}: " if policy.source else ""


def _names(values: Iterable[Any]) -> str:
    names = sorted({str(v) for v in values if v is not None})
    return ", ".join(names) if names else "(none)"


def _select(rule: Rule, subjects: list[_Subject], *, policy: Policy) -> list[_Subject]:
    """The figures (or disparities) a rule covers; a name the results lack is a PolicyError."""
    what = "disparities" if rule.disparity else "figures"
    pool = [s for s in subjects if (s.kind is None) == (rule.disparity is None)]
    matched = [s for s in pool if s.metric == rule.metric]
    if not matched:
        raise PolicyError(_prefix(policy) + MSG_UNKNOWN_METRIC.format(
            rule=rule.id, what=what, metric=rule.metric, available=_names(s.metric for s in pool)))
    if rule.disparity:
        kinds = matched
        matched = [s for s in matched if s.kind == rule.disparity]
        if not matched:
            raise PolicyError(_prefix(policy) + MSG_UNKNOWN_KIND.format(
                rule=rule.id, kind=rule.disparity, metric=rule.metric, available=_names(s.kind for s in kinds)))
    if rule.grouping is not None:
        groupings = matched
        matched = [s for s in matched if s.grouping == rule.grouping]
        if not matched:
            raise PolicyError(_prefix(policy) + MSG_UNKNOWN_GROUPING.format(
                rule=rule.id, grouping=rule.grouping, metric=rule.metric,
                available=_names(s.grouping for s in groupings)))
    if rule.group is not None:
        groups = matched
        matched = [s for s in matched if s.group == rule.group]
        if not matched:
            where = f"in grouping {rule.grouping!r} " if rule.grouping else ""
            raise PolicyError(_prefix(policy) + MSG_UNKNOWN_GROUP.format(
                rule=rule.id, group=rule.group, where=where, metric=rule.metric,
                available=_names(s.group for s in groups)))
    return matched


def _check(rule: Rule, s: _Subject, **fields: Any) -> Check:
    return Check(rule_id=rule.id, description=rule.description or rule.summary(), metric=s.metric,
                 grouping=s.grouping, group=s.group, kind=s.kind, estimate=s.value,
                 ci_low=s.ci_low, ci_high=s.ci_high, flags=s.flags, **fields)


def _undefined_reason(s: _Subject) -> str:
    """Why a figure that is NaN or infinite fails every rule on it."""
    flags = f", flags: {', '.join(s.flags)}" if s.flags else ""
    if math.isnan(s.value):
        return REASON_UNDEFINED.format(flags=flags)
    return REASON_NOT_FINITE.format(value=_fmt(s.value), flags=flags)


def _blocked_reason(s: _Subject) -> str | None:
    """Why a flagged figure cannot be judged (None when nothing blocks it)."""
    blocked = blocking_flags(s.flags)
    if not blocked:
        return None
    return "; ".join(f"{flag}: {BLOCKING_FLAGS[flag]}" for flag in blocked)


def _bound_check(rule: Rule, s: _Subject, *, operator: str, bound: float) -> Check:
    name = "max" if operator == "<=" else "min"
    blocked = _blocked_reason(s)
    if blocked is not None:
        return _check(rule, s, judged_on="estimate", judged_value=s.value, bound=bound, operator=operator,
                      passed=False, reason=f"cannot be judged: {blocked}")
    if not math.isfinite(s.value):   # NaN (no data) or an infinity (an edited file): never a pass
        return _check(rule, s, judged_on="estimate", judged_value=float("nan"), bound=bound,
                      operator=operator, passed=False, reason=_undefined_reason(s))
    judged_on, judged, note = "estimate", s.value, ""
    if rule.judge_on == "bound":
        end = "ci_high" if operator == "<=" else "ci_low"
        if _finite(getattr(s, end)):
            judged_on, judged = end, getattr(s, end)
        else:
            note = NOTE_NO_INTERVAL
    passed = judged <= bound if operator == "<=" else judged >= bound
    shown = operator if passed else {"<=": ">", ">=": "<"}[operator]
    reason = f"{judged_on} {_fmt(judged)} {shown} {name} {bound:g}"
    estimate_ok = s.value <= bound if operator == "<=" else s.value >= bound
    if not passed and judged_on != "estimate" and estimate_ok:
        reason += (f" (the estimate {_fmt(s.value)} is within the limit, but the interval reaches past it: "
                   "more people per group would narrow it)")
    if note:
        reason += f" ({note})"
    return _check(rule, s, judged_on=judged_on, judged_value=judged, bound=bound, operator=operator,
                  passed=passed, reason=reason, note=note)


def _baseline_check(rule: Rule, s: _Subject, old: _Subject | None) -> Check:
    limit = rule.baseline.limit  # type: ignore[union-attr]
    relative = rule.baseline.relative  # type: ignore[union-attr]
    common = dict(bound=limit, operator="<=", against_baseline=True)
    if old is None:
        return _check(rule, s, judged_on="estimate", judged_value=float("nan"), passed=False,
                      reason=(f"the baseline has no figure for {s.subject}: the runs cannot be compared "
                              "(same dataset and --group-by?)"), **common)
    if s.better not in ("lower", "higher"):
        raise PolicyError(MSG_NO_DIRECTION.format(rule=rule.id, metric=s.metric, grouping=s.grouping,
                                                  group=s.group))
    blocked = _blocked_reason(s)
    if blocked is not None:
        return _check(rule, s, judged_on="estimate", judged_value=float("nan"), passed=False,
                      baseline_value=old.value, reason=f"cannot be judged: {blocked}", **common)
    if not (math.isfinite(s.value) and math.isfinite(old.value)):
        which = "the figure" if not math.isfinite(s.value) else "the baseline's figure"
        return _check(rule, s, judged_on="estimate", judged_value=float("nan"), passed=False,
                      baseline_value=old.value,
                      reason=_undefined_reason(s if not math.isfinite(s.value) else old).replace(
                          "the figure", which, 1), **common)
    judged_on, now, then, note = "estimate", s.value, old.value, ""
    if rule.judge_on == "bound":
        # Compare like with like: the pessimistic end now with the same end then,
        # so that an unchanged model with a wide interval does not fail.
        end = "ci_high" if s.better == "lower" else "ci_low"
        if _finite(getattr(s, end)) and _finite(getattr(old, end)):
            judged_on, now, then = end, getattr(s, end), getattr(old, end)
        else:
            note = NOTE_NO_INTERVAL
    worsening = now - then if s.better == "lower" else then - now
    if relative:
        judged = worsening / abs(then) if then != 0 else (0.0 if worsening <= 0 else math.inf)
    else:
        judged = worsening
    passed = judged <= limit
    direction = "worse" if worsening > 0 else "not worse"
    amount = f"{judged:.2%}" if relative else _fmt(judged)
    reason = (f"{judged_on} {_fmt(now)} now vs {_fmt(then)} in the baseline ({s.better} is better): "
              f"{direction}, change {amount} {'<=' if passed else '>'} allowed {limit:g}"
              f"{' (relative)' if relative else ''}")
    if note:
        reason += f" ({note})"
    return _check(rule, s, judged_on=judged_on, judged_value=judged, passed=passed, reason=reason,
                  note=note, baseline_value=then, **common)


def evaluate_policy(policy: Policy, results: Results | Mapping, *,
                    baseline: Results | Mapping | None = None) -> Verdict:
    """Judge ``results`` (from :func:`audit.results.load_results`) against ``policy``.

    ``baseline`` is an earlier run's results, needed by rules with ``baseline = {...}``.
    Raises :class:`PolicyError` when a rule names something the results lack.
    """
    subjects = _subjects(_as_results(results, "the"))
    old_subjects = _subjects(_as_results(baseline, "the baseline")) if baseline is not None else []
    old_index = {s.key: s for s in old_subjects}
    checks: list[Check] = []
    for rule in policy.rules:
        covered = _select(rule, subjects, policy=policy)
        if rule.baseline is not None:
            if baseline is None:
                raise PolicyError(_prefix(policy) + MSG_NO_BASELINE.format(rule=rule.id))
            if not any(s.metric == rule.metric and s.kind == rule.disparity for s in old_subjects):
                raise PolicyError(_prefix(policy) + MSG_BASELINE_LACKS_METRIC.format(
                    rule=rule.id, what="disparities" if rule.disparity else "figures", metric=rule.metric))
            checks.extend(_baseline_check(rule, s, old_index.get(s.key)) for s in covered)
            continue
        for s in covered:
            if rule.min is not None:
                checks.append(_bound_check(rule, s, operator=">=", bound=rule.min))
            if rule.max is not None:
                checks.append(_bound_check(rule, s, operator="<=", bound=rule.max))
    return Verdict(checks=tuple(checks), policy_name=policy.name, policy_source=policy.source,
                   compared_with_baseline=baseline is not None)


def verdict_to_json(verdict: Verdict) -> str:
    """The machine-readable verdict (``audit gate --json``); NaN is written as null."""
    return json.dumps(verdict.to_dict(), indent=2, allow_nan=False)


TABLE_COLUMNS = ("rule", "metric", "figure of", "estimate [interval]", "judged", "bound", "result")


def _table_row(check: Check) -> tuple[str, ...]:
    interval = (f" [{_fmt(check.ci_low)}, {_fmt(check.ci_high)}]"
                if check.ci_low is not None or check.ci_high is not None else "")
    if check.against_baseline:
        judged = f"change {_fmt(check.judged_value)} ({check.judged_on})"
    else:
        judged = f"{check.judged_on} {_fmt(check.judged_value)}"
    cells = (check.rule_id, check.metric, check.subject, f"{_fmt(check.estimate)}{interval}", judged,
             f"{check.operator} {check.bound:g}", "pass" if check.passed else "FAIL")
    return tuple(terminal_text(cell) for cell in cells)


def format_verdict_table(verdict: Verdict) -> str:
    """A plain-text table, one row per check, then the reasons of failures and notes.

    Groups, rule ids and reasons come from the dataset and the policy: every
    cell is passed through :func:`audit.sinks.terminal_text` before the
    columns are measured, so the table stays aligned and a label cannot
    drive the terminal (or turn a FAIL row into one that reads "pass").
    """
    rows = [TABLE_COLUMNS] + [_table_row(c) for c in verdict.checks]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    explained = [c for c in verdict.checks if not c.passed or c.note]
    if explained:
        lines.append("")
        for c in explained:
            lines.append(terminal_text(f"{'FAIL' if not c.passed else 'note'} {c.rule_id} {c.subject}: {c.reason}"))
    lines.append("")
    lines.append(terminal_text(verdict.summary(), multiline=True))
    return "\n".join(lines) + "\n"


MARKDOWN_COLUMNS = ("rule", "metric", "figure of", "judged value", "limit", "result", "reason")


def _findings_line(results: Results | Mapping | None) -> str | None:
    """``Findings: 2 of 36 comparisons ...``: the run's differences that survived the correction."""
    if results is None:
        return None
    run = _as_results(results, "the")
    summary = run.findings
    n_findings = summary.n_findings if summary is not None else sum(d.finding for d in run.disparities)
    if summary is None or not summary.n_comparisons:
        return f"**Findings:** {n_findings}"
    how = f" ({markdown_text(summary.method)}, alpha {summary.alpha:g})" if summary.method and summary.alpha else ""
    return (f"**Findings:** {n_findings} of {summary.n_comparisons} comparisons between groups "
            f"survive the correction{how}.")


def _markdown_row(check: Check) -> str:
    judged = (f"change {_fmt(check.judged_value)} ({check.judged_on})" if check.against_baseline
              else f"{check.judged_on} {_fmt(check.judged_value)}")
    cells = [markdown_text(c) for c in (check.rule_id, check.metric, check.subject, judged,
                                         f"{check.operator} {check.bound:g}")]
    cells.append("pass" if check.passed else "**FAIL**")
    cells.append(markdown_text(check.reason))
    return "| " + " | ".join(cells) + " |"


def verdict_to_markdown(verdict: Verdict, results: Results | Mapping | None = None) -> str:
    """The verdict as a short Markdown summary, for a CI job summary or a merge-request comment.

    A title with PASS or FAIL, the one-line summary, one table row per
    check (the same checks, in the same order, as :func:`verdict_to_junit`)
    and, given the run's ``results``, how many differences between groups
    are findings.  Every text from the results or the policy goes through
    :func:`audit.sinks.markdown_text`: a group label holding ``|``, a
    backtick or a line feed must not split, swallow or end a row, so that
    no FAIL can be read under another rule's name or as "pass".
    """
    status = "PASS" if verdict.passed else "FAIL"
    lines = [f"## Bias audit gate: {status}", "",
             f"{markdown_text(verdict.summary())}" + (
                 f" Policy file: {markdown_text(verdict.policy_source)}." if verdict.policy_source else ""),
             ""]
    if verdict.checks:
        lines.append("| " + " | ".join(MARKDOWN_COLUMNS) + " |")
        lines.append("|" + "|".join(" --- " for _ in MARKDOWN_COLUMNS) + "|")
        lines.extend(_markdown_row(check) for check in verdict.checks)
        lines.append("")
    findings = _findings_line(results)
    if findings is not None:
        lines.extend([findings, ""])
    return "\n".join(lines)


def verdict_to_junit(verdict: Verdict) -> str:
    """JUnit XML: one test case per check, a <failure> with the reason for each failed one.

    Every text from the results or the policy goes through
    :func:`audit.sinks.xml_text`: a label with a control character must not
    make the file malformed (CI systems reject it whole).
    """
    n, failed = len(verdict.checks), len(verdict.failures)
    counts = {"tests": str(n), "failures": str(failed), "errors": "0", "skipped": "0"}
    suites = ET.Element("testsuites", {"name": "audit gate", **{k: counts[k] for k in ("tests", "failures", "errors")}})
    suite = ET.SubElement(suites, "testsuite", {"name": xml_text(verdict.policy_name), **counts, "time": "0"})
    if verdict.policy_source:
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", {"name": "policy_file", "value": xml_text(verdict.policy_source)})
    for check in verdict.checks:
        case = ET.SubElement(suite, "testcase", {
            "classname": xml_text(f"gate.{check.rule_id}"),
            "name": xml_text(f"{check.metric} {check.subject} {check.operator} {check.bound:g}"),
            "time": "0",
        })
        if not check.passed:
            failure = ET.SubElement(case, "failure", {"message": xml_text(check.reason), "type": "PolicyRuleFailed"})
            failure.text = xml_text(f"{check.description}\n{check.reason}")
        out = ET.SubElement(case, "system-out")
        out.text = xml_text(check.reason)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
