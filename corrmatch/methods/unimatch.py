"""UniMatch for segmentation (DESIGN.md §3): two strong views and a feature-perturbed weak view."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from corrmatch.constants import IGNORE_INDEX
from corrmatch.data.datamodule import DataContract
from corrmatch.errors import check_range
from corrmatch.losses import masked_cross_entropy
from corrmatch.methods.base import SemiSupervisedMethod, confidence, mask_ratio, paste

__all__ = ["UniMatch"]


class UniMatch(SemiSupervisedMethod):
    """UniMatch: loss = (loss_x + 0.25·loss_u_s1 + 0.25·loss_u_s2 + 0.5·loss_u_fp) / 2 with a fixed
    threshold (DESIGN.md §3).

    Reads two strong views per unlabeled sample (image_s2 and cutmix_box2 in the batch).

    Args:
        conf_thresh: confidence threshold of the pseudo-labels (0.95 Pascal and COCO, 0 Cityscapes).
        **kwargs: the options of every method (SemiSupervisedMethod).
    """

    data_contract = DataContract(num_strong_views=2)

    def __init__(self, conf_thresh: float = 0.95, **kwargs: Any) -> None:
        check_range("model.conf_thresh", conf_thresh, 0, 1)
        super().__init__(**kwargs)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Tensor]:
        labeled, unlabeled, mix = batch["labeled"], batch["unlabeled"], batch["unlabeled_mix"]
        x, y = labeled["image"], labeled["mask"]
        u_w, ignore = unlabeled["image_w"], unlabeled["ignore"]
        box1, box2 = unlabeled["cutmix_box"], unlabeled["cutmix_box2"]
        threshold = self.hparams.conf_thresh

        # Eval-mode prediction on the mixing batch; paste its strong views into each view's box.
        conf_mix, label_mix = self.predict_mix(mix["image_w"])
        u_s1 = paste(unlabeled["image_s"], mix["image_s"], box1)
        u_s2 = paste(unlabeled["image_s2"], mix["image_s2"], box2)

        result = self.net(torch.cat((x, u_w)), perturb=True)
        pred_x, pred_u_w = result["out"].split([x.shape[0], u_w.shape[0]])
        pred_u_w_fp = result["out_fp"][x.shape[0] :]
        pred_u_s1, pred_u_s2 = self.logits(torch.cat((u_s1, u_s2))).chunk(2)
        conf, label = confidence(pred_u_w.detach())

        weak, mixing = (label, conf, ignore), (label_mix, conf_mix, mix["ignore"])
        loss_x = self.supervised_loss(pred_x, y)
        loss_u_s1, label_m, used = self.fixed_threshold_loss(pred_u_s1, box1, weak, mixing, threshold)
        loss_u_s2 = self.fixed_threshold_loss(pred_u_s2, box2, weak, mixing, threshold)[0]
        confident = (conf >= threshold) & (ignore != IGNORE_INDEX)
        loss_u_fp = masked_cross_entropy(pred_u_w_fp, label, confident, ignore)
        loss = (loss_x + 0.25 * loss_u_s1 + 0.25 * loss_u_s2 + 0.5 * loss_u_fp) / 2.0

        self.remember_pseudo_labels(u_w, label, confident=confident)
        return self.finish_step(
            {
                "loss": loss,
                "loss_x": loss_x,
                "loss_u_s": (loss_u_s1 + loss_u_s2) / 2.0,
                "loss_u_s1": loss_u_s1,
                "loss_u_s2": loss_u_s2,
                "loss_u_fp": loss_u_fp,
            },
            {
                "mask_ratio": mask_ratio(conf, ignore, threshold),
                **self.label_quality(batch, box1, label_m, used),
            },
            x.shape[0],
        )
