"""The report's attributes section: demographic leakage and generator fidelity, from ``probes.attributes``.

Two tables (what the embedding gives away about each attribute, per group,
beside chance; how much of it the reconstructions keep), a heat map per
attribute of source group against the group a reconstruction is read as, and
the groups whose reconstructions drift, for the first page.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from audit.result_sections import AttributesSection
from audit.results import Figure
from reports import figures as charts
from reports.text import format_count, format_interval, format_value

__all__ = ["attributes_context"]

PROBE = "attributes"
#: The leakage table's figures and the fidelity table's, by their metric's prefix.
LEAKAGE = ("accuracy", "balanced_accuracy")
FIDELITY = ("recon_accuracy", "fidelity")


def _cell(figure: Figure | None, unit: str) -> dict:
    if figure is None:
        return {"value": "-", "ci": "", "flags": []}
    return {"value": format_value(figure.value, unit), "ci": format_interval(figure.ci_low, figure.ci_high, unit),
            "flags": list(figure.flags)}


def attributes_context(detail: AttributesSection | None, figures: Sequence[Figure], order: Mapping[str, list[str]],
                       palette: charts.GroupPalette, *, sort_rows: Callable[[list, Mapping], list]) -> dict[str, Any]:
    """Everything the attributes section's tables and heat maps and the first page show, formatted.

    ``sort_rows`` puts rows with ``grouping`` and ``group`` in the report's order.  Every figure's own
    chart, table and comparisons are the report's usual metric blocks, below these.
    """
    empty = {"skipped": None, "readers": [], "leakage": [], "fidelity": [], "heatmaps": [], "drift": [],
             "training_source": None, "evaluated_on": None, "fidelity_unavailable": None, "drift_bound": "-"}
    if detail is None:
        return empty
    mine = [f for f in figures if f.probe == PROBE]
    index = {(f.metric, f.grouping, f.group): f for f in mine}
    readers, leakage, fidelity = [], [], []
    for attribute, reader in detail.readers.items():
        readers.append({"attribute": attribute, "skipped": reader.skipped, "classes": ", ".join(reader.classes),
                        "left_out": ", ".join(f"{k} ({v} people)" for k, v in reader.left_out_classes.items()),
                        "n_train_people": format_count(reader.n_train_people),
                        "cv": format_value(reader.cv_balanced_accuracy, "rate"),
                        "chance": format_value(reader.chance_balanced_accuracy, "rate"), "readable": reader.readable})
        if reader.skipped:
            continue
        groups = sort_rows([{"grouping": f.grouping, "group": f.group} for f in mine
                            if f.metric == f"accuracy_{attribute}"], order)
        chance = detail.chance.get(attribute, {})
        rows = []
        for g in groups:
            key = (g["grouping"], g["group"])
            c = chance.get(key[0], {}).get(key[1])
            accuracy = index.get((f"accuracy_{attribute}", *key))
            rows.append({**g, "colour": palette.colour(*key),
                         "accuracy": _cell(accuracy, "rate"),
                         "balanced": _cell(index.get((f"balanced_accuracy_{attribute}", *key)), "rate"),
                         "chance": format_value(c.accuracy, "rate") if c else "-",
                         "chance_balanced": format_value(c.balanced_accuracy, "rate") if c else "-",
                         "n_people": format_count(accuracy.n_people if accuracy else None)})
        leakage.append({"attribute": attribute, "rows": rows})
        drift_of = {(d.grouping, d.group): d for d in detail.drift if d.attribute == attribute}
        fid_rows = []
        for g in sort_rows([{"grouping": f.grouping, "group": f.group} for f in mine
                            if f.metric == f"fidelity_{attribute}"], order):
            key = (g["grouping"], g["group"])
            drift = drift_of.get(key)
            fid_rows.append({**g, "colour": palette.colour(*key),
                             "recon": _cell(index.get((f"recon_accuracy_{attribute}", *key)), "rate"),
                             "fidelity": _cell(index.get((f"fidelity_{attribute}", *key)), "number"),
                             "drift": drift is not None,
                             "drifts_to": (f"{drift.drifts_to} ({format_value(drift.drifts_to_share, 'rate')})"
                                           if drift is not None and drift.drifts_to else "")})
        if fid_rows:
            fidelity.append({"attribute": attribute, "rows": fid_rows})
    heatmaps = [{"grouping": c.grouping, "chart": charts.confusion_chart(c.grouping, c.sources, c.predicted, c.real,
                                                                         c.reconstructed)}
                for c in detail.confusion if c.sources and c.predicted]
    drift = [{"attribute": d.attribute, "where": f"{d.grouping}: {d.group}" if d.grouping != "all" else "everyone",
              "fidelity": format_value(d.fidelity), "ci": format_interval(d.ci_low, d.ci_high),
              "drift": format_value(d.drift, "rate"),
              "drifts_to": d.drifts_to or "", "share": format_value(d.drifts_to_share, "rate")}
             for d in sort_rows(list(detail.drift), order)]
    return {"skipped": detail.skipped, "readers": readers, "leakage": leakage, "fidelity": fidelity,
            "heatmaps": heatmaps, "drift": drift, "training_source": detail.training_source,
            "evaluated_on": detail.evaluated_on, "fidelity_unavailable": detail.fidelity_unavailable,
            "drift_bound": format_value(detail.drift_bound)}
