"""W&B logging in offline mode: the logged keys, the example images, and a resume into the same run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import WANDB, tiny_config, wandb_history
from PIL import Image

from corrmatch.cli import WANDB_ID_FILE, main
from corrmatch.constants import IGNORE_INDEX

TRAIN_KEYS = [
    "loss",
    "loss_x",
    "loss_x_corr",
    "loss_u_s",
    "loss_kl",
    "loss_u_fp",
    "loss_u_corr",
    "tau",
    "mask_ratio",
    "propagated_ratio",
]


def offline_runs(run: Path) -> list[Path]:
    return sorted((run / "wandb").glob("offline-run-*"))


def test_offline_run_logs_every_term_and_a_resume_continues_it(tiny_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = {"logger": WANDB, "log_every_n_steps": 1}
    config = tiny_config(tmp_path / "tiny.yaml", tiny_root, run, trainer=trainer)
    main(["fit", "--config", str(config)])

    (first,) = offline_runs(run)
    run_id = (run / WANDB_ID_FILE).read_text()
    assert first.name.endswith(f"-{run_id}")
    history = wandb_history(first)
    for key in TRAIN_KEYS:
        assert f"train/{key}" in history, key
    assert len(history["train/loss"]) == 2
    assert len(history["lr-SGD/encoder"]) == 2 and len(history["lr-SGD/rest"]) == 2  # LearningRateMonitor
    assert "val/mIoU" in history
    assert json.loads(history["val/iou_per_class/_type"][0]) == "table-file"
    assert json.loads(history["val/iou_per_class/ncols"][0]) == 2
    assert json.loads(history["val/iou_per_class/nrows"][0]) == 6
    val_masks = json.loads(history["val/examples/all_masks"][0])
    assert len(val_masks) == 2 and set(val_masks[0]) == {"ground_truth", "prediction"}
    # the validation images differ in size; W&B gets them, and their masks, padded to the largest
    captions = json.loads(history["val/examples/captions"][0])
    sizes = {Image.open(tiny_root / caption).size for caption in captions}
    assert len(sizes) == 2
    largest = tuple(max(size[axis] for size in sizes) for axis in (0, 1))
    assert (int(history["val/examples/width"][0]), int(history["val/examples/height"][0])) == largest
    files = first / "files"
    for caption, image, masks in zip(captions, json.loads(history["val/examples/filenames"][0]), val_masks):
        width, height = Image.open(tiny_root / caption).size
        assert Image.open(files / image).size == largest
        truth = np.array(Image.open(files / masks["ground_truth"]["path"]))
        assert truth.shape == largest[::-1] and Image.open(files / masks["prediction"]["path"]).size == largest
        assert (truth[height:] == IGNORE_INDEX).all() and (truth[:, width:] == IGNORE_INDEX).all()
        assert (truth[:height, :width] != IGNORE_INDEX).any()
    train_masks = json.loads(history["train/pseudo_labels/all_masks"][0])
    assert len(train_masks) == 2 and set(train_masks[0]) == {"pseudo_label", "propagated"}

    main(["fit", "--config", str(config), "--ckpt_path=last", "--trainer.max_epochs=2"])
    second = next(path for path in offline_runs(run) if path != first)
    assert second.name.endswith(f"-{run_id}")
    assert len(wandb_history(second)["train/loss"]) == 2

    main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path=last"])
    assert len(offline_runs(run)) == 2  # prediction logs into no W&B run, least of all the training's
