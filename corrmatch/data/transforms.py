"""The paper's augmentations on albumentations, computing what the authors' PIL + torchvision pipeline
computes (DESIGN.md §4).

Geometric pipeline (labeled and unlabeled): :class:`RescalePadCrop` (long-side rescale → pad right/bottom
to the crop, image 0, mask 255 labeled / 254 unlabeled → random crop) → horizontal flip. Strong view:
colour jitter → grayscale → :class:`PillowGaussianBlur`; plus a CutMix box drawn by :func:`cutmix_box`.

Against the reference, for the same input and the same random parameters:

* Rescale, pad, crop, flip: identical, bit for bit. The image is Pillow's ``resize(size, BILINEAR)``
  (whose filter widens when shrinking: antialiased), the mask Pillow's ``NEAREST``, both computed for the
  crop's pixels only (:func:`pillow_bilinear_crop`, :func:`pillow_nearest_indices`); checked against
  Pillow's whole-image resize on 3000 random sizes and crops, and in tests/test_data_transforms.py.
* Gaussian blur: Pillow's own ``GaussianBlur(radius=σ)`` (three 8-bit box blurs per axis, edges
  replicated), σ ~ U(blur_sigma), with probability blur_p: identical.
* ``A.ColorJitter`` follows torchvision (brightness scales, contrast blends with the grey mean,
  saturation blends with grey, hue shifts, in a random order) but computes with OpenCV. Measured per
  operation against torchvision on PIL images, same factor (300 random 96×128 images: noise,
  low-contrast, smooth): brightness identical; contrast ≤ 1 level on 7.5 % of the pixels and saturation
  ≤ 1 level on 46 % (PIL truncates its blends and rounds the grey mean to an integer, OpenCV rounds);
  hue up to 21 levels (mean 0.8, 18 % of the pixels off by more than 1, 99th percentile 7), as it is
  shifted on OpenCV's 0–179 hue scale (2° steps) rather than PIL's 0–255 HSV.
* ``A.ToGray`` uses OpenCV's RGB→grey with the ITU-R 601-2 weights of PIL's ``convert("L")``; it differs
  by 1 level on 0.13 % of all 2²⁴ colours (rounding).
* :func:`normalize` is within 5e-7 of torchvision's ``ToTensor`` + ``Normalize``.

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
import PIL
import torch
from PIL import Image, ImageFilter

from corrmatch.constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentConfig",
    "PillowGaussianBlur",
    "RescalePadCrop",
    "build_geometric",
    "build_strong",
    "cutmix_box",
    "item_generators",
    "normalize",
    "pillow_bilinear_crop",
    "pillow_gaussian_blur",
    "pillow_nearest_indices",
    "rescaled_size",
    "seed_pipelines",
]

_PILLOW_MAJOR = int(PIL.__version__.split(".")[0])


def _check_range(name: str, value: tuple[float, float], low: float = 0.0, high: float = math.inf) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ValueError(f"augment.{name} must be (min, max) with {low} <= min <= max <= {high}, got {value}")


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"augment.{name} must be a probability in [0, 1], got {value}")


@dataclass
class AugmentConfig:
    """Every augmentation parameter of DESIGN.md §4; the defaults are the paper's.

    Args:
        scale_range: the long side is rescaled by a factor drawn from this range before the crop.
        hflip_p: probability of a horizontal flip.
        color_jitter: strong view: brightness, contrast, saturation and hue jitter strengths (hue
            0.25 turns hues by up to 90 degrees).
        color_jitter_p: strong view: probability of the colour jitter.
        grayscale_p: strong view: probability of turning the image grey.
        blur_p: strong view: probability of a Gaussian blur.
        blur_sigma: strong view: range of the blur's sigma.
        cutmix_p: strong view: probability of a CutMix box.
        cutmix_area: the box's area as a share of the crop, drawn from this range.
        cutmix_ratio: the box's aspect ratio, drawn from this range.
        mean: per-channel mean of the normalisation (x/255 − mean)/std (ImageNet's).
        std: per-channel standard deviation of the normalisation (ImageNet's).
    """

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


def rescaled_size(
    height: int, width: int, scale_range: tuple[float, float], rng: random.Random
) -> tuple[int, int]:
    """(height, width) after the §4 rescale: the long side L becomes an integer drawn uniformly from
    [int(lo·L), int(hi·L)], the other side ``int(s · other / L + 0.5)`` (DESIGN.md §4)."""
    long_side = max(height, width)
    target = rng.randint(int(long_side * scale_range[0]), int(long_side * scale_range[1]))
    if height > width:
        size = (target, int(width * target / height + 0.5))
    else:
        size = (int(height * target / width + 0.5), target)
    return max(size[0], 1), max(size[1], 1)


def pillow_nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of every output pixel of Pillow's NEAREST resize along one axis (DESIGN.md §4).

    Pillow steps the source position ``(i + ½)·in/out`` by repeated double-precision addition and
    truncates it; this repeats those additions, so the indices are Pillow's, bit for bit.
    """
    step = in_size / out_size
    positions = np.full(out_size, step)
    positions[0] = step * 0.5
    return np.cumsum(positions).astype(np.intp)


def _bilinear_source_span(in_size: int, out_size: int, start: int, stop: int) -> tuple[int, int]:
    """Source lines Pillow's BILINEAR filter reads for output lines [start, stop), one spare each side."""
    scale = in_size / out_size
    support = max(scale, 1.0)
    first = int((start + 0.5) * scale - support + 0.5) - 1
    last = int((stop - 0.5) * scale + support + 0.5) + 1
    return max(first, 0), min(last, in_size)


def _pillow_resizes_columns_first(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> bool:
    """Whether Pillow's two-pass resize runs the vertical pass first (DESIGN.md §4): from Pillow 13 when the
    height loses more than twice as many pixels as the width; before, never."""
    (height, width), (out_height, out_width) = in_shape[:2], out_shape[:2]
    lost_rows, lost_columns = height - out_height, width - out_width
    return _PILLOW_MAJOR >= 13 and lost_rows > 0 and lost_rows > 2 * lost_columns


def _bilinear_crop_rows_first(
    image: np.ndarray, size: tuple[int, int], top: int, left: int, crop: int
) -> np.ndarray:
    """:func:`pillow_bilinear_crop` for a horizontal-first resize (Pillow crops outside the image as 0)."""
    height = image.shape[0]
    out_height, out_width = size
    first, last = _bilinear_source_span(height, out_height, top, min(top + crop, out_height))
    rows = Image.fromarray(image[first:last]).resize((out_width, last - first), Image.BILINEAR)
    right = min(left + crop, out_width)
    columns = rows.crop((left, -first, right, height - first))
    resized = columns.resize((right - left, out_height), Image.BILINEAR)
    return np.array(resized.crop((0, top, crop, top + crop)))


def pillow_bilinear_crop(
    image: np.ndarray, size: tuple[int, int], top: int, left: int, crop: int
) -> np.ndarray:
    """``Image.resize((w, h), BILINEAR)`` of the whole uint8 image, padded right and bottom with 0, then
    its part [top, top + crop) × [left, left + crop): bit for bit, computing little more (DESIGN.md §4).

    Pillow resamples along one axis, rounds to uint8, then along the other, with coefficients that depend
    only on the input and output sizes; so two one-axis Pillow resizes in Pillow's order compute the
    same, and each can be limited to what the crop needs: the first pass to the source lines the crop
    reads (the others stay 0 and only reach discarded output), the second to the crop's lines. Both
    passes round alike, so a vertical-first resize is the transpose of a horizontal-first one.
    """
    if _pillow_resizes_columns_first(image.shape, size):
        transposed = _bilinear_crop_rows_first(image.swapaxes(0, 1), (size[1], size[0]), left, top, crop)
        return np.ascontiguousarray(transposed.swapaxes(0, 1))
    return _bilinear_crop_rows_first(image, size, top, left, crop)


def pillow_gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Pillow's ``ImageFilter.GaussianBlur(radius=sigma)`` of a uint8 image (DESIGN.md §4): three box
    blurs per axis, each rounded to uint8, edges replicated."""
    return np.array(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=sigma)))


class RescalePadCrop(A.DualTransform):
    """§4 steps (1)–(3) as one transform: long-side rescale (:func:`rescaled_size`), pad right and
    bottom to the crop (image 0, mask ``mask_fill``), random crop (DESIGN.md §4).

    The crop's top-left corner is uniform over the padded image, as ``random.randint(0, W − crop)``.
    Only the crop is computed; it equals Pillow's BILINEAR resize of the whole image
    (:func:`pillow_bilinear_crop`) and NEAREST resize of the whole mask (:func:`pillow_nearest_indices`),
    padded, then cropped. Every draw comes from the transform's ``py_random`` (see :func:`seed_pipelines`).
    """

    def __init__(
        self,
        crop_size: int,
        scale_range: tuple[float, float] = (0.5, 2.0),
        mask_fill: int = 255,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.mask_fill = mask_fill

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        size = rescaled_size(*params["shape"][:2], self.scale_range, self.py_random)
        left = self.py_random.randint(0, max(size[1] - self.crop_size, 0))
        top = self.py_random.randint(0, max(size[0] - self.crop_size, 0))
        return {"size": size, "top": top, "left": left}

    def apply(self, img: np.ndarray, size: tuple[int, int], top: int, left: int, **params: Any) -> np.ndarray:
        return pillow_bilinear_crop(img, size, top, left, self.crop_size)

    def apply_to_mask(
        self, mask: np.ndarray, size: tuple[int, int], top: int, left: int, **params: Any
    ) -> np.ndarray:
        rows = pillow_nearest_indices(mask.shape[0], size[0])[top : top + self.crop_size]
        columns = pillow_nearest_indices(mask.shape[1], size[1])[left : left + self.crop_size]
        out = np.full((self.crop_size, self.crop_size, *mask.shape[2:]), self.mask_fill, dtype=mask.dtype)
        out[: rows.size, : columns.size] = mask[rows][:, columns]
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("crop_size", "scale_range", "mask_fill")


class PillowGaussianBlur(A.ImageOnlyTransform):
    """Pillow's Gaussian blur (:func:`pillow_gaussian_blur`) with σ ~ U(sigma_range) drawn from the
    transform's ``py_random``, applied with probability ``p`` (DESIGN.md §4)."""

    def __init__(self, sigma_range: tuple[float, float] = (0.1, 2.0), p: float = 0.5) -> None:
        super().__init__(p=p)
        self.sigma_range = sigma_range

    def get_params(self) -> dict[str, Any]:
        return {"sigma": self.py_random.uniform(*self.sigma_range)}

    def apply(self, img: np.ndarray, sigma: float, **params: Any) -> np.ndarray:
        return pillow_gaussian_blur(img, sigma)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("sigma_range",)


def build_geometric(crop_size: int, mask_fill: int, config: AugmentConfig) -> A.Compose:
    """Rescale → pad right/bottom (image 0, mask ``mask_fill``) → random crop → hflip (DESIGN.md §4)."""
    return A.Compose(
        [
            RescalePadCrop(crop_size, config.scale_range, mask_fill),
            A.HorizontalFlip(p=config.hflip_p),
        ]
    )


def build_strong(config: AugmentConfig) -> A.Compose:
    """Colour jitter (p=0.8) → grayscale (p=0.2) → Pillow Gaussian blur (p=0.5, σ range) (DESIGN.md §4)."""
    brightness, contrast, saturation, hue = config.color_jitter
    return A.Compose(
        [
            A.ColorJitter(brightness, contrast, saturation, hue, p=config.color_jitter_p),
            A.ToGray(num_output_channels=3, method="weighted_average", p=config.grayscale_p),
            PillowGaussianBlur(config.blur_sigma, p=config.blur_p),
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
