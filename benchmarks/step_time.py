"""Time and peak memory of one training step of each method on the paper network and on DINOv2.

One step = the method's ``training_step`` (every forward, pseudo-labelling, losses), ``backward`` and
the optimiser update, on random inputs: 4 labeled + 4 unlabeled images (+ 4 for the CutMix paste),
fp32 and bf16 autocast, 21 classes. Networks: the paper's (``tu-resnet101s``, output stride 8; SGD)
for the four ResNet methods, and DINOv2-S / DINOv2-B with the DPT head (AdamW, UniMatch V2's
optimiser) for UniMatch V2 and CorrMatch.

    python benchmarks/step_time.py                 # every row × precision, on the present device
    python benchmarks/step_time.py --crop 129      # another crop (rounded to 14 for DINOv2)
    python benchmarks/step_time.py --networks dinov2_small
    python benchmarks/step_time.py --compile default   # the networks compiled (model.compile)

cuDNN picks its fastest kernels (``cudnn.benchmark``), as the paper configs ask (``trainer.benchmark``).
On a GPU the crop is 321 (ResNet) and 518 (DINOv2), every row runs in this process and peak memory is
``torch.cuda.max_memory_allocated`` after the warm-up steps, reset per row. On the CPU the default crops
are 97 and 98 (stated in the output) and peak memory is the process's peak resident set size, so each
row runs in a fresh process. A row that fails prints its last error line and the next row runs.

``--compile MODE`` compiles the networks as ``--model.init_args.compile true`` does
(:func:`corrmatch.models.compile.compile_network`, the EMA teacher too); the first step, which
compiles, is reported apart (``first_step_s``) and left out of the median, like the other warm-up step.

The rows are written to ``--results`` (default ``benchmarks/results``) as
``step_time/<machine>-<networks>[-<options>].json`` (:mod:`record`).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from record import RESULTS, machine_slug, write_result

from corrmatch.methods import CorrMatch, FixMatch, SupervisedOnly, UniMatch, UniMatchV2
from corrmatch.methods.unimatch_v2 import ema_ratio, ema_update
from corrmatch.models.compile import COMPILE_MODES, check_compile, compile_network

METHODS = {
    "SupervisedOnly": SupervisedOnly,
    "FixMatch": FixMatch,
    "UniMatch": UniMatch,
    "CorrMatch": CorrMatch,
    "UniMatchV2": UniMatchV2,
}
NETWORKS = {  # network → the methods measured on it
    "resnet101s": ("SupervisedOnly", "FixMatch", "UniMatch", "CorrMatch"),
    "dinov2_small": ("UniMatchV2", "CorrMatch"),
    "dinov2_base": ("UniMatchV2", "CorrMatch"),
}
PRECISIONS = ("fp32", "bf16")


def default_crop(network: str, cuda: bool) -> int:
    if network == "resnet101s":
        return 321 if cuda else 97
    return 518 if cuda else 98


def row_crop(network: str, crop: int | None, cuda: bool) -> int:
    """A row's crop: ``crop``, else the network's default, on the DINOv2 patch grid (a multiple of 14)."""
    crop = crop or default_crop(network, cuda)
    return crop if network == "resnet101s" else max(round(crop / 14), 1) * 14


def make_batch(crop: int, batch: int, num_classes: int, device: torch.device) -> dict:
    """A training batch with the keys of docs/DESIGN.md §6: random images, masks and CutMix boxes."""
    generator = torch.Generator().manual_seed(0)

    def image() -> torch.Tensor:
        return torch.randn(batch, 3, crop, crop, generator=generator)

    def box() -> torch.Tensor:
        box = torch.zeros(batch, crop, crop, dtype=torch.long)
        box[:, crop // 4 : crop // 2, crop // 3 : 2 * crop // 3] = 1
        return box

    ignore = torch.zeros(batch, crop, crop, dtype=torch.long)
    ignore[:, -crop // 10 :] = 255
    unlabeled = {
        "image_w": image(),
        "image_s": image(),
        "image_s2": image(),
        "ignore": ignore,
        "cutmix_box": box(),
        "cutmix_box2": box(),
    }
    batch_dict = {
        "labeled": {
            "image": image(),
            "mask": torch.randint(0, num_classes, (batch, crop, crop), generator=generator),
        },
        "unlabeled": unlabeled,
        "unlabeled_mix": {key: value.clone() for key, value in unlabeled.items()},
    }
    return {name: {k: v.to(device) for k, v in part.items()} for name, part in batch_dict.items()}


def measure(
    method: str, network: str, precision: str, crop: int, steps: int, channels_last: bool, compile_mode: str | None
) -> dict:
    """Median step time (s) and peak memory (MiB) of ``steps`` steps after two warm-up steps, and the
    first step's time."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    warnings.filterwarnings("ignore", message=".*self.log.*")  # training_step outside a Trainer
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")  # the schedule's Trainer
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # its device and logger notices
    torch.manual_seed(0)
    settings = {"encoder_name": "tu-resnet101s" if network == "resnet101s" else network}
    module = METHODS[method](network=settings, num_classes=21, channels_last=channels_last)
    module = module.to(device).train()
    if compile_mode:
        check_compile(compile_mode, device)
        for net in module.networks():
            compile_network(net, compile_mode)
    # The training optimiser itself (its parameter groups and recipe); a Trainer only to size the schedule.
    module.trainer = pl.Trainer(max_steps=steps + 2, accelerator="cpu", logger=False, enable_progress_bar=False)
    optimizer = module.configure_optimizers()["optimizer"]
    module.trainer = None  # training_step runs outside a loop
    batch = make_batch(crop, 4, 21, device)
    times = []
    for step in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
            if step == 2:
                torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = module.training_step(batch, step)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if isinstance(module, UniMatchV2):
            ema_update(module.teacher, module.net, ema_ratio(step))
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step == 0:
            first = time.perf_counter() - start
        if step >= 2:
            times.append(time.perf_counter() - start)
        if not torch.isfinite(loss):
            raise RuntimeError(f"{method} {precision}: loss is not finite")
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": method,
        "network": network,
        "precision": precision,
        "crop": crop,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "step_s": statistics.median(times),
        "first_step_s": round(first, 2),
        "peak_mib": round(peak),
        "channels_last": channels_last,
        "compile": compile_mode,
    }


def measure_here(
    method: str, network: str, precision: str, crop: int, steps: int, channels_last: bool, compile_mode: str | None
) -> dict:
    """On a GPU every row runs in this process: the peak is reset per row and the last row's tensors freed."""
    try:
        return measure(method, network, precision, crop, steps, channels_last, compile_mode)
    finally:
        gc.collect()
        torch.cuda.empty_cache()


def measure_in_child(
    method: str, network: str, precision: str, crop: int, steps: int, channels_last: bool, compile_mode: str | None
) -> dict:
    """On the CPU each row runs in a fresh process, since the peak resident set size cannot be reset."""
    command = [sys.executable, __file__, "--single", "--methods", method, "--networks", network]
    command += ["--precisions", precision, "--crop", str(crop), "--steps", str(steps)]
    command += ["--channels-last"] if channels_last else []
    command += ["--compile", compile_mode] if compile_mode else []
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(run.stderr.strip() or f"exit status {run.returncode}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def result_name(args: argparse.Namespace) -> str:
    """``step_time/<machine>-<networks>[-<options>].json``: the options that differ from the defaults."""
    options = ["channels_last"] if args.channels_last else []
    options += [f"compile-{args.compile}"] if args.compile else []
    options += [f"crop{args.crop}"] if args.crop else []
    options += [f"steps{args.steps}"] if args.steps else []
    options += ["+".join(args.methods)] if args.methods != list(METHODS) else []
    options += ["+".join(args.precisions)] if args.precisions != list(PRECISIONS) else []
    return f"step_time/{'-'.join([machine_slug(), '+'.join(args.networks), *options])}.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--crop", type=int, default=None, help="default: 321/518 on a GPU, 97/98 on the CPU")
    parser.add_argument("--steps", type=int, default=None, help="default: 10 on a GPU, 2 on the CPU")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", choices=COMPILE_MODES, default=None, help="compile the networks in this mode")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the result files")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    torch.backends.cudnn.benchmark = True  # as the paper configs set it (trainer.benchmark)
    steps = args.steps or (10 if cuda else 2)
    if args.single:
        network = args.networks[0]
        crop = args.crop or default_crop(network, cuda)
        row = measure(args.methods[0], network, args.precisions[0], crop, steps, args.channels_last, args.compile)
        print(json.dumps(row))
        return
    compiled = f", compiled ({args.compile})" if args.compile else ", eager"
    print(f"torch {torch.__version__}, 4 labeled + 4 unlabeled, median of {steps} steps{compiled}")
    print(f"{'method':<16}{'network':<14}{'crop':>6}{'precision':>11}{'step (s)':>10}{'peak (MiB)':>12}{'first step (s)':>16}")
    rows, failed = [], []
    for network in args.networks:
        crop = row_crop(network, args.crop, cuda)
        for method in [m for m in NETWORKS[network] if m in args.methods]:
            for precision in args.precisions:
                try:
                    result = (measure_here if cuda else measure_in_child)(
                        method, network, precision, crop, steps, args.channels_last, args.compile
                    )
                except Exception as error:  # one failing row must not hide the others
                    reason = str(error).strip().splitlines()[-1:] or [type(error).__name__]
                    print(f"{method:<16}{network:<14}{crop:>6}{precision:>11}  failed: {reason[0]}", flush=True)
                    row = {"method": method, "network": network, "crop": crop, "precision": precision}
                    failed.append({**row, "error": reason[0]})
                    continue
                print(
                    f"{method:<16}{network:<14}{crop:>6}{precision:>11}{result['step_s']:>10.3f}{result['peak_mib']:>12}"
                    f"{result['first_step_s']:>16.2f}",
                    flush=True,
                )
                rows.append(result)
    settings = {
        "steps": steps,
        "batch": 4,  # labeled images, and as many unlabeled
        "num_classes": 21,
        "networks": args.networks,
        "methods": args.methods,
        "precisions": args.precisions,
        "crop": args.crop,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "cudnn_benchmark": True,
    }
    data = {"benchmark": "step_time", "settings": settings, "rows": rows, "failed": failed}
    write_result(result_name(args), data, args.results)


if __name__ == "__main__":
    main()
