"""The authors' CorrMatch training iteration and the toolkit's, timed side by side on one device.

    git clone https://github.com/BBBBchan/CorrMatch /tmp/CorrMatch
    AUTHORS_CODE=/tmp/CorrMatch python benchmarks/authors_step.py       # or --authors-code /tmp/CorrMatch
    python benchmarks/authors_step.py --authors-code /tmp/CorrMatch --crop 65 --steps 2   # a quick look on a CPU

The authors' iteration is the body of the training loop of their ``corrmatch.py``, read from the checkout
at run time (nothing of it is stored here): the script parses the file, takes the ``for`` loop over the
zipped loaders in ``main`` and runs its statements as they are written, one batch per step, with their
``DeepLabV3Plus`` (ResNet-101, random weights), their ``ThreshController`` and their criteria, on one
device without the DDP wrapper (a one-process group serves their ``all_gather``), fp32 as they train.
The batch is ``step_time.py``'s: 4 labeled + 4 unlabeled images (+ 4 for the CutMix paste), 21
classes, crop 321 on a GPU (97 on the CPU). ``einops`` is used when installed, else a stand-in for the
reshapes their code asks of it.

Then the toolkit's CorrMatch step on the same batch and network (:func:`step_time.measure`): fp32 and bf16,
eager and compiled (``--compile``, default ``default``; ``none`` skips it). Each row: the median step
time after two warm-up steps, the peak memory (GPU: ``max_memory_allocated``; CPU: rows of the CPU run
in one process, so their peaks are not apart) and the ratio to the authors' fp32 step. The rows are
written to ``--results`` as ``authors_step/<machine>[-<options>].json`` (:mod:`record`).
"""

from __future__ import annotations

import argparse
import ast
import gc
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from record import RESULTS, machine_slug, write_result
from step_time import make_batch, measure
from torch import nn
from verify_official import one_process_group, release_module

from corrmatch.models.compile import COMPILE_MODES

NUM_CLASSES = 21
BATCH = 4
# The settings of the authors' configs/pascal.yaml that the iteration and the network read.
PASCAL = {
    "dataset": "pascal", "nclass": NUM_CLASSES, "lr": 0.001, "lr_multi": 10.0, "thresh_init": 0.85,
    "backbone": "resnet101", "pretrain": False, "multi_grid": False,
    "replace_stride_with_dilation": [False, True, True], "dilations": [12, 24, 36],
}


def training_loop_body(script: Path) -> CodeType:
    """The statements of the ``for … in enumerate(loader)`` loop of ``main`` in the authors' script,
    preceded by the assignment of the loop's target from the name ``__batch__``, compiled."""
    tree = ast.parse(script.read_text(encoding="utf-8"), filename=str(script))
    main = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main")
    loops = [
        node for node in ast.walk(main)
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Call)
        and getattr(node.iter.func, "id", None) == "enumerate"
        and any(isinstance(arg, ast.Name) and arg.id == "loader" for arg in node.iter.args)
    ]
    if len(loops) != 1:
        raise SystemExit(f"{script}: expected one `for … in enumerate(loader)` loop in main, found {len(loops)}")
    loop = loops[0]
    bind = ast.Assign(targets=[loop.target], value=ast.Name("__batch__", ast.Load()))
    module = ast.Module(body=[bind, *loop.body], type_ignores=[])
    return compile(ast.fix_missing_locations(module), str(script), "exec")


def rearrange_stand_in(tensor: torch.Tensor, pattern: str, **sizes: int) -> torch.Tensor:
    """``einops.rearrange`` for patterns that only merge, split or insert axes (``'n c h w -> n c (h w)'``,
    ``'n h w -> n 1 h w'``): a reshape; a pattern that reorders axes stops the script."""
    left, right = (re.findall(r"\(([^)]*)\)|(\S+)", side) for side in pattern.split("->"))
    left, right = ([(group or name).split() for group, name in side] for side in (left, right))
    names = [[name for group in side for name in group if name != "1"] for side in (left, right)]
    if names[0] != names[1] or len(left) != tensor.dim():
        raise SystemExit(f"einops is not installed and {pattern!r} is not a reshape: pip install einops")
    known = dict(sizes)
    for group, size in zip(left, tensor.shape):
        unknown = [name for name in group if name != "1" and name not in known]
        product = math.prod(known[name] for name in group if name in known)
        if unknown:
            known[unknown[0]] = size // product
    return tensor.reshape([math.prod(known.get(name, 1) for name in group) for group in right])


def provide_einops() -> None:
    """The authors' modules import ``einops``; without it installed, :func:`rearrange_stand_in` serves."""
    try:
        import einops  # noqa: F401, PLC0415
    except ImportError:
        sys.modules["einops"] = ModuleType("einops")
        sys.modules["einops"].rearrange = rearrange_stand_in


def authors_batch(batch: dict[str, dict[str, torch.Tensor]]) -> tuple:
    """``step_time.make_batch``'s tensors as the authors' loaders give them (each a fresh copy: the
    loop pastes into its strong view in place)."""
    labeled, unlabeled, mix = batch["labeled"], batch["unlabeled"], batch["unlabeled_mix"]
    return (
        (labeled["image"].clone(), labeled["mask"].clone()),
        (unlabeled["image_w"].clone(), unlabeled["image_s"].clone(), unlabeled["image_s2"].clone(),
         unlabeled["ignore"].clone(), unlabeled["cutmix_box"].clone(), unlabeled["cutmix_box2"].clone()),
        (mix["image_w"].clone(), mix["image_s"].clone(), mix["image_s2"].clone(), mix["ignore"].clone(),
         mix["cutmix_box"].clone(), mix["cutmix_box2"].clone()),
    )


def measure_authors(repo: Path, crop: int, steps: int) -> dict[str, Any]:
    """Median time (s) of the authors' iteration over ``steps`` steps after two warm-up steps, and the
    peak memory (MiB) after the warm-up."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    body = training_loop_body(repo / "corrmatch.py")
    provide_einops()
    one_process_group("nccl" if device.type == "cuda" else "gloo")  # for the threshold's all_gather
    torch.manual_seed(0)
    model = release_module(repo, "model.semseg.deeplabv3plus").DeepLabV3Plus(PASCAL).to(device)
    thresholds = release_module(repo, "util.thresh_helper").ThreshController(
        nclass=NUM_CLASSES, momentum=0.999, thresh_init=PASCAL["thresh_init"]
    )
    head = [param for name, param in model.named_parameters() if "backbone" not in name]
    optimizer = torch.optim.SGD(
        [{"params": model.backbone.parameters(), "lr": PASCAL["lr"]},
         {"params": head, "lr": PASCAL["lr"] * PASCAL["lr_multi"]}],
        lr=PASCAL["lr"], momentum=0.9, weight_decay=1e-4,
    )
    batch = make_batch(crop, BATCH, NUM_CLASSES, device)
    total = steps + 2
    namespace: dict[str, Any] = {
        "torch": torch, "F": F, "nn": nn, "rearrange": sys.modules["einops"].rearrange, "model": model,
        "optimizer": optimizer, "thresh_controller": thresholds, "cfg": PASCAL, "epoch": 0,
        "criterion_l": nn.CrossEntropyLoss(ignore_index=255).to(device),
        "criterion_u": nn.CrossEntropyLoss(reduction="none").to(device),
        "criterion_kl": nn.KLDivLoss(reduction="none").to(device),
        "trainloader_u": range(total), "total_iters": total, "rank": 1,  # rank 1: no progress bar
    }
    for name in ("total_loss", "total_loss_x", "total_loss_s", "total_loss_w_fp", "total_loss_kl",
                 "total_loss_corr_ce", "total_loss_corr_u", "total_mask_ratio"):
        namespace[name] = 0.0
    times = []
    for step in range(total):
        namespace["__batch__"] = (step, authors_batch(batch))
        if device.type == "cuda":
            torch.cuda.synchronize()
            if step == 2:
                torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        exec(body, namespace)  # noqa: S102 (the authors' loop body, read from their checkout)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - start)
        if not torch.isfinite(namespace["loss"]):
            raise RuntimeError("the authors' iteration: loss is not finite")
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    del namespace, model, optimizer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"code": "authors", "precision": "fp32", "compile": None, "step_s": statistics.median(times),
            "peak_mib": None if peak is None else round(peak)}


def show(row: dict[str, Any], reference: float) -> None:
    """Adds the ratio to the authors' step to ``row`` and prints it."""
    row["ratio"] = round(row["step_s"] / reference, 3)
    peak = "" if row["peak_mib"] is None else str(row["peak_mib"])
    print(f"{row['code']:<10}{row['precision']:>10}{row['compile'] or 'eager':>10}{row['step_s']:>10.3f}"
          f"{peak:>12}{row['ratio']:>11.2f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--authors-code", type=Path, default=os.environ.get("AUTHORS_CODE"),
                        help="checkout of BBBBchan/CorrMatch (default: $AUTHORS_CODE)")
    parser.add_argument("--crop", type=int, default=None, help="default: 321 on a GPU, 97 on the CPU")
    parser.add_argument("--steps", type=int, default=None, help="default: 10 on a GPU, 2 on the CPU")
    parser.add_argument("--compile", choices=[*COMPILE_MODES, "none"], default="default")
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"],
                        help="of the toolkit's rows (the authors' runs in fp32)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the result files")
    args = parser.parse_args(argv)
    if args.authors_code is None or not (args.authors_code / "corrmatch.py").is_file():
        parser.error(f"--authors-code (or AUTHORS_CODE) must be a checkout of BBBBchan/CorrMatch, got {args.authors_code}")
    cuda = torch.cuda.is_available()
    if not cuda:
        torch.Tensor.cuda = lambda self, *args, **kwargs: self  # the authors' .cuda() calls: stay on the CPU
    crop, steps = args.crop or (321 if cuda else 97), args.steps or (10 if cuda else 2)
    print(f"torch {torch.__version__}, CorrMatch on ResNet-101, crop {crop}, {BATCH} labeled + {BATCH} unlabeled, "
          f"median of {steps} steps")
    print(f"{'code':<10}{'precision':>10}{'compile':>10}{'step (s)':>10}{'peak (MiB)':>12}{'× authors':>11}")
    rows = [measure_authors(args.authors_code, crop, steps)]
    show(rows[0], rows[0]["step_s"])
    for compile_mode in [None] if args.compile == "none" else [None, args.compile]:
        for precision in args.precisions:
            row = measure("CorrMatch", "resnet101s", precision, crop, steps, False, compile_mode)
            rows.append({"code": "corrmatch", "precision": precision, "compile": compile_mode,
                         "step_s": row["step_s"], "peak_mib": row["peak_mib"] if cuda else None})
            show(rows[-1], rows[0]["step_s"])
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
    settings = {"crop": crop, "steps": steps, "batch": BATCH, "num_classes": NUM_CLASSES, "network": "resnet101s",
                "compile": args.compile, "precisions": args.precisions}
    name = f"authors_step/{machine_slug()}" + (f"-crop{args.crop}" if args.crop else "") + ".json"
    write_result(name, {"benchmark": "authors_step", "settings": settings, "rows": rows}, args.results)


if __name__ == "__main__":
    main()
