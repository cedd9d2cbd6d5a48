"""The built-in demo dataset: textured shapes in Pascal VOC layout (DESIGN.md §4 formats).

``root/JPEGImages/demo_NNNNN.jpg``, ``root/SegmentationClass/demo_NNNNN.png`` (palette PNGs, class
indices, 255 on a 2-px band along every label boundary), ``root/splits/{labeled,unlabeled,val}.txt`` and
``root/generator.json`` (the generation's settings, so that a folder is never reused for other ones).
Classes: background (0), circle, square, triangle, ring, cross. Each class has its own texture family
(dots, stripes, checks, concentric waves, speckle; periods of 3–8 px) and a hue (72° apart, jittered,
with random saturation and brightness), but the background carries smooth colour fields of any hue, a
faint texture and irregular blobs painted with the object textures, so neither colour nor texture alone
gives the class. Images vary in size around 128×128 and get blur, noise and global colour changes.
Variants: ``clutter=False`` (plain backgrounds), ``texture_scale`` (coarser textures), ``object_scale``
(larger objects) and ``class_hues=False`` (objects of any hue).

Image ``i`` depends only on ``(seed, i)`` (``numpy.random.default_rng([seed, i])``); JPEGs are written by
PIL with fixed quality and subsampling, so two generations with one seed are byte-identical. Generation
writes into a temporary sibling folder renamed into place at the end, so an interrupted run never
looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from corrmatch.data.io import DataError
from corrmatch.data.presets import DEMO_CLASSES, voc_palette

__all__ = ["DEFAULT_DEMO_ROOT", "ensure_demo", "generate_demo", "is_demo_complete", "render_sample"]

DEFAULT_DEMO_ROOT = "data/demo"
SPLIT_NAMES = ("labeled", "unlabeled", "val")
SETTINGS_FILE = "generator.json"
JPEG_QUALITY = 90
STANDARD_VARIANT = {"texture_scale": 1.0, "object_scale": 1.0, "class_hues": True}  # render_sample's defaults

Grid = tuple[np.ndarray, np.ndarray]  # rotated, centred coordinates (u, v) in pixels


def _circle(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return u * u + v * v <= r * r


def _square(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    side = 0.8 * r
    return (np.abs(u) <= side) & (np.abs(v) <= side)


def _triangle(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    inside = v <= 0.5 * r
    for angle in (np.pi / 6, 5 * np.pi / 6):
        inside &= u * np.cos(angle) - v * np.sin(angle) <= 0.5 * r
    return inside


def _ring(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    distance2 = u * u + v * v
    return (distance2 <= r * r) & (distance2 >= (0.55 * r) ** 2)


def _cross(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    arm = 0.3 * r
    return ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))


Shape = Callable[[np.ndarray, np.ndarray, float], np.ndarray]  # (u, v, radius) -> inside mask
SHAPES: tuple[Shape, ...] = (
    _circle,
    _square,
    _triangle,
    _ring,
    _cross,
)


def _texture(
    family: int, u: np.ndarray, v: np.ndarray, rng: np.random.Generator, scale: float = 1.0
) -> np.ndarray:
    """Texture value in [0, 1] of one family (0 dots, 1 stripes, 2 checks, 3 waves, 4 speckle), with a
    period of 3–8 px times ``scale``."""
    period = rng.uniform(3.0, 8.0) * scale
    phase = rng.uniform(0, 2 * np.pi)
    w = 2 * np.pi / period
    if family == 0:
        return (np.sin(w * u + phase) * np.sin(w * v) > 0.35).astype(np.float32)
    if family == 1:
        return 0.5 + 0.5 * np.sin(w * u + phase)
    if family == 2:
        return (np.sin(w * u + phase) * np.sin(w * v + phase) > 0).astype(np.float32)
    if family == 3:
        return 0.5 + 0.5 * np.sin(w * np.sqrt(u * u + v * v) + phase)
    noise = rng.random(u.shape, dtype=np.float32)
    return cv2.GaussianBlur(noise, (0, 0), period / 6)


def _grid(shape: tuple[int, int], center: tuple[float, float], angle: float) -> Grid:
    y, x = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    x -= center[0]
    y -= center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    return x * cos + y * sin, -x * sin + y * cos


def _colors(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    first = rng.uniform(0, 255, 3)
    second = np.clip(first + rng.uniform(-160, 160, 3), 0, 255)
    return first.astype(np.float32), second.astype(np.float32)


def _class_colors(cls: int, rng: np.random.Generator, hue: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two colours around the class's hue (classes 1–5 at 0, 1/5, 2/5, 3/5 and 4/5 of the hue circle, 72°
    apart; ±0.06 jitter), or around ``hue`` when given."""
    hue = ((cls - 1) / (len(DEMO_CLASSES) - 1) if hue is None else hue) + rng.uniform(-0.06, 0.06)
    colors = []
    for value in (rng.uniform(0.55, 1.0), rng.uniform(0.25, 0.6)):
        hsv = np.array([[[(hue % 1.0) * 180, rng.uniform(0.45, 1.0) * 255, value * 255]]], np.float32)
        colors.append(cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32))
    return colors[0], colors[1]


def _paint(
    image: np.ndarray,
    where: np.ndarray,
    texture: np.ndarray,
    rng: np.random.Generator,
    colors: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    first, second = colors if colors is not None else _colors(rng)
    t = texture[where][:, None]
    image[where] = first * (1 - t) + second * t


def _background(
    shape: tuple[int, int], rng: np.random.Generator, clutter: bool = True, texture_scale: float = 1.0
) -> np.ndarray:
    coarse = rng.uniform(0, 1, (4, 4, 1)).astype(np.float32)
    field = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)[..., None]
    first, second = _colors(rng)
    image = first * (1 - field) + second * field
    grain = _texture(int(rng.integers(5)), *_grid(shape, (0.0, 0.0), rng.uniform(0, np.pi)), rng, texture_scale)
    return image + rng.uniform(0, 40 if clutter else 0) * (grain[..., None] - 0.5)


def _distractor(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An irregular blob (thresholded smooth noise) for textured background clutter."""
    coarse = rng.uniform(0, 1, (6, 6)).astype(np.float32)
    field = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return field > rng.uniform(0.7, 0.85)


def render_sample(
    seed: int,
    index: int,
    size: int = 128,
    clutter: bool = True,
    shapes: Sequence[Shape] = SHAPES,
    class_appearance: bool = True,
    label_by: str = "shape",
    texture_scale: float = 1.0,
    object_scale: float = 1.0,
    class_hues: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One demo sample: uint8 RGB image (H, W, 3) and uint8 mask (H, W) with 255 on boundaries.
    Without ``clutter`` the background has no object-textured blobs and no grain. ``shapes`` (class
    ``i + 1`` is ``shapes[i]``) and ``class_appearance=False`` (any texture family and colours for any
    class, so that only the shape tells the class) draw other images than the demo's, e.g. for
    pretraining; the defaults draw the demo's. With ``label_by="texture"`` (and ``class_appearance=False``)
    the mask holds each object's texture family (1–5) instead of its shape. ``texture_scale`` multiplies
    every texture's period (3–8 px): 2 keeps the textures readable after the paper's strong
    augmentation (blur up to σ 2, rescaling down to half), which wipes out the finest ones.
    ``object_scale`` multiplies every object's size (radius 0.09–0.25 of ``size``), for scenes in which
    objects cover more of the image (and of a correlation map's cells), as in Pascal VOC. ``class_hues=False``
    paints each object around a random hue instead of its class's (same scenes, masks and textures), so
    that shape and texture tell the class and the paper's strong augmentation, whose hue jitter (up to
    ±90°) and grayscale change colours only, keeps it."""
    if label_by not in ("shape", "texture") or (label_by == "texture" and class_appearance):
        raise ValueError(f"label_by={label_by!r}: 'shape', or 'texture' with class_appearance=False")
    rng = np.random.default_rng([seed, index])
    hues = None if class_hues else np.random.default_rng([seed, index, 1])
    shape = (
        int(rng.integers(size * 7 // 8, size * 9 // 8 + 1)),
        int(rng.integers(size * 7 // 8, size * 9 // 8 + 1)),
    )
    image = _background(shape, rng, clutter, texture_scale)
    label = np.zeros(shape, dtype=np.uint8)
    for _ in range(int(rng.integers(0, 3)) if clutter else 0):
        where = _distractor(shape, rng)
        _paint(
            image,
            where,
            _texture(int(rng.integers(5)), *_grid(shape, (0.0, 0.0), rng.uniform(0, np.pi)), rng, texture_scale),
            rng,
        )
    for _ in range(int(rng.integers(2, 6))):
        cls = int(rng.integers(1, len(shapes) + 1))
        center = (rng.uniform(0, shape[1]), rng.uniform(0, shape[0]))
        u, v = _grid(shape, center, rng.uniform(0, 2 * np.pi))
        where = shapes[cls - 1](u, v, rng.uniform(0.09, 0.25) * size * object_scale)
        if class_appearance:
            hue = None if hues is None else hues.uniform()
            _paint(image, where, _texture(cls - 1, u, v, rng, texture_scale), rng, _class_colors(cls, rng, hue))
        else:
            family = int(rng.integers(5))
            _paint(image, where, _texture(family, u, v, rng, texture_scale), rng)
            if label_by == "texture":
                cls = family + 1
        label[where] = cls
    sigma = rng.uniform(0.3, 1.2)
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma)
    image = (
        image * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30) + rng.normal(0, rng.uniform(2, 12), image.shape)
    )
    boundary = cv2.dilate(label, np.ones((3, 3), np.uint8)) != cv2.erode(label, np.ones((3, 3), np.uint8))
    label[boundary] = 255
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), label


def is_demo_complete(root: str | os.PathLike) -> bool:
    """True when ``root`` holds the three split files a finished generation writes."""
    return all((Path(root) / "splits" / f"{name}.txt").is_file() for name in SPLIT_NAMES)


def _write(directory: Path, seed: int, counts: dict[str, int], size: int, clutter: bool, **variant: Any) -> None:
    (directory / "JPEGImages").mkdir()
    (directory / "SegmentationClass").mkdir()
    (directory / "splits").mkdir()
    palette = voc_palette().ravel().tolist()
    index = 0
    for name in SPLIT_NAMES:
        lines = []
        for _ in range(counts[name]):
            image, label = render_sample(seed, index, size, clutter, **variant)
            stem = f"demo_{index:05d}"
            Image.fromarray(image).save(
                directory / "JPEGImages" / f"{stem}.jpg", "JPEG", quality=JPEG_QUALITY, subsampling=2
            )
            mask = Image.fromarray(label)
            mask.putpalette(palette)
            mask.save(directory / "SegmentationClass" / f"{stem}.png")
            lines.append(f"JPEGImages/{stem}.jpg SegmentationClass/{stem}.png\n")
            index += 1
        (directory / "splits" / f"{name}.txt").write_text("".join(lines), encoding="utf-8")


def generate_demo(
    root: str | os.PathLike = DEFAULT_DEMO_ROOT,
    seed: int = 0,
    num_labeled: int = 20,
    num_unlabeled: int = 500,
    num_val: int = 100,
    size: int = 128,
    clutter: bool = True,
    texture_scale: float = 1.0,
    object_scale: float = 1.0,
    class_hues: bool = True,
) -> Path:
    """Generates the demo dataset into ``root`` (which must be absent or empty), atomically;
    ``clutter=False`` draws plain backgrounds, ``texture_scale`` coarser textures, ``object_scale``
    larger objects and ``class_hues=False`` objects of random hues (:func:`render_sample`)."""
    for name, value in (("texture_scale", texture_scale), ("object_scale", object_scale)):
        if not value > 0:
            raise DataError(f"demo {name} must be positive (data.demo_{name}), got {value}")
    variant = {"texture_scale": texture_scale, "object_scale": object_scale, "class_hues": class_hues}
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(f"demo root '{root}' exists and is not empty; remove it or choose another root")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        counts = {"labeled": num_labeled, "unlabeled": num_unlabeled, "val": num_val}
        _write(staging, seed, counts, size, clutter, **variant)
        settings = {"seed": seed, "clutter": clutter, "size": size, **counts}
        # the standard demo's stamp as before: only the settings of a variant
        settings.update({name: value for name, value in variant.items() if value != STANDARD_VARIANT[name]})
        (staging / SETTINGS_FILE).write_text(json.dumps(settings, sort_keys=True) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        if root.is_dir():
            root.rmdir()
        os.rename(staging, root)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not is_demo_complete(root):
            raise
    return root


def _describe(settings: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value}" for name, value in settings.items())


def ensure_demo(
    root: str | os.PathLike = DEFAULT_DEMO_ROOT,
    seed: int = 0,
    clutter: bool = True,
    texture_scale: float = 1.0,
    object_scale: float = 1.0,
    class_hues: bool = True,
    **counts: int,
) -> Path:
    """Returns ``root``, generating the demo dataset there first unless a complete one is present; a
    complete one generated with another seed or variant is refused (one line naming the folder)."""
    if not is_demo_complete(root):
        return generate_demo(
            root,
            seed,
            clutter=clutter,
            texture_scale=texture_scale,
            object_scale=object_scale,
            class_hues=class_hues,
            **counts,
        )
    stamp = Path(root) / SETTINGS_FILE
    if stamp.is_file():
        made = json.loads(stamp.read_text(encoding="utf-8"))
        wanted = {
            "seed": seed,
            "clutter": clutter,
            "texture_scale": texture_scale,
            "object_scale": object_scale,
            "class_hues": class_hues,
        }
        found = {name: made.get(name, STANDARD_VARIANT.get(name)) for name in wanted}
        if found != wanted:
            raise DataError(
                f"demo root '{root}' holds the demo generated with {_describe(found)}, not {_describe(wanted)} "
                f"({', '.join(f'data.demo_{name}' for name in wanted)}); choose another data.root"
            )
    return Path(root)
