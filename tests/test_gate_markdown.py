"""The gate's Markdown verdict (``audit gate --markdown``): the same checks as JUnit, and labels kept in their cells.

The file is pasted where Markdown is rendered (a CI job summary, a
merge-request comment), so the tests render it as CommonMark with GitHub's
tables (markdown-it, which rich brings) and read the table back cell by cell.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from markdown_it import MarkdownIt

from audit.cli import cli
from audit.gate import MARKDOWN_COLUMNS, evaluate_policy, verdict_to_junit, verdict_to_markdown
from audit.policy import policy_from_dict
from audit.sinks import markdown_text, terminal_text
from tests.corpus.datasets import HOSTILE_LABELS
from tests.test_gate_cli import POLICY, write_results


def rendered_table(markdown: str) -> list[list[str]]:
    """The table's rows (header first), each cell as the text a reader sees; asserts it holds no HTML or link."""
    rows: list[list[str]] = []
    in_cell = False
    for token in MarkdownIt("commonmark").enable("table").parse(markdown):
        assert not token.type.startswith("html"), token
        if token.type == "tr_open":
            rows.append([])
        elif token.type in ("th_open", "td_open", "th_close", "td_close"):
            in_cell = token.type.endswith("_open")
        elif token.type == "inline" and in_cell:
            children = token.children or []
            assert not [c for c in children if c.type.startswith(("html", "link", "image", "code"))], children
            rows[-1].append("".join(c.content for c in children if c.type == "text").replace(ZWSP, ""))
    return rows


def junit_cases(xml: str) -> list[tuple[str, str, bool]]:
    """(classname, name, passed) of every test case, in order; the name as the rendered Markdown shows it."""
    return [(case.get("classname"), shown(case.get("name")), case.find("failure") is None)
            for case in ET.fromstring(xml).iter("testcase")]


def markdown_cases(markdown: str) -> list[tuple[str, str, bool]]:
    """The same triples read back from the rendered Markdown table."""
    header, *rows = rendered_table(markdown)
    assert tuple(header) == MARKDOWN_COLUMNS
    index = {name: k for k, name in enumerate(header)}
    out = []
    for row in rows:
        assert len(row) == len(MARKDOWN_COLUMNS), row
        assert row[index["result"]] in ("pass", "FAIL"), row
        out.append((f"gate.{row[index['rule']]}",
                    f"{row[index['metric']]} {row[index['figure of']]} {row[index['limit']]}",
                    row[index["result"]] == "pass"))
    return out


ZWSP = "\u200b"


def shown(text: str) -> str:
    """What a reader of the rendered Markdown sees for ``text``: the terminal's escapes (zero-width spaces aside)."""
    return terminal_text(text).replace(ZWSP, "")


# --------------------------------------------------------------------------- markdown_text

@pytest.mark.parametrize("key", sorted(HOSTILE_LABELS))
def test_markdown_text_keeps_every_hostile_label_in_one_cell_as_written(key):
    label = HOSTILE_LABELS[key]
    table = f"| a | label | b |\n| --- | --- | --- |\n| 1 | {markdown_text(label)} | 2 |\n"
    assert rendered_table(table) == [["a", "label", "b"], ["1", shown(label), "2"]]


@pytest.mark.parametrize("label", [
    "a|b", "a\\|b", "`x | y`", "<img src=x onerror=alert(1)>", "# heading", "[click](http://x.invalid)",
    "![i](http://x.invalid/p.png)", "x\n| y | z |", "$x^2$", "**b** _i_ ~~s~~", "&#124;", "a\\", "[^note]",
])
def test_markdown_text_neutralises_markdown_syntax(label):
    table = f"| label | b |\n| --- | --- |\n| {markdown_text(label)} | 2 |\n"
    assert rendered_table(table) == [["label", "b"], [shown(label), "2"]]


@pytest.mark.parametrize("label, reference", [("@all", "@a"), ("fixes #12", "#1"), ("see !3", "!3"),
                                              ("https://x.invalid", "://"), ("www.x.invalid", "www.")])
def test_markdown_text_breaks_mentions_references_and_bare_addresses(label, reference):
    escaped = markdown_text(label)
    assert reference not in escaped.replace("\\", "")          # a zero-width space sits inside it
    assert escaped.replace(ZWSP, "").replace("\\", "") == label


def test_markdown_text_leaves_plain_labels_alone():
    assert markdown_text("Black / Female") == "Black / Female"
    assert markdown_text("20-29") == "20-29"
    assert "\n" not in markdown_text("a\nb") and "\x1b" not in markdown_text("\x1b[2J")


# --------------------------------------------------------------------------- the verdict

def verdict_of(tmp_path: Path, **results):
    from audit.gate import load_policy
    from audit.results import load_results

    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    run = load_results(write_results(tmp_path / "run", **results))
    return evaluate_policy(load_policy(policy), run), run


@pytest.mark.parametrize("results, passed", [({}, True), ({"black_high": 0.95, "gap_high": 0.03}, False)])
def test_markdown_has_the_same_checks_and_outcomes_as_junit(tmp_path, results, passed):
    verdict, run = verdict_of(tmp_path, **results)
    assert verdict.passed is passed
    markdown = verdict_to_markdown(verdict, run)
    assert markdown.splitlines()[0] == f"## Bias audit gate: {'PASS' if passed else 'FAIL'}"
    assert markdown_cases(markdown) == junit_cases(verdict_to_junit(verdict))
    assert "**Findings:** 0" in markdown


def test_markdown_counts_the_findings_of_the_run(tmp_path):
    import json

    path = write_results(tmp_path / "run")
    data = json.loads(path.read_text())
    data["findings"] = {"method": "holm", "alpha": 0.05, "n_comparisons": 12, "n_findings": 2}
    path.write_text(json.dumps(data))
    from audit.gate import load_policy
    from audit.results import load_results

    (tmp_path / "p.toml").write_text(POLICY)
    run = load_results(path)
    markdown = verdict_to_markdown(evaluate_policy(load_policy(tmp_path / "p.toml"), run), run)
    assert "**Findings:** 2 of 12 comparisons between groups survive the correction (holm, alpha 0.05)." in markdown


def test_a_hostile_group_cannot_break_the_table_or_turn_a_fail_into_a_pass():
    label = HOSTILE_LABELS["md-table"]
    results = {"schema_version": "1.0", "figures": [
        {"probe": "detection", "metric": "failure_rate", "grouping": "race", "group": group, "value": value,
         "ci_low": None, "ci_high": None, "better": "lower", "flags": []}
        for group, value in ((label, 0.5), (HOSTILE_LABELS["md-code"], 0.01), ("White", 0.01))],
        "disparities": []}
    policy = policy_from_dict({"rule": [{"id": "detection", "metric": "detection.failure_rate", "max": 0.1}]})
    verdict = evaluate_policy(policy, results)
    markdown = verdict_to_markdown(verdict, results)
    cases = markdown_cases(markdown)
    assert cases == junit_cases(verdict_to_junit(verdict))
    assert [passed for *_, passed in cases] == [False, True, True]
    assert rendered_table(markdown)[1][2] == shown(f"race / {label}")


# --------------------------------------------------------------------------- the command

def test_gate_writes_the_markdown_file_and_keeps_its_exit_code(tmp_path):
    write_results(tmp_path / "run", black_high=0.95)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    out = tmp_path / "ci" / "gate.md"
    done = CliRunner().invoke(cli, ["gate", str(tmp_path / "run"), "--policy", str(policy), "--markdown", str(out)])
    assert done.exit_code == 1, done.output
    text = out.read_text(encoding="utf-8")
    assert text.startswith("## Bias audit gate: FAIL")
    assert [passed for *_, passed in markdown_cases(text)] == [False, True, True]


def test_an_unwritable_markdown_file_is_an_input_error_after_the_verdict(tmp_path):
    write_results(tmp_path / "run")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    (tmp_path / "file").write_text("x")
    done = CliRunner().invoke(cli, ["gate", str(tmp_path / "run"), "--policy", str(policy),
                                    "--markdown", str(tmp_path / "file" / "gate.md")])
    assert done.exit_code == 2, done.output
    assert "PASSED" in done.output and "--markdown" in done.output
