"""A probe is a unit: one added from outside the tool runs, lands in results.json and in the report.

The made-up probe below (the mean length of the embeddings, per group) is
added through the registry's public API and through a faked entry point;
no file of audit/, reports/ or templates/ knows of it.  Its report partial
lies in the test's own folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from audit import probe_registry
from audit.cli import cli
from audit.errors import InputError
from audit.json_model import Record
from audit.probe_registry import (BUILT_IN_NAMES, ENTRY_POINT_GROUP, Probe, ProbeInputs, ProbeOutput,
                                  check_probe_selection, get_probe, register_probe, run_order, unregister_probe)
from audit.results import ALL, Figure, Results, load_results
from tests.corpus.datasets import face_dataset
from tests.fake_targets import ProjectionTarget

PARTIAL = """{% from "partials/macros.html.j2" import metric %}
<section class="chapter" id="{{ 'probe-' ~ probe.name }}">
  <h2>{{ probe.title }}</h2>
  <p>Embedding length partial: {{ probe.section.n_images }} vectors measured, {{ probe.unit }}.</p>
  {% for m in probe.metrics %}{{ metric(m) }}{% endfor %}
</section>
"""


@dataclass(kw_only=True)
class NormSection(Record):
    """The made-up probe's details in results.json."""

    n_images: int | None = None
    largest: float | None = None


class NormProbe(Probe):
    """The mean length of the vectors, for everyone and per group."""

    name = "norm"
    title = "Embedding length"
    description = "the mean length of the target's vectors, per group"
    needs = ("embeddings", "identities")
    section = NormSection
    partial = "norm.html.j2"

    def __init__(self, templates: Path | None = None) -> None:
        self.templates = templates

    def run(self, inputs: ProbeInputs) -> ProbeOutput:
        ok = inputs.ok
        samples = inputs.samples(ok)
        samples["norm"] = np.linalg.norm(inputs.vectors[ok], axis=1)
        figures = [Figure(self.name, "mean_norm", ALL, ALL, float(samples["norm"].mean()), n_images=int(ok.sum()),
                          n_people=int(samples[inputs.person].nunique()))]
        for grouping in inputs.groupings:
            for labels, group in samples.groupby(list(grouping)):
                labels = labels if isinstance(labels, tuple) else (labels,)
                figures.append(Figure(self.name, "mean_norm", "*".join(grouping), " / ".join(map(str, labels)),
                                      float(group["norm"].mean()), n_images=len(group),
                                      n_people=int(group[inputs.person].nunique())))
        return ProbeOutput(figures=figures, section=NormSection(n_images=int(ok.sum()),
                                                                largest=float(samples["norm"].max())))

    def report_context(self, section):
        return {"unit": "in the target's units"}


class ReaderProbe(NormProbe):
    """Reads the norm probe's output: it runs after it."""

    name = "reader"
    title = "Reads the embedding length"
    uses = ("norm",)

    def run(self, inputs: ProbeInputs) -> ProbeOutput:
        earlier = inputs.outputs["norm"]
        return ProbeOutput(section=NormSection(n_images=earlier.section.n_images))


@pytest.fixture()
def partial_folder(tmp_path) -> Path:
    folder = tmp_path / "norm_templates"
    folder.mkdir()
    (folder / "norm.html.j2").write_text(PARTIAL)
    return folder


@pytest.fixture()
def registered(partial_folder):
    probe = register_probe(NormProbe(partial_folder))
    yield probe
    unregister_probe(probe.name)


@pytest.fixture()
def plugin(monkeypatch, partial_folder):
    """The norm probe as an installed package would register it: an entry point of the probes' group."""
    NormPlugin.templates = partial_folder
    eps = [EntryPoint("norm", f"{__name__}:NormPlugin", ENTRY_POINT_GROUP),
           EntryPoint("broken", "no_such_module_for_audit_tests:Probe", ENTRY_POINT_GROUP)]
    monkeypatch.setattr(probe_registry, "entry_points", lambda group: [ep for ep in eps if group == ENTRY_POINT_GROUP])


class NormPlugin(NormProbe):
    """The plugin's class: built without arguments, as the registry builds an entry point's class."""

    def __init__(self) -> None:
        pass


@pytest.fixture()
def projection(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_CACHE", str(tmp_path / "cache.sqlite"))
    monkeypatch.setenv("AUDIT_LOG_DIR", str(tmp_path / "logs"))
    target = ProjectionTarget(seed=3)
    monkeypatch.setattr("audit.runner.open_target", lambda *args, **kwargs: target)
    return face_dataset(tmp_path / "faces", people=4, per_person=2)


def audit_run(dataset: Path, out: Path, probes: str) -> Path:
    result = CliRunner().invoke(cli, ["run", "--dataset", str(dataset), "--out", str(out), "--probes", probes,
                                      "--resamples", "100", "--workers", "1", "--no-report", "-q"])
    assert result.exit_code == 0, result.output
    report = CliRunner().invoke(cli, ["report", str(out), "--format", "html"])
    assert report.exit_code == 0, report.output
    return out


def check_norm_run(out: Path) -> None:
    data = json.loads((out / "results.json").read_text())
    section = data["probes"]["norm"]
    assert section["n_images"] == 8 and section["largest"] > 0
    assert {(f["grouping"], f["group"]) for f in data["figures"] if f["probe"] == "norm"} >= {
        ("all", "all"), ("race", "A"), ("race", "B"), ("race*gender", "A / F")}
    assert data["detection"]["by_status"]           # the built-ins alongside, where they always were
    html = (out / "report.html").read_text()
    assert "Embedding length partial: 8 vectors measured, in the target&#39;s units." in html \
        or "Embedding length partial: 8 vectors measured, in the target's units." in html
    assert 'href="#probe-norm"' in html and "Other probe: norm" not in html


def test_a_registered_probe_runs_and_has_its_section_in_results_and_report(registered, projection, tmp_path):
    out = audit_run(projection, tmp_path / "run", "detection,norm")
    check_norm_run(out)


def test_a_plugin_probe_runs_and_has_its_section_in_results_and_report(plugin, projection, tmp_path):
    assert "norm" in CliRunner().invoke(cli, ["probes"]).output
    out = audit_run(projection, tmp_path / "run", "detection,norm")
    check_norm_run(out)


def test_a_probe_section_round_trips_where_the_probe_is_not_installed(registered, projection, tmp_path):
    out = audit_run(projection, tmp_path / "run", "detection,norm")
    written = json.loads((out / "results.json").read_text())
    unregister_probe("norm")
    results = load_results(out)
    assert results.probes.get("norm") == written["probes"]["norm"]
    assert Results.from_dict(results.to_dict()).to_dict()["probes"] == written["probes"]
    typed = results.probes.section("norm", NormSection)
    assert isinstance(typed, NormSection) and typed.n_images == 8
    # without the probe, its figures still show in the report, under their raw names
    report = CliRunner().invoke(cli, ["report", str(out), "--format", "html"])
    assert report.exit_code == 0, report.output
    assert "Other probe: norm" in (out / "report.html").read_text()


def test_a_probe_runs_after_the_probes_it_uses():
    register_probe(ReaderProbe)
    try:
        register_probe(NormProbe())
        assert [p.name for p in run_order(["reader", "norm", "detection"])] == ["detection", "norm", "reader"]
        assert [p.name for p in run_order(["reader"])] == ["reader"]
    finally:
        unregister_probe("reader")
        unregister_probe("norm")


def test_the_built_ins_run_in_the_order_they_always_did():
    assert [p.name for p in run_order(BUILT_IN_NAMES)] == ["detection", "volume", "verification", "inversion",
                                                           "attributes"]
    assert [p.name for p in run_order(["attributes", "volume"])] == ["volume", "attributes"]


def test_audit_probes_lists_the_built_ins_and_what_they_need():
    result = CliRunner().invoke(cli, ["probes"])
    assert result.exit_code == 0, result.output
    for name in BUILT_IN_NAMES:
        assert name in result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert "pairs" in lines["verification"] and "inversion's output" in lines["attributes"]
    listed = json.loads(CliRunner().invoke(cli, ["probes", "--json"]).output)
    assert [p["name"] for p in listed] == list(BUILT_IN_NAMES)
    assert {p["source"] for p in listed} == {"built-in"}


def test_a_broken_plugin_is_listed_as_unavailable_and_refused_by_name(plugin):
    listed = {p["name"]: p for p in json.loads(CliRunner().invoke(cli, ["probes", "--json"]).output)}
    assert listed["norm"]["available"] and not listed["broken"]["available"]
    assert "no_such_module_for_audit_tests" in listed["broken"]["reason"]
    with pytest.raises(InputError, match="failed to load"):
        check_probe_selection(["broken"])


def test_an_unknown_probe_is_an_error_naming_the_valid_ones(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--dataset", str(tmp_path), "--out", str(tmp_path / "out"),
                                      "--probes", "detection,nosuch"])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: --probes 'detection,nosuch': unknown probe(s) ['nosuch']")
    assert all(name in line for name in BUILT_IN_NAMES) and "audit probes" in line
    assert not (tmp_path / "out").exists()


def test_a_probe_with_incomplete_declarations_is_refused_when_added():
    class Nameless(NormProbe):
        name = "Not A Name"

    class Needy(NormProbe):
        name = "needy"
        needs = ("embeddings", "a crystal ball")

    class Detection(NormProbe):
        name = "detection"

    with pytest.raises(InputError, match="lower-case"):
        register_probe(Nameless())
    with pytest.raises(InputError, match="crystal ball"):
        register_probe(Needy())
    with pytest.raises(InputError, match="already registered"):
        register_probe(Detection())
    with pytest.raises(InputError, match="unknown probe 'needy'"):
        get_probe("needy")
