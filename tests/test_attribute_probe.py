"""The attributes probe: demographic leakage of the embeddings, and whether the generator redraws groups.

Made-up embeddings: each race x gender cell has its own mean in 16
dimensions; a fake generator that maps group B's embeddings toward group
A's mean must be found to drift for B and not for A, an identity-preserving
one for nobody; the reader never sees an audit-set embedding; and the probe
runs in ``audit run`` with precomputed vectors.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from audit.cli import cli
from audit.results import FLAG_GENERATOR_DRIFT, Disparity, Figure
from probes import attribute_reader
from probes.attribute_estimates import balanced_accuracy_estimate, fidelity_estimate
from probes.attribute_reader import train_reader, with_age_band
from probes.attributes import (Reconstructions, TrainingFaces, attributes_probe, mark_generator_drift,
                               metric_name)

DIM = 16
GROUPINGS = [["race"], ["gender"], ["race", "gender"]]
_RNG = np.random.default_rng(7)
MEANS = {(r, g): 1.5 * _RNG.normal(size=DIM) for r in ("A", "B") for g in ("F", "M")}


def people(n: int, prefix: str, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """``n`` people, one image each, in turn A/F, B/F, A/M, B/M; vectors around their cell's mean."""
    rows, vectors = [], []
    for i in range(n):
        race, gender = ("A", "B")[i % 2], ("F", "M")[(i // 2) % 2]
        rows.append({"image_id": f"{prefix}{i}", "identity": f"{prefix}p{i}", "race": race, "gender": gender,
                     "age": str(20 + i % 50)})
        vectors.append(MEANS[race, gender] + rng.normal(size=DIM))
    return pd.DataFrame(rows), np.array(vectors)


def drifting_generator(table: pd.DataFrame, vectors: np.ndarray, rng) -> np.ndarray:
    """Group B's reconstructions land on group A's mean (same gender); A's stay where they were."""
    out = vectors + 0.3 * rng.normal(size=vectors.shape)
    for gender in ("F", "M"):
        rows = ((table["race"] == "B") & (table["gender"] == gender)).to_numpy()
        out[rows] = vectors[rows] - MEANS["B", gender] + MEANS["A", gender]
    return out


def run_probe(generator=None, n_audit: int = 240, seed: int = 0):
    rng = np.random.default_rng(seed)
    train_table, train_vectors = people(1200, "t", rng)
    audit_table, audit_vectors = people(n_audit, "a", rng)
    reconstructions = None
    if generator is not None:
        reconstructions = Reconstructions(audit_table.assign(generator=0), generator(audit_table, audit_vectors, rng))
    return attributes_probe(training=TrainingFaces(train_vectors, train_table, train_table["identity"].to_numpy(),
                                                   "made-up corpus"),
                            audit_vectors=audit_vectors, audit_samples=audit_table, groupings=GROUPINGS,
                            attributes=["race", "gender"], reconstructions=reconstructions, n_resamples=200)


def figure(result, metric: str, grouping: str, group: str) -> Figure:
    return next(f for f in result.figures if f.metric == metric and f.grouping == grouping and f.group == group)


def test_a_generator_that_redraws_group_b_as_group_a_drifts_for_b_and_not_for_a():
    result = run_probe(drifting_generator)
    drifting = {(d.attribute, d.grouping, d.group) for d in result.details.drift}
    assert ("race", "race", "B") in drifting and ("race", "race*gender", "B / F") in drifting
    assert not any(g in ("A", "A / F", "A / M") for _, _, g in drifting)
    assert not any(a == "gender" for a, _, _ in drifting)          # gender is kept
    b = next(d for d in result.details.drift if d.grouping == "race" and d.group == "B")
    assert b.drifts_to == "A" and b.drift > 0.8 and b.ci_high < 0.9
    a = figure(result, "fidelity_race", "race", "A")
    assert a.ci_low <= 1.0 <= a.ci_high
    confusion = next(c for c in result.details.confusion if c.grouping == "race")
    b_row = confusion.reconstructed[confusion.sources.index("B")]
    assert b_row[confusion.predicted.index("A")] > 0.8 * sum(b_row)
    joint = next(c for c in result.details.confusion if c.grouping == "race*gender")
    assert "B / F" in joint.sources and "A / F" in joint.predicted


def test_an_identity_preserving_generator_drifts_nowhere():
    result = run_probe(lambda table, vectors, rng: vectors + 0.3 * rng.normal(size=vectors.shape))
    assert result.details.drift == []
    for f in result.figures:
        if f.metric.startswith("fidelity_"):
            assert f.ci_high >= 0.9, (f.metric, f.grouping, f.group, f.value)


def test_leakage_figures_have_intervals_chance_levels_and_pairwise_gaps():
    result = run_probe()
    overall = figure(result, "accuracy_race", "all", "all")
    assert overall.value > 0.9 and overall.ci_low < overall.value <= overall.ci_high
    balanced = figure(result, "balanced_accuracy_gender", "race", "A")
    assert 0 <= balanced.ci_low < balanced.ci_high <= 1
    reader = result.details.readers["race"]
    assert reader.readable and reader.chance_balanced_accuracy == 0.5 and reader.cv_balanced_accuracy > 0.9
    assert result.details.chance["race"]["race"]["A"].accuracy == 1.0
    kinds = {(d.metric, d.kind) for d in result.disparities}
    assert ("accuracy_race", "gap") in kinds and ("balanced_accuracy_race", "gap") in kinds
    assert all(d.kind == "gap" for d in result.disparities)
    assert not any(f.metric.startswith("fidelity_") for f in result.figures)
    assert "did not run" in result.details.fidelity_unavailable


def test_the_reader_never_sees_an_audit_set_embedding(monkeypatch):
    seen: list[np.ndarray] = []
    fit = attribute_reader.GridSearchCV.fit

    def spy(self, x, y=None, **kwargs):
        seen.append(np.asarray(x))
        return fit(self, x, y, **kwargs)

    monkeypatch.setattr(attribute_reader.GridSearchCV, "fit", spy)
    rng = np.random.default_rng(3)
    train_table, train_vectors = people(400, "t", rng)
    audit_table, audit_vectors = people(80, "a", rng)
    audit_vectors = audit_vectors + 1000.0          # unmistakable
    attributes_probe(training=TrainingFaces(train_vectors, train_table, train_table["identity"].to_numpy(), "t"),
                     audit_vectors=audit_vectors, audit_samples=audit_table, groupings=GROUPINGS,
                     attributes=["race", "gender"], n_resamples=100)
    assert len(seen) == 2
    assert all(np.abs(x).max() < 500 for x in seen)


def test_a_class_with_too_few_training_people_is_left_out_and_too_many_classes_are_refused():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    labels = ["A"] * 30 + ["B"] * 27 + ["C"] * 3
    reader = train_reader("race", x, labels, [f"p{i}" for i in range(60)])
    assert reader.left_out_classes == {"C": 3} and reader.classes == ["A", "B"]
    ages = [str(a) for a in range(60)]
    assert "more than" in train_reader("age", x, ages, [f"p{i}" for i in range(60)]).skipped
    assert "no 'race' label" in train_reader("race", x, [None] * 60, [f"p{i}" for i in range(60)]).skipped


def test_age_band_is_derived_from_age_where_the_manifest_has_no_band():
    table = with_age_band(pd.DataFrame({"age": ["1", "25", "71", "x", "", "1e400", "-3", "2.5", "inf", "nan"]}))
    assert [None if pd.isna(v) else v for v in table["age_band"]] == ["0-2", "20-29", "70+"] + [None] * 7


def test_balanced_accuracy_and_fidelity_intervals_never_have_zero_width():
    persons = [f"p{i}" for i in range(100)]
    perfect = balanced_accuracy_estimate(np.ones(100), ["A"] * 50 + ["B"] * 50, persons)
    low, high = perfect.interval(0.95)
    assert perfect.value == 1.0 and low < 1.0 and high == 1.0
    lost = fidelity_estimate(np.zeros(100), np.ones(100), persons)
    low, high = lost.interval(0.95)
    assert lost.value == 0.0 and low == 0.0 and 0 < high < 0.1


def test_drift_flags_the_inversion_figures_of_the_drifting_group_only():
    figures = [Figure("inversion", "leakage_auc", "race", g, 0.8) for g in ("A", "B")]
    figures.append(Figure("volume", "log_volume_per_dim", "race", "B", 1.0))
    disparities = [Disparity("inversion", "leakage_auc", "race", "gap", 0.1, worst_group="A", best_group="B")]
    result = run_probe(drifting_generator, n_audit=120)
    assert mark_generator_drift(figures, disparities, result.details.drift) == 2
    assert FLAG_GENERATOR_DRIFT in figures[1].flags and FLAG_GENERATOR_DRIFT in disparities[0].flags
    assert FLAG_GENERATOR_DRIFT not in figures[0].flags and FLAG_GENERATOR_DRIFT not in figures[2].flags


# --------------------------------------------------------------------------- audit run


@pytest.fixture(scope="module")
def precomputed_run(tmp_path_factory):
    """``audit run`` on 160 people with precomputed vectors: detection and attributes, report included."""
    root = tmp_path_factory.mktemp("attributes")
    table, vectors = people(160, "a", np.random.default_rng(1))
    (root / "faces" / "img").mkdir(parents=True)
    rows = []
    for i, image_id in enumerate(table["image_id"]):
        path = f"img/{image_id}.png"
        Image.fromarray(np.full((8, 8, 3), i % 256, dtype=np.uint8)).save(root / "faces" / path)
        rows.append({"path": path, "race": table["race"][i], "gender": table["gender"][i], "age": table["age"][i]})
    pd.DataFrame(rows).to_csv(root / "faces" / "manifest.csv", index=False)
    export = pd.DataFrame(vectors, columns=[f"v{j}" for j in range(DIM)])
    export.insert(0, "image_id", [r["path"] for r in rows])
    export.to_csv(root / "vectors.csv", index=False)
    out = root / "run"
    result = CliRunner().invoke(cli, ["run", "--target", f"precomputed:{root / 'vectors.csv'}", "--target-option",
                                      "threshold=3", "--dataset", str(root / "faces"), "--out", str(out),
                                      "--cache", str(root / "cache.sqlite"), "--group-by", "race,gender",
                                      "--probes", "detection,attributes", "--resamples", "100", "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_audit_run_writes_the_attributes_section_and_figures(precomputed_run):
    results = json.loads((precomputed_run / "results.json").read_text())
    section = results["probes"]["attributes"]
    assert section["training_source"] == "the inversion probe's training split of the audit set"
    assert set(section["readers"]) == {"race", "gender", "age_band"}
    assert section["readers"]["race"]["readable"] is True
    metrics = {f["metric"] for f in results["figures"] if f["probe"] == "attributes"}
    assert {metric_name("accuracy", "race"), metric_name("balanced_accuracy", "gender")} <= metrics
    race = next(f for f in results["figures"] if f["metric"] == "accuracy_race" and f["grouping"] == "all")
    assert race["value"] > 0.9 and race["n_people"] < 160      # judged on the people it did not learn from
    assert "no reconstructions" in section["fidelity_unavailable"] or "did not run" in section["fidelity_unavailable"]


def test_the_report_shows_the_attributes_section(precomputed_run):
    html = (precomputed_run / "report.html").read_text()
    assert 'id="attributes"' in html and "Demographic leakage" in html


def test_probes_can_leave_the_attributes_probe_out():
    from audit.run_config import DEFAULT_PROBES, RunConfig

    assert "attributes" in DEFAULT_PROBES
    config = RunConfig(dataset_dir="d", out_dir="o", probes=("detection",))
    assert "attributes" not in config.probes


def test_an_age_column_gives_the_age_band_reader_a_chance_level(precomputed_run):
    results = json.loads((precomputed_run / "results.json").read_text())
    reader = results["probes"]["attributes"]["readers"]["age_band"]
    assert reader["skipped"] is None or "training people" in reader["skipped"]
    assert math.isfinite(results["probes"]["attributes"]["readers"]["race"]["chance_accuracy"])


def tinted_png(index: int) -> bytes:
    """The test face with its own noise, tinted blue for race B (odd people): a race the projection target
    can read."""
    import io

    from tests.corpus.images import rgb_png

    pixels = np.asarray(Image.open(io.BytesIO(rgb_png(index))).convert("RGB")).astype(int)
    pixels += np.random.default_rng(index).integers(-6, 7, size=pixels.shape)   # every face its own vector
    if index % 2:
        pixels[..., 2] = np.clip(pixels[..., 2] + 30, 0, 255)
        pixels[..., 0] = np.clip(pixels[..., 0] - 20, 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_audit_run_reads_the_inversion_probes_reconstructions(tmp_path, monkeypatch):
    """A stand-in model and a briefly trained generator: fidelity figures for every group, and every group
    that drifts has its inversion figures flagged."""
    from audit.run_config import RunConfig
    from audit.runner import run_audit
    from tests.corpus.datasets import face_dataset
    from tests.fake_targets import ProjectionTarget

    monkeypatch.setenv("AUDIT_CACHE", str(tmp_path / "cache.sqlite"))
    target = ProjectionTarget(seed=3)
    monkeypatch.setattr("audit.runner.open_target", lambda *args, **kwargs: target)
    dataset = face_dataset(tmp_path / "faces", people=72, per_person=1, make=tinted_png)
    config = RunConfig(dataset_dir=dataset, out_dir=tmp_path / "out", workers=1, report=False, show_progress=False,
                       n_resamples=100, cache_path=tmp_path / "cache.sqlite", probes=("inversion", "attributes"),
                       group_by=("race", "gender"), epochs=1, batch_size=4, generator_channels=16)
    results = run_audit(config).results
    section = results.probes.attributes
    assert section.readers["race"].skipped is None and section.fidelity_unavailable is None
    assert section.n_reconstructions and section.n_reconstructions > 0
    fidelity = [f for f in results.figures if f.metric == "fidelity_race"]
    assert {f.grouping for f in fidelity} == {"all", "race", "gender", "race*gender"}
    drifting = {(d.grouping, d.group) for d in section.drift}
    for f in results.figures:
        if f.probe == "inversion":
            assert (FLAG_GENERATOR_DRIFT in f.flags) == ((f.grouping, f.group) in drifting)


def test_a_drift_is_named_where_the_attribute_is_a_grouping_not_in_the_groups_it_mixes_into():
    result = run_probe(drifting_generator)
    groupings = {d.grouping for d in result.details.drift}
    assert groupings == {"race", "race*gender"}
    mixed = figure(result, "fidelity_race", "gender", "F")     # half of it is race B: measured, not named
    assert mixed.ci_high < 0.9


def test_a_gate_rule_can_require_that_no_group_drifts(tmp_path):
    from audit.gate import evaluate_policy, load_policy
    from audit.results import Results

    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nid = "no-drift"\nmetric = "attributes.fidelity_race"\ngrouping = "race"\n'
                      'min = 0.9\njudge_on = "estimate"\n')
    verdict = evaluate_policy(load_policy(policy), Results(figures=run_probe(drifting_generator).figures))
    failed = {c.group for c in verdict.checks if not c.passed}
    assert failed == {"B"} and verdict.exit_code == 1


def test_the_first_page_names_a_drifting_group_and_the_section_draws_the_heat_map(tmp_path):
    from reports.render import build_context, render_html
    from tests.report_fixtures import build_run

    run_dir = build_run(tmp_path / "run")
    html = render_html(build_context(json.loads((run_dir / "results.json").read_text()), run_dir=run_dir))
    cover = html[:html.index('id="contents"')]
    assert "redraws 1 group as another" in cover and "race: Black" in cover and "read as White in 60%" in cover
    section = html[html.index('<section class="chapter" id="attributes">'):html.index('id="method"')]
    assert "Source race against the race the classifier reads" in section and "data:image/png" in section
    assert "drifts to White (60%)" in section and "not read: the training faces carry no" in section


def test_with_a_training_corpus_the_reader_learns_from_the_corpus_and_its_ages(tmp_path, monkeypatch):
    from audit.run_config import RunConfig
    from audit.runner import run_audit
    from tests.corpus.datasets import face_dataset, write_manifest_rows
    from tests.fake_targets import ProjectionTarget

    monkeypatch.setenv("AUDIT_CACHE", str(tmp_path / "cache.sqlite"))
    target = ProjectionTarget(seed=3)
    monkeypatch.setattr("audit.runner.open_target", lambda *args, **kwargs: target)
    with_ages = []
    for name, n, offset in (("audit", 24, 0), ("corpus", 64, 1000)):
        folder = face_dataset(tmp_path / name, people=n, per_person=1, make=lambda i, o=offset: tinted_png(i + o))
        manifest = pd.read_csv(folder / "manifest.csv", dtype=str)
        manifest["identity"] = f"{name}-" + manifest["identity"]
        manifest["age"] = [str(20 + 30 * (i % 2)) for i in range(len(manifest))]
        write_manifest_rows(folder, manifest.values.tolist(), header=list(manifest.columns))
        with_ages.append(folder)
    config = RunConfig(dataset_dir=with_ages[0], out_dir=tmp_path / "out", workers=1, report=False,
                       show_progress=False, n_resamples=100, cache_path=tmp_path / "cache.sqlite",
                       probes=("inversion", "attributes"), group_by=("race", "gender"), epochs=1, batch_size=4,
                       generator_channels=16, train_datasets=(with_ages[1],), near_duplicate_distance=0.0)
    results = run_audit(config).results
    section = results.probes.attributes
    assert section.training_source == "the generator's training corpus (--train-dataset)"
    assert section.evaluated_on == "every audited person"
    assert set(section.readers) == {"race", "gender", "age_band"}
    assert section.readers["age_band"].skipped is None, section.readers["age_band"].skipped
    assert section.readers["race"].n_train_people >= 20
