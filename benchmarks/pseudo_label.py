"""Region propagation (DESIGN.md §2 step 9): the loop-by-loop transcription against corrmatch.pseudo.

Inputs are the paper's Pascal setting, B = 4 images of 321×321, M = 128 region masks, K = 21 classes,
made by :func:`corrmatch.pseudo.reference.synthetic_inputs`: object-like labels, 80 % of the pixels
confident, masks shaped like thresholded, upsampled correlation rows. τ = 0.85.

    python benchmarks/pseudo_label.py [--repeats 5] [--threads N] [--seed 0]

For every device (the CPU, and CUDA when available) it prints the median wall time of the reference
loop and of :func:`corrmatch.pseudo.region_propagation`, their ratio, and the number of tensor operations
each dispatches (counted with a ``TorchDispatchMode``). On the CPU it also times the accelerator path
(the dense, synchronisation-free sweep) for comparison; the CPU path does its per-mask work in NumPy,
which the dispatcher does not see. On CUDA the fast version runs under
``torch.cuda.set_sync_debug_mode("error")``, so any host synchronisation would abort the run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from corrmatch.pseudo import region_propagation
from corrmatch.pseudo.reference import (
    accepted_masks_reference,
    region_propagation_reference,
    synthetic_inputs,
)
from corrmatch.pseudo.region import _propagate_device

BATCH, MASKS, CLASSES, SIZE, TAU = 4, 128, 21, 321, 0.85

Propagation = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]


class OpCounter(TorchDispatchMode):
    """Counts the ATen operations dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: tuple[type, ...],
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(function: Propagation, inputs: tuple[torch.Tensor, ...], repeats: int) -> float:
    device = inputs[0].device
    function(*inputs)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        function(*inputs)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dispatched_ops(function: Propagation, inputs: tuple[torch.Tensor, ...]) -> int:
    with OpCounter() as counter:
        function(*inputs)
    return counter.count


def run_fast_without_syncs(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        return region_propagation(*inputs)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def benchmark(device: torch.device, inputs: tuple[torch.Tensor, ...], repeats: int) -> None:
    inputs = tuple(tensor.to(device) for tensor in inputs)
    expected = region_propagation_reference(*inputs)
    candidates: dict[str, Propagation] = {"fast (corrmatch.pseudo.region_propagation)": region_propagation}
    if device.type == "cpu":
        candidates["accelerator path on the CPU (dense sweep)"] = _propagate_device
    else:
        result = run_fast_without_syncs(inputs)
        assert all(torch.equal(a, b) for a, b in zip(result, expected)), "fast version differs"
        print(f"[{device}] fast version ran under set_sync_debug_mode('error'): no host synchronisation")
    naive = median_seconds(region_propagation_reference, inputs, repeats)
    print(
        f"[{device}] naive loop: {naive * 1e3:8.1f} ms, "
        f"{dispatched_ops(region_propagation_reference, inputs):6d} dispatched ops"
    )
    for name, function in candidates.items():
        result = function(*inputs)
        assert all(torch.equal(a, b) for a, b in zip(result, expected)), f"{name} differs from the reference"
        seconds = median_seconds(function, inputs, repeats)
        print(
            f"[{device}] {name}: {seconds * 1e3:8.1f} ms, {dispatched_ops(function, inputs):6d} dispatched ops, "
            f"{naive / seconds:5.1f}x faster than the naive loop, identical outputs"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} intra-op threads, median of {args.repeats}"
    )
    label, high, regions = synthetic_inputs(BATCH, MASKS, CLASSES, SIZE, seed=args.seed)
    tau = torch.tensor(TAU)
    accepted = accepted_masks_reference(label, high, regions, tau)
    print(
        f"B={BATCH} M={MASKS} K={CLASSES} {SIZE}x{SIZE} tau={TAU}: high {high.float().mean():.1%} of pixels, "
        f"masks cover {regions.float().mean():.1%} of the image on average, "
        f"{accepted.float().mean():.1%} of the masks accepted"
    )
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        benchmark(device, (label, high, regions, tau), args.repeats)


if __name__ == "__main__":
    main()
