"""``audit run`` end to end on a tiny real sample of UTKFace (skipped where it is absent).

One session-wide balanced sample and embedding cache; the generator is
small and briefly trained so that the whole run fits in a CI minute or two,
and yet its reconstructions must carry identity: closer to their source
than to other people.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from audit.cli import cli

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

PER_GROUP = 30           # x 10 race*gender groups = 300 images
RUN_OPTIONS = ["--epochs", "100", "--batch-size", "16", "--generator-channels", "64", "--validate-every", "25",
               "--resamples", "200", "-q"]


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


@pytest.fixture(scope="session")
def sample(utkface_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("e2e")
    full, balanced = root / "utk", root / "balanced"
    assert invoke("dataset", "import", "utkface", str(utkface_dir), str(full)).exit_code == 0
    result = invoke("dataset", "balance", str(full), str(balanced), "--by", "race,gender",
                    "--per-group", str(PER_GROUP), "--seed", "3")
    assert result.exit_code == 0, result.output
    return {"root": root, "dataset": balanced, "cache": root / "cache.sqlite"}


@pytest.fixture(scope="session")
def full_run(sample) -> Path:
    out = sample["root"] / "run"
    result = invoke("run", "--target", "dlib", "--dataset", str(sample["dataset"]), "--out", str(out),
                    "--cache", str(sample["cache"]), *RUN_OPTIONS)
    assert result.exit_code == 0, result.output
    return out


def test_run_writes_every_output(full_run):
    for name in ("results.json", "groups.csv", "detections.csv", "inversion_samples.csv", "report.html",
                 "report.pdf", "checkpoints/inversion/best.pt", "checkpoints/inversion/history.json"):
        assert (full_run / name).is_file(), name
    results = json.loads((full_run / "results.json").read_text())
    assert results["schema_version"] == "1.1"
    assert results["target"]["name"] == "dlib" and results["target"]["dimension"] == 128
    assert results["dataset"]["n_images"] == 10 * PER_GROUP
    assert set(results["dataset"]["group_by"]) == {"race", "gender"}
    keys = {(f["probe"], f["metric"]) for f in results["figures"]}
    assert {("detection", "failure_rate"), ("inversion", "mean_distance"),
            ("inversion", "success_rate_at_default"), ("volume", "log_volume_per_dim")} <= keys
    groupings = {f["grouping"] for f in results["figures"]}
    assert {"all", "race", "gender", "race*gender"} <= groupings
    # UTKFace has no identities with two images: verification says why it did not run
    assert "skipped" in results["probes"]["verification"]
    inversion = results["probes"]["inversion"]
    assert len(inversion["history"]) == 100 and inversion["sample_images"]
    # the FMR threshold's impostor pairs: distinct pairs of real images (300: all 44,850 of them used)
    pairs = inversion["impostor_pairs"]
    assert pairs["distinct"] and pairs["used"] == pairs["possible"] > 0
    # every disparity is pairwise, with a p-value corrected over the whole run
    assert results["settings"]["correction"] == "holm" and results["findings"]["method"] == "holm"
    assert {d["kind"] for d in results["disparities"]} == {"gap", "ratio"}
    assert results["findings"]["n_comparisons"] == sum(1 for d in results["disparities"]
                                                       if d["p_adjusted"] is not None)
    assert results["findings"]["n_findings"] == sum(d["finding"] for d in results["disparities"])
    for image in inversion["sample_images"]:
        assert (full_run / image["reconstruction"]).is_file()


def test_groups_csv_matches_results_json(full_run):
    results = json.loads((full_run / "results.json").read_text())
    groups = pd.read_csv(full_run / "groups.csv").set_index(["grouping", "group"])
    for figure in results["figures"]:
        column = f"{figure['probe']}.{figure['metric']}"
        value = groups.loc[(figure["grouping"], figure["group"]), column]
        if figure["value"] is None:
            assert math.isnan(value)
        else:
            assert value == pytest.approx(figure["value"], rel=1e-9)


def test_reconstructions_beat_the_random_pair_baseline(full_run):
    samples = pd.read_csv(full_run / "inversion_samples.csv")
    paired = samples[["distance", "impostor_mean_distance"]].dropna()
    assert len(paired) >= 30
    from scipy.stats import wilcoxon

    # each reconstruction is closer to its own source than to the other people, on average
    assert paired["distance"].mean() < paired["impostor_mean_distance"].mean()
    assert wilcoxon(paired["distance"], paired["impostor_mean_distance"], alternative="less").pvalue < 0.01


def test_report_numbers_equal_results(full_run):
    from reports.text import describe_metric, format_value

    html = (full_run / "report.html").read_text()
    results = json.loads((full_run / "results.json").read_text())
    figure = next(f for f in results["figures"] if f["probe"] == "inversion" and f["metric"] == "mean_distance"
                  and f["grouping"] == "race")
    assert format_value(figure["value"], describe_metric("inversion.mean_distance").unit) in html
    assert "data:image/png;base64," in html and "http://" not in html.replace("http://www.w3.org", "")


def test_rerun_comes_from_the_cache_and_is_reproducible(sample, full_run):
    out = sample["root"] / "run-again"
    result = invoke("run", "--target", "dlib", "--dataset", str(sample["dataset"]), "--out", str(out),
                    "--cache", str(sample["cache"]), "--no-report", *RUN_OPTIONS)
    assert result.exit_code == 0, result.output
    first = pd.read_csv(full_run / "inversion_samples.csv")
    second = pd.read_csv(out / "inversion_samples.csv")
    np.testing.assert_allclose(first["distance"], second["distance"], rtol=1e-6)


def test_probes_without_training_are_fast_on_cached_embeddings(sample, full_run):
    out = sample["root"] / "volume-only"
    result = invoke("run", "--dataset", str(sample["dataset"]), "--out", str(out), "--cache",
                    str(sample["cache"]), "--probes", "volume,verification", "--no-report", "-q")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["duration_seconds"] < 60
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize("bound, expected_exit", [(1.0, 0), (1000.0, 1)])
def test_run_with_a_policy_passes_or_fails(sample, full_run, tmp_path, bound, expected_exit):
    policy = tmp_path / "policy.toml"
    policy.write_text(f"""
[policy]
name = "e2e"
judge_on = "estimate"
[[rule]]
id = "detection"
metric = "detection.failure_rate"
grouping = "race"
max = 0.5
[[rule]]
id = "volume-spread"
metric = "volume.effective_dimensionality"
grouping = "race"
min = {bound}
""")
    junit, markdown = tmp_path / "verdict.xml", tmp_path / "verdict.md"
    result = invoke("run", "--dataset", str(sample["dataset"]), "--out", str(tmp_path / "out"), "--cache",
                    str(sample["cache"]), "--probes", "detection,volume", "--no-report", "-q",
                    "--policy", str(policy), "--junit", str(junit), "--markdown", str(markdown))
    assert result.exit_code == expected_exit, result.output
    verdict = json.loads((tmp_path / "out" / "results.json").read_text())["policy_verdict"]
    assert verdict["passed"] is (expected_exit == 0)
    import xml.etree.ElementTree as ET

    from tests.test_gate_markdown import junit_cases, markdown_cases

    cases = ET.parse(junit).getroot().iter("testcase")
    assert len(list(cases)) >= 5 + 1
    summary = markdown.read_text(encoding="utf-8")
    assert summary.startswith(f"## Bias audit gate: {'PASS' if expected_exit == 0 else 'FAIL'}")
    assert markdown_cases(summary) == junit_cases(junit.read_text(encoding="utf-8"))
