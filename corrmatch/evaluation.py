"""Evaluation (DESIGN.md §4): whole-image, centre-crop and sliding-window inference, optional test-time
augmentation (flip, several scales), and the mIoU of intersections and unions summed over a whole
validation set.

The mIoU is the official one: per class, IoU = intersection / (union + 1e-10) over the summed counts,
then the mean over *all* classes, so a class that never occurs in the ground truth nor in the
predictions (union 0) counts as an IoU of 0. A pixel whose label is ``ignore_index`` counts nowhere;
a prediction on a pixel whose label is outside ``[0, K)`` (and not ignored) counts in the class's
prediction area, as in the authors' ``intersectionAndUnion`` (whose ``np.histogram`` also counts a
label equal to K in the ground-truth area of class K−1; reproduced).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from corrmatch.constants import IGNORE_INDEX
from corrmatch.models.deeplabv3plus import resize

__all__ = [
    "EvalMode",
    "MeanIoU",
    "WindowPlacement",
    "center_crop",
    "intersection_and_union",
    "mean_iou",
    "predict_mode",
    "segment_probabilities",
    "sliding_window_scores",
    "tta_views",
    "window_grid",
]

EvalMode = Literal["original", "center_crop", "sliding_window"]
WindowPlacement = Literal["corrmatch", "unimatch_v2"]  # whose release places the windows (window_grid)
Logits = Callable[[Tensor], Tensor]  # images (B, 3, h, w) -> logits (B, K, h, w)


def center_crop(x: Tensor, size: int) -> Tensor:
    """The centred ``size`` × ``size`` window of the last two dimensions (smaller sides are kept)."""
    height, width = x.shape[-2:]
    top, left = max((height - size) // 2, 0), max((width - size) // 2, 0)
    return x[..., top : top + size, left : left + size]


def window_grid(
    height: int, width: int, window: int, placement: WindowPlacement = "corrmatch"
) -> list[tuple[int, int, int, int]]:
    """Windows ``(top, left, height, width)`` of a release's sliding window, rows outer, columns inner
    (the order in which it sums them). Along each side of ``length`` pixels, with ``stride =
    int(2/3·window)`` and ``last = length − window``, the windows start at

    - ``"corrmatch"`` (CorrMatch's and UniMatch's release): ``0, stride, 2·stride, …`` while inside the
      image; windows are cut at the bottom/right border;
    - ``"unimatch_v2"`` (UniMatch V2's release): ``0, stride, …`` while below ``last``, then ``last``, so
      each window is a full ``window`` pixels; on a side shorter than the window, at ``0`` and at the
      negative ``last``, which the release's slice ``[last : last + window]`` reads from
      ``max(2·length − window, 0)`` to the border.

    Each window covers what the slice ``[start : start + window]`` of the side covers.
    """
    stride = int(window * 2 / 3)
    if stride < 1:
        raise ValueError(f"sliding window of {window} pixels is too small (stride {stride})")

    def spans(length: int) -> list[tuple[int, int]]:
        last = length - window
        if placement == "corrmatch":
            starts = list(range(0, length, stride))
        elif placement == "unimatch_v2":
            starts = [*range(0, last, stride), last] if last >= 0 else [0, last]
        else:
            raise ValueError(f"unknown window placement {placement!r} (corrmatch or unimatch_v2)")
        bounds = [slice(start, start + window).indices(length)[:2] for start in starts]
        return [(begin, end - begin) for begin, end in bounds]

    return [(top, left, h, w) for top, h in spans(height) for left, w in spans(width)]


def sliding_window_scores(
    logits: Logits, image: Tensor, window: int, placement: WindowPlacement = "corrmatch"
) -> Tensor:
    """Softmax probabilities summed over the windows of :func:`window_grid`, (B, K, H, W) float32, added
    in the grid's order as the releases add them.

    Distinct windows of equal shape go through the network together in one batch; a window the grid
    lists twice (UniMatch V2's rule on a side shorter than the window) is predicted once and added twice.
    """
    batch, _, height, width = image.shape
    windows = window_grid(height, width, window, placement)
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for top, left, h, w in dict.fromkeys(windows):
        groups.setdefault((h, w), []).append((top, left))
    probs: dict[tuple[int, int, int, int], Tensor] = {}
    for (h, w), corners in groups.items():
        crops = torch.cat([image[:, :, top : top + h, left : left + w] for top, left in corners])
        group = logits(crops).float().softmax(dim=1)
        for i, (top, left) in enumerate(corners):
            probs[top, left, h, w] = group[i * batch : (i + 1) * batch]
    first = next(iter(probs.values()))
    scores = first.new_zeros(batch, first.shape[1], height, width)
    for top, left, h, w in windows:
        scores[:, :, top : top + h, left : left + w] += probs[top, left, h, w]
    return scores


def predict_mode(height: int, width: int, crop_size: int) -> EvalMode:
    """The mode of whole-image prediction: the sliding window when a side exceeds the crop, else one
    pass (``train.py predict`` and :class:`corrmatch.Segmenter`)."""
    return "sliding_window" if max(height, width) > crop_size else "original"


def tta_views(height: int, width: int, scales: Sequence[float], flip: bool) -> list[tuple[int, int, bool]]:
    """The test-time views of a ``height`` × ``width`` image: ``(h, w, flipped)`` for every scale (sides
    rounded, at least 1) and, with ``flip``, each also mirrored horizontally."""
    sizes = [(max(round(height * s), 1), max(round(width * s), 1)) for s in scales]
    return [(h, w, flipped) for h, w in sizes for flipped in ((False, True) if flip else (False,))]


def _probabilities(
    logits: Logits, image: Tensor, window: int | None, placement: WindowPlacement
) -> tuple[Tensor, Tensor]:
    """Labels and class probabilities (float32) of one view: one pass, or the sliding window (the
    summed window softmax divided by the number of windows covering each pixel). The labels are the
    argmax of the logits or of the summed softmax, as the paper's evaluation takes them."""
    if window is None:
        out = logits(image)
        return out.argmax(dim=1), out.float().softmax(dim=1)
    scores = sliding_window_scores(logits, image, window, placement)
    return scores.argmax(dim=1), scores / scores.sum(dim=1, keepdim=True)


def segment_probabilities(
    logits: Logits,
    image: Tensor,
    mode: EvalMode,
    crop_size: int,
    scales: Sequence[float] | None = None,
    flip: bool = False,
    placement: WindowPlacement = "corrmatch",
) -> tuple[Tensor, Tensor]:
    """Predicted labels (B, h, w) and class probabilities (B, K, h, w), float32, in a mode of §4; the
    sliding window's windows are placed by ``placement``'s rule (:func:`window_grid`).

    Test-time augmentation: with ``scales`` (e.g. 0.75, 1.0, 1.25) and/or ``flip``, the image is
    resized (bilinear, ``align_corners=True`` as inside the network) and mirrored for every view of
    :func:`tta_views`, each view predicted in ``mode`` (windows keep the crop size), its probabilities
    mirrored and resized back, and the mean probability's argmax is the label. Without either (or
    with scales ``[1.0]`` alone), the labels are those of the paper's evaluation, bit for bit. For
    ``center_crop`` the prediction covers :func:`center_crop` of the image (crop the mask the same way).
    """
    if mode == "center_crop":
        image = center_crop(image, crop_size)
    elif mode not in ("original", "sliding_window"):
        raise ValueError(f"unknown evaluation mode {mode!r}")
    window = crop_size if mode == "sliding_window" else None
    scales = tuple(scales or (1.0,))
    if scales == (1.0,) and not flip:
        return _probabilities(logits, image, window, placement)
    height, width = image.shape[-2:]
    total: Tensor | None = None
    views = tta_views(height, width, scales, flip)
    for h, w, flipped in views:
        view = image if (h, w) == (height, width) else resize(image, (h, w))
        probs = _probabilities(logits, view.flip(-1) if flipped else view, window, placement)[1]
        probs = probs.flip(-1) if flipped else probs
        probs = probs if (h, w) == (height, width) else resize(probs, (height, width))
        total = probs if total is None else total + probs
    assert total is not None
    mean = total / len(views)
    return mean.argmax(dim=1), mean


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
