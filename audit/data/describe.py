"""``audit dataset describe``: what a dataset holds, before anyone audits with it.

A bias audit is only as good as its groups: a group of 12 people, or one
person photographed 500 times, gives numbers a reader must not lean on.
:func:`describe_dataset` counts images and people per group, for each
attribute alone and for their intersection, the images per identity, and
what was excluded and why.  Its result is plain JSON (``results.json``
and the report embed it); :func:`render_description` prints it.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict
from typing import Any, Sequence

import pandas as pd

from audit.data.manifest import (IDENTITY_COLUMN, IMAGE_ID_COLUMN, Dataset, check_group_by,
                                 check_not_blank, exclusion_kind)
from audit.results import group_label, grouping_name
from audit.sinks import terminal_text

#: Grouped together by default when the dataset has both.
DEFAULT_INTERSECTION = ("race", "gender")
#: Attributes with more distinct values than this (ages, names) are not
#: listed group by group unless asked for with --group-by.
MAX_DEFAULT_GROUPS = 20
#: Examples of each exclusion reason kept in the description.
EXAMPLES_PER_REASON = 5
#: How the text rendering shows a blank attribute value.
MISSING_LABEL = "(missing)"


def default_group_by(dataset: Dataset) -> tuple[list[str], list[str] | None]:
    """Attributes to list alone, and the intersection to list, when none are asked for."""
    singles = []
    for attribute in dataset.attributes:
        values = dataset.manifest_rows[attribute]
        if values[values != ""].nunique() <= MAX_DEFAULT_GROUPS:
            singles.append(attribute)
    intersection = [a for a in DEFAULT_INTERSECTION if a in dataset.attributes]
    return singles, (intersection if len(intersection) >= 2 else None)


def _keys(frame: pd.DataFrame, attributes: Sequence[str]) -> list[tuple[str, ...]]:
    return list(zip(*(frame[a].astype(str).tolist() for a in attributes)))


def _grouping(dataset: Dataset, attributes: list[str]) -> dict[str, Any]:
    table, manifest = dataset.table, dataset.manifest_rows
    table_keys = _keys(table, attributes)
    manifest_keys = _keys(manifest, attributes)
    n_manifest = Counter(manifest_keys)
    n_images = Counter(table_keys)
    people: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for key, identity in zip(table_keys, table[IDENTITY_COLUMN].tolist()):
        people[key].add(identity)

    # Each attribute's values, most frequent first: the order every table uses.
    orders = []
    for attribute in attributes:
        counts = Counter(v for v in manifest[attribute].tolist() if v != "")
        orders.append(sorted(counts, key=lambda v: (-counts[v], v)))
    groups = []
    for combination in itertools.product(*orders):
        groups.append({
            "group": group_label(combination),
            "values": dict(zip(attributes, combination)),
            "n_manifest_rows": n_manifest.get(combination, 0),
            "n_images": n_images.get(combination, 0),
            "n_people": len(people.get(combination, ())),
        })
    missing_keys = [k for k in set(n_manifest) | set(n_images) if "" in k]
    missing_people = set().union(*(people.get(k, set()) for k in missing_keys)) if missing_keys else set()
    return {
        "grouping": grouping_name(attributes),
        "attributes": list(attributes),
        "groups": groups,
        "missing": {"n_manifest_rows": sum(n_manifest.get(k, 0) for k in missing_keys),
                    "n_images": sum(n_images.get(k, 0) for k in missing_keys),
                    "n_people": len(missing_people)},
        "n_empty_groups": sum(1 for g in groups if g["n_images"] == 0),
    }


def _exclusion_summary(frame: pd.DataFrame) -> dict[str, Any]:
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row, path, reason in frame[["row", "path", "reason"]].itertuples(index=False, name=None):
        by_kind[exclusion_kind(str(reason))].append({"row": row, "path": path, "reason": reason})
    ordered = sorted(by_kind.items(), key=lambda item: (-len(item[1]), item[0]))
    return {"total": int(len(frame)),
            "by_reason": [{"reason": kind, "count": len(rows), "examples": rows[:EXAMPLES_PER_REASON]}
                          for kind, rows in ordered]}


def _duplicates_with_other_labels(dataset: Dataset) -> dict[str, Any]:
    """Excluded copies whose labels differ from the kept copy's: a measure of label noise."""
    result: dict[str, Any] = {"n": 0, "by_attribute": {}}
    if not dataset.attributes or dataset.exclusions.empty:
        return result
    labels = {row[0]: row[1:] for row in dataset.manifest_rows[
        [IMAGE_ID_COLUMN, *dataset.attributes]].itertuples(index=False, name=None)}
    by_attribute: Counter[str] = Counter()
    for path, reason in dataset.exclusions[["path", "reason"]].itertuples(index=False, name=None):
        if not str(reason).startswith("duplicate of "):
            continue
        kept = str(reason)[len("duplicate of "):]
        if kept in labels and path in labels and labels[kept] != labels[path]:
            result["n"] += 1
            by_attribute.update(a for a, x, y in zip(dataset.attributes, labels[kept], labels[path])
                                if x != y)
    result["by_attribute"] = {a: by_attribute[a] for a in dataset.attributes if by_attribute[a]}
    return result


def describe_dataset(dataset: Dataset, group_by: Sequence[str] | None = None) -> dict[str, Any]:
    """Counts per group (alone and intersected), identities and exclusions, as plain JSON.

    With ``group_by``, each named attribute is listed alone and, when there
    are several, their intersection (every combination of values, empty
    ones included).  Without it, every attribute with at most
    ``MAX_DEFAULT_GROUPS`` values is listed, and race x gender where both
    exist.  ``n_manifest_rows`` counts what the manifest says, ``n_images``
    and ``n_people`` what is usable after exclusions.
    """
    if group_by:
        wanted = list(check_group_by(dataset.attributes, group_by, manifest=dataset.manifest_path))
        check_not_blank(wanted, [dataset.manifest_rows[a].tolist() for a in wanted],
                        attributes=dataset.attributes, manifest=dataset.manifest_path)
        singles, intersection = wanted, (wanted if len(wanted) >= 2 else None)
    else:
        singles, intersection = default_group_by(dataset)
    groupings = [_grouping(dataset, [a]) for a in singles]
    if intersection:
        groupings.append(_grouping(dataset, intersection))

    per_identity = dataset.table.groupby(IDENTITY_COLUMN, sort=False).size().tolist()
    several = [n for n in per_identity if n >= 2]
    not_listed = {a: int(dataset.manifest_rows[a][dataset.manifest_rows[a] != ""].nunique())
                  for a in dataset.attributes if a not in singles}
    return {
        "dataset": str(dataset.root),
        "kind": dataset.info.get("kind"),
        "source": dataset.info.get("source"),
        "images_mode": (dataset.info.get("images") or {}).get("mode"),
        "n_manifest_rows": int(len(dataset.manifest_rows)),
        "n_images": int(len(dataset.table)),
        "n_people": int(len(per_identity)),
        "has_identities": bool(dataset.has_identities),
        "attributes": list(dataset.attributes),
        "attributes_not_listed": not_listed,
        "images_per_identity": {
            "min": int(min(per_identity)), "median": float(statistics.median(per_identity)),
            "max": int(max(per_identity)),
            "n_identities_with_2_or_more": len(several),
            "n_images_of_those": int(sum(several)),
        },
        "groupings": groupings,
        "exclusions": {
            "on_import": _exclusion_summary(dataset.import_exclusions),
            "on_load": _exclusion_summary(dataset.exclusions),
            "duplicates_with_other_labels": _duplicates_with_other_labels(dataset),
        },
        "notes": list(dataset.notes),
    }


# --------------------------------------------------------------------------- text

def _n(value: int | float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}".rstrip("0").rstrip(".")


def _table(title: str, rows: list[tuple[str, int, int, int]], *, identities: bool) -> list[str]:
    # labels as the terminal will show them, before the columns are measured
    title = terminal_text(title)
    rows = [(terminal_text(label), *counts) for label, *counts in rows]
    width = max([len(title)] + [len(r[0]) + 2 for r in rows])
    header = f"{title:<{width}}  {'manifest':>9}  {'images':>9}"
    if identities:
        header += f"  {'people':>9}"
    lines = [header]
    for label, manifest, images, people in rows:
        line = f"  {label:<{width - 2}}  {_n(manifest):>9}  {_n(images):>9}"
        if identities:
            line += f"  {_n(people):>9}"
        lines.append(line)
    return lines


def _exclusion_lines(title: str, summary: dict[str, Any], *, where: str) -> list[str]:
    if not summary["total"]:
        return [f"{title}: none"]
    lines = [f"{title}: {_n(summary['total'])} ({where})"]
    for entry in summary["by_reason"]:
        lines.append(f"  {entry['reason']}: {_n(entry['count'])}")
        for example in entry["examples"]:
            row = f"row {example['row']}: " if str(example["row"]) not in ("", "nan") else ""
            lines.append(f"    {row}{example['path']}: {example['reason']}")
        if entry["count"] > len(entry["examples"]):
            lines.append(f"    ... and {_n(entry['count'] - len(entry['examples']))} more")
    return lines


def render_description(description: dict[str, Any], *, max_notes: int = 20) -> str:
    """The text ``audit dataset describe`` prints, every line through :func:`audit.sinks.terminal_text`.

    Labels, attribute names, paths and reasons come from the dataset: none
    of their control characters reaches the terminal.
    """
    d = description
    lines = [f"Dataset {d['dataset']}"]
    if d.get("kind"):
        how = {"link": "images linked", "copy": "images copied"}.get(d.get("images_mode"), "")
        lines.append(f"  made by: {d['kind']} from {d.get('source')}" + (f" ({how})" if how else ""))
    lines.append(f"  images: {_n(d['n_images'])} usable of {_n(d['n_manifest_rows'])} manifest rows")
    per = d["images_per_identity"]
    if d["has_identities"]:
        lines.append(f"  people: {_n(d['n_people'])} identities; images per identity: min {per['min']}, "
                     f"median {_n(per['median'])}, max {per['max']}")
        lines.append(f"  identities with >= 2 images: {_n(per['n_identities_with_2_or_more'])} "
                     f"({_n(per['n_images_of_those'])} images)")
    else:
        lines.append("  people: no identity column: each image counts as its own person")
    lines.append(f"  attributes: {', '.join(d['attributes']) or '(none)'}")
    for attribute, n in d["attributes_not_listed"].items():
        lines.append(f"  {attribute}: {n} distinct values, not listed (use --group-by {attribute})")
    lines.append("  (manifest: rows in the manifest; images, people: usable after exclusions)")
    for grouping in d["groupings"]:
        lines.append("")
        title = " x ".join(grouping["attributes"])
        rows = [(g["group"], g["n_manifest_rows"], g["n_images"], g["n_people"]) for g in grouping["groups"]]
        missing = grouping["missing"]
        if missing["n_manifest_rows"] or missing["n_images"]:
            rows.append((MISSING_LABEL, missing["n_manifest_rows"], missing["n_images"], missing["n_people"]))
        lines += _table(title, rows, identities=d["has_identities"])
        if grouping["n_empty_groups"]:
            lines.append(f"  {grouping['n_empty_groups']} group(s) have no usable image")
    lines.append("")
    lines += _exclusion_lines("Excluded on import", d["exclusions"]["on_import"],
                              where="exclusions.csv")
    lines += _exclusion_lines("Excluded on load", d["exclusions"]["on_load"],
                              where="rows of manifest.csv")
    differing = d["exclusions"]["duplicates_with_other_labels"]
    if differing["n"]:
        which = ", ".join(f"{a} {_n(n)}" for a, n in differing["by_attribute"].items())
        lines.append(f"  {_n(differing['n'])} excluded duplicate(s) carry labels that differ from the "
                     f"kept copy's ({which}): expect label noise")
    if d["notes"]:
        lines.append("")
        lines.append(f"Notes from the import ({len(d['notes'])}):")
        for note in d["notes"][:max_notes]:
            lines.append(f"  {note}")
        if len(d["notes"]) > max_notes:
            lines.append(f"  ... and {len(d['notes']) - max_notes} more (see dataset.json)")
    return "\n".join(terminal_text(line) for line in lines)
