"""``audit run --target precomputed:FILE``: vectors exported by another system, no model needed.

The dataset is made from a face scikit-image ships (no research data).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from audit.cli import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from skimage import data

    face = data.astronaut()
    root = tmp_path_factory.mktemp("precomputed")
    (root / "faces" / "img").mkdir(parents=True)
    rows = []
    for i in range(16):
        image = np.clip(face.astype(int) + 6 * (i % 8) - 20, 0, 255).astype(np.uint8)
        if i % 2:
            image = image[:, ::-1]
        Image.fromarray(image).save(root / "faces" / "img" / f"f{i:02d}.png")
        rows.append({"path": f"img/f{i:02d}.png", "group": "A" if i < 8 else "B"})
    pd.DataFrame(rows).to_csv(root / "faces" / "manifest.csv", index=False)
    result = CliRunner().invoke(cli, ["embed", "--dataset", str(root / "faces"), "--target-option", "engine=dlib",
                                      "--workers", "1", "--cache", str(root / "cache.sqlite"),
                                      "--export", str(root / "vectors.csv"), "-q"])
    assert result.exit_code == 0, result.output
    return root


RUN = ["--probes", "detection,inversion", "--group-by", "group", "--epochs", "2", "--batch-size", "4",
       "--generator-channels", "16", "--validate-every", "1", "--resamples", "100", "-q"]


def test_the_run_folder_and_every_face_weight_and_report_in_it_are_owner_only(exported):
    import os

    out = exported / "run-modes"
    old = os.umask(0o022)
    try:
        result = CliRunner().invoke(cli, ["run", "--target", f"precomputed:{exported / 'vectors.csv'}",
                                          "--target-option", "threshold=0.6", "--dataset", str(exported / "faces"),
                                          "--out", str(out), "--cache", str(exported / "cache.sqlite"), *RUN])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o777 == 0o700
    private = [*out.glob("samples/*.png"), *out.rglob("*.pt"), out / "report.html"]
    assert len(private) > 3
    assert {str(p.relative_to(out)): oct(p.stat().st_mode & 0o777) for p in private
            if p.stat().st_mode & 0o777 != 0o600} == {}
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_dir() and p.stat().st_mode & 0o777 != 0o700} \
        == set()


def test_without_a_model_the_report_says_which_figures_are_unavailable(exported):
    out = exported / "run-no-model"
    result = CliRunner().invoke(cli, ["run", "--target", f"precomputed:{exported / 'vectors.csv'}",
                                      "--target-option", "threshold=0.6", "--dataset", str(exported / "faces"),
                                      "--out", str(out), "--cache", str(exported / "cache.sqlite"), *RUN])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    inversion = results["probes"]["inversion"]
    assert inversion["reembedded"] is False and "could not be embedded" in inversion["unavailable"]
    metrics = {f["metric"] for f in results["figures"] if f["probe"] == "inversion"}
    assert "mean_distance" not in metrics and "success_rate_at_default" not in metrics
    assert any(f["probe"] == "detection" for f in results["figures"])
    assert all(h["val_mean_distance"] is None for h in inversion["history"])
    assert "Figures unavailable" in (out / "report.html").read_text()


def test_with_a_model_reconstructions_are_measured(exported):
    out = exported / "run-reembed"
    result = CliRunner().invoke(cli, ["run", "--target", f"precomputed:{exported / 'vectors.csv'}",
                                      "--target-option", "threshold=0.6", "--target-option", "reembed=dlib",
                                      "--dataset", str(exported / "faces"), "--out", str(out), "--cache",
                                      str(exported / "cache.sqlite"), "--no-report", *RUN])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["probes"]["inversion"]["reembedded"] is True
    assert any(f["metric"] == "mean_distance" and f["value"] is not None for f in results["figures"])
