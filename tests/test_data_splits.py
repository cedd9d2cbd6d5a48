"""Split files (DESIGN.md §4): reproducible byte for byte, non-overlapping, count or fraction, per layout."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from corrmatch.data import DataError, make_splits, parse_split, write_splits
from corrmatch.data.splits import main, parse_amount

TINY = np.zeros((4, 4, 3), np.uint8)
TINY_MASK = np.zeros((4, 4), np.uint8)


def touch_pair(root, image: str, mask: str | None) -> None:
    (root / image).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(TINY).save(root / image)
    if mask is not None:
        (root / mask).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(TINY_MASK).save(root / mask)


def folder_root(tmp_path, count: int = 40, unmasked: int = 5):
    root = tmp_path / "folder"
    for index in range(count):
        has_mask = index >= unmasked
        touch_pair(root, f"images/{index:03d}.png", f"masks/{index:03d}.png" if has_mask else None)
    return root


def read_sets(out) -> dict[str, list[str]]:
    return {name: (out / f"{name}.txt").read_text().splitlines() for name in ("labeled", "unlabeled", "val")}


def test_cli_is_reproducible_and_disjoint(tmp_path, capsys):
    root = folder_root(tmp_path)
    for out in ("a", "b"):
        main(
            [
                "--root",
                str(root),
                "--preset",
                "folder",
                "--labeled",
                "6",
                "--seed",
                "3",
                "--out",
                str(tmp_path / out),
            ]
        )
    for name in ("labeled", "unlabeled", "val"):
        assert (tmp_path / "a" / f"{name}.txt").read_bytes() == (tmp_path / "b" / f"{name}.txt").read_bytes()
    sets = read_sets(tmp_path / "a")
    assert [len(sets[name]) for name in ("labeled", "unlabeled", "val")] == [6, 30, 4]
    images = {name: {line.split()[0] for line in lines} for name, lines in sets.items()}
    assert not images["labeled"] & images["unlabeled"] and not images["val"] & (
        images["labeled"] | images["unlabeled"]
    )
    assert len(images["labeled"] | images["unlabeled"] | images["val"]) == 40
    assert all(len(line.split()) == 2 for line in sets["labeled"] + sets["val"])
    assert sum(len(line.split()) == 1 for line in sets["unlabeled"]) == 5  # unmasked images stay unlabeled
    assert sets["labeled"] == sorted(sets["labeled"])
    parse_split(tmp_path / "a" / "labeled.txt")
    assert "labeled.txt: 6 samples" in capsys.readouterr().out


def test_seed_changes_the_draw_and_fractions_parse(tmp_path):
    root = folder_root(tmp_path)
    first = make_splits(root, "folder", 6, seed=0)
    assert make_splits(root, "folder", 6, seed=1) != first
    assert make_splits(root, "folder", parse_amount("0.25"), seed=0) == make_splits(
        root, "folder", Fraction(1, 4)
    )
    assert len(make_splits(root, "folder", Fraction(1, 4))["labeled"]) == 8  # ceil(31 / 4): 35 masks, 4 val
    assert parse_amount("92") == 92 and parse_amount("1/16") == Fraction(1, 16)
    with pytest.raises(ValueError):
        parse_amount("1.5")
    with pytest.raises(DataError, match="cannot draw"):
        make_splits(root, "folder", 500)


def test_pascal_counts_come_from_the_fine_set(tmp_path):
    root = tmp_path / "voc"
    names = [f"2007_{index:06d}" for index in range(30)]
    for name in names:
        touch_pair(root, f"JPEGImages/{name}.jpg", f"SegmentationClassAug/{name}.png")
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "val.txt").write_text("\n".join(names[:5]) + "\n")
    (sets / "train.txt").write_text("\n".join(names[5:15]) + "\n")
    splits = make_splits(root, "pascal", 4, seed=0)
    assert splits["val"] == [f"JPEGImages/{n}.jpg SegmentationClassAug/{n}.png" for n in names[:5]]
    labeled = {line.split()[0] for line in splits["labeled"]}
    assert len(labeled) == 4 and labeled <= {f"JPEGImages/{n}.jpg" for n in names[5:15]}
    assert len(splits["unlabeled"]) == 21
    fraction = make_splits(root, "pascal", Fraction(1, 2), seed=0)
    assert len(fraction["labeled"]) == 13  # ceil(25 / 2) from the whole training pool


def test_cityscapes_and_coco_layouts(tmp_path):
    city = tmp_path / "cityscapes"
    for subset, count in (("train", 16), ("val", 3)):
        for index in range(count):
            stem = f"aachen_{index:06d}_000019"
            touch_pair(
                city,
                f"leftImg8bit/{subset}/aachen/{stem}_leftImg8bit.png",
                f"gtFine/{subset}/aachen/{stem}_gtFine_labelTrainIds.png",
            )
    splits = make_splits(city, "cityscapes", Fraction(1, 8), seed=0)
    assert [len(splits[name]) for name in ("labeled", "unlabeled", "val")] == [2, 14, 3]
    assert splits["val"][0].endswith("_gtFine_labelTrainIds.png") and "/val/" in splits["val"][0]
    coco = tmp_path / "coco"
    for subset, count in (("train2017", 10), ("val2017", 2)):
        for index in range(count):
            touch_pair(coco, f"{subset}/{index:012d}.jpg", f"masks/{subset}/{index:012d}.png")
    splits = make_splits(coco, "coco", 3, seed=0)
    assert [len(splits[name]) for name in ("labeled", "unlabeled", "val")] == [3, 7, 2]
    assert splits["val"][0] == "val2017/000000000000.jpg masks/val2017/000000000000.png"


def test_unimatch_v2_layouts_of_ade20k_and_coco(tmp_path):
    ade = tmp_path / "ade20k"
    for subset, count in (("training", 16), ("validation", 2)):
        for index in range(count):
            name = f"ADE_{'train' if subset == 'training' else 'val'}_{index:08d}"
            touch_pair(ade, f"images/{subset}/{name}.jpg", f"annotations/{subset}/{name}.png")
    splits = make_splits(ade, "ade20k", Fraction(1, 4), seed=0)
    assert [len(splits[name]) for name in ("labeled", "unlabeled", "val")] == [4, 12, 2]
    assert splits["val"][0] == "images/validation/ADE_val_00000000.jpg annotations/validation/ADE_val_00000000.png"
    coco = tmp_path / "coco"  # UniMatch V2's masks/<id>.png, one folder for both subsets
    for subset, count in (("train2017", 6), ("val2017", 2)):
        for index in range(count):
            stem = f"{index + (100 if subset == 'val2017' else 0):012d}"
            touch_pair(coco, f"{subset}/{stem}.jpg", f"masks/{stem}.png")
    splits = make_splits(coco, "coco", 2, seed=0)
    assert [len(splits[name]) for name in ("labeled", "unlabeled", "val")] == [2, 4, 2]
    assert splits["val"][0] == "val2017/000000000100.jpg masks/000000000100.png"


def test_missing_root_and_empty_layout(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        make_splits(tmp_path / "none", "folder", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no training samples .* expects images/<name>\..* with masks/<name>\.png"):
        make_splits(tmp_path / "empty", "folder", 2)
    with pytest.raises(DataError, match="SegmentationClass"):
        make_splits(tmp_path / "empty", "pascal", 2)


def test_module_entry_point(tmp_path, capsys):
    root = folder_root(tmp_path, count=12, unmasked=0)
    arguments = ["--root", str(root), "--preset", "folder", "--out", str(tmp_path / "out")]
    done = subprocess.run(
        [sys.executable, "-m", "corrmatch.data.splits", *arguments, "--labeled", "0.25"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr  # no runpy warning
    assert len(read_sets(tmp_path / "out")["labeled"]) == 3
    with pytest.raises(SystemExit) as failed:
        main([*arguments, "--labeled", "99"])
    assert failed.value.code == 2 and "cannot draw 99 labeled" in capsys.readouterr().err


def test_paths_with_spaces_are_listed_with_a_tab_and_read_back(tmp_path):
    root = tmp_path / "my data"
    for index in range(6):
        touch_pair(root, f"images/holiday photo {index}.png", f"masks/holiday photo {index}.png")
    touch_pair(root, "images/plain.png", "masks/plain.png")
    splits = make_splits(root, "folder", 2, seed=0, val=1)
    paths = write_splits(splits, root / "splits" / "two")
    lines = [line for name in ("labeled", "unlabeled", "val") for line in splits[name]]
    assert any("\t" in line for line in lines) and "images/plain.png masks/plain.png" in lines
    entries = [entry for name in ("labeled", "unlabeled", "val") for entry in parse_split(paths[name])]
    assert {(entry.image, entry.mask) for entry in entries} == {
        (f"images/{name}.png", f"masks/{name}.png") for name in ["plain", *(f"holiday photo {i}" for i in range(6))]
    }
