"""Dataset presets: class names, palettes, default crops and directory layouts (DESIGN.md §4, §5).

A layout lists the samples of a dataset root as ``(image, mask or None)`` pairs relative to the root, in
three pools: the training pool, the official validation set (None where the dataset has none) and, for
Pascal VOC, the fine-annotated training set from which the paper's 92 … 1464 labeled splits are drawn.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from corrmatch.data.io import DataError

__all__ = [
    "PRESETS",
    "Layout",
    "Preset",
    "get_preset",
    "load_class_file",
    "voc_palette",
    "IMAGE_EXTENSIONS",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

PASCAL_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip
COCO_CLASSES = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)  # fmt: skip
DEMO_CLASSES = ("background", "circle", "square", "triangle", "ring", "cross")

Pair = tuple[str, "str | None"]


class Layout(NamedTuple):
    """The samples found under a root: training pool, official val set, fine labeled pool."""

    train: list[Pair]
    val: list[Pair] | None
    labeled_pool: list[Pair] | None


def voc_palette() -> np.ndarray:
    """Pascal VOC's bit-pattern palette, uint8 (256, 3)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        code, color = index, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                color[channel] |= ((code >> channel) & 1) << (7 - bit)
            code >>= 3
        palette[index] = color
    return palette


def _cityscapes_palette() -> np.ndarray:
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(CITYSCAPES_COLORS)] = CITYSCAPES_COLORS
    return palette


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _files(directory: Path, suffixes: tuple[str, ...], pattern: str = "*") -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob(pattern) if p.is_file() and p.name.lower().endswith(suffixes))


def _read_ids(path: Path) -> set[str] | None:
    if not path.is_file():
        return None
    return {line.split()[0] for line in path.read_text().splitlines() if line.strip()}


def _pascal_layout(root: Path) -> Layout:
    """JPEGImages/*.jpg with SegmentationClassAug/*.png (preferred) or SegmentationClass/*.png."""
    mask_dir = next(
        (root / d for d in ("SegmentationClassAug", "SegmentationClass") if any((root / d).glob("*.png"))),
        None,
    )
    if mask_dir is None:
        raise DataError(f"'{root}' has no SegmentationClassAug/*.png or SegmentationClass/*.png (Pascal VOC)")
    pairs = {}
    for image in _files(root / "JPEGImages", (".jpg", ".jpeg")):
        mask = mask_dir / f"{image.stem}.png"
        if mask.is_file():
            pairs[image.stem] = (_rel(image, root), _rel(mask, root))
    official = root / "ImageSets" / "Segmentation"
    val_ids, fine_ids = _read_ids(official / "val.txt"), _read_ids(official / "train.txt")
    val = None if val_ids is None else [pairs[k] for k in sorted(val_ids) if k in pairs]
    train = [pair for key, pair in sorted(pairs.items()) if val_ids is None or key not in val_ids]
    fine = None if fine_ids is None else [pairs[k] for k in sorted(fine_ids) if k in pairs]
    return Layout(train, val, fine)


def _cityscapes_pairs(root: Path, subset: str) -> list[Pair]:
    pairs = []
    for image in _files(root / "leftImg8bit" / subset, (".png",), "*_leftImg8bit.png"):
        city = image.parent.name
        stem = image.name[: -len("_leftImg8bit.png")]
        mask = root / "gtFine" / subset / city / f"{stem}_gtFine_labelTrainIds.png"
        if mask.is_file():
            pairs.append((_rel(image, root), _rel(mask, root)))
    return pairs


def _cityscapes_layout(root: Path) -> Layout:
    """leftImg8bit/{train,val}/<city>/*_leftImg8bit.png with gtFine/…/*_gtFine_labelTrainIds.png."""
    return Layout(_cityscapes_pairs(root, "train"), _cityscapes_pairs(root, "val") or None, None)


def _coco_pairs(root: Path, subset: str) -> list[Pair]:
    pairs = []
    for image in _files(root / subset, (".jpg", ".jpeg")):
        mask = next(
            (m for m in (root / "masks" / subset / f"{image.stem}.png", root / "masks" / f"{image.stem}.png") if m.is_file()),
            None,
        )
        if mask is not None:
            pairs.append((_rel(image, root), _rel(mask, root)))
    return pairs


def _coco_layout(root: Path) -> Layout:
    """UniMatch's COCO layout: train2017/*.jpg, val2017/*.jpg, masks/{train2017,val2017}/*.png (or
    UniMatch V2's masks/*.png)."""
    return Layout(_coco_pairs(root, "train2017"), _coco_pairs(root, "val2017") or None, None)


def _ade20k_pairs(root: Path, subset: str) -> list[Pair]:
    pairs = []
    for image in _files(root / "images" / subset, (".jpg", ".jpeg")):
        mask = root / "annotations" / subset / f"{image.stem}.png"
        if mask.is_file():
            pairs.append((_rel(image, root), _rel(mask, root)))
    return pairs


def _ade20k_layout(root: Path) -> Layout:
    """UniMatch V2's ADE20K layout: images/{training,validation}/*.jpg with
    annotations/{training,validation}/*.png holding class indices 0–149 and 255 (their pre-processed
    masks; the original ADEChallengeData2016 masks count 1–150 with 0 unlabeled)."""
    return Layout(_ade20k_pairs(root, "training"), _ade20k_pairs(root, "validation") or None, None)


def _folder_layout(root: Path) -> Layout:
    """images/**/<name>.<ext> with masks/**/<name>.png; images without a mask are unlabeled-only."""
    pairs: list[Pair] = []
    for image in _files(root / "images", IMAGE_EXTENSIONS):
        relative = image.relative_to(root / "images").with_suffix(".png")
        mask = root / "masks" / relative
        pairs.append((_rel(image, root), _rel(mask, root) if mask.is_file() else None))
    return Layout(pairs, None, None)


@dataclass(frozen=True)
class Preset:
    """Names, palette, default crop (§5) and layout of one dataset family."""

    name: str
    class_names: tuple[str, ...] | None
    palette: np.ndarray = field(compare=False, repr=False)
    crop_size: int
    layout: Callable[[Path], Layout] = field(compare=False, repr=False)
    expects: str = ""  # the layout in words, for errors


PRESETS: dict[str, Preset] = {
    "pascal": Preset(
        "pascal", PASCAL_CLASSES, voc_palette(), 321, _pascal_layout, "JPEGImages/*.jpg with SegmentationClass/*.png"
    ),
    "cityscapes": Preset(
        "cityscapes",
        CITYSCAPES_CLASSES,
        _cityscapes_palette(),
        801,
        _cityscapes_layout,
        "leftImg8bit/train/<city>/*_leftImg8bit.png with gtFine/train/<city>/*_gtFine_labelTrainIds.png",
    ),
    "coco": Preset(
        "coco", COCO_CLASSES, voc_palette(), 513, _coco_layout, "train2017/*.jpg with masks/train2017/*.png"
    ),
    "ade20k": Preset(
        "ade20k",
        ADE20K_CLASSES,
        voc_palette(),
        518,
        _ade20k_layout,
        "images/training/*.jpg with annotations/training/*.png",
    ),
    "folder": Preset(
        "folder",
        None,
        voc_palette(),
        321,
        _folder_layout,
        "images/<name>.<jpg|png|…> with masks/<name>.png (subfolders allowed, the same under both)",
    ),
    "demo": Preset(
        "demo", DEMO_CLASSES, voc_palette(), 96, _pascal_layout, "JPEGImages/*.jpg with SegmentationClass/*.png"
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a :class:`DataError` lists the known ones otherwise."""
    if name not in PRESETS:
        raise DataError(f"unknown dataset preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def load_class_file(path: str | os.PathLike) -> tuple[list[str], np.ndarray | None]:
    """Reads class names (and optionally a palette) from a YAML or JSON file.

    Accepted: a list of names; a mapping ``{index: name}`` with indices 0…K-1; or a mapping with
    ``classes`` (or ``class_names``) and optional ``palette`` (a list of ``[r, g, b]``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class-name file '{path}' does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        content = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as error:
        message = str(error).replace("\n", " ")
        raise DataError(f"class-name file '{path}' cannot be parsed: {message}") from error
    colors = None
    if isinstance(content, dict) and ("classes" in content or "class_names" in content):
        colors = content.get("palette")
        content = content.get("classes", content.get("class_names"))
    if isinstance(content, dict):
        try:
            indexed = {int(key): value for key, value in content.items()}
        except ValueError as error:
            raise DataError(f"class-name file '{path}': keys must be class indices") from error
        if sorted(indexed) != list(range(len(indexed))):
            raise DataError(f"class-name file '{path}': indices must be 0…{len(indexed) - 1} without gaps")
        content = [indexed[index] for index in range(len(indexed))]
    if not isinstance(content, list) or not content or not all(isinstance(n, str) for n in content):
        raise DataError(f"class-name file '{path}': expected a non-empty list of class names")
    palette = None
    if colors is not None:
        array = np.asarray(colors)
        if array.ndim != 2 or array.shape[1] != 3 or len(array) > 256 or array.min() < 0 or array.max() > 255:
            raise DataError(
                f"class-name file '{path}': palette must be a list of at most 256 [r, g, b] in 0…255"
            )
        palette = voc_palette()
        palette[: len(array)] = array.astype(np.uint8)
    return list(content), palette
