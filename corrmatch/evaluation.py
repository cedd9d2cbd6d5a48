"""Evaluation (DESIGN.md §4): whole-image, centre-crop and sliding-window inference, and the mIoU of
intersections and unions summed over a whole validation set.

The mIoU is the official one: per class, IoU = intersection / (union + 1e-10) over the summed counts,
then the mean over *all* classes, so a class that never occurs in the ground truth nor in the
predictions (union 0) counts as an IoU of 0. A pixel whose label is ``ignore_index`` counts nowhere;
a prediction on a pixel whose label is outside ``[0, K)`` (and not ignored) counts in the class's
prediction area, as in the authors' ``intersectionAndUnion`` (whose ``np.histogram`` also counts a
label equal to K in the ground-truth area of class K−1; reproduced).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from corrmatch.constants import IGNORE_INDEX

__all__ = [
    "EvalMode",
    "MeanIoU",
    "center_crop",
    "intersection_and_union",
    "mean_iou",
    "segment",
    "sliding_window_scores",
    "window_grid",
]

EvalMode = Literal["original", "center_crop", "sliding_window"]
Logits = Callable[[Tensor], Tensor]  # images (B, 3, h, w) -> logits (B, K, h, w)


def center_crop(x: Tensor, size: int) -> Tensor:
    """The centred ``size`` × ``size`` window of the last two dimensions (smaller sides are kept)."""
    height, width = x.shape[-2:]
    top, left = max((height - size) // 2, 0), max((width - size) // 2, 0)
    return x[..., top : top + size, left : left + size]


def window_grid(height: int, width: int, window: int) -> list[tuple[int, int, int, int]]:
    """Windows ``(top, left, height, width)`` of the official sliding window: corners every
    ``int(2/3·window)`` pixels from 0 while inside the image, windows cut at the bottom/right border."""
    stride = int(window * 2 / 3)
    if stride < 1:
        raise ValueError(f"sliding window of {window} pixels is too small (stride {stride})")
    return [
        (top, left, min(height, top + window) - top, min(width, left + window) - left)
        for top in range(0, height, stride)
        for left in range(0, width, stride)
    ]


def sliding_window_scores(logits: Logits, image: Tensor, window: int) -> Tensor:
    """Softmax probabilities summed over the windows of :func:`window_grid`, (B, K, H, W) float32.

    Windows of equal shape (at most four: interior, right border, bottom border, corner) go through
    the network together in one batch.
    """
    batch, _, height, width = image.shape
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for top, left, h, w in window_grid(height, width, window):
        groups.setdefault((h, w), []).append((top, left))
    scores: Tensor | None = None
    for (h, w), corners in groups.items():
        crops = torch.cat([image[:, :, top : top + h, left : left + w] for top, left in corners])
        probs = logits(crops).float().softmax(dim=1)
        if scores is None:
            scores = probs.new_zeros(batch, probs.shape[1], height, width)
        for i, (top, left) in enumerate(corners):
            scores[:, :, top : top + h, left : left + w] += probs[i * batch : (i + 1) * batch]
    assert scores is not None
    return scores


def segment(logits: Logits, image: Tensor, mode: EvalMode, crop_size: int) -> Tensor:
    """Predicted labels (B, h, w) in one of the modes of §4. For ``center_crop`` the prediction covers
    :func:`center_crop` of the image (crop the mask the same way)."""
    if mode == "sliding_window":
        return sliding_window_scores(logits, image, crop_size).argmax(dim=1)
    if mode == "center_crop":
        image = center_crop(image, crop_size)
    elif mode != "original":
        raise ValueError(f"unknown evaluation mode {mode!r}")
    return logits(image).argmax(dim=1)


def intersection_and_union(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> tuple[Tensor, Tensor]:
    """Per-class intersection and union pixel counts (K,), int64, of one batch of predictions.

    Built from a (K+1)×K confusion matrix (the extra row collects labels outside ``[0, K)``) with one
    ``bincount``: no data-dependent shapes, so no host synchronisation.
    """
    k = num_classes
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    row = torch.where((target >= 0) & (target < k), target, k)
    index = torch.where(target != ignore_index, row * k + pred, (k + 1) * k)
    confusion = torch.bincount(index, minlength=(k + 1) * k + 1)[:-1].reshape(k + 1, k)
    intersection = confusion[:k].diagonal()
    predicted, labelled = confusion.sum(dim=0), confusion[:k].sum(dim=1)
    labelled[k - 1] += (target == k).sum()  # np.histogram's closed last bin
    return intersection, predicted + labelled - intersection


def mean_iou(intersection: Tensor, union: Tensor) -> tuple[Tensor, Tensor]:
    """``(mIoU in percent, per-class IoU in [0, 1])`` from summed counts; zero-union classes give 0."""
    iou = intersection.double() / (union.double() + 1e-10)
    return iou.mean() * 100.0, iou


class MeanIoU(Metric):
    """The official mIoU (§4) as a torchmetrics ``Metric``: per-class intersections and unions
    (:func:`intersection_and_union`) summed over every batch and, at ``compute``, over all processes.

    ``compute()`` returns ``(mIoU in percent, per-class IoU in [0, 1])`` (:func:`mean_iou`).
    """

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        for name in ("intersection", "union"):
            self.add_state(name, torch.zeros(num_classes, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        intersection, union = intersection_and_union(pred, target, self.num_classes, self.ignore_index)
        self.intersection += intersection
        self.union += union

    def compute(self) -> tuple[Tensor, Tensor]:
        return mean_iou(self.intersection, self.union)
