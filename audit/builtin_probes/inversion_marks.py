"""How far the inversion probe's numbers can be trusted: no identity signal, spread between generators.

A reconstruction without identity makes every inversion figure measure
noise (``no_signal``); a difference between groups that flips with the
generator's seed describes the generator (``unstable``).  Both are judged
here, on the probe's own figures, after they are computed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from audit.results import ALL, DISPARITY_KINDS, FLAG_NO_SIGNAL, Disparity, Figure, grouping_name
from probes.generator_seeds import judge_across_generators
from probes.inversion.leakage import LeakageResult
from probes.inversion.splits import group_labels

#: (metric, samples column, kind, better, disparity kinds).  Baselines (random pairs) are context
#: for the reader, not comparisons between groups: they get figures but no disparities.
INVERSION_METRICS = (
    ("mean_distance", "distance", "mean", "higher", DISPARITY_KINDS),
    ("success_rate_at_default", "success_at_default", "rate", "lower", DISPARITY_KINDS),
    ("random_match_rate_at_default", "random_match_at_default", "rate", None, ()),
    ("success_rate_at_crossing", "success_at_crossing", "rate", "lower", DISPARITY_KINDS),
    ("success_rate_at_fmr_1e-3", "success_at_fmr_1e-3", "rate", "lower", DISPARITY_KINDS),
    ("no_face_rate", "no_face", "rate", "lower", DISPARITY_KINDS),
    ("random_pair_distance_within", "random_pair_distance_within", "mean", None, ()),
    ("type2_distance", "type2_distance", "mean", "higher", DISPARITY_KINDS),
)


def mark_no_signal(figures: Sequence[Figure], disparities: Sequence[Disparity], signal) -> dict:
    """Flag inversion numbers that rest on reconstructions without identity (``no_signal``).

    Without signal overall, every inversion figure and disparity is flagged;
    otherwise a group without signal flags its own figures and every
    comparison it is part of.  Returns the summary results.json records.
    """
    tests = {(t.grouping, t.group): t for t in signal}
    overall = tests.get((ALL, ALL))
    if overall is None:
        return {"tested": False}
    missing = {key for key, t in tests.items() if not t.signal}
    for f in figures:
        if (not overall.signal or (f.grouping, f.group) in missing) and FLAG_NO_SIGNAL not in f.flags:
            f.flags.append(FLAG_NO_SIGNAL)
    for d in disparities:
        involved = {(d.grouping, d.worst_group), (d.grouping, d.best_group)}
        if (not overall.signal or involved & missing) and FLAG_NO_SIGNAL not in d.flags:
            d.flags.append(FLAG_NO_SIGNAL)
    return {"tested": True, "overall": bool(overall.signal), "p_value": overall.p_value,
            "alpha": overall.alpha, "groups_without_signal": [f"{g}: {lab}" for g, lab in sorted(missing)]}


def _group_means(samples: pd.DataFrame, column: str, grouping: Sequence[str]) -> pd.DataFrame:
    """Mean of ``column`` per (generator, group of ``grouping``): rows generator, columns group."""
    frame = pd.DataFrame({"generator": samples["generator"].to_numpy(),
                          "group": group_labels(samples, list(grouping)),
                          "value": pd.to_numeric(samples[column], errors="coerce").to_numpy()})
    return frame.groupby(["generator", "group"])["value"].mean().unstack("group")


def generator_spread(samples: pd.DataFrame, groupings: Sequence[Sequence[str]]) -> dict:
    """Each inversion figure per generator, per group: how much it moves with the generator's seed."""
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for metric, column, _, _, _ in INVERSION_METRICS:
        if column not in samples.columns or samples[column].notna().sum() == 0:
            continue
        per_grouping = {}
        for grouping in [[]] + [list(g) for g in groupings]:
            means = _group_means(samples, column, grouping)
            per_grouping[grouping_name(grouping)] = {
                str(group): {"values": [None if pd.isna(v) else round(float(v), 6) for v in means[group]],
                             "min": _finite(means[group].min()), "max": _finite(means[group].max()),
                             "sd": _finite(means[group].std(ddof=1))}
                for group in means.columns}
        out[f"inversion.{metric}"] = per_grouping
    return out


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def mark_unstable(disparities: Sequence[Disparity], samples: pd.DataFrame,
                  groupings: Sequence[Sequence[str]]) -> None:
    """Judge each inversion disparity across the generators (:mod:`probes.generator_seeds`).

    A difference between groups that flips with the generator's seed
    describes the generator, not the target: it is flagged ``unstable``
    and never a finding; with several generators the p-value also needs
    the generators' own test.
    """
    columns = {metric: (column, better) for metric, column, _, better, _ in INVERSION_METRICS}
    by_name = {grouping_name(g): list(g) for g in groupings}
    for d in disparities:
        if d.metric not in columns or d.grouping not in by_name or not d.worst_group or not d.best_group:
            continue
        column, better = columns[d.metric]
        means = _group_means(samples, column, by_name[d.grouping])
        if d.worst_group not in means or d.best_group not in means:
            continue
        judge_across_generators(d, means[d.worst_group].to_numpy(), means[d.best_group].to_numpy(), better)


def leakage_spread(leakage: LeakageResult) -> dict:
    """Each leakage figure per generator, per group (the same records as :func:`generator_spread`)."""
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for (grouping, group), g in leakage.groups.items():
        for metric, values in g.per_generator.items():
            finite = [v for v in values if np.isfinite(v)]
            out.setdefault(f"inversion.{metric}", {}).setdefault(grouping, {})[group] = {
                "values": [round(float(v), 6) if np.isfinite(v) else None for v in values],
                "min": min(finite) if finite else None, "max": max(finite) if finite else None,
                "sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else None}
    return out


def mark_unstable_leakage(disparities: Sequence[Disparity], leakage: LeakageResult) -> None:
    """:func:`mark_unstable` for the leakage figures (higher leaks more: the worst group is the higher)."""
    for d in disparities:
        worst = leakage.groups.get((d.grouping, d.worst_group or ""))
        best = leakage.groups.get((d.grouping, d.best_group or ""))
        if d.probe != "inversion" or worst is None or best is None or d.metric not in worst.per_generator \
                or d.metric not in best.per_generator:
            continue
        judge_across_generators(d, worst.per_generator[d.metric], best.per_generator[d.metric], "lower")
