"""Image files, good and bad, as bytes: each a case a real dataset holds somewhere.

Faces come from ``skimage.data.astronaut()`` (a real face, cropped so that
small files stay quick to detect).  Every generator returns the file's
bytes; :data:`IMAGE_CASES` lists them with what the embed stage must make
of each: ``ok`` (the face is found), ``no_face`` or ``error`` (a per-image
reason), or ``excluded`` (refused when the dataset is loaded, with a
reason).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image


@lru_cache(maxsize=1)
def face(size: int = 200) -> np.ndarray:
    """The astronaut's face, square, ``size`` pixels: RGB uint8."""
    from skimage.data import astronaut

    crop = astronaut()[0:240, 110:350]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC))


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, *, colour_type: int, bit_depth: int, rows: bytes) -> bytes:
    """A PNG written by hand: any size, bit depth and colour type Pillow may not write itself."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


def rgb_png(variant: int = 0) -> bytes:
    """The face, a little brighter or darker (and mirrored) per ``variant``: distinct files, one person.

    The variant is also written into the corner pixel, so that every variant's
    bytes differ while the face stays within what the detector finds.
    """
    pixels = np.clip(face().astype(int) + 4 * (variant % 9 - 4), 0, 255).astype(np.uint8)
    if (variant // 9) % 2:
        pixels = pixels[:, ::-1].copy()
    pixels[0, 0] = (variant % 256, variant // 256 % 256, 7)
    return _save(Image.fromarray(pixels), "PNG")


def bmp(variant: int = 0) -> bytes:
    """:func:`rgb_png`'s face as an uncompressed BMP: every variant has the same byte count."""
    with Image.open(io.BytesIO(rgb_png(variant))) as img:
        return _save(img.convert("RGB"), "BMP")


def jpeg() -> bytes:
    return _save(Image.fromarray(face()), "JPEG", quality=92)


def png_16bit_grey() -> bytes:
    """16-bit greyscale (Pillow mode I;16): clipped to 8 bits it is a white square."""
    grey = np.asarray(Image.fromarray(face()).convert("L")).astype(np.uint16) * 257
    rows = b"".join(b"\x00" + grey[y].astype(">u2").tobytes() for y in range(grey.shape[0]))
    return raw_png(grey.shape[1], grey.shape[0], colour_type=0, bit_depth=16, rows=rows)


def png_16bit_rgb() -> bytes:
    pixels = face().astype(np.uint16) * 257
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(pixels.shape[0]))
    return raw_png(pixels.shape[1], pixels.shape[0], colour_type=2, bit_depth=16, rows=rows)


def png_alpha() -> bytes:
    """RGBA whose background is transparent (and black underneath)."""
    pixels = face().copy()
    alpha = np.full(pixels.shape[:2], 255, np.uint8)
    alpha[:, :12] = 0
    alpha[:, -12:] = 0
    pixels[alpha == 0] = 0
    return _save(Image.fromarray(np.dstack([pixels, alpha]), "RGBA"), "PNG")


def greyscale() -> bytes:
    return _save(Image.fromarray(face()).convert("L"), "PNG")


def cmyk_jpeg() -> bytes:
    return _save(Image.fromarray(face()).convert("CMYK"), "JPEG", quality=92)


def exif_rotated() -> bytes:
    """The face stored lying on its side, with EXIF orientation 6 ("rotate 90 clockwise to view")."""
    stored = Image.fromarray(face()).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(stored, "JPEG", quality=92, exif=exif)


def webp() -> bytes:
    return _save(Image.fromarray(face()), "WEBP", quality=90)


def gif() -> bytes:
    return _save(Image.fromarray(face()).quantize(256), "GIF")


def one_pixel() -> bytes:
    return _save(Image.new("RGB", (1, 1), (128, 100, 90)), "PNG")


def huge_png() -> bytes:
    """A 20000 x 20000 header over almost no data: refused from its header, never decoded."""
    return raw_png(20000, 20000, colour_type=0, bit_depth=8, rows=b"\x00" * 64)


def large_png() -> bytes:
    """144 megapixels: above Pillow's warning threshold, below its hard limit."""
    return raw_png(12000, 12000, colour_type=0, bit_depth=8, rows=b"\x00" * 64)


def truncated_jpeg() -> bytes:
    data = jpeg()
    return data[: len(data) // 3]


def text_as_jpg() -> bytes:
    return b"this is a text file that was given the name of a photo\n" * 4


def zero_bytes() -> bytes:
    return b""


def garbage_after_png_signature() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def eps() -> bytes:
    """The face as Encapsulated PostScript: Pillow would hand it to Ghostscript to decode."""
    return _save(Image.fromarray(face()), "EPS")


def ppm() -> bytes:
    """A format Pillow reads but face datasets do not come in (nor does the tool read)."""
    return _save(Image.fromarray(face()), "PPM")


def ico() -> bytes:
    return _save(Image.fromarray(face()), "ICO", sizes=[(64, 64)])


@dataclass(frozen=True)
class ImageCase:
    name: str
    suffix: str
    make: Callable[[], bytes]
    #: ok, no_face, error (per-image record of the embed stage), excluded (on load)
    expected: str


IMAGE_CASES: tuple[ImageCase, ...] = (
    ImageCase("png16_grey", ".png", png_16bit_grey, "ok"),
    ImageCase("png16_rgb", ".png", png_16bit_rgb, "ok"),
    ImageCase("alpha", ".png", png_alpha, "ok"),
    ImageCase("greyscale", ".png", greyscale, "ok"),
    ImageCase("cmyk", ".jpg", cmyk_jpeg, "ok"),
    ImageCase("exif_rotated", ".jpg", exif_rotated, "ok"),
    ImageCase("webp", ".webp", webp, "ok"),
    ImageCase("gif", ".gif", gif, "ok"),
    ImageCase("one_pixel", ".png", one_pixel, "no_face"),
    ImageCase("huge", ".png", huge_png, "error"),
    ImageCase("large", ".png", large_png, "error"),
    ImageCase("truncated", ".jpg", truncated_jpeg, "error"),
    ImageCase("garbage_png", ".png", garbage_after_png_signature, "error"),
    ImageCase("text_as_jpg", ".jpg", text_as_jpg, "excluded"),
    ImageCase("zero_bytes", ".jpg", zero_bytes, "excluded"),
    # disguised formats: read by Pillow, not by the tool (EPS would run Ghostscript)
    ImageCase("eps_as_jpg", ".jpg", eps, "excluded"),
    ImageCase("ppm_as_png", ".png", ppm, "excluded"),
    ImageCase("ico_as_jpg", ".jpg", ico, "excluded"),
)
