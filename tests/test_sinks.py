"""Hostile labels, identities and file names reaching the tool's outputs: each sink escapes them.

A dataset's labels and file names are the user's data, and may be written
to attack whoever reads the tool's outputs: a spreadsheet that runs a
formula, a terminal that obeys control sequences, a CI system that rejects
malformed XML, matplotlib parsing mathtext, a browser reading markup.  The
unit tests pin each function of :mod:`audit.sinks`; the command tests
drive the real commands over a dataset whose every label is hostile.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from audit.cli import cli
from audit.crash import write_crash_log
from audit.progress import Progress
from audit.sinks import (chart_label, csv_cell, csv_frame, csv_value, html_text, terminal_text, xml_text)
from tests.corpus.datasets import HOSTILE_LABELS, hostile_dataset
from tests.corpus.harness import RAW_CONTROL, formula_cells, junit_problem, report_problem
from tests.corpus.images import one_pixel

H = HOSTILE_LABELS
TARGET = ["--target-option", "engine=dlib", "--workers", "1"]
RACES = (H["formula"], H["title"])
GENDERS = (H["mathtext"], H["markup"])
FACE_NAME = "=HYPERLINK(1) \x1b[2J.png"
NO_FACE_NAME = "@SUM(1) \x1b]0;t\x07.png"


# --------------------------------------------------------------------------- the functions

@pytest.mark.parametrize("text", [H["formula"], H["dde"], H["at"], H["minus"], "\tx", "\rx", "'quoted"])
def test_csv_cell_quotes_what_a_spreadsheet_would_run_and_round_trips(text):
    cell = csv_cell(text)
    assert cell == "'" + text
    assert csv_value(cell) == text


@pytest.mark.parametrize("value", [-0.5, 0.0, 3, None, float("nan"), "Black", "a=b", ""])
def test_csv_cell_leaves_numbers_and_plain_text_alone(value):
    assert csv_cell(value) is value


def test_csv_frame_escapes_text_cells_and_names_and_keeps_numbers_numeric():
    frame = pd.DataFrame({"group": [H["formula"], "White"], "=x": [-0.5, 1.5], "n": [-1, 2],
                          "mixed": ["-3", None]})
    out = csv_frame(frame)
    assert list(out.columns) == ["group", "'=x", "n", "mixed"]
    assert out["group"].tolist() == ["'" + H["formula"], "White"]
    assert out["mixed"].tolist()[0] == "'-3"
    rows = list(csv.reader(io.StringIO(out.to_csv(index=False))))
    assert rows[1][1:3] == ["-0.5", "-1"]      # numbers stay numbers
    assert frame["group"].tolist()[0] == H["formula"]   # the caller's frame is left as it was


@pytest.mark.parametrize("key", ["title", "clipboard", "carriage-return", "bidi", "xml-forbidden"])
def test_terminal_text_shows_control_characters_instead_of_sending_them(key):
    shown = terminal_text(H[key])
    assert not RAW_CONTROL.search(shown)
    assert "\\" in shown


def test_terminal_text_keeps_line_feeds_only_when_asked_and_cannot_fail_to_encode():
    assert terminal_text("a\nb") == "a\\nb"
    assert terminal_text("a\nb\tc", multiline=True) == "a\nb\\tc"
    assert terminal_text("caf\udce9").encode("utf-8") == b"caf\\udce9"      # a file name that is not UTF-8
    assert terminal_text(terminal_text(H["title"])) == terminal_text(H["title"])
    assert terminal_text("é ü 名前 <b>") == "é ü 名前 <b>"


def test_xml_text_makes_every_label_well_formed_xml():
    for text in [*H.values(), "caf\udce9", "\ufffe"]:
        element = ET.Element("case", {"name": xml_text(text)})
        element.text = xml_text(text)
        ET.fromstring(ET.tostring(element, encoding="unicode"))


def test_chart_label_is_drawn_as_written():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for text in H.values():
        figure = Figure()
        FigureCanvasAgg(figure)
        ax = figure.subplots()
        ax.plot([0, 1], [0, 1], label=chart_label(text))
        ax.set_title(chart_label(text))
        legend = ax.legend()
        figure.canvas.draw()    # mathtext is parsed here
        assert len(legend.get_texts()) == 1, text
    assert chart_label("$x$") == "\\$x\\$"


def test_html_text_keeps_white_space_and_leaves_markup_to_autoescape():
    assert html_text("a\tb\r\nc") == "a\tb\r\nc"
    assert html_text(H["title"]) == "B\\x1b]0;owned\\x07"
    assert html_text(H["markup"]) == H["markup"]


# --------------------------------------------------------------------------- the terminal's other writers

def test_progress_lines_show_a_description_escaped():
    stream = io.StringIO()
    with Progress(f"Reading {H['title']}", 1, stream=stream) as bar:
        bar.advance()
    assert "Reading B\\x1b]0;owned\\x07: 1/1" in stream.getvalue()
    assert not RAW_CONTROL.search(stream.getvalue())


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_on_a_terminal_reads_no_markup_from_a_description():
    stream = _Terminal()
    with Progress(f"Embedding ([bold red]x[/] {H['title']})", 1, stream=stream) as bar:
        bar.advance()
    assert "[bold red]x[/]" in stream.getvalue()
    assert "B\\x1b]0;owned\\x07" in stream.getvalue()


def test_log_records_reach_the_terminal_escaped(capsys):
    from audit.cli import TerminalLogHandler

    logger = logging.getLogger("tests.sinks")
    handler = TerminalLogHandler(logging.WARNING)
    logger.addHandler(handler)
    try:
        logger.warning("group %s has few people", H["clipboard"])
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "group \\x1b]52;c;ZWNobyBvd25lZA==\\x07C has few people" in err
    assert not RAW_CONTROL.search(err)


def test_warnings_shown_by_the_cli_are_escaped():
    import warnings

    CliRunner().invoke(cli, ["targets", "--json"])        # the CLI sets its warning format up
    text = warnings.formatwarning(f"Glyph missing in {H['title']}", UserWarning, "x.py", 1, "")
    assert "B\\x1b]0;owned\\x07" in text and not RAW_CONTROL.search(text)


def test_a_crash_log_quoting_a_label_is_escaped_and_written(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_LOG_DIR", str(tmp_path))
    try:
        raise ValueError(f"bad group {H['title']} in caf\udce9")
    except ValueError as exc:
        log = write_crash_log(exc, command=["audit", "run"])
    assert log is not None
    text = log.read_text(encoding="utf-8")
    assert "bad group B\\x1b]0;owned\\x07 in caf\\udce9" in text
    assert not RAW_CONTROL.search(text)


# --------------------------------------------------------------------------- the commands

def invoke(*args) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    """A dataset whose every label is hostile, with one run of it (detection probe, report) and a failed image."""
    root = tmp_path_factory.mktemp("hostile")
    patch = pytest.MonkeyPatch()
    patch.setenv("AUDIT_CACHE", str(root / "cache.sqlite"))
    patch.setenv("AUDIT_LOG_DIR", str(root / "logs"))
    dataset = hostile_dataset(root / "ds", race=RACES, gender=GENDERS, identity=H["dde"], file_name=FACE_NAME)
    (dataset / "img" / NO_FACE_NAME).write_bytes(one_pixel())
    with open(dataset / "manifest.csv", "a", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerow([f"img/{NO_FACE_NAME}", H["at"], RACES[0], GENDERS[1]])
    run = root / "run"
    ran = CliRunner().invoke(cli, ["run", "--dataset", str(dataset), "--out", str(run), "--probes", "detection",
                                   "--resamples", "100", "-q", *TARGET])
    yield {"root": root, "dataset": dataset, "run": run, "run_output": ran.output, "run_exit": ran.exit_code}
    patch.undo()


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_a_run_over_hostile_labels_draws_its_report(hostile):
    assert hostile["run_exit"] == 0, hostile["run_output"]       # mathtext made it exit 4
    assert (hostile["run"] / "report.html").is_file() and (hostile["run"] / "report.pdf").is_file()
    assert not RAW_CONTROL.search(hostile["run_output"])


@pytest.mark.parametrize("name", ["groups.csv", "detections.csv"])
def test_the_run_tables_hold_no_formula(hostile, name):
    assert formula_cells(hostile["run"] / name) == []
    rows = read_rows(hostile["run"] / name)
    cells = {c for row in rows for c in row}
    assert "'" + H["formula"] in cells
    assert {csv_value(c) for c in cells} >= ({H["formula"], H["dde"], f"img/{FACE_NAME}"} if name == "detections.csv"
                                             else {H["formula"], f"{H['formula']} / {H['markup']}"})


def test_numbers_in_groups_csv_stay_numbers(hostile):
    frame = pd.read_csv(hostile["run"] / "groups.csv")
    assert pd.api.types.is_float_dtype(frame["detection.failure_rate.ci_high"])
    assert pd.api.types.is_integer_dtype(frame["detection.failure_rate.n_images"])


def test_embed_failures_are_escaped_and_the_export_stays_readable_as_input(hostile):
    root = hostile["root"]
    failures, export = root / "failures.csv", root / "vectors.csv"
    done = invoke("embed", "--dataset", hostile["dataset"], "--failures", failures, "--export", export, "-q", *TARGET)
    assert done.exit_code == 0, done.output
    assert not RAW_CONTROL.search(done.output)
    assert terminal_text(f"img/{NO_FACE_NAME}") in done.output
    assert formula_cells(failures) == []
    rows = read_rows(failures)
    assert [csv_value(c) for c in rows[1]][0] == f"img/{NO_FACE_NAME}"
    # the export is the precomputed target's input: its ids stay exactly the manifest's, and it reads back
    ids = [row[0] for row in read_rows(export)[1:]]
    assert f"img/{FACE_NAME}" in ids
    again = invoke("embed", "--target", f"precomputed:{export}", "--dataset", hostile["dataset"], "-q",
                   "--failures", root / "again.csv")
    assert again.exit_code == 0, again.output
    assert [csv_value(row[0]) for row in read_rows(root / "again.csv")[1:]] == [f"img/{NO_FACE_NAME}"]


def test_describe_and_balance_show_labels_escaped(hostile):
    for args in (["dataset", "describe", hostile["dataset"]],
                 ["dataset", "balance", hostile["dataset"], hostile["root"] / "balanced", "--by", "race",
                  "--per-group", "1", "--overwrite"]):
        done = invoke(*args)
        assert done.exit_code == 0, done.output
        assert not RAW_CONTROL.search(done.output), done.output
        assert "B\\x1b]0;owned\\x07" in done.output
    lines = invoke("dataset", "describe", hostile["dataset"]).output.splitlines()
    race = lines.index(next(line for line in lines if line.startswith("race ")))
    assert len({len(line) for line in lines[race:race + 3]}) == 1, lines     # laid out on the text shown
    as_json = invoke("dataset", "describe", hostile["dataset"], "--json")
    assert not RAW_CONTROL.search(as_json.output)
    described = json.loads(as_json.output[as_json.output.index("{"):])
    assert H["title"] in [g["group"] for g in described["groupings"][0]["groups"]]     # JSON keeps the value


POLICY = '[[rule]]\nid = "detection"\nmetric = "detection.failure_rate"\ngrouping = "race"\nmax = -1.0\n'


@pytest.fixture
def policy(tmp_path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    return path


def test_gate_table_over_hostile_labels(hostile, policy):
    done = invoke("gate", hostile["run"], "--policy", policy)
    assert done.exit_code == 1, done.output
    assert not RAW_CONTROL.search(done.output)
    assert "race / B\\x1b]0;owned\\x07" in done.output
    widths = {len(line) for line in done.output.splitlines()[2:4]}
    assert len(widths) == 1, done.output                 # the rows stay aligned
    as_json = invoke("gate", hostile["run"], "--policy", policy, "--json")
    assert not RAW_CONTROL.search(as_json.output)
    verdict = json.loads(as_json.output[as_json.output.index("{"):as_json.output.rindex("}") + 1])
    assert H["title"] in {check["group"] for check in verdict["checks"]}      # JSON keeps the value


def test_gate_junit_over_hostile_labels_is_well_formed(hostile, policy, tmp_path):
    junit = tmp_path / "gate.xml"
    invoke("gate", hostile["run"], "--policy", policy, "--junit", junit)
    assert junit_problem(junit) is None
    tree = ET.parse(junit)
    names = [case.get("name") for case in tree.iter("testcase")]
    assert any("race / B\\x1b]0;owned\\x07" in name for name in names), names


def test_an_error_line_quoting_the_results_labels_is_escaped(hostile, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.replace("max = -1.0", 'group = "Martian"\nmax = 1.0'))
    done = invoke("gate", hostile["run"], "--policy", policy)
    assert done.exit_code == 2
    assert "Martian" in done.output and "B\\x1b]0;owned\\x07" in done.output
    assert not RAW_CONTROL.search(done.output)


def test_the_report_escapes_markup_and_shows_control_characters(hostile):
    html = (hostile["run"] / "report.html").read_text(encoding="utf-8")
    assert H["markup"] not in html and "onerror" not in html.replace("onerror=&#34;", "")
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert "B\\x1b]0;owned\\x07" in html
    assert report_problem(html, H.values()) is None


def test_chart_functions_draw_hostile_groups_in_their_legends(monkeypatch):
    """Every chart that names groups: no mathtext error, and no group left out of a legend."""
    from reports import figures as charts
    from audit.result_sections import DetCurve, DistanceSamples
    from audit.results import Figure as ResultFigure

    drawn = []
    monkeypatch.setattr(charts, "to_data_uri", lambda figure: drawn.append(figure) or figure.canvas.draw() or "")
    groups = [H["mathtext"], H["legend-hidden"], H["title"], H["markup"]]
    palette = charts.GroupPalette({"race": groups})
    rates = {g: [0.1, 0.5, 0.9] for g in groups}
    charts.sweep_chart("race", [0.1, 0.5, 0.9], rates, {"default": 0.5}, palette)
    charts.leakage_curve("race", [1e-3, 1e-2, 1e-1], rates, palette)
    charts.det_chart("race", {g: DetCurve(fmr=[0.1, 0.5], fnmr=[0.5, 0.1]) for g in groups},
                     palette)
    for figure in drawn:
        legend = figure.axes[0].get_legend()
        shown = [t.get_text() for t in legend.get_texts()]
        assert sum(1 for t in shown if any(word in t for word in ("frac", "hidden", "owned", "img"))) == len(groups)
    figures = [ResultFigure(probe="detection", metric="failure_rate", grouping="race", group=g, value=0.1,
                            ci_low=0.0, ci_high=0.2, n_images=2, n_people=2, count=0, better="lower", flags=[])
               for g in groups]
    charts.interval_chart(figures, palette, unit="rate", xlabel="failure rate")
    charts.composition_chart({H["mathtext"]: {g: {"n_images": 2, "n_people": 1} for g in groups}}, palette)
    charts.distribution_panels("race", {g: DistanceSamples(genuine=[0.2, 0.3], random_pair=[0.6, 0.7])
                                        for g in groups}, {"default": 0.5}, palette)


@pytest.mark.skipif(shutil.which("pdfinfo") is None, reason="poppler's pdfinfo is not installed (apt install "
                                                             "poppler-utils)")
def test_the_pdf_title_shows_a_hostile_target_name_escaped(hostile, tmp_path):
    """The report's title (and so the PDF's metadata) names the target, which a results file or plugin names."""
    run = tmp_path / "run"
    shutil.copytree(hostile["run"], run)
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    results["target"]["name"] = f"dlib {H['title']} {H['markup']} {H['bidi']}"
    (run / "results.json").write_text(json.dumps(results), encoding="utf-8")
    done = invoke("report", run, "--format", "both")
    assert done.exit_code == 0, done.output
    info = subprocess.run(["pdfinfo", str(run / "report.pdf")], capture_output=True, text=True, check=True).stdout
    title = next(line for line in info.splitlines() if line.startswith("Title:"))
    assert "dlib B\\x1b]0;owned\\x07" in title and "\\u202eetihW" in title
    assert not RAW_CONTROL.search(title)
    assert report_problem((run / "report.html").read_text(encoding="utf-8"), H.values()) is None
