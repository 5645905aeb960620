"""``audit run --train-dataset``: train on a corpus, audit a balanced set (real UTKFace, skipped where absent).

The audit set is a balanced sample of UTKFace and the corpus is UTKFace
itself, so every audit image is in the corpus: the run must drop them (and
any copy) from training, balance the rest, and still find identity in the
reconstructions.  A second audit reuses the cached generator, and a saved
generator folder gives the same figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from audit.cli import cli

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

AUDIT_PER_GROUP = 10      # x 10 race*gender groups = 100 audit images
TRAIN_OPTIONS = ["--train-per-group", "120", "--epochs", "12", "--batch-size", "32", "--generator-channels", "32",
                 "--validate-every", "4"]
FAST = ["--probes", "detection,inversion", "--resamples", "200", "--no-report", "-q"]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def data(utkface_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpus")
    corpus, audit = root / "utk", root / "audit"
    assert invoke("dataset", "import", "utkface", str(utkface_dir), str(corpus)).exit_code == 0
    result = invoke("dataset", "balance", str(corpus), str(audit), "--by", "race,gender",
                    "--per-group", str(AUDIT_PER_GROUP), "--seed", "5")
    assert result.exit_code == 0, result.output
    return {"root": root, "corpus": corpus, "audit": audit, "cache": root / "cache.sqlite"}


@pytest.fixture(scope="module")
def corpus_run(data) -> Path:
    out = data["root"] / "run"
    result = invoke("run", "--dataset", str(data["audit"]), "--train-dataset", str(data["corpus"]),
                    "--out", str(out), "--cache", str(data["cache"]), *TRAIN_OPTIONS, *FAST)
    assert result.exit_code == 0, result.output
    return out


def inversion_figures(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    return {(f["metric"], f["grouping"], f["group"]): (f["value"], f["ci_low"], f["ci_high"])
            for f in results["figures"] if f["probe"] == "inversion"}


def test_every_audit_person_is_tested_and_none_is_trained_on(corpus_run):
    results = json.loads((corpus_run / "results.json").read_text())
    detail = results["probes"]["inversion"]
    assert detail["training_source"] == "a training corpus (--train-dataset)"
    n_audit = int(results["detection"]["by_status"]["ok"])
    assert detail["n_test"] == n_audit
    training = detail["training_set"]
    # Every audit image is a corpus image: all are dropped, as are byte-identical copies of them.
    assert training["dropped"]["same_image"] >= 10 * AUDIT_PER_GROUP
    cells = training["composition"]["race*gender"]
    assert len(cells) == 10 and len(set(cells.values())) == 1      # balanced, exactly
    assert training["n_train_images"] + training["n_val_people"] == 10 * list(cells.values())[0] + training["n_val_people"]
    samples = pd.read_csv(corpus_run / "inversion_samples.csv")
    assert samples["identity"].is_unique and len(samples) == n_audit


def test_reconstructions_carry_identity(corpus_run):
    detail = json.loads((corpus_run / "results.json").read_text())["probes"]["inversion"]
    summary = detail["signal_summary"]
    assert summary["overall"] is True and summary["p_value"] < 0.01
    tested = {(t["grouping"], t["group"]) for t in detail["signal"]}
    assert ("race*gender", "Asian / Female") in tested and len(tested) == 1 + 5 + 2 + 10


def test_a_second_audit_reuses_the_generator(data, corpus_run, monkeypatch):
    import audit.generator_stage as stage

    monkeypatch.setattr(stage, "train_generator", lambda *a, **k: pytest.fail("the generator was trained again"))
    out = data["root"] / "again"
    result = invoke("run", "--dataset", str(data["audit"]), "--train-dataset", str(data["corpus"]),
                    "--out", str(out), "--cache", str(data["cache"]), *TRAIN_OPTIONS, *FAST)
    assert result.exit_code == 0, result.output
    assert inversion_figures(out) == inversion_figures(corpus_run)


def test_a_saved_generator_gives_identical_figures(data, corpus_run, monkeypatch):
    import audit.generator_stage as stage

    folder = json.loads((corpus_run / "results.json").read_text())["probes"]["inversion"]["generators"][0]["source"]
    monkeypatch.setattr(stage, "train_generator", lambda *a, **k: pytest.fail("the generator was trained"))
    out = data["root"] / "saved"
    result = invoke("run", "--dataset", str(data["audit"]), "--generator", folder, "--out", str(out),
                    "--cache", str(data["cache"]), *FAST)
    assert result.exit_code == 0, result.output
    assert inversion_figures(out) == inversion_figures(corpus_run)


def test_a_generator_that_saw_the_audit_set_is_refused(data, corpus_run, tmp_path):
    gen = tmp_path / "gen"
    result = invoke("generator", "train", "--dataset", str(data["audit"]), "--out", str(gen), "--epochs", "1",
                    "--generator-channels", "8", "--batch-size", "16", "--cache", str(data["cache"]), "-q")
    assert result.exit_code == 0, result.output
    assert (gen / "generator.json").is_file() and (gen / "best.pt").is_file()
    result = CliRunner().invoke(cli, ["run", "--dataset", str(data["audit"]), "--generator", str(gen),
                                      "--out", str(tmp_path / "out"), "--cache", str(data["cache"]), *FAST])
    assert result.exit_code == 2
    assert "was trained on faces of this audit set" in result.output and "same image" in result.output


def test_generator_train_excludes_the_audit_set(data, corpus_run, tmp_path):
    gen = tmp_path / "gen"
    result = invoke("generator", "train", "--dataset", str(data["corpus"]), "--exclude", str(data["audit"]),
                    "--train-per-group", "20", "--out", str(gen), "--epochs", "1", "--generator-channels", "8",
                    "--batch-size", "16", "--cache", str(data["cache"]), "-q")
    assert result.exit_code == 0, result.output
    info = json.loads((gen / "generator.json").read_text())
    assert info["training_set"]["dropped"]["same_image"] >= 10 * AUDIT_PER_GROUP
    assert info["target"]["fingerprint"].startswith("dlib-resnet-v1")
    result = invoke("run", "--dataset", str(data["audit"]), "--generator", str(gen), "--out",
                    str(tmp_path / "out"), "--cache", str(data["cache"]), *FAST)
    assert result.exit_code == 0, result.output
