"""The paper's augmentations on albumentations (DESIGN.md §4).

Geometric pipeline (labeled and unlabeled): :class:`LongSideRescale` → pad right/bottom to the crop
(image 0; mask 255 labeled, 254 unlabeled) → random crop → horizontal flip. Strong view: colour jitter,
grayscale, Gaussian blur; plus a CutMix box drawn by :func:`cutmix_box`.

Differences from the reference (PIL + torchvision), all inside albumentations / OpenCV:

* Rescale uses OpenCV's bilinear filter, which does not widen its support when shrinking as PIL's
  BILINEAR does (slightly more aliasing below scale 1; scales stay ≥ 0.5). Masks use
  ``INTER_NEAREST_EXACT``, PIL's pixel-centre nearest-neighbour convention.
* ``A.ColorJitter`` follows torchvision: brightness scales, contrast blends with the grey mean, saturation
  blends with grey, hue shifts, in a random order. On uint8 the hue is shifted on OpenCV's 0–179 hue
  scale (2° steps) rather than PIL's 0–255 HSV, and the grey mean is not rounded to an integer.
* ``A.ToGray`` uses OpenCV's RGB→grey weights, identical to PIL's ``convert("L")`` (ITU-R 601-2).
* ``A.GaussianBlur(blur_limit=0)`` convolves with an exact Gaussian of σ (kernel 2·int(3.5σ)+1,
  reflect-101 borders); PIL's ``GaussianBlur(radius=σ)`` approximates it with three box blurs and
  replicates edges.

Randomness: every item draws one seed from Python's ``random`` module (which PyTorch reseeds in each
worker and Lightning's ``seed_everything(workers=True)`` reseeds per worker and rank) and mixes in the
global rank; all augmentations of that item use generators built from it (:func:`item_generators`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentConfig",
    "LongSideRescale",
    "build_geometric",
    "build_strong",
    "cutmix_box",
    "item_generators",
    "normalize",
    "seed_pipelines",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_range(name: str, value: tuple[float, float], low: float = 0.0, high: float = math.inf) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ValueError(f"augment.{name} must be (min, max) with {low} <= min <= max <= {high}, got {value}")


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"augment.{name} must be a probability in [0, 1], got {value}")


@dataclass
class AugmentConfig:
    """Every §4 augmentation parameter; the defaults are the paper's."""

    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip_p: float = 0.5
    color_jitter: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.25)
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    cutmix_p: float = 0.5
    cutmix_area: tuple[float, float] = (0.02, 0.4)
    cutmix_ratio: tuple[float, float] = (0.3, 1 / 0.3)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        _check_range("scale_range", self.scale_range, low=1e-3)
        _check_range("blur_sigma", self.blur_sigma, low=1e-3)
        _check_range("cutmix_area", self.cutmix_area, low=1e-6, high=1.0)
        _check_range("cutmix_ratio", self.cutmix_ratio, low=1e-3)
        for name in ("hflip_p", "color_jitter_p", "grayscale_p", "blur_p", "cutmix_p"):
            _check_probability(name, getattr(self, name))
        brightness, contrast, saturation, hue = self.color_jitter
        if min(brightness, contrast, saturation) < 0 or not 0 <= hue <= 0.5:
            raise ValueError(
                f"augment.color_jitter must be (b, c, s >= 0, 0 <= hue <= 0.5), got {self.color_jitter}"
            )
        if self.cutmix_ratio[0] > 1 / self.cutmix_area[1] or self.cutmix_ratio[1] < self.cutmix_area[1]:
            raise ValueError("augment.cutmix_ratio admits no box of the largest cutmix_area inside the crop")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("augment.mean and augment.std must have 3 values, std > 0")


class LongSideRescale(A.DualTransform):
    """Rescales so the long side L becomes an integer drawn uniformly from [int(lo·L), int(hi·L)] (§4).

    The other side becomes ``int(s · other / L + 0.5)``; bilinear for the image, nearest for the mask.
    """

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0), p: float = 1.0) -> None:
        super().__init__(p=p)
        self.scale_range = scale_range

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        long_side = max(height, width)
        target = self.py_random.randint(
            int(long_side * self.scale_range[0]), int(long_side * self.scale_range[1])
        )
        if height > width:
            size = (target, int(width * target / height + 0.5))
        else:
            size = (int(height * target / width + 0.5), target)
        return {"size": (max(size[0], 1), max(size[1], 1))}

    def apply(self, img: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale_range",)


def build_geometric(crop_size: int, mask_fill: int, config: AugmentConfig) -> A.Compose:
    """Rescale → pad right/bottom (image 0, mask ``mask_fill``) → random crop → hflip (§4)."""
    return A.Compose(
        [
            LongSideRescale(config.scale_range),
            A.PadIfNeeded(
                min_height=crop_size,
                min_width=crop_size,
                position="top_left",
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=mask_fill,
            ),
            A.RandomCrop(height=crop_size, width=crop_size),
            A.HorizontalFlip(p=config.hflip_p),
        ]
    )


def build_strong(config: AugmentConfig) -> A.Compose:
    """Colour jitter (p=0.8) → grayscale (p=0.2) → Gaussian blur (p=0.5, σ range) (§4)."""
    brightness, contrast, saturation, hue = config.color_jitter
    return A.Compose(
        [
            A.ColorJitter(brightness, contrast, saturation, hue, p=config.color_jitter_p),
            A.ToGray(num_output_channels=3, method="weighted_average", p=config.grayscale_p),
            A.GaussianBlur(blur_limit=0, sigma_limit=config.blur_sigma, p=config.blur_p),
        ]
    )


def item_generators(rank: int = 0) -> tuple[np.random.Generator, random.Random]:
    """Fresh generators for one item, seeded from Python's ``random`` state and the global rank."""
    state = np.random.SeedSequence([random.getrandbits(64), rank]).generate_state(2, np.uint64)
    return np.random.default_rng(int(state[0])), random.Random(int(state[1]))


def seed_pipelines(generators: tuple[np.random.Generator, random.Random], *pipelines: A.Compose) -> None:
    """Makes the albumentations pipelines draw from the item's generators."""
    for pipeline in pipelines:
        pipeline.set_random_state(*generators)


def cutmix_box(
    size: int,
    rng: random.Random,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
) -> np.ndarray:
    """A CutMix box mask (size, size), uint8 1 inside, drawn with probability ``p`` (§4).

    The area is ``U(area)·size²``; the aspect ratio ``r ~ U(ratio)`` gives ``w = int(sqrt(area/r))``,
    ``h = int(sqrt(area·r))``; the top-left corner is uniform on the image; ratio and corner are redrawn
    until the box fits (which needs ``ratio`` to meet ``[area_max, 1/area_max]``; see AugmentConfig).
    """
    box = np.zeros((size, size), dtype=np.uint8)
    if rng.random() >= p:
        return box
    target = rng.uniform(*area) * size * size
    while True:
        aspect = rng.uniform(*ratio)
        width, height = int(math.sqrt(target / aspect)), int(math.sqrt(target * aspect))
        x, y = rng.randrange(size), rng.randrange(size)
        if x + width <= size and y + height <= size:
            break
    box[y : y + height, x : x + width] = 1
    return box


def normalize(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (H, W, 3) → float32 (3, H, W), ``(x/255 − mean)/std`` (§4, ImageNet statistics by default)."""
    out = np.empty((3, *image.shape[:2]), dtype=np.float32)
    for channel, plane in enumerate(cv2.split(image)):
        out[channel] = plane
        out[channel] *= np.float32(1 / (255 * std[channel]))
        out[channel] -= np.float32(mean[channel] / std[channel])
    return torch.from_numpy(out)
