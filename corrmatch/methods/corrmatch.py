"""CorrMatch (DESIGN.md §2): label propagation via correlation matching."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from corrmatch.constants import IGNORE_INDEX
from corrmatch.errors import check_range
from corrmatch.losses import corrmatch_total, masked_cross_entropy, masked_kl_divergence
from corrmatch.methods.base import SemiSupervisedMethod, confidence, mask_ratio, mix_targets, paste
from corrmatch.models import region_masks, region_rows
from corrmatch.pseudo import DynamicThreshold, region_propagation

__all__ = ["CorrMatch"]


class CorrMatch(SemiSupervisedMethod):
    """CorrMatch (CVPR 2024): label propagation via correlation matching, one iteration per training
    step (DESIGN.md §2 steps 1–10; step 11 in the base class).

    Args:
        thresh_init: initial dynamic threshold τ.
        thresh_momentum: momentum of τ's moving average.
        num_region_samples: region masks M drawn per step (0: no region propagation).
        pixel_propagation: train on the correlation map's predictions (the loss terms loss_x_corr and
            loss_u_corr), as published. false is an ablation that leaves both terms out; the correlation
            then learns nothing, so region masks would come from its initial weights: pair it with
            num_region_samples 0.
        **kwargs: the options of every method (SemiSupervisedMethod).

    τ is a buffer of the threshold module, so checkpoints save and restore it with the weights. The M
    rows of the correlation matrix behind the region masks are drawn by the region_rows attribute, a
    callable (N, M) → (M,) indices (corrmatch.models.region_rows by default); replacing it fixes them.
    """

    correlation = True

    def __init__(
        self,
        thresh_init: float = 0.85,
        thresh_momentum: float = 0.999,
        num_region_samples: int = 128,
        pixel_propagation: bool = True,
        **kwargs: Any,
    ) -> None:
        check_range("model.thresh_init", thresh_init, 0, 1)
        check_range("model.thresh_momentum", thresh_momentum, 0, 1)
        check_range("model.num_region_samples", num_region_samples, 0)
        super().__init__(**kwargs)
        self.threshold = DynamicThreshold(init=thresh_init, momentum=thresh_momentum)
        self.region_rows = region_rows

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Tensor]:
        labeled, unlabeled, mix = batch["labeled"], batch["unlabeled"], batch["unlabeled_mix"]
        x, y = labeled["image"], labeled["mask"]
        u_w, ignore, box = unlabeled["image_w"], unlabeled["ignore"], unlabeled["cutmix_box"]
        n_x, n_u = x.shape[0], u_w.shape[0]

        # 1. Eval-mode prediction on the mixing batch; paste its strong view into the box.
        conf_mix, label_mix = self.predict_mix(mix["image_w"])
        u_s = paste(unlabeled["image_s"], mix["image_s"], box)

        # 2. Labeled + weak view with feature perturbation and correlation; region masks.
        result_w = self.net(torch.cat((x, u_w)), perturb=True, correlation=True)
        pred_x, pred_u_w = result_w["out"].split([n_x, n_u])
        pred_u_w_fp = result_w["out_fp"][n_x:]
        pred_x_corr, pred_u_w_corr = result_w["corr_out"].split([n_x, n_u])
        corr_u = result_w["corr"][n_x:]
        rows = self.region_rows(corr_u.shape[1], self.hparams.num_region_samples)
        regions = region_masks(corr_u, result_w["feature_size"], u_w.shape[-2:], index=rows)

        # 3. Mixed strong view with correlation.
        result_s = self.net(u_s, correlation=True)
        pred_u_s, pred_u_s_corr = result_s["out"], result_s["corr_out"]

        # 4. Pseudo-labels of the weak view.
        pred_u_w = pred_u_w.detach()
        conf, label = confidence(pred_u_w)

        # 5. Targets mixed like the strong view.
        label_m, conf_m, ignore_m = mix_targets(
            box, (label, conf, ignore), (label_mix, conf_mix, mix["ignore"])
        )

        # 6. Region masks outside the box and on non-ignored pixels.
        regions &= (box != 1).unsqueeze(1) & (ignore_m != IGNORE_INDEX).unsqueeze(1)

        # 7. Dynamic threshold from the unmixed predictions and the mixed ignore mask, over all processes.
        tau = self.threshold.update(pred_u_w, ignore_m)

        # 8. Confident pixels.
        high = (conf_m >= tau) & (ignore_m != IGNORE_INDEX)

        # 9. Region propagation.
        target, loss_mask = region_propagation(label_m, high, regions, tau)

        # 10. Losses.
        loss_x = self.supervised_loss(pred_x, y)
        loss_x_corr = self.supervised_loss(pred_x_corr, y)
        loss_u_s = masked_cross_entropy(pred_u_s, target, loss_mask, ignore_m)
        weak_mask = (conf >= tau) & (ignore != IGNORE_INDEX)
        loss_u_corr_s = masked_cross_entropy(pred_u_s_corr, target, loss_mask, ignore_m)
        loss_u_corr_w = masked_cross_entropy(pred_u_w_corr, label, weak_mask, ignore)
        loss_u_corr = 0.5 * (loss_u_corr_s + loss_u_corr_w)
        loss_kl = masked_kl_divergence(pred_u_w, pred_u_s, high, ignore_m)
        loss_u_fp = masked_cross_entropy(pred_u_w_fp, label, weak_mask, ignore)
        loss = corrmatch_total(
            loss_x, loss_x_corr, loss_u_s, loss_kl, loss_u_fp, loss_u_corr, self.hparams.pixel_propagation
        )

        propagated = loss_mask & ~high
        valid_m = (ignore_m != IGNORE_INDEX).sum().clamp(min=1)
        self.remember_pseudo_labels(u_s, torch.where(loss_mask, target, IGNORE_INDEX), propagated=propagated)
        return self.finish_step(
            {
                "loss": loss,
                "loss_x": loss_x,
                "loss_x_corr": loss_x_corr,
                "loss_u_s": loss_u_s,
                "loss_kl": loss_kl,
                "loss_u_fp": loss_u_fp,
                "loss_u_corr": loss_u_corr,
                "loss_u_corr_s": loss_u_corr_s,
                "loss_u_corr_w": loss_u_corr_w,
            },
            {
                "tau": tau,
                "mask_ratio": mask_ratio(conf, ignore, tau),
                "propagated_ratio": propagated.sum() / valid_m,
                **self.label_quality(batch, box, target, loss_mask),
                **self.label_quality(batch, box, label_m, high, "pl_confident"),
                **self.label_quality(batch, box, target, propagated, "pl_propagated"),
            },
            n_x,
        )
