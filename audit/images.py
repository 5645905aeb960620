"""Reading images into RGB uint8 arrays, the one format every layer uses.

Only the formats face datasets come in are opened (:data:`FORMATS`): Pillow
knows dozens more, and some of them hand the file to another program (an
EPS file goes to Ghostscript, whatever its name says), so a PostScript file
called ``face.jpg`` is refused from its first bytes, never interpreted.

Whatever the file holds, the detector must see the face as a person would:
a 16-bit PNG scaled down to 8 bits (not clipped to white), transparency
laid over white, CMYK and palettes converted, the EXIF orientation applied.
A file that cannot be read is an :class:`ImageReadError` with a reason,
recorded for that image alone: a hostile or broken file never stops a run.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

#: The image formats the tool opens (Pillow's names; a phone's multi-picture JPEG opens as JPEG);
#: any other file is refused unread.
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
#: The same, for people: what a refused file's reason lists.
FORMATS_TEXT = "JPEG, PNG, GIF, BMP, WebP or TIFF"
#: Decompression-bomb guard: larger images are refused, not decoded.
MAX_PIXELS = 40_000_000
#: What transparent pixels are laid over (a neutral studio background).
BACKGROUND_RGB = (255, 255, 255)

REASON_TOO_LARGE = ("{name}: the image is {size} pixels, more than the limit of {limit:,} (a guard "
                    "against decompression bombs); downscale it or leave it out")
REASON_UNREADABLE = "{name}: not a readable image ({error})"
REASON_NOT_REGULAR = "{name}: not a regular file ({kind}); it was not opened"
REASON_EMPTY = "{name}: the file is empty (0 bytes)"
NOT_A_FORMAT_READ = f"not one of the image formats the tool reads ({FORMATS_TEXT}); convert it to one"

_FILE_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


class ImageReadError(ValueError):
    """An image file that cannot be decoded; recorded per item, never fatal."""


def content_hash(data: bytes) -> str:
    """SHA-256 of the file's bytes: the cache key of everything derived from it."""
    return hashlib.sha256(data).hexdigest()


def file_kind(mode: int) -> str | None:
    """What a non-regular file is ("a named pipe", ...), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")


def read_regular_file(path: str | os.PathLike) -> bytes:
    """The bytes of a regular file; anything else (a FIFO, a device) is refused without blocking.

    Opening a named pipe for reading waits for a writer, forever: the file
    is opened non-blocking and checked on its descriptor before any read.
    Raises :class:`ImageReadError` for a non-regular file, ``OSError`` as
    ``open`` does otherwise.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        kind = file_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise ImageReadError(REASON_NOT_REGULAR.format(name=os.fspath(path), kind=kind))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


@contextmanager
def _truncated_images_refused() -> Iterator[None]:
    """A truncated file is an error, whatever another library set: WeasyPrint, once imported,
    makes Pillow fill the missing part of every truncated image with grey, process-wide.
    (Decoding runs in one thread per process, so the switch is not raced.)"""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _too_large_reason(name: str, exc: Exception | None, img: Image.Image | None) -> str:
    if img is not None:
        size = f"{img.width}x{img.height}"
    else:  # Pillow refused before we saw the size; its message carries the count
        match = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(match.group(1)):,}" if match else "more than"
    return REASON_TOO_LARGE.format(name=name, size=size, limit=MAX_PIXELS)


def _to_8_bits(img: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit integer or float grey image to 8 bits ("L"), not clip it.

    Pillow's ``convert("RGB")`` clips such values at 255: a 16-bit face
    becomes a white square, which a detector rightly finds no face in.
    """
    values = np.asarray(img)
    if img.mode.startswith("I;16") or img.mode == "I":
        values = values.astype(np.int64)
        top = int(values.max()) if values.size else 0
        if img.mode == "I" and top <= 255:
            scaled = values
        else:
            scaled = np.clip(values, 0, 65535) >> 8
    else:  # "F": 0..1 floats, or 0..255
        values = np.nan_to_num(values.astype(np.float64))
        top = float(values.max()) if values.size else 0.0
        scaled = values * 255.0 if top <= 1.0 else values
        scaled = np.rint(scaled)
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        img = _to_8_bits(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND_RGB, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def open_image(data: bytes, formats: tuple[str, ...] = FORMATS) -> Image.Image:
    """Pillow's lazy image over ``data``, tried only as one of ``formats``.

    Raises ``UnidentifiedImageError`` for anything else (PostScript, PDF,
    SVG-like text, the many rare formats Pillow also reads), so no other
    program and no rarely used decoder ever sees a dataset's file.
    """
    return Image.open(io.BytesIO(data), formats=list(formats))


def decode_image(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Decode bytes to an H x W x 3 uint8 RGB array, honouring EXIF orientation.

    The size is checked from the header, before any pixel is decoded.
    """
    if not data:
        raise ImageReadError(REASON_EMPTY.format(name=name))
    try:
        # Pillow's own guard warns above ~89 MP and refuses above ~179 MP; ours
        # refuses anything above MAX_PIXELS first, with the tool's own
        # per-image reason, so its warning would only be noise on the terminal.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = open_image(data)
        with img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageReadError(_too_large_reason(name, None, img))
            with _truncated_images_refused():
                img.load()
            try:
                oriented = ImageOps.exif_transpose(img)
            except Exception:  # a broken EXIF block: the pixels are still good, unrotated
                oriented = img
            return _to_rgb(oriented)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(_too_large_reason(name, exc, None)) from exc
    except MemoryError as exc:
        raise ImageReadError(REASON_UNREADABLE.format(name=name, error="too large to decode in memory")) from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(REASON_UNREADABLE.format(name=name, error=NOT_A_FORMAT_READ)) from exc
    except Exception as exc:  # Pillow's decoders raise many types on broken or hostile files
        raise ImageReadError(REASON_UNREADABLE.format(name=name, error=f"{type(exc).__name__}: {exc}")) from exc


def read_image(path: Path) -> tuple[np.ndarray, str]:
    """Read a file once, returning the decoded image and the hash of its bytes."""
    data = read_regular_file(path)
    return decode_image(data, name=str(path)), content_hash(data)


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with open_image(data, ("PNG",)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
