"""Dynamic threshold τ (DESIGN.md §2 steps 7 and 12)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import HANG_GUARD

from corrmatch.pseudo import DynamicThreshold


def statistic_by_loop(logits: torch.Tensor, ignore: torch.Tensor) -> float | None:
    """The written statistic, class by class: mean over predicted classes of their peak confidence."""
    logits = logits.float()
    predicted = logits.argmax(1)
    confidence = logits.softmax(1).amax(1)
    peaks = []
    for cls in torch.unique(predicted).tolist():
        pixels = (predicted == cls) & (ignore != 255)
        if pixels.any():
            peaks.append(confidence[pixels].max().item())
    return sum(peaks) / len(peaks) if peaks else None


def make_batch(
    seed: int, batch: int = 2, classes: int = 21, size: int = 9
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, size, size, generator=g) * (1 + 4 * torch.rand((), generator=g))
    ignore = torch.where(torch.rand(batch, size, size, generator=g) < 0.3, 255, 0)
    return logits, ignore


@pytest.mark.parametrize("classes", [2, 5, 21])
def test_update_equals_direct_recomputation(classes: int) -> None:
    threshold = DynamicThreshold(init=0.85, momentum=0.9)
    expected = 0.85
    for seed in range(6):
        logits, ignore = make_batch(seed, classes=classes)
        threshold.update(logits, ignore)
        expected = 0.9 * expected + 0.1 * statistic_by_loop(logits, ignore)
        torch.testing.assert_close(threshold.value, torch.tensor(expected), rtol=1e-6, atol=1e-7)
    assert threshold.value.shape == () and threshold.value.dtype == torch.float32


def test_classes_seen_only_on_ignored_pixels_do_not_count() -> None:
    logits = torch.zeros(1, 3, 1, 4)
    logits[0, 0, 0, :2] = 2.0  # class 0, kept
    logits[0, 2, 0, 2:] = 9.0  # class 2, very confident but ignored
    ignore = torch.tensor([[[0, 0, 255, 255]]])
    threshold = DynamicThreshold(init=0.5, momentum=0.0)
    threshold.update(logits, ignore)
    torch.testing.assert_close(threshold.value, logits[0, :, 0, 0].softmax(0)[0])


def test_everything_ignored_leaves_tau_unchanged() -> None:
    threshold = DynamicThreshold(init=0.85, momentum=0.999)
    logits, _ = make_batch(0)
    threshold.update(logits, torch.full((2, 9, 9), 255))
    assert threshold.value.item() == torch.tensor(0.85).item()


def test_bfloat16_logits_are_read_in_float32() -> None:
    logits, ignore = make_batch(1)
    logits = logits.bfloat16()
    from_bf16, from_fp32 = DynamicThreshold(momentum=0.5), DynamicThreshold(momentum=0.5)
    from_bf16.update(logits, ignore)
    from_fp32.update(logits.float(), ignore)
    assert torch.equal(from_bf16.value, from_fp32.value)
    assert from_bf16.value.dtype == torch.float32


def test_state_dict_round_trip() -> None:
    threshold = DynamicThreshold(init=0.85, momentum=0.9)
    threshold.update(*make_batch(2))
    restored = DynamicThreshold(init=0.1)
    restored.load_state_dict(threshold.state_dict())
    assert list(threshold.state_dict()) == ["value"]
    assert torch.equal(restored.value, threshold.value)


def test_tau_stays_float32_when_the_module_is_cast() -> None:
    threshold = DynamicThreshold(init=0.85).bfloat16()
    assert threshold.value.dtype == torch.float32 and threshold.value.item() == torch.tensor(0.85).item()
    assert threshold.to(torch.float16).value.dtype == torch.float32


def test_update_reads_no_value_on_the_host() -> None:
    """On the meta device any host read (item, unique, branching on values) would raise."""
    threshold = DynamicThreshold().to("meta")
    value = threshold.update(torch.empty(2, 21, 9, 9, device="meta"), torch.empty(2, 9, 9, device="meta"))
    assert value.device.type == "meta" and value.shape == ()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_update_does_not_synchronise() -> None:
    logits, ignore = make_batch(3)
    expected = DynamicThreshold()
    expected.update(logits, ignore)
    threshold = DynamicThreshold().cuda()
    logits, ignore = logits.cuda(), ignore.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        threshold.update(logits, ignore)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(threshold.value.cpu(), expected.value)


def _rank_batches(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Different contents and batch sizes on the two ranks; rank 1 is much more confident."""
    logits, ignore = make_batch(10 * step + rank, batch=2 + rank)
    return logits * (1 + 3 * rank), ignore


def _update_on_rank(rank: int, world_size: int, store: str, out: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=HANG_GUARD),
    )
    try:
        threshold = DynamicThreshold(init=0.85, momentum=0.9)
        already_gathered = DynamicThreshold(init=0.85, momentum=0.9)
        for step in range(3):
            threshold.update(*_rank_batches(rank, step))
            batches = [_rank_batches(r, step) for r in range(world_size)]
            already_gathered.update(*(torch.cat(parts) for parts in zip(*batches)))
        torch.save((threshold.value, already_gathered.value), f"{out}/tau{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_agree_with_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    """Gloo, batches of different contents and sizes; inputs already gathered by the caller give the same τ."""
    mp.spawn(_update_on_rank, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    (tau0, gathered0), (tau1, gathered1) = (torch.load(tmp_path / f"tau{rank}.pt") for rank in range(2))
    assert torch.equal(tau0, tau1) and torch.equal(tau0, gathered0) and torch.equal(tau0, gathered1)
    whole, local = DynamicThreshold(init=0.85, momentum=0.9), DynamicThreshold(init=0.85, momentum=0.9)
    for step in range(3):
        (logits0, ignore0), (logits1, ignore1) = _rank_batches(0, step), _rank_batches(1, step)
        whole.update(torch.cat((logits0, logits1)), torch.cat((ignore0, ignore1)))
        local.update(logits0, ignore0)
    assert torch.equal(tau0, whole.value)
    assert not torch.equal(tau0, local.value)
