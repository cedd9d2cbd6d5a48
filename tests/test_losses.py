"""Losses (DESIGN.md §2 step 10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from corrmatch.losses import (
    corrmatch_total,
    cross_entropy,
    masked_cross_entropy,
    masked_kl_divergence,
    ohem_cross_entropy,
)


def make_inputs(
    seed: int, batch: int = 2, classes: int = 5, size: int = 8, ignored: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, size, size, generator=g) * 3
    target = torch.randint(classes, (batch, size, size), generator=g)
    target[torch.rand(batch, size, size, generator=g) < ignored] = 255
    return logits, target


def ohem_by_sorting(logits: torch.Tensor, target: torch.Tensor, thresh: float, min_kept: int) -> float:
    """Probability OHEM written plainly with NumPy: sort the true-class probabilities, pick the threshold."""
    probability = logits.float().softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1]).numpy()
    log_probability = logits.float().log_softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1]).numpy()
    labels = target.reshape(-1).numpy()
    valid = labels != 255
    rows = np.arange(labels.size)
    true_probability = np.where(valid, probability[rows, np.where(valid, labels, 0)], np.float32(1))
    if min_kept == 0 or min_kept > valid.sum():
        kept = valid
    else:
        kth = np.sort(true_probability)[min(min_kept, labels.size) - 1]
        cut = kth if kth > np.float32(thresh) else np.float32(thresh)
        kept = valid & (true_probability <= cut)
    if not kept.any():
        return 0.0
    return float(-log_probability[rows[kept], labels[kept]].mean())


def test_cross_entropy_equals_pytorch() -> None:
    logits, target = make_inputs(0)
    torch.testing.assert_close(
        cross_entropy(logits, target), F.cross_entropy(logits, target, ignore_index=255)
    )
    other = target.masked_fill(target == 255, 7)
    torch.testing.assert_close(
        cross_entropy(logits, other, ignore_index=7), F.cross_entropy(logits, other, ignore_index=7)
    )


@pytest.mark.parametrize(
    ("thresh", "min_kept"),
    [(0.7, 10), (0.7, 60), (0.3, 50), (0.99, 5), (0.7, 0), (0.7, 1000), (0.7, 100000), (0.0, 1)],
)
@pytest.mark.parametrize("seed", range(3))
def test_ohem_equals_sorting(seed: int, thresh: float, min_kept: int) -> None:
    logits, target = make_inputs(seed, ignored=0.3)
    expected = ohem_by_sorting(logits, target, thresh, min_kept)
    torch.testing.assert_close(ohem_cross_entropy(logits, target, thresh, min_kept).item(), expected)


def test_ohem_keeps_every_valid_pixel_when_too_few() -> None:
    logits, target = make_inputs(4)
    torch.testing.assert_close(ohem_cross_entropy(logits, target, 0.7, 10**6), cross_entropy(logits, target))


def test_ohem_keeps_at_least_min_kept_hardest() -> None:
    """All true-class probabilities are above thresh: exactly the min_kept hardest pixels count."""
    logits = torch.zeros(1, 2, 1, 10)
    logits[0, 0, 0] = torch.arange(10, dtype=torch.float32) + 2  # class 0 right, ever more sure
    target = torch.zeros(1, 1, 10, dtype=torch.long)
    loss = ohem_cross_entropy(logits, target, thresh=0.5, min_kept=3)
    torch.testing.assert_close(loss, F.cross_entropy(logits[..., :3], target[..., :3]))


def test_masked_cross_entropy() -> None:
    logits, target = make_inputs(5, ignored=0.0)
    ignore = torch.where(torch.rand(target.shape, generator=torch.Generator().manual_seed(1)) < 0.3, 255, 0)
    mask = torch.rand(target.shape, generator=torch.Generator().manual_seed(2)) < 0.6
    target_with_holes = target.masked_fill(~mask & (target % 2 == 0), 255)  # 255 only where mask is 0
    expected = (F.cross_entropy(logits, target, reduction="none") * mask).sum() / (ignore != 255).sum()
    torch.testing.assert_close(masked_cross_entropy(logits, target_with_holes, mask, ignore), expected)


def test_masked_kl_divergence_equals_kldivloss() -> None:
    weak, _ = make_inputs(6)
    strong, _ = make_inputs(7)
    weak.requires_grad_(True)
    strong.requires_grad_(True)
    ignore = torch.where(torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(3)) < 0.3, 255, 0)
    mask = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(4)) < 0.5
    per_pixel = nn.KLDivLoss(reduction="none")(strong.log_softmax(1), weak.detach().softmax(1)).sum(1)
    expected = (per_pixel * mask).sum() / (ignore != 255).sum()
    loss = masked_kl_divergence(weak, strong, mask, ignore)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert weak.grad is None and strong.grad is not None


def test_all_ignored_batch_gives_zero_and_finite_gradients() -> None:
    logits, target = make_inputs(8, ignored=1.0)
    logits.requires_grad_(True)
    ignore = torch.full(target.shape, 255)
    mask = torch.zeros(target.shape, dtype=torch.bool)
    label = torch.zeros_like(target)
    losses = [
        cross_entropy(logits, target),
        ohem_cross_entropy(logits, target),
        ohem_cross_entropy(logits, target, min_kept=0),
        masked_cross_entropy(logits, label, mask, ignore),
        masked_kl_divergence(logits, logits * 2, mask, ignore),
    ]
    for loss in losses:
        assert loss.item() == 0.0
    sum(losses).backward()
    assert torch.isfinite(logits.grad).all()


def test_losses_are_float32_under_bfloat16() -> None:
    logits, target = make_inputs(9)
    low = logits.bfloat16()
    mask = target != 255
    ignore = torch.zeros_like(target)
    label = target.masked_fill(~mask, 0)
    pairs = [
        (cross_entropy(low, target), cross_entropy(low.float(), target)),
        (ohem_cross_entropy(low, target, 0.7, 20), ohem_cross_entropy(low.float(), target, 0.7, 20)),
        (
            masked_cross_entropy(low, label, mask, ignore),
            masked_cross_entropy(low.float(), label, mask, ignore),
        ),
        (
            masked_kl_divergence(low, low * 2, mask, ignore),
            masked_kl_divergence(low.float(), low.float() * 2, mask, ignore),
        ),
    ]
    for loss, reference in pairs:
        assert loss.dtype == torch.float32
        assert torch.equal(loss, reference)


def test_corrmatch_total_weights() -> None:
    weights = []
    for i in range(6):
        losses = [torch.tensor(float(i == j)) for j in range(6)]
        weights.append(corrmatch_total(*losses).item())
    assert weights == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    torch.testing.assert_close(corrmatch_total(*(torch.tensor(2.0) for _ in range(6))), torch.tensor(2.0))
