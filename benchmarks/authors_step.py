"""The authors' training iterations and the toolkit's, timed side by side on one device.

    git clone https://github.com/BBBBchan/CorrMatch /tmp/CorrMatch
    git clone https://github.com/LiheYoung/UniMatch-V2 /tmp/UniMatch-V2
    AUTHORS_CODE=/tmp/CorrMatch AUTHORS_CODE_V2=/tmp/UniMatch-V2 python benchmarks/authors_step.py
    python benchmarks/authors_step.py --authors-code /tmp/CorrMatch --steps 2      # CorrMatch only
    python benchmarks/authors_step.py --authors-code-v2 /tmp/UniMatch-V2 --v2-network dinov2_base

Each release given (``--authors-code`` for CorrMatch, ``--authors-code-v2`` for UniMatch V2, or the
environment variables) is measured in its own section. The authors' iteration is the body of the
training loop of their script (``corrmatch.py``, ``unimatch_v2.py``), read from the checkout at run time
(nothing of it is stored here): the script parses the file, takes the ``for`` loop over the zipped
loaders in ``main`` and runs its statements as they are written, one batch per step, on one device
without the DDP wrapper, fp32 as they train, with random weights:

- CorrMatch: their ``DeepLabV3Plus`` (ResNet-101), ``ThreshController`` (a one-process group serves its
  ``all_gather``) and criteria, SGD as in their ``configs/pascal.yaml``; crop 321 on a GPU, 97 on the CPU.
- UniMatch V2: their ``DPT`` on DINOv2-S (``--v2-network dinov2_base``: -B) and its EMA teacher, AdamW as
  in their ``configs/pascal.yaml``; crop 518 on a GPU, 98 on the CPU. Their attention uses xFormers when
  it is installed, else a plain matmul-softmax (recorded as the row's ``attention``).

The batch is ``step_time.py``'s: 4 labeled + 4 unlabeled images (+ 4 for CorrMatch's CutMix paste), 21
classes. ``einops`` is used when installed, else a stand-in for the reshapes CorrMatch's code asks of it.

Then the toolkit's step of the same method on the same batch and network (:func:`step_time.measure`):
fp32 and bf16, eager and compiled (``--compile``, default ``default``; ``none`` skips it), and with
``--channels-last`` eager in channels_last memory format too. Each row: the
median step time after two warm-up steps, the peak memory (GPU: ``max_memory_allocated``; CPU: the rows
run in one process, so their peaks are not apart and none is given) and the ratio to the authors' fp32
step. The goal is a toolkit row at most half the authors' step time with no more memory; the section's
last line says whether its fastest row meets it. Each section is written to ``--results`` (again after each row) as
``authors_step/<machine>-<method>-<network>[-crop<N>][-eager][-channels_last].json`` (:mod:`record`).
"""

from __future__ import annotations

import argparse
import ast
import copy
import gc
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from record import RESULTS, machine_slug, write_result
from step_time import default_crop, make_batch, measure, row_crop
from torch import nn
from verify_official import one_process_group, release_module

from corrmatch.models.compile import COMPILE_MODES

NUM_CLASSES = 21
BATCH = 4
GOAL = 0.5  # the toolkit's step at most this share of the authors' fp32 step, with no more memory
# The settings of the authors' configs/pascal.yaml that the iterations and the networks read.
CORRMATCH_PASCAL = {
    "dataset": "pascal", "nclass": NUM_CLASSES, "lr": 0.001, "lr_multi": 10.0, "thresh_init": 0.85,
    "backbone": "resnet101", "pretrain": False, "multi_grid": False,
    "replace_stride_with_dilation": [False, True, True], "dilations": [12, 24, 36],
}
UNIMATCH_V2_PASCAL = {"dataset": "pascal", "nclass": NUM_CLASSES, "lr": 5e-6, "lr_multi": 40.0, "conf_thresh": 0.95}
# UniMatch V2's DPT settings per encoder size (the model_configs of its unimatch_v2.py).
DPT_SIZES = {
    "dinov2_small": {"encoder_size": "small", "features": 64, "out_channels": [48, 96, 192, 384]},
    "dinov2_base": {"encoder_size": "base", "features": 128, "out_channels": [96, 192, 384, 768]},
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
    """``step_time.make_batch``'s tensors as CorrMatch's loaders give them (each a fresh copy: the loops
    paste into their strong views in place); UniMatch V2's loop reads the first two."""
    labeled, unlabeled, mix = batch["labeled"], batch["unlabeled"], batch["unlabeled_mix"]
    return (
        (labeled["image"].clone(), labeled["mask"].clone()),
        (unlabeled["image_w"].clone(), unlabeled["image_s"].clone(), unlabeled["image_s2"].clone(),
         unlabeled["ignore"].clone(), unlabeled["cutmix_box"].clone(), unlabeled["cutmix_box2"].clone()),
        (mix["image_w"].clone(), mix["image_s"].clone(), mix["image_s2"].clone(), mix["ignore"].clone(),
         mix["cutmix_box"].clone(), mix["cutmix_box2"].clone()),
    )


def corrmatch_names(repo: Path, device: torch.device, network: str, total: int) -> dict[str, Any]:
    """The names CorrMatch's loop body reads, set up as its ``main`` sets them up."""
    provide_einops()
    one_process_group("nccl" if device.type == "cuda" else "gloo")  # for the threshold's all_gather
    model = release_module(repo, "model.semseg.deeplabv3plus").DeepLabV3Plus(CORRMATCH_PASCAL).to(device)
    thresholds = release_module(repo, "util.thresh_helper").ThreshController(
        nclass=NUM_CLASSES, momentum=0.999, thresh_init=CORRMATCH_PASCAL["thresh_init"]
    )
    lr = CORRMATCH_PASCAL["lr"]
    head = [param for name, param in model.named_parameters() if "backbone" not in name]
    optimizer = torch.optim.SGD(
        [{"params": model.backbone.parameters(), "lr": lr}, {"params": head, "lr": lr * CORRMATCH_PASCAL["lr_multi"]}],
        lr=lr, momentum=0.9, weight_decay=1e-4,
    )
    names = {
        "torch": torch, "F": F, "nn": nn, "rearrange": sys.modules["einops"].rearrange, "model": model.train(),
        "optimizer": optimizer, "thresh_controller": thresholds, "cfg": CORRMATCH_PASCAL, "epoch": 0,
        "criterion_l": nn.CrossEntropyLoss(ignore_index=255).to(device),
        "criterion_u": nn.CrossEntropyLoss(reduction="none").to(device),
        "criterion_kl": nn.KLDivLoss(reduction="none").to(device),
        "trainloader_u": range(total), "total_iters": total, "rank": 1,  # rank 1: no progress bar
    }
    for name in ("total_loss", "total_loss_x", "total_loss_s", "total_loss_w_fp", "total_loss_kl",
                 "total_loss_corr_ce", "total_loss_corr_u", "total_mask_ratio"):
        names[name] = 0.0
    return names


def unimatch_v2_names(repo: Path, device: torch.device, network: str, total: int) -> dict[str, Any]:
    """The names UniMatch V2's loop body reads, set up as its ``main`` sets them up."""
    model = release_module(repo, "model.semseg.dpt").DPT(**DPT_SIZES[network], nclass=NUM_CLASSES).to(device)
    meter = release_module(repo, "util.utils").AverageMeter
    lr = UNIMATCH_V2_PASCAL["lr"]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in model.backbone.parameters() if p.requires_grad], "lr": lr},
         {"params": [p for name, p in model.named_parameters() if "backbone" not in name],
          "lr": lr * UNIMATCH_V2_PASCAL["lr_multi"]}],
        lr=lr, betas=(0.9, 0.999), weight_decay=0.01,
    )
    model_ema = copy.deepcopy(model).eval().requires_grad_(False)
    iterations = range(max(total, 8))  # the loop logs every len(trainloader_u) // 8 iterations
    names = {
        "torch": torch, "model": model.train(), "model_ema": model_ema, "optimizer": optimizer,
        "cfg": UNIMATCH_V2_PASCAL, "epoch": 0, "rank": 1,  # rank 1: no writer, no logger
        "criterion_l": nn.CrossEntropyLoss(ignore_index=255).to(device),
        "criterion_u": nn.CrossEntropyLoss(reduction="none").to(device),
        "trainloader_u": iterations, "total_iters": len(iterations),
    }
    for name in ("total_loss", "total_loss_x", "total_loss_s", "total_mask_ratio"):
        names[name] = meter()
    return names


@dataclass(frozen=True)
class Release:
    """One authors' release and the toolkit method it is measured beside."""

    method: str
    github: str
    script: str
    option: str  # the command-line option that names its checkout
    variable: str  # and the environment variable
    networks: tuple[str, ...]
    loaders: int  # the zipped loaders its loop reads (labeled, unlabeled[, unlabeled mix])
    names: Callable[[Path, torch.device, str, int], dict[str, Any]]


RELEASES = {
    "CorrMatch": Release("CorrMatch", "BBBBchan/CorrMatch", "corrmatch.py", "--authors-code", "AUTHORS_CODE",
                         ("resnet101s",), 3, corrmatch_names),
    "UniMatchV2": Release("UniMatchV2", "LiheYoung/UniMatch-V2", "unimatch_v2.py", "--authors-code-v2",
                          "AUTHORS_CODE_V2", tuple(DPT_SIZES), 2, unimatch_v2_names),
}


def attention(release: Release) -> str | None:
    """How the release's network computes attention here: UniMatch V2's DINOv2 uses xFormers when installed."""
    if release.method != "UniMatchV2":
        return None
    try:
        import xformers.ops  # noqa: F401, PLC0415
    except ImportError:
        return "matmul"
    return "xformers"


def measure_authors(release: Release, repo: Path, network: str, crop: int, steps: int) -> dict[str, Any]:
    """Median time (s) of the authors' iteration over ``steps`` steps after two warm-up steps, and the
    peak memory (MiB) after the warm-up."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    body = training_loop_body(repo / release.script)
    total = steps + 2
    torch.manual_seed(0)
    names = release.names(repo, device, network, total)
    batch = make_batch(crop, BATCH, NUM_CLASSES, device)
    times = []
    for step in range(total):
        names["__batch__"] = (step, authors_batch(batch)[: release.loaders])
        if device.type == "cuda":
            torch.cuda.synchronize()
            if step == 2:
                torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        exec(body, names)  # noqa: S102 (the authors' loop body, read from their checkout)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - start)
        if not torch.isfinite(names["loss"]):
            raise RuntimeError(f"the authors' {release.method} iteration: loss is not finite")
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    del names
    free_memory()
    return {"code": "authors", "precision": "fp32", "compile": None, "step_s": statistics.median(times),
            "peak_mib": None if peak is None else round(peak), "attention": attention(release)}


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def show(row: dict[str, Any], reference: float) -> None:
    """Adds the ratio to the authors' step to ``row`` and prints it."""
    row["ratio"] = round(row["step_s"] / reference, 3)
    peak = "" if row["peak_mib"] is None else str(row["peak_mib"])
    layout = (row["compile"] or "eager") + ("+cl" if row.get("channels_last") else "")
    print(f"{row['code']:<10}{row['precision']:>10}{layout:>10}{row['step_s']:>10.3f}"
          f"{peak:>12}{row['ratio']:>11.2f}", flush=True)


def goal(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest toolkit row against the goal: at most ``GOAL`` × the authors' step, no more memory
    (memory unjudged where peaks are not apart, on the CPU)."""
    authors, best = rows[0], min(rows[1:], key=lambda row: row["step_s"])
    memory = None if best["peak_mib"] is None else best["peak_mib"] <= authors["peak_mib"]
    met = best["ratio"] <= GOAL and memory is not False
    return {"target": GOAL, "best": {key: best.get(key) for key in ("precision", "compile", "channels_last", "ratio", "peak_mib")},
            "no_more_memory": memory, "met": met}


def checkout_commit(repo: Path) -> str | None:
    """The commit of the authors' checkout; None when ``repo`` is not the top of a git work tree (a
    folder inside another repository does not take that repository's commit)."""
    try:
        run = subprocess.run(["git", "-C", str(repo), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True)
    except OSError:
        return None
    lines = run.stdout.split()
    if run.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != repo.resolve():
        return None
    return lines[1]


def side_by_side(release: Release, repo: Path, network: str, crop: int, steps: int, args: argparse.Namespace) -> None:
    """One release's section: its iteration, the toolkit's rows, the goal line and the result file, written
    again after each row (a section stopped by a time limit keeps the rows it measured)."""
    cuda = torch.cuda.is_available()
    print(f"\n{release.method} on {network}, crop {crop}, {BATCH} labeled + {BATCH} unlabeled, median of {steps} "
          f"steps; the authors' code: {repo}")
    print(f"{'code':<10}{'precision':>10}{'compile':>10}{'step (s)':>10}{'peak (MiB)':>12}{'× authors':>11}")
    settings = {"method": release.method, "network": network, "crop": crop, "steps": steps, "batch": BATCH,
                "num_classes": NUM_CLASSES, "compile": args.compile, "precisions": args.precisions,
                "cudnn_benchmark": torch.backends.cudnn.benchmark,
                "authors_code": {"repository": release.github, "commit": checkout_commit(repo)}}
    options = [f"crop{crop}"] if crop != default_crop(network, cuda) else []
    options += ["eager"] if args.compile == "none" else []
    options += ["channels_last"] if args.channels_last else []
    name = f"authors_step/{'-'.join([machine_slug(), release.method, network, *options])}.json"
    rows = [measure_authors(release, repo, network, crop, steps)]
    show(rows[0], rows[0]["step_s"])
    layouts = [(None, False), *([(None, True)] if args.channels_last else [])]
    layouts += [] if args.compile == "none" else [(args.compile, False)]
    for compile_mode, channels_last in layouts:
        for precision in args.precisions:
            row = measure(release.method, network, precision, crop, steps, channels_last, compile_mode)
            rows.append({"code": "toolkit", "precision": precision, "compile": compile_mode,
                         "channels_last": channels_last, "step_s": row["step_s"],
                         "peak_mib": row["peak_mib"] if cuda else None})
            show(rows[-1], rows[0]["step_s"])
            free_memory()
            data = {"benchmark": "authors_step", "settings": settings, "rows": rows, "goal": goal(rows)}
            write_result(name, data, args.results)
    verdict = goal(rows)
    memory = {None: "memory not judged on the CPU", True: "no more memory", False: "MORE memory"}
    print(f"goal ≤ {GOAL}× the authors' step with no more memory: {'met' if verdict['met'] else 'not met'} "
          f"(fastest: {verdict['best']['precision']} {verdict['best']['compile'] or 'eager'}"
          f"{' channels_last' if verdict['best']['channels_last'] else ''}, "
          f"{verdict['best']['ratio']:.2f}×, {memory[verdict['no_more_memory']]})", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for release in RELEASES.values():
        parser.add_argument(release.option, type=Path, default=os.environ.get(release.variable),
                            help=f"checkout of {release.github} (default: ${release.variable})")
    parser.add_argument("--v2-network", choices=RELEASES["UniMatchV2"].networks, default="dinov2_small")
    parser.add_argument("--crop", type=int, default=None,
                        help="default: 321 (CorrMatch) and 518 (UniMatch V2) on a GPU, 97 and 98 on the CPU")
    parser.add_argument("--steps", type=int, default=None, help="default: 10 on a GPU, 2 on the CPU")
    parser.add_argument("--compile", choices=[*COMPILE_MODES, "none"], default="default")
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"],
                        help="of the toolkit's rows (the authors' run in fp32)")
    parser.add_argument("--channels-last", action="store_true",
                        help="also the toolkit's eager rows with channels_last images and weights")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the result files")
    args = parser.parse_args(argv)
    sections = []
    for release in RELEASES.values():
        repo = getattr(args, release.option.removeprefix("--").replace("-", "_"))  # argparse's name for it
        if repo is None:
            continue
        if not (repo / release.script).is_file():
            parser.error(f"{release.option} (or {release.variable}) must be a checkout of {release.github}: "
                         f"{repo / release.script} is not a file")
        sections.append((release, repo, args.v2_network if release.method == "UniMatchV2" else release.networks[0]))
    if not sections:
        parser.error("give --authors-code (CorrMatch) and/or --authors-code-v2 (UniMatch V2), "
                     "or set AUTHORS_CODE / AUTHORS_CODE_V2")
    cuda = torch.cuda.is_available()
    if not cuda:
        torch.Tensor.cuda = lambda self, *args, **kwargs: self  # the authors' .cuda() calls: stay on the CPU
    torch.backends.cudnn.benchmark = True  # as both releases set it; the toolkit's rows run under it too
    steps = args.steps or (10 if cuda else 2)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if cuda else 'CPU'}")
    for release, repo, network in sections:
        side_by_side(release, repo, network, row_crop(network, args.crop, cuda), steps, args)


if __name__ == "__main__":
    main()
