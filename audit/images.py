"""Reading images into RGB uint8 arrays, the one format every layer uses."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Decompression-bomb guard: larger images are refused, not decoded.
MAX_PIXELS = 40_000_000


class ImageReadError(ValueError):
    """An image file that cannot be decoded; recorded per item, never fatal."""


def content_hash(data: bytes) -> str:
    """SHA-256 of the file's bytes: the cache key of everything derived from it."""
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Decode bytes to an H x W x 3 uint8 RGB array, honouring EXIF orientation."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageReadError(f"{name}: {img.width}x{img.height} is larger than "
                                     f"{MAX_PIXELS} pixels")
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageReadError(f"{name}: not a readable image ({exc})") from exc


def read_image(path: Path) -> tuple[np.ndarray, str]:
    """Read a file once, returning the decoded image and the hash of its bytes."""
    data = Path(path).read_bytes()
    return decode_image(data, name=str(path)), content_hash(data)


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
