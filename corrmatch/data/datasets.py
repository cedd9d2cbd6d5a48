"""Labeled, unlabeled, validation and prediction datasets (DESIGN.md §4, docs/DESIGN.md §6).

Items are dicts with the batch keys of docs/DESIGN.md §6. Each item's augmentations draw from
generators seeded by :func:`corrmatch.data.transforms.item_generators`, so a fixed seed gives identical
items and every DataLoader worker (and every rank) draws its own stream.
"""

from __future__ import annotations

import math
import os
import posixpath
import random
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from corrmatch.constants import IGNORE_INDEX, UNLABELED_PAD
from corrmatch.data.io import DataError, SplitEntry, parse_split, read_image, read_mask
from corrmatch.data.presets import IMAGE_EXTENSIONS
from corrmatch.data.transforms import (
    AugmentConfig,
    build_geometric,
    build_strong,
    cutmix_box,
    item_generators,
    normalize,
    seed_pipelines,
)

__all__ = [
    "LabeledDataset",
    "PredictDataset",
    "prediction_ids",
    "UnlabeledDataset",
    "ValDataset",
    "repeat_to_length",
]


SplitSource = str | os.PathLike | Sequence[SplitEntry]
_worker_threads_set = False


def _single_threaded_in_worker() -> None:
    """Turns OpenCV's own thread pool off inside DataLoader workers (the workers already run in parallel)."""
    global _worker_threads_set
    if not _worker_threads_set and get_worker_info() is not None:
        cv2.setNumThreads(0)
        _worker_threads_set = True


def _entries(split: SplitSource, require_mask: bool) -> list[SplitEntry]:
    if isinstance(split, str | os.PathLike):
        return parse_split(split, require_mask=require_mask)
    return list(split)


def repeat_to_length(entries: Sequence[SplitEntry], length: int, seed: int) -> list[SplitEntry]:
    """Repeats the list ceil(length/n) times, shuffles it with ``random.Random(seed)``, truncates (§4)."""
    repeated = list(entries) * math.ceil(length / len(entries))
    random.Random(seed).shuffle(repeated)
    return repeated[:length]


class _SplitDataset(Dataset):
    """Common reading code: paths relative to ``root``, one-line errors naming the split line."""

    require_mask = True

    def __init__(self, root: str | os.PathLike, split: SplitSource) -> None:
        self.root = Path(root)
        self.entries = _entries(split, self.require_mask)
        self.rank = 0  # global rank, mixed into the per-item seed; set by the datamodule

    def __len__(self) -> int:
        return len(self.entries)

    def _load(self, entry: SplitEntry) -> tuple[np.ndarray, np.ndarray | None]:
        _single_threaded_in_worker()
        try:
            image = read_image(self.root / entry.image)
            mask = None if entry.mask is None else read_mask(self.root / entry.mask)
        except DataError as error:
            raise DataError(f"{entry.source}: {error}") from error
        if mask is not None and mask.shape != image.shape[:2]:
            raise DataError(
                f"{entry.source}: image '{entry.image}' is {image.shape[1]}x{image.shape[0]} but mask "
                f"'{entry.mask}' is {mask.shape[1]}x{mask.shape[0]}"
            )
        return image, mask


class LabeledDataset(_SplitDataset):
    """Labeled crops: ``{"image": float (3,S,S), "mask": long (S,S)}``, padding 255 (§4).

    ``num_samples`` repeats and shuffles the list to that length with ``random.Random(seed)``, as the
    labeled list is stretched to the unlabeled list's length.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: SplitSource,
        crop_size: int,
        augment: AugmentConfig | None = None,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(root, split)
        if num_samples is not None:
            self.entries = repeat_to_length(self.entries, num_samples, seed)
        self.augment = augment or AugmentConfig()
        self.geometric = build_geometric(crop_size, IGNORE_INDEX, self.augment)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, mask = self._load(self.entries[index])
        seed_pipelines(item_generators(self.rank), self.geometric)
        out = self.geometric(image=image, mask=mask)
        return {
            "image": normalize(out["image"], self.augment.mean, self.augment.std),
            "mask": torch.from_numpy(out["mask"]).long(),
        }


class UnlabeledDataset(_SplitDataset):
    """Unlabeled crops: weak view, ``num_strong_views`` strong views with CutMix boxes, ``ignore`` (§4).

    The geometric pipeline pads the mask with 254; ``ignore`` is 255 where the crop's mask is 254, else
    0. The mask file is read only for that padding map (as the reference does); a line without a mask
    uses a zero mask. Keys: ``image_w``, ``image_s``, ``cutmix_box``, ``ignore``, for two strong views
    ``image_s2``, ``cutmix_box2``, and when every line of the list has a mask, ``mask_w``: the weak
    view's ground truth (255 on padding), which only the pseudo-label quality metrics read.
    """

    require_mask = False

    def __init__(
        self,
        root: str | os.PathLike,
        split: SplitSource,
        crop_size: int,
        augment: AugmentConfig | None = None,
        num_strong_views: int = 1,
    ) -> None:
        super().__init__(root, split)
        if num_strong_views not in (1, 2):
            raise ValueError(f"num_strong_views must be 1 or 2, got {num_strong_views}")
        self.crop_size = crop_size
        self.num_strong_views = num_strong_views
        self.augment = augment or AugmentConfig()
        self.geometric = build_geometric(crop_size, UNLABELED_PAD, self.augment)
        self.strong = build_strong(self.augment)
        self.has_masks = bool(self.entries) and all(entry.mask is not None for entry in self.entries)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, mask = self._load(self.entries[index])
        if mask is None:
            mask = np.zeros(image.shape[:2], dtype=np.uint8)
        generators = item_generators(self.rank)
        seed_pipelines(generators, self.geometric, self.strong)
        out = self.geometric(image=image, mask=mask)
        weak, cfg = out["image"], self.augment
        padding = out["mask"] == UNLABELED_PAD
        item = {
            "image_w": normalize(weak, cfg.mean, cfg.std),
            "ignore": torch.from_numpy(np.where(padding, IGNORE_INDEX, 0)).long(),
        }
        if self.has_masks:  # ground truth of the weak view, read only by the pseudo-label metrics
            item["mask_w"] = torch.from_numpy(np.where(padding, IGNORE_INDEX, out["mask"])).long()
        for view in range(self.num_strong_views):
            suffix = "" if view == 0 else str(view + 1)
            strong = self.strong(image=weak)["image"]
            box = cutmix_box(self.crop_size, generators[1], cfg.cutmix_p, cfg.cutmix_area, cfg.cutmix_ratio)
            item[f"image_s{suffix}"] = normalize(strong, cfg.mean, cfg.std)
            item[f"cutmix_box{suffix}"] = torch.from_numpy(box).long()
        return item


class ValDataset(_SplitDataset):
    """Whole images: ``{"image": float (3,H,W), "mask": long (H,W), "id": str}``; the id is the image
    path relative to the root (§4, evaluation)."""

    def __init__(
        self, root: str | os.PathLike, split: SplitSource, augment: AugmentConfig | None = None
    ) -> None:
        super().__init__(root, split)
        self.augment = augment or AugmentConfig()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        entry = self.entries[index]
        image, mask = self._load(entry)
        return {
            "image": normalize(image, self.augment.mean, self.augment.std),
            "mask": torch.from_numpy(mask).long(),
            "id": entry.image,
        }


def prediction_ids(images: Sequence[str]) -> tuple[list[str], str | None]:
    """The ids that name the predictions of ``images`` (paths, ``/``-separated): each file's name alone,
    so that ``labels/<name>.png`` holds the prediction of ``<any folders>/<name>.<ext>``; when two images
    share a name, each keeps its folders below the images' common folder instead, and the second value
    says so (None otherwise)."""
    names = [posixpath.basename(image) for image in images]
    if len({posixpath.splitext(name)[0] for name in names}) == len(names):
        return names, None
    common = posixpath.commonpath([posixpath.dirname(image) for image in images])
    ids = [posixpath.relpath(image, common) if common else image for image in images]
    seen: dict[str, str] = {}
    for image, stem in zip(images, (posixpath.splitext(i)[0] for i in ids)):
        if stem in seen:
            raise DataError(f"'{seen[stem]}' and '{image}' would both be predicted to {stem}.png: rename one")
        seen[stem] = image
    return ids, f"images share file names, so each prediction keeps its folders below '{common or '.'}'"


class PredictDataset(Dataset):
    """Whole images without masks: ``{"image": float (3,H,W), "id": str}``. ``images`` are paths
    relative to ``root``; the ids name the outputs (:func:`prediction_ids`: the file
    name, or the path below the images' common folder when names repeat, as :attr:`naming_note` says)."""

    def __init__(
        self, root: str | os.PathLike, images: Sequence[str], augment: AugmentConfig | None = None
    ) -> None:
        self.root = Path(root)
        self.images = list(images)
        self.ids, self.naming_note = prediction_ids(self.images)
        self.augment = augment or AugmentConfig()

    @classmethod
    def from_directory(
        cls, directory: str | os.PathLike, augment: AugmentConfig | None = None
    ) -> PredictDataset:
        """All images under ``directory`` (recursively, sorted); a :class:`DataError` if there are none."""
        directory = Path(directory)
        if not directory.is_dir():
            raise DataError(f"prediction folder '{directory}' does not exist")
        images = sorted(
            p.relative_to(directory).as_posix()
            for p in directory.rglob("*")
            if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not images:
            raise DataError(f"prediction folder '{directory}' has no images ({', '.join(IMAGE_EXTENSIONS)})")
        return cls(directory, images, augment)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        _single_threaded_in_worker()
        image = read_image(self.root / self.images[index])
        return {"image": normalize(image, self.augment.mean, self.augment.std), "id": self.ids[index]}
