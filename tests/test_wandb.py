"""W&B logging in offline mode: the logged keys, the example images, and a resume into the same run."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import WANDB, tiny_config, wandb_history

from corrmatch.cli import WANDB_ID_FILE, main

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
    train_masks = json.loads(history["train/pseudo_labels/all_masks"][0])
    assert len(train_masks) == 2 and set(train_masks[0]) == {"pseudo_label", "propagated"}

    main(["fit", "--config", str(config), "--ckpt_path=last", "--trainer.max_epochs=2"])
    second = next(path for path in offline_runs(run) if path != first)
    assert second.name.endswith(f"-{run_id}")
    assert len(wandb_history(second)["train/loss"]) == 2

    main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path=last"])
    assert len(offline_runs(run)) == 2  # prediction logs into no W&B run, least of all the training's
