"""`audit gate` driven in-process: exit codes, table, --json, --junit, --baseline."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from audit.cli import cli

POLICY = """
[policy]
name = "release gate"

[[rule]]
id = "reconstruction-privacy"
metric = "inversion.success_rate_at_default"
grouping = "race"
max = 0.90

[[rule]]
id = "detection-gap"
metric = "detection.failure_rate"
disparity = "gap"
max = 0.02
"""


def figure(metric, grouping, group, value, ci=(None, None), better="lower"):
    probe, _, name = metric.partition(".")
    return {"probe": probe, "metric": name, "grouping": grouping, "group": group, "value": value,
            "ci_low": ci[0], "ci_high": ci[1], "n_images": 100, "n_people": 50, "count": 10,
            "better": better, "flags": []}


def write_results(folder: Path, *, black_high=0.88, gap_high=0.015, distance=0.6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "schema_version": "1.0", "target": {"name": "dlib"}, "dataset": {}, "settings": {},
        "figures": [
            figure("inversion.success_rate_at_default", "race", "Black", 0.85, (0.80, black_high)),
            figure("inversion.success_rate_at_default", "race", "White", 0.70, (0.65, 0.75)),
            figure("inversion.mean_distance", "race", "Black", distance, better="higher"),
            figure("detection.failure_rate", "race", "Black", 0.03, (0.02, 0.04)),
        ],
        "disparities": [
            {"probe": "detection", "metric": "failure_rate", "grouping": "race", "kind": "gap",
             "value": 0.01, "ci_low": 0.005, "ci_high": gap_high, "worst_group": "Black",
             "best_group": "White", "flags": []},
        ],
    }
    path = folder / "results.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def gate(runner: CliRunner, *args: str):
    return runner.invoke(cli, ["gate", *map(str, args)], catch_exceptions=False)


def write_policy(tmp_path: Path, text: str = POLICY) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_all_rules_pass_exit_0(runner, tmp_path):
    run = write_results(tmp_path / "run")
    result = gate(runner, tmp_path / "run", "--policy", write_policy(tmp_path))  # a run folder works too
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["rule", "metric", "figure"]
    assert [line.split()[0] for line in lines[2:5]] == ["reconstruction-privacy"] * 2 + ["detection-gap"]
    assert lines[-1] == "PASSED: all 3 checks of policy 'release gate' passed."
    assert run.is_file()


def test_failed_rule_exit_1(runner, tmp_path):
    run = write_results(tmp_path / "run", black_high=0.93)
    result = gate(runner, run, "--policy", write_policy(tmp_path))
    assert result.exit_code == 1
    assert ("FAIL reconstruction-privacy race / Black: ci_high 0.93 > max 0.9 (the estimate 0.85 is within "
            "the limit, but the interval reaches past it: more people per group would narrow it)"
            ) in result.stdout
    assert result.stdout.splitlines()[-1] == ("FAILED: 1 of 3 checks of policy 'release gate' failed "
                                              "(rules: reconstruction-privacy).")


def test_json_goes_to_stdout_and_table_to_stderr(runner, tmp_path):
    run = write_results(tmp_path / "run", gap_high=0.03)
    result = gate(runner, run, "--policy", write_policy(tmp_path), "--json")
    assert result.exit_code == 1
    verdict = json.loads(result.stdout)
    assert (verdict["passed"], verdict["exit_code"], verdict["n_failed"]) == (False, 1, 1)
    assert [(c["rule_id"], c["passed"]) for c in verdict["checks"]] == [
        ("reconstruction-privacy", True), ("reconstruction-privacy", True), ("detection-gap", False)]
    assert "FAILED: 1 of 3 checks" in result.stderr


def test_junit_file_parses_back(runner, tmp_path):
    run = write_results(tmp_path / "run", gap_high=0.03)
    junit = tmp_path / "reports" / "gate.xml"
    result = gate(runner, run, "--policy", write_policy(tmp_path), "--junit", junit)
    assert result.exit_code == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")
    failures = [case for case in suite.iter("testcase") if case.find("failure") is not None]
    assert [case.get("name") for case in failures] == ["detection.failure_rate race gap Black vs White <= 0.02"]
    assert failures[0].find("failure").get("message") == (
        "ci_high 0.03 > max 0.02 (the estimate 0.01 is within the limit, but the interval reaches past it: "
        "more people per group would narrow it)")


def test_junit_with_junitparser(runner, tmp_path):
    junitparser = pytest.importorskip("junitparser")
    run = write_results(tmp_path / "run")
    junit = tmp_path / "gate.xml"
    assert gate(runner, run, "--policy", write_policy(tmp_path), "--junit", junit).exit_code == 0
    xml = junitparser.JUnitXml.fromfile(str(junit))
    cases = [case for suite in xml for case in suite]
    assert len(cases) == 3 and all(case.is_passed for case in cases)


def test_baseline(runner, tmp_path):
    policy = write_policy(tmp_path, """
[[rule]]
id = "no-regression"
metric = "inversion.mean_distance"
baseline = { max_worsening = 0.05 }
""")
    old = write_results(tmp_path / "old", distance=0.60)
    better = write_results(tmp_path / "better", distance=0.65)
    worse = write_results(tmp_path / "worse", distance=0.50)
    assert gate(runner, better, "--policy", policy, "--baseline", old).exit_code == 0
    result = gate(runner, worse, "--policy", policy, "--baseline", old)
    assert result.exit_code == 1
    assert "FAIL no-regression race / Black: estimate 0.5 now vs 0.6 in the baseline" in result.stdout
    missing = gate(runner, worse, "--policy", policy)
    assert missing.exit_code == 2
    assert missing.stderr == (f"Error: Policy {str(policy)!r}: rule 'no-regression' compares with a baseline "
                              "run, but none was given. Pass the earlier release's results with --baseline "
                              "OLD_RESULTS (or remove the rule).\n")


@pytest.mark.parametrize("policy_text, message", [
    ("[[rule]\nmetric = 1\n", None),  # malformed TOML: checked by prefix below
    ('[[rule]]\nid = "x"\nmetric = "inversion.sucess_rate"\nmax = 0.9\n',
     "rule 'x': the results have no figures for metric 'inversion.sucess_rate'. Available metrics: "
     "detection.failure_rate, inversion.mean_distance, inversion.success_rate_at_default."),
    ('[[rule]]\nid = "x"\nmetric = "inversion.success_rate_at_default"\ngrouping = "race"\n'
     'group = "Asian"\nmax = 0.9\n',
     "rule 'x': the results have no group 'Asian' in grouping 'race' for metric "
     "'inversion.success_rate_at_default'. Available groups: Black, White."),
    ('[[rule]]\nid = "x"\nmetric = "inversion.success_rate_at_default"\ngrouping = "gender"\nmax = 0.9\n',
     "rule 'x': the results have no grouping 'gender' for metric 'inversion.success_rate_at_default'. "
     "Available groupings: race."),
    ('[[rule]]\nid = "x"\nmetric = "inversion.success_rate_at_default"\nmax = 0.9\nlimit = 1\n',
     "rule 'x' has unknown key 'limit'. Allowed keys: id, description, metric, grouping, group, disparity, "
     "max, min, baseline, judge_on."),
    ('[[rule]]\nid = "x"\nmetric = "inversion.success_rate_at_default"\n',
     "rule 'x' has no bound. Set 'max' and/or 'min' (or baseline = { max_worsening = ... })."),
])
def test_invalid_policy_exit_2(runner, tmp_path, policy_text, message):
    run = write_results(tmp_path / "run")
    policy = write_policy(tmp_path, policy_text)
    result = gate(runner, run, "--policy", policy)
    assert result.exit_code == 2
    assert result.stdout == ""
    if message is None:
        assert result.stderr.startswith(f"Error: Policy {str(policy)!r} is not valid TOML (")
    else:
        assert result.stderr == f"Error: Policy {str(policy)!r}: {message}\n"


def test_invalid_results_exit_2(runner, tmp_path):
    missing = tmp_path / "nothing"
    result = gate(runner, missing, "--policy", write_policy(tmp_path))
    assert result.exit_code == 2
    assert result.stderr == (f"Error: No results file at {str(missing)!r}. Pass a run folder written by "
                             "'audit run' or the path of its results.json.\n")
    bad = tmp_path / "bad.json"
    bad.write_text("{}", encoding="utf-8")
    result = gate(runner, bad, "--policy", write_policy(tmp_path))
    assert result.exit_code == 2
    assert "has no 'schema_version'" in result.stderr


def test_policy_option_is_required(runner, tmp_path):
    result = gate(runner, write_results(tmp_path / "run"))
    assert result.exit_code == 2
    assert "Missing option '--policy'" in result.stderr


def test_help_has_an_example(runner):
    result = gate(runner, "--help")
    assert result.exit_code == 0
    assert "Example:" in result.stdout
    assert "audit gate runs/dlib --policy examples/policy.toml" in result.stdout
