"""Callbacks and plugins of a training run: atomic checkpoint files, the last/best checkpoints with a
resumable checkpoint on SIGTERM, the training speed and its wait for data, W&B example images, the
picture of validation examples, and the prediction writer."""

from __future__ import annotations

import os
import tempfile
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from PIL import Image
from pytorch_lightning.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import Tensor

from corrmatch.constants import IGNORE_INDEX
from corrmatch.errors import check_range
from corrmatch.metadata import InferenceInfo
from corrmatch.visualize import colorize, image_grid, pad_to_largest, write_prediction

__all__ = [
    "AtomicCheckpointIO",
    "PredictionWriter",
    "RunCheckpoint",
    "TrainingSpeed",
    "ValidationExamples",
    "ValidationImageCollector",
    "WandbImageLogger",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the target's folder, syncs it to disk and renames
    it over the target (``os.replace``), so a failure or a kill during the write leaves the previous
    file intact. Remote paths (``scheme://``) use Lightning's default writer."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o644)  # mkstemp creates the file private (0600)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


class RunCheckpoint(ModelCheckpoint):
    """The run's checkpoints: last.ckpt after every validation and the best by validation mIoU.

    Also writes last.ckpt when the run receives SIGTERM (after the current batch) or is interrupted
    (Ctrl-C), so a preempted or stopped run resumes with --ckpt_path last. Takes every argument of
    Lightning's ModelCheckpoint.

    Args:
        dirpath: the folder of the checkpoints; <run dir>/checkpoints by default (where fit
            --ckpt_path last looks).
        filename: the name of the best checkpoint, with the epoch and the mIoU filled in.
        monitor: the logged metric that ranks checkpoints.
        mode: max: the highest value of monitor is the best.
        save_last: also write last.ckpt, the checkpoint to resume from.
        save_top_k: how many of the best checkpoints to keep.
        auto_insert_metric_name: put "name=" before each value in filename (off: filename names them).
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "best-epoch={epoch:03d}-miou={val/mIoU:.2f}",
        monitor: str = "val/mIoU",
        mode: str = "max",
        save_last: bool = True,
        save_top_k: int = 1,
        auto_insert_metric_name: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            mode=mode,
            save_last=save_last,
            save_top_k=save_top_k,
            auto_insert_metric_name=auto_insert_metric_name,
            **kwargs,
        )
        self.validated_epoch: int | None = None  # the epoch of the latest validation
        self.mtime_at_epoch_start: int | None = None  # of last.ckpt, to see whether the epoch wrote it

    def last_path(self) -> str:
        return os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)

    def last_mtime(self) -> int | None:
        path = self.last_path()
        return os.stat(path).st_mtime_ns if os.path.isfile(path) else None

    def writes_last(self, trainer: pl.Trainer) -> bool:
        """Whether the run keeps a last.ckpt: not in a ``fast_dev_run``, a check of the pipeline that
        must leave nothing a later fit of the run directory would resume from."""
        return bool(self.save_last) and not trainer.fast_dev_run

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.writes_last(trainer):  # ModelCheckpoint's would write last.ckpt after a fast_dev_run too
            super().on_train_end(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self.mtime_at_epoch_start = self.last_mtime()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking:
            self.validated_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """ModelCheckpoint writes ``last.ckpt`` only when the same validation also saved a best
        checkpoint; a run must resume from its latest validation, so after an epoch that validated
        without writing ``last.ckpt``, it is written here (where ModelCheckpoint itself saves, so the
        resume stays exact)."""
        super().on_train_epoch_end(trainer, pl_module)
        validated = self.validated_epoch == trainer.current_epoch
        unchanged = self.last_mtime() == self.mtime_at_epoch_start
        if self.writes_last(trainer) and validated and unchanged and trainer.state.fn == TrainerFn.FITTING:
            trainer.save_checkpoint(self.last_path())
            self.last_model_path = self.last_path()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        super().on_exception(trainer, pl_module, exception)
        stopped = isinstance(exception, SIGTERMException | KeyboardInterrupt)
        if stopped and self.writes_last(trainer) and not trainer.sanity_checking and trainer.global_step > 0:
            path = self.last_path()
            trainer.save_checkpoint(path)
            name = "SIGTERM" if isinstance(exception, SIGTERMException) else "Interrupted"
            rank_zero_info(f"{name}: saved a resumable checkpoint to {path}")


def _to_uint8_image(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undoes the normalisation of a (3, H, W) image; returns uint8 (H, W, 3)."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    pixels = (image.float().cpu() * std_t + mean_t).clamp(0, 1) * 255
    return pixels.round().to(torch.uint8).permute(1, 2, 0).numpy()


class TrainingSpeed(Callback):
    """How fast training goes, and whether it waits for its data.

    Each training iteration is timed in two parts by the host's clock: the *step*, from the start of
    the batch to its end (forward, pseudo-labels, losses, backward, optimiser), and the *wait*, from
    the previous batch's end to this one's start (fetching the batch from the loaders, the copy to the
    device, Lightning's bookkeeping). The first iteration of an epoch and those after a validation have
    no wait counted. Every ``log_every_n_steps`` optimiser steps the loggers get ``time/iteration_s``
    and ``time/data_wait_s``, the means over the last ``log_every_n_steps`` iterations, and
    ``time/data_wait_share``, the wait's part of them; after each validation of a fit, one line gives
    the means since the fit (or its resume) started and the time the iterations left would take at
    that pace.

    Nothing synchronises with the GPU: a step's kernels may still run when its end is timed, so single
    iterations are not exact, but their mean over many is the pace, and a wait that stays a large share
    of it means the loaders are the bound (more ``data.num_workers``, or faster storage).
    """

    def __init__(self) -> None:
        self.started = 0.0
        self.ended: float | None = None  # the previous batch's end, None where no wait is counted
        self.recent: deque[tuple[float, float]] = deque()
        self.total_wait = self.total_iteration = 0.0
        self.iterations = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.recent = deque(maxlen=max(trainer.log_every_n_steps, 1))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ended = None

    def clock(self, pl_module: pl.LightningModule) -> float:
        """The time (s) the parts are measured by: the host's clock."""
        return time.perf_counter()

    def measured(self, wait: float, iteration: float) -> None:
        """Counts one iteration's wait and its whole time (s)."""
        self.recent.append((wait, iteration))
        self.total_wait += wait
        self.total_iteration += iteration
        self.iterations += 1

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self.started = self.clock(pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = self.clock(pl_module)
        if self.ended is not None:
            self.measured(self.started - self.ended, now - self.ended)
        self.ended = now
        every = trainer.log_every_n_steps  # 0: never, as for Lightning's own logging
        if self.recent and trainer.loggers and every and trainer.global_step % every == 0:
            wait, iteration = (sum(values) / len(self.recent) for values in zip(*self.recent))
            metrics = {"time/iteration_s": iteration, "time/data_wait_s": wait, "time/data_wait_share": wait / iteration}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ended = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking or not self.iterations:
            return
        pace, share = self.total_iteration / self.iterations, self.total_wait / self.total_iteration
        line = f"training speed: {pace:.3f} s an iteration, {100 * share:.0f} % of it waiting for data"
        left = trainer.estimated_stepping_batches - trainer.global_step
        if 0 < left < float("inf"):
            minutes = round(left * pace / 60)
            line += f"; {int(left)} iterations left, about {minutes // 60} h {minutes % 60:02d} min"
        pl_module.print(line)


class ValidationImageCollector(Callback):
    """Keeps the first ``num_images`` validation images of each validation, with their ground truth
    and prediction, as ``examples``: (normalised image (3, H, W), mask (H, W), prediction (H, W), id),
    on the CPU. Collects only on rank 0, outside the sanity check, and when :meth:`collecting` says so.

    Args:
        num_images: how many images to keep.
    """

    setting, min_images = "num_images", 0  # the command line's name of num_images, and its least value

    def __init__(self, num_images: int = 4) -> None:
        check_range(self.setting, num_images, self.min_images)
        self.num_images = num_images
        self.examples: list[tuple[Tensor, Tensor, Tensor, str]] = []

    def collecting(self, trainer: pl.Trainer) -> bool:
        """Whether this validation's images are wanted (by default: on rank 0, outside the sanity check)."""
        return not trainer.sanity_checking and trainer.is_global_zero

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.examples = []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if len(self.examples) >= self.num_images or not self.collecting(trainer):
            return
        for i in range(min(outputs["pred"].shape[0], self.num_images - len(self.examples))):
            image, mask, pred = (outputs[key][i].cpu() for key in ("image", "mask", "pred"))
            self.examples.append((image, mask, pred, str(batch["id"][i])))


class ValidationExamples(ValidationImageCollector):
    """A picture of validation examples, <run dir>/val_examples.png, rewritten after each validation of fit.

    The first validation images in rows, columns image | ground truth | prediction in the dataset's
    palette colours (corrmatch.visualize.image_grid); once fit ends it shows the last validation.
    Off unless enabled.

    Args:
        enabled: write <run dir>/val_examples.png.
        num_images: how many validation images it shows, one per row.
    """

    setting, min_images = "val_examples.num_images", 1
    FILENAME = "val_examples.png"

    def __init__(self, enabled: bool = False, num_images: int = 4) -> None:
        super().__init__(num_images)
        self.enabled = enabled
        self.path: Path | None = None  # the picture, once written

    def collecting(self, trainer: pl.Trainer) -> bool:
        return self.enabled and trainer.state.fn == TrainerFn.FITTING and super().collecting(trainer)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.examples or not self.collecting(trainer):
            return
        info = InferenceInfo.from_datamodule(trainer.datamodule, pl_module.hparams.num_classes)
        palette = info.palette_array()
        rows = [
            [
                _to_uint8_image(image, info.mean, info.std),
                colorize(mask.numpy().astype(np.uint8), palette),
                colorize(pred.numpy().astype(np.uint8), palette),
            ]
            for image, mask, pred, _ in self.examples
        ]
        path = Path(trainer.default_root_dir) / self.FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image_grid(rows)).save(path)
        self.path = path


class WandbImageLogger(ValidationImageCollector):
    """Logs example overlays to W&B after each validation (rank 0, only with a WandbLogger).

    val/examples: the first validation images with ground truth and prediction. train/pseudo_labels:
    the last training batch's first images with their pseudo-labels and the method's masks
    (CorrMatch: the pixels added by region propagation).

    Args:
        num_images: how many images of each kind to log.
    """

    setting = "wandb_images.num_images"

    def _logger(self, trainer: pl.Trainer) -> WandbLogger | None:
        """The run's WandbLogger where the base collects (rank 0, outside the sanity check), else None."""
        if not super().collecting(trainer):
            return None
        return next((logger for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)

    def collecting(self, trainer: pl.Trainer) -> bool:
        return self._logger(trainer) is not None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = self._logger(trainer)
        if logger is None:
            return
        datamodule = trainer.datamodule
        info = InferenceInfo.from_datamodule(datamodule, pl_module.hparams.num_classes)
        mean, std = info.mean, info.std
        names = getattr(datamodule, "class_names", None) or [
            str(k) for k in range(pl_module.hparams.num_classes)
        ]
        labels = {**dict(enumerate(names)), IGNORE_INDEX: "ignore"}

        def overlay(mask: Tensor | np.ndarray, class_labels: Mapping[int, str]) -> dict[str, Any]:
            mask = mask.cpu().numpy() if isinstance(mask, Tensor) else mask
            return {"mask_data": mask.astype(np.uint8), "class_labels": dict(class_labels)}

        if self.examples:  # validation images differ in size: W&B shows one panel of them padded to the largest
            images = pad_to_largest([_to_uint8_image(image, mean, std) for image, *_ in self.examples], 0)
            masks = pad_to_largest([mask.numpy() for _, mask, _, _ in self.examples], IGNORE_INDEX)
            preds = pad_to_largest([pred.numpy() for _, _, pred, _ in self.examples], IGNORE_INDEX)
            logger.log_image(
                "val/examples",
                images,
                step=trainer.global_step,
                masks=[
                    {"ground_truth": overlay(mask, labels), "prediction": overlay(pred, labels)}
                    for mask, pred in zip(masks, preds)
                ],
                caption=[name for *_, name in self.examples],
            )
        examples = getattr(pl_module, "pseudo_label_examples", None)
        if examples:
            extra = [key for key in examples if key not in ("image", "pseudo_label")]
            count = examples["image"].shape[0]
            logger.log_image(
                "train/pseudo_labels",
                [_to_uint8_image(examples["image"][i], mean, std) for i in range(count)],
                step=trainer.global_step,
                masks=[
                    {
                        "pseudo_label": overlay(examples["pseudo_label"][i], labels),
                        **{key: overlay(examples[key][i], {1: key}) for key in extra},
                    }
                    for i in range(count)
                ],
            )


class PredictionWriter(BasePredictionWriter):
    """Writes <output_dir>/labels/<name>.png (class indices) and color/<name>.png (the dataset's
    palette) for every predicted image, and on request overlay/<name>.png (the image blended with the
    palette colours) and confidence/<name>.png (the highest class probability of each pixel, 0–255);
    <name> is the image's file name (with its folders only when two images share a name).

    Args:
        output_dir: destination folder; <run dir>/predictions by default.
        overlay: also write the overlays.
        confidence: also write the confidence maps.
        overlay_alpha: weight of the palette colour in the overlay, 0 to 1.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        overlay: bool = False,
        confidence: bool = False,
        overlay_alpha: float = 0.5,
    ) -> None:
        super().__init__(write_interval="batch")
        check_range("predict_writer.overlay_alpha", overlay_alpha, 0, 1)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.overlay, self.confidence, self.overlay_alpha = overlay, confidence, overlay_alpha
        self.written = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / "predictions"

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.written = 0

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Prints where the predictions went and how many images, summed over the processes."""
        total = int(trainer.strategy.reduce(torch.tensor(self.written), reduce_op="sum"))
        kinds = ["labels", "color"] + [k for k, on in (("overlay", self.overlay), ("confidence", self.confidence)) if on]
        pl_module.print(f"predict wrote the predictions of {total} images to {self.output_dir} ({', '.join(kinds)})")

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        assert self.output_dir is not None, "set in setup()"
        info = InferenceInfo.from_datamodule(trainer.datamodule, pl_module.hparams.num_classes)
        palette = info.palette_array()
        for i, (name, pred) in enumerate(zip(prediction["id"], prediction["pred"])):
            write_prediction(
                self.output_dir,
                name,
                pred.cpu().numpy(),
                palette,
                image=_to_uint8_image(batch["image"][i], info.mean, info.std) if self.overlay else None,
                confidence=prediction["confidence"][i].cpu().numpy() if self.confidence else None,
                alpha=self.overlay_alpha,
            )
            self.written += 1
