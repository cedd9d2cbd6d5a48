"""Augmentations and datasets of DESIGN.md §4: rescale rule, padding 255/254, CutMix box, determinism."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_lightning import seed_everything

from corrmatch.data import AugmentConfig, LabeledDataset, SplitEntry, UnlabeledDataset, ValDataset, cutmix_box
from corrmatch.data.transforms import IMAGENET_MEAN, IMAGENET_STD, LongSideRescale, normalize

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


@pytest.mark.parametrize("shape", [(375, 500), (500, 375), (64, 64)])
def test_long_side_rescale_rule(shape):
    height, width = shape
    rescale = LongSideRescale((0.5, 2.0))
    rescale.set_random_seed(0)
    long_side, other = max(shape), min(shape)
    seen = set()
    for _ in range(300):
        size = rescale.get_params_dependent_on_data({"shape": shape}, {})["size"]
        target, resized_other = (size[0], size[1]) if height > width else (size[1], size[0])
        assert int(0.5 * long_side) <= target <= int(2.0 * long_side)
        assert resized_other == int(other * target / long_side + 0.5)
        seen.add(target)
    assert min(seen) < 0.6 * long_side and max(seen) > 1.9 * long_side


def test_rescale_interpolation_keeps_mask_values():
    mask = np.random.default_rng(0).integers(0, 3, (30, 40), dtype=np.uint8)
    mask[5:10, 5:10] = 255
    rescale = LongSideRescale((1.5, 1.5))
    out = rescale.apply_to_mask(mask, size=(45, 60))
    assert out.shape == (45, 60) and set(np.unique(out)) <= {0, 1, 2, 255}


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
    assert set(one) == {"image_w", "image_s", "ignore", "cutmix_box"}
    two = UnlabeledDataset(tmp_path, entries, crop_size=48, num_strong_views=2)[0]
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
