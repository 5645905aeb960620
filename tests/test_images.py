"""Decoding every kind of image file a dataset holds, and refusing the hostile ones per image."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from audit.images import ImageReadError, decode_image, read_image
from tests.corpus import images as corpus


def _grey(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).convert("L")).astype(float)


@pytest.mark.parametrize("make", [corpus.png_16bit_grey, corpus.png_16bit_rgb])
def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped_to_white(make):
    decoded = decode_image(make())
    reference = _grey(corpus.face())
    assert decoded.dtype == np.uint8 and decoded.shape == (*reference.shape, 3)
    assert abs(_grey(decoded).mean() - reference.mean()) < 1.0
    assert (decoded == 255).mean() < 0.05


def test_a_16_bit_face_is_found_by_the_detector():
    from audit.faces import FaceAligner

    face = FaceAligner().align(decode_image(corpus.png_16bit_grey()), sizes=(150,))
    assert face.status == "ok", face.reason


def test_transparent_pixels_are_laid_over_white():
    decoded = decode_image(corpus.png_alpha())
    assert (decoded[:, :12] == 255).all() and (decoded[:, -12:] == 255).all()
    np.testing.assert_array_equal(decoded[:, 20:-20], corpus.face()[:, 20:-20])


@pytest.mark.parametrize("make, tolerance", [(corpus.cmyk_jpeg, 6.0), (corpus.greyscale, 0.0),
                                             (corpus.webp, 6.0), (corpus.gif, 6.0)])
def test_other_colour_models_and_formats_decode_to_the_same_face(make, tolerance):
    decoded = decode_image(make())
    assert decoded.shape == corpus.face().shape
    assert np.abs(_grey(decoded) - _grey(corpus.face())).mean() <= tolerance + 1.0


def test_exif_orientation_turns_the_face_upright():
    decoded = decode_image(corpus.exif_rotated())
    assert np.abs(_grey(decoded) - _grey(corpus.face())).mean() < 6.0


@pytest.mark.parametrize("make, expected", [
    (corpus.huge_png, "the image is 400,000,000 pixels, more than the limit of 40,000,000 (a guard against "
                      "decompression bombs); downscale it or leave it out"),
    (corpus.large_png, "the image is 12000x12000 pixels, more than the limit of 40,000,000 (a guard against "
                       "decompression bombs); downscale it or leave it out"),
])
def test_a_decompression_bomb_is_refused_with_the_tools_own_reason(make, expected):
    with pytest.raises(ImageReadError) as caught:
        decode_image(make(), name="bomb.png")
    assert str(caught.value) == f"bomb.png: {expected}"


def test_pillows_bomb_warning_never_reaches_the_terminal(tmp_path):
    path = tmp_path / "large.png"
    path.write_bytes(corpus.large_png())
    code = ("import sys\nfrom audit.images import ImageReadError, read_image\n"
            "try:\n    read_image(sys.argv[1])\nexcept ImageReadError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "more than the limit" in done.stdout
    assert done.stderr == ""


@pytest.mark.parametrize("make, reason", [
    (corpus.truncated_jpeg, "not a readable image (OSError: image file is truncated"),
    (corpus.text_as_jpg, "not a readable image (not one of the image formats the tool reads"),
    (corpus.zero_bytes, "the file is empty (0 bytes)"),
])
def test_broken_files_are_a_per_image_reason(make, reason):
    with pytest.raises(ImageReadError, match="^x.jpg: " + reason.replace("(", r"\(").replace(")", r"\)")):
        decode_image(make(), name="x.jpg")


def test_a_named_pipe_is_refused_without_being_opened_for_a_blocking_read(tmp_path):
    fifo = tmp_path / "face.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError, match="not a regular file \\(a named pipe\\); it was not opened"):
        read_image(fifo)   # before: blocked forever waiting for a writer


def test_a_truncated_image_stays_an_error_after_weasyprint_is_imported(monkeypatch):
    """WeasyPrint switches Pillow to filling truncated images with grey, for the whole process."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageReadError, match="image file is truncated"):
        decode_image(corpus.truncated_jpeg(), name="x.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


@pytest.fixture
def ghostscript_spy(tmp_path, monkeypatch):
    """A ``gs`` first on PATH that only logs its calls: Pillow's EPS plugin would run it."""
    from PIL import EpsImagePlugin

    log = tmp_path / "gs-calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    spy = bin_dir / "gs"
    spy.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit 1\n')
    spy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)   # Pillow remembers where it found gs
    return log


@pytest.mark.parametrize("make", [corpus.eps, corpus.ppm, corpus.ico], ids=["eps", "ppm", "ico"])
def test_a_format_the_tool_does_not_read_is_refused_unread(make, ghostscript_spy):
    with pytest.raises(ImageReadError, match=r"^face.jpg: not a readable image \(not one of the image formats "
                                             r"the tool reads \(JPEG, PNG, GIF, BMP, WebP or TIFF\)"):
        decode_image(make(), name="face.jpg")
    assert not ghostscript_spy.exists()


def test_a_postscript_file_named_jpg_in_a_dataset_is_excluded_and_ghostscript_never_runs(tmp_path,
                                                                                          ghostscript_spy):
    from audit.data.manifest import load_dataset

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "good.png").write_bytes(corpus.rgb_png(1))
    (tmp_path / "ds" / "face.jpg").write_bytes(corpus.eps())
    (tmp_path / "ds" / "manifest.csv").write_text("path,identity\ngood.png,a\nface.jpg,b\n")
    dataset = load_dataset(tmp_path / "ds")
    assert dataset.table["path"].tolist() == ["good.png"]
    assert dataset.exclusions["reason"].tolist() == [
        "not an image: it is not one of the image formats the tool reads (JPEG, PNG, GIF, BMP, WebP or TIFF)"]
    with pytest.raises(ImageReadError):
        read_image(tmp_path / "ds" / "face.jpg")
    assert not ghostscript_spy.exists()


@pytest.mark.parametrize("make", [corpus.jpeg, corpus.webp, corpus.gif, corpus.rgb_png, corpus.cmyk_jpeg])
def test_every_documented_format_still_decodes(make):
    assert decode_image(make()).shape[2] == 3
