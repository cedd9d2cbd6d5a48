"""Semi-supervised gain on the built-in demo dataset: SupervisedOnly, FixMatch, UniMatch, CorrMatch and the
FullySupervised reference trained with the same budget (iterations, encoder, batch, learning rate) for
several seeds.

    python benchmarks/ssl_gain.py                      # the label-bound regime: 5 rows × 2 seeds
    python benchmarks/ssl_gain.py --seeds 0 --steps 50  # a quick look

The default is the label-bound regime P15 of docs/regime-search.md (its gap between SupervisedOnly and
FullySupervised ≥ 15 on each seed, and the first regime in which FixMatch, UniMatch and CorrMatch all
gained on both default seeds on the Intel Xeon; the whole default run took 44–60 minutes on the 2-core
machines timed): the demo's plain variant (no background clutter) drawn with textures of twice the period
(``data/demo_plain_t2``), 8 labeled images drawn so that every class shows in at least 3 of them, 800
iterations, SGD lr 0.01, crop 96, output stride 16, ASPP/decoder width 64, and a ResNet-18 encoder
pretrained by ``pretrain_encoder.py`` for 3000 steps on image-level labels (which of the demo's object
kinds a crop of another generated image shows, never where; made once, cached in
``data/demo_pretrain_classes_t2_s3000``, ~9.5 minutes).
``--cluttered``, ``--texture-scale``, ``--object-scale``, ``--any-hue``, ``--pretraining`` (its images
drawn at the data's scales), ``--pretraining-steps``, ``--encoder-weights`` (a file, or ``none``),
``--decoder-channels``, ``--output-stride``, ``--batch-size``, ``--num-labeled``, ``--min-images-per-class``,
``--steps``, ``--lr``, ``--lr-multi``, ``--hue-jitter`` and ``--grayscale-p`` change it; the other regimes tried
(P1–P23) are listed in docs/regime-search.md with their flags. ``--data-dir`` moves the generated demo data
(default ``data/``).

Each run is ``python train.py fit`` on a config written from :data:`BASE` with the method, seed and budget
filled in, in its own run directory under ``--out``, W&B off (a CSV log instead), validated once at the
end; a finished run with the same config and split files in that directory is read back instead of repeated,
and one of other settings stops the script before anything is trained or overwritten. ``--jobs``
runs train at once (default 2, each on cores/jobs threads). A run is deterministic for a given thread
count; another count changes the floating-point sums and, over 800 steps, the mIoU by a few points.
``--accelerator gpu`` trains every run, and the encoder pretraining (into a ``_gpu`` folder), on a GPU
in fp32: not bit-reproducible, a quick look at longer budgets; the regime's figures are the CPU's.

A seed sets the initialisation, the data order, the augmentation and the draw of ``--num-labeled``
labeled images from the demo's training pool (its 520 images, all with masks); the rest of the pool is
the unlabeled list. SupervisedOnly trains on the labeled images alone (its data contract, as the
paper's baseline); FullySupervised is SupervisedOnly on every image of the pool with its mask, the
ceiling of the budget. ``--encoder-weights`` starts every run from one encoder file
(``benchmarks/pretrain_encoder.py``).

Each run's result is written to ``--results`` as ``<method>-seed<seed>.json`` (:mod:`record`): the mIoU
and the IoU of every class in percent after the last epoch, the pseudo-label metrics (percent) averaged
over the last epoch's logged steps, the training time, the regime's settings, the machine, the commit and
the command. The default folder is ``benchmarks/results/ssl_gain/label_bound`` for the default regime and
``benchmarks/results/ssl_gain/<hash of the settings>`` for any other. The last line printed is one JSON
object: ``{method: [mIoU per seed], …, "pseudo_label_accuracy": {method: [{"pl_acc": …, …} per seed]}}``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from pretrain_encoder import TASKS, default_out, device_settings, pretrain, scale_suffix
from record import RESULTS, write_result

from corrmatch.data.demo import generate_demo, is_demo_complete
from corrmatch.data.io import parse_split, read_mask
from corrmatch.data.presets import DEMO_CLASSES
from corrmatch.data.transforms import AugmentConfig

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("SupervisedOnly", "FixMatch", "UniMatch", "CorrMatch")
REFERENCE = "FullySupervised"
MIOU = re.compile(r"val mIoU = ([0-9.]+)")
PER_CLASS = re.compile(r"val IoU per class: (.+)")
DEFAULT_REGIME = "label_bound"
# The options that define a regime (the rest choose seeds, methods, folders and parallelism).
REGIME_OPTIONS = (
    "steps", "num_labeled", "min_images_per_class", "crop", "batch_size", "output_stride", "decoder_channels",
    "lr", "lr_multi", "encoder_weights", "pretraining", "pretraining_steps", "conf_thresh", "cluttered",
    "texture_scale", "object_scale", "any_hue", "hue_jitter", "grayscale_p", "accelerator",
)


@functools.cache
def classes_shown(root: Path) -> np.ndarray:
    """(pool size, 5) booleans: which object classes each mask of the demo's training pool shows (read
    once per root, however many runs draw from it)."""
    pool = parse_split(root / "splits" / "labeled.txt") + parse_split(root / "splits" / "unlabeled.txt")
    classes = np.arange(1, len(DEMO_CLASSES))
    return np.array([np.isin(classes, read_mask(root / entry.mask)) for entry in pool])


def draw_split(seed: int, num_labeled: int, root: Path, min_images_per_class: int = 0) -> tuple[str, str]:
    """The seed's draw of ``num_labeled`` labeled images from the demo's training pool (its labeled
    and unlabeled lists, all with masks); the rest is the unlabeled list. Returns both lists' text.

    With ``min_images_per_class`` > 0 the seed's generator draws again until every object class shows in
    at least that many of the chosen masks (the draw of a user who labels few images but each class
    several times); 0 keeps its first draw whatever it holds."""
    pool = (root / "splits" / "labeled.txt").read_text().splitlines(keepends=True)
    pool += (root / "splits" / "unlabeled.txt").read_text().splitlines(keepends=True)
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        chosen = rng.choice(len(pool), num_labeled, replace=False)
        if min_images_per_class <= 0 or classes_shown(root)[chosen].sum(0).min() >= min_images_per_class:
            break
    else:
        raise SystemExit(
            f"error: no draw of {num_labeled} images from {root} shows every class in {min_images_per_class} "
            "of them (--min-images-per-class)"
        )
    chosen = set(chosen.tolist())
    labeled = "".join(line for i, line in enumerate(pool) if i in chosen)
    return labeled, "".join(line for i, line in enumerate(pool) if i not in chosen)


# Every run's settings before the method, the seed, the split and the budget are filled in: ResNet-18 (smp),
# output stride 16, the authors' DeepLabV3+ head (at --decoder-channels), batch 4 (+4 unlabeled; the default
# of --batch-size), SGD with the same rate (--lr) for encoder and head, channels_last (5-12 % faster a step
# alone, not measurably with two runs side by side), deterministic, on the CPU. (configs/demo.yaml until
# 2026-11-28.)
BASE = {
    "trainer": {"accelerator": "cpu", "devices": 1, "deterministic": True, "num_sanity_val_steps": 0},
    "network": {"encoder_name": "resnet18", "encoder_weights": None, "output_stride": 16, "atrous_rates": [6, 12, 18]},
    "init": {"channels_last": True},
    "data": {"preset": "demo", "batch_size": 4, "num_workers": 0},
}


def run_config(method: str, seed: int, args: argparse.Namespace, run_dir: Path) -> tuple[dict, dict[str, str]]:
    """:data:`BASE` with ``method`` and the benchmark's budget: ``args.steps`` training iterations for
    every method, one validation at the end, a CSV log of the step metrics; and the split files the config
    names (file name in ``run_dir`` → text), not yet written."""
    init = {"network": dict(BASE["network"]), **BASE["init"], "lr": args.lr, "lr_multi": args.lr_multi}
    init["reference_global_batch"] = args.batch_size  # --lr is the rate at this batch, not rescaled
    if args.encoder_weights is not None:
        init["network"]["encoder_weights"] = str(args.encoder_weights)
    if args.output_stride == 8:
        init["network"].update(output_stride=8, atrous_rates=[12, 24, 36])
    if args.decoder_channels != 256:
        init["network"]["decoder_channels"] = args.decoder_channels
    if method in ("FixMatch", "UniMatch"):
        init["conf_thresh"] = args.conf_thresh
    class_name = "SupervisedOnly" if method == REFERENCE else method
    data = {**BASE["data"], "root": str(args.data_root), "demo_clutter": args.cluttered, "crop_size": args.crop}
    data["batch_size"] = args.batch_size
    for name in ("texture_scale", "object_scale"):
        if getattr(args, name) != 1.0:
            data[f"demo_{name}"] = getattr(args, name)
    if args.any_hue:
        data["demo_class_hues"] = False
    paper = AugmentConfig()
    augment = {}
    if args.hue_jitter != paper.color_jitter[3]:
        augment["color_jitter"] = [*paper.color_jitter[:3], args.hue_jitter]
    if args.grayscale_p != paper.grayscale_p:
        augment["grayscale_p"] = args.grayscale_p
    if augment:
        data["augment"] = augment
    config = {
        "seed_everything": seed,
        "trainer": {**BASE["trainer"], **device_settings(args.accelerator)},
        "model": {"class_path": f"corrmatch.methods.{class_name}", "init_args": init},
        "data": data,
    }
    labeled, unlabeled = draw_split(seed, args.num_labeled, Path(data["root"]), args.min_images_per_class)
    files = {"labeled.txt": labeled, "unlabeled.txt": unlabeled}
    if method == REFERENCE:  # every training image with its mask
        files["all_labeled.txt"] = labeled + unlabeled
    labeled_name = "all_labeled.txt" if method == REFERENCE else "labeled.txt"
    data["labeled_split"], data["unlabeled_split"] = str(run_dir / labeled_name), str(run_dir / "unlabeled.txt")
    # an epoch is one pass over the labeled list (SupervisedOnly) or the unlabeled list (the others)
    listed = files[labeled_name] if class_name == "SupervisedOnly" else unlabeled
    per_epoch = len(listed.splitlines()) // data["batch_size"]
    epochs = -(-args.steps // per_epoch)
    config["trainer"].update(
        max_epochs=epochs,
        limit_train_batches=args.steps // epochs,
        check_val_every_n_epoch=epochs,
        default_root_dir=str(run_dir),
        logger={"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(run_dir)}},
        log_every_n_steps=10,
    )
    return config, files


def stage(config: dict, files: dict[str, str]) -> float | None:
    """Prepares a run's directory. A finished run there with the same config and split files is not
    repeated (runs are deterministic): its mIoU is returned. Otherwise the config and the split files are
    written, what an unfinished run left is removed, and None is returned. A finished run of other
    settings stops the benchmark before anything of it is overwritten."""
    run_dir = Path(config["trainer"]["default_root_dir"])
    files = {"benchmark.yaml": yaml.safe_dump(config), **files}
    log = run_dir / "output.log"
    finished = MIOU.findall(log.read_text()) if log.is_file() else []
    if finished:
        if all((run_dir / name).is_file() and (run_dir / name).read_text() == text for name, text in files.items()):
            return float(finished[-1])
        raise SystemExit(
            f"error: {run_dir} holds a finished run of other settings (its benchmark.yaml or split files "
            "differ); pass another --out or delete that folder"
        )
    for name, text in files.items():
        (run_dir / name).write_text(text)
    for stale in [run_dir / "checkpoints", *run_dir.glob("version_*")]:
        shutil.rmtree(stale, ignore_errors=True)
    return None


def pseudo_label_metrics(run_dir: Path) -> dict[str, float | None]:
    """Means over the last epoch of the run's logged pseudo-label quality metrics (``train/pl_*``),
    from its CSV log; None for an accuracy no step of it defined (no pixel used);
    empty for SupervisedOnly."""
    logs = list(run_dir.glob("version_0/metrics.csv"))
    if not logs:
        return {}
    with logs[-1].open() as handle:
        rows = list(csv.DictReader(handle))
    names = [name for name in (rows[0].keys() if rows else []) if name.startswith("train/pl_")]
    epochs = [int(row["epoch"]) for row in rows if row.get("epoch")]
    last = [row for row in rows if row.get("epoch") and int(row["epoch"]) == max(epochs)]
    result = {}
    for name in names:  # a step whose accuracy is undefined (no pixel counted) logged NaN and is skipped
        values = [value for row in last if row.get(name) and not math.isnan(value := float(row[name]))]
        result[name.removeprefix("train/")] = round(100.0 * sum(values) / len(values), 2) if values else None
    return result


def regime_settings(args: argparse.Namespace) -> dict[str, object]:
    """The options that define the regime (:data:`REGIME_OPTIONS`), as JSON values."""
    return {
        name: str(value) if isinstance(value, Path) else value
        for name in REGIME_OPTIONS
        for value in [getattr(args, name)]
    }


def regime_name(settings: dict[str, object], defaults: dict[str, object]) -> str:
    """``label_bound`` for the default regime, else a short hash of its settings."""
    if settings == defaults:
        return DEFAULT_REGIME
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def per_class_iou(log_text: str) -> dict[str, float]:
    """The last ``val IoU per class: name value, …`` line of a run's output, as ``{name: IoU}``."""
    lines = PER_CLASS.findall(log_text)
    if not lines:
        return {}
    pairs = (item.rsplit(" ", 1) for item in lines[-1].split(", "))
    return {name: float(value) for name, value in pairs}


def train(method: str, seed: int, config: dict, threads: int) -> tuple[float, float]:
    """Trains one method with one seed from its :func:`run_config`, written by :func:`stage`, on
    ``threads`` CPU threads; returns its last validation mIoU (percent) and the time it took (s)."""
    run_dir = Path(config["trainer"]["default_root_dir"])
    log = run_dir / "output.log"
    command = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(run_dir / "benchmark.yaml")]
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    log.write_text(result.stdout + result.stderr)
    values = MIOU.findall(result.stdout + result.stderr)
    if result.returncode != 0 or not values:
        raise RuntimeError(f"{method} seed {seed} failed, see {log}")
    seconds = time.perf_counter() - start
    return report(method, seed, float(values[-1]), f"{seconds:.0f} s"), seconds


def record_run(
    results: Path, method: str, seed: int, run_dir: Path, settings: dict, seconds: float | None, threads: int
) -> None:
    """Writes one run's ``<method>-seed<seed>.json`` into ``results`` (:mod:`record`); a run read back
    from an earlier call keeps the file that call wrote."""
    name = f"{method}-seed{seed}.json"
    if seconds is None and (results / name).is_file():
        return
    log_text = (run_dir / "output.log").read_text()
    data = {
        "benchmark": "ssl_gain",
        "regime": settings,
        "method": method,
        "seed": seed,
        "miou": float(MIOU.findall(log_text)[-1]),
        "iou_per_class": per_class_iou(log_text),
        "pseudo_label": pseudo_label_metrics(run_dir),
        "train_seconds": None if seconds is None else round(seconds, 1),
        "threads": threads,
        "run_dir": str(run_dir.relative_to(ROOT)) if ROOT in run_dir.parents else str(run_dir),
    }
    write_result(name, data, results)


def report(method: str, seed: int, miou: float, note: str) -> float:
    """Prints a run's line in one write (the runs finish on parallel threads) and returns its mIoU."""
    print(f"{method:<15} seed {seed}: mIoU {miou:6.2f}  ({note})\n", end="", flush=True)
    return miou


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=[*METHODS, REFERENCE], choices=METHODS + (REFERENCE,))
    parser.add_argument("--steps", type=int, default=800, help="training iterations of every run")
    parser.add_argument("--num-labeled", type=int, default=8, help="labeled images drawn from the pool per seed")
    parser.add_argument(
        "--min-images-per-class",
        type=int,
        default=3,
        help="draw the labeled images again until every class shows in at least this many (0: one plain draw)",
    )
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=BASE["data"]["batch_size"],
        help="labeled images a step (and as many unlabeled); --lr is used as given at any batch",
    )
    parser.add_argument(
        "--output-stride",
        type=int,
        choices=(8, 16),
        default=16,
        help="of the network (8: CorrMatch's release, a 12×12 instead of 6×6 correlation grid at crop 96; "
        "about 1.8× the time)",
    )
    parser.add_argument(
        "--decoder-channels", type=int, default=64, help="ASPP/decoder width (256: the paper's, about 1.7x the time)"
    )
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate of every run's encoder")
    parser.add_argument(
        "--lr-multi",
        type=float,
        default=1.0,
        help="the decoder's and heads' rate is --lr times this (10: the paper's layered rates)",
    )
    parser.add_argument(
        "--encoder-weights",
        type=Path,
        default=None,
        help="the encoder file every run starts from (default: pretrain_encoder.py's, made on first use); "
        "'none' for a from-scratch encoder",
    )
    parser.add_argument(
        "--pretraining",
        choices=TASKS,
        default="classes",
        help="the task of the default encoder file (pretrain_encoder.py, its images drawn at the data's scales)",
    )
    parser.add_argument(
        "--pretraining-steps", type=int, default=3000, help="the steps of the default encoder file's pretraining"
    )
    parser.add_argument("--conf-thresh", type=float, default=0.95, help="FixMatch/UniMatch threshold")
    parser.add_argument(
        "--cluttered", action="store_true", help="the standard demo (data/demo) instead of its plain variant"
    )
    parser.add_argument(
        "--texture-scale",
        type=float,
        default=2.0,
        help="the demo's texture periods times this (data/demo_plain[_t<scale>])",
    )
    parser.add_argument(
        "--object-scale",
        type=float,
        default=1.0,
        help="the demo's object sizes times this (data/demo_plain[_t<scale>]_o<scale>)",
    )
    parser.add_argument(
        "--any-hue",
        action="store_true",
        help="objects of random hues, so that shape and texture tell the class (data/demo_plain[…]_anyhue)",
    )
    parser.add_argument(
        "--hue-jitter",
        type=float,
        default=AugmentConfig().color_jitter[3],
        help="the strong view's hue jitter (the paper's 0.25 turns hues by up to 90 degrees; the demo's class "
        "hues are 72 degrees apart)",
    )
    parser.add_argument(
        "--grayscale-p", type=float, default=AugmentConfig().grayscale_p, help="the strong view's grayscale probability"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="runs trained at once, the CPU cores shared between them (on 2 cores two one-thread runs "
        "finish ~1.3x sooner than one after the other)",
    )
    parser.add_argument(
        "--accelerator",
        choices=("cpu", "gpu"),
        default="cpu",
        help="gpu: every run (and the encoder pretraining) on the GPU, fp32, not bit-reproducible",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ssl_gain")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="folder of the per-run JSON files (default: benchmarks/results/ssl_gain/label_bound for the "
        "default regime, benchmarks/results/ssl_gain/<hash of the settings> for another)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=ROOT / "data", help="where the demo's data is generated (once) and read"
    )
    args = parser.parse_args()
    settings, defaults = regime_settings(args), regime_settings(parser.parse_args([]))
    results_dir = args.results or RESULTS / "ssl_gain" / regime_name(settings, defaults)
    if not 1 <= args.batch_size <= args.num_labeled:
        raise SystemExit(
            f"error: --batch-size {args.batch_size} must be between 1 and --num-labeled ({args.num_labeled}): "
            "SupervisedOnly takes each batch from the labeled images alone"
        )
    scales = {"texture_scale": args.texture_scale, "object_scale": args.object_scale}
    folder = ("demo" if args.cluttered else "demo_plain") + scale_suffix(**scales) + ("_anyhue" if args.any_hue else "")
    args.data_root = args.data_dir / folder
    if not is_demo_complete(args.data_root):
        generate_demo(args.data_root, clutter=args.cluttered, class_hues=not args.any_hue, **scales)
    if args.encoder_weights is None:
        out = default_out(args.pretraining, args.accelerator, steps=args.pretraining_steps, **scales)
        args.encoder_weights = out / "encoder.pth"
        pretrain(
            ROOT / out, steps=args.pretraining_steps, accelerator=args.accelerator, task=args.pretraining, **scales
        )
    elif str(args.encoder_weights).lower() == "none":
        args.encoder_weights = None
    print(f"budget: {args.steps} iterations per run, {args.num_labeled} labeled, seeds {args.seeds}", flush=True)
    configs, finished = {}, {}  # every run staged first, so that a bad option stops before any training
    for method in args.methods:
        for seed in args.seeds:
            run_dir = args.out / f"{method}-seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            config, files = run_config(method, seed, args, run_dir)
            miou = stage(config, files)
            if miou is None:
                configs[method, seed] = config
            else:
                finished[method, seed] = report(method, seed, miou, f"earlier run, {run_dir / 'output.log'}")
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    for method, seed in finished:
        record_run(results_dir, method, seed, args.out / f"{method}-seed{seed}", settings, None, threads)

    def train_and_record(method: str, seed: int, config: dict) -> float:
        miou, seconds = train(method, seed, config, threads)
        record_run(results_dir, method, seed, args.out / f"{method}-seed{seed}", settings, seconds, threads)
        return miou

    with ThreadPoolExecutor(args.jobs) as pool:
        runs = {key: pool.submit(train_and_record, *key, config) for key, config in configs.items()}
        finished.update((key, run.result()) for key, run in runs.items())
    results: dict[str, object] = {method: [finished[method, seed] for seed in args.seeds] for method in args.methods}
    results["pseudo_label_accuracy"] = {
        method: [pseudo_label_metrics(args.out / f"{method}-seed{seed}") for seed in args.seeds]
        for method in args.methods
        if method in ("FixMatch", "UniMatch", "CorrMatch")
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
