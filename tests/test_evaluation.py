"""Evaluation (DESIGN.md §4): the official mIoU and the three inference modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corrmatch.evaluation import (
    center_crop,
    intersection_and_union,
    mean_iou,
    segment_probabilities,
    sliding_window_scores,
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


def official_sliding_window(net: torch.nn.Module, image: torch.Tensor, grid: int) -> torch.Tensor:
    """The authors' loop: one forward per window, softmax summed."""
    b, _, h, w = image.shape
    final = torch.zeros(b, 4, h, w)
    row = 0
    while row < h:
        col = 0
        while col < w:
            window = image[:, :, row : min(h, row + grid), col : min(w, col + grid)]
            final[:, :, row : min(h, row + grid), col : min(w, col + grid)] += net(window).softmax(dim=1)
            col += int(grid * 2 / 3)
        row += int(grid * 2 / 3)
    return final


@torch.no_grad()
def test_sliding_window_matches_the_official_loop_with_batched_windows() -> None:
    torch.manual_seed(0)
    net, image = CountingNet(), torch.randn(1, 3, 23, 31)
    expected = official_sliding_window(net, image, 12)
    net.calls = 0
    scores = sliding_window_scores(net, image, 12)
    assert net.calls <= 4  # windows of equal size share one forward
    assert torch.allclose(scores, expected, atol=1e-6)
    assert torch.equal(segment_probabilities(net, image, "sliding_window", 12)[0], scores.argmax(1))


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
