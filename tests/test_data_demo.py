"""The generated demo dataset: byte-identical per seed, Pascal layout, atomic, fast enough."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from corrmatch.data import DataError, ensure_demo, generate_demo, parse_split, validate_dataset
from corrmatch.data import demo as demo_module

SMALL = {"num_labeled": 3, "num_unlabeled": 6, "num_val": 3}


def digest(root) -> str:
    hasher = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        hasher.update(path.relative_to(root).as_posix().encode())
        hasher.update(path.read_bytes())
    return hasher.hexdigest()


def test_same_seed_is_byte_identical(tmp_path):
    first = generate_demo(tmp_path / "a", seed=5, **SMALL)
    second = generate_demo(tmp_path / "b", seed=5, **SMALL)
    other = generate_demo(tmp_path / "c", seed=6, **SMALL)
    assert digest(first) == digest(second) != digest(other)


def test_layout_masks_and_classes(tmp_path):
    root = generate_demo(tmp_path / "demo", seed=0, **SMALL)
    assert sorted(p.name for p in root.iterdir()) == ["JPEGImages", "SegmentationClass", "generator.json", "splits"]
    counts = {
        name: len(parse_split(root / "splits" / f"{name}.txt")) for name in ("labeled", "unlabeled", "val")
    }
    assert counts == {"labeled": 3, "unlabeled": 6, "val": 3}
    entries = validate_dataset(
        root, *(root / "splits" / f"{n}.txt" for n in ("labeled", "unlabeled", "val")), num_classes=6
    )
    seen = set()
    for entry in entries["labeled"] + entries["unlabeled"] + entries["val"]:
        mask = Image.open(root / entry.mask)
        assert mask.mode == "P"
        values = np.array(mask)
        image = Image.open(root / entry.image)
        assert image.mode == "RGB" and image.size == mask.size and 100 <= min(image.size) <= 150
        boundary = values == 255
        assert 0 < boundary.mean() < 0.3  # a thin band along the label edges
        seen |= set(np.unique(values).tolist())
    assert seen == {0, 1, 2, 3, 4, 5, 255}


def test_boundary_band_separates_every_label_change():
    _, label = demo_module.render_sample(0, 7)
    valid = label != 255
    for a, b in ((label[:, :-1], label[:, 1:]), (label[:-1, :], label[1:, :])):
        both = valid[: a.shape[0], : a.shape[1]] & (a != 255) & (b != 255)
        assert (a[both] == b[both]).all()


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing(seed: int, index: int, size: int = 128, clutter: bool = True, **options):
        calls.append(index)
        if index == 4:
            raise KeyboardInterrupt
        return original(seed, index, size, clutter, **options)

    original = demo_module.render_sample
    monkeypatch.setattr(demo_module, "render_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_demo(tmp_path / "demo", **SMALL)
    assert list(tmp_path.iterdir()) == [] and calls[-1] == 4


def test_ensure_demo_reuses_and_refuses_foreign_folders(tmp_path):
    root = ensure_demo(tmp_path / "demo", **SMALL)
    stamp = (root / "splits" / "val.txt").stat().st_mtime_ns
    assert ensure_demo(root, **SMALL) == root and (root / "splits" / "val.txt").stat().st_mtime_ns == stamp
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        ensure_demo(tmp_path / "other")
    (tmp_path / "empty").mkdir()
    assert (ensure_demo(tmp_path / "empty", **SMALL) / "splits" / "val.txt").is_file()


def test_ensure_demo_refuses_a_folder_of_other_settings(tmp_path):
    """A complete demo folder generated with another seed or variant is not silently reused."""
    root = ensure_demo(tmp_path / "demo", seed=0, **SMALL)
    with pytest.raises(DataError, match=r"demo root .*demo' holds the demo generated with seed 0, clutter True, texture_scale 1.0"):
        ensure_demo(root, seed=0, clutter=False, **SMALL)
    with pytest.raises(DataError, match="not seed 3"):
        ensure_demo(root, seed=3, **SMALL)
    plain = ensure_demo(tmp_path / "plain", clutter=False, **SMALL)
    assert ensure_demo(plain, clutter=False, **SMALL) == plain


@pytest.mark.slow
def test_default_demo_generates_every_image(tmp_path):
    root = generate_demo(tmp_path / "demo")
    assert len(list((root / "JPEGImages").iterdir())) == 620


def test_plain_variant_drops_the_background_clutter(tmp_path):
    """``clutter=False``: the same kind of objects on smooth backgrounds (no textured blobs, no grain),
    reproducible like the standard demo."""
    first = generate_demo(tmp_path / "a", seed=5, clutter=False, **SMALL)
    assert digest(first) == digest(generate_demo(tmp_path / "b", seed=5, clutter=False, **SMALL))
    assert digest(first) != digest(generate_demo(tmp_path / "c", seed=5, **SMALL))

    def background_roughness(clutter: bool) -> float:
        values = []
        for index in range(20):
            image, label = demo_module.render_sample(3, index, clutter=clutter)
            gray = image.astype(np.float32).mean(axis=2)
            step = np.abs(np.diff(gray, axis=1))
            background = (label[:, 1:] == 0) & (label[:, :-1] == 0)
            values.append(step[background].mean())
        return float(np.mean(values))

    assert background_roughness(False) < 0.7 * background_roughness(True)


def test_other_shapes_and_class_free_appearance():
    """``shapes`` replaces the demo's shapes (class i + 1 is shapes[i]); ``class_appearance=False`` paints
    a class in any colour, so its hue no longer tells it (the pretraining images of benchmarks/)."""

    def bar(u, v, r):
        return (np.abs(u) <= r) & (np.abs(v) <= 0.3 * r)

    def red_share(class_appearance: bool) -> float:
        """Share of samples whose class-1 pixels have a red median hue (class 1's hue in the demo)."""
        red = []
        for index in range(30):
            image, label = demo_module.render_sample(2, index, shapes=(bar,), class_appearance=class_appearance)
            assert set(np.unique(label).tolist()) <= {0, 1, 255}
            hue = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 0][label == 1].astype(np.float32)
            if hue.size:
                median = float(np.median(hue))
                red.append(min(median, 180 - median) <= 18)
        return float(np.mean(red))

    assert red_share(True) > 0.9
    assert red_share(False) < 0.5


def test_label_by_texture_names_the_texture_family_of_the_same_image():
    """``label_by="texture"`` draws the same image as ``label_by="shape"`` and marks every object with its
    texture family (1–5) instead of its shape; it needs ``class_appearance=False``."""

    def bar(u, v, r):
        return (np.abs(u) <= r) & (np.abs(v) <= 0.3 * r)

    families = set()
    for index in range(12):
        image, by_shape = demo_module.render_sample(3, index, shapes=(bar,), class_appearance=False)
        same, by_texture = demo_module.render_sample(
            3, index, shapes=(bar,), class_appearance=False, label_by="texture"
        )
        np.testing.assert_array_equal(image, same)
        objects = by_shape == 1
        assert np.isin(by_texture[objects], [1, 2, 3, 4, 5, 255]).all()  # 255: where two families touch
        assert (by_texture[~objects] == by_shape[~objects]).all()
        families |= set(np.unique(by_texture[objects]).tolist()) - {255}
    assert len(families) >= 4
    with pytest.raises(ValueError, match="label_by"):
        demo_module.render_sample(3, 0, label_by="texture")


def test_texture_scale_coarsens_the_textures_of_the_same_scene(tmp_path):
    """``texture_scale=2`` draws the same objects and masks with textures of twice the period, so more of
    their contrast survives a blur of σ 2 (the strong augmentation's largest); a folder of another scale
    is refused by ``ensure_demo``."""

    def texture_left_after_blur(image: np.ndarray, label: np.ndarray) -> list[float]:
        gray = cv2.GaussianBlur(image.astype(np.float32).mean(axis=2), (0, 0), 2.0)
        spreads = []
        for cls in range(1, 6):
            inside = cv2.erode((label == cls).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            if inside.sum() > 50:
                spreads.append(float(gray[inside].std()))
        return spreads

    fine, coarse = [], []
    for index in range(30):
        image, label = demo_module.render_sample(4, index, clutter=False)
        scaled, same = demo_module.render_sample(4, index, clutter=False, texture_scale=2.0)
        np.testing.assert_array_equal(label, same)
        fine += texture_left_after_blur(image, label)
        coarse += texture_left_after_blur(scaled, label)
    assert np.mean(coarse) > 1.4 * np.mean(fine)

    root = ensure_demo(tmp_path / "coarse", clutter=False, texture_scale=2.0, **SMALL)
    assert ensure_demo(root, clutter=False, texture_scale=2.0, **SMALL) == root
    with pytest.raises(DataError, match=r"texture_scale 2.0, object_scale 1.0, class_hues True, not seed 0, clutter False, texture_scale 1.0"):
        ensure_demo(root, clutter=False, **SMALL)
    with pytest.raises(DataError, match="texture_scale must be positive"):
        generate_demo(tmp_path / "bad", texture_scale=0.0, **SMALL)


def test_any_hue_variant_keeps_scenes_and_textures_and_draws_random_hues(tmp_path):
    """``class_hues=False`` draws the same masks with the same texture families and paints each object
    around a random hue, so an object's hue no longer tells its class (with class hues every class keeps
    to its own 72° sector); the folder's stamp records it and a standard request is refused."""

    def object_hues(class_hues: bool) -> dict[int, list[float]]:
        hues: dict[int, list[float]] = {cls: [] for cls in range(1, 6)}
        for index in range(30):
            image, label = demo_module.render_sample(2, index, clutter=False, class_hues=class_hues)
            standard_label = demo_module.render_sample(2, index, clutter=False)[1]
            np.testing.assert_array_equal(label, standard_label)
            hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)
            for cls in hues:
                inside = cv2.erode((label == cls).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
                if inside.sum() > 50:
                    angles = hsv[..., 0][inside].astype(np.float64) / 256 * 2 * np.pi
                    hues[cls].append(np.angle(np.exp(1j * angles).mean()) % (2 * np.pi) * 180 / np.pi)
        return hues

    def spread(values: list[float]) -> float:  # circular spread in degrees: 0 for one hue, ~180 for any
        vectors = np.exp(1j * np.deg2rad(values))
        return float(np.rad2deg(np.sqrt(-2 * np.log(abs(vectors.mean())))))

    for cls, values in object_hues(True).items():
        assert spread(values) < 30, (cls, values)
    assert np.mean([spread(values) for values in object_hues(False).values()]) > 60

    root = ensure_demo(tmp_path / "anyhue", clutter=False, class_hues=False, **SMALL)
    assert json.loads((root / "generator.json").read_text())["class_hues"] is False
    assert ensure_demo(root, clutter=False, class_hues=False, **SMALL) == root
    with pytest.raises(DataError, match=r"class_hues False, not .* class_hues True .*data\.demo_class_hues"):
        ensure_demo(root, clutter=False, **SMALL)


def test_object_scale_draws_larger_objects_in_the_same_places():
    """``object_scale=1.5`` keeps every object's class, place and draw and makes it larger: the object
    pixels of the standard scene stay objects and their share of the image grows."""
    standard, larger, kept = [], [], []
    for index in range(20):
        _, label = demo_module.render_sample(6, index, clutter=False)
        _, grown = demo_module.render_sample(6, index, clutter=False, object_scale=1.5)
        assert set(np.unique(grown).tolist()) <= {0, 1, 2, 3, 4, 5, 255}
        inside = (label > 0) & (label != 255)
        kept.append((grown > 0)[inside].mean())
        standard.append(inside.mean())
        larger.append(((grown > 0) & (grown != 255)).mean())
    assert np.mean(kept) > 0.85  # not all: a ring's hole grows with it
    assert np.mean(larger) > 1.6 * np.mean(standard)
    with pytest.raises(DataError, match="object_scale must be positive"):
        generate_demo("unused", object_scale=-1.0)
