"""Losses of CorrMatch and its baselines (DESIGN.md §2 step 10, §3).

Every loss is computed in float32 (logits are cast with ``.float()``), so that bf16 autocast does not
degrade it, and returns 0, not NaN, when no pixel counts. None branches on a tensor value on the host.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from corrmatch.constants import IGNORE_INDEX

__all__ = [
    "corrmatch_total",
    "cross_entropy",
    "masked_cross_entropy",
    "masked_kl_divergence",
    "ohem_cross_entropy",
]


def cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Pixel cross-entropy averaged over the non-ignored pixels (supervised ``crit``, §2 step 10)."""
    losses = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
    return losses.sum() / (target != ignore_index).sum().clamp(min=1)


def ohem_cross_entropy(
    logits: Tensor,
    target: Tensor,
    thresh: float = 0.7,
    min_kept: int = 100000,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Cross-entropy over the hard pixels, by probability (Cityscapes ``crit``, §2 step 10).

    A non-ignored pixel is kept when the probability of its true class is at most ``thresh``; when the
    ``min_kept``-th smallest of these probabilities exceeds ``thresh`` it becomes the threshold, so that
    at least ``min_kept`` pixels are kept. With fewer than ``min_kept`` valid pixels, or ``min_kept = 0``,
    every valid pixel is kept (the behaviour of the authors' ``ProbOhemCrossEntropy2d``).
    """
    logits = logits.float()
    valid = target != ignore_index
    kept = valid
    if min_kept > 0 and target.numel() > 0:
        true_class = target.masked_fill(~valid, 0).unsqueeze(1)
        probability = logits.softmax(1).gather(1, true_class).squeeze(1).masked_fill(~valid, 1.0)
        kth = probability.flatten().kthvalue(min(min_kept, probability.numel())).values
        hard = probability <= torch.clamp(kth, min=thresh)
        kept = valid & (hard | (valid.sum() < min_kept))
    return cross_entropy(logits, target.masked_fill(~kept, ignore_index), ignore_index)


def masked_cross_entropy(logits: Tensor, target: Tensor, mask: Tensor, ignore: Tensor) -> Tensor:
    """``sum(CE · mask) / |ignore ≠ 255|``, the unlabeled consistency loss (§2 step 10).

    ``target`` may hold 255 where ``mask`` is 0; such pixels contribute nothing.
    """
    losses = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="none")
    return (losses * mask).sum() / (ignore != IGNORE_INDEX).sum().clamp(min=1)


def masked_kl_divergence(weak_logits: Tensor, strong_logits: Tensor, mask: Tensor, ignore: Tensor) -> Tensor:
    """``sum_pixels(KL(softmax(weak) ‖ softmax(strong)) · mask) / |ignore ≠ 255|`` (``loss_kl``, §2 step 10).

    Per pixel this is ``KLDivLoss(reduction="none")(log_softmax(strong), softmax(weak))`` summed over the
    classes; the weak prediction is the target and receives no gradient.
    """
    weak = weak_logits.detach().float().softmax(1)
    strong = strong_logits.float().log_softmax(1)
    divergence = F.kl_div(strong, weak, reduction="none").sum(1)
    return (divergence * mask).sum() / (ignore != IGNORE_INDEX).sum().clamp(min=1)


def corrmatch_total(
    loss_x: Tensor,
    loss_x_corr: Tensor,
    loss_u_s: Tensor,
    loss_kl: Tensor,
    loss_u_fp: Tensor,
    loss_u_corr: Tensor,
    pixel_propagation: bool = True,
) -> Tensor:
    """The CorrMatch objective (§2 step 10). ``pixel_propagation=False`` leaves out the two terms of the
    correlation map's predictions (``loss_x_corr``, ``loss_u_corr``), the other weights unchanged."""
    corr = 1.0 if pixel_propagation else 0.0
    return (
        0.5 * loss_x
        + 0.5 * corr * loss_x_corr
        + 0.25 * loss_u_s
        + 0.25 * loss_kl
        + 0.25 * loss_u_fp
        + 0.25 * corr * loss_u_corr
    ) / 2
