"""Region propagation (DESIGN.md §2 step 9): the loop-by-loop transcription against corrmatch.pseudo.

Inputs are the paper's Pascal setting, B = 4 images of 321×321, M = 128 region masks, K = 21 classes,
made by :func:`corrmatch.pseudo.reference.synthetic_inputs`: object-like labels, 80 % of the pixels
confident, masks shaped like thresholded, upsampled correlation rows. τ = 0.85.

    python benchmarks/pseudo_label.py [--repeats 5] [--threads N] [--seed 0] [--size 321]

For every device (the CPU, and CUDA when available) it prints the median wall time of the reference
loop and of :func:`corrmatch.pseudo.region_propagation`, their ratio, and the number of tensor operations
each dispatches (counted with a ``TorchDispatchMode``). On the CPU it also times the accelerator path
(the dense, synchronisation-free sweep) for comparison; the CPU path does its per-mask work in NumPy,
which the dispatcher does not see. On CUDA the fast version runs under
``torch.cuda.set_sync_debug_mode("error")``, so any host synchronisation would abort the run.

The figures are written to ``--results`` (default ``benchmarks/results``) as
``pseudo_label/<machine>-threads<N>[-<options>].json`` (:mod:`record`).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from record import RESULTS, machine_slug, write_result
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


def result_row(
    device: torch.device,
    implementation: str,
    seconds: float,
    ops: int,
    speedup: float | None,
    sync_free: bool | None,
) -> dict[str, Any]:
    """One implementation's figures as printed: milliseconds, dispatched ops, speed-up over the naive loop."""
    return {
        "device": device.type,
        "implementation": implementation,
        "ms": round(seconds * 1e3, 1),
        "ops": ops,
        "speedup": None if speedup is None else round(speedup, 1),
        "identical": True,  # to the naive loop's outputs; checked above
        "sync_free": sync_free,
    }


def benchmark(device: torch.device, inputs: tuple[torch.Tensor, ...], repeats: int) -> list[dict[str, Any]]:
    """Times the naive loop and the other implementations on ``device``; one result row each."""
    inputs = tuple(tensor.to(device) for tensor in inputs)
    expected = region_propagation_reference(*inputs)
    candidates: dict[str, tuple[str, Propagation]] = {
        "fast": ("fast (corrmatch.pseudo.region_propagation)", region_propagation)
    }
    sync_free = None
    if device.type == "cpu":
        candidates["dense_sweep"] = ("accelerator path on the CPU (dense sweep)", _propagate_device)
    else:
        result = run_fast_without_syncs(inputs)
        assert all(torch.equal(a, b) for a, b in zip(result, expected)), "fast version differs"
        print(f"[{device}] fast version ran under set_sync_debug_mode('error'): no host synchronisation")
        sync_free = True
    naive = median_seconds(region_propagation_reference, inputs, repeats)
    naive_ops = dispatched_ops(region_propagation_reference, inputs)
    print(f"[{device}] naive loop: {naive * 1e3:8.1f} ms, {naive_ops:6d} dispatched ops")
    rows = [result_row(device, "naive_loop", naive, naive_ops, None, None)]
    for key, (name, function) in candidates.items():
        result = function(*inputs)
        assert all(torch.equal(a, b) for a, b in zip(result, expected)), f"{name} differs from the reference"
        seconds = median_seconds(function, inputs, repeats)
        ops = dispatched_ops(function, inputs)
        print(
            f"[{device}] {name}: {seconds * 1e3:8.1f} ms, {ops:6d} dispatched ops, "
            f"{naive / seconds:5.1f}x faster than the naive loop, identical outputs"
        )
        checked = sync_free if key == "fast" else None
        rows.append(result_row(device, key, seconds, ops, naive / seconds, checked))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=SIZE, help="image side (default: 321, the paper's crop)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the result files")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} intra-op threads, median of {args.repeats}"
    )
    size = args.size
    label, high, regions = synthetic_inputs(BATCH, MASKS, CLASSES, size, seed=args.seed)
    tau = torch.tensor(TAU)
    accepted = accepted_masks_reference(label, high, regions, tau)
    masks = {"high": high, "mask_cover": regions, "accepted": accepted}
    shares = {name: round(100 * mask.float().mean().item(), 1) for name, mask in masks.items()}
    print(
        f"B={BATCH} M={MASKS} K={CLASSES} {size}x{size} tau={TAU}: high {shares['high']:.1f}% of pixels, "
        f"masks cover {shares['mask_cover']:.1f}% of the image on average, "
        f"{shares['accepted']:.1f}% of the masks accepted"
    )
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = [row for device in devices for row in benchmark(device, (label, high, regions, tau), args.repeats)]
    threads = torch.get_num_threads()
    settings = {"batch": BATCH, "masks": MASKS, "classes": CLASSES, "size": size, "tau": TAU}
    settings |= {"repeats": args.repeats, "seed": args.seed, "threads": threads}
    options = [f"repeats{args.repeats}"] if args.repeats != 5 else []
    options += [f"seed{args.seed}"] if args.seed else []
    options += [f"size{size}"] if size != SIZE else []
    name = "-".join([machine_slug(), f"threads{threads}", *options])
    data = {"benchmark": "pseudo_label", "settings": settings, "inputs_percent": shares}
    data |= {"numpy": np.__version__, "rows": rows}
    write_result(f"pseudo_label/{name}.json", data, args.results)


if __name__ == "__main__":
    main()
