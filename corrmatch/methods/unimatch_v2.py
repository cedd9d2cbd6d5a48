"""UniMatch V2 (docs/DESIGN.md §7): an EMA teacher labels the weak view; two strong views, CutMixed with
the batch reversed, pass through the student together with complementary channel dropout."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from corrmatch.constants import IGNORE_INDEX
from corrmatch.data.datamodule import DataContract
from corrmatch.errors import ConfigError, check_range
from corrmatch.evaluation import MeanIoU
from corrmatch.methods.base import SemiSupervisedMethod, confidence, mask_ratio, paste
from corrmatch.models import complementary_dropout_mask

__all__ = ["UniMatchV2", "ema_ratio", "ema_update"]


def ema_ratio(iteration: int, ceiling: float = 0.996) -> float:
    """The teacher's share after optimiser step ``iteration`` (from 0): ``min(1 − 1/(it + 1), ceiling)``,
    so the teacher equals the student after the first step."""
    return min(1.0 - 1.0 / (iteration + 1), ceiling)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, ratio: float) -> None:
    """``teacher ← ratio·teacher + (1 − ratio)·student`` for every parameter *and* buffer (§7), in the
    authors' arithmetic (integer buffers are truncated back, as their ``copy_`` does)."""
    pairs = [*zip(teacher.parameters(), student.parameters()), *zip(teacher.buffers(), student.buffers())]
    for mine, theirs in pairs:
        mine.copy_(mine * ratio + theirs.detach() * (1.0 - ratio))


class UniMatchV2(SemiSupervisedMethod):
    """UniMatch V2: loss = (loss_x + (loss_u_s1 + loss_u_s2) / 2) / 2 with a fixed threshold and an EMA
    teacher (DESIGN.md §7).

    Reads two strong views per unlabeled sample and no mixing batch: each view's CutMix box is filled
    from the same batch in reverse order, images and targets alike. The teacher (a copy of the
    student's network, ema_update and ema_ratio) is updated after every optimiser step, is saved in
    the checkpoints and is evaluated next to the student (val/mIoU_teacher). The complementary
    dropout masks are drawn by the channel_dropout attribute, a callable (pairs, channels, device=) →
    (2·pairs, C) mask (corrmatch.models.complementary_dropout_mask by default); replacing it fixes them.
    The sliding window places its windows as UniMatch V2's release does (every window a full crop).

    Args:
        conf_thresh: confidence threshold of the pseudo-labels (0.95 in every UniMatch V2 setting).
        ema_ceiling: the teacher's largest share in the moving average (0.996).
        **kwargs: the options of every method (SemiSupervisedMethod; UniMatch V2's recipe, AdamW at lr
            5e-6 and lr_multi 40, is the default for a DINOv2 network).
    """

    data_contract = DataContract(num_strong_views=2, mix_batch=False)
    window_placement = "unimatch_v2"  # its release's sliding window: every window a full crop

    def __init__(self, conf_thresh: float = 0.95, ema_ceiling: float = 0.996, **kwargs: Any) -> None:
        check_range("model.conf_thresh", conf_thresh, 0, 1)
        check_range("model.ema_ceiling", ema_ceiling, 0, 1)
        super().__init__(**kwargs)
        if not self.network.is_vit:
            raise ConfigError(
                f"UniMatchV2 needs a DINOv2 network (network.encoder_name dinov2_small, dinov2_base, …), "
                f"got {self.network.encoder_name!r}"
            )
        self.teacher = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.iou_teacher = MeanIoU(self.hparams.num_classes)
        self.channel_dropout = complementary_dropout_mask

    def train(self, mode: bool = True) -> UniMatchV2:
        """The teacher always predicts in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def networks(self) -> tuple[nn.Module, ...]:
        """The student and the EMA teacher (both compiled with ``compile``)."""
        return (self.net, self.teacher)

    def teacher_logits(self, image: Tensor) -> Tensor:
        return self.teacher(image)["out"]

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Tensor]:
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x, y = labeled["image"], labeled["mask"]
        u_w, ignore = unlabeled["image_w"], unlabeled["ignore"]
        box1, box2 = unlabeled["cutmix_box"], unlabeled["cutmix_box2"]
        threshold = self.hparams.conf_thresh

        with torch.no_grad():
            conf, label = confidence(self.teacher_logits(u_w))
        u_s1 = paste(unlabeled["image_s"], unlabeled["image_s"].flip(0), box1)
        u_s2 = paste(unlabeled["image_s2"], unlabeled["image_s2"].flip(0), box2)

        pred_x = self.logits(x)
        channel_mask = self.channel_dropout(u_w.shape[0], self.net.encoder.out_channels, device=u_w.device)
        strong = self.net(torch.cat((u_s1, u_s2)), channel_mask=channel_mask)["out"]
        pred_u_s1, pred_u_s2 = strong.chunk(2)

        weak = (label, conf, ignore)
        reversed_batch = tuple(t.flip(0) for t in weak)
        loss_x = self.supervised_loss(pred_x, y)
        loss_u_s1, label_m, used = self.fixed_threshold_loss(pred_u_s1, box1, weak, reversed_batch, threshold)
        loss_u_s2 = self.fixed_threshold_loss(pred_u_s2, box2, weak, reversed_batch, threshold)[0]
        loss_u_s = (loss_u_s1 + loss_u_s2) / 2.0
        loss = (loss_x + loss_u_s) / 2.0

        self.remember_pseudo_labels(u_w, label, confident=(conf >= threshold) & (ignore != IGNORE_INDEX))
        return self.finish_step(
            {"loss": loss, "loss_x": loss_x, "loss_u_s": loss_u_s, "loss_u_s1": loss_u_s1, "loss_u_s2": loss_u_s2},
            {
                "mask_ratio": mask_ratio(conf, ignore, threshold),
                "ema_ratio": torch.tensor(ema_ratio(self.global_step, self.hparams.ema_ceiling)),
                **self.label_quality(batch, box1, label_m, used),
            },
            x.shape[0],
        )

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """After the optimiser's step, the teacher moves towards the student (``global_step`` is still
        the index of the step just taken)."""
        super().optimizer_step(*args, **kwargs)
        ema_update(self.teacher, self.net, ema_ratio(self.global_step, self.hparams.ema_ceiling))

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """The student's evaluation (returned) and the teacher's on the same images."""
        result = super().validation_step(batch, batch_idx)
        pred = self.segment(self.teacher_logits, result["image"], self.evaluation_mode())[0]
        self.iou_teacher.update(pred, result["mask"])
        return result

    test_step = validation_step

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._finish_evaluation("val", self.iou_teacher, "mIoU_teacher")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._finish_evaluation("test", self.iou_teacher, "mIoU_teacher")
