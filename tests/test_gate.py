"""audit.policy + audit.gate: rules judged on small made-up results dicts."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from audit.errors import EXIT_GATE_FAILED, EXIT_OK, PolicyError, ResultsError
from audit.gate import evaluate_policy, format_verdict_table, load_policy, verdict_to_json, verdict_to_junit
from audit.policy import BaselineLimit, Policy, Rule, policy_from_dict

REPO_ROOT = Path(__file__).resolve().parents[1]


def figure(metric: str, grouping: str, group: str, value, ci=(None, None), better="lower", flags=()):
    probe, _, name = metric.partition(".")
    return {"probe": probe, "metric": name, "grouping": grouping, "group": group, "value": value,
            "ci_low": ci[0], "ci_high": ci[1], "n_images": 100, "n_people": 50, "count": 10,
            "better": better, "flags": list(flags)}


def disparity(metric: str, grouping: str, kind: str, value, ci=(None, None), pair=("Black", "White")):
    probe, _, name = metric.partition(".")
    return {"probe": probe, "metric": name, "grouping": grouping, "kind": kind, "value": value,
            "ci_low": ci[0], "ci_high": ci[1], "worst_group": pair[0], "best_group": pair[1], "flags": []}


def results(figures=(), disparities=()):
    return {"schema_version": "1.0", "target": {"name": "test"}, "dataset": {}, "settings": {},
            "figures": list(figures), "disparities": list(disparities)}


SUCCESS = "inversion.success_rate_at_default"
DISTANCE = "inversion.mean_distance"


def privacy_results(black=(0.85, (0.80, 0.88)), white=(0.70, (0.65, 0.75))):
    return results([figure(SUCCESS, "race", "Black", black[0], black[1]),
                    figure(SUCCESS, "race", "White", white[0], white[1]),
                    figure(SUCCESS, "gender", "Female", 0.5, (0.4, 0.6)),
                    figure(SUCCESS, "all", "all", 0.6, (0.55, 0.65))])


def one_rule(**rule) -> Policy:
    rule.setdefault("id", "r")
    return policy_from_dict({"policy": {"name": "test policy"}, "rule": [rule]})


# --- bounds on group figures -------------------------------------------------------------

def test_max_on_every_group_passes():
    verdict = evaluate_policy(one_rule(metric=SUCCESS, grouping="race", max=0.9), privacy_results())
    assert verdict.passed and verdict.exit_code == EXIT_OK
    assert [(c.group, c.judged_on, c.judged_value) for c in verdict.checks] == [
        ("Black", "ci_high", 0.88), ("White", "ci_high", 0.75)]


def test_max_fails_on_one_group():
    verdict = evaluate_policy(one_rule(metric=SUCCESS, grouping="race", max=0.80), privacy_results())
    assert not verdict.passed and verdict.exit_code == EXIT_GATE_FAILED
    assert [(c.group, c.passed) for c in verdict.checks] == [("Black", False), ("White", True)]
    assert verdict.failures[0].reason == "ci_high 0.88 > max 0.8"


def test_min_judged_on_lower_bound():
    ok = evaluate_policy(one_rule(metric=SUCCESS, grouping="race", min=0.6), privacy_results())
    assert ok.passed
    assert [c.judged_on for c in ok.checks] == ["ci_low", "ci_low"]
    bad = evaluate_policy(one_rule(metric=SUCCESS, grouping="race", min=0.7), privacy_results())
    assert [(c.group, c.passed) for c in bad.checks] == [("Black", True), ("White", False)]
    assert bad.failures[0].reason == ("ci_low 0.65 < min 0.7 (the estimate 0.7 is within the limit, "
                                      "but the interval reaches past it: more people per group would narrow it)")


def test_min_and_max_in_one_rule_give_two_checks_per_group():
    verdict = evaluate_policy(one_rule(metric=SUCCESS, grouping="race", min=0.6, max=0.9), privacy_results())
    assert [(c.group, c.operator) for c in verdict.checks] == [
        ("Black", ">="), ("Black", "<="), ("White", ">="), ("White", "<=")]


def test_no_grouping_covers_every_grouping_present():
    verdict = evaluate_policy(one_rule(metric=SUCCESS, max=0.95), privacy_results())
    assert [(c.grouping, c.group) for c in verdict.checks] == [
        ("race", "Black"), ("race", "White"), ("gender", "Female"), ("all", "all")]


def test_group_selects_one_group():
    verdict = evaluate_policy(one_rule(metric=SUCCESS, grouping="race", group="White", max=0.8),
                              privacy_results())
    assert [(c.group, c.passed) for c in verdict.checks] == [("White", True)]


# --- the confidence-bound default ----------------------------------------------------------

def test_estimate_passes_but_bound_fails_is_a_failure_by_default():
    data = privacy_results(black=(0.85, (0.80, 0.93)))
    verdict = evaluate_policy(one_rule(metric=SUCCESS, grouping="race", group="Black", max=0.9), data)
    assert not verdict.passed
    check = verdict.checks[0]
    assert (check.estimate, check.judged_on, check.judged_value, check.bound) == (0.85, "ci_high", 0.93, 0.9)
    assert check.reason == ("ci_high 0.93 > max 0.9 (the estimate 0.85 is within the limit, but the "
                            "interval reaches past it: more people per group would narrow it)")


def test_judge_on_estimate_passes_the_same_figure():
    data = privacy_results(black=(0.85, (0.80, 0.93)))
    rule_level = one_rule(metric=SUCCESS, grouping="race", group="Black", max=0.9, judge_on="estimate")
    policy_level = policy_from_dict({"policy": {"judge_on": "estimate"},
                                     "rule": [{"metric": SUCCESS, "grouping": "race", "max": 0.9}]})
    for policy in (rule_level, policy_level):
        verdict = evaluate_policy(policy, data)
        assert verdict.passed
        assert verdict.checks[0].judged_on == "estimate"
        assert verdict.checks[0].judged_value == 0.85


def test_figure_without_interval_falls_back_to_estimate_and_says_so():
    data = results([figure(DISTANCE, "race", "Black", 0.5)])
    verdict = evaluate_policy(one_rule(metric=DISTANCE, max=0.6), data)
    check = verdict.checks[0]
    assert check.passed and check.judged_on == "estimate"
    assert check.note == "no confidence interval: judged on the estimate"
    assert check.reason == "estimate 0.5 <= max 0.6 (no confidence interval: judged on the estimate)"
    assert "note r race / Black: estimate 0.5 <= max 0.6" in format_verdict_table(verdict)


@pytest.mark.parametrize("value", [None, float("nan")])
def test_undefined_figure_fails_never_passes_silently(value):
    data = results([figure("detection.failure_rate", "race", "Black", value, flags=["undefined"]),
                    figure("detection.failure_rate", "race", "White", 0.01, (0.0, 0.02))])
    for judge_on in ("bound", "estimate"):
        verdict = evaluate_policy(one_rule(metric="detection.failure_rate", max=0.5, judge_on=judge_on), data)
        assert [c.passed for c in verdict.checks] == [False, True]
        assert verdict.failures[0].reason == (
            "the figure is undefined (NaN, flags: undefined): a rule never passes on a missing number. "
            "See why the group has no data in results.json (n_images, flags).")


@pytest.mark.parametrize("value", [float("-inf"), float("inf")])
@pytest.mark.parametrize("bound", [{"max": 0.5}, {"min": 0.1}])
def test_an_infinite_figure_fails_every_rule_on_it(value, bound):
    """-Infinity passed a max rule (it is below every bound) and Infinity a min rule: neither may pass."""
    data = results([figure("detection.failure_rate", "race", "Black", value),
                    figure("detection.failure_rate", "race", "White", 0.2, (0.15, 0.25))])
    for judge_on in ("bound", "estimate"):
        verdict = evaluate_policy(one_rule(metric="detection.failure_rate", judge_on=judge_on, **bound), data)
        assert [c.passed for c in verdict.checks] == [False, True]
        assert verdict.failures[0].reason.startswith(
            f"the figure is {value}, not a finite number: a rule never passes on it.")
        assert verdict.exit_code == EXIT_GATE_FAILED


@pytest.mark.parametrize("end", ["ci_low", "ci_high"])
@pytest.mark.parametrize("value", [float("-inf"), float("inf")])
def test_an_infinite_interval_end_is_no_interval(end, value):
    """Judged on the estimate, with the note, exactly as a missing end (results.json writes both as null)."""
    ci = {"ci_low": (value, 0.3), "ci_high": (0.1, value)}[end]
    data = results([figure("detection.failure_rate", "race", "Black", 0.2, ci)])
    for bound in ({"max": 0.5}, {"min": 0.1}):
        (check,) = evaluate_policy(one_rule(metric="detection.failure_rate", **bound), data).checks
        if (end == "ci_high") == ("max" in bound):
            assert check.judged_on == "estimate" and check.note == "no confidence interval: judged on the estimate"


@pytest.mark.parametrize("old, new", [(float("inf"), 0.5), (0.5, float("-inf")), (float("-inf"), 0.5),
                                      (0.5, float("inf"))])
def test_an_infinite_figure_on_either_side_of_a_baseline_rule_fails(old, new):
    then = results([figure(DISTANCE, "race", "Black", old)])
    now = results([figure(DISTANCE, "race", "Black", new)])
    for limit in ({"max_worsening": 0.1}, {"max_relative_worsening": 0.1}):
        policy = one_rule(metric=DISTANCE, baseline=limit)
        (check,) = evaluate_policy(policy, now, baseline=then).checks
        assert not check.passed
        which = "the figure" if not math.isfinite(new) else "the baseline's figure"
        assert check.reason.startswith(f"{which} is "), check.reason


def test_a_results_file_with_non_finite_numbers_fails_the_gate(tmp_path):
    from click.testing import CliRunner

    from audit.cli import cli

    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nid = "r"\nmetric = "detection.failure_rate"\nmax = 0.5\n')
    for token in ("-Infinity", "Infinity", "NaN", "-1e999", "1e999"):
        text = json.dumps(results([figure("detection.failure_rate", "race", "Black", 12345.0)])).replace(
            "12345.0", token)
        (tmp_path / "results.json").write_text(text)
        result = CliRunner().invoke(cli, ["gate", str(tmp_path), "--policy", str(policy)])
        assert result.exit_code == EXIT_GATE_FAILED, (token, result.output)
        assert "a rule never passes on" in result.output


# --- disparities ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind, value, ci, limit", [
    ("ratio", 1.2, (1.1, 1.24), 1.25),
    ("gap", 0.015, (0.01, 0.019), 0.02),
])
def test_each_disparity_kind_passes_and_fails(kind, value, ci, limit):
    data = results([figure(DISTANCE, "race", "Black", 0.5)],
                   [disparity(DISTANCE, "race", k, value, ci) for k in ("ratio", "gap")]
                   + [disparity(DISTANCE, "gender", kind, value * 10, (value, value * 20), ("Female", "Male"))])
    ok = evaluate_policy(one_rule(metric=DISTANCE, grouping="race", disparity=kind, max=limit), data)
    assert ok.passed
    assert [(c.grouping, c.kind, c.judged_value) for c in ok.checks] == [("race", kind, ci[1])]
    assert ok.checks[0].subject == f"race {kind} Black vs White"
    tight = evaluate_policy(one_rule(metric=DISTANCE, grouping="race", disparity=kind, max=ci[1] * 0.99), data)
    assert not tight.passed
    every_grouping = evaluate_policy(one_rule(metric=DISTANCE, disparity=kind, max=limit), data)
    assert [(c.grouping, c.passed) for c in every_grouping.checks] == [("race", True), ("gender", False)]


def test_a_disparity_rule_checks_every_pair_of_groups():
    pairs = [("Black", "White", (0.01, 0.015)), ("Asian", "White", (0.0, 0.012)), ("Black", "Asian", (0.02, 0.03))]
    data = results([], [disparity(DISTANCE, "race", "gap", (lo + hi) / 2, (lo, hi), (a, b)) for a, b, (lo, hi) in pairs])
    verdict = evaluate_policy(one_rule(metric=DISTANCE, disparity="gap", max=0.02), data)
    assert [(c.subject, c.passed) for c in verdict.checks] == [
        ("race gap Black vs White", True), ("race gap Asian vs White", True), ("race gap Black vs Asian", False)]


def test_a_baseline_disparity_is_matched_on_its_pair_whichever_group_fares_worse():
    old = results([], [disparity(DISTANCE, "race", "gap", 0.02, (0.01, 0.03), ("Black", "White"))])
    new = results([], [disparity(DISTANCE, "race", "gap", 0.01, (0.0, 0.02), ("White", "Black"))])
    verdict = evaluate_policy(one_rule(metric=DISTANCE, disparity="gap", baseline={"max_worsening": 0.0}), new,
                              baseline=old)
    (check,) = verdict.checks
    assert check.passed and check.baseline_value == 0.03  # ci_high then, against ci_high 0.02 now


def test_undefined_disparity_fails():
    data = results([figure(DISTANCE, "race", "Black", 0.5)], [disparity(DISTANCE, "race", "gap", None)])
    verdict = evaluate_policy(one_rule(metric=DISTANCE, disparity="gap", max=1.0), data)
    assert not verdict.passed
    assert verdict.checks[0].reason.startswith("the figure is undefined (NaN)")


# --- baseline ------------------------------------------------------------------------------

def distance_results(black, white, ci_halfwidth=None, better="higher"):
    def ci(v):
        return (None, None) if ci_halfwidth is None else (v - ci_halfwidth, v + ci_halfwidth)
    return results([figure(DISTANCE, "race", "Black", black, ci(black), better=better),
                    figure(DISTANCE, "race", "White", white, ci(white), better=better)])


def test_baseline_worse_by_more_than_allowed_fails():
    policy = one_rule(metric=DISTANCE, baseline={"max_worsening": 0.05})
    old = distance_results(0.60, 0.70)
    new = distance_results(0.50, 0.69)  # higher is better: Black dropped by 0.10
    verdict = evaluate_policy(policy, new, baseline=old)
    assert [(c.group, c.passed) for c in verdict.checks] == [("Black", False), ("White", True)]
    black = verdict.checks[0]
    assert black.judged_value == pytest.approx(0.10)
    assert black.baseline_value == 0.60
    assert black.reason == ("estimate 0.5 now vs 0.6 in the baseline (higher is better): worse, "
                            "change 0.1 > allowed 0.05 (no confidence interval: judged on the estimate)")
    assert verdict.compared_with_baseline


def test_baseline_better_passes():
    policy = one_rule(metric=DISTANCE, baseline={"max_worsening": 0.0})
    verdict = evaluate_policy(policy, distance_results(0.65, 0.75), baseline=distance_results(0.60, 0.70))
    assert verdict.passed
    assert [c.judged_value for c in verdict.checks] == [pytest.approx(-0.05), pytest.approx(-0.05)]


def test_baseline_direction_follows_better_field():
    policy = one_rule(metric=DISTANCE, baseline={"max_worsening": 0.05})
    old = distance_results(0.60, 0.70, better="lower")
    assert evaluate_policy(policy, distance_results(0.50, 0.69, better="lower"), baseline=old).passed
    assert not evaluate_policy(policy, distance_results(0.70, 0.69, better="lower"), baseline=old).passed


def test_baseline_relative_worsening():
    policy = one_rule(metric=DISTANCE, baseline={"max_relative_worsening": 0.10})
    old = distance_results(0.60, 0.70)
    verdict = evaluate_policy(policy, distance_results(0.55, 0.66), baseline=old)
    assert [c.passed for c in verdict.checks] == [True, True]  # -8.3%, -5.7%
    verdict = evaluate_policy(policy, distance_results(0.53, 0.70), baseline=old)
    assert [c.passed for c in verdict.checks] == [False, True]  # -11.7%
    assert verdict.checks[0].judged_value == pytest.approx(0.07 / 0.60)


def test_baseline_on_bound_compares_the_same_end_in_both_runs():
    policy = one_rule(metric=DISTANCE, baseline={"max_worsening": 0.01})
    old = distance_results(0.60, 0.70, ci_halfwidth=0.1)
    same = evaluate_policy(policy, distance_results(0.60, 0.70, ci_halfwidth=0.1), baseline=old)
    assert same.passed
    assert [c.judged_on for c in same.checks] == ["ci_low", "ci_low"]
    wider = evaluate_policy(policy, distance_results(0.60, 0.70, ci_halfwidth=0.2), baseline=old)
    assert not wider.passed


def test_baseline_lacking_a_group_fails_with_reason():
    policy = one_rule(metric=DISTANCE, baseline={"max_worsening": 0.05})
    old = results([figure(DISTANCE, "race", "White", 0.7, better="higher")])
    verdict = evaluate_policy(policy, distance_results(0.60, 0.70), baseline=old)
    assert [c.passed for c in verdict.checks] == [False, True]
    assert verdict.checks[0].reason == ("the baseline has no figure for race / Black: the runs cannot be "
                                        "compared (same dataset and --group-by?)")


def test_baseline_rule_without_baseline_is_a_policy_error():
    with pytest.raises(PolicyError) as exc:
        evaluate_policy(one_rule(metric=DISTANCE, baseline={"max_worsening": 0.05}), distance_results(0.6, 0.7))
    assert str(exc.value) == ("rule 'r' compares with a baseline run, but none was given. Pass the earlier "
                              "release's results with --baseline OLD_RESULTS (or remove the rule).")


def test_baseline_on_figure_without_direction_is_a_policy_error():
    data = distance_results(0.6, 0.7, better=None)
    with pytest.raises(PolicyError) as exc:
        evaluate_policy(one_rule(metric=DISTANCE, baseline={"max_worsening": 0.05}), data, baseline=data)
    assert str(exc.value) == ("rule 'r': figure 'inversion.mean_distance' (race / Black) has no 'better' "
                              "direction ('lower' or 'higher'), so a baseline cannot say whether it got "
                              "worse. Use 'max' or 'min' for this metric instead.")


# --- names the results lack ----------------------------------------------------------------

def test_unknown_metric_lists_available_metrics():
    with pytest.raises(PolicyError) as exc:
        evaluate_policy(one_rule(metric="inversion.succes_rate", max=0.9), privacy_results())
    assert str(exc.value) == ("rule 'r': the results have no figures for metric 'inversion.succes_rate'. "
                              "Available metrics: inversion.success_rate_at_default.")


def test_unknown_grouping_lists_available_groupings():
    with pytest.raises(PolicyError) as exc:
        evaluate_policy(one_rule(metric=SUCCESS, grouping="ethnicity", max=0.9), privacy_results())
    assert str(exc.value) == ("rule 'r': the results have no grouping 'ethnicity' for metric "
                              "'inversion.success_rate_at_default'. Available groupings: all, gender, race.")


def test_unknown_group_lists_available_groups():
    with pytest.raises(PolicyError) as exc:
        evaluate_policy(one_rule(metric=SUCCESS, grouping="race", group="Asian", max=0.9), privacy_results())
    assert str(exc.value) == ("rule 'r': the results have no group 'Asian' in grouping 'race' for metric "
                              "'inversion.success_rate_at_default'. Available groups: Black, White.")


def test_unknown_disparity_kind_lists_available_kinds():
    data = results([], [disparity(DISTANCE, "race", "gap", 0.1)])
    with pytest.raises(PolicyError) as exc:
        evaluate_policy(one_rule(metric=DISTANCE, disparity="ratio", max=1.25), data)
    assert str(exc.value) == ("rule 'r': the results have no 'ratio' disparity for metric "
                              "'inversion.mean_distance'. Available kinds for it: gap.")


def test_error_names_the_policy_file(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[[rule]]\nmetric = "nope.nothing"\nmax = 1\n')
    with pytest.raises(PolicyError) as exc:
        evaluate_policy(load_policy(path), privacy_results())
    assert str(exc.value) == (f"Policy {str(path)!r}: rule 'rule-1': the results have no figures for metric "
                              "'nope.nothing'. Available metrics: inversion.success_rate_at_default.")


def test_malformed_results_is_a_results_error():
    results = {"schema_version": "1.1", "figures": [{"probe": "x"}], "disparities": []}
    with pytest.raises(ResultsError) as exc:
        evaluate_policy(one_rule(metric=SUCCESS, max=0.9), results)
    assert str(exc.value) == ("the results: figures[0] lacks 'metric', 'grouping', 'group', 'value': the file "
                              "was edited or damaged. Re-run the audit, or restore the file.")
    results["figures"] = [{"probe": "x", "metric": "m", "grouping": "all", "group": "all", "value": "high"}]
    with pytest.raises(ResultsError, match="has value = 'high', not a number"):
        evaluate_policy(one_rule(metric=SUCCESS, max=0.9), results)
    with pytest.raises(ResultsError, match="no 'schema_version'"):
        evaluate_policy(one_rule(metric=SUCCESS, max=0.9), {"figures": [], "disparities": []})


# --- the policy file -----------------------------------------------------------------------

def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def policy_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    prefix = f"Policy {str(path)!r}: "
    message = str(exc.value)
    assert message.startswith(prefix), message
    return message[len(prefix):]


def test_example_policy_loads():
    policy = load_policy(REPO_ROOT / "examples" / "policy.toml")
    assert policy.name == "release gate" and policy.judge_on == "bound"
    ids = [rule.id for rule in policy.rules]
    assert ids[:3] == ["identity-leakage", "leakage-parity", "detection-gap"]
    assert policy.rules[0] == Rule(id="identity-leakage", metric="inversion.sar_at_own_fmr_1e-2", grouping="race",
                                   max=0.5, description=policy.rules[0].description)
    # figures that mix leakage with crowding are not what the example gates on
    assert not any(rule.metric in ("inversion.success_rate_at_default", "inversion.mean_distance")
                   for rule in policy.rules)


def test_example_policy_for_identities_loads():
    policy = load_policy(REPO_ROOT / "examples" / "policy-identities.toml")
    metrics = {rule.metric for rule in policy.rules}
    assert {"verification.fmr_at_default", "inversion.type2_sar_at_own_fmr_1e-1"} <= metrics


def test_full_policy_file(tmp_path):
    policy = load_policy(write(tmp_path, """
[policy]
name = "release gate"
judge_on = "estimate"
[[rule]]
metric = "inversion.mean_distance"
grouping = "race"
disparity = "ratio"
max = 2
[[rule]]
id = "no-regression"
metric = "inversion.mean_distance"
baseline = { max_relative_worsening = 0.1 }
judge_on = "bound"
"""))
    assert policy.source == str(tmp_path / "policy.toml")
    assert policy.rules == (
        Rule(id="rule-1", metric=DISTANCE, grouping="race", disparity="ratio", max=2.0,
             judge_on="estimate"),
        Rule(id="no-regression", metric=DISTANCE, judge_on="bound",
             baseline=BaselineLimit(max_relative_worsening=0.1, rule_id="no-regression")),
    )
    assert policy.needs_baseline


def test_malformed_toml(tmp_path):
    path = write(tmp_path, "[[rule]\nmetric = \n")
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    assert str(exc.value).startswith(f"Policy {str(path)!r} is not valid TOML (")
    assert str(exc.value).endswith("). Fix the syntax; see examples/policy.toml.")


def test_missing_policy_file(tmp_path):
    with pytest.raises(PolicyError) as exc:
        load_policy(tmp_path / "nope.toml")
    assert str(exc.value) == (f"No policy file at {str(tmp_path / 'nope.toml')!r}. Pass the path of a TOML "
                              "policy, e.g. --policy examples/policy.toml.")


@pytest.mark.parametrize("text, message", [
    ('[[rule]]\nid = "a"\nmetric = "inversion.mean_distance"\nmaximum = 1\n',
     "rule 'a' has unknown key 'maximum'. Allowed keys: id, description, metric, grouping, group, "
     "disparity, max, min, baseline, judge_on."),
    ('[[rule]]\nmetric = "inversion.mean_distance"\ngrouping = "race"\n',
     "rule 'rule-1' has no bound. Set 'max' and/or 'min' (or baseline = { max_worsening = ... })."),
    ('[[rule]]\nmax = 1\n',
     "rule 'rule-1' has no 'metric'. Name the figure it judges, e.g. metric = \"inversion.mean_distance\"."),
    ('[[rule]]\nmetric = "mean_distance"\nmax = 1\n',
     "rule 'rule-1': metric 'mean_distance' is not named '<probe>.<metric>'. Write it as in results.json, "
     "e.g. 'inversion.mean_distance'."),
    ('[[rule]]\nmetric = "a.b"\nmax = "0.9"\n',
     "rule 'rule-1': 'max' must be a finite number, got '0.9'. Write it without quotes, e.g. max = 0.9."),
    ('[[rule]]\nmetric = "a.b"\nmax = nan\n',
     "rule 'rule-1': 'max' must be a finite number, got nan. Write it without quotes, e.g. max = 0.9."),
    ('[[rule]]\nmetric = "a.b"\nmin = 2\nmax = 1\n',
     "rule 'rule-1': min 2.0 is above max 1.0; no figure can pass. Swap them."),
    ('[[rule]]\nmetric = "a.b"\ndisparity = "max_ratio"\nmax = 1\n',
     "rule 'rule-1': disparity 'max_ratio' is unknown. Allowed: gap, ratio."),
    ('[[rule]]\nmetric = "a.b"\ndisparity = "max_gap"\nmax = 1\n',
     "rule 'rule-1': disparity 'max_gap' (the largest over all groups, whose interval did not hold when groups "
     "are equal) was replaced by 'gap', which compares every pair of groups: the rule then checks each pair, "
     "the worst included. Write disparity = 'gap'."),
    ('[[rule]]\nmetric = "a.b"\ndisparity = "gap"\ngroup = "Black"\nmax = 1\n',
     "rule 'rule-1': 'group' cannot be used with 'disparity' (a disparity compares all groups of a "
     "grouping). Remove 'group' or 'disparity'."),
    ('[[rule]]\nmetric = "a.b"\nmax = 1\njudge_on = "upper"\n',
     "rule 'rule-1': judge_on 'upper' is unknown. Allowed: 'bound', 'estimate'."),
    ('[policy]\njudge_on = "mean"\n[[rule]]\nmetric = "a.b"\nmax = 1\n',
     "[policy]: judge_on 'mean' is unknown. Allowed: 'bound', 'estimate'."),
    ('[policy]\nnmae = "x"\n[[rule]]\nmetric = "a.b"\nmax = 1\n',
     "[policy] has unknown key 'nmae'. Allowed keys: name, description, judge_on."),
    ('[rules]\nmetric = "a.b"\n',
     "unknown top-level key 'rules'. Allowed: policy, rule. Rules go in [[rule]] tables, settings in [policy]."),
    ('[rule]\nmetric = "a.b"\nmax = 1\n',
     "'rule' must be an array of tables: write each rule under its own [[rule]] header, not [rule]."),
    ('[policy]\nname = "x"\n', "no rules. Add at least one [[rule]] table; see examples/policy.toml."),
    ('[[rule]]\nid = "a"\nmetric = "a.b"\nmax = 1\n[[rule]]\nid = "a"\nmetric = "a.c"\nmax = 1\n',
     "two rules have the id 'a'. Give each [[rule]] a unique id."),
    ('[[rule]]\nmetric = "a.b"\nmax = 1\nbaseline = { max_worsening = 0.1 }\n',
     "rule 'rule-1' sets both a bound ('max'/'min') and 'baseline'. Split it into two rules: one with the "
     "bound, one with the baseline."),
    ('[[rule]]\nmetric = "a.b"\nbaseline = { worsening = 0.1 }\n',
     "rule 'rule-1': baseline has unknown key 'worsening'. Allowed keys: max_worsening, max_relative_worsening."),
    ('[[rule]]\nmetric = "a.b"\nbaseline = { max_worsening = 0.1, max_relative_worsening = 0.1 }\n',
     "rule 'rule-1': baseline must set exactly one of 'max_worsening', 'max_relative_worsening', got "
     "max_worsening, max_relative_worsening."),
    ('[[rule]]\nmetric = "a.b"\nbaseline = { max_worsening = -0.1 }\n',
     "rule 'rule-1': 'max_worsening' must be >= 0, got -0.1. It is how much worse a group may get."),
    ('[[rule]]\nmetric = "a.b"\nbaseline = 0.1\n',
     "rule 'rule-1': baseline must be a table, got 0.1. Write e.g. baseline = { max_worsening = 0.05 }."),
])
def test_invalid_policy_messages(tmp_path, text, message):
    assert policy_error(tmp_path, text) == message


# --- outputs -------------------------------------------------------------------------------

def mixed_verdict():
    data = privacy_results(black=(0.85, (0.80, 0.93)))
    data["figures"].append(figure("detection.failure_rate", "race", "Black", None, flags=["undefined"]))
    policy = policy_from_dict({"policy": {"name": "release gate"}, "rule": [
        {"id": "privacy", "metric": SUCCESS, "grouping": "race", "max": 0.9},
        {"id": "detection", "metric": "detection.failure_rate", "max": 0.1},
    ]})
    return evaluate_policy(policy, data)


def test_verdict_to_dict_is_json_without_nan():
    verdict = mixed_verdict()
    d = json.loads(verdict_to_json(verdict))
    assert d == json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert (d["passed"], d["exit_code"], d["n_checks"], d["n_failed"]) == (False, 1, 3, 2)
    assert d["checks"][0] == {
        "rule_id": "privacy",
        "description": "inversion.success_rate_at_default (grouping race) <= 0.9, judged on the bound",
        "metric": SUCCESS, "grouping": "race", "group": "Black", "kind": None,
        "estimate": 0.85, "ci_low": 0.80, "ci_high": 0.93, "judged_on": "ci_high", "judged_value": 0.93,
        "bound": 0.9, "operator": "<=", "passed": False,
        "reason": ("ci_high 0.93 > max 0.9 (the estimate 0.85 is within the limit, but the interval reaches "
                   "past it: more people per group would narrow it)"),
        "note": "", "baseline_value": None, "against_baseline": False, "flags": [],
    }
    assert d["checks"][2]["estimate"] is None and d["checks"][2]["judged_value"] is None


def test_table_has_one_row_per_check_and_reasons():
    table = format_verdict_table(mixed_verdict())
    lines = table.splitlines()
    assert lines[0].split() == ["rule", "metric", "figure", "of", "estimate", "[interval]", "judged", "bound",
                                "result"]
    rows = [line for line in lines[2:5]]
    assert rows[0].split() == ["privacy", SUCCESS, "race", "/", "Black", "0.85", "[0.8,", "0.93]",
                               "ci_high", "0.93", "<=", "0.9", "FAIL"]
    assert rows[1].split()[-1] == "pass"
    assert rows[2].split() == ["detection", "detection.failure_rate", "race", "/", "Black", "nan",
                               "estimate", "nan", "<=", "0.1", "FAIL"]
    assert lines[-1] == ("FAILED: 2 of 3 checks of policy 'release gate' failed (rules: privacy, detection).")


def test_junit_xml_parses_back_with_elementtree():
    root = ET.fromstring(verdict_to_junit(mixed_verdict()))
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures"), suite.get("errors")) == (
        "release gate", "3", "2", "0")
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.find("failure") is not None) for c in cases] == [
        ("gate.privacy", True), ("gate.privacy", False), ("gate.detection", True)]
    assert cases[0].get("name") == "inversion.success_rate_at_default race / Black <= 0.9"
    assert cases[0].find("failure").get("message").startswith("ci_high 0.93 > max 0.9")


def test_junit_xml_parses_back_with_junitparser(tmp_path):
    junitparser = pytest.importorskip("junitparser")
    path = tmp_path / "gate.xml"
    path.write_text(verdict_to_junit(mixed_verdict()), encoding="utf-8")
    xml = junitparser.JUnitXml.fromfile(str(path))
    suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
    cases = [case for suite in suites for case in suite]
    assert len(cases) == 3
    failed = [case for case in cases if not case.is_passed]
    assert [case.classname for case in failed] == ["gate.privacy", "gate.detection"]
    assert failed[1].result[0].message.startswith("the figure is undefined (NaN, flags: undefined)")


def test_empty_verdict_math():
    verdict = evaluate_policy(one_rule(metric=SUCCESS, grouping="all", max=0.9), privacy_results())
    assert verdict.passed and len(verdict.checks) == 1
    assert format_verdict_table(verdict).endswith("PASSED: all 1 checks of policy 'test policy' passed.\n")
    assert not math.isnan(verdict.checks[0].judged_value)


# --- blocking flags: numbers that exist but do not measure what their name says ---------

@pytest.mark.parametrize("flag, words", [("no_signal", "no identity signal"),
                                         ("not_estimable", "not estimable"),
                                         ("unstable", "changes direction between generators")])
def test_a_blocking_flag_fails_the_check_with_its_reason(flag, words):
    data = results([figure(SUCCESS, "race", "Black", 0.1, (0.05, 0.15), flags=[flag]),
                    figure(SUCCESS, "race", "White", 0.1, (0.05, 0.15))])
    verdict = evaluate_policy(one_rule(metric=SUCCESS, grouping="race", max=0.9), data)
    assert [(c.group, c.passed) for c in verdict.checks] == [("Black", False), ("White", True)]
    assert verdict.failures[0].reason.startswith(f"cannot be judged: {flag}: ")
    assert words in verdict.failures[0].reason


def test_a_blocking_flag_fails_a_baseline_check_too():
    flagged = results([figure(DISTANCE, "race", "Black", 0.5, better="higher", flags=["no_signal"])])
    old = results([figure(DISTANCE, "race", "Black", 0.5, better="higher")])
    rule = one_rule(metric=DISTANCE, grouping="race", baseline={"max_worsening": 0.1})
    verdict = evaluate_policy(rule, flagged, baseline=old)
    assert not verdict.passed and "no identity signal" in verdict.failures[0].reason


def test_small_group_is_not_a_blocking_flag():
    data = results([figure(SUCCESS, "race", "Black", 0.1, (0.05, 0.15), flags=["small_group"])])
    assert evaluate_policy(one_rule(metric=SUCCESS, grouping="race", max=0.9), data).passed


def test_an_unreadable_policy_file_is_an_input_error(tmp_path, monkeypatch):
    path = tmp_path / "policy.toml"
    path.write_text('[[rule]]\nid = "r"\nmetric = "detection.failure_rate"\nmax = 0.1\n')

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(PolicyError, match="cannot be read \\(Permission denied\\)"):
        load_policy(path)


def test_a_policy_with_a_number_past_pythons_digit_limit_is_a_policy_error(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('[[rule]]\nid = "r"\nmetric = "detection.failure_rate"\nmax = ' + "9" * 5000 + "\n")
    with pytest.raises(PolicyError, match="is not valid TOML .*Exceeds the limit"):
        load_policy(path)
