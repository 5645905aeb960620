"""The one results model: written by the runner, read back whole, every section typed and checked once."""

from __future__ import annotations

import json
import math

import pytest

from audit.errors import ResultsError
from audit.json_model import to_json
from audit.result_sections import (Check, DetCurve, DetCurves, FindingsSummary, InversionSection, ProbeSections,
                                   SignalTest, TargetSection, VerdictSection, VerificationSection,
                                   VerificationSummaryRow, VolumeSection)
from audit.results import Disparity, Figure, Results, load_results, write_json_atomic


def sample() -> Results:
    figures = [Figure("detection", "failure_rate", "race", "A", 0.1, 0.05, 0.2, 60, 20, 6, "lower", ["few_errors"]),
               Figure("detection", "failure_rate", "race", "B", math.nan, None, None, 0, 0, 0, "lower", ["undefined"])]
    disparities = [Disparity("detection", "failure_rate", "race", "gap", 0.05, -0.1, 0.2, "A", "B", [],
                             0.4, 0.8, False, True)]
    verification = VerificationSection(
        default_threshold=0.6, target_fmr=1e-3, global_threshold_estimable=False,
        summary=[VerificationSummaryRow(grouping="race", group="A", fta=0.0, fta_ci=[0.0, 0.05])],
        det=DetCurves(thresholds=[0.5, 0.6], by_group={"race": {"A": DetCurve(fmr=[0.0, math.nan], fnmr=[0.2, 0.1])}}))
    check = Check(rule_id="r1", description="d", metric="detection.failure_rate", grouping="race", group="A",
                  kind=None, estimate=0.1, ci_low=0.05, ci_high=0.2, judged_on="ci_high", judged_value=0.2,
                  bound=0.3, operator="<=", passed=True, reason="", flags=("few_errors",))
    return Results(figures, disparities, target=TargetSection(name="dlib", default_threshold=0.6),
                   findings=FindingsSummary(method="holm", alpha=0.05, n_comparisons=1),
                   probes=ProbeSections(volume=VolumeSection(n_draws=5), verification=verification,
                                        extra={"custom": {"n": 1}}),
                   policy_verdict=VerdictSection(policy="p", passed=True, n_checks=1, checks=[check]))


def test_a_written_run_reads_back_the_same(tmp_path):
    results = sample()
    write_json_atomic(tmp_path / "results.json", results.to_dict())
    again = load_results(tmp_path)
    assert again.figures[0] == results.figures[0]
    assert math.isnan(again.figures[1].value)          # NaN is written as null and read back as NaN
    assert again.disparities == results.disparities
    assert again.probes.volume == VolumeSection(n_draws=5)
    assert again.probes.inversion is None              # a probe that did not run has no section
    assert again.probes.get("custom") == {"n": 1}      # another probe's details are kept as they were
    assert again.policy_verdict.checks[0] == results.policy_verdict.checks[0]
    assert again.probes.verification.summary[0].fta_ci == [0.0, 0.05]
    assert math.isnan(again.probes.verification.det.by_group["race"]["A"].fmr[1])
    assert again.to_dict() == results.to_dict()
    written = json.loads((tmp_path / "results.json").read_text())
    assert list(written)[:2] == ["schema_version", "tool"]
    assert "inversion" not in written["probes"] and written["probes"]["custom"] == {"n": 1}


def test_keys_of_a_newer_minor_version_survive_a_read_and_a_write():
    data = sample().to_dict()
    data["schema_version"] = "1.9"
    data["new_section"] = {"a": 1}
    data["probes"]["verification"]["new_curve"] = [1, 2]
    data["target"]["licence"] = "x"
    again = Results.from_dict(data).to_dict()
    assert again["new_section"] == {"a": 1}
    assert again["probes"]["verification"]["new_curve"] == [1, 2]
    assert again["target"]["licence"] == "x"
    assert again["schema_version"] == "1.9"


@pytest.mark.parametrize("field, value, words", [
    ("value", "high", "has value = 'high', not a number"),
    ("n_people", 2.5, "has n_people = 2.5, not a number"),
    ("better", "sideways", "not 'lower' or 'higher'"),
    ("group", 7, "has group = 7, not a valid value"),
    ("flags", "unstable", "not a list of names"),
])
def test_a_damaged_entry_is_named_with_its_field(field, value, words):
    data = sample().to_dict()
    data["figures"][0][field] = value
    with pytest.raises(ResultsError, match=words):
        Results.from_dict(data, source="run/results.json")
    with pytest.raises(ResultsError, match=r"figures\[0\]"):
        Results.from_dict(data, source="run/results.json")


@pytest.mark.parametrize("edit, where, words", [
    (lambda d: d["probes"]["verification"].update(summary="a table"), "probes.verification.summary",
     "str 'a table', not a list"),
    (lambda d: d["probes"]["verification"]["summary"][0].update(fta="low"),
     r"probes.verification.summary\[0\].fta", "not a number"),
    (lambda d: d["probes"].update(volume=[1, 2]), "probes.volume", "not an object"),
    (lambda d: d["policy_verdict"]["checks"][0].update(passed="yes"), r"policy_verdict.checks\[0\].passed",
     "not true or false"),
    (lambda d: d["policy_verdict"]["checks"][0].pop("rule_id"), r"policy_verdict.checks\[0\]", "lacks 'rule_id'"),
    (lambda d: d["findings"].update(n_comparisons=1.5), "findings.n_comparisons", "not a whole number"),
    (lambda d: d["target"].update(name=None), "target.name", "not text"),
    (lambda d: d.update(tests={"x": {"race": {"p_value": "small"}}}), "tests.x.race.p_value", "not a number"),
])
def test_a_damaged_section_is_named_with_its_path(edit, where, words):
    data = sample().to_dict()
    edit(data)
    with pytest.raises(ResultsError, match=f"run/results.json: {where}.*{words}"):
        Results.from_dict(data, source="run/results.json")


def test_a_section_written_by_hand_may_leave_out_what_it_does_not_know():
    data = {"schema_version": "1.1", "figures": [], "disparities": [],
            "probes": {"inversion": {"signal": [{"grouping": "race", "group": "A", "p_value": None}]}}}
    results = Results.from_dict(data)
    signal = results.probes.inversion.signal[0]
    assert isinstance(signal, SignalTest) and math.isnan(signal.p_value) and signal.signal is False
    assert results.probes.inversion.history == [] and results.detection is None
    assert isinstance(results.probes.inversion, InversionSection)


def test_a_check_is_recorded_as_the_gate_made_it():
    check = sample().policy_verdict.checks[0]
    assert to_json(check)["flags"] == ["few_errors"]
    assert check.subject == "race / A"


def test_the_schema_version_is_checked_once_here():
    data = sample().to_dict()
    data["schema_version"] = "2.0"
    with pytest.raises(ResultsError, match="reads 1.x"):
        Results.from_dict(data)
