"""Region propagation (DESIGN.md §2 step 9): the fast paths against the loop-by-loop transcription."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from corrmatch.pseudo import region_propagation
from corrmatch.pseudo.reference import (
    accepted_masks_reference,
    region_propagation_reference,
    synthetic_inputs,
)
from corrmatch.pseudo.region import _propagate_device

Case = tuple[torch.Tensor, torch.Tensor, torch.Tensor, float | torch.Tensor]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Hundreds of small cases: one intra-op thread avoids thread hand-offs on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_matches_reference(
    label: torch.Tensor, high: torch.Tensor, regions: torch.Tensor, threshold: float | torch.Tensor
) -> None:
    """Both the CPU path and the accelerator path (run here on the CPU) equal the reference exactly."""
    expected_target, expected_mask = region_propagation_reference(label, high, regions, threshold)
    target, loss_mask = region_propagation(label, high, regions, threshold)
    assert torch.equal(target, expected_target)
    assert torch.equal(loss_mask, expected_mask)
    tau = threshold if isinstance(threshold, torch.Tensor) else torch.tensor(threshold, dtype=torch.float32)
    target, loss_mask = _propagate_device(label, high, regions, tau)
    assert torch.equal(target, expected_target)
    assert torch.equal(loss_mask, expected_mask)


def _tau(g: torch.Generator, low: float, high: float) -> float | torch.Tensor:
    """τ drawn in [low, high), as a Python float or a float32 0-d tensor."""
    value = low + (high - low) * torch.rand((), generator=g).item()
    return value if torch.randint(2, (), generator=g).item() else torch.tensor(value)


def _size(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (), generator=g))


def random_case(seed: int) -> Case:
    """Unstructured noise; labels dominated by one class so that some masks are pure enough."""
    g = torch.Generator().manual_seed(seed)
    b, m, h, w, k = _size(g, 1, 4), _size(g, 1, 128), _size(g, 1, 40), _size(g, 1, 40), _size(g, 1, 21)
    dominant = torch.randint(k, (b, 1, 1), generator=g)
    noisy = torch.rand(b, h, w, generator=g) < torch.rand((), generator=g) * 0.3
    label = torch.where(noisy, torch.randint(k, (b, h, w), generator=g), dominant)
    high = torch.rand(b, h, w, generator=g) < 0.5 + 0.5 * torch.rand((), generator=g)
    regions = torch.rand(b, m, h, w, generator=g) < torch.rand(b, m, 1, 1, generator=g) * 0.6
    return label, high, regions, _tau(g, 0.3, 0.95)


def _paint_rectangles(g: torch.Generator, canvas: torch.Tensor, values: torch.Tensor) -> None:
    """Paints one random rectangle per value, in order, onto ``canvas`` (H, W)."""
    h, w = canvas.shape
    for value in values:
        y0, x0 = _size(g, 0, h - 1), _size(g, 0, w - 1)
        canvas[y0 : _size(g, y0 + 1, h), x0 : _size(g, x0 + 1, w)] = value


def blob_case(seed: int) -> Case:
    """Object-like inputs: rectangle labels, overlapping elliptic and rectangular masks, low patches."""
    g = torch.Generator().manual_seed(seed)
    b, m, h, w, k = _size(g, 1, 4), _size(g, 1, 128), _size(g, 4, 48), _size(g, 4, 48), _size(g, 2, 21)
    label = torch.zeros(b, h, w, dtype=torch.long)
    high = torch.ones(b, h, w, dtype=torch.bool)
    regions = torch.zeros(b, m, h, w, dtype=torch.bool)
    y = torch.arange(h, dtype=torch.float32).view(h, 1)
    x = torch.arange(w, dtype=torch.float32).view(1, w)
    for i in range(b):
        _paint_rectangles(g, label[i], torch.randint(k, (_size(g, 1, 8),), generator=g))
        _paint_rectangles(g, high[i], torch.zeros(_size(g, 0, 4), dtype=torch.bool))
        for j in range(m):
            if torch.rand((), generator=g) < 0.5:
                _paint_rectangles(g, regions[i, j], torch.ones(1, dtype=torch.bool))
            else:
                cy, cx = torch.rand(2, generator=g) * torch.tensor([h, w])
                ry, rx = 1 + torch.rand(2, generator=g) * torch.tensor([h, w]) / 2
                regions[i, j] = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
    return label, high, regions, _tau(g, 0.5, 0.95)


def tie_case(seed: int) -> Case:
    """Two classes on a checkerboard and even-sized rectangles: exact ties, decided for the smaller id."""
    g = torch.Generator().manual_seed(seed)
    b, m, h, w = _size(g, 1, 4), _size(g, 1, 64), 2 * _size(g, 1, 12), 2 * _size(g, 1, 12)
    first, second = torch.randperm(21, generator=g)[:2]
    board = (torch.arange(h).view(h, 1) + torch.arange(w).view(1, w)) % 2 == 0
    label = torch.where(board, first, second).expand(b, h, w).clone()
    high = torch.rand(b, h, w, generator=g) < (0.95 if seed % 2 else 1.0)
    regions = torch.zeros(b, m, h, w, dtype=torch.bool)
    for i in range(b):
        for j in range(m):
            y0, x0 = 2 * _size(g, 0, h // 2 - 1), 2 * _size(g, 0, w // 2 - 1)
            regions[i, j, y0 : 2 * _size(g, y0 // 2 + 1, h // 2), x0 : 2 * _size(g, x0 // 2 + 1, w // 2)] = (
                True
            )
    return label, high, regions, _tau(g, 0.3, 0.5)


def borderline_cases(seed: int) -> list[Case]:
    """τ set exactly to a ratio that occurs, as float32, as a Python float and as a float64 fraction."""
    g = torch.Generator().manual_seed(seed)
    label, high, regions, _ = blob_case(seed) if seed % 2 else random_case(seed)
    b, m = regions.shape[:2]
    seg_size = (regions & high.unsqueeze(1)).flatten(2).sum(2)
    region_size = regions.flatten(2).sum(2)
    i, j = _size(g, 0, b - 1), _size(g, 0, m - 1)
    if seg_size[i, j] == 0:
        numerator, denominator = 17, 20
    elif torch.rand((), generator=g) < 0.5:
        numerator, denominator = int(seg_size[i, j]), int(region_size[i, j])
    else:
        counts = torch.bincount(label[i][regions[i, j] & high[i]])
        numerator, denominator = int(counts.max()), int(seg_size[i, j])
    as_float32 = torch.tensor(numerator) / torch.tensor(denominator)
    return [
        (label, high, regions, as_float32),
        (label, high, regions, float(as_float32)),
        (label, high, regions, torch.tensor(numerator / denominator, dtype=torch.float64)),
    ]


def extreme_case(seed: int) -> Case:
    """Empty masks, full masks, nothing confident, everything confident, mixed."""
    g = torch.Generator().manual_seed(seed)
    b, m, h, w, k = _size(g, 1, 4), _size(g, 1, 16), _size(g, 1, 16), _size(g, 1, 16), _size(g, 1, 4)
    label = torch.randint(k, (b, h, w), generator=g)
    kind = seed % 5
    high = torch.full((b, h, w), kind != 2) if kind in (2, 3) else torch.rand(b, h, w, generator=g) < 0.9
    if kind == 0:
        regions = torch.zeros(b, m, h, w, dtype=torch.bool)
    elif kind == 1:
        regions = torch.ones(b, m, h, w, dtype=torch.bool)
    else:
        regions = torch.rand(b, m, h, w, generator=g) < torch.rand(b, m, 1, 1, generator=g)
        regions[:, ::2] = kind == 4
    return label, high, regions, _tau(g, 0.0, 1.0)


@pytest.mark.parametrize("seed", range(70))
def test_random_inputs(seed: int) -> None:
    assert_matches_reference(*random_case(seed))


@pytest.mark.parametrize("seed", range(70))
def test_object_like_inputs(seed: int) -> None:
    assert_matches_reference(*blob_case(seed))


@pytest.mark.parametrize("seed", range(25))
def test_ties_go_to_the_smallest_class(seed: int) -> None:
    assert_matches_reference(*tie_case(seed))


@pytest.mark.parametrize("seed", range(25))
def test_ratios_equal_to_threshold(seed: int) -> None:
    for case in borderline_cases(seed):
        assert_matches_reference(*case)


@pytest.mark.parametrize("seed", range(20))
def test_extreme_inputs(seed: int) -> None:
    assert_matches_reference(*extreme_case(seed))


@pytest.mark.parametrize("seed", range(2))
def test_paper_size_inputs(seed: int) -> None:
    label, high, regions = synthetic_inputs(batch=4 - 2 * seed, num_masks=128, size=321, seed=seed)
    assert_matches_reference(label, high, regions, torch.tensor(0.85))


def test_generated_cases_exercise_every_branch() -> None:
    """The generated corpus accepts and rejects masks and rewrites labels, so the checks above bite."""
    accepted = rejected = rewritten = 0
    for seed in range(20):
        label, high, regions, tau = blob_case(seed)
        decisions = accepted_masks_reference(label, high, regions, tau)
        accepted += int(decisions.sum())
        rejected += int((~decisions).sum())
        rewritten += int((region_propagation(label, high, regions, tau)[0] != label).any())
    assert accepted > 50 and rejected > 50 and rewritten > 5


def test_later_masks_see_earlier_rewrites() -> None:
    """A 1 × 10 image: mask 0 turns pixels 6 and 7 into class 0, so mask 1 loses its majority."""
    label = torch.tensor([[[0, 0, 0, 0, 0, 0, 1, 1, 1, 1]]])
    high = torch.ones(1, 1, 10, dtype=torch.bool)
    regions = torch.zeros(1, 2, 1, 10, dtype=torch.bool)
    regions[0, 0, 0, :8] = True
    regions[0, 1, 0, 5:] = True
    target, loss_mask = region_propagation(label, high, regions, 0.7)
    assert target.tolist() == [[[0, 0, 0, 0, 0, 0, 0, 0, 1, 1]]]
    assert loss_mask.all()
    reordered, _ = region_propagation(label, high, regions.flip(1), 0.7)
    assert reordered.tolist() == [[[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]]]


def test_ratio_equal_to_threshold() -> None:
    """Image 0: 17 of 20 pixels high, one class, passes (the skip needs a ratio below τ). Image 1: all
    high, 17 of 20 of one class, is rejected (acceptance needs a share above τ) unless τ is float64,
    where float32(17 / 20) > 0.85."""
    label = torch.zeros(2, 1, 20, dtype=torch.long)
    label[1, 0, :3] = 1
    high = torch.ones(2, 1, 20, dtype=torch.bool)
    high[0, 0, 17:] = False
    regions = torch.ones(2, 1, 1, 20, dtype=torch.bool)
    tau64 = torch.tensor(0.85, dtype=torch.float64)
    for tau, expected in (
        (0.85, [[True], [False]]),
        (torch.tensor(0.85), [[True], [False]]),
        (tau64, [[True], [True]]),
    ):
        assert accepted_masks_reference(label, high, regions, tau).tolist() == expected
        assert_matches_reference(label, high, regions, tau)


def test_large_class_ids() -> None:
    g = torch.Generator().manual_seed(0)
    label = 250 + torch.randint(6, (2, 12, 12), generator=g)
    label[:, :, :6] = 200
    high = torch.rand(2, 12, 12, generator=g) < 0.9
    regions = torch.rand(2, 32, 12, 12, generator=g) < torch.rand(2, 32, 1, 1, generator=g)
    assert_matches_reference(label, high, regions, 0.6)


def test_no_mask() -> None:
    label = torch.randint(21, (2, 5, 6))
    high = torch.rand(2, 5, 6) < 0.5
    target, loss_mask = region_propagation(label, high, torch.zeros(2, 0, 5, 6, dtype=torch.bool), 0.5)
    assert torch.equal(target, label) and torch.equal(loss_mask, high)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="do not match"):
        region_propagation(
            torch.zeros(2, 4, 4, dtype=torch.long),
            torch.ones(2, 4, 4, dtype=torch.bool),
            torch.ones(2, 3, 4, 5, dtype=torch.bool),
            0.5,
        )


def test_accelerator_path_reads_no_value_on_the_host() -> None:
    """On the meta device any data-dependent host read (item, nonzero, masks as indices) would raise."""
    label = torch.zeros(4, 33, 33, dtype=torch.long, device="meta")
    high = torch.zeros(4, 33, 33, dtype=torch.bool, device="meta")
    regions = torch.zeros(4, 32, 33, 33, dtype=torch.bool, device="meta")
    target, loss_mask = region_propagation(label, high, regions, torch.tensor(0.85, device="meta"))
    assert target.shape == label.shape and target.dtype == torch.long
    assert loss_mask.shape == high.shape and loss_mask.dtype == torch.bool


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_reference_without_synchronising() -> None:
    label, high, regions = synthetic_inputs(batch=2, num_masks=64, size=97, seed=3)
    expected = region_propagation_reference(label, high, regions, torch.tensor(0.85))
    args = (label.cuda(), high.cuda(), regions.cuda(), torch.tensor(0.85, device="cuda"))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        target, loss_mask = region_propagation(*args)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(target.cpu(), expected[0]) and torch.equal(loss_mask.cpu(), expected[1])
