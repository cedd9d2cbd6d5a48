"""End to end: training iterations per second of the Pascal paper configuration, data loading included.

Runs ``python train.py fit --config configs/pascal/corrmatch.yaml`` (CorrMatch, the paper's
``tu-resnet101s`` DeepLabV3+ at output stride 8, 4 labeled + 4 unlabeled images per step, one device) for
``--warmup`` + ``--steps`` iterations, in this process (``corrmatch.cli.main`` with train.py's
``sys.argv``), on generated Pascal-sized images: 500×375 JPEGs with palette PNG masks
(:func:`data_throughput.make_images`) in a temporary Pascal-layout root (``JPEGImages/``,
``SegmentationClass/``, ``splits/end_to_end/{labeled,unlabeled,val}.txt``; a quarter of the images
labeled, the rest unlabeled). The unlabeled list repeats its images so that one epoch covers the run, as
a Pascal epoch (2645 iterations) covers any short run: no epoch boundary falls inside the measurement.
Changed from the config: one device, the encoder randomly initialised (``encoder_weights null``: no
download, the same compute), no validation, logger, checkpoints, progress bar or model summary, and the
given crop, precision and workers. The equivalent shell command is in the result (``train_command``).

    python benchmarks/end_to_end.py [--steps 40] [--warmup 5] [--images 50] [--num-workers N]
        [--precision 32-true|bf16-mixed] [--crop 321] [--accelerator auto|gpu|cpu]
    python benchmarks/end_to_end.py --crop 33 --images 4 --steps 2 --warmup 1 --num-workers 0   # CPU, small

The callback :class:`DataWait` (given by class path in ``--trainer.callbacks``; this folder is on sys.path,
as it is for any script in it), the toolkit's ``TrainingSpeed`` with a synchronised clock, times every
iteration after the warm-up as two parts: the *step*, from
``on_train_batch_start`` to ``on_train_batch_end`` (forward, pseudo-labels, losses, backward, optimiser),
and the *wait*, from the previous iteration's ``on_train_batch_end`` to this ``on_train_batch_start``:
fetching the batch from the loaders, the copy to the device and Lightning's bookkeeping between batches.
On a GPU both hooks call ``torch.cuda.synchronize()``, so that the GPU's work is counted in the step it
belongs to (a CorrMatch step reads its threshold back to the host anyway). Iterations per second are
the measured iterations over the sum of their steps and waits; the data-wait share is the waits' part
of that sum.

``data.num_workers`` (per loader; training reads three loaders, labeled, unlabeled and unlabeled_mix)
is ``--num-workers``, by default ``min(4, os.cpu_count() // 3)``: the config's 4 on a machine of 12 cores
or more, fewer on a smaller one (0, loading in the training process, below 3 cores).

Prints one line with the figures and writes them to ``--results`` (default ``benchmarks/results``) as
``end_to_end/<machine>[-<options>].json`` (:mod:`record`): the settings, iterations per second, the
data-wait share, each measured iteration's wait and step, the device, the training process's torch
threads and the training command.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml
from data_throughput import make_images
from record import RESULTS, ROOT, cpu_model, machine_slug, write_result

from corrmatch.callbacks import TrainingSpeed
from corrmatch.cli import main as train

CONFIG = ROOT / "configs" / "pascal" / "corrmatch.yaml"
PAPER = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
SPLIT = "end_to_end"
DEFAULTS = {"steps": 40, "warmup": 5, "images": 50, "precision": PAPER["trainer"]["precision"]}
DEFAULTS |= {"crop": PAPER["data"]["crop_size"], "accelerator": "auto"}


class DataWait(TrainingSpeed):
    """:class:`~corrmatch.callbacks.TrainingSpeed` with a synchronised clock on a GPU, keeping each
    iteration after the first ``warmup`` ones as its wait for data and its step (see the module
    docstring), and writing both lists, the device and the torch threads to ``out`` (JSON) when training
    ends.

    Args:
        warmup: the iterations left out at the start (at least 1: the first iteration has no wait).
        out: the JSON file to write.
    """

    def __init__(self, warmup: int, out: str) -> None:
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1, got {warmup}")
        super().__init__()
        self.warmup, self.out = warmup, out
        self.waits: list[float] = []
        self.steps: list[float] = []

    def clock(self, pl_module: pl.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def measured(self, wait: float, iteration: float) -> None:
        super().measured(wait, iteration)
        if self.iterations >= self.warmup:  # the count of iterations measured so far is this one's index
            self.waits.append(wait)
            self.steps.append(iteration - wait)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = pl_module.device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
        figures = {"device": name, "device_type": device.type, "torch_threads": torch.get_num_threads()}
        figures |= {"wait_s": self.waits, "step_s": self.steps}
        Path(self.out).write_text(json.dumps(figures), encoding="utf-8")


def default_workers() -> int:
    """The config's ``data.num_workers``, or fewer where the machine has under 3 cores per worker (each of
    the three training loaders starts that many)."""
    return min(PAPER["data"]["num_workers"], (os.cpu_count() or 1) // 3)


def make_root(root: Path, images: int, samples: int) -> None:
    """A Pascal-layout root of ``images`` generated images and the split ``end_to_end``: the first
    quarter labeled (at least one), the rest unlabeled, repeated to at least ``samples`` lines, and the
    first image as the validation list."""
    lines = make_images(root, images)
    labeled, unlabeled = lines[: max(images // 4, 1)], lines[max(images // 4, 1) :]
    unlabeled = [unlabeled[index % len(unlabeled)] for index in range(max(samples, len(unlabeled)))]
    folder = root / "splits" / SPLIT
    folder.mkdir(parents=True)
    for name, listed in (("labeled", labeled), ("unlabeled", unlabeled), ("val", lines[:1])):
        (folder / f"{name}.txt").write_text("\n".join(listed) + "\n", encoding="utf-8")


def train_arguments(args: argparse.Namespace, workers: int, root: Path, out: Path) -> list[str]:
    """The arguments of ``train.py``: ``fit`` on the paper config with the benchmark's settings and
    :class:`DataWait`."""
    callback = {"class_path": f"{Path(__file__).stem}.DataWait"}
    callback["init_args"] = {"warmup": args.warmup, "out": str(out)}
    overrides = {
        "data.root": root,
        "data.split": SPLIT,
        "data.crop_size": args.crop,
        "data.num_workers": workers,
        "model.init_args.network.encoder_weights": "null",
        "trainer.accelerator": args.accelerator,
        "trainer.devices": 1,
        "trainer.precision": args.precision,
        "trainer.max_steps": args.warmup + args.steps,
        "trainer.limit_val_batches": 0,
        "trainer.logger": "false",
        "trainer.enable_progress_bar": "false",
        "trainer.enable_model_summary": "false",
        "trainer.default_root_dir": root / "run",
        "trainer.callbacks": json.dumps([callback]),
        "checkpoint.save_last": "false",
        "checkpoint.save_top_k": 0,
    }
    command = ["fit", "--config", str(CONFIG)]
    return command + [part for key, value in overrides.items() for part in (f"--{key}", str(value))]


def result_name(args: argparse.Namespace) -> str:
    """``end_to_end/<machine>[-<options>].json``: the options that differ from the defaults."""
    options = [f"{name}{getattr(args, name)}" for name in DEFAULTS if getattr(args, name) != DEFAULTS[name]]
    options += [f"workers{args.num_workers}"] if args.num_workers is not None else []
    return f"end_to_end/{'-'.join([machine_slug(), *options])}.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="measured iterations")
    parser.add_argument("--warmup", type=int, default=DEFAULTS["warmup"], help="iterations before; ≥ 1")
    parser.add_argument("--images", type=int, default=DEFAULTS["images"], help="generated images, at least 2")
    parser.add_argument("--num-workers", type=int, default=None, help=f"per loader; here {default_workers()}")
    parser.add_argument("--precision", default=DEFAULTS["precision"], help="trainer.precision")
    parser.add_argument("--crop", type=int, default=DEFAULTS["crop"])
    parser.add_argument("--accelerator", default=DEFAULTS["accelerator"], help="trainer.accelerator")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the result files")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.images < 2:
        parser.error("--steps and --warmup must be at least 1, --images at least 2")
    workers = default_workers() if args.num_workers is None else args.num_workers
    batch = PAPER["data"]["batch_size"]
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "pascal", Path(tmp) / "data_wait.json"
        make_root(root, args.images, batch * (args.warmup + args.steps))
        arguments = train_arguments(args, workers, root, out)
        argv, sys.argv = sys.argv, ["train.py", *arguments]  # as ``python train.py …`` runs it
        try:
            train()
        finally:
            sys.argv = argv
        figures = json.loads(out.read_text(encoding="utf-8"))
    waits, steps = figures.pop("wait_s"), figures.pop("step_s")
    total = sum(waits) + sum(steps)
    iterations_per_s, wait_share = len(steps) / total, sum(waits) / total
    print(
        f"CorrMatch Pascal config, crop {args.crop}, {batch} + {batch} images, {args.precision}, "
        f"num_workers {workers}, {figures['device']}: {iterations_per_s:.2f} it/s with data loading "
        f"({args.steps} iterations after {args.warmup}), waiting for data {100 * wait_share:.1f}% of the "
        f"time (mean wait {sum(waits) / len(waits):.3f} s, mean step {sum(steps) / len(steps):.3f} s)",
        flush=True,
    )
    settings = {"config": str(CONFIG.relative_to(ROOT)), "method": "CorrMatch", "batch": batch}
    settings |= {name: getattr(args, name) for name in DEFAULTS} | {"num_workers": workers}
    settings |= {"num_workers_given": args.num_workers is not None, "encoder_weights": None}
    data = {"benchmark": "end_to_end", "settings": settings, **figures}
    data |= {"iterations_per_s": round(iterations_per_s, 4), "data_wait_share": round(wait_share, 4)}
    data |= {"wait_s": [round(t, 5) for t in waits], "step_s": [round(t, 5) for t in steps]}
    command = shlex.join(["python", "train.py", *arguments]).replace(f"{ROOT}/", "")
    data["train_command"] = f"PYTHONPATH=benchmarks {command}"
    write_result(result_name(args), data, args.results)


if __name__ == "__main__":
    main()
