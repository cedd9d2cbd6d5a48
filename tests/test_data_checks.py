"""Input validation (DESIGN.md §4): each bad input gives one one-line DataError naming the file; odd image
modes are converted, not rejected."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from corrmatch.data import (
    DataError,
    DataWarning,
    LabeledDataset,
    SemiSupervisedDataModule,
    parse_split,
    read_image,
    read_mask,
    validate_dataset,
    validate_split,
)
from corrmatch.data.io import _rgb_with_pil


def make_root(tmp_path, count: int = 3, size: tuple[int, int] = (12, 8)):
    """``count`` RGB JPEGs with palette masks (values 0..2, 255) and a labeled/unlabeled/val split."""
    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    (root / "gt").mkdir()
    lines = []
    for index in range(count):
        Image.fromarray(np.full((size[1], size[0], 3), 40 * index, np.uint8)).save(
            root / "img" / f"{index}.jpg"
        )
        mask = Image.fromarray(np.array([[0, 1, 2, 255] * (size[0] // 4)] * size[1], np.uint8))
        mask.putpalette([0] * 768)
        mask.save(root / "gt" / f"{index}.png")
        lines.append(f"img/{index}.jpg gt/{index}.png")
    (root / "labeled.txt").write_text(lines[0] + "\n")
    (root / "unlabeled.txt").write_text("\n".join(lines[1:]) + "\n")
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    return root


def raises_naming(match: str, function, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        function(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert match in message, message
    return message


def test_valid_dataset_passes(tmp_path):
    root = make_root(tmp_path)
    entries = validate_dataset(
        root, root / "labeled.txt", root / "unlabeled.txt", root / "val.txt", num_classes=3
    )
    assert {role: len(found) for role, found in entries.items()} == {"labeled": 1, "unlabeled": 2, "val": 3}


def test_missing_root(tmp_path):
    raises_naming("nowhere", validate_split, tmp_path / "nowhere", tmp_path / "x.txt", "val")


def test_missing_split_file(tmp_path):
    root = make_root(tmp_path)
    raises_naming("missing.txt", validate_split, root, root / "missing.txt", "labeled")


def test_empty_split_file(tmp_path):
    root = make_root(tmp_path)
    (root / "empty.txt").write_text("\n\n")
    raises_naming("empty.txt", validate_split, root, root / "empty.txt", "val")


@pytest.mark.parametrize("line", ["img/0.jpg gt/0.png extra", "img/0.jpg"])
def test_malformed_line_names_file_and_line(tmp_path, line):
    root = make_root(tmp_path)
    (root / "bad.txt").write_text(f"img/1.jpg gt/1.png\n{line}\n")
    raises_naming("bad.txt:2", validate_split, root, root / "bad.txt", "labeled", 3)


def test_unlabeled_lines_may_omit_the_mask(tmp_path):
    root = make_root(tmp_path)
    (root / "u.txt").write_text("img/1.jpg\nimg/2.jpg gt/2.png\n")
    entries = validate_split(root, root / "u.txt", "unlabeled", 3)
    assert [entry.mask for entry in entries] == [None, "gt/2.png"]


@pytest.mark.parametrize(
    ("line", "named"),
    [("img/9.jpg gt/0.png", "image 'img/9.jpg'"), ("img/0.jpg gt/9.png", "mask 'gt/9.png'")],
)
def test_listed_file_missing(tmp_path, line, named):
    root = make_root(tmp_path)
    (root / "s.txt").write_text(f"img/1.jpg gt/1.png\n{line}\n")
    raises_naming(f"s.txt:2: {named} not found", validate_split, root, root / "s.txt", "val", 3)


def test_unreadable_image(tmp_path):
    root = make_root(tmp_path)
    (root / "img" / "0.jpg").write_bytes(b"not an image at all")
    message = raises_naming("val.txt:1", validate_split, root, root / "val.txt", "val", 3)
    assert "img/0.jpg" in message


def test_size_mismatch(tmp_path):
    root = make_root(tmp_path)
    Image.fromarray(np.zeros((9, 12, 3), np.uint8)).save(root / "img" / "1.jpg")
    message = raises_naming("val.txt:2", validate_split, root, root / "val.txt", "val", 3)
    assert "12x9" in message and "12x8" in message and "gt/1.png" in message


@pytest.mark.parametrize("role", ["labeled", "val"])
def test_mask_values_out_of_range(tmp_path, role):
    root = make_root(tmp_path)
    Image.fromarray(np.array([[0, 1, 7, 254]] * 8 * 3, np.uint8).reshape(8, 12)).save(root / "gt" / "0.png")
    message = raises_naming(f"{role}.txt:1", validate_split, root, root / f"{role}.txt", role, 3)
    assert "gt/0.png" in message and "7, 254" in message
    validate_split(root, root / f"{role}.txt", role, 3, check_masks=False)  # the scan is optional


def test_unlabeled_masks_are_not_scanned(tmp_path):
    root = make_root(tmp_path)
    Image.fromarray(np.full((8, 12), 9, np.uint8)).save(root / "gt" / "1.png")
    validate_split(root, root / "unlabeled.txt", "unlabeled", 3)


def test_rgb_mask_rejected(tmp_path):
    root = make_root(tmp_path)
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(root / "gt" / "2.png")
    message = raises_naming("val.txt:3", validate_split, root, root / "val.txt", "val", 3)
    assert "mode RGB" in message and "gt/2.png" in message


def test_overlap_warns(tmp_path):
    root = make_root(tmp_path)
    (root / "unlabeled.txt").write_text("img/0.jpg gt/0.png\nimg/1.jpg gt/1.png\n")
    with pytest.warns(DataWarning, match="img/0.jpg"):
        validate_dataset(root, root / "labeled.txt", root / "unlabeled.txt", num_classes=3)


def test_datamodule_setup_runs_the_checks(tmp_path):
    root = make_root(tmp_path)
    (root / "val.txt").write_text("img/0.jpg gt/0.png\nimg/5.jpg gt/0.png\n")
    module = SemiSupervisedDataModule(
        root=str(root),
        labeled_split=str(root / "labeled.txt"),
        unlabeled_split=str(root / "unlabeled.txt"),
        val_split=str(root / "val.txt"),
        num_classes=3,
        preset="folder",
    )
    raises_naming("val.txt:2", module.setup, "fit")
    missing = SemiSupervisedDataModule(root=str(root), preset="pascal", val_split=str(root / "val.txt"))
    raises_naming("labeled_split", missing.setup, "fit")
    raises_naming("data.root", SemiSupervisedDataModule, preset="cityscapes")


def test_loading_error_names_the_split_line(tmp_path):
    root = make_root(tmp_path)
    Image.fromarray(np.zeros((9, 12, 3), np.uint8)).save(root / "img" / "0.jpg")
    dataset = LabeledDataset(root, parse_split(root / "labeled.txt"), crop_size=8)
    raises_naming("labeled.txt:1", dataset.__getitem__, 0)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((4, 6), 77, np.uint8), 77),  # grayscale
        (np.dstack([np.full((4, 6, 3), 90, np.uint8), np.zeros((4, 6), np.uint8)]), 90),  # RGBA
        (np.full((4, 6), 0x7F80, np.uint16), 0x7F),  # 16-bit: scaled to 8 bits
        (np.full((4, 6), 0xFFFF, np.uint16), 0xFF),
    ],
)
def test_image_modes_are_converted_to_rgb(tmp_path, array, expected):
    Image.fromarray(array).save(tmp_path / "x.png")
    image = read_image(tmp_path / "x.png")
    assert image.shape == (4, 6, 3) and image.dtype == np.uint8 and (image == expected).all()


def test_palette_and_pil_only_images_are_converted(tmp_path):
    palette_image = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8))
    palette_image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette_image.save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png")[0, 1].tolist() == [200, 100, 50]
    Image.fromarray(np.full((3, 5), 77, np.uint8)).save(tmp_path / "g.pcx")  # OpenCV cannot read PCX
    converted = read_image(tmp_path / "g.pcx")
    assert converted.shape == (3, 5, 3) and (converted == 77).all()
    Image.fromarray(np.full((3, 5), 1000, np.uint16)).save(tmp_path / "g16.png")
    converted = _rgb_with_pil(str(tmp_path / "g16.png"))  # the fallback's 16-bit branch
    assert converted.shape == (3, 5, 3) and (converted == 1000 >> 8).all()


def test_masks_read_as_indices(tmp_path):
    Image.fromarray(np.array([[3, 255]], np.uint16)).save(tmp_path / "m16.png")
    assert Image.open(tmp_path / "m16.png").mode == "I;16"
    mask = read_mask(tmp_path / "m16.png")
    assert mask.dtype == np.uint8 and mask.tolist() == [[3, 255]]
    palette = Image.fromarray(np.array([[4, 0]], np.uint8))
    palette.putpalette([255] * 768)
    palette.save(tmp_path / "p.png")
    assert read_mask(tmp_path / "p.png").tolist() == [[4, 0]]
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    raises_naming("rgb.png", read_mask, tmp_path / "rgb.png")


def test_grayscale_rgba_and_16_bit_samples_train(tmp_path):
    root = tmp_path
    Image.fromarray(np.full((10, 14), 120, np.uint8)).save(root / "gray.jpg")
    Image.fromarray(np.full((10, 14, 4), 60, np.uint8)).save(root / "rgba.png")
    Image.fromarray(np.full((10, 14), 40000, np.uint16)).save(root / "deep.png")
    Image.fromarray(np.repeat(np.arange(14, dtype=np.uint16)[None] // 7, 10, axis=0)).save(root / "mask16.png")
    lines = "".join(f"{name} mask16.png\n" for name in ("gray.jpg", "rgba.png", "deep.png"))
    (root / "split.txt").write_text(lines)
    validate_split(root, root / "split.txt", "labeled", 2)
    dataset = LabeledDataset(root, root / "split.txt", crop_size=8)
    for index in range(3):
        item = dataset[index]
        assert item["image"].shape == (3, 8, 8) and set(item["mask"].unique().tolist()) <= {0, 1, 255}


def test_labeled_masks_of_a_single_class_are_refused(tmp_path):
    """Masks that together show one class (or none) teach nothing to tell apart: refused, naming the
    split; the validation list may hold one class."""
    root = make_root(tmp_path)
    Image.fromarray(np.zeros((8, 12), np.uint8)).save(root / "gt" / "0.png")
    raises_naming("labeled.txt: the labeled masks hold only class 0 of the 3", validate_split, root, root / "labeled.txt", "labeled", 3)
    Image.fromarray(np.full((8, 12), 255, np.uint8)).save(root / "gt" / "0.png")
    raises_naming("hold no class (every pixel is 255", validate_split, root, root / "labeled.txt", "labeled", 3)
    (root / "one.txt").write_text("img/0.jpg gt/0.png\nimg/1.jpg gt/1.png\n")
    assert len(validate_split(root, root / "one.txt", "labeled", 3)) == 2  # two masks: classes 0, 1, 2
    assert len(validate_split(root, root / "labeled.txt", "val", 3)) == 1
    assert len(validate_split(root, root / "labeled.txt", "labeled", 3, check_masks=False)) == 1
