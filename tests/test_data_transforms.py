"""Augmentations and datasets of DESIGN.md §4: rescale rule, Pillow-equal rescale and blur, padding 255/254,
CutMix box, determinism."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter, ImageOps
from pytorch_lightning import seed_everything

from corrmatch.data import AugmentConfig, LabeledDataset, SplitEntry, UnlabeledDataset, ValDataset, cutmix_box
from corrmatch.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RescalePadCrop,
    build_geometric,
    build_strong,
    normalize,
    pillow_nearest_indices,
    rescaled_size,
)

FIXED = AugmentConfig(scale_range=(1.0, 1.0), hflip_p=0.0)


def write_sample(root, name: str, width: int, height: int, seed: int = 0) -> SplitEntry:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = rng.integers(0, 5, (height, width), dtype=np.uint8)
    mask[0, 0] = 255
    Image.fromarray(image).save(root / f"{name}.png")
    Image.fromarray(mask).save(root / f"{name}_mask.png")
    return SplitEntry(f"{name}.png", f"{name}_mask.png", f"test:{name}")


def unnormalize(tensor: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return ((tensor * std + mean) * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def texture(kind: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random uint8 test images: full-range noise, or low-contrast texture (levels 100–115)."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return (100 + rng.integers(0, 16, shape)).astype(np.uint8)


def pillow_rescale_crop(
    array: np.ndarray, size: tuple[int, int], top: int, left: int, crop: int, fill: int
) -> np.ndarray:
    """The reference's steps with Pillow: whole-image resize, pad right/bottom, crop."""
    height, width = size
    resample = Image.BILINEAR if array.ndim == 3 else Image.NEAREST
    image = Image.fromarray(array).resize((width, height), resample)
    pad = (0, 0, max(crop - width, 0), max(crop - height, 0))
    image = ImageOps.expand(image, border=pad, fill=fill)
    return np.asarray(image.crop((left, top, left + crop, top + crop)))


def crop_offsets(size: tuple[int, int], crop: int) -> list[tuple[int, int]]:
    """Top-left corners to test: both extremes and an interior point, per axis."""
    rows, cols = max(size[0] - crop, 0), max(size[1] - crop, 0)
    return [(0, 0), (rows, cols), (rows // 3, (2 * cols) // 3)]


def scaled(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    height, width = shape
    return rescaled_size(height, width, (scale, scale), random.Random(0))


@pytest.mark.parametrize("shape", [(375, 500), (500, 375), (64, 64)])
def test_rescaled_size_rule(shape):
    height, width = shape
    rng = random.Random(0)
    long_side, other = max(shape), min(shape)
    seen = set()
    for _ in range(300):
        size = rescaled_size(height, width, (0.5, 2.0), rng)
        target, resized_other = (size[0], size[1]) if height > width else (size[1], size[0])
        assert int(0.5 * long_side) <= target <= int(2.0 * long_side)
        assert resized_other == int(other * target / long_side + 0.5)
        seen.add(target)
    assert min(seen) < 0.6 * long_side and max(seen) > 1.9 * long_side


@pytest.mark.parametrize("kind", ["noise", "low_contrast"])
@pytest.mark.parametrize("shape", [(375, 500), (333, 250), (500, 150)])  # (500, 150) shrinks vertical-first
@pytest.mark.parametrize("scale", [0.5, 0.75, 1.3, 2.0])
def test_rescale_crop_equals_pillow_resize_pad_crop(scale, shape, kind):
    image = texture(kind, (*shape, 3), seed=int(scale * 100))
    size, crop = scaled(shape, scale), 321
    transform = RescalePadCrop(crop)
    for top, left in crop_offsets(size, crop):
        ours = transform.apply(image, size=size, top=top, left=left)
        expected = pillow_rescale_crop(image, size, top, left, crop, fill=0)
        assert ours.shape == expected.shape == (crop, crop, 3) and ours.dtype == np.uint8
        assert np.abs(ours.astype(int) - expected).max() == 0, (size, top, left)


def test_rescale_crop_equals_pillow_on_random_sizes():
    rng = random.Random(5)
    for trial in range(40):
        height, width = rng.randint(40, 260), rng.randint(40, 260)
        image = texture("noise" if trial % 2 else "low_contrast", (height, width, 3), seed=trial)
        size, crop = rescaled_size(height, width, (0.5, 2.0), rng), rng.randint(16, 200)
        top, left = rng.randint(0, max(size[0] - crop, 0)), rng.randint(0, max(size[1] - crop, 0))
        ours = RescalePadCrop(crop).apply(image, size=size, top=top, left=left)
        assert np.array_equal(ours, pillow_rescale_crop(image, size, top, left, crop, fill=0))


@pytest.mark.parametrize("fill", [255, 254])
@pytest.mark.parametrize("scale", [0.5, 0.75, 1.3, 2.0])
def test_rescale_crop_mask_equals_pillow_nearest(scale, fill):
    shape, crop = (375, 500), 321
    mask = np.random.default_rng(1).integers(0, 21, shape, dtype=np.uint8)
    mask[40:90, 100:180] = 255
    size = scaled(shape, scale)
    transform = RescalePadCrop(crop, mask_fill=fill)
    for top, left in crop_offsets(size, crop):
        ours = transform.apply_to_mask(mask, size=size, top=top, left=left)
        assert np.array_equal(ours, pillow_rescale_crop(mask, size, top, left, crop, fill=fill))


def test_pillow_nearest_indices_match_pillow():
    for in_size in [*range(1, 41), 187, 281, 333, 375, 500, 501]:
        ramp = np.arange(in_size, dtype=np.int32)[None, :]
        for out_size in range(max(in_size // 2, 1), 2 * in_size + 1, max(in_size // 20, 1)):
            pillow = np.asarray(Image.fromarray(ramp).resize((out_size, 1), Image.NEAREST))[0]
            assert np.array_equal(pillow_nearest_indices(in_size, out_size), pillow), (in_size, out_size)


def test_rescale_crop_draws_uniform_offsets_from_its_generator():
    transform = RescalePadCrop(100, scale_range=(1.0, 1.0))
    transform.set_random_seed(0)
    draws = [transform.get_params_dependent_on_data({"shape": (130, 160, 3)}, {}) for _ in range(2000)]
    tops, lefts = [d["top"] for d in draws], [d["left"] for d in draws]
    assert {d["size"] for d in draws} == {(130, 160)}
    assert set(tops) == set(range(31)) and set(lefts) == set(range(61))
    assert abs(np.mean(lefts) - 30) < 2
    transform.set_random_seed(0)
    assert transform.get_params_dependent_on_data({"shape": (130, 160, 3)}, {}) == draws[0]


def test_geometric_pipeline_is_pillow_rescale_pad_crop():
    image, mask = texture("noise", (60, 80, 3), seed=3), texture("noise", (60, 80), seed=4) % 5
    pipeline = build_geometric(64, 254, AugmentConfig(scale_range=(0.5, 2.0), hflip_p=0.0))
    pipeline.set_random_seed(7)
    for _ in range(20):
        out = pipeline(image=image, mask=mask)
        params = pipeline.transforms[0].params
        args = (params["size"], params["top"], params["left"], 64)
        assert np.array_equal(out["image"], pillow_rescale_crop(image, *args, fill=0))
        assert np.array_equal(out["mask"], pillow_rescale_crop(mask, *args, fill=254))


@pytest.mark.parametrize("kind", ["noise", "low_contrast"])
@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0, 2.0])
def test_strong_blur_equals_pillow_gaussian_blur(sigma, kind):
    image = texture(kind, (97, 121, 3), seed=int(sigma * 10))
    blur_only = AugmentConfig(color_jitter_p=0.0, grayscale_p=0.0, blur_p=1.0, blur_sigma=(sigma, sigma))
    ours = build_strong(blur_only)(image=image)["image"]
    expected = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=sigma)))
    assert ours.shape == expected.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - expected).max() == 0


def test_strong_blur_draws_sigma_and_probability_from_its_generator():
    image = texture("noise", (32, 32, 3))
    config = AugmentConfig(color_jitter_p=0.0, grayscale_p=0.0, blur_p=0.5, blur_sigma=(0.3, 1.7))
    pipeline = build_strong(config)
    blur = pipeline.transforms[-1]
    pipeline.set_random_seed(11)
    sigmas = []
    for _ in range(400):
        out = pipeline(image=image)["image"]
        sigma = blur.params.get("sigma")
        if sigma is None:
            assert np.array_equal(out, image)
            continue
        expected = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=sigma)))
        assert np.array_equal(out, expected)
        sigmas.append(sigma)
    assert abs(len(sigmas) / 400 - 0.5) < 0.08
    assert 0.3 <= min(sigmas) < 0.4 and 1.6 < max(sigmas) <= 1.7
    pipeline.set_random_seed(11)
    first = [pipeline(image=image)["image"] for _ in range(5)]
    pipeline.set_random_seed(11)
    assert all(np.array_equal(a, pipeline(image=image)["image"]) for a in first)


def test_cutmix_box_ranges_and_probability():
    rng = random.Random(0)
    size, draws = 321, 3000
    areas, ratios, empty = [], [], 0
    for _ in range(draws):
        box = cutmix_box(size, rng)
        assert box.dtype == np.uint8 and box.shape == (size, size)
        if not box.any():
            empty += 1
            continue
        rows, cols = np.flatnonzero(box.any(1)), np.flatnonzero(box.any(0))
        height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert box.sum() == height * width  # one solid rectangle
        areas.append(height * width / size**2)
        ratios.append(height / width)
    assert abs(empty / draws - 0.5) < 0.04
    assert 0.02 * 0.9 <= min(areas) < 0.03 and 0.37 < max(areas) <= 0.4
    assert 0.3 * 0.95 <= min(ratios) < 0.35 and 3.0 < max(ratios) <= (1 / 0.3) * 1.05
    assert abs(np.mean(areas) - 0.21) < 0.02  # area fraction ~ U[0.02, 0.4]


def test_cutmix_box_respects_configuration():
    rng = random.Random(1)
    assert all(cutmix_box(32, rng, p=1.0).any() for _ in range(50))
    assert not any(cutmix_box(32, rng, p=0.0).any() for _ in range(50))


def test_labeled_padding_is_255(tmp_path):
    entry = write_sample(tmp_path, "small", 20, 15)
    item = LabeledDataset(tmp_path, [entry], crop_size=32, augment=FIXED)[0]
    mask = item["mask"].numpy()
    original = np.array(Image.open(tmp_path / entry.mask))
    assert np.array_equal(mask[:15, :20], original)
    assert (mask[15:, :] == 255).all() and (mask[:, 20:] == 255).all()
    image = unnormalize(item["image"])
    assert (image[15:] == 0).all() and (image[:, 20:] == 0).all()
    assert np.array_equal(image[:15, :20], np.array(Image.open(tmp_path / entry.image)))


@pytest.mark.parametrize("with_mask", [True, False])
@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_unlabeled_ignore_marks_exactly_the_padding(tmp_path, with_mask, flip):
    entry = write_sample(tmp_path, "small", 20, 15)
    if not with_mask:
        entry = entry._replace(mask=None)
    config = AugmentConfig(scale_range=(1.0, 1.0), hflip_p=flip)
    item = UnlabeledDataset(tmp_path, [entry], crop_size=32, augment=config)[0]
    padding = np.ones((32, 32), dtype=bool)
    padding[:15, :20] = False
    if flip:
        padding = padding[:, ::-1]
    assert np.array_equal(item["ignore"].numpy() == 255, padding)
    assert set(np.unique(item["ignore"].numpy())) == {0, 255}
    assert (unnormalize(item["image_w"])[padding] == 0).all()


def test_item_shapes_and_dtypes(tmp_path):
    entries = [write_sample(tmp_path, f"s{i}", 60, 40, seed=i) for i in range(3)]
    labeled = LabeledDataset(tmp_path, entries, crop_size=48)[1]
    assert labeled["image"].shape == (3, 48, 48) and labeled["image"].dtype == torch.float32
    assert labeled["mask"].shape == (48, 48) and labeled["mask"].dtype == torch.long
    one = UnlabeledDataset(tmp_path, entries, crop_size=48)[0]
    assert set(one) == {"image_w", "image_s", "ignore", "cutmix_box", "mask_w"}  # lines with masks
    unmasked = [entry._replace(mask=None) for entry in entries]
    assert "mask_w" not in UnlabeledDataset(tmp_path, unmasked, crop_size=48)[0]
    two = UnlabeledDataset(tmp_path, unmasked, crop_size=48, num_strong_views=2)[0]
    assert set(two) == {"image_w", "image_s", "image_s2", "ignore", "cutmix_box", "cutmix_box2"}
    for key in ("image_w", "image_s", "image_s2"):
        assert two[key].shape == (3, 48, 48) and two[key].dtype == torch.float32
    for key in ("ignore", "cutmix_box", "cutmix_box2"):
        assert two[key].shape == (48, 48) and two[key].dtype == torch.long
    assert set(np.unique(two["cutmix_box"].numpy())) <= {0, 1}
    val = ValDataset(tmp_path, entries)[2]
    assert val["image"].shape == (3, 40, 60) and val["mask"].shape == (40, 60) and val["id"] == "s2.png"


def test_same_seed_gives_identical_items(tmp_path):
    entries = [write_sample(tmp_path, f"s{i}", 50, 30, seed=i) for i in range(2)]
    unlabeled = UnlabeledDataset(tmp_path, entries, crop_size=40, num_strong_views=2)
    labeled = LabeledDataset(tmp_path, entries, crop_size=40)

    def draw() -> list[dict[str, torch.Tensor]]:
        return [unlabeled[i % 2] for i in range(4)] + [labeled[i % 2] for i in range(4)]

    seed_everything(3)
    first = draw()
    seed_everything(3)
    second = draw()
    seed_everything(4)
    third = draw()
    assert all(torch.equal(a[k], b[k]) for a, b in zip(first, second) for k in a)
    assert not all(torch.equal(a[k], b[k]) for a, b in zip(first, third) for k in a)
    unlabeled.rank = 1  # another rank draws another stream from the same seed
    seed_everything(3)
    assert not all(torch.equal(first[0][k], unlabeled[0][k]) for k in first[0])


def test_strong_view_parameters_are_honoured(tmp_path):
    entry = write_sample(tmp_path, "s", 40, 40)
    gray = AugmentConfig(scale_range=(1.0, 1.0), color_jitter_p=0.0, grayscale_p=1.0, blur_p=0.0)
    item = UnlabeledDataset(tmp_path, [entry], crop_size=40, augment=gray)[0]
    strong = unnormalize(item["image_s"]).astype(int)
    assert (
        np.abs(strong[..., 0] - strong[..., 1]).max() <= 1
        and np.abs(strong[..., 1] - strong[..., 2]).max() <= 1
    )
    identity = AugmentConfig(scale_range=(1.0, 1.0), color_jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    item = UnlabeledDataset(tmp_path, [entry], crop_size=40, augment=identity)[0]
    assert torch.equal(item["image_s"], item["image_w"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale_range": (2.0, 0.5)},
        {"hflip_p": 1.5},
        {"blur_sigma": (0.0, -1.0)},
        {"cutmix_area": (0.1, 1.5)},
        {"color_jitter": (0.5, 0.5, 0.5, 0.7)},
        {"cutmix_area": (0.5, 0.9), "cutmix_ratio": (3.0, 4.0)},
    ],
)
def test_augment_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        AugmentConfig(**kwargs)


def test_normalize_matches_imagenet_formula():
    image = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    expected = (
        torch.from_numpy(image).permute(2, 0, 1) / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]
    ) / (torch.tensor(IMAGENET_STD)[:, None, None])
    assert torch.allclose(normalize(image, IMAGENET_MEAN, IMAGENET_STD), expected, atol=1e-5)
    assert math.isclose(
        float(normalize(np.zeros((1, 1, 3), np.uint8), IMAGENET_MEAN, IMAGENET_STD)[0]),
        -0.485 / 0.229,
        rel_tol=1e-5,
    )
