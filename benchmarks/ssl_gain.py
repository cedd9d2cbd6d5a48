"""Semi-supervised gain on the built-in demo dataset: SupervisedOnly, FixMatch, UniMatch and CorrMatch
trained with the same budget (iterations, encoder, batch, learning rate) for several seeds.

    python benchmarks/ssl_gain.py                      # 4 methods × 2 seeds, 1000 iterations each
    python benchmarks/ssl_gain.py --seeds 0 --steps 50  # a quick look

Each run is ``python train.py fit`` on ``configs/demo.yaml`` with the method swapped in, in its own run
directory under ``--out``, W&B off, validated once at the end; a finished run with the same config in
that directory is read back instead of repeated (the runs are deterministic). SupervisedOnly trains on the labeled list
alone (its data contract, as the paper's baseline) for the same number of iterations. The last line printed is one JSON object,
``{"SupervisedOnly": [m1, m2], "FixMatch": […], "UniMatch": […], "CorrMatch": […]}``: validation mIoU
in percent after the last epoch, one per seed.

``--num-labeled N`` keeps the first N images of the labeled list (the demo's images are drawn
independently, so these are a random subset) for a scarcer-label setting.

``--methods … FullySupervised`` adds a reference row: SupervisedOnly trained on the labeled and the
unlabeled images together, all with their masks (the demo has masks for every image), for the same
budget. It is the ceiling of the budget: if it is not far above SupervisedOnly, the budget, not the
number of labels, limits every method.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from corrmatch.data import ensure_demo

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("SupervisedOnly", "FixMatch", "UniMatch", "CorrMatch")
REFERENCE = "FullySupervised"
MIOU = re.compile(r"val mIoU = ([0-9.]+)")


def run_config(method: str, seed: int, args: argparse.Namespace, run_dir: Path) -> dict:
    """The demo config with ``method`` swapped in and the benchmark's budget: ``args.steps`` training
    iterations for every method, one validation at the end."""
    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    network = {
        key: value
        for key, value in config["model"]["init_args"].items()
        if key not in ("thresh_init", "thresh_momentum", "num_region_samples", "conf_thresh")
    }
    if method in ("FixMatch", "UniMatch"):
        network["conf_thresh"] = args.conf_thresh
    class_name = "SupervisedOnly" if method == REFERENCE else method
    config["model"] = {"class_path": f"corrmatch.methods.{class_name}", "init_args": network}
    config["seed_everything"] = seed
    data = config["data"]
    data["root"] = str(ROOT / data["root"])
    splits = Path(data["root"]) / "splits"
    labeled = (splits / "labeled.txt").read_text().splitlines(keepends=True)
    if method == REFERENCE:
        labeled += (splits / "unlabeled.txt").read_text().splitlines(keepends=True)
    elif args.num_labeled is not None:
        if not data["batch_size"] <= args.num_labeled <= len(labeled):
            raise SystemExit(f"--num-labeled must be in [{data['batch_size']}, {len(labeled)}]")
        labeled = labeled[: args.num_labeled]
    if method == REFERENCE or args.num_labeled is not None:
        split = run_dir / ("all_labeled.txt" if method == REFERENCE else "labeled.txt")
        split.write_text("".join(labeled))
        data["labeled_split"] = str(split)
    # an epoch is one pass over the labeled list (SupervisedOnly) or the unlabeled list (the others)
    if class_name == "SupervisedOnly":
        per_epoch = len(labeled) // data["batch_size"]
    else:
        per_epoch = len((splits / "unlabeled.txt").read_text().splitlines()) // data["batch_size"]
    epochs = -(-args.steps // per_epoch)
    config["trainer"].update(
        max_epochs=epochs,
        limit_train_batches=args.steps // epochs,
        check_val_every_n_epoch=epochs,
        default_root_dir=str(run_dir),
        logger=False,
    )
    return config


def train(method: str, seed: int, config: dict) -> float:
    """Trains one method with one seed from its :func:`run_config` and returns its last validation
    mIoU (percent)."""
    run_dir = Path(config["trainer"]["default_root_dir"])
    config_path = run_dir / "benchmark.yaml"
    config_text = yaml.safe_dump(config)
    log = run_dir / "output.log"
    if config_path.is_file() and config_path.read_text() == config_text and log.is_file():
        values = MIOU.findall(log.read_text())
        if values:  # runs are deterministic: an identical finished run is not repeated
            print(
                f"{method:<15} seed {seed}: mIoU {float(values[-1]):6.2f}  (earlier run, {log})", flush=True
            )
            return float(values[-1])
    config_path.write_text(config_text)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # an unfinished or outdated run of ours
    command = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(config_path)]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    log.write_text(result.stdout + result.stderr)
    values = MIOU.findall(result.stdout + result.stderr)
    if result.returncode != 0 or not values:
        raise RuntimeError(f"{method} seed {seed} failed, see {run_dir / 'output.log'}")
    print(
        f"{method:<15} seed {seed}: mIoU {float(values[-1]):6.2f}  ({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    return float(values[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS + (REFERENCE,))
    parser.add_argument("--steps", type=int, default=1000, help="training iterations of every run")
    parser.add_argument(
        "--num-labeled",
        type=int,
        default=None,
        help="train on the first N images of the demo's labeled list (default: all 20)",
    )
    parser.add_argument("--conf-thresh", type=float, default=0.95, help="FixMatch/UniMatch threshold")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ssl_gain")
    args = parser.parse_args()
    ensure_demo(ROOT / "data" / "demo")
    print(f"budget: {args.steps} iterations per run, seeds {args.seeds}", flush=True)
    configs = {}  # every run's config first, so that a bad option stops before any training
    for method in args.methods:
        for seed in args.seeds:
            run_dir = args.out / f"{method}-seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            configs[method, seed] = run_config(method, seed, args, run_dir)
    results = {
        method: [train(method, seed, configs[method, seed]) for seed in args.seeds] for method in args.methods
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
