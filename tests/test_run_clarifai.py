"""A whole ``audit run --target clarifai`` against the fake Clarifai server.

The fake answers with dlib's descriptor of the face through a fixed random
projection to 1024-D, so the vectors carry identity as a real cloud model's
would.  A second run of the same command pays for nothing: every predict
call, dataset image or reconstruction, comes from the cache.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from audit.cli import cli
from tests.fake_clarifai import FakeClarifai

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

KEY = "fake-pat-e2e-5f1c0e7a9b"


@pytest.fixture(scope="module")
def small_sample(utkface_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("clarifai-e2e")
    runner = CliRunner()
    assert runner.invoke(cli, ["dataset", "import", "utkface", str(utkface_dir), str(root / "utk")]).exit_code == 0
    result = runner.invoke(cli, ["dataset", "balance", str(root / "utk"), str(root / "balanced"),
                                 "--by", "race,gender", "--per-group", "5", "--seed", "7"])
    assert result.exit_code == 0, result.output
    return root


def test_full_audit_against_the_fake_clarifai(small_sample, monkeypatch):
    monkeypatch.setenv("CLARIFAI_PAT", KEY)
    with FakeClarifai(key=KEY, mode="dlib") as fake:
        monkeypatch.setenv("CLARIFAI_API_BASE", fake.url)
        out = small_sample / "run"
        args = ["run", "--target", "clarifai", "--dataset", str(small_sample / "balanced"), "--out", str(out),
                "--cache", str(small_sample / "cache.sqlite"), "--epochs", "3", "--batch-size", "16",
                "--generator-channels", "32", "--validate-every", "3", "--resamples", "100", "-q",
                "--target-option", "retry_base_delay=0.01"]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        first_posts = fake.count("POST")
        assert first_posts > 0
        results = json.loads((out / "results.json").read_text())
        assert results["target"]["name"] == "clarifai"
        assert results["target"]["dimension"] == 1024
        assert results["target"]["default_threshold"] == 1.1
        assert results["target"]["fingerprint"].startswith("clarifai:d02b4508df58432fbb84e800597b8959@")
        assert any(f["probe"] == "inversion" for f in results["figures"])
        for name in ("report.html", "report.pdf", "groups.csv"):
            assert (out / name).is_file()
        text = (out / "results.json").read_text() + (out / "report.html").read_text() + result.output
        assert KEY not in text

        again = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert again.exit_code == 0, again.output
        assert fake.count("POST") == first_posts      # everything came from the cache
