"""The detection probe: every image counts, failures per group with exact intervals."""

from __future__ import annotations

import pandas as pd
import pytest

from probes.detection import detection_probe, detection_table, summarize_detection


def embed_table() -> pd.DataFrame:
    """Group A: 20 people, 1 missed face; group B: 20 people, 6 missed faces and 2 unreadable files."""
    rows = []
    for group, failures in (("A", {0: "no_face"}), ("B", {i: "no_face" for i in range(6)} | {6: "error", 7: "error"})):
        for i in range(20):
            status = failures.get(i, "ok")
            rows.append({"image_id": f"{group}{i}.png", "identity": f"{group}{i}", "race": group, "status": status,
                         "reason": {"ok": "", "no_face": "no face found", "error": "unreadable"}[status]})
    return pd.DataFrame(rows)


def test_failure_rates_count_every_image():
    result = detection_probe(embed_table(), attributes=("race",), groupings=[["race"]], n_resamples=200, seed=0)
    rates = {f.group: f for f in result.figures if f.grouping == "race"}
    assert rates["A"].value == pytest.approx(1 / 20) and rates["A"].n_people == 20
    assert rates["B"].value == pytest.approx(8 / 20)
    assert rates["A"].ci_low < rates["A"].value < rates["A"].ci_high
    assert result.details.by_status == {"ok": 31, "no_face": 7, "error": 2}
    assert result.details.reasons == {"no face found": 7, "unreadable": 2}
    assert [d for d in result.disparities if d.kind == "gap"]
    assert result.tests["race"]["p_value"] < 0.05


def test_a_group_without_failures_still_gets_an_upper_bound():
    table = embed_table()
    table.loc[table["race"] == "A", ["status", "reason"]] = ["ok", ""]
    result = detection_probe(table, attributes=("race",), groupings=[["race"]], n_resamples=200, seed=0)
    a = next(f for f in result.figures if f.group == "A")
    assert a.value == 0 and a.ci_high > 0.1


def test_the_table_and_its_text():
    frame = detection_table(embed_table(), ["race"])
    assert frame.loc["B", ["ok", "no_face", "error"]].tolist() == [12, 6, 2]
    assert frame.loc["all", "failure_rate"] == pytest.approx(9 / 40)
    text = summarize_detection(embed_table(), ["race"])
    assert "no face found" in text and "40.0%" in text
