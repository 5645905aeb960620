"""The one results model: written by the runner, read back whole, its entries typed and checked once."""

from __future__ import annotations

import json
import math

import pytest

from audit.errors import ResultsError
from audit.results import Disparity, Figure, Results, load_results, write_json_atomic


def sample() -> Results:
    figures = [Figure("detection", "failure_rate", "race", "A", 0.1, 0.05, 0.2, 60, 20, 6, "lower", ["few_errors"]),
               Figure("detection", "failure_rate", "race", "B", math.nan, None, None, 0, 0, 0, "lower", ["undefined"])]
    disparities = [Disparity("detection", "failure_rate", "race", "gap", 0.05, -0.1, 0.2, "A", "B", [],
                             0.4, 0.8, False, True)]
    return Results(figures, disparities, {"tool": {"name": "face-bias-audit"}, "figures": None,
                                          "disparities": None, "probes": {"volume": {"n": 1}}})


def test_a_written_run_reads_back_the_same(tmp_path):
    results = sample()
    write_json_atomic(tmp_path / "results.json", results.to_dict())
    again = load_results(tmp_path)
    assert again.figures[0] == results.figures[0]
    assert math.isnan(again.figures[1].value)          # NaN is written as null and read back as NaN
    assert again.disparities == results.disparities
    assert again.probes == {"volume": {"n": 1}}
    assert list(json.loads((tmp_path / "results.json").read_text())) == ["schema_version", "tool", "figures",
                                                                         "disparities", "probes"]
    assert again.to_dict() == results.to_dict()


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


def test_the_schema_version_is_checked_once_here():
    data = sample().to_dict()
    data["schema_version"] = "2.0"
    with pytest.raises(ResultsError, match="reads 1.x"):
        Results.from_dict(data)
