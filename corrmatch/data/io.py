"""Reading split files, images and masks (DESIGN.md §4).

Split files hold one sample a line, ``"<image> <mask>"``, both relative to the dataset root; a line
holding a tab separates the two by the tab instead, so that paths may contain spaces. Unlabeled lists
may omit the mask. Images of any mode (grayscale, RGBA, palette, 16-bit) are read as 8-bit RGB;
masks are single-channel class indices (palette PNGs read as indices, 16-bit masks as indices).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from corrmatch.errors import DataError

__all__ = [
    "DataError",
    "DataWarning",
    "SplitEntry",
    "parse_split",
    "read_image",
    "read_mask",
    "MASK_MODES",
]

# PIL modes accepted for masks: 8-bit grey, palette (read as indices), 16/32-bit integer.
MASK_MODES = frozenset({"L", "P", "I;16", "I;16B", "I;16L", "I"})
_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # PIL, like the reference, ignores EXIF


class DataWarning(UserWarning):
    """A suspicious but usable dataset input (e.g. a sample both labeled and unlabeled)."""


class SplitEntry(NamedTuple):
    """One split-file line: paths relative to the root (``mask`` may be None for unlabeled data)."""

    image: str
    mask: str | None
    source: str  # "file:line", for messages


def parse_split(path: str | os.PathLike, require_mask: bool = True) -> list[SplitEntry]:
    """Parses a split file (§4); raises :class:`DataError` naming the file and line for bad input.

    Blank lines are skipped. A line has two fields, ``<image> <mask>``, or one field when
    ``require_mask`` is False (unlabeled data without a mask file). The fields are separated by
    whitespace, or by a tab when the line holds one (paths with spaces).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file '{path}' does not exist")
    entries = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = [field.strip() for field in line.split("\t")] if "\t" in line else line.split()
            fields = [field for field in fields if field]
            if not fields:
                continue
            if len(fields) > 2 or (require_mask and len(fields) != 2):
                expected = "'<image> <mask>'" if require_mask else "'<image> [<mask>]'"
                raise DataError(f"{path}:{number}: malformed line {line.strip()!r}, expected {expected}")
            entries.append(SplitEntry(fields[0], fields[1] if len(fields) == 2 else None, f"{path}:{number}"))
    if not entries:
        raise DataError(f"split file '{path}' is empty")
    return entries


def _rgb_with_pil(path: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I;16") or image.mode == "I":
                array = np.asarray(image).astype(np.uint32) >> 8
                return np.repeat(np.clip(array, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DataError(f"cannot read image '{path}': {error}") from error


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image as uint8 RGB (H, W, 3): OpenCV first (fast), PIL for formats OpenCV lacks.

    Grayscale is replicated, alpha dropped, palettes expanded, 16-bit scaled to 8-bit (``>> 8``);
    EXIF orientation is ignored, as PIL does in the reference.
    """
    path = os.fspath(path)
    image = cv2.imread(path, _IMREAD_FLAGS)
    if image is None:
        return _rgb_with_pil(path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Reads a single-channel class-index mask as uint8 (H, W); values above 255 become 255."""
    path = os.fspath(path)
    try:
        with Image.open(path) as image:
            if image.mode not in MASK_MODES:
                raise DataError(f"mask '{path}' has mode {image.mode}, expected a single-channel index image")
            array = np.array(image)
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"cannot read mask '{path}': {error}") from error
    if array.dtype != np.uint8:
        array = np.minimum(array, 255).astype(np.uint8)
    return array
