"""Region propagation of CorrMatch (DESIGN.md §2 step 9), exact and without per-mask host round trips.

The masks of one image are visited in order and each decision reads the labels rewritten by the
earlier ones, so the result depends on the order. Images are independent. Two implementations give the
same result bit for bit as the loop of :mod:`corrmatch.pseudo.reference`:

- on the CPU, a sparse sweep: the pixels of every mask are listed once with one ``flatnonzero`` per
  image, then each mask costs a few NumPy operations on its own pixels only;
- on an accelerator, a dense sweep over the masks that treats all images at once and never reads a
  value back to the host (no ``.item()``, no ``nonzero``, no boolean indexing): class counts come from a
  ``scatter_add`` into a fixed number of bins and decisions are applied with ``torch.where``.

Ratios are computed as the reference computes them: an integer count divided by an integer count gives
a float32 ratio, which is compared with τ in the type that PyTorch promotes the two to (float32 for a
Python float or a float32 τ, float64 for a float64 τ). Borderline cases therefore agree exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["MAX_LABEL_VALUES", "region_propagation"]

MAX_LABEL_VALUES = 256
"""Labels must lie in ``[0, MAX_LABEL_VALUES)`` on an accelerator (the number of count bins)."""


def region_propagation(
    label: Tensor, high: Tensor, regions: Tensor, threshold: float | Tensor
) -> tuple[Tensor, Tensor]:
    """Propagates confident labels over correlation regions (DESIGN.md §2 step 9).

    For every image ``b`` and every mask ``m`` in order, with ``seg = regions[b, m] & high[b]``: the mask
    is skipped when ``seg`` is empty or ``|seg| / |regions[b, m]| < τ``; otherwise the classes of the
    current target over ``seg`` are counted and, when the most frequent one (smallest id on ties) holds
    more than ``τ`` of them, the target becomes that class on the whole mask, which joins the loss mask.

    Args:
        label: (B, H, W) long, the mixed pseudo-label ``label_m`` (values in ``[0, 256)`` on accelerators).
        high: (B, H, W) bool, pixels with ``conf_m ≥ τ`` that are not ignored.
        regions: (B, M, H, W) bool region masks, already without the CutMix box and ignored pixels.
        threshold: τ, a Python float (taken as float32, like the reference's tensor) or a 0-d tensor.

    Returns:
        ``(target, loss_mask)``: the propagated label (B, H, W) long and ``loss_mask`` (B, H, W) bool,
        the union of ``high`` and the accepted masks.
    """
    if regions.ndim != 4 or regions.shape[0] != label.shape[0] or regions.shape[2:] != label.shape[1:]:
        raise ValueError(f"regions {tuple(regions.shape)} do not match label {tuple(label.shape)}")
    tau = _as_tensor(threshold)
    if label.device.type == "cpu":
        return _propagate_host(label, high.bool(), regions.bool(), tau)
    return _propagate_device(label, high.bool(), regions.bool(), tau.to(label.device))


def _as_tensor(threshold: float | Tensor) -> Tensor:
    """τ as the reference holds it: a tensor, float32 unless given as a tensor of another type."""
    if isinstance(threshold, Tensor):
        return threshold.detach()
    return torch.tensor(threshold, dtype=torch.float32)


def _propagate_host(label: Tensor, high: Tensor, regions: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
    """CPU sweep: each mask touches only its own pixels, listed once per image."""
    batch, num_masks, height, width = regions.shape
    pixels = height * width
    compare_dtype = torch.promote_types(torch.float32, tau.dtype)
    tau_value = tau.cpu().to(compare_dtype).numpy()[()]
    masks = regions.reshape(batch, num_masks * pixels).contiguous().numpy()
    confident = high.reshape(batch, pixels).contiguous().numpy()
    target = label.reshape(batch, pixels).clone()
    loss_mask = high.reshape(batch, pixels).clone()
    target_np, loss_mask_np = target.numpy(), loss_mask.numpy()
    mask_starts = np.arange(num_masks + 1) * pixels
    for b in range(batch):
        members = np.flatnonzero(masks[b])  # m * pixels + p for every pixel p of every mask m, sorted
        bounds = np.searchsorted(members, mask_starts).tolist()
        labels_b, confident_b, loss_mask_b = target_np[b], confident[b], loss_mask_np[b]
        for m in range(num_masks):
            region = members[bounds[m] : bounds[m + 1]] - m * pixels
            segment = region[confident_b[region]]
            if segment.size == 0 or np.float32(segment.size) / np.float32(region.size) < tau_value:
                continue
            counts = np.bincount(labels_b[segment])
            top_class = counts.argmax()
            if np.float32(counts[top_class]) / np.float32(segment.size) > tau_value:
                labels_b[region] = top_class
                loss_mask_b[region] = True
    return target.view_as(label), loss_mask.view_as(high)


def _propagate_device(label: Tensor, high: Tensor, regions: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
    """Accelerator sweep: one pass per mask over all images, with no host synchronisation."""
    batch, num_masks = regions.shape[:2]
    compare_dtype = torch.promote_types(torch.float32, tau.dtype)
    tau = tau.to(compare_dtype)
    masks = regions.flatten(2)
    confident = high.flatten(1)
    segments = masks & confident.unsqueeze(1)
    region_size = masks.sum(2)
    segment_size = segments.sum(2)
    # The first test does not depend on the labels: decide it for all masks at once.
    eligible = (segment_size > 0) & ~((segment_size / region_size).to(compare_dtype) < tau)
    target = label.flatten(1).clone()
    accepted = torch.zeros_like(eligible)
    empty_counts = torch.zeros(batch, MAX_LABEL_VALUES, dtype=torch.long, device=label.device)
    for m in range(num_masks):
        counts = empty_counts.scatter_add(1, target, segments[:, m].long())
        top_count, top_class = counts.max(1)  # the first maximum: the smallest class id on ties
        accept = eligible[:, m] & ((top_count / segment_size[:, m]).to(compare_dtype) > tau)
        accepted[:, m] = accept
        target = torch.where(masks[:, m] & accept.unsqueeze(1), top_class.unsqueeze(1), target)
    loss_mask = confident | (masks & accepted.unsqueeze(2)).any(1)
    return target.view_as(label), loss_mask.view_as(high)
