"""Pictures of a prediction, and the files ``train.py predict`` and :class:`corrmatch.Segmenter` write:
class indices, palette colours, the image blended with those colours, and the confidence (the highest
class probability of each pixel) as an 8-bit grey image; a grid of pictures, and the outline of a mask."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["blend", "colorize", "confidence_image", "image_grid", "outline", "output_name", "pad_to_largest", "write_prediction"]


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): each pixel's class colour from ``palette`` (256, 3)."""
    return palette[labels]


def blend(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 (H, W, 3): ``(1 − alpha)·image + alpha·colour`` of each pixel, rounded."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * colorize(labels, palette).astype(np.float32)
    return np.rint(mixed).astype(np.uint8)


def confidence_image(confidence: np.ndarray) -> np.ndarray:
    """uint8 (H, W): a confidence in [0, 1] as ``round(255·confidence)``."""
    return np.rint(np.clip(confidence, 0.0, 1.0) * 255.0).astype(np.uint8)


def pad_to_largest(pictures: Sequence[np.ndarray], fill: int) -> list[np.ndarray]:
    """``pictures`` ((h, w) or (h, w, C) arrays of one kind) each at the top left of a canvas of
    ``fill`` the height and width of the largest."""
    height, width = (max(p.shape[axis] for p in pictures) for axis in (0, 1))
    return [
        np.pad(p, [(0, height - p.shape[0]), (0, width - p.shape[1])] + [(0, 0)] * (p.ndim - 2), constant_values=fill)
        for p in pictures
    ]


def image_grid(rows: Sequence[Sequence[np.ndarray]], gap: int = 2, fill: int = 255) -> np.ndarray:
    """uint8 (H, W, 3): the pictures of ``rows`` (uint8 (h, w, 3) colour or (h, w) grey) in a grid of
    equal cells, each the size of the largest picture, the picture at its cell's top left; ``gap``
    pixels of grey ``fill`` between cells and around smaller pictures."""
    if not rows or any(len(row) != len(rows[0]) or not row for row in rows):
        raise ValueError("image_grid needs rows of one non-zero length")
    columns = len(rows[0])
    pictures = pad_to_largest([np.dstack([p] * 3) if p.ndim == 2 else p for row in rows for p in row], fill)
    height, width = pictures[0].shape[:2]
    grid = np.full((len(rows) * (height + gap) - gap, columns * (width + gap) - gap, 3), fill, dtype=np.uint8)
    for index, picture in enumerate(pictures):
        row, column = divmod(index, columns)
        top, left = row * (height + gap), column * (width + gap)
        grid[top : top + height, left : left + width] = picture
    return grid


def outline(mask: np.ndarray) -> np.ndarray:
    """bool (H, W): the pixels of ``mask`` with a 4-neighbour outside it, the image's border counting as
    outside."""
    inside = np.pad(mask.astype(bool), 1, constant_values=False)
    interior = inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
    return inside[1:-1, 1:-1] & ~interior


def output_name(image_id: str) -> Path:
    """The PNG name of an image id, keeping its relative folders (no root, no ``..``)."""
    return Path(*(part for part in Path(image_id).with_suffix(".png").parts if part not in ("/", "..")))


def write_prediction(
    output_dir: str | Path,
    image_id: str,
    labels: np.ndarray,
    palette: np.ndarray,
    image: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    alpha: float = 0.5,
) -> None:
    """Writes ``<output_dir>/labels/<id>.png`` (class indices) and ``color/<id>.png`` (palette), plus
    ``overlay/<id>.png`` when ``image`` (uint8 (H, W, 3)) is given and ``confidence/<id>.png`` when
    ``confidence`` (float (H, W)) is given."""
    labels = labels.astype(np.uint8)
    pictures = {"labels": labels, "color": colorize(labels, palette)}
    if image is not None:
        pictures["overlay"] = blend(image, labels, palette, alpha)
    if confidence is not None:
        pictures["confidence"] = confidence_image(confidence)
    name = output_name(image_id)
    for kind, array in pictures.items():
        path = Path(output_dir) / kind / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
