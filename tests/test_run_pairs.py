"""The official verification pairs (LFW's pairs.txt) reach ``audit run`` wherever the dataset lives.

A dataset folder at a URL (fsspec's in-memory store stands in for s3://)
brings its pairs.txt as a local folder does; ``--pairs`` takes a path or a
URL, and is read before any target call.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from audit.cli import cli
from tests.corpus.images import rgb_png

PEOPLE = (("Ann_Lee", "A"), ("Bo_Ray", "B"), ("Cy_Day", "A"), ("Di_Eve", "B"))
PAIRS = "1 2\nAnn_Lee 1 2\nBo_Ray 1 2\nAnn_Lee 1 Bo_Ray 1\nCy_Day 1 Di_Eve 2\n"
RUN = ["--probes", "verification", "--no-report", "-q", "--target-option", "engine=dlib", "--workers", "1",
       "--resamples", "100"]


def _files() -> dict[str, bytes]:
    files, rows, k = {}, ["path,identity,race"], 0
    for name, race in PEOPLE:
        for i in (1, 2):
            files[f"images/{name}/{name}_{i:04d}.jpg"] = rgb_png(k)
            rows.append(f"images/{name}/{name}_{i:04d}.jpg,{name},{race}")
            k += 1
    files["manifest.csv"] = ("\n".join(rows) + "\n").encode()
    return files


@pytest.fixture()
def memory_store():
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    root = f"/lfw-{os.getpid()}-{id(fs)}"
    for name, data in _files().items():
        fs.pipe(f"{root}/{name}", data)
    yield fs, f"memory://{root}"
    fs.rm(root, recursive=True)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_CACHE", str(tmp_path / "cache.sqlite"))


def _verification(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())["probes"]["verification"]


def test_a_dataset_at_a_url_brings_its_official_pairs(memory_store, tmp_path):
    fs, url = memory_store
    fs.pipe(url.removeprefix("memory://") + "/pairs.txt", PAIRS.encode())
    result = CliRunner().invoke(cli, ["run", "--dataset", url, "--out", str(tmp_path / "out"), *RUN])
    assert result.exit_code == 0, result.output
    assert _verification(tmp_path / "out")["pairs"] == "given"


def test_pairs_at_a_url_are_read_through_the_store(memory_store, tmp_path):
    fs, url = memory_store
    fs.pipe(url.removeprefix("memory://") + "-pairs.txt", PAIRS.encode())
    result = CliRunner().invoke(cli, ["run", "--dataset", url, "--pairs", url + "-pairs.txt",
                                      "--out", str(tmp_path / "out"), *RUN])
    assert result.exit_code == 0, result.output    # before: "--pairs: Path ... does not exist"
    assert _verification(tmp_path / "out")["pairs"] == "given"


@pytest.mark.parametrize("kind, words", [("missing", "no such file"), ("fifo", "is not a regular file"),
                                         ("missing-url", "no such file")])
def test_pairs_that_cannot_be_read_are_refused_before_any_target_call(tmp_path, monkeypatch, kind, words):
    for where in ("audit.pipeline.open_target", "audit.runner.open_target"):
        monkeypatch.setattr(where, lambda *a, **k: pytest.fail("a target was opened"))
    dataset = tmp_path / "lfw"
    for name, data in _files().items():
        (dataset / name).parent.mkdir(parents=True, exist_ok=True)
        (dataset / name).write_bytes(data)
    pairs = str(tmp_path / "pairs.txt")
    if kind == "fifo":
        os.mkfifo(pairs)      # a read would wait forever for a writer
    elif kind == "missing-url":
        pairs = "memory://nowhere/pairs.txt"
    result = CliRunner().invoke(cli, ["run", "--dataset", str(dataset), "--pairs", pairs,
                                      "--out", str(tmp_path / "out"), *RUN])
    assert result.exit_code == 2, result.output
    assert words in result.output and not (tmp_path / "out").exists()
