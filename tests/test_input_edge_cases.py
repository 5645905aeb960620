"""Edge cases of real inputs, each once a traceback, a hang, a silent drop or a wrong answer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from audit.cli import cli
from tests.corpus.datasets import face_dataset, folders_source

RUN = ["--resamples", "100", "-q", "--workers", "1", "--target-option", "engine=dlib"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_CACHE", str(tmp_path / "cache.sqlite"))
    monkeypatch.setenv("AUDIT_LOG_DIR", str(tmp_path / "logs"))


@pytest.fixture()
def alarm():
    """Fail instead of hanging forever."""
    def timeout(signum, frame):
        raise TimeoutError("the command hung")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_fifo_named_jpg_in_an_import_source_is_skipped_with_a_reason(tmp_path, alarm):
    """Before: 'audit dataset import folders' blocked forever reading it."""
    src, attributes = folders_source(tmp_path / "src", people=2)
    os.mkfifo(src / "person0" / "pipe.jpg")
    result = invoke("dataset", "import", "folders", src, tmp_path / "dest", "--attributes", attributes)
    assert result.exit_code == 0, result.output
    assert ("person0/pipe.jpg: not a file: the path is a folder, a named pipe or a device (it was not opened)"
            in result.output)
    exclusions = (tmp_path / "dest" / "exclusions.csv").read_text()
    assert "person0/pipe.jpg" in exclusions


def test_describe_group_by_an_all_blank_column_is_an_error_like_run(tmp_path):
    """Before: describe exited 0 where run refused."""
    root = face_dataset(tmp_path / "ds", people=2, per_person=1)
    manifest = root / "manifest.csv"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0]] + [",".join(line.split(",")[:2] + ["", "F"]) for line in lines[1:]])
                        + "\n")
    described = invoke("dataset", "describe", root, "--group-by", "race")
    run = invoke("run", "--dataset", root, "--out", tmp_path / "out", "--group-by", "race", *RUN)
    assert described.exit_code == run.exit_code == 2
    expected = (f"Error: The attribute 'race' is blank in every row of {str(manifest.resolve())!r}, so it forms "
                "no group: fill it in, or group by another of: gender.\n")
    assert described.output == expected
    assert run.output == expected


def test_a_policy_with_a_byte_order_mark_is_accepted(tmp_path):
    """Before: refused as invalid TOML at line 1 column 1, without saying why."""
    from tests.test_gate_cli import write_results

    write_results(tmp_path / "run")
    policy = tmp_path / "policy.toml"
    policy.write_bytes(b"\xef\xbb\xbf" + b'[[rule]]\nid = "gap"\nmetric = "detection.failure_rate"\n'
                                       b'disparity = "gap"\nmax = 0.5\n')
    result = invoke("gate", tmp_path / "run", "--policy", policy)
    assert result.exit_code == 0, result.output


def test_a_results_file_with_a_byte_order_mark_is_accepted(tmp_path):
    from tests.test_gate_cli import write_results

    path = write_results(tmp_path / "run")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nid = "gap"\nmetric = "detection.failure_rate"\ndisparity = "gap"\nmax = 0.5\n')
    assert invoke("gate", tmp_path / "run", "--policy", policy).exit_code == 0


def test_a_garbage_checkpoint_is_one_clear_line_without_torchs_unsafe_advice(tmp_path):
    from audit.errors import InputError
    from probes.inversion.training import load_checkpoint

    for name, data in (("garbage.pt", b"not a checkpoint" * 64), ("empty.pt", b"")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError) as caught:
            load_checkpoint(path)
        message = str(caught.value)
        assert message.startswith(f"checkpoint {str(path)!r} is damaged or not a checkpoint of this tool (")
        assert message.endswith("it is never loaded unsafely. Delete it to start the training afresh.")
        assert "weights_only" not in message and "\n" not in message


def test_a_garbage_checkpoint_prints_no_warning_either(tmp_path):
    import pickle

    path = tmp_path / "last.pt"
    path.write_bytes(pickle.dumps({"model": object()}, protocol=4))
    code = ("import sys\nfrom probes.inversion.training import load_checkpoint\n"
            "try:\n    load_checkpoint(sys.argv[1])\nexcept Exception as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert "is damaged or not a checkpoint of this tool" in done.stdout
    assert done.stderr == ""


def test_embed_names_the_images_in_which_no_face_was_found(tmp_path):
    """Before: 'embed' counted the no-face images but did not say which."""
    root = face_dataset(tmp_path / "ds", people=2, per_person=1)
    Image.fromarray(np.full((120, 120, 3), 90, np.uint8)).save(root / "img" / "wall.png")
    with open(root / "manifest.csv", "a") as fh:
        fh.write("img/wall.png,p9,A,M\n")
    failures = tmp_path / "not-yet" / "failures.csv"       # its folder is made
    result = invoke("embed", "--dataset", root, "--failures", failures, *RUN[2:])
    assert result.exit_code == 0, result.output
    assert "Images without a vector (1):\n  img/wall.png: no_face" in result.output
    assert failures.read_text().splitlines() == ["image_id,status,reason",
                                                 f"img/wall.png,no_face,{failures.read_text().split(',')[-1].strip()}"]


@pytest.mark.slow
def test_a_dataset_too_small_for_a_validation_split_is_audited(tmp_path):
    """Before: 15 people in 4 groups left the validation split empty and training crashed
    ('memoryview: cannot cast view with zeros in shape or strides')."""
    root = face_dataset(tmp_path / "ds", people=15, per_person=2)
    result = invoke("run", "--dataset", root, "--out", tmp_path / "out", "--probes", "inversion", "--epochs", "1",
                    "--generator-channels", "16", "--batch-size", "16", "--no-report", *RUN)
    assert result.exit_code == 0, result.output
    sizes = json.loads((tmp_path / "out" / "results.json").read_text())["probes"]["inversion"]["split_sizes"]
    assert "val" not in sizes and sizes["test"] > 0


def test_the_data_fingerprint_of_an_empty_split_is_defined():
    from probes.inversion.training import data_fingerprint

    empty = data_fingerprint(np.empty((0, 128), np.float32), np.empty((0, 64, 64, 3), np.uint8))
    assert empty != data_fingerprint(np.zeros((1, 128), np.float32), np.zeros((1, 64, 64, 3), np.uint8))


def test_balance_refuses_to_write_a_dataset_of_no_image(tmp_path):
    """Before: --allow-smaller wrote a manifest with a header and no rows, which nothing can load."""
    root = face_dataset(tmp_path / "ds", people=4, per_person=2)
    result = invoke("dataset", "balance", root, tmp_path / "bal", "--by", "race", "--per-group", "1",
                    "--allow-smaller")
    assert result.exit_code == 2, result.output
    assert result.output.endswith("can be chosen with --per-group 1: every person has at least 2 images and people "
                                  "are kept whole: use --per-group 2 or more.\n")
    assert not (tmp_path / "bal").exists()


@pytest.mark.parametrize("text", ["a = " + "[" * 5000 + "]" * 5000 + "\n"])
def test_a_policy_nested_too_deeply_is_an_input_error(tmp_path, text):
    from audit.errors import PolicyError
    from audit.policy import load_policy

    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match="is not valid TOML \\(nested too deeply\\)"):
        load_policy(path)


@pytest.mark.parametrize("change, words", [
    (lambda d: d["figures"].insert(0, "text"), "figures[0] is str 'text', not an object"),
    (lambda d: d["figures"][0].__setitem__("flags", "unstable"), "has flags 'unstable', not a list of names"),
])
def test_results_entries_that_are_not_objects_or_flag_lists_are_refused(tmp_path, change, words):
    from audit.errors import ResultsError
    from audit.results import load_results
    from tests.test_gate_cli import write_results

    path = write_results(tmp_path / "run")
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsError, match=words.replace("[", "\\[").replace("]", "\\]")):
        load_results(path)
