"""``audit gate``: judge a run against a release policy (CI's exit code)."""

from __future__ import annotations

from pathlib import Path

import click

from audit.commands.options import write_junit, write_verdict_file
from audit.commands.terminal import echo
from audit.gate import (evaluate_policy, format_verdict_table, load_policy, verdict_to_json, verdict_to_junit,
                        verdict_to_markdown)
from audit.results import load_results


@click.command("gate")
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--policy", "policy_path", required=True, type=click.Path(path_type=Path),
              help="Policy TOML file: the rules a release must meet.")
@click.option("--baseline", "baseline_path", type=click.Path(path_type=Path), default=None,
              help="An earlier release's run folder or results.json, for rules with 'baseline = {...}'.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the verdict as JSON on stdout (the table goes to stderr).")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write JUnit XML here: one test case per check, for CI test reports.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the verdict as a short Markdown summary here: for $GITHUB_STEP_SUMMARY "
                   "or a merge-request comment.")
def gate(results: Path, policy_path: Path, baseline_path: Path | None, as_json: bool,
         junit_path: Path | None, markdown_path: Path | None) -> None:
    """Refuse a release that is more biased than POLICY allows.

    RESULTS is a run folder written by 'audit run' or its results.json.
    Prints one row per checked figure; exits 0 when every rule passes,
    1 when a rule fails, 2 when the policy or results are invalid or the
    --junit or --markdown file cannot be written (the verdict is printed first).

    \b
    Example:
      audit gate runs/dlib --policy examples/policy.toml --junit gate.xml
      audit gate runs/dlib --policy examples/policy.toml --markdown gate.md
      cat gate.md >> "$GITHUB_STEP_SUMMARY"
      audit gate runs/new --policy examples/policy.toml --baseline runs/v1.2 --json
    """
    policy = load_policy(policy_path)
    current = load_results(results)
    baseline = load_results(baseline_path) if baseline_path is not None else None
    verdict = evaluate_policy(policy, current, baseline=baseline)
    # The verdict first: a JUnit file that cannot be written must not hide it.
    echo(format_verdict_table(verdict), err=as_json, nl=False)
    if as_json:
        echo(verdict_to_json(verdict))
    if junit_path is not None:
        write_junit(junit_path, verdict_to_junit(verdict))   # unwritable: an input error, exit 2
    if markdown_path is not None:
        write_verdict_file(markdown_path, verdict_to_markdown(verdict, current), what="the Markdown verdict",
                           option="--markdown")
    click.get_current_context().exit(verdict.exit_code)
