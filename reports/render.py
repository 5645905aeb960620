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
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from audit.errors import InputError
from audit.json_model import Record, to_json
from audit.outputs import check_writable_folder, write_atomic
from audit.probe_registry import Probe, available_probes
from audit.result_sections import (FindingsSummary, InversionSection, SignalSummary, TargetSection,
                                   VerdictSection, VerificationSection)
from audit.results import ALL, GROUPING_JOIN, RESULTS_FILE, Disparity, Figure, Results, load_results
from audit.sinks import html_text
from reports import figures as charts
from reports.attribute_section import attributes_context
from reports.text import (CORRECTION_TEXT, FLAG_SHORT, FLAG_TEXT, LEAKAGE_KEYS, METRICS, MIXES_CROWDING,
                          better_text, describe_metric, disparity_sentence, finding_sentence, findings_by_pair,
                          format_count, format_interval, format_value)

__all__ = ["render_report", "build_context", "render_html", "write_pdf", "is_allowed_url", "make_url_fetcher",
           "TEMPLATES_DIR", "FORMATS", "HTML_FILE", "PDF_FILE"]

def _templates_dir() -> Path:
    """The templates folder: the package data ``reports.templates`` (the repository's ``templates/``)."""
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


def _grouping_order(results: Results) -> dict[str, list[str]]:
    """Grouping -> groups, in the dataset's order: attributes alone, then intersections, then the rest."""
    order: dict[str, list[str]] = {ALL: [ALL]}
    for grouping, groups in results.dataset.groupings().items():
        order.setdefault(str(grouping), []).extend(str(g) for g in groups)
    for grouping, groups in charts.distinct_groups(results.figures).items():
        known = order.setdefault(grouping, [])
        known.extend(g for g in groups if g not in known)
    singles = [g for g in order if g != ALL and GROUPING_JOIN not in g]
    inters = [g for g in order if GROUPING_JOIN in g]
    return {g: order[g] for g in [ALL, *singles, *inters]}


def _sort_rows(rows: Iterable[Any], order: Mapping[str, list[str]]) -> list:
    """Rows (figures, records or dicts with ``grouping`` and ``group``) in the dataset's order."""
    groupings = list(order)

    def field(row, name: str) -> str:
        return str(row[name] if isinstance(row, Mapping) else getattr(row, name))

    def key(row):
        grouping, group = field(row, "grouping"), field(row, "group")
        gi = groupings.index(grouping) if grouping in groupings else len(groupings)
        groups = order.get(grouping, [])
        return gi, groups.index(group) if group in groups else len(groups), group

    return sorted(rows, key=key)


def _flags_text(flags: Sequence[str] | None) -> str:
    return ", ".join(FLAG_SHORT.get(f, f) for f in flags or [])


def _metric_block(probe: str, metric: str, rows: list[Figure], disparities: list[Disparity],
                  figures: list[Figure], palette: charts.GroupPalette) -> dict:
    """One metric: its words, its chart, its table (formatted) and its comparisons in sentences.

    A metric that is undefined for every group (e.g. a spread ratio on a
    dataset without identities) is one sentence, not a table of "n/a".
    """
    key = f"{probe}.{metric}"
    text = describe_metric(key)
    better = next((r.better for r in rows if r.better), text.better)
    block = {"key": key, "id": f"metric-{probe}-{metric}".replace(".", "-").replace("_", "-"),
             "title": text.title, "meaning": text.meaning, "better": better_text(better), "known": key in METRICS,
             "unit": text.unit, "n_label": "Pairs" if probe == "verification" else "Images"}
    if rows and not any(_finite(r.value) for r in rows):
        flags = sorted({FLAG_SHORT.get(f, f) for r in rows for f in r.flags if f != "undefined"})
        return {**block, "undefined": True, "rows": [], "sentences": [],
                "undefined_sentence": f"{text.title} is undefined for every group of this dataset"
                                      + (f" ({', '.join(flags)})" if flags else "")
                                      + (f": {UNDEFINED_REASONS[key]}." if key in UNDEFINED_REASONS else ".")}
    table = [{
        "grouping": r.grouping, "group": r.group, "colour": palette.colour(r.grouping, r.group),
        "value": format_value(r.value, text.unit),
        "ci": format_interval(r.ci_low, r.ci_high, text.unit) or "-",
        "n_people": format_count(r.n_people), "n_images": format_count(r.n_images),
        "count": format_count(r.count) if r.count is not None else "",
        "flags": _flags_text(r.flags), "flagged": bool(r.flags),
    } for r in rows]
    mine = [d for d in disparities if d.probe == probe and d.metric == metric and d.grouping != ALL]
    return {
        **block, "undefined": False,
        "chart": charts.interval_chart(rows, palette, unit=text.unit, xlabel=text.title),
        "rows": table, "has_counts": any(r.count is not None for r in rows),
        "sentences": _comparison_sentences(key, mine, figures),
    }


def _comparison_sentences(key: str, disparities: list[Disparity], figures: list[Figure]) -> list[str]:
    """Per grouping: how many pairs differ, the largest difference, then the other findings."""
    sentences = []
    for grouping in dict.fromkeys(d.grouping for d in disparities):
        of_grouping = [d for d in disparities if d.grouping == grouping]
        worst = (next((d for d in of_grouping if d.kind == "ratio" and d.worst_pair), None)
                 or next((d for d in of_grouping if d.worst_pair), None) or of_grouping[0])
        n_pairs = len({d.pair for d in of_grouping})
        n_found = len({d.pair for d in of_grouping if d.finding})
        lead = (f"By {grouping}, {n_found} of {n_pairs} pairs of groups differ after the correction; the largest "
                "difference: " if n_pairs > 1 else "")
        sentence = disparity_sentence(worst, figures)
        sentences.append(lead + (sentence[0].lower() + sentence[1:] if lead else sentence))
        others = findings_by_pair(d for d in of_grouping if d.pair != worst.pair)
        sentences += [finding_sentence(pair, figures) for pair in others[:SECTION_FINDINGS]]
        if len(others) > SECTION_FINDINGS:
            sentences.append(f"{len(others) - SECTION_FINDINGS} more findings by {grouping}: see "
                             f"the disparities of {key} in results.json.")
    return sentences


#: Why a metric can be undefined for a whole dataset, in one clause.
UNDEFINED_REASONS = {
    "volume.spread_ratio": "it compares the spread of each person's own images with the group's, so it needs "
                           "people with several images (identities)",
    "inversion.type2_distance": "it needs people with several images (identities)",
}


def _metric_blocks(probe: str, figures: list[Figure], disparities: list[Disparity],
                   order: Mapping[str, list[str]], palette: charts.GroupPalette) -> list[dict]:
    mine = [f for f in figures if f.probe == probe]
    metrics = [k.split(".", 1)[1] for k in METRICS if k.startswith(probe + ".")]
    metrics = [m for m in metrics if any(f.metric == m for f in mine)]
    metrics += [m for m in dict.fromkeys(f.metric for f in mine) if m not in metrics]
    return [_metric_block(probe, m, _sort_rows([f for f in mine if f.metric == m], order),
                          disparities, figures, palette) for m in metrics]


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return "-"
    return str(value)


def _probe_ran(results: Results, probe: str) -> bool:
    """A probe ran if the run kept its detail or any figure of it (settings alone do not prove it)."""
    if results.probe_section(probe) is not None:
        return True
    return any(f.probe == probe for f in results.figures)


def _verdict(verdict: VerdictSection | None) -> dict | None:
    if verdict is None:
        return None
    rows = []
    for check in verdict.checks:
        unit = describe_metric(check.metric).unit
        ratio_like = check.kind in ("ratio", "max_min_ratio", "max_geomean_ratio")
        fmt = (lambda v: format_value(v)) if ratio_like else (lambda v: format_value(v, unit))
        rows.append({
            "rule_id": check.rule_id, "description": check.description,
            "metric": describe_metric(check.metric).title, "subject": check.subject,
            "estimate": fmt(check.estimate),
            "ci": format_interval(check.ci_low, check.ci_high, "number" if ratio_like else unit) or "-",
            "rule": f"{fmt(check.judged_value)} {OPERATORS.get(check.operator, check.operator)} {fmt(check.bound)}",
            "passed": check.passed, "reason": check.reason,
        })
    failed = [r for r in rows if not r["passed"]]
    return {"passed": verdict.passed, "checks": rows, "failed": failed[:FIRST_PAGE_FAILED_CHECKS],
            "n_failed": len(failed), "n_checks": len(rows), "name": verdict.policy}


def _dataset(results: Results, palette: charts.GroupPalette) -> dict:
    dataset = results.dataset
    describe = dataset.groupings()
    groupings = []
    for grouping, groups in describe.items():
        groupings.append({"name": str(grouping), "single": GROUPING_JOIN not in str(grouping), "groups": [
            {"label": str(g), "colour": palette.colour(str(grouping), str(g)),
             "n_images": format_count((v or {}).get("n_images")), "n_people": format_count((v or {}).get("n_people"))}
            for g, v in groups.items()]})
    return {
        "path": _plain(dataset.path), "n_images": format_count(dataset.n_images),
        "n_identities": format_count(dataset.n_identities), "has_identities": dataset.has_identities,
        "group_by": _plain(dataset.group_by or results.settings.get("group_by")),
        "groupings": groupings,
        "exclusions": [(str(k), format_count(v)) for k, v in dataset.exclusions().items()],
        "chart": charts.composition_chart(describe, palette) if describe else None,
        "labels_source": dataset.labels_source,
    }


def _inversion(detail: InversionSection, run_dir: Path, no_faces: bool, palette: charts.GroupPalette,
               order: Mapping[str, list[str]], figures: Sequence[Figure] = ()) -> dict:
    thresholds = {k: v for k, v in detail.thresholds.items() if _finite(v)}
    threshold_rows = [{"name": charts.THRESHOLD_STYLES.get(k, (k,))[0], "value": format_value(v),
                       "success": format_value(detail.success_rate_at.get(k), "rate")} for k, v in thresholds.items()]
    distributions = [{"grouping": grouping, "chart": charts.distribution_panels(
                          grouping, {g: groups[g] for g in _order_groups(grouping, groups, order)}, thresholds, palette)}
                     for grouping, groups in detail.distributions.items()]
    sweeps = []
    if detail.sweep is not None:
        for grouping, groups in detail.sweep.by_group.items():
            ordered = {g: groups[g] for g in _order_groups(grouping, groups, order)}
            sweeps.append({"grouping": grouping, "chart": charts.sweep_chart(
                grouping, detail.sweep.thresholds, ordered, thresholds, palette)})
    history = detail.history
    leakage = _leakage(detail, palette, order, figures)
    training = [("best epoch", detail.best_epoch), ("device", detail.device),
                ("training seconds", detail.training_seconds), ("samples per second", detail.samples_per_second)]
    return {
        **_inversion_trust(detail, order),
        "leakage": leakage,
        "thresholds": threshold_rows, "distributions": distributions, "sweeps": sweeps,
        "samples": [] if no_faces else _sample_pairs(detail, run_dir, palette, order),
        "n_sample_images": len(detail.sample_images),
        "training_chart": charts.training_curve(history, detail.best_epoch) if history else None,
        "training": [(name, _plain(value)) for name, value in training if value is not None],
        "n_epochs": len(history),
        "unavailable": detail.unavailable,
    }


def _leakage(detail: InversionSection, palette: charts.GroupPalette, order: Mapping[str, list[str]],
             figures: Sequence[Figure]) -> dict | None:
    """The identity-leakage curves (success against the group's own FMR) and the threshold table:
    each group's success and threshold at each FMR."""
    section = detail.leakage
    if section is None or not section.groups:
        return None
    curves, thresholds = [], []
    for grouping, groups in section.groups.items():
        ordered = _order_groups(grouping, groups, order)
        if grouping != ALL and any(any(v is not None for v in groups[g].curve) for g in ordered):
            curves.append({"grouping": grouping, "chart": charts.leakage_curve(
                grouping, section.curve_fmrs, {g: groups[g].curve for g in ordered}, palette)})
        for g in ordered:
            record = groups[g]
            thresholds.append({"grouping": grouping, "group": g, "n_people": format_count(record.n_people),
                               "colour": palette.colour(grouping, g),
                               "cells": [_leakage_cell(record, figures, grouping, g, f) for f in section.fmrs]})
    return {"gallery_size": section.gallery_size, "curves": curves, "thresholds": thresholds,
            "fmrs": [format_value(f, "rate") for f in section.fmrs]}


def _leakage_cell(record, figures: Sequence[Figure], grouping: str, group: str, fmr: float) -> dict:
    metric = f"sar_at_own_fmr_{_fmr_key(fmr)}"
    if metric in record.not_estimable:
        return {"success": "not estimable", "ci": "", "threshold": "-"}
    figure = next((f for f in figures if f.probe == "inversion" and f.metric == metric and f.grouping == grouping
                   and f.group == group), None)
    return {"success": format_value(figure.value, "rate") if figure else "-",
            "ci": format_interval(figure.ci_low, figure.ci_high, "rate") if figure else "",
            "threshold": format_value(record.thresholds.get(_fmr_key(fmr)))}


def _fmr_key(fmr: float) -> str:
    exponent = round(math.log10(fmr))
    return f"1e{exponent}"


def _sample_pairs(detail: InversionSection, run_dir: Path, palette: charts.GroupPalette,
                  order: Mapping[str, list[str]]) -> list[dict]:
    """Originals beside their reconstructions, per group, as data URIs."""
    by_group: dict[tuple[str, str], list[dict]] = {}
    for s in detail.sample_images:
        by_group.setdefault((s.grouping, s.group), []).append({
            "original": embed_image(run_dir, s.original), "reconstruction": embed_image(run_dir, s.reconstruction),
            "distance": format_value(s.distance), "image_id": _plain(s.image_id)})
    rows = _sort_rows([{"grouping": k[0], "group": k[1], "pairs": v} for k, v in by_group.items()], order)
    return [{"grouping": row["grouping"], "group": row["group"],
             "colour": palette.colour(row["grouping"], row["group"]), "pairs": row["pairs"]} for row in rows]


def _inversion_trust(detail: InversionSection, order: Mapping[str, list[str]]) -> dict:
    """What decides whether the inversion figures mean anything: signal, training set, generators."""
    signal_rows = _sort_rows([{
        "grouping": t.grouping, "group": t.group, "n_people": format_count(t.n_people),
        "gap": format_value(t.gap), "share_closer": format_value(t.share_closer, "rate"),
        "rank1": format_value(t.rank1_rate, "rate"), "p_value": format_value(t.p_value), "signal": t.signal,
        "reason": t.reason or ""} for t in detail.signal], order)
    summary = detail.signal_summary or SignalSummary()
    training_set = detail.training_set
    return {
        "signal_rows": signal_rows,
        "stratified_on": ", ".join(next((t.stratified_on for t in detail.signal if t.stratified_on), [])),
        "signal_tested": summary.tested,
        "signal_overall": summary.overall,
        "groups_without_signal": list(summary.groups_without_signal),
        "warnings": list(detail.warnings),
        "training_source": detail.training_source,
        "training_set": {"n_images": format_count(training_set.n_train_images),
                         "n_people": format_count(training_set.n_train_people),
                         "n_candidates": format_count(training_set.n_candidates),
                         "balanced_over": _plain(training_set.balanced_over or "nothing"),
                         "datasets": list(training_set.datasets),
                         } if training_set is not None else None,
        "composition": [{"grouping": grouping, "counts": [(g, format_count(n)) for g, n in counts.items()]}
                        for grouping, counts in (training_set.composition if training_set else {}).items()],
        "dropped": [(k.replace("_", " "), format_count(v))
                    for k, v in (training_set.dropped if training_set else {}).items()],
        "generators": [{"label": g.label, "source": _plain(g.source), "best_epoch": _plain(g.best_epoch),
                        "val": format_value(g.best_val_mean_distance)} for g in detail.generators],
        "spread": _generator_spread(detail, order),
    }


#: The inversion figures whose spread over generators the report shows (the rest are in results.json).
SPREAD_SHOWN = ("inversion.sar_at_own_fmr_1e-2", "inversion.leakage_auc", "inversion.mean_distance",
                "inversion.success_rate_at_default")


def _generator_spread(detail: InversionSection, order: Mapping[str, list[str]]) -> list[dict]:
    spread = []
    for key in SPREAD_SHOWN:
        kind = "rate" if describe_metric(key).unit == "rate" else None
        for grouping, groups in detail.generator_spread.get(key, {}).items():
            for group in _order_groups(grouping, groups, order):
                v = groups[group]
                spread.append({"metric": describe_metric(key).title, "grouping": grouping, "group": group,
                               "range": f"{format_value(v.min, kind)} to {format_value(v.max, kind)}",
                               "sd": format_value(v.sd, kind)})
    return spread


def _order_groups(grouping: str, groups: Iterable[str], order: Mapping[str, list[str]]) -> list[str]:
    known = order.get(str(grouping), [])
    groups = list(groups)
    return [g for g in known if g in groups] + [g for g in groups if g not in known]


def _findings(summary: FindingsSummary | None, figures: list[Figure], disparities: list[Disparity]) -> dict:
    """The first page's findings: the comparisons that survived the correction, in sentences.

    Inversion figures that mix leakage with crowding (:data:`MIXES_CROWDING`)
    are counted, never listed: a group's crowding would read as leakage.
    Identity leakage is the inversion probe's headline, so its findings lead
    each round; otherwise a run with many figures (volume, attributes) would
    push them below the page's few entries.
    """
    every_pair = findings_by_pair(disparities)
    pairs = [p for p in every_pair if p[0].key not in MIXES_CROWDING]
    n_mixed = len(every_pair) - len(pairs)
    # Breadth first: the strongest finding of each metric, then the next of each, ...
    ranked, seen = [], {}
    for p in pairs:
        seen[p[0].key] = seen.get(p[0].key, 0) + 1
        ranked.append((seen[p[0].key], p[0].key not in LEAKAGE_KEYS, len(ranked), p))
    shown = [t[-1] for t in sorted(ranked, key=lambda t: t[:3])[:FIRST_PAGE_FINDINGS]]
    entries = [{"where": f"{describe_metric(p[0].key).title}, by {p[0].grouping}",
                "sentence": finding_sentence(p, figures)} for p in shown]
    leakage_found = any(p[0].probe == "inversion" and p[0].key not in MIXES_CROWDING for p in pairs)
    common = {"entries": entries, "more": max(0, len(pairs) - len(entries)), "n_mixed": n_mixed,
              "leakage_found": leakage_found,
              "leakage_compared": any(d.probe == "inversion" and d.key in LEAKAGE_KEYS for d in disparities)}
    if summary is None:
        return {"recorded": False, **common}
    method = str(summary.method)
    return {"recorded": True, **common, "n_pairs": len(pairs),
            "method": CORRECTION_TEXT.get(method, method), "alpha": format_value(summary.alpha, "rate"),
            "n_comparisons": format_count(summary.n_comparisons), "n_blocked": summary.n_blocked}


def _verification(detail: VerificationSection | None, palette: charts.GroupPalette,
                  order: Mapping[str, list[str]]) -> dict:
    """Thresholds per group, DET curves, the cross-group FMR matrix, the FDR and the summary table."""
    if detail is None or detail.skipped:
        return {"skipped": detail.skipped if detail else None, "settings": [], "det": [],
                "matrices": [], "fdr": [], "summary": []}
    target = detail.target_fmr
    by_group = detail.det.by_group if detail.det is not None else {}
    # Intersections' curves are in results.json: a dozen crossing lines read as noise.
    det_charts = [{"grouping": g, "chart": charts.det_chart(g, {k: curves[k] for k in _order_groups(g, curves, order)},
                                                            palette, target_fmr=target)}
                  for g, curves in by_group.items() if g != ALL and GROUPING_JOIN not in g and len(curves) > 1]
    return {"skipped": None, "settings": _verification_settings(detail), "det": det_charts,
            "matrices": _fmr_matrices(detail, palette), "fdr": _fdr_rows(detail),
            "summary": _sort_rows(_summary_rows(detail, palette), order),
            "generalised": detail.generalised_note,
            "target_fmr": format_value(target, "rate") if _finite(target) else "-"}


def _verification_settings(detail: VerificationSection) -> list[tuple[str, str]]:
    """How the rates were counted: match rule, thresholds, where the pairs came from."""
    target = detail.target_fmr
    settings = [("match rule", detail.match_rule or "distance <= threshold"),
                ("default (operational) threshold", format_value(detail.default_threshold)),
                ("target FMR", format_value(target, "rate") if _finite(target) else "-")]
    global_t = detail.global_threshold_at_target_fmr
    if detail.global_threshold_estimable:
        interval = detail.global_threshold_interval or [None, None]
        settings.append(("global threshold at the target FMR",
                         f"{format_value(global_t)} (95% CI {format_interval(*interval[:2]) or '-'})"))
    else:
        settings.append(("global threshold at the target FMR",
                         f"{format_value(global_t)}: not estimable, {_plain(detail.global_threshold_reason)}"))
    settings += [("genuine pairs", "from the pairs file" if detail.pairs == "given" else
                  "every pair of images of one person"),
                 ("impostor pairs", "the pairs file's" if detail.impostor_pairs == "given" else
                  f"distinct pairs of different people, drawn without replacement (at most "
                  f"{format_count(detail.max_impostor_pairs)} per group)"),
                 ("images without a face", f"{format_count(detail.images_without_face)} (their pairs count "
                                            "as non-matches: generalised rates)")]
    return settings


def _cell(rows: list[list], r: int, c: int) -> Any:
    return rows[r][c] if r < len(rows) and c < len(rows[r]) else None


def _fmr_matrices(detail: VerificationSection, palette: charts.GroupPalette) -> list[dict]:
    """One cross-group FMR matrix per grouping: at the global FMR threshold (NIST's framing) where it is
    estimable, else at the default threshold; cells shaded by their share of the largest."""
    matrices = []
    for grouping, m in detail.cross_group_fmr.items():
        preferred = [n for n in m.fmr if n != "default"] if detail.global_threshold_estimable else ["default"]
        for name, cells in [(n, c) for n, c in m.fmr.items() if n in preferred][:1]:
            top = max([v for row in cells.value for v in row if _finite(v)] or [0.0])
            rows = []
            for r, group in enumerate(m.groups):
                row = []
                for c in range(len(m.groups)):
                    v = _cell(cells.value, r, c)
                    shade = 0.0 if not _finite(v) or top <= 0 else float(v) / top
                    row.append({"value": format_value(v, "rate"),
                                "ci": format_interval(_cell(cells.ci_low, r, c), _cell(cells.ci_high, r, c),
                                                      "rate") or "-",
                                "pairs": format_count(_cell(m.pairs, r, c)),
                                "style": f"background-color: rgba(204, 51, 17, {0.08 + 0.6 * shade:.2f})"})
                rows.append({"group": group, "colour": palette.colour(grouping, group), "cells": row})
            matrices.append({"grouping": grouping, "threshold_name": "default threshold" if name == "default"
                             else "global FMR threshold", "threshold": format_value(cells.threshold),
                             "groups": list(m.groups), "rows": rows})
    return matrices


def _fdr_rows(detail: VerificationSection) -> list[dict]:
    """The fairness discrepancy rate per grouping and threshold, with its largest FMR and FNMR gaps."""
    return [{"grouping": grouping, "threshold": "default" if name == "default" else "global FMR",
             "value": format_value(row.value), "ci": format_interval(row.ci_low, row.ci_high) or "-",
             "fmr_gap": format_value(row.largest_fmr_difference, "rate"),
             "fnmr_gap": format_value(row.largest_fnmr_difference, "rate")}
            for grouping, by_threshold in detail.fairness_discrepancy_rate.items()
            for name, row in by_threshold.items()]


def _interval_of(values: list[float] | None, unit: str) -> str:
    return format_interval(*(list(values or []) + [None, None])[:2], unit) or "-"


def _summary_rows(detail: VerificationSection, palette: charts.GroupPalette) -> list[dict]:
    """The ISO/IEC 19795-10-style table: per group, counts, failure to acquire, FNMR and FMR at the
    operational threshold, with intervals."""
    return [{"grouping": row.grouping, "group": row.group, "colour": palette.colour(row.grouping, row.group),
             "n_images": format_count(row.n_images), "n_people": format_count(row.n_people),
             "fta": format_value(row.fta, "rate"), "fta_ci": _interval_of(row.fta_ci, "rate"),
             "fnmr": format_value(row.fnmr_at_default, "rate"),
             "fnmr_ci": _interval_of(row.fnmr_at_default_ci, "rate"),
             "genuine_pairs": format_count(row.fnmr_at_default_pairs),
             "fmr": format_value(row.fmr_at_default, "rate"), "fmr_ci": _interval_of(row.fmr_at_default_ci, "rate"),
             "impostor_pairs": format_count(row.fmr_at_default_pairs)}
            for row in detail.summary]


#: A probe detail longer than this (eigenvalue spectra, pair counts) stays in results.json.
MAX_DETAIL_CHARS = 200


def _details(detail: Mapping | Record | None, where: str) -> list[tuple[str, str]]:
    """A section's settings as key-value rows; bulky structures are named, not dumped."""
    rows = []
    data = to_json(detail) if isinstance(detail, Record) else (detail or {})
    for key, value in data.items():
        text = _plain(value)
        if isinstance(value, (dict, list, tuple)) and len(text) > MAX_DETAIL_CHARS:
            text = f"({len(value)} entries: see {where}.{key} in results.json)"
        rows.append((str(key).replace("_", " "), text))
    return rows


def _target(target: TargetSection) -> dict:
    return {"name": target.name, "version": _plain(target.version), "fingerprint": _plain(target.fingerprint),
            "dimension": _plain(target.dimension), "metric": _plain(target.metric),
            "default_threshold": format_value(target.default_threshold),
            "details": _details(target.details, "target.details")}


def _sections(has_verdict: bool, probe_sections: list[dict], others: list[dict]) -> list[tuple[str, str]]:
    """The contents: anchor and title of each section, in the report's order."""
    sections = [("contents", "Contents")]
    if has_verdict:
        sections.append(("policy", "Policy verdict"))
    sections.append(("dataset", "Dataset"))
    sections += [(s["anchor"], s["title"]) for s in probe_sections]
    sections += [(f"probe-{o['name']}", f"Other probe: {o['name']}") for o in others]
    return sections + [("method", "Method and limits"), ("privacy", "Privacy")]


@dataclass(frozen=True)
class _Page:
    """What every probe's block is drawn with: the run, where its files are, the groups' order and colours."""

    results: Results
    run_dir: Path
    no_faces: bool
    order: Mapping[str, list[str]]
    palette: charts.GroupPalette

    def metrics(self, probe: str) -> list[dict]:
        return _metric_blocks(probe, self.results.figures, self.results.disparities, self.order, self.palette)


def _detection_block(page: _Page, section: Any, ran: bool) -> dict:
    by_status = section.by_status if section else {}
    return {"by_status": [(k.replace("_", " "), format_count(v)) for k, v in by_status.items()]}


def _inversion_block(page: _Page, section: Any, ran: bool) -> dict:
    if not ran:
        return {}
    return _inversion(section or InversionSection(), page.run_dir, page.no_faces, page.palette, page.order,
                      page.results.figures)


def _volume_block(page: _Page, section: Any, ran: bool) -> dict:
    return {"details": _details(section, "probes.volume")}


def _verification_block(page: _Page, section: Any, ran: bool) -> dict:
    return _verification(section, page.palette, page.order)


def _attributes_block(page: _Page, section: Any, ran: bool) -> dict:
    return attributes_context(section, page.results.figures, page.order, page.palette, sort_rows=_sort_rows)


#: How the report lays out a built-in probe's details for its partial; any other probe's partial gets the
#: generic block (:func:`_generic_block`).
_BUILT_IN_BLOCKS = {"detection": _detection_block, "inversion": _inversion_block, "volume": _volume_block,
                    "verification": _verification_block, "attributes": _attributes_block}


def _generic_block(probe: Probe, page: _Page, section: Any, ran: bool) -> dict:
    """A probe's section checked against its declared class, its details as key-value rows, and the
    probe's own extra values (:meth:`Probe.report_context`)."""
    typed = page.results.probes.section(probe.name, probe.section) if section is not None else None
    return {"name": probe.name, "title": probe.title, "section": typed,
            "details": _details(typed, f"probes.{probe.name}"), **probe.report_context(typed)}


def _probe_blocks(results: Results, run_dir: Path, no_faces: bool, order: Mapping[str, list[str]],
                  palette: charts.GroupPalette) -> dict[str, Any]:
    """Each probe's part of the report, for every probe the registry knows: its metrics and what its section
    draws from its details; figures of probes it does not know go to "others", under their raw names."""
    page = _Page(results, run_dir, no_faces, order, palette)
    probes = available_probes()
    ran = {p.name: _probe_ran(results, p.name) for p in probes}
    blocks: dict[str, dict] = {}
    sections: list[dict] = []
    for probe in probes:
        section = results.probe_section(probe.name)
        block = {"ran": ran[probe.name], "metrics": page.metrics(probe.name)}
        builder = _BUILT_IN_BLOCKS.get(probe.name)
        block.update(builder(page, section, ran[probe.name]) if builder
                     else _generic_block(probe, page, section, ran[probe.name]))
        blocks[probe.name] = block
        if ran[probe.name] or probe.always_in_report:
            sections.append({"name": probe.name, "title": probe.title, "anchor": probe.section_id(),
                             "partial": probe.partial, "block": block})
    known = set(ran)
    other_probes = [p for p in dict.fromkeys(f.probe for f in results.figures) if p not in known]
    return {"ran": ran, "blocks": blocks, "sections": sections,
            "not_run": [p.title for p in probes if p.always_in_report and not ran[p.name]],
            "others": [{"name": p, "metrics": page.metrics(p)} for p in other_probes]}


def build_context(results: Results | Mapping, *, run_dir: Path, no_faces: bool = False) -> dict:
    """Everything the templates show, formatted; the templates only lay it out.

    ``results`` comes from :func:`audit.results.load_results`, which checked
    every section's type; a plain dict is checked the same way here.
    """
    run_dir = Path(run_dir)
    if not isinstance(results, Results):
        results = Results.from_dict(results)
    order = _grouping_order(results)
    palette = charts.GroupPalette(order)
    blocks = _probe_blocks(results, run_dir, no_faces, order, palette)
    ran = blocks["ran"]
    built_in = {name: block for name, block in blocks["blocks"].items() if name in _BUILT_IN_BLOCKS}
    verdict = _verdict(results.policy_verdict)
    environment = results.environment
    return {
        "css": Markup(_read_template_file(STYLESHEET)),
        "title": f"Bias audit of {results.target.name or '-'}",
        "tool": {"name": results.tool.name, "version": _plain(results.tool.version)},
        "created_at": _plain(results.created_at), "schema_version": results.schema_version,
        "command_line": _plain(results.command_line), "seed": _plain(results.seed),
        "target": _target(results.target),
        "dataset": _dataset(results, palette),
        "settings": [(str(k).replace("_", " "), _plain(v)) for k, v in results.settings.items()],
        "environment": [(k, _plain(v)) for k, v in to_json(environment).items() if k != "libraries"],
        "libraries": [(k, _plain(v)) for k, v in environment.libraries.items()],
        "verdict": verdict, "findings": _findings(results.findings, results.figures, results.disparities),
        "no_faces": no_faces, "ran": ran,
        "probes_not_run": blocks["not_run"],
        # The built-in partials read their block by the probe's name; every partial reads it as ``probe``.
        **built_in, "probes": blocks["blocks"], "probe_sections": blocks["sections"], "others": blocks["others"],
        "sections": _sections(verdict is not None, blocks["sections"], blocks["others"]),
        "metric_glossary": [{"key": k, "title": describe_metric(k).title, "meaning": describe_metric(k).meaning,
                             "better": better_text(describe_metric(k).better)}
                            for k in dict.fromkeys(f.key for f in results.figures)],
        "flag_text": list(FLAG_TEXT.items()),
    }


# --------------------------------------------------------------------------- output

def _read_template_file(name: str) -> str:
    path = TEMPLATES_DIR / name
    if not path.is_file():
        raise InputError(MSG_NO_TEMPLATES.format(path=path))
    return path.read_text(encoding="utf-8")


def _environment() -> Environment:
    """The report's templates first (a probe's folder cannot replace them), then each probe's own folder."""
    if not (TEMPLATES_DIR / MAIN_TEMPLATE).is_file():
        raise InputError(MSG_NO_TEMPLATES.format(path=TEMPLATES_DIR / MAIN_TEMPLATE))
    folders = dict.fromkeys(str(p.templates) for p in available_probes() if p.templates is not None)
    loader = ChoiceLoader([FileSystemLoader(str(TEMPLATES_DIR)), *(FileSystemLoader(f) for f in folders)])
    return Environment(loader=loader, autoescape=True, undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True, finalize=_report_text)


def _report_text(value):
    """Every ``{{ ... }}`` of the templates: text through :func:`audit.sinks.html_text` (markup is
    escaped after this, by autoescape); an already escaped value (a join of labels) stays escaped."""
    if isinstance(value, Markup):
        return Markup(html_text(value))
    return html_text(value) if isinstance(value, str) else value


def render_html(context: Mapping) -> str:
    """The report as one self-contained HTML document."""
    return _environment().get_template(MAIN_TEMPLATE).render(**context)


def write_pdf(html: str, run_dir: Path, target: Path, *, private: bool = False) -> Path:
    """Lay the HTML out on A4 pages with WeasyPrint, fetching nothing outside the run."""
    try:
        import weasyprint
    except ImportError as exc:  # pragma: no cover - weasyprint is a dependency
        raise InputError(MSG_NO_WEASYPRINT) from exc
    document = weasyprint.HTML(string=html, base_url=Path(run_dir).resolve().as_uri() + "/",
                               url_fetcher=make_url_fetcher(run_dir))
    _write_atomic(target, document.write_pdf(), private=private)
    return target


def _write_atomic(path: Path, data: bytes, *, private: bool) -> None:
    """``private``: the report shows faces, so it is the owner's alone, as the run's images are."""
    write_atomic(path, data, what="the report", elsewhere=ELSEWHERE, private=private)


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
        _write_atomic(path, html.encode("utf-8"), private=not no_faces)
        written["html"] = path
    if "pdf" in chosen:
        written["pdf"] = write_pdf(html, run_dir, run_dir / PDF_FILE, private=not no_faces)
    return written
