"""Dataset validation before training starts (DESIGN.md §4).

Every problem raises one :class:`~corrmatch.data.io.DataError` whose message is one line naming the split
file and line (or the root): missing root or split file, empty split, malformed line, missing listed file,
unidentifiable image or mask, mask that is not single-channel, image/mask size mismatch, mask values
outside ``[0, K) ∪ {255}`` (labeled and validation lists), and labeled masks that together hold fewer
than two classes. A sample both labeled and unlabeled gives a :class:`~corrmatch.data.io.DataWarning`.

Image sizes come from file headers (PIL opens lazily), so checking 10k files takes seconds; mask values
are scanned only for the labeled and validation lists, and only with ``check_masks=True``. Images are not
decoded here, so a file truncated after a valid header is reported when it is first loaded.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from corrmatch.constants import IGNORE_INDEX
from corrmatch.data.io import MASK_MODES, DataError, DataWarning, SplitEntry, parse_split

__all__ = ["validate_dataset", "validate_split"]

Role = Literal["labeled", "unlabeled", "val"]


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _header(root: Path, entry: SplitEntry, relative: str, kind: str) -> tuple[tuple[int, int], str]:
    path = root / relative
    if not path.is_file():
        raise DataError(f"{entry.source}: {kind} '{relative}' not found (looked for '{path}')")
    try:
        with Image.open(path) as image:
            return image.size, image.mode
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"{entry.source}: cannot read {kind} '{relative}': {_one_line(error)}") from error


def _mask_values(root: Path, entry: SplitEntry) -> np.ndarray:
    try:
        with Image.open(root / entry.mask) as image:
            array = np.asarray(image)
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"{entry.source}: cannot read mask '{entry.mask}': {_one_line(error)}") from error
    if array.dtype == np.uint8:
        return np.flatnonzero(np.bincount(array.ravel(), minlength=256))
    return np.unique(array)


def _check_entry(root: Path, entry: SplitEntry, num_classes: int | None, scan: bool) -> np.ndarray | None:
    """Checks one line's files; returns the mask's values when they were scanned."""
    image_size, _ = _header(root, entry, entry.image, "image")
    if entry.mask is None:
        return None
    mask_size, mode = _header(root, entry, entry.mask, "mask")
    if mode not in MASK_MODES:
        raise DataError(
            f"{entry.source}: mask '{entry.mask}' has mode {mode}; expected a single-channel index image "
            "(8-bit grey, palette or 16-bit)"
        )
    if mask_size != image_size:
        raise DataError(
            f"{entry.source}: image '{entry.image}' is {image_size[0]}x{image_size[1]} but mask "
            f"'{entry.mask}' is {mask_size[0]}x{mask_size[1]}"
        )
    if scan and num_classes is not None:
        values = _mask_values(root, entry)
        bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
        if bad.size:
            shown = ", ".join(str(v) for v in bad[:10]) + (", …" if bad.size > 10 else "")
            raise DataError(
                f"{entry.source}: mask '{entry.mask}' has values outside 0..{num_classes - 1} and 255: {shown}"
            )
        return values
    return None


def validate_split(
    root: str | os.PathLike,
    split: str | os.PathLike,
    role: Role,
    num_classes: int | None = None,
    check_masks: bool = True,
) -> list[SplitEntry]:
    """Parses and checks one split file; returns its entries or raises the first :class:`DataError`.

    ``role`` "unlabeled" accepts lines without a mask and never scans mask values; the other roles need
    a mask on every line and scan its values against ``num_classes`` when ``check_masks`` is set.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root '{root}' does not exist or is not a folder")
    split = Path(split)
    if not split.is_file():
        raise DataError(f"{role} split file '{split}' does not exist")
    entries = parse_split(split, require_mask=role != "unlabeled")
    scan = check_masks and role != "unlabeled"
    shown: set[int] = set()
    executor = ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 1)))
    try:
        for values in executor.map(lambda entry: _check_entry(root, entry, num_classes, scan), entries):
            if values is not None:
                shown.update(int(value) for value in values if value != IGNORE_INDEX)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    if role == "labeled" and scan and num_classes is not None and len(shown) < 2:
        held = f"only class {shown.pop()}" if shown else "no class (every pixel is 255, ignored)"
        raise DataError(
            f"{split}: the labeled masks hold {held} of the {num_classes}; a model learns nothing to tell "
            "apart: label at least two classes (e.g. background 0 and your objects 1, …) in these masks"
        )
    return entries


def _warn_overlap(labeled: Iterable[SplitEntry], unlabeled: Iterable[SplitEntry]) -> None:
    labeled_images = {entry.image for entry in labeled}
    shared = sorted({entry.image for entry in unlabeled} & labeled_images)
    if shared:
        warnings.warn(
            f"{len(shared)} image(s) are in both the labeled and the unlabeled split, e.g. '{shared[0]}'",
            DataWarning,
            stacklevel=3,
        )


def validate_dataset(
    root: str | os.PathLike,
    labeled: str | os.PathLike | None = None,
    unlabeled: str | os.PathLike | None = None,
    val: str | os.PathLike | None = None,
    num_classes: int | None = None,
    check_masks: bool = True,
) -> dict[str, list[SplitEntry]]:
    """Checks the given split files (§4) and warns about labeled/unlabeled overlap; returns the entries."""
    splits = {"labeled": labeled, "unlabeled": unlabeled, "val": val}
    entries = {
        role: validate_split(root, path, role, num_classes, check_masks)
        for role, path in splits.items()
        if path is not None
    }
    if "labeled" in entries and "unlabeled" in entries:
        _warn_overlap(entries["labeled"], entries["unlabeled"])
    return entries
