"""Render a finished run into ``report.html`` and ``report.pdf``.

Both come from the same Jinja2 templates (``templates/`` at the top of the
repository) and the same context, built here from ``results.json`` alone:
rendering never re-runs a probe.  The HTML is one self-contained file
(charts and sample faces as data URIs, CSS inline, a Content-Security-Policy
that forbids any request), so it can be mailed or archived as it is.

Everything that comes from the dataset or the user (group labels, paths,
names) reaches the page through Jinja2's autoescaping, and WeasyPrint gets
a URL fetcher that refuses anything but data: URIs and the run's own files,
so a hostile label can neither inject markup nor make the renderer fetch a
URL or read a local file.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from audit.errors import InputError
from audit.outputs import check_writable_folder, write_atomic
from audit.results import ALL, GROUPING_JOIN, RESULTS_FILE, Results, load_results
from reports import figures as charts
from reports.text import (CORRECTION_TEXT, FLAG_SHORT, FLAG_TEXT, METRICS, better_text, describe_metric,
                          disparity_sentence, finding_sentence, findings_by_pair, format_count, format_interval,
                          format_value)

__all__ = ["render_report", "build_context", "render_html", "write_pdf", "is_allowed_url", "make_url_fetcher",
           "TEMPLATES_DIR", "FORMATS", "HTML_FILE", "PDF_FILE"]

def _templates_dir() -> Path:
    """The templates folder: the package data ``reports.templates`` (the repository's ``templates/``)."""
    from importlib import resources

    try:
        return Path(str(resources.files("reports.templates")))
    except ModuleNotFoundError:   # a source tree that was never installed
        return Path(__file__).resolve().parents[1] / "templates"


TEMPLATES_DIR = _templates_dir()
MAIN_TEMPLATE = "report.html.j2"
STYLESHEET = "report.css"
HTML_FILE = "report.html"
PDF_FILE = "report.pdf"
FORMATS = ("html", "pdf")
PROBES = ("detection", "inversion", "volume", "verification")
PROBE_TITLES = {"detection": "Face detection", "inversion": "Inversion: reconstructing faces from embeddings",
                "volume": "Embedding-space volume", "verification": "Verification bias"}
#: Sample images larger than this are not embedded (a run writes 64x64 chips).
MAX_IMAGE_BYTES = 5 * 1024 * 1024
IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
#: How many failed policy checks the first page lists (the full table follows in its section).
FIRST_PAGE_FAILED_CHECKS = 8
#: How many findings the first page lists (every finding is in its metric's section).
FIRST_PAGE_FINDINGS = 5
#: Findings beyond the largest difference that a metric's section spells out per grouping.
SECTION_FINDINGS = 3
OPERATORS = {"<=": "\u2264", ">=": "\u2265", "<": "<", ">": ">", "==": "="}

#: The way round a run folder that cannot be written.
ELSEWHERE = "render it from a copy of the run folder"
MSG_BAD_FORMAT = ("unknown report format {value!r}: choose from {choices} (the CLI's --format both "
                  "writes html and pdf).")
MSG_NO_FORMAT = "no report format given: pass formats=('html',), ('pdf',) or ('html', 'pdf')."
MSG_NO_TEMPLATES = ("the report templates are missing: expected {path}. Reinstall the tool "
                    "(pip install face-bias-audit, or pip install -e . in its repository).")
MSG_NO_WEASYPRINT = ("WeasyPrint is not installed, so no PDF can be written: pip install weasyprint "
                     "(and its system libraries, see its documentation), or pass --format html.")
MSG_REFUSED_URL = ("refused to fetch {url!r} while rendering the PDF: the report may only use data: URIs "
                   "and files inside the run folder {run_dir}.")


# --------------------------------------------------------------------------- safety

def is_allowed_url(url: str, run_dir: Path) -> bool:
    """True for data: URIs and file: URLs of files inside ``run_dir``; False for anything else."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "data":
        return True
    if scheme != "file":
        return False
    path = Path(unquote(urlsplit(url).path))
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return False
    root = Path(run_dir).resolve()
    return resolved.is_relative_to(root) and resolved.is_file()


class RefusedURL(ValueError):
    """A URL the report renderer will not fetch (WeasyPrint logs it and goes on)."""


def make_url_fetcher(run_dir: Path):
    """A WeasyPrint URL fetcher that only serves data: URIs and the run's own files."""
    run_dir = Path(run_dir).resolve()
    try:
        from weasyprint.urls import URLFetcher  # WeasyPrint >= 66: a fetcher is a URLFetcher
    except ImportError:  # pragma: no cover - older WeasyPrint: a fetcher is a function
        from weasyprint import default_url_fetcher

        def fetch(url, *args, **kwargs):
            if not is_allowed_url(url, run_dir):
                raise RefusedURL(MSG_REFUSED_URL.format(url=url, run_dir=run_dir))
            return default_url_fetcher(url, *args, **kwargs)

        return fetch

    class RunFilesFetcher(URLFetcher):
        def fetch(self, url, headers=None):
            if not is_allowed_url(url, run_dir):
                raise RefusedURL(MSG_REFUSED_URL.format(url=url, run_dir=run_dir))
            return super().fetch(url, headers)

    return RunFilesFetcher(allowed_protocols={"data", "file"}, allow_redirects=False)


def embed_image(run_dir: Path, relative: str | None) -> str | None:
    """A sample image of the run as a data URI, or None if it is missing, outside the run or not an image."""
    if not relative:
        return None
    root = Path(run_dir).resolve()
    try:
        path = (root / relative).resolve()
    except (OSError, RuntimeError, TypeError):
        return None
    if not path.is_relative_to(root) or not path.is_file() or path.stat().st_size > MAX_IMAGE_BYTES:
        return None
    data = path.read_bytes()
    for signature, mime in IMAGE_SIGNATURES:
        if data.startswith(signature):
            return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return None


# --------------------------------------------------------------------------- context

def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def describe_groupings(results: Mapping) -> dict[str, dict[str, dict]]:
    """grouping -> group -> {n_images, n_people}, from ``dataset.describe.groupings``.

    ``audit dataset describe`` writes a list of groupings, each with a list
    of groups; older or hand-made files may hold the nested mapping.
    Both are read.
    """
    raw = ((results.get("dataset") or {}).get("describe") or {}).get("groupings") or {}
    if isinstance(raw, Mapping):
        return {str(k): dict(v or {}) for k, v in raw.items()}
    out: dict[str, dict[str, dict]] = {}
    for entry in raw:
        if isinstance(entry, Mapping) and "grouping" in entry:
            out[str(entry["grouping"])] = {str(g.get("group")): dict(g) for g in entry.get("groups") or []
                                           if isinstance(g, Mapping)}
    return out


def describe_exclusions(results: Mapping) -> dict[str, int]:
    """Exclusion reason -> count, from either form of ``dataset.describe.exclusions``."""
    raw = ((results.get("dataset") or {}).get("describe") or {}).get("exclusions") or {}
    counts: dict[str, int] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping) and isinstance(value.get("by_reason"), list):
            for item in value["by_reason"]:
                reason = str(item.get("reason"))
                counts[reason] = counts.get(reason, 0) + int(item.get("count") or 0)
        elif isinstance(value, (int, float)):
            counts[str(key)] = counts.get(str(key), 0) + int(value)
    return counts


def _grouping_order(results: Mapping) -> dict[str, list[str]]:
    """Grouping -> groups, in the dataset's order: attributes alone, then intersections, then the rest."""
    describe = describe_groupings(results)
    order: dict[str, list[str]] = {ALL: [ALL]}
    for grouping, groups in describe.items():
        order.setdefault(str(grouping), []).extend(str(g) for g in groups)
    for grouping, groups in charts.distinct_groups(results.get("figures") or []).items():
        known = order.setdefault(grouping, [])
        known.extend(g for g in groups if g not in known)
    singles = [g for g in order if g != ALL and GROUPING_JOIN not in g]
    inters = [g for g in order if GROUPING_JOIN in g]
    return {g: order[g] for g in [ALL, *singles, *inters]}


def _sort_rows(rows: Iterable[Mapping], order: Mapping[str, list[str]]) -> list[Mapping]:
    groupings = list(order)

    def key(row):
        grouping, group = str(row.get("grouping")), str(row.get("group"))
        gi = groupings.index(grouping) if grouping in groupings else len(groupings)
        groups = order.get(grouping, [])
        return gi, groups.index(group) if group in groups else len(groups), group

    return sorted(rows, key=key)


def _flags_text(flags: Sequence[str] | None) -> str:
    return ", ".join(FLAG_SHORT.get(f, f) for f in flags or [])


def _metric_block(probe: str, metric: str, rows: list[Mapping], disparities: list[Mapping],
                  figures: list[Mapping], palette: charts.GroupPalette) -> dict:
    """One metric: its words, its chart, its table (formatted) and its comparisons in sentences.

    A metric that is undefined for every group (e.g. a spread ratio on a
    dataset without identities) is one sentence, not a table of "n/a".
    """
    key = f"{probe}.{metric}"
    text = describe_metric(key)
    better = next((r.get("better") for r in rows if r.get("better")), text.better)
    block = {"key": key, "id": f"metric-{probe}-{metric}".replace(".", "-").replace("_", "-"),
             "title": text.title, "meaning": text.meaning, "better": better_text(better), "known": key in METRICS,
             "unit": text.unit, "n_label": "Pairs" if probe == "verification" else "Images"}
    if rows and not any(_finite(r.get("value")) for r in rows):
        flags = sorted({FLAG_SHORT.get(f, f) for r in rows for f in r.get("flags") or [] if f != "undefined"})
        return {**block, "undefined": True, "rows": [], "sentences": [],
                "undefined_sentence": f"{text.title} is undefined for every group of this dataset"
                                      + (f" ({', '.join(flags)})" if flags else "")
                                      + (f": {UNDEFINED_REASONS[key]}." if key in UNDEFINED_REASONS else ".")}
    table = [{
        "grouping": str(r.get("grouping")), "group": str(r.get("group")),
        "colour": palette.colour(str(r.get("grouping")), str(r.get("group"))),
        "value": format_value(r.get("value"), text.unit),
        "ci": format_interval(r.get("ci_low"), r.get("ci_high"), text.unit) or "-",
        "n_people": format_count(r.get("n_people")), "n_images": format_count(r.get("n_images")),
        "count": format_count(r.get("count")) if r.get("count") is not None else "",
        "flags": _flags_text(r.get("flags")), "flagged": bool(r.get("flags")),
    } for r in rows]
    mine = [d for d in disparities if d.get("probe") == probe and d.get("metric") == metric
            and d.get("grouping") != ALL]
    sentences = []
    for grouping in dict.fromkeys(str(d.get("grouping")) for d in mine):
        of_grouping = [d for d in mine if d.get("grouping") == grouping]
        worst = (next((d for d in of_grouping if d.get("kind") == "ratio" and d.get("worst_pair")), None)
                 or next((d for d in of_grouping if d.get("worst_pair")), None) or of_grouping[0])
        n_pairs = len({_pair_key(d) for d in of_grouping})
        n_found = len({_pair_key(d) for d in of_grouping if d.get("finding")})
        lead = (f"By {grouping}, {n_found} of {n_pairs} pairs of groups differ after the correction; the largest "
                "difference: " if n_pairs > 1 else "")
        sentence = disparity_sentence(worst, figures)
        sentences.append(lead + (sentence[0].lower() + sentence[1:] if lead else sentence))
        others = findings_by_pair(d for d in of_grouping if _pair_key(d) != _pair_key(worst))
        sentences += [finding_sentence(pair, figures) for pair in others[:SECTION_FINDINGS]]
        if len(others) > SECTION_FINDINGS:
            sentences.append(f"{len(others) - SECTION_FINDINGS} more findings by {grouping}: see "
                             f"the disparities of {key} in results.json.")
    return {
        **block, "undefined": False,
        "chart": charts.interval_chart(rows, palette, unit=text.unit, xlabel=text.title),
        "rows": table, "has_counts": any(r.get("count") is not None for r in rows),
        "sentences": sentences,
    }


def _pair_key(d: Mapping) -> tuple[str, ...]:
    return tuple(sorted(str(g) for g in (d.get("worst_group"), d.get("best_group"))))


#: Why a metric can be undefined for a whole dataset, in one clause.
UNDEFINED_REASONS = {
    "volume.spread_ratio": "it compares the spread of each person's own images with the group's, so it needs "
                           "people with several images (identities)",
    "inversion.type2_distance": "it needs people with several images (identities)",
}


def _metric_blocks(probe: str, figures: list[Mapping], disparities: list[Mapping],
                   order: Mapping[str, list[str]], palette: charts.GroupPalette) -> list[dict]:
    mine = [f for f in figures if f.get("probe") == probe]
    metrics = [k.split(".", 1)[1] for k in METRICS if k.startswith(probe + ".")]
    metrics = [m for m in metrics if any(f.get("metric") == m for f in mine)]
    metrics += [m for m in dict.fromkeys(str(f.get("metric")) for f in mine) if m not in metrics]
    return [_metric_block(probe, m, _sort_rows([f for f in mine if f.get("metric") == m], order),
                          disparities, figures, palette) for m in metrics]


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return "-"
    return str(value)


def _probe_ran(results: Mapping, probe: str) -> bool:
    """A probe ran if the run kept its detail or any figure of it (settings alone do not prove it)."""
    if (results.get("probes") or {}).get(probe):
        return True
    if probe == "detection" and results.get("detection"):
        return True
    return any(f.get("probe") == probe for f in results.get("figures") or [])


def _verdict(results: Mapping) -> dict | None:
    verdict = results.get("policy_verdict")
    if not isinstance(verdict, Mapping):
        return None
    rows = []
    for check in verdict.get("checks") or []:
        unit = describe_metric(str(check.get("metric"))).unit
        kind = check.get("kind")
        ratio_like = kind in ("ratio", "max_min_ratio", "max_geomean_ratio")
        fmt = (lambda v: format_value(v)) if ratio_like else (lambda v: format_value(v, unit))
        subject = (f"{check.get('grouping')} {kind}" + (f" {check.get('group')}" if check.get("group") else "")
                   if kind else f"{check.get('grouping')} / {check.get('group')}")
        rows.append({
            "rule_id": _plain(check.get("rule_id")), "description": _plain(check.get("description")),
            "metric": describe_metric(str(check.get("metric"))).title, "subject": subject,
            "estimate": fmt(check.get("estimate")),
            "ci": format_interval(check.get("ci_low"), check.get("ci_high"), "number" if ratio_like else unit) or "-",
            "rule": f"{fmt(check.get('judged_value'))} {OPERATORS.get(check.get('operator'), _plain(check.get('operator')))} "
                    f"{fmt(check.get('bound'))}",
            "passed": bool(check.get("passed")), "reason": _plain(check.get("reason") or ""),
        })
    passed = bool(verdict.get("passed", all(r["passed"] for r in rows)))
    failed = [r for r in rows if not r["passed"]]
    return {"passed": passed, "checks": rows, "failed": failed[:FIRST_PAGE_FAILED_CHECKS],
            "n_failed": len(failed), "n_checks": len(rows), "name": _plain(verdict.get("policy"))}


def _dataset(results: Mapping, order: Mapping[str, list[str]], palette: charts.GroupPalette) -> dict:
    dataset = results.get("dataset") or {}
    describe = describe_groupings(results)
    groupings = []
    for grouping, groups in describe.items():
        groupings.append({"name": str(grouping), "single": GROUPING_JOIN not in str(grouping), "groups": [
            {"label": str(g), "colour": palette.colour(str(grouping), str(g)),
             "n_images": format_count((v or {}).get("n_images")), "n_people": format_count((v or {}).get("n_people"))}
            for g, v in groups.items()]})
    exclusions = describe_exclusions(results)
    return {
        "path": _plain(dataset.get("path")), "n_images": format_count(dataset.get("n_images")),
        "n_identities": format_count(dataset.get("n_identities")), "has_identities": dataset.get("has_identities"),
        "group_by": _plain(dataset.get("group_by") or (results.get("settings") or {}).get("group_by")),
        "groupings": groupings, "exclusions": [(str(k), format_count(v)) for k, v in exclusions.items()],
        "chart": charts.composition_chart(describe, palette) if describe else None,
        "labels_source": _plain(dataset.get("labels_source")) if dataset.get("labels_source") else None,
    }


def _inversion(results: Mapping, run_dir: Path, no_faces: bool, palette: charts.GroupPalette,
               order: Mapping[str, list[str]]) -> dict:
    detail = (results.get("probes") or {}).get("inversion") or {}
    thresholds = {k: v for k, v in (detail.get("thresholds") or {}).items() if _finite(v)}
    success = detail.get("success_rate_at") or {}
    threshold_rows = [{"name": charts.THRESHOLD_STYLES.get(k, (k,))[0], "value": format_value(v),
                       "success": format_value(success.get(k), "rate")} for k, v in thresholds.items()]
    distributions = []
    for grouping, groups in (detail.get("distributions") or {}).items():
        ordered = {g: groups[g] for g in _order_groups(grouping, groups, order)}
        distributions.append({"grouping": str(grouping),
                              "chart": charts.distribution_panels(str(grouping), ordered, thresholds, palette)})
    sweeps = []
    sweep = detail.get("sweep") or {}
    for grouping, groups in (sweep.get("by_group") or {}).items():
        ordered = {g: groups[g] for g in _order_groups(grouping, groups, order)}
        sweeps.append({"grouping": str(grouping), "chart": charts.sweep_chart(
            str(grouping), sweep.get("thresholds") or [], ordered, thresholds, palette)})
    samples: list[dict] = []
    if not no_faces:
        by_group: dict[tuple[str, str], list[dict]] = {}
        for s in detail.get("sample_images") or []:
            key = (str(s.get("grouping")), str(s.get("group")))
            by_group.setdefault(key, []).append({
                "original": embed_image(run_dir, s.get("original")),
                "reconstruction": embed_image(run_dir, s.get("reconstruction")),
                "distance": format_value(s.get("distance")), "image_id": _plain(s.get("image_id"))})
        rows = _sort_rows([{"grouping": k[0], "group": k[1], "pairs": v} for k, v in by_group.items()], order)
        for row in rows:
            samples.append({"grouping": row["grouping"], "group": row["group"],
                            "colour": palette.colour(row["grouping"], row["group"]), "pairs": row["pairs"]})
    history = detail.get("history") or []
    return {
        **_inversion_trust(detail, order),
        "thresholds": threshold_rows, "distributions": distributions, "sweeps": sweeps, "samples": samples,
        "n_sample_images": len(detail.get("sample_images") or []),
        "training_chart": charts.training_curve(history, detail.get("best_epoch")) if history else None,
        "training": [(k.replace("_", " "), _plain(detail.get(k))) for k in ("best_epoch", "device", "training_seconds",
                                                          "samples_per_second") if k in detail],
        "n_epochs": len(history),
    }


def _inversion_trust(detail: Mapping, order: Mapping[str, list[str]]) -> dict:
    """What decides whether the inversion figures mean anything: signal, training set, generators."""
    signal_rows = []
    for t in detail.get("signal") or []:
        signal_rows.append({"grouping": _plain(t.get("grouping")), "group": _plain(t.get("group")),
                            "n_people": format_count(t.get("n_people")), "gap": format_value(t.get("gap")),
                            "share_closer": format_value(t.get("share_closer"), "rate"),
                            "rank1": format_value(t.get("rank1_rate"), "rate"),
                            "p_value": format_value(t.get("p_value")), "signal": bool(t.get("signal")),
                            "reason": _plain(t.get("reason")) if t.get("reason") else ""})
    signal_rows = _sort_rows(signal_rows, order)
    summary = detail.get("signal_summary") or {}
    training_set = detail.get("training_set") or {}
    composition = []
    for grouping, counts in (training_set.get("composition") or {}).items():
        composition.append({"grouping": _plain(grouping),
                            "counts": [(_plain(g), format_count(n)) for g, n in counts.items()]})
    dropped = [(str(k).replace("_", " "), format_count(v)) for k, v in (training_set.get("dropped") or {}).items()]
    spread = []
    for key, by_grouping in (detail.get("generator_spread") or {}).items():
        if key not in ("inversion.mean_distance", "inversion.success_rate_at_default"):
            continue
        kind = "rate" if "rate" in key else None
        for grouping, groups in by_grouping.items():
            for group in _order_groups(grouping, groups, order):
                v = groups[group]
                spread.append({"metric": describe_metric(key).title, "grouping": _plain(grouping),
                               "group": _plain(group),
                               "range": f"{format_value(v.get('min'), kind)} to {format_value(v.get('max'), kind)}",
                               "sd": format_value(v.get("sd"), kind)})
    return {
        "signal_rows": signal_rows,
        "signal_tested": bool(summary.get("tested")),
        "signal_overall": summary.get("overall"),
        "groups_without_signal": [_plain(g) for g in summary.get("groups_without_signal") or []],
        "warnings": [_plain(w) for w in detail.get("warnings") or []],
        "training_source": _plain(detail.get("training_source")) if detail.get("training_source") else None,
        "training_set": {"n_images": format_count(training_set.get("n_train_images")),
                         "n_people": format_count(training_set.get("n_train_people")),
                         "n_candidates": format_count(training_set.get("n_candidates")),
                         "balanced_over": _plain(training_set.get("balanced_over") or "nothing"),
                         "datasets": [_plain(d) for d in training_set.get("datasets") or []],
                         } if training_set else None,
        "composition": composition, "dropped": dropped,
        "generators": [{"label": _plain(g.get("label")), "source": _plain(g.get("source")),
                        "best_epoch": _plain(g.get("best_epoch")),
                        "val": format_value(g.get("best_val_mean_distance"))}
                       for g in detail.get("generators") or []],
        "spread": spread,
    }


def _order_groups(grouping: str, groups: Iterable[str], order: Mapping[str, list[str]]) -> list[str]:
    known = order.get(str(grouping), [])
    groups = list(groups)
    return [g for g in known if g in groups] + [g for g in groups if g not in known]


def _findings(results: Mapping, figures: list[Mapping], disparities: list[Mapping]) -> dict:
    """The first page's findings: the comparisons that survived the correction, in sentences."""
    summary = results.get("findings") if isinstance(results.get("findings"), Mapping) else None
    pairs = findings_by_pair(disparities)
    # Breadth first: the strongest finding of each metric, then the next of each, ...
    ranked, seen = [], {}
    for p in pairs:
        key = (p[0].get("probe"), p[0].get("metric"))
        seen[key] = seen.get(key, 0) + 1
        ranked.append((seen[key], len(ranked), p))
    shown = [p for _, _, p in sorted(ranked, key=lambda t: (t[0], t[1]))[:FIRST_PAGE_FINDINGS]]
    entries = [{"where": f"{_metric_title(p[0])}, by {p[0].get('grouping')}", "sentence": finding_sentence(p, figures)}
               for p in shown]
    if summary is None:
        return {"recorded": False, "entries": entries, "more": max(0, len(pairs) - len(entries))}
    method = str(summary.get("method"))
    return {"recorded": True, "entries": entries, "more": max(0, len(pairs) - len(entries)), "n_pairs": len(pairs),
            "method": CORRECTION_TEXT.get(method, method), "alpha": format_value(summary.get("alpha"), "rate"),
            "n_comparisons": format_count(summary.get("n_comparisons")),
            "n_blocked": int(summary.get("n_blocked") or 0)}


def _metric_title(row: Mapping) -> str:
    return describe_metric(f"{row.get('probe')}.{row.get('metric')}").title


def _verification(detail: Mapping, palette: charts.GroupPalette, order: Mapping[str, list[str]]) -> dict:
    """Thresholds per group, DET curves, the cross-group FMR matrix, the FDR and the summary table."""
    if not detail or detail.get("skipped"):
        return {"skipped": _plain(detail.get("skipped")) if detail else None, "settings": [], "det": [],
                "matrices": [], "fdr": [], "summary": []}
    target = detail.get("target_fmr")
    det = detail.get("det") or {}
    # Intersections' curves are in results.json: a dozen crossing lines read as noise.
    det_charts = [{"grouping": str(g), "chart": charts.det_chart(str(g), {k: curves[k] for k in
                                                                         _order_groups(g, curves, order)},
                                                                 palette, target_fmr=target)}
                  for g, curves in (det.get("by_group") or {}).items()
                  if g != ALL and GROUPING_JOIN not in str(g) and len(curves) > 1]
    return {"skipped": None, "settings": _verification_settings(detail), "det": det_charts,
            "matrices": _fmr_matrices(detail, palette), "fdr": _fdr_rows(detail),
            "summary": _sort_rows(_summary_rows(detail, palette), order),
            "generalised": _plain(detail.get("generalised_note")) if detail.get("generalised_note") else None,
            "target_fmr": format_value(target, "rate") if _finite(target) else "-"}


def _verification_settings(detail: Mapping) -> list[tuple[str, str]]:
    """How the rates were counted: match rule, thresholds, where the pairs came from."""
    target = detail.get("target_fmr")
    settings = [("match rule", _plain(detail.get("match_rule") or "distance <= threshold")),
                ("default (operational) threshold", format_value(detail.get("default_threshold"))),
                ("target FMR", format_value(target, "rate") if _finite(target) else "-")]
    global_t = detail.get("global_threshold_at_target_fmr")
    if detail.get("global_threshold_estimable", True):
        interval = detail.get("global_threshold_interval") or [None, None]
        settings.append(("global threshold at the target FMR",
                         f"{format_value(global_t)} (95% CI {format_interval(*interval) or '-'})"))
    else:
        settings.append(("global threshold at the target FMR",
                         f"{format_value(global_t)}: not estimable, {_plain(detail.get('global_threshold_reason'))}"))
    settings += [("genuine pairs", "from the pairs file" if detail.get("pairs") == "given" else
                  "every pair of images of one person"),
                 ("impostor pairs", "the pairs file's" if detail.get("impostor_pairs") == "given" else
                  f"distinct pairs of different people, drawn without replacement (at most "
                  f"{format_count(detail.get('max_impostor_pairs'))} per group)"),
                 ("images without a face", f"{format_count(detail.get('images_without_face'))} (their pairs count "
                                            "as non-matches: generalised rates)")]
    return settings


def _fmr_matrices(detail: Mapping, palette: charts.GroupPalette) -> list[dict]:
    """One cross-group FMR matrix per grouping: at the global FMR threshold (NIST's framing) where it is
    estimable, else at the default threshold; cells shaded by their share of the largest."""
    matrices = []
    for grouping, m in (detail.get("cross_group_fmr") or {}).items():
        groups = [str(g) for g in m.get("groups") or []]
        by_threshold = m.get("fmr") or {}
        preferred = [n for n in by_threshold if n != "default"] if detail.get("global_threshold_estimable", True) \
            else ["default"]
        for name, cells in [(n, c) for n, c in by_threshold.items() if n in preferred][:1]:
            values = cells.get("value") or []
            top = max([v for row in values for v in row if _finite(v)] or [0.0])
            rows = []
            for r, group in enumerate(groups):
                row = []
                for c in range(len(groups)):
                    v = values[r][c] if r < len(values) and c < len(values[r]) else None
                    shade = 0.0 if not _finite(v) or top <= 0 else float(v) / top
                    row.append({"value": format_value(v, "rate"),
                                "ci": format_interval((cells.get("ci_low") or [[None]])[r][c],
                                                      (cells.get("ci_high") or [[None]])[r][c], "rate") or "-",
                                "pairs": format_count((m.get("pairs") or [[None]])[r][c]),
                                "style": f"background-color: rgba(204, 51, 17, {0.08 + 0.6 * shade:.2f})"})
                rows.append({"group": group, "colour": palette.colour(str(grouping), group), "cells": row})
            matrices.append({"grouping": str(grouping), "threshold_name": "default threshold" if name == "default"
                             else "global FMR threshold", "threshold": format_value(cells.get("threshold")),
                             "groups": groups, "rows": rows})
    return matrices


def _fdr_rows(detail: Mapping) -> list[dict]:
    """The fairness discrepancy rate per grouping and threshold, with its largest FMR and FNMR gaps."""
    return [{"grouping": str(grouping), "threshold": "default" if name == "default" else "global FMR",
             "value": format_value(row.get("value")),
             "ci": format_interval(row.get("ci_low"), row.get("ci_high")) or "-",
             "fmr_gap": format_value(row.get("largest_fmr_difference"), "rate"),
             "fnmr_gap": format_value(row.get("largest_fnmr_difference"), "rate")}
            for grouping, by_threshold in (detail.get("fairness_discrepancy_rate") or {}).items()
            for name, row in by_threshold.items()]


def _summary_rows(detail: Mapping, palette: charts.GroupPalette) -> list[dict]:
    """The ISO/IEC 19795-10-style table: per group, counts, failure to acquire, FNMR and FMR at the
    operational threshold, with intervals."""
    summary = []
    for row in detail.get("summary") or []:
        fta = row.get("fta_ci") or [None, None]
        fnmr = row.get("fnmr_at_default_ci") or [None, None]
        fmr = row.get("fmr_at_default_ci") or [None, None]
        summary.append({"grouping": str(row.get("grouping")), "group": str(row.get("group")),
                        "colour": palette.colour(str(row.get("grouping")), str(row.get("group"))),
                        "n_images": format_count(row.get("n_images")), "n_people": format_count(row.get("n_people")),
                        "fta": format_value(row.get("fta"), "rate"), "fta_ci": format_interval(*fta, "rate") or "-",
                        "fnmr": format_value(row.get("fnmr_at_default"), "rate"),
                        "fnmr_ci": format_interval(*fnmr, "rate") or "-",
                        "genuine_pairs": format_count(row.get("fnmr_at_default_pairs")),
                        "fmr": format_value(row.get("fmr_at_default"), "rate"),
                        "fmr_ci": format_interval(*fmr, "rate") or "-",
                        "impostor_pairs": format_count(row.get("fmr_at_default_pairs"))})
    return summary


#: A probe detail longer than this (eigenvalue spectra, pair counts) stays in results.json.
MAX_DETAIL_CHARS = 200


def _details(detail: Mapping | None, probe: str) -> list[tuple[str, str]]:
    """A probe's settings as key-value rows; bulky structures are named, not dumped."""
    rows = []
    for key, value in (detail or {}).items():
        text = _plain(value)
        if isinstance(value, (dict, list, tuple)) and len(text) > MAX_DETAIL_CHARS:
            where = "target.details" if probe == "target" else f"probes.{probe}"
            text = f"({len(value)} entries: see {where}.{key} in results.json)"
        rows.append((str(key).replace("_", " "), text))
    return rows


def _target(target: Mapping) -> dict:
    return {"name": _plain(target.get("name")), "version": _plain(target.get("version")),
            "fingerprint": _plain(target.get("fingerprint")), "dimension": _plain(target.get("dimension")),
            "metric": _plain(target.get("metric")), "default_threshold": format_value(target.get("default_threshold")),
            "details": _details(target.get("details"), "target")}


def _sections(has_verdict: bool, others: list[dict]) -> list[tuple[str, str]]:
    """The contents: anchor and title of each section, in the report's order."""
    sections = [("contents", "Contents")]
    if has_verdict:
        sections.append(("policy", "Policy verdict"))
    sections += [("dataset", "Dataset"), ("detection", PROBE_TITLES["detection"]),
                 ("inversion", PROBE_TITLES["inversion"]), ("volume", PROBE_TITLES["volume"]),
                 ("verification", PROBE_TITLES["verification"])]
    sections += [(f"probe-{o['name']}", f"Other probe: {o['name']}") for o in others]
    return sections + [("method", "Method and limits"), ("privacy", "Privacy")]


def build_context(results: Results | Mapping, *, run_dir: Path, no_faces: bool = False) -> dict:
    """Everything the templates show, formatted; the templates only lay it out.

    ``results`` comes from :func:`audit.results.load_results` (checked there);
    the templates read its JSON view, as results.json holds it.
    """
    run_dir = Path(run_dir)
    if isinstance(results, Results):
        results = results.to_dict()
    figures = [f for f in results.get("figures") or [] if isinstance(f, Mapping)]
    disparities = [d for d in results.get("disparities") or [] if isinstance(d, Mapping)]
    order = _grouping_order(results)
    palette = charts.GroupPalette(order)
    target = results.get("target") or {}
    settings = results.get("settings") or {}
    environment = results.get("environment") or {}
    ran = {p: _probe_ran(results, p) for p in PROBES}
    probes_detail = results.get("probes") or {}

    detection = {"ran": ran["detection"], "metrics": _metric_blocks("detection", figures, disparities, order, palette),
                 "by_status": [(str(k).replace("_", " "), format_count(v))
                               for k, v in ((results.get("detection") or {}).get("by_status") or {}).items()]}
    inversion = {"ran": ran["inversion"], "metrics": _metric_blocks("inversion", figures, disparities, order, palette)}
    if ran["inversion"]:
        inversion.update(_inversion(results, run_dir, no_faces, palette, order))
        unavailable = (probes_detail.get("inversion") or {}).get("unavailable")
        inversion["unavailable"] = _plain(unavailable) if unavailable else None
    volume = {"ran": ran["volume"], "metrics": _metric_blocks("volume", figures, disparities, order, palette),
              "details": _details(probes_detail.get("volume"), "volume")}
    verification = {"ran": ran["verification"],
                    "metrics": _metric_blocks("verification", figures, disparities, order, palette),
                    **_verification(probes_detail.get("verification") or {}, palette, order)}
    other_probes = [p for p in dict.fromkeys(str(f.get("probe")) for f in figures) if p not in PROBES]
    others = [{"name": p, "metrics": _metric_blocks(p, figures, disparities, order, palette)} for p in other_probes]

    findings = _findings(results, figures, disparities)
    metrics_used = list(dict.fromkeys(f"{f.get('probe')}.{f.get('metric')}" for f in figures))
    verdict = _verdict(results)
    tool = results.get("tool") or {}
    return {
        "css": Markup(_read_template_file(STYLESHEET)),
        "title": f"Bias audit of {_plain(target.get('name'))}",
        "tool": {"name": _plain(tool.get("name", "face-bias-audit")), "version": _plain(tool.get("version"))},
        "created_at": _plain(results.get("created_at")), "schema_version": _plain(results.get("schema_version")),
        "command_line": _plain(results.get("command_line")), "seed": _plain(results.get("seed")),
        "target": _target(target),
        "dataset": _dataset(results, order, palette),
        "settings": [(str(k).replace("_", " "), _plain(v)) for k, v in settings.items()],
        "environment": [(k, _plain(v)) for k, v in environment.items() if k != "libraries"],
        "libraries": [(str(k), _plain(v)) for k, v in (environment.get("libraries") or {}).items()],
        "verdict": verdict, "findings": findings, "no_faces": no_faces, "ran": ran,
        "probes_not_run": [PROBE_TITLES[p] for p in PROBES if not ran[p]],
        "detection": detection, "inversion": inversion, "volume": volume, "verification": verification,
        "others": others, "sections": _sections(verdict is not None, others),
        "metric_glossary": [{"key": k, "title": describe_metric(k).title, "meaning": describe_metric(k).meaning,
                             "better": better_text(describe_metric(k).better)} for k in metrics_used],
        "flag_text": list(FLAG_TEXT.items()),
    }


# --------------------------------------------------------------------------- output

def _read_template_file(name: str) -> str:
    path = TEMPLATES_DIR / name
    if not path.is_file():
        raise InputError(MSG_NO_TEMPLATES.format(path=path))
    return path.read_text(encoding="utf-8")


def _environment() -> Environment:
    if not (TEMPLATES_DIR / MAIN_TEMPLATE).is_file():
        raise InputError(MSG_NO_TEMPLATES.format(path=TEMPLATES_DIR / MAIN_TEMPLATE))
    return Environment(loader=FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True, undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True)


def render_html(context: Mapping) -> str:
    """The report as one self-contained HTML document."""
    return _environment().get_template(MAIN_TEMPLATE).render(**context)


def write_pdf(html: str, run_dir: Path, target: Path) -> Path:
    """Lay the HTML out on A4 pages with WeasyPrint, fetching nothing outside the run."""
    try:
        import weasyprint
    except ImportError as exc:  # pragma: no cover - weasyprint is a dependency
        raise InputError(MSG_NO_WEASYPRINT) from exc
    document = weasyprint.HTML(string=html, base_url=Path(run_dir).resolve().as_uri() + "/",
                               url_fetcher=make_url_fetcher(run_dir))
    _write_atomic(target, document.write_pdf())
    return target


def _write_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, data, what="the report", elsewhere=ELSEWHERE)


def check_formats(formats: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = (formats,)
    chosen = tuple(dict.fromkeys(formats))
    if not chosen:
        raise InputError(MSG_NO_FORMAT)
    for value in chosen:
        if value not in FORMATS:
            raise InputError(MSG_BAD_FORMAT.format(value=value, choices=", ".join(FORMATS)))
    return chosen


def render_report(run_dir: Path, *, no_faces: bool = False, formats: Iterable[str] = FORMATS) -> dict[str, Path]:
    """Write ``report.html`` and/or ``report.pdf`` into a finished run's folder; return their paths.

    ``run_dir`` is the folder ``audit run`` wrote (or its results.json).
    ``no_faces`` leaves every face image out (the report says so), for a
    report shared beyond those allowed to see the dataset.
    """
    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.name == RESULTS_FILE:
        run_dir = run_dir.parent
    chosen = check_formats(formats)
    results = load_results(run_dir)
    check_writable_folder(run_dir, what="the run folder", elsewhere=ELSEWHERE)   # before the slow part
    html = render_html(build_context(results, run_dir=run_dir, no_faces=no_faces))
    written: dict[str, Path] = {}
    if "html" in chosen:
        path = run_dir / HTML_FILE
        _write_atomic(path, html.encode("utf-8"))
        written["html"] = path
    if "pdf" in chosen:
        written["pdf"] = write_pdf(html, run_dir, run_dir / PDF_FILE)
    return written
