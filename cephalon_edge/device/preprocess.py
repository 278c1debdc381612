"""Turning raw inputs into model inputs, with numpy and Pillow only (usable on the device side).

``preprocessing`` is the dict stored in the spec and the manifest: ``value_range`` of the raw
input, optional ``resize``, then ``(x - mean) / std`` per channel.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cephalon_edge.errors import DataError
from cephalon_edge.fsutil import regular_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
MAX_IMAGE_PIXELS = 50_000_000  # an input image larger than this is refused before it is decoded


def resize_image(channels_first: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (C, H, W) float image to (C, *size)."""
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    if channels_first.shape[1:] == (h, w):
        return channels_first.astype(np.float32)
    planes = [np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
              for c in channels_first]
    return np.stack(planes).astype(np.float32)


def normalize(x: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """(x - mean) / std with per-channel (or single) statistics; x is (N, C, ...)."""
    mean = np.asarray(preprocessing.get("mean", [0.0]), dtype=np.float32)
    std = np.asarray(preprocessing.get("std", [1.0]), dtype=np.float32)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return ((x - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32)


def load_image(path: Path, shape: tuple[int, ...], preprocessing: Mapping[str, Any],
               seen: set[tuple[int, int, int]] | None = None) -> np.ndarray:
    """Read an image file into one model-ready sample of ``shape`` (C, H, W); ``seen``
    collects each file's own (channels, height, width) before conversion."""
    from PIL import Image, UnidentifiedImageError

    if len(shape) != 3 or shape[1] * shape[2] > MAX_IMAGE_PIXELS:
        raise DataError(f"{path}: the package's image input {list(shape)} is larger than {MAX_IMAGE_PIXELS} pixels")
    regular_file(Path(path), "image", DataError)  # a FIFO would block the read forever
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise DataError(f"{path}: {img.width}x{img.height} pixels; images over {MAX_IMAGE_PIXELS} pixels "
                                "are refused", hint="resize the image first")
            if seen is not None:
                seen.add((len(img.getbands()), img.height, img.width))
            img = img.convert("L" if shape[0] == 1 else "RGB")
            arr = np.asarray(img, dtype=np.float32)
    except FileNotFoundError:
        raise DataError(f"input not found: {path}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: refused as a decompression bomb ({exc})") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    lo, hi = preprocessing.get("value_range", (0.0, 1.0))
    arr = lo + arr / 255.0 * (hi - lo)
    arr = resize_image(arr, tuple(shape[1:]))
    return normalize(arr[None], preprocessing)[0]
