"""Slow, loop-by-loop transcription of the region propagation of DESIGN.md §2 step 9.

This module exists to check and to time :func:`corrmatch.pseudo.region_propagation`. It walks the images and
the masks one by one in Python, counts classes with :func:`torch.unique` and branches on host values, exactly
as the written semantics read. Do not use it in training: it synchronises with the device at every mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["accepted_masks_reference", "region_propagation_reference", "synthetic_inputs"]


def region_propagation_reference(
    label: Tensor, high: Tensor, regions: Tensor, threshold: float | Tensor
) -> tuple[Tensor, Tensor]:
    """Sequential region propagation (DESIGN.md §2 step 9), one image and one mask at a time.

    Args:
        label: (B, H, W) long, the mixed pseudo-label ``label_m``.
        high: (B, H, W) bool, confident and not ignored pixels.
        regions: (B, M, H, W) bool region masks ``R``.
        threshold: τ (a Python float is taken as a float32 0-d tensor, as the authors hold τ).

    Returns:
        ``(target, loss_mask)``: the propagated label (B, H, W) long and the loss mask (B, H, W) bool.
    """
    target, loss_mask, _ = _sweep(label, high, regions, threshold)
    return target, loss_mask


def accepted_masks_reference(
    label: Tensor, high: Tensor, regions: Tensor, threshold: float | Tensor
) -> Tensor:
    """(B, M) bool: which masks the sequential propagation accepts (rewrites and adds to the loss mask)."""
    return _sweep(label, high, regions, threshold)[2]


def _sweep(
    label: Tensor, high: Tensor, regions: Tensor, threshold: float | Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    tau = threshold if isinstance(threshold, Tensor) else torch.tensor(threshold, dtype=torch.float32)
    tau = tau.to(label.device)
    target = label.clone()
    loss_mask = high.clone()
    accepted = torch.zeros(regions.shape[:2], dtype=torch.bool)
    for b in range(regions.shape[0]):
        for m in range(regions.shape[1]):
            region = regions[b, m]
            segment = region & high[b]
            segment_size = segment.sum()
            if segment_size == 0:
                continue
            high_ratio = segment_size / region.sum()
            if high_ratio < tau:
                continue
            classes, counts = torch.unique(target[b][segment], return_counts=True)
            if counts.max() / counts.sum() > tau:
                target[b][region] = classes[counts.argmax()]
                loss_mask[b] |= region
                accepted[b, m] = True
    return target, loss_mask | high, accepted


def synthetic_inputs(
    batch: int = 4,
    num_masks: int = 128,
    num_classes: int = 21,
    size: int = 321,
    confident_fraction: float = 0.8,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Realistic ``(label, high, regions)`` for testing and timing region propagation.

    Labels are object-like regions (the argmax of smooth random class scores, class 0 favoured as
    background); the least confident pixels, along class boundaries, are not ``high``; each region mask
    is made like the official ones, an upsampled correlation row on the stride-8 grid, min–max normalised
    and thresholded at 0.5: a blob around a random point that follows the object found there.
    """
    generator = torch.Generator().manual_seed(seed)
    grid = (size - 1) // 8 + 1
    scores = torch.randn(batch, num_classes, size // 80 + 2, size // 80 + 2, generator=generator)
    scores[:, 0] += 1.0
    fine = F.interpolate(scores, size=(size, size), mode="bilinear", align_corners=True)
    label = fine.argmax(1)
    best_two = fine.topk(min(2, num_classes), dim=1).values
    margin = best_two[:, 0] - best_two[:, -1]
    cut = torch.quantile(margin.flatten(1), 1 - confident_fraction, dim=1)
    high = margin >= cut[:, None, None]

    coarse = F.interpolate(scores, size=(grid, grid), mode="bilinear", align_corners=True)
    coarse_two = coarse.topk(min(2, num_classes), dim=1)
    center_y = torch.randint(0, grid, (batch, num_masks), generator=generator)
    center_x = torch.randint(0, grid, (batch, num_masks), generator=generator)
    center_class = coarse_two.indices[:, 0][torch.arange(batch)[:, None], center_y, center_x]
    own = coarse.gather(1, center_class[..., None, None].expand(batch, num_masks, grid, grid))
    is_best = coarse_two.indices[:, None, 0] == center_class[..., None, None]
    rival = torch.where(is_best, coarse_two.values[:, None, -1], coarse_two.values[:, None, 0])
    radius = (torch.rand(2, batch, num_masks, 1, 1, generator=generator) * 0.5 + 0.25) * grid
    y = torch.arange(grid, dtype=torch.float32).view(grid, 1)
    x = torch.arange(grid, dtype=torch.float32).view(1, grid)
    offset_y = (y - center_y[..., None, None]) / radius[0]
    offset_x = (x - center_x[..., None, None]) / radius[1]
    distance = offset_y**2 + offset_x**2
    rows = torch.exp(-distance) * torch.sigmoid(8 * (own - rival))
    rows = rows + 0.01 * torch.rand(rows.shape, generator=generator)
    rows = F.interpolate(rows, size=(size, size), mode="bilinear", align_corners=True)
    low = rows.amin((2, 3), keepdim=True)
    peak = rows.amax((2, 3), keepdim=True)
    regions = (rows - low) / (peak - low) > 0.5
    return label, high, regions
