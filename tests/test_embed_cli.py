"""``audit embed`` on a dataset the test makes from a packaged real face, and the dlib target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from audit.cli import cli


@pytest.fixture()
def face_dataset(tmp_path, astronaut):
    """Four variants of a real face, two groups, and a manifest."""
    root = tmp_path / "faces"
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(4):
        face = np.clip(astronaut.astype(int) + 8 * i, 0, 255).astype(np.uint8)
        if i % 2:
            face = face[:, ::-1]
        Image.fromarray(face).save(root / "img" / f"face{i}.png")
        rows.append({"path": f"img/face{i}.png", "identity": f"p{i}", "gender": "Female" if i < 2 else "Male"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


@pytest.mark.parametrize("suffix", [".npz", ".csv", ".parquet"])
def test_embed_exports_vectors_keyed_by_image_id(face_dataset, tmp_path, suffix):
    out = tmp_path / f"vectors{suffix}"
    result = CliRunner().invoke(cli, ["embed", "--dataset", str(face_dataset), "--target-option", "engine=dlib",
                                      "--cache", str(tmp_path / "cache.sqlite"), "--workers", "1",
                                      "--export", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "4 computed, 0 from the cache" in result.output
    assert "Detections per group" in result.output and "Female" in result.output
    if suffix == ".npz":
        data = np.load(out)
        ids, vectors = list(data["image_id"]), data["vectors"]
    else:
        frame = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
        ids, vectors = list(frame["image_id"]), frame.drop(columns="image_id").to_numpy()
    assert ids == [f"img/face{i}.png" for i in range(4)]
    assert vectors.shape == (4, 128)
    assert out.stat().st_mode & 0o777 == 0o600     # embeddings are biometric data: the owner's alone
    # the same person, brighter or mirrored: dlib's descriptors stay under its 0.6 threshold
    assert np.linalg.norm(vectors[0] - vectors[1:], axis=1).max() < 0.6


def test_second_embed_comes_from_the_cache(face_dataset, tmp_path):
    args = ["embed", "--dataset", str(face_dataset), "--target-option", "engine=dlib", "--workers", "1",
            "--cache", str(tmp_path / "cache.sqlite"), "-q"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "0 computed, 4 from the cache" in again.output


def test_no_cache_neither_reads_nor_writes(face_dataset, tmp_path):
    cache = tmp_path / "cache.sqlite"
    result = CliRunner().invoke(cli, ["embed", "--dataset", str(face_dataset), "--target-option", "engine=dlib",
                                      "--workers", "1", "--cache", str(cache), "--no-cache", "-q"])
    assert result.exit_code == 0, result.output
    assert not cache.exists()


def test_unknown_export_format_is_a_usage_error(face_dataset, tmp_path):
    result = CliRunner().invoke(cli, ["embed", "--dataset", str(face_dataset), "--export", str(tmp_path / "v.txt")])
    assert result.exit_code == 2
    assert "unknown extension '.txt'; use one of .npz, .csv, .parquet" in result.output


def test_dlib_engines_agree_on_a_real_face(astronaut):
    from audit.faces import FaceAligner
    from audit.targets.dlib_target import DlibTarget

    chip = FaceAligner().align(astronaut).chips[150]
    reference = DlibTarget(engine="dlib")
    auto = DlibTarget()
    assert auto.engine == "torch"                      # the self-check passed
    assert auto.details()["self_check"]["passed"] is True
    a, b = reference.embed([chip])[0].vector, auto.embed([chip])[0].vector
    assert a.shape == (128,) and np.abs(a - b).max() < 1e-4
    assert reference.fingerprint() == auto.fingerprint()   # same vectors: one cache


def test_every_command_has_help_with_an_example():
    for name, command in cli.commands.items():
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        if hasattr(command, "commands"):
            for sub in command.commands:
                sub_help = CliRunner().invoke(cli, [name, sub, "--help"]).output
                assert "audit " in sub_help.split("xample", 1)[-1], f"{name} {sub}"
        else:
            assert "xample" in result.output, name


def test_a_face_replaced_with_the_same_size_and_modification_time_is_embedded_again(tmp_path, astronaut):
    """BMP: another face of the same size has the same byte count; the mtime is set back as ``cp -p`` does."""
    import os

    root = tmp_path / "faces"
    (root / "img").mkdir(parents=True)
    variants = [np.clip(astronaut.astype(int) + 8 * i, 0, 255).astype(np.uint8) for i in range(5)]
    for i in range(4):
        Image.fromarray(variants[i] if i % 2 == 0 else variants[i][:, ::-1]).save(root / "img" / f"face{i}.bmp")
    pd.DataFrame({"path": [f"img/face{i}.bmp" for i in range(4)]}).to_csv(root / "manifest.csv", index=False)
    args = ["embed", "--dataset", str(root), "--target-option", "engine=dlib", "--cache", str(tmp_path / "c.sqlite"),
            "--workers", "1", "-q"]
    first = CliRunner().invoke(cli, [*args, "--export", str(tmp_path / "first.csv")])
    assert "4 computed, 0 from the cache" in first.output, first.output
    face0 = root / "img" / "face0.bmp"
    before = os.stat(face0)
    Image.fromarray(variants[4][::-1]).save(face0)      # another picture: upside down, brighter
    os.utime(face0, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (os.stat(face0).st_size, os.stat(face0).st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    second = CliRunner().invoke(cli, [*args, "--export", str(tmp_path / "second.csv")])
    assert second.exit_code == 0, second.output
    assert "1 computed, 3 from the cache" in second.output   # before: 0 computed, 4 from the cache
