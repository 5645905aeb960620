"""The public Python entry point: a run's figures, disparities and findings as pandas tables."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from audit.api import load_results
from audit.api import DISPARITY_COLUMNS, FIGURE_COLUMNS
from audit.errors import InputError, ResultsError
from report_fixtures import build_run


@pytest.fixture()
def run_dir(tmp_path):
    build_run(tmp_path / "run")
    return tmp_path / "run"


def test_figures_are_one_row_per_group_and_metric_with_their_intervals(run_dir):
    run = load_results(run_dir)
    data = json.loads((run_dir / "results.json").read_text())
    assert list(run.figures.columns) == list(FIGURE_COLUMNS)
    assert len(run.figures) == len(data["figures"])
    first = data["figures"][0]
    row = run.figures.iloc[0]
    assert (row["key"], row["group"]) == (f"{first['probe']}.{first['metric']}", first["group"])
    assert row["value"] == pytest.approx(first["value"])
    assert isinstance(row["flags"], tuple)


def test_one_metric_by_group_and_a_clear_error_for_an_unknown_one(run_dir):
    run = load_results(run_dir / "results.json")
    key = run.metrics[0]
    table = run.figure(key, grouping="race")
    assert table.index.names == ["grouping", "group"]
    assert set(table.index.get_level_values("grouping")) == {"race"}
    assert {"value", "ci_low", "ci_high", "n_people"} <= set(table.columns)
    with pytest.raises(InputError, match="not a figure of this run"):
        run.figure("inversion.no_such_metric")
    with pytest.raises(InputError, match="has no"):
        run.figure(key, grouping="no such grouping")


def test_findings_are_the_disparities_that_survived_the_correction(run_dir):
    run = load_results(run_dir)
    assert list(run.disparities.columns) == list(DISPARITY_COLUMNS)
    n_findings = sum(1 for d in json.loads((run_dir / "results.json").read_text())["disparities"]
                     if d.get("finding"))
    assert len(run.findings) == n_findings
    assert run.findings["finding"].all() if n_findings else run.findings.empty
    assert isinstance(run.disparities, pd.DataFrame)


def test_a_missing_run_is_an_input_error_that_names_the_file(tmp_path):
    with pytest.raises(ResultsError, match="No results file"):
        load_results(tmp_path)


def test_the_api_and_the_cli_load_without_torch():
    code = "import sys, audit.cli, audit.api; print('pandas' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False"
