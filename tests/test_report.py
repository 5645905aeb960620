"""The audit report: content, escaping, privacy, self-containment, CLI.

Renders the realistic fixture run of ``report_fixtures`` (no probe is run)
and checks what an auditor would read: every figure's number as
results.json holds it, sentences in plain words, the policy verdict, probes
that did not run, and that hostile labels stay text.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from html import unescape
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from audit.cli import cli
from audit.errors import InputError
from audit.results import Disparity, Figure, Results
from report_fixtures import HOSTILE_RACES, build_run, rendered_run
from reports import render
from reports.figures import GroupPalette
from reports.text import (MIXES_CROWDING, describe_metric, disparity_sentence, finding_sentence, findings_by_pair, format_interval,
                          format_p, format_value)


# --------------------------------------------------------------------------- helpers

class _Tables(HTMLParser):
    """Rows of cell texts per enclosing section id; image sources; attributes holding URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[str] = []
        self.rows: dict[str, list[list[str]]] = {}
        self.images: list[dict] = []
        self.links: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag in ("section", "nav"):
            self.sections.append(attrs.get("id") or (self.sections[-1] if self.sections else ""))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs)
        if tag in ("a", "link"):
            self.links.append(attrs.get("href") or "")

    def handle_endtag(self, tag):
        if tag in ("section", "nav") and self.sections:
            self.sections.pop()
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.setdefault(self.sections[-1] if self.sections else "", []).append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> _Tables:
    parser = _Tables()
    parser.feed(html)
    return parser


def metric_section_id(probe: str, metric: str) -> str:
    return f"metric-{probe}-{metric}".replace(".", "-").replace("_", "-")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    run_dir, paths = rendered_run(tmp_path_factory, "full")
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    return run_dir, paths, paths["html"].read_text(encoding="utf-8"), results


@pytest.fixture(scope="module")
def no_faces(tmp_path_factory):
    run_dir, paths = rendered_run(tmp_path_factory, "no-faces", no_faces=True, formats=("html",),
                                  probes=("detection", "inversion"))
    return run_dir, paths["html"].read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    run_dir, paths = rendered_run(tmp_path_factory, "hostile", formats=("html",), races=HOSTILE_RACES,
                                  probes=("detection", "inversion"))
    return run_dir, paths["html"].read_text(encoding="utf-8")


# --------------------------------------------------------------------------- plain words

def test_numbers_are_formatted_as_the_report_writes_them():
    assert format_value(0.0378, "rate") == "3.78%"
    assert format_value(0.5, "rate") == "50%"
    assert format_value(0.000012, "rate") == "0.0012%"
    assert format_value(0.61234) == "0.612"
    assert format_value(12345.6) == "12,346"
    assert format_value(None) == "n/a"
    assert format_value(float("nan"), "rate") == "n/a"
    assert format_interval(0.0191, 0.0565, "rate") == "1.91%\u20135.65%"
    assert format_interval(None, 0.5) == ""
    assert format_interval(-2.55, -2.18) == "-2.55 to -2.18"


def test_disparity_sentence_reads_as_plain_words_with_its_interval():
    figures = [Figure("inversion", "success_rate_at_default", "race", g, v, better="lower")
               for g, v in (("Black", 0.52), ("Asian", 0.4))]
    disparity = Disparity("inversion", "success_rate_at_default", "race", "ratio", 1.3, ci_low=1.1, ci_high=1.5,
                          worst_group="Black", best_group="Asian")
    assert disparity_sentence(disparity, figures) == (
        "Reconstructions of Black faces are matched to their originals 1.3x as often as those of Asian faces "
        "at the default threshold (95% CI 1.1\u20131.5).")
    unsure = replace(disparity, ci_low=0.9, flags=["small_group"], p_value=0.09, p_adjusted=0.6, finding=False)
    assert disparity_sentence(unsure, figures).endswith(
        "(95% CI 0.9\u20131.5). The interval includes no difference: this may be chance. Not a finding (adjusted "
        "p = 0.6). Caution: small group.")


def test_higher_is_better_metric_puts_the_higher_group_first():
    figures = [Figure("volume", "spread_ratio", "race", g, v, better="higher")
               for g, v in (("White", 1.1), ("Black", 0.9))]
    disparity = Disparity("volume", "spread_ratio", "race", "ratio", 1.1 / 0.9, ci_low=1.05, ci_high=1.3,
                          worst_group="Black", best_group="White")
    assert disparity_sentence(disparity, figures).startswith(
        "Spread ratio is 1.22x as high for White faces as for Black faces")


def test_gap_of_a_rate_is_written_in_percentage_points():
    disparity = Disparity("verification", "fnmr_at_default", "gender", "gap", 0.023, ci_low=0.01, ci_high=0.04,
                          worst_group="Female", best_group="Male")
    assert disparity_sentence(disparity) == (
        "False non-match rate (default threshold) is 2.3 percentage points higher for Female faces than for "
        "Male faces (95% CI 1\u20134 points).")


def test_unknown_metric_keeps_its_raw_name():
    text = describe_metric("newprobe.odd_metric")
    assert text.title == "newprobe.odd_metric"
    assert "No description" in text.meaning
    assert describe_metric("verification.fmr_at_default").unit == "rate"


def test_a_finding_reads_as_ratio_values_and_difference_with_intervals():
    figures = [Figure("detection", "failure_rate", "race", g, v, better="lower")
               for g, v in (("Black", 0.041), ("White", 0.019))]
    common = {"worst_group": "Black", "best_group": "White", "finding": True}
    pair = [Disparity("detection", "failure_rate", "race", "ratio", 2.16, ci_low=1.4, ci_high=3.2, p_adjusted=0.003,
                      **common),
            Disparity("detection", "failure_rate", "race", "gap", 0.022, ci_low=0.01, ci_high=0.034,
                      p_adjusted=0.002, **common)]
    assert finding_sentence(pair, figures) == (
        "The detector fails on Black images 2.16x as often as on White images (95% CI 1.4\u20133.2): 4.1% against "
        "1.9%, a difference of 2.2 percentage points (95% CI 1\u20133.4 points). Adjusted p = 0.002.")
    assert format_p(0.00002) == "< 0.0001" and format_p(0.0231) == "0.023"


def test_findings_are_grouped_by_pair_strongest_first_and_only_findings():
    def d(metric, pair, kind, p, finding=True, grouping="race"):
        return Disparity("p", metric, grouping, kind, 1.0, worst_group=pair[0], best_group=pair[1], p_adjusted=p,
                         finding=finding)
    ds = [d("a", ("X", "Y"), "gap", 0.01), d("a", ("Y", "X"), "ratio", 0.02), d("b", ("X", "Z"), "gap", 0.001),
          d("b", ("X", "Y"), "gap", 0.3, finding=False), d("c", ("all", "all"), "gap", 0.0, grouping="all")]
    groups = findings_by_pair(ds)
    assert [[x.metric for x in g] for g in groups] == [["b"], ["a", "a"]]


def test_palette_gives_each_group_one_colour_and_intersections_their_first_values_colour():
    palette = GroupPalette({"all": ["all"], "race": ["White", "Black", "Asian"], "gender": ["Male", "Female"],
                            "race*gender": ["White / Male", "Black / Female"]})
    singles = [palette.style("race", g) for g in ("White", "Black", "Asian")] + \
              [palette.style("gender", g) for g in ("Male", "Female")]
    assert len({s.colour for s in singles}) == 5
    assert len({s.marker for s in singles[:3]}) == 3 and len({str(s.linestyle) for s in singles[:3]}) == 3
    assert palette.style("race*gender", "Black / Female").colour == palette.colour("race", "Black")
    assert palette.style("race*gender", "Black / Female").linestyle == palette.style("gender", "Female").linestyle
    assert palette.style("race", "Black") == palette.style("race", "Black")


def test_formats_are_checked_with_a_message_naming_the_fix():
    with pytest.raises(InputError, match=re.escape("unknown report format 'docx': choose from html, pdf")):
        render.check_formats(("docx",))
    with pytest.raises(InputError, match="no report format given"):
        render.check_formats(())


# --------------------------------------------------------------------------- safety (no rendering)

def test_url_fetcher_allows_only_data_uris_and_the_runs_own_files(tmp_path):
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    (run / "samples" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "secret.txt").write_text("secret")
    assert render.is_allowed_url("data:image/png;base64,AAAA", run)
    assert render.is_allowed_url((run / "samples" / "a.png").as_uri(), run)
    assert not render.is_allowed_url("http://example.com/x.png", run)
    assert not render.is_allowed_url("https://example.com/font.woff2", run)
    assert not render.is_allowed_url("file:///etc/passwd", run)
    assert not render.is_allowed_url((tmp_path / "secret.txt").as_uri(), run)
    assert not render.is_allowed_url((run / "samples" / ".." / ".." / "secret.txt").as_uri(), run)
    fetcher = render.make_url_fetcher(run)
    fetch = getattr(fetcher, "fetch", fetcher)
    with pytest.raises(render.RefusedURL, match="refused to fetch 'http://example.com/x.png'"):
        fetch("http://example.com/x.png")
    with pytest.raises(render.RefusedURL):
        fetch("file:///etc/passwd")


def test_sample_images_outside_the_run_or_not_images_are_not_embedded(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "ok.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 8)
    (run / "notes.txt").write_text("not an image")
    (tmp_path / "outside.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert render.embed_image(run, "ok.png").startswith("data:image/png;base64,")
    assert render.embed_image(run, "notes.txt") is None
    assert render.embed_image(run, "../outside.png") is None
    assert render.embed_image(run, "/etc/passwd") is None
    assert render.embed_image(run, "missing.png") is None


def test_a_minimal_results_file_with_unknown_metrics_still_renders(tmp_path):
    results = {"schema_version": "1.0", "figures": [
        {"probe": "volume", "metric": "mystery_metric", "grouping": "race", "group": g, "value": v,
         "ci_low": None, "ci_high": None, "flags": ["undefined"] if v is None else []}
        for g, v in (("A", 0.5), ("B", None))] + [
        {"probe": "newprobe", "metric": "score", "grouping": "all", "group": "all", "value": 1.0}],
        "disparities": []}
    html = render.render_html(render.build_context(results, run_dir=tmp_path))
    assert "volume.mystery_metric" in html and "newprobe" in html
    assert "The inversion probe was not run" in html
    assert "No policy was given" in html or "No policy verdict" in html
    rows = parse(html).rows[metric_section_id("volume", "mystery_metric")]
    assert ["race", "B", "n/a", "-", "n/a", "n/a", "undefined"] in rows
    assert "This run recorded no correction for multiple comparisons" in html


def test_a_metric_undefined_for_every_group_is_one_sentence_not_a_table(tmp_path):
    results = {"schema_version": "1.1", "figures": [
        {"probe": "volume", "metric": "spread_ratio", "grouping": grouping, "group": g, "value": None,
         "ci_low": None, "ci_high": None, "n_people": 40, "n_images": 40, "flags": ["undefined"]}
        for grouping, g in (("all", "all"), ("race", "A"), ("race", "B"))],
        "disparities": [], "findings": {"method": "holm", "alpha": 0.05, "n_comparisons": 0, "n_blocked": 0,
                                        "n_findings": 0}}
    html = render.render_html(render.build_context(results, run_dir=tmp_path))
    assert ("Spread ratio is undefined for every group of this dataset: it compares the spread of each person's "
            "own images with the group's, so it needs people with several images (identities).") in unescape(html)
    assert metric_section_id("volume", "spread_ratio") not in parse(html).rows
    assert "<strong>None survived</strong>" in html


def test_skipped_verification_is_one_sentence(tmp_path):
    results = {"schema_version": "1.1", "figures": [], "disparities": [],
               "probes": {"verification": {"skipped": "the dataset has no identity with two or more images."}}}
    html = render.render_html(render.build_context(results, run_dir=tmp_path))
    assert "Verification is undefined for this dataset: the dataset has no identity with two or more images." in html


def _inversion_results(signal_overall: bool, groups_without: list[str]) -> dict:
    tests = [{"grouping": "all", "group": "all", "n_people": 40, "gap": -0.1 if signal_overall else 0.01,
              "share_closer": 0.8, "rank1_rate": 0.3, "p_value": 0.0001 if signal_overall else 0.4, "alpha": 0.01,
              "signal": signal_overall, "reason": ""}]
    return {"schema_version": "1.1", "figures": [], "disparities": [],
            "probes": {"inversion": {"signal": tests, "signal_summary": {
                "tested": True, "overall": signal_overall, "p_value": tests[0]["p_value"], "alpha": 0.01,
                "groups_without_signal": groups_without},
                "training_set": {"n_train_images": 7000, "n_train_people": 7000, "n_candidates": 23312,
                                 "balanced_over": ["race", "gender"], "dropped": {"same_image": 500},
                                 "composition": {"race": {"A": 3500, "B": 3500}}}}}}


def test_first_page_says_plainly_when_the_inversion_probe_found_no_signal(tmp_path):
    html = render.render_html(render.build_context(_inversion_results(False, []), run_dir=tmp_path))
    cover = html.split('id="summary"')[1].split("</section>")[0]
    assert "The inversion probe found no signal:" in cover
    assert "The inversion probe found no signal.</strong>" in html        # and in its own section
    html = render.render_html(render.build_context(_inversion_results(True, ["race: B"]), run_dir=tmp_path))
    cover = html.split('id="summary"')[1].split("</section>")[0]
    assert "no signal in 1 group</strong> (race: B)" in cover
    html = render.render_html(render.build_context(_inversion_results(True, []), run_dir=tmp_path))
    cover = html.split('id="summary"')[1].split("</section>")[0]
    assert "carry identity in every group" in cover and "7,000 images balanced over race, gender" in cover
    assert "Left out of training: same image 500" in html


# --------------------------------------------------------------------------- the full report

@pytest.mark.slow
def test_report_files_are_written_into_the_run_folder(full):
    run_dir, paths, html, _ = full
    assert paths == {"html": run_dir / "report.html", "pdf": run_dir / "report.pdf"}
    assert html.startswith("<!DOCTYPE html>")
    assert paths["pdf"].read_bytes()[:5] == b"%PDF-"


@pytest.mark.slow
def test_html_is_self_contained(full):
    _, _, html, _ = full
    page = parse(html)
    assert len(page.images) >= 30
    assert all(img["src"].startswith("data:image/") for img in page.images)
    assert all(link.startswith("#") for link in page.links)
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I), "external URL in the report"
    assert "@import" not in html and "@font-face" not in html and "url(" not in html
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert "default-src 'none'" in html  # Content-Security-Policy: a browser requests nothing


@pytest.mark.slow
def test_every_figure_appears_in_its_metric_table_as_results_json_holds_it(full):
    _, _, html, results = full
    page = parse(html)
    checked = 0
    for f in results["figures"]:
        unit = describe_metric(f"{f['probe']}.{f['metric']}").unit
        rows = page.rows[metric_section_id(f["probe"], f["metric"])]
        row = next(r for r in rows if r[:2] == [f["grouping"], f["group"]])
        assert row[2] == format_value(f["value"], unit)
        assert row[3] == format_interval(f["ci_low"], f["ci_high"], unit)
        assert row[4] == f"{f['n_people']:,}" and row[5] == f"{f['n_images']:,}"
        if f["count"] is not None:
            assert row[6] == f"{f['count']:,}"
        assert ("small group" in row[-1]) == ("small_group" in f["flags"])
        checked += 1
    assert checked == len(results["figures"]) > 300
    # One literal, so that a formatter that changed in both places still fails here.
    black = next(f for f in results["figures"] if (f["metric"], f["grouping"], f["group"])
                 == ("fnmr_at_default", "race", "Black"))
    assert f"{100 * black['value']:.3g}%" in html


@pytest.mark.slow
def test_first_page_has_target_dataset_verdict_and_only_corrected_findings(full):
    _, _, html, results = full
    cover = html[html.index('id="summary"'):html.index('id="contents"')]
    assert results["target"]["fingerprint"] in cover and "version 20.0.1" in cover
    assert "Policy verdict: FAILED" in cover and "3 of 5 checks failed" in cover
    assert "White <span class=\"n\">420</span>" in cover
    summary = results["findings"]
    assert f"{summary['n_comparisons']:,} comparisons" in cover and "Holm's correction" in unescape(cover)
    sentences = re.findall(r"<li><span class=\"where\">.*?</li>", cover, re.S)
    every = findings_by_pair(Results.from_dict(results).disparities)
    found = [p for p in every if p[0].key not in MIXES_CROWDING]
    assert 0 < len(sentences) == min(len(found), render.FIRST_PAGE_FINDINGS)
    # figures that mix leakage with crowding are counted on the first page, never listed
    n_mixed = len(every) - len(found)
    assert n_mixed > 0 and f"{n_mixed} further difference" in cover
    assert not any(describe_metric(k).title in s for s in sentences for k in MIXES_CROWDING)
    assert all("95% CI" in s and "Adjusted p " in s for s in sentences)
    # only findings: a pair whose comparisons all failed the correction is never on the first page
    not_found = [d for d in results["disparities"] if not d["finding"] and d["grouping"] == "race"
                 and d["kind"] == "ratio" and not any(x["finding"] for x in results["disparities"]
                                                       if x["metric"] == d["metric"] and x["grouping"] == "race"
                                                       and {x["worst_group"], x["best_group"]}
                                                       == {d["worst_group"], d["best_group"]})]
    assert not_found
    for d in not_found:
        title = describe_metric(f"{d['probe']}.{d['metric']}").title
        assert not any(title in s and d["worst_group"] in s and d["best_group"] in s and "by race" in s
                       for s in sentences)


@pytest.mark.slow
def test_sections_method_and_reproducibility(full):
    _, _, html, results = full
    for section in ("policy", "dataset", "detection", "inversion", "volume", "verification", "method",
                    "privacy"):
        assert f'id="{section}"' in html and f'href="#{section}"' in html
    for heading in ("Summary per group (ISO/IEC 19795-10 style)", "Threshold for FMR = 0.1% within the group",
                    "Cross-group false match rates by race", "Fairness Discrepancy Rate"):
        assert heading in html
    assert "Detection error trade-off by race" in html
    assert "was not run" not in html
    assert results["command_line"] in html
    assert "torch</th><td>2.13.0" in html and "dlib</th><td>20.0.1" in html
    assert "seed</th><td>0" in html
    assert "Sample reconstructions" in html and html.count('class="face"') == 2 * 2 * 5
    assert "contains photographs of real people" in html


@pytest.mark.slow
def test_group_colours_are_the_same_in_every_table(full):
    _, _, html, _ = full
    colours = re.findall(r'background-color: (#[0-9a-f]{6})"></span>Black<', html)
    assert len(colours) > 10 and len(set(colours)) == 1


# --------------------------------------------------------------------------- privacy, escaping, absence

def test_no_faces_leaves_every_face_image_out_and_says_so(no_faces, tmp_path_factory):
    run_dir, html = no_faces
    samples = sorted((run_dir / "samples").glob("*.png"))
    assert len(samples) == 20
    for sample in samples:
        assert base64.b64encode(sample.read_bytes()).decode("ascii")[:200] not in html
    assert 'class="face"' not in html
    assert html.count("Face images were left out of this report") >= 3  # cover, samples, privacy
    assert "not shown" in html


def test_faces_are_embedded_when_allowed(tmp_path):
    """The counterpart of the no-faces test: the same check finds the faces when they are in."""
    run_dir = build_run(tmp_path / "run", probes=("inversion",))
    context = render.build_context(json.loads((run_dir / "results.json").read_text()), run_dir=run_dir)
    html = render.render_html(context)
    sample = sorted((run_dir / "samples").glob("*_orig.png"))[0]
    assert base64.b64encode(sample.read_bytes()).decode("ascii")[:200] in html
    assert "Face images were left out" not in html


def test_hostile_labels_are_escaped_text_never_markup(hostile):
    _, html = hostile
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<img src="http://example.com' not in html
    assert "&lt;img src=&#34;http://example.com/x.png&#34;&gt;" in html
    page = parse(html)
    assert "script" not in page.tags
    assert all(img["src"].startswith("data:image/") for img in page.images)
    assert all(link.startswith("#") for link in page.links)
    assert "file:///etc/passwd" in html  # shown as a label...
    assert "root:x:0:0" not in html       # ...never read


def test_absent_probes_say_they_were_not_run(tmp_path_factory):
    _, paths = rendered_run(tmp_path_factory, "volume-only", formats=("html",), probes=("volume",),
                            policy=False)
    html = paths["html"].read_text(encoding="utf-8")
    assert "The inversion probe was not run" in html
    assert "The verification probe was not run" in html
    assert "The detection probe was not run" in html
    assert "The volume probe was not run" not in html
    assert "Not run in this audit: Face detection, Inversion" in html
    assert "No policy verdict" in html and 'id="policy"' not in html


# --------------------------------------------------------------------------- CLI

def test_cli_renders_html_only_and_reports_the_path(tmp_path):
    run_dir = build_run(tmp_path / "run", probes=("detection",), policy=False)
    result = CliRunner().invoke(cli, ["report", str(run_dir), "--format", "html", "--no-faces"])
    assert result.exit_code == 0, result.output
    assert result.output == f"Wrote {run_dir / 'report.html'}\n"
    assert (run_dir / "report.html").is_file() and not (run_dir / "report.pdf").exists()


def test_cli_reports_a_folder_without_results_as_one_error_line(tmp_path):
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith("Error: No results file at")
    assert "Traceback" not in result.output


def test_cli_help_has_an_example():
    result = CliRunner().invoke(cli, ["report", "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "audit report runs/dlib --no-faces" in result.output
    assert "--format [html|pdf|both]" in result.output



def test_no_unavailable_note_when_every_figure_is_there(full):
    """The 'Figures unavailable' note appears only when the run says figures are missing."""
    _, _, html, results = full
    assert "unavailable" not in results["probes"]["inversion"]
    assert "Figures unavailable" not in html


@pytest.mark.parametrize("n_generators, words", [(1, "One generator was trained"),
                                                 (3, "carry the spread between generators")])
def test_the_report_says_what_the_number_of_generators_controls(tmp_path, n_generators, words):
    """One generator cannot show its own artefacts: the report says so and names the measured cost."""
    from reports.render import render_report

    run_dir = build_run(tmp_path / "run", probes=("inversion",))
    path = run_dir / "results.json"
    data = json.loads(path.read_text())
    data["probes"]["inversion"]["generators"] = [{"label": f"seed {i}", "best_epoch": 3} for i in range(n_generators)]
    path.write_text(json.dumps(data))
    html = render_report(run_dir, formats=("html",))["html"].read_text()
    assert words in html


def test_identity_leakage_findings_lead_the_first_page_over_stronger_findings_of_other_probes():
    """Leakage is the inversion probe's headline: many stronger volume or attribute findings cannot hide it."""
    def finding(probe: str, metric: str, p: float) -> Disparity:
        return Disparity(probe, metric, "race", "gap", 0.3, 0.1, 0.5, "Asian", "White", p_value=p,
                         p_adjusted=p, finding=True)
    others = [finding("volume", m, 1e-9) for m in ("impostor_match_rate", "nn_distance_impostor",
                                                   "effective_dimensionality", "log_volume_per_dim")]
    others += [finding("attributes", m, 1e-9) for m in ("accuracy_race", "balanced_accuracy_race")]
    leakage = finding("inversion", "sar_at_own_fmr_1e-1", 1e-3)
    assert leakage.key in render.LEAKAGE_KEYS
    entries = render._findings(None, [], [*others, leakage])["entries"]
    assert len(entries) == render.FIRST_PAGE_FINDINGS < len(others) + 1
    assert entries[0]["where"].startswith(describe_metric(leakage.key).title)
    # without it, the page shows the other probes' findings breadth first, as before
    assert [e["where"] for e in render._findings(None, [], others)["entries"]] == [
        f"{describe_metric(d.key).title}, by race" for d in others[:render.FIRST_PAGE_FINDINGS]]
