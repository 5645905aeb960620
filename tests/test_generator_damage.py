"""A damaged generator folder is refused when it is read, naming the file, what is wrong and the fix.

Every file of the folder is damaged in turn (the checkpoint, generator.json,
the vectors, the training set, the history): each must be an InputError
("generator folder 'GEN' is damaged (...); retrain it with 'audit
generator train ...'"), never a KeyError, ValueError, AttributeError or
pandas error from deep inside a run.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from audit.errors import InputError
from probes.inversion.artifact import (INFO_FILE, TRAINING_SET_FILE, TRAINING_VECTORS_FILE, check_target,
                                       read_artifact)
from probes.inversion.training import BEST_CHECKPOINT, HISTORY_FILE, LAST_CHECKPOINT
from tests.fake_targets import DIM
from tests.test_generator_artifact import make


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clean") / "gen"
    make(folder)
    return folder


def _checkpoint(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / BEST_CHECKPOINT
        ckpt = torch.load(path, weights_only=True)
        replaced = change(ckpt)
        torch.save(ckpt if replaced is None else replaced, path)
    return damage


def _info(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / INFO_FILE
        info = json.loads(path.read_text())
        replaced = change(info)
        path.write_text(replaced if isinstance(replaced, str) else json.dumps(info))
    return damage


def _write(name: str, data: str | bytes) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        (folder / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return damage


def _vectors(array) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        with open(folder / TRAINING_VECTORS_FILE, "wb") as fh:
            np.save(fh, array, allow_pickle=True)
    return damage


def _npz(folder: Path) -> None:
    with open(folder / TRAINING_VECTORS_FILE, "wb") as fh:
        np.savez(fh, a=np.zeros((30, DIM)))


def _csv(change: Callable[[str], str | bytes]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / TRAINING_SET_FILE
        text = change(path.read_text())
        path.write_bytes(text.encode() if isinstance(text, str) else text)
    return damage


def _set_settings(**values):
    return _info(lambda info: info["settings"].update(values))


DEEP = "[" * 100_000 + "]" * 100_000

DAMAGES = {
    # the checkpoint
    "checkpoint-without-generator-key": (_checkpoint(lambda c: c.pop("generator")),
                                         "best.pt: checkpoint .* has no 'generator' key"),
    "checkpoint-negative-channels": (_checkpoint(lambda c: c["generator"].update(base_channels=-16)),
                                     "best.pt: .*base_channels=-16, must be an integer >= 8"),
    "checkpoint-huge-channels": (_checkpoint(lambda c: c["generator"].update(base_channels=10**9)),
                                 "base_channels=1000000000, must be at most 4096"),
    "checkpoint-other-shape": (_checkpoint(lambda c: c["generator"].update(base_channels=32)),
                               "best.pt: .*its weights do not fit its network's settings"),
    "checkpoint-weights-not-a-dict": (_checkpoint(lambda c: c.update(model=[1, 2])),
                                      "best.pt: .*a list as its 'model' key"),
    "checkpoint-a-list": (_checkpoint(lambda c: [1, 2]), "best.pt: .*holds a list, not a checkpoint"),
    "checkpoint-garbage": (_write(BEST_CHECKPOINT, b"not a checkpoint"), "best.pt: checkpoint .* is damaged"),
    # generator.json
    "info-not-an-object": (_info(lambda info: "[1, 2]"), "generator.json holds list"),
    "info-without-target": (_info(lambda info: info.pop("target")), "generator.json: lacks 'target'"),
    "info-fingerprint-a-number": (_info(lambda info: info["target"].update(fingerprint=5)),
                                  "generator.json: target.fingerprint is int 5, not text"),
    "info-settings-not-an-object": (_info(lambda info: info.update(settings=[1])),
                                    "generator.json: settings is list"),
    "info-settings-negative-epochs": (_set_settings(epochs=-1), "generator.json: settings epochs=-1"),
    "info-settings-unknown-key": (_set_settings(colour="red"), "unexpected keyword argument 'colour'"),
    "info-training-set-a-string": (_info(lambda info: info.update(training_set="many")),
                                   "generator.json: training_set is str 'many', not an object"),
    "info-deeply-nested": (_write(INFO_FILE, DEEP), "generator.json nests JSON more than 100 levels deep"),
    "info-not-utf8": (_write(INFO_FILE, '{"format": "caf\u00e9"}'.encode("latin-1")), "is not UTF-8 text"),
    # the vectors
    "vectors-object-dtype": (_vectors(np.array([{"a": 1}] * 30, dtype=object)),
                             "training_vectors.npy: not a numeric .npy array .*allow_pickle=False"),
    "vectors-one-dimensional": (_vectors(np.zeros(30, np.float16)), r"of shape \(30,\)"),
    "vectors-text": (_vectors(np.array(["a"] * 30)), "holds a <U1 array"),
    "vectors-an-archive": (_npz, "is an archive of arrays"),
    "vectors-garbage": (_write(TRAINING_VECTORS_FILE, b"\x93NUMPY garbage"), "not a numeric .npy array"),
    "vectors-truncated": (lambda f: (f / TRAINING_VECTORS_FILE).write_bytes((f / TRAINING_VECTORS_FILE)
                                                                          .read_bytes()[:200]),
                          "not a numeric .npy array"),
    "vectors-other-dimension": (_vectors(np.zeros((30, DIM + 3), np.float16)),
                                f"holds {DIM + 3}-dimensional vectors, best.pt a network for {DIM}"),
    "vectors-other-count": (_vectors(np.zeros((29, DIM), np.float16)), "has 30 rows but training_vectors.npy 29"),
    # the training set
    "training-set-empty": (_write(TRAINING_SET_FILE, b""), "training_set.csv: No columns to parse"),
    "training-set-without-identity": (_csv(lambda t: t.replace("identity", "person", 1)),
                                      "training_set.csv has no column 'identity'"),
    "training-set-bad-flag": (_csv(lambda t: t.replace(",True,", ",maybe,", 1)),
                              "training_set.csv line 2: has_identities is 'maybe'"),
    "training-set-not-utf8": (_csv(lambda t: t.replace("p1,", "p\u00e9,", 1).encode("latin-1")),
                              "training_set.csv: 'utf-8' codec can't decode"),
    # the history
    "history-deeply-nested": (_write(HISTORY_FILE, DEEP), "history.json nests JSON more than 100 levels"),
    "history-not-an-object": (_write(HISTORY_FILE, "[]"), "history.json holds list"),
    "history-epoch-text": (_write(HISTORY_FILE, '{"history": [{"epoch": "one"}]}'),
                           r"history.json: history\[0\].epoch is str 'one', not a whole number"),
    "history-entries-not-objects": (_write(HISTORY_FILE, '{"history": [1]}'), r"history\[0\] is int 1"),
}


@pytest.mark.parametrize("name", list(DAMAGES))
def test_a_damaged_file_is_named_with_the_fix(clean, tmp_path, name):
    damage, words = DAMAGES[name]
    folder = tmp_path / "gen"
    shutil.copytree(clean, folder)
    damage(folder)
    with pytest.raises(InputError) as caught:
        read_artifact(folder)
    message = " ".join(str(caught.value).split())
    assert str(folder) in message
    assert re.search(words, message), message
    assert "retrain it with 'audit generator train" in message


def test_the_clean_folder_reads(clean):
    artifact = read_artifact(clean)
    assert artifact.model().embedding_dim == DIM and len(artifact.history()) == 2


def test_a_generator_for_vectors_of_another_size_is_refused(clean):
    artifact = read_artifact(clean)
    check_target(artifact, fingerprint="projection-1", preprocessing="faces-v1:test", dimension=DIM)
    with pytest.raises(InputError, match=f"takes {DIM}-dimensional embeddings, the target's have 512"):
        check_target(artifact, fingerprint="projection-1", preprocessing="faces-v1:test", dimension=512)


def test_a_damaged_cached_generator_says_to_delete_it(tmp_path):
    cache = tmp_path / "cache.sqlite"
    first = make(None, cache)
    (first.folder / TRAINING_SET_FILE).write_bytes(b"")
    with pytest.raises(InputError, match=r"is damaged \(training_set.csv: .*\); delete .* and run the same "
                                         "command again to train it anew"):
        make(None, cache)


def test_a_damaged_last_checkpoint_is_an_error_naming_it(tmp_path):
    folder = tmp_path / "gen"
    make(folder)
    (folder / INFO_FILE).unlink()             # unfinished: the next training resumes from last.pt
    ckpt = torch.load(folder / LAST_CHECKPOINT, weights_only=True)
    ckpt["history"] = '{"not": "a list"}'
    torch.save(ckpt, folder / LAST_CHECKPOINT)
    with pytest.raises(InputError, match=r"last.pt' is damaged \(ValueError: its training history is not a "
                                         r"list of epochs\); delete it"):
        make(folder)
    ckpt.pop("config")
    torch.save(ckpt, folder / LAST_CHECKPOINT)
    with pytest.raises(InputError, match=r"last.pt' is damaged \(KeyError: 'config'\)"):
        make(folder)


def test_generator_train_reports_a_finished_folder_whose_figures_are_null(clean, tmp_path, monkeypatch):
    """A generator reused from --out whose validation distance was NaN (null in generator.json)."""
    from click.testing import CliRunner

    from audit.cli import cli
    from tests.corpus.datasets import face_dataset

    folder = tmp_path / "gen"
    shutil.copytree(clean, folder)
    _info(lambda info: info.update(best_val_mean_distance=None, training_set=None))(folder)
    monkeypatch.setattr("audit.generator_stage.train_generator_artifact", lambda **kw: read_artifact(folder))
    dataset = face_dataset(tmp_path / "faces", people=2, per_person=1)
    result = CliRunner().invoke(cli, ["generator", "train", "--dataset", str(dataset), "--out", str(folder), "-q"])
    assert result.exit_code == 0, result.output
    assert "validation distance undefined" in result.output and "dropped: none" in result.output
