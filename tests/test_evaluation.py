"""Evaluation (DESIGN.md §4): the official mIoU and the three inference modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import VIT_NETWORK

from corrmatch import methods
from corrmatch.evaluation import (
    center_crop,
    intersection_and_union,
    mean_iou,
    segment_probabilities,
    sliding_window_scores,
    window_grid,
)


def reference_counts(
    pred: np.ndarray, target: np.ndarray, k: int, ignore: int = 255
) -> tuple[np.ndarray, ...]:
    """The authors' ``intersectionAndUnion``, histogram by histogram."""
    pred, target = pred.reshape(-1).copy(), target.reshape(-1)
    pred[target == ignore] = ignore
    intersection = np.histogram(pred[pred == target], bins=np.arange(k + 1))[0]
    area_pred = np.histogram(pred, bins=np.arange(k + 1))[0]
    area_target = np.histogram(target, bins=np.arange(k + 1))[0]
    return intersection, area_pred + area_target - intersection


@pytest.mark.parametrize("k", [2, 5, 21])
def test_counts_match_the_official_histograms(k: int) -> None:
    generator = torch.Generator().manual_seed(k)
    for _ in range(20):
        pred = torch.randint(0, k, (2, 9, 11), generator=generator)
        target = torch.randint(-1, k + 2, (2, 9, 11), generator=generator)
        target[target == k + 1] = 255  # labels -1 and k also occur, as in the reference's edge cases
        intersection, union = intersection_and_union(pred, target, k)
        expected_i, expected_u = reference_counts(pred.numpy(), target.numpy(), k)
        assert intersection.tolist() == expected_i.tolist()
        assert union.tolist() == expected_u.tolist()


def test_miou_sums_counts_over_the_set_and_counts_absent_classes_as_zero() -> None:
    # image 1: class 0 perfect; image 2: class 1 half right; class 2 never occurs anywhere
    pred = [torch.tensor([[0, 0]]), torch.tensor([[1, 0, 255]])]
    target = [torch.tensor([[0, 0]]), torch.tensor([[1, 1, 255]])]
    counts = [torch.stack(intersection_and_union(p, t, 3)) for p, t in zip(pred, target)]
    intersection, union = sum(counts)
    miou, iou = mean_iou(intersection, union)
    assert iou.tolist() == pytest.approx([2 / 3, 1 / 2, 0.0])
    assert miou.item() == pytest.approx(100 * (2 / 3 + 1 / 2 + 0) / 3)


class CountingNet(torch.nn.Module):
    """A position-dependent 'network' that counts its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x) * 3


def corrmatch_release_windows(h: int, w: int, grid: int) -> list[tuple[slice, slice]]:
    """CorrMatch's (and UniMatch's) ``evaluate``, written out: rows and columns step by ``int(grid·2/3)``
    from 0 while inside the image, each window sliced up to ``min(side, start + grid)``."""
    windows, row = [], 0
    while row < h:
        col = 0
        while col < w:
            windows.append((slice(row, min(h, row + grid)), slice(col, min(w, col + grid))))
            col += int(grid * 2 / 3)
        row += int(grid * 2 / 3)
    return windows


def unimatch_v2_release_windows(h: int, w: int, grid: int) -> list[tuple[slice, slice]]:
    """UniMatch V2's ``evaluate``, written out: each window sliced ``[start : start + grid]``; after a
    window the loop stops if it started at ``side − grid``, else the next start is
    ``min(start + int(grid·2/3), side − grid)`` (negative on a side shorter than ``grid``)."""
    windows, row = [], 0
    while row < h:
        col = 0
        while col < w:
            windows.append((slice(row, row + grid), slice(col, col + grid)))
            if col == w - grid:
                break
            col = min(col + int(grid * 2 / 3), w - grid)
        if row == h - grid:
            break
        row = min(row + int(grid * 2 / 3), h - grid)
    return windows


RELEASE_WINDOWS = {"corrmatch": corrmatch_release_windows, "unimatch_v2": unimatch_v2_release_windows}


def release_scores(net, image: torch.Tensor, grid: int, placement: str) -> torch.Tensor:
    """A release's sliding window: one forward per window in its order, softmax summed."""
    b, _, h, w = image.shape
    final = None
    for rows, cols in RELEASE_WINDOWS[placement](h, w, grid):
        probs = net(image[:, :, rows, cols]).softmax(dim=1)
        final = torch.zeros(b, probs.shape[1], h, w) if final is None else final
        final[:, :, rows, cols] += probs
    return final


def as_boxes(windows: list[tuple[slice, slice]], h: int, w: int) -> list[tuple[int, int, int, int]]:
    """``(top, left, height, width)`` of what each slice pair reads from an ``h`` × ``w`` tensor."""
    rows, cols = torch.arange(h), torch.arange(w)
    return [
        (int(rows[r][0]), int(cols[c][0]), len(rows[r]), len(cols[c])) for r, c in windows
    ]


GRID_SIZES = [
    (1024, 2048, 798),  # Cityscapes, UniMatch V2
    (1024, 2048, 801),  # Cityscapes, CorrMatch
    (500, 375, 321),  # Pascal
    (375, 500, 518),
    (281, 500, 321),
    (366, 500, 518),
    (321, 321, 321),  # exactly the window
    (322, 640, 321),
    (200, 900, 321),  # a side shorter than the window
    (400, 250, 321),
    (100, 50, 321),  # both sides shorter, one less than half the window
    (23, 31, 12),
    (12, 40, 3),
    (1, 1, 2),
]


@pytest.mark.parametrize("placement", ["corrmatch", "unimatch_v2"])
def test_window_grid_is_the_releases_loop(placement: str) -> None:
    sizes = GRID_SIZES + [
        (int(h), int(w), int(s))
        for h, w, s in torch.randint(1, 90, (200, 3), generator=torch.Generator().manual_seed(0)).tolist()
        if s >= 2
    ]
    for h, w, s in sizes:
        expected = as_boxes(RELEASE_WINDOWS[placement](h, w, s), h, w)
        assert window_grid(h, w, s, placement) == expected, (h, w, s)


def test_cityscapes_windows_of_each_release() -> None:
    # UniMatch V2 at 798: every window a full crop, the last row and column flush with the border
    grid = window_grid(1024, 2048, 798, "unimatch_v2")
    assert sorted({top for top, *_ in grid}) == [0, 226]
    assert sorted({left for _, left, *_ in grid}) == [0, 532, 1064, 1250]
    assert {(h, w) for *_, h, w in grid} == {(798, 798)}
    # CorrMatch: corners every 534 (at 801) or 532 (at 798) pixels, windows cut at the borders
    grid = window_grid(1024, 2048, 801)
    assert [(top, left) for top, left, *_ in grid] == [(r, c) for r in (0, 534) for c in (0, 534, 1068, 1602)]
    assert {(h, w) for *_, h, w in grid} == {(801, 801), (801, 446), (490, 801), (490, 446)}
    grid = window_grid(1024, 2048, 798, "corrmatch")
    assert sorted({top for top, *_ in grid}) == [0, 532] and {h for *_, h, _ in grid} == {798, 492}
    assert {w for *_, w in grid} == {798, 452}
    # a side shorter than the window: UniMatch V2 reads it whole, then from 2·side − window to the border
    assert window_grid(500, 900, 798, "unimatch_v2") == [
        (0, 0, 500, 798), (0, 102, 500, 798), (202, 0, 298, 798), (202, 102, 298, 798)
    ]
    assert window_grid(300, 798, 798, "unimatch_v2") == [(0, 0, 300, 798), (0, 0, 300, 798)]
    with pytest.raises(ValueError, match="unknown window placement"):
        window_grid(10, 10, 6, "centred")  # type: ignore[arg-type]


@pytest.mark.parametrize("placement", ["corrmatch", "unimatch_v2"])
@pytest.mark.parametrize("size", [(23, 31), (12, 40), (5, 9)])
@torch.no_grad()
def test_sliding_window_matches_the_releases_loop_with_batched_windows(
    placement: str, size: tuple[int, int]
) -> None:
    torch.manual_seed(0)
    net, image = CountingNet(), torch.randn(2, 3, *size)
    expected = release_scores(net, image, 12, placement)
    net.calls = 0
    scores = sliding_window_scores(net, image, 12, placement)
    assert net.calls <= 4  # distinct windows of equal size share one forward
    assert torch.equal(scores, expected)
    labels = segment_probabilities(net, image, "sliding_window", 12, placement=placement)[0]
    assert torch.equal(labels, expected.argmax(1))


@torch.no_grad()
def test_original_and_center_crop_modes() -> None:
    torch.manual_seed(0)
    net, image = CountingNet(), torch.randn(1, 3, 20, 30)
    assert torch.equal(segment_probabilities(net, image, "original", 8)[0], net(image).argmax(1))
    crop = image[:, :, 6:14, 11:19]
    assert torch.equal(center_crop(image, 8), crop)
    assert torch.equal(segment_probabilities(net, image, "center_crop", 8)[0], net(crop).argmax(1))
    assert center_crop(torch.zeros(5, 7), 10).shape == (5, 7)
    with pytest.raises(ValueError, match="unknown evaluation mode"):
        segment_probabilities(net, image, "tiled", 8)[0]  # type: ignore[arg-type]


@pytest.mark.parametrize(("method", "placement"), [("UniMatchV2", "unimatch_v2"), ("CorrMatch", "corrmatch")])
@torch.no_grad()
def test_validation_labels_are_the_releases_on_a_tiny_dinov2(method: str, placement: str) -> None:
    torch.manual_seed(0)
    settings = {"network": VIT_NETWORK, "num_classes": 5, "crop_size": 56, "eval_mode": "sliding_window"}
    module = getattr(methods, method)(**settings)
    module.eval()
    other = "corrmatch" if placement == "unimatch_v2" else "unimatch_v2"
    for size in ((72, 144), (42, 112)):  # Cityscapes' shape at a 56 crop; a side shorter than the crop
        image, mask = torch.randn(1, 3, *size), torch.randint(0, 5, (1, *size))
        expected = release_scores(module.logits, image, 56, placement).argmax(1)
        assert (release_scores(module.logits, image, 56, other).argmax(1) != expected).any()  # not vacuous
        assert torch.equal(module.validation_step({"image": image, "mask": mask}, 0)["pred"], expected)
        assert torch.equal(module.predict_step({"image": image, "id": ["a"]}, 0)["pred"], expected)
        counts = intersection_and_union(expected, mask, 5)
        evaluated = [module.iou, *([module.iou_teacher] if method == "UniMatchV2" else [])]  # its teacher too
        for metric in evaluated:
            assert torch.equal(metric.intersection, counts[0]) and torch.equal(metric.union, counts[1])
            metric.reset()
