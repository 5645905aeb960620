"""The target registry, plugins through entry points, and `audit targets`."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint

import numpy as np
import pytest
from click.testing import CliRunner

import audit.targets as registry
from audit.commands.targets import targets as targets_command
from audit.errors import InputError, TargetError
from audit.targets import ENTRY_POINT_GROUP, get_target, list_targets, parse_target_options
from audit.targets.base import EmbedOutcome, Target


class PluginTarget(Target):
    """A plugin target for tests (8-D, cosine)."""

    name = "toy"
    dimension = 8
    metric = "cosine"
    default_threshold = 0.4
    OPTIONS = {"scale": "a number", "argument": "the part after 'toy:'"}

    def __init__(self, *, scale: str = "1", argument: str | None = None) -> None:
        self.scale = float(scale)
        self.argument = argument

    def fingerprint(self) -> str:
        return "toy-v1"

    def embed(self, images):
        return [EmbedOutcome.ok(np.full(8, self.scale)) for _ in images]


class NotATarget:
    pass


def _entry_points(*pairs):
    eps = [EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in pairs]
    return lambda group: [ep for ep in eps if group == ENTRY_POINT_GROUP]


@pytest.fixture()
def plugins(monkeypatch):
    monkeypatch.setattr(registry, "entry_points", _entry_points(
        ("toy", f"{__name__}:PluginTarget"),
        ("broken", "no_such_module_for_audit_tests:Thing"),
        ("odd", f"{__name__}:NotATarget"),
        ("dlib", "audit.targets.dlib_target:DlibTarget"),   # this package's own registration
    ))


def test_parse_target_options():
    assert parse_target_options(["engine=dlib", "Batch-Size = 8", "mean=1,2,3", "x="]) == {
        "engine": "dlib", "batch_size": "8", "mean": "1,2,3", "x": ""}
    assert parse_target_options(None) == {}
    with pytest.raises(InputError) as caught:
        parse_target_options(["threshold"])
    assert str(caught.value) == ("--target-option 'threshold' is not of the form key=value (for "
                                 "example --target-option threshold=0.6).")
    with pytest.raises(InputError, match="'threshold' is given twice"):
        parse_target_options(["threshold=1", "threshold=2"])


def test_unknown_target_lists_the_available_ones(plugins):
    with pytest.raises(InputError) as caught:
        get_target("arcface")
    assert str(caught.value) == ("unknown target 'arcface'; available targets: dlib, "
                                 "clarifai[:MODEL_ID], onnx:PATH, precomputed:FILE, broken, odd, "
                                 "toy (see `audit targets`).")


def test_plugin_is_built_with_its_options(plugins):
    target = get_target("toy", scale="2")
    assert isinstance(target, PluginTarget) and target.embed([None])[0].vector[0] == 2
    assert get_target("toy:extra").argument == "extra"
    with pytest.raises(InputError, match=r"unknown target option\(s\) \['scael'\] for target 'toy'"):
        get_target("toy", scael="2")


def test_broken_plugins_are_reported_not_fatal(plugins):
    with pytest.raises(TargetError) as caught:
        get_target("broken")
    assert str(caught.value).startswith("target plugin 'broken' (no_such_module_for_audit_tests:"
                                        "Thing, from package '?') failed to load: "
                                        "ModuleNotFoundError")
    with pytest.raises(TargetError, match="is <class .*NotATarget'>, not a subclass of"):
        get_target("odd")
    listings = {t.name: t for t in list_targets()}
    assert listings["broken"].available is False and "failed to load" in listings["broken"].reason
    assert listings["odd"].available is False
    toy = listings["toy"]
    assert (toy.dimension, toy.metric, toy.default_threshold, toy.available) == (8, "cosine", 0.4, True)
    assert toy.description == "A plugin target for tests (8-D, cosine)."
    # The package's own dlib entry point is not listed twice.
    assert [t.name for t in list_targets()].count("dlib") == 1


def test_built_in_listing_without_loading_models():
    listings = {t.name: t for t in list_targets()}
    assert set(listings) >= {"dlib", "clarifai", "onnx", "precomputed"}
    assert (listings["clarifai"].dimension, listings["clarifai"].metric,
            listings["clarifai"].default_threshold) == (1024, "euclidean", 1.1)
    assert listings["onnx"].dimension is None and listings["onnx"].metric == "cosine"
    assert listings["dlib"].dimension == 128


def test_built_in_spec_errors():
    with pytest.raises(InputError, match="'dlib' takes no ':...' part"):
        get_target("dlib:foo")
    with pytest.raises(InputError, match="needs a file: use --target onnx:PATH"):
        get_target("onnx:")
    with pytest.raises(InputError, match=r"unknown target option\(s\) \['engin'\] for target 'dlib'"):
        get_target("dlib", engin="torch")


def test_targets_command(plugins):
    runner = CliRunner()
    result = runner.invoke(targets_command, [])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["TARGET", "DIM", "METRIC", "THRESHOLD", "AVAILABLE", "NOTE"]
    toy = next(line for line in lines if line.startswith("toy "))
    assert toy.split()[:5] == ["toy", "8", "cosine", "0.4", "yes"]
    broken = next(line for line in lines if line.startswith("broken "))
    assert broken.split()[:5] == ["broken", "-", "-", "-", "no"]
    as_json = json.loads(runner.invoke(targets_command, ["--json"]).output)
    assert {t["name"] for t in as_json} >= {"dlib", "clarifai", "onnx", "precomputed", "toy"}
    with_options = runner.invoke(targets_command, ["--options"]).output
    assert "toy options (--target-option KEY=VALUE):\n  argument  the part after 'toy:'" in with_options
    help_text = runner.invoke(targets_command, ["--help"]).output
    assert "Example:" in help_text and "audit targets --options" in help_text


def test_targets_fingerprint_prints_the_fingerprint_alone(plugins):
    from audit.cli import cli

    runner = CliRunner()
    toy = runner.invoke(cli, ["targets", "--fingerprint", "toy", "--target-option", "scale=2"])
    assert (toy.exit_code, toy.stdout) == (0, "toy-v1\n"), toy.output
    dlib = runner.invoke(cli, ["targets", "--fingerprint", "dlib"])
    assert dlib.exit_code == 0 and dlib.stdout == get_target("dlib").fingerprint() + "\n", dlib.output
    unknown = runner.invoke(cli, ["targets", "--fingerprint", "nosuch"])
    assert unknown.exit_code == 2 and "unknown target 'nosuch'" in unknown.output
    stray = runner.invoke(cli, ["targets", "--target-option", "scale=2"])
    assert stray.exit_code == 2 and "--fingerprint" in stray.output
