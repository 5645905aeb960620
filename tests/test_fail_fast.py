"""Every mistake that needs no model is refused before the target's first call.

A cloud target bills each call; a run that embeds a whole dataset and then
fails on a typo in a policy has wasted that money.  Each case below runs
``audit run``'s engine with a counting target and checks that the error
comes with zero calls made.  The last test shows the counter counts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from audit.errors import AuditError, InputError
from audit.run_config import RunConfig
from audit.runner import run_audit
from audit.targets import get_target
from tests.corpus.datasets import face_dataset
from tests.fake_targets import ProjectionTarget
from tests.test_generator_artifact import make as make_generator
from tests.test_generator_damage import DAMAGES

pytestmark = pytest.mark.usefixtures("isolated_cache")


class CountingTarget(ProjectionTarget):
    """A stand-in model that counts the images it is asked to embed."""

    def __init__(self, seed: int = 1) -> None:
        super().__init__(seed)
        self.calls = 0

    def embed(self, images):
        self.calls += 1
        return super().embed(images)


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_CACHE", str(tmp_path / "cache.sqlite"))


@pytest.fixture()
def target(monkeypatch) -> CountingTarget:
    counting = CountingTarget(seed=2)
    monkeypatch.setattr("audit.runner.open_target", lambda *args, **kwargs: counting)
    return counting


@pytest.fixture()
def dataset(tmp_path) -> Path:
    return face_dataset(tmp_path / "faces", people=4, per_person=2)


def run(dataset: Path, out: Path, **settings):
    config = RunConfig(dataset_dir=dataset, out_dir=out, workers=1, report=False, show_progress=False,
                       n_resamples=100, cache_path=out.parent / "cache.sqlite", **settings)
    return run_audit(config)


def refused(target: CountingTarget, match: str, build) -> None:
    with pytest.raises(AuditError, match=match):
        build()
    assert target.calls == 0


def test_a_training_setting_out_of_range(target, dataset, tmp_path):
    refused(target, "batch", lambda: run(dataset, tmp_path / "out", batch_size=1))
    refused(target, "lr", lambda: run(dataset, tmp_path / "out", lr=-1.0))
    refused(target, "epochs", lambda: run(dataset, tmp_path / "out", epochs=0))


def test_a_typo_in_the_policy(target, dataset, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nid = "gap"\nmetric = "detection.failure_rate"\ndisparity = "gapp"\nmax = 0.1\n')
    refused(target, "gapp", lambda: run(dataset, tmp_path / "out", policy_path=policy))


def test_a_baseline_that_is_not_a_results_file(target, dataset, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nid = "gap"\nmetric = "detection.failure_rate"\ndisparity = "gap"\nmax = 0.1\n')
    baseline = tmp_path / "old.json"
    baseline.write_text('{"not": "results"}')
    refused(target, "old.json", lambda: run(dataset, tmp_path / "out", policy_path=policy, baseline_path=baseline))


def test_an_output_folder_that_cannot_be_written(target, dataset, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    refused(target, "a-file", lambda: run(dataset, blocker / "out"))


def test_identity_loss_with_a_black_box_target(target, dataset, tmp_path):
    refused(target, "white-box", lambda: run(dataset, tmp_path / "out", probes=("inversion",), identity_loss=1.0,
                                             epochs=1, batch_size=4, generator_channels=16))


def test_a_generator_trained_against_another_model(target, dataset, tmp_path):
    make_generator(tmp_path / "gen")                         # trained against projection-1; the target is -2
    refused(target, "trained against target", lambda: run(dataset, tmp_path / "out", probes=("inversion",),
                                                          generator_paths=(tmp_path / "gen",)))


@pytest.mark.parametrize("damage", ["checkpoint-without-generator-key", "checkpoint-negative-channels",
                                    "info-without-target", "vectors-object-dtype", "training-set-empty",
                                    "info-deeply-nested", "history-entries-not-objects"])
def test_a_damaged_generator_folder(target, dataset, tmp_path, damage):
    make_generator(tmp_path / "gen")
    DAMAGES[damage][0](tmp_path / "gen")
    refused(target, "generator folder .* is damaged", lambda: run(
        dataset, tmp_path / "out", probes=("inversion",), generator_paths=(tmp_path / "gen",)))


def test_a_training_corpus_that_is_the_audit_set(target, dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)                  # the same images in another folder: the same faces
    for corpus in (dataset, copy):
        refused(target, r"training corpus .* leaves no image to train the generator on: every one of its images "
                        r"is an audit image .*\(same image: 8\).*--train-dataset OTHER",
                lambda: run(dataset, tmp_path / "out", probes=("inversion",), train_datasets=(corpus,)))


def test_a_generator_corpus_that_is_all_excluded(dataset, tmp_path, monkeypatch):
    from audit.generator_stage import train_generator_artifact

    monkeypatch.setattr("audit.generator_stage.open_target", lambda *a, **k: pytest.fail("the target was opened"))
    with pytest.raises(InputError, match=r"leaves no image .*\(same image: 8\).*--dataset OTHER"):
        train_generator_artifact(
            target_spec="dlib", target_options=(), datasets=(dataset,), excluded=(dataset,), out_dir=tmp_path / "gen",
            group_by=None, epochs=1, image_size=64, batch_size=4, lr=1e-3, validate_every=1, average_identities=False,
            generator_channels=16, train_balance="group-by", train_per_group=None, near_duplicate_distance=None,
            identity_loss=0.0, device="cpu", seed=0, cache_path=tmp_path / "cache.sqlite", use_cache=True,
            face_config=None, workers=1, show_progress=False)


@pytest.mark.parametrize("content, named", [
    ("Ann_Lee 1 2\nJos\u00e9_Ruiz 1 2\n".encode("latin-1"), r"pairs.txt' line 2: byte 0xe9 is not UTF-8 text"),
    ("Ann_Lee 1 \u00b2\n".encode(), r"line 1: 'Ann_Lee 1 \u00b2' is not 'Name i j'"),
    (b"Ann_Lee 1 " + b"9" * 5000 + b"\n", "line 1: 'Ann_Lee 1 9999"),
    (b"10 300\n\n", "holds no pair"),
    (b"", "holds no pair"),
])
def test_a_pairs_file_that_cannot_be_read(target, dataset, tmp_path, content, named):
    pairs = tmp_path / "pairs.txt"
    pairs.write_bytes(content)
    refused(target, named, lambda: run(dataset, tmp_path / "out", probes=("verification",), pairs_file=pairs))
    shutil.copy(pairs, dataset / "pairs.txt")           # found in the dataset folder: read first as well
    refused(target, named, lambda: run(dataset, tmp_path / "out", probes=("detection", "verification")))


def test_a_training_corpus_that_is_not_a_dataset(target, dataset, tmp_path):
    (tmp_path / "empty").mkdir()
    refused(target, "empty", lambda: run(dataset, tmp_path / "out", probes=("inversion",),
                                         train_datasets=(tmp_path / "empty",)))


@pytest.mark.parametrize("option, named", [("threshold=abc", "threshold='abc' is not a number"),
                                           ("engine=gpu", "engine='gpu' must be one of"),
                                           ("batch_size=0", "batch_size='0' must be >= 1"),
                                           ("thresold=0.5", "thresold")])
def test_a_bad_target_option_is_one_clear_error_before_any_model_is_loaded(option, named):
    key, value = option.split("=")
    with pytest.raises(InputError, match=named.replace("(", r"\(")):
        get_target("dlib", **{key: value})


def test_the_counter_counts_a_run_that_goes_ahead(target, dataset, tmp_path):
    run(dataset, tmp_path / "out", probes=("detection",))
    assert target.calls > 0
