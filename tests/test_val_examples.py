"""The picture of validation examples that a fit writes on request (``--val_examples.enabled true``):
image | ground truth | prediction rows in <run dir>/val_examples.png, its path printed at the end of fit;
and the grid and outline helpers of corrmatch.visualize."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

from corrmatch import Segmenter
from corrmatch.cli import main
from corrmatch.data.io import parse_split, read_image, read_mask
from corrmatch.visualize import colorize, image_grid, outline

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def test_image_grid_places_pictures_in_equal_cells() -> None:
    small = np.full((2, 3, 3), 10, dtype=np.uint8)
    large = np.full((4, 5, 3), 20, dtype=np.uint8)
    grey = np.full((3, 2), 30, dtype=np.uint8)
    grid = image_grid([[small, large], [grey, small]], gap=1, fill=255)
    assert grid.shape == (2 * 4 + 1, 2 * 5 + 1, 3) and grid.dtype == np.uint8
    assert (grid[:2, :3] == 10).all() and (grid[2:4, :3] == 255).all()  # top left, then the fill
    assert (grid[:4, 6:11] == 20).all() and (grid[:, 5] == 255).all()  # the gap between columns
    assert (grid[5:8, :2] == 30).all()  # a grey picture becomes three equal channels
    with pytest.raises(ValueError, match="rows of one non-zero length"):
        image_grid([[small], [small, large]])


def test_outline_is_the_masks_inner_boundary() -> None:
    mask = np.zeros((6, 7), dtype=bool)
    mask[1:5, 2:6] = True
    edge = outline(mask)
    expected = mask.copy()
    expected[2:4, 3:5] = False  # the interior: every 4-neighbour inside
    assert np.array_equal(edge, expected)
    assert outline(np.ones((3, 3), dtype=bool)).sum() == 8  # the image border counts as outside
    assert not outline(np.zeros((3, 3), dtype=bool)).any()


def test_fit_writes_the_validation_examples_and_prints_their_path(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    config = tiny_config(tmp_path / "tiny.yaml", tiny_root, run)
    main(["fit", "--config", str(config), "--val_examples.enabled=true", "--val_examples.num_images=2"])
    out = capsys.readouterr().out
    path = run / "val_examples.png"
    assert re.search(r"val mIoU = [0-9.]+", out)
    assert f"validation examples (image | ground truth | prediction): {path}\n" in out
    assert out.index("fit finished in") < out.index("validation examples")

    picture = np.asarray(Image.open(path).convert("RGB"))
    entries = parse_split(tiny_root / "splits" / "val.txt")[:2]
    images = [read_image(tiny_root / entry.image) for entry in entries]
    masks = [read_mask(tiny_root / entry.mask) for entry in entries]
    height, width = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    assert picture.shape == (2 * height + 2, 3 * width + 4, 3)  # 2 rows × 3 columns, 2-pixel gaps

    segmenter = Segmenter.from_checkpoint(run / "checkpoints" / "last.ckpt", device="cpu")
    palette = segmenter.info.palette_array()
    for row, (image, mask) in enumerate(zip(images, masks)):
        h, w = mask.shape
        cells = [picture[row * (height + 2) :][:h, column * (width + 2) :][:, :w] for column in range(3)]
        assert np.abs(cells[0].astype(int) - image).max() <= 1  # the image, normalised and back
        assert np.array_equal(cells[1], colorize(mask, palette))
        logits = segmenter.logits(segmenter.preprocess(image))  # validation's "original" mode: one pass
        predicted = colorize(logits.argmax(dim=1)[0].to(torch.uint8).numpy(), palette)
        assert np.array_equal(cells[2], predicted)
        assert not np.array_equal(cells[2], cells[1])  # two training steps do not learn the truth


def test_no_picture_unless_asked(tiny_run: Path) -> None:
    assert (tiny_run / "checkpoints" / "last.ckpt").is_file()
    assert not (tiny_run / "val_examples.png").exists()


def test_a_count_below_one_is_one_error_line(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tiny_config(tmp_path / "tiny.yaml", tiny_root, tmp_path / "run")
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(config), "--val_examples.enabled=true", "--val_examples.num_images=0"])
    assert stopped.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and "val_examples.num_images" in errors[0]
    assert not (tmp_path / "run").exists()
