"""Pictures of a prediction, and the files ``train.py predict`` and :class:`corrmatch.Segmenter` write:
class indices, palette colours, the image blended with those colours, and the confidence (the highest
class probability of each pixel) as an 8-bit grey image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["blend", "colorize", "confidence_image", "output_name", "write_prediction"]


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
