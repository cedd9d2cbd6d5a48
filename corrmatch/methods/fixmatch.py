"""FixMatch for segmentation (DESIGN.md §3), as in the UniMatch codebase."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from corrmatch.constants import IGNORE_INDEX
from corrmatch.errors import check_range
from corrmatch.methods.base import SemiSupervisedMethod, confidence, mask_ratio, paste

__all__ = ["FixMatch"]


class FixMatch(SemiSupervisedMethod):
    """FixMatch: one CutMix-ed strong view trained on the weak view's pseudo-labels above a fixed
    threshold (DESIGN.md §3).

    Args:
        conf_thresh: confidence threshold of the pseudo-labels (0.95 Pascal and COCO, 0 Cityscapes).
        **kwargs: the options of every method (SemiSupervisedMethod).
    """

    def __init__(self, conf_thresh: float = 0.95, **kwargs: Any) -> None:
        check_range("model.conf_thresh", conf_thresh, 0, 1)
        super().__init__(**kwargs)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Tensor]:
        labeled, unlabeled, mix = batch["labeled"], batch["unlabeled"], batch["unlabeled_mix"]
        x, y = labeled["image"], labeled["mask"]
        u_w, ignore, box = unlabeled["image_w"], unlabeled["ignore"], unlabeled["cutmix_box"]
        threshold = self.hparams.conf_thresh

        # Eval-mode prediction on the mixing batch; paste its strong view into the box.
        conf_mix, label_mix = self.predict_mix(mix["image_w"])
        u_s = paste(unlabeled["image_s"], mix["image_s"], box)

        pred_x, pred_u_w = self.logits(torch.cat((x, u_w))).split([x.shape[0], u_w.shape[0]])
        pred_u_s = self.logits(u_s)
        conf, label = confidence(pred_u_w.detach())

        loss_x = self.supervised_loss(pred_x, y)
        loss_u_s, label_m, used = self.fixed_threshold_loss(
            pred_u_s, box, (label, conf, ignore), (label_mix, conf_mix, mix["ignore"]), threshold
        )
        loss = (loss_x + loss_u_s) / 2.0

        self.remember_pseudo_labels(u_w, label, confident=(conf >= threshold) & (ignore != IGNORE_INDEX))
        return self.finish_step(
            {"loss": loss, "loss_x": loss_x, "loss_u_s": loss_u_s},
            {
                "mask_ratio": mask_ratio(conf, ignore, threshold),
                **self.label_quality(batch, box, label_m, used),
            },
            x.shape[0],
        )
