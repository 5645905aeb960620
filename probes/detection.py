"""The detection probe: how often no face is found, per group.

A face the detector misses never reaches the model, so a group whose faces
are missed more often is served worse before any embedding is compared;
the failure rate is a bias measure of its own (ISO/IEC 19795-1 counts it
as failure to acquire).  Every image of the dataset counts: ``ok`` ones as
successes, ``no_face`` and ``error`` ones as failures, none dropped.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from audit.json_model import from_json, json_safe
from audit.result_sections import DetectionRow, DetectionSection
from audit.sinks import terminal_text
from audit.targets.base import STATUS_ERROR, STATUS_NO_FACE, STATUS_OK
from probes.result import ProbeResult
from probes.stats import group_figures, permutation_test

PROBE = "detection"
METRIC = "failure_rate"
#: How many of the commonest failure reasons results.json lists.
TOP_REASONS = 20


def detection_table(table: pd.DataFrame, attributes: Sequence[str]) -> pd.DataFrame:
    """Counts of each status per value of each attribute (and overall), with the failure rate."""
    frames = []
    for attribute in attributes:
        counts = pd.crosstab(table[attribute].astype(str), table["status"])
        counts.insert(0, "attribute", attribute)
        frames.append(counts)
    overall = table["status"].value_counts().to_frame().T
    overall.index = ["all"]
    overall.insert(0, "attribute", "all")
    frames.append(overall)
    out = pd.concat(frames).fillna(0)
    statuses = (STATUS_OK, STATUS_NO_FACE, STATUS_ERROR)
    for column in statuses:
        if column not in out.columns:
            out[column] = 0
    out = out[["attribute", *statuses]].astype({s: int for s in statuses})
    out["failure_rate"] = (out[STATUS_NO_FACE] + out[STATUS_ERROR]) / out[list(statuses)].sum(axis=1)
    out.index.name = "group"
    return out


def detection_probe(table: pd.DataFrame, *, attributes: Sequence[str], groupings: Sequence[Sequence[str]],
                    person: str = "identity", n_resamples: int, seed: int) -> ProbeResult:
    """Failure rate per group (exact intervals, people as the unit), pairwise disparities, and a
    permutation test per grouping of whether the groups differ at all.

    ``table`` is the embed stage's table: one row per dataset image with its
    ``status`` and ``reason``, ``person`` and the ``attributes`` columns.
    """
    samples = table.loc[:, ["image_id", person, *attributes]].reset_index(drop=True)
    samples["failed"] = (table["status"].to_numpy() != STATUS_OK).astype(float)
    figures, disparities = group_figures(samples, probe=PROBE, metric=METRIC, value="failed", person=person,
                                         groupings=groupings, better="lower", kind="rate",
                                         n_resamples=n_resamples, seed=seed)
    tests = {"*".join(grouping): permutation_test(samples, value="failed", grouping=grouping, person=person,
                                                  n_permutations=n_resamples, seed=seed)
             for grouping in groupings}
    failed = table["status"].to_numpy() != STATUS_OK
    details = DetectionSection(
        by_status={str(k): int(v) for k, v in table["status"].value_counts().items()},
        reasons={str(k): int(v) for k, v in table.loc[failed, "reason"].value_counts().head(TOP_REASONS).items()},
        table=from_json(list[DetectionRow], json_safe(detection_table(table, attributes).reset_index()
                                                      .to_dict("records")), "detection table"))
    return ProbeResult(figures, disparities, details, tests)


def summarize_detection(table: pd.DataFrame, attributes: Sequence[str]) -> str:
    """The detection table as text for the terminal, with the commonest reasons for a failure.

    Group labels and reasons (which quote file names) are shown through
    :func:`audit.sinks.terminal_text` before the table is laid out.
    """
    frame = detection_table(table, [a for a in attributes if table[a].nunique() <= 50])
    frame = frame.assign(failure_rate=frame["failure_rate"].map(lambda r: f"{r:.1%}"),
                         attribute=frame["attribute"].map(terminal_text))
    frame.index = frame.index.map(terminal_text).rename(frame.index.name)
    text = "Detections per group:\n" + frame.to_string()
    failed = table[table["status"] != STATUS_OK]
    if len(failed):
        reasons = failed["reason"].value_counts().head(5)
        text += "\nMost common reasons:\n" + "\n".join(f"  {n:6d}  {terminal_text(r)}"
                                                      for r, n in reasons.items())
    return text
