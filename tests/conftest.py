"""Shared test helpers: offline W&B, a tiny generated dataset, tiny run configs, and a reader of the
records W&B writes in offline mode."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import yaml
from google.protobuf.message import DecodeError

os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"

REPO = Path(__file__).resolve().parents[1]
# The longest a test waits for a process or an event: a guard against a hang, never a measure of speed,
# so generous enough for a machine whose cores are busy with other work.
HANG_GUARD = 3600.0

TINY_NETWORK: dict[str, Any] = {
    "encoder_name": "resnet18",
    "encoder_weights": None,
    "output_stride": 16,
    "atrous_rates": [1, 2, 3],
    "decoder_channels": 32,
}
TINY_MODEL: dict[str, Any] = {"network": TINY_NETWORK, "lr": 0.01, "lr_multi": 1.0}
METHOD_ARGS: dict[str, dict[str, Any]] = {
    "SupervisedOnly": {},
    "FixMatch": {"conf_thresh": 0.5},
    "UniMatch": {"conf_thresh": 0.5},
    "CorrMatch": {"num_region_samples": 8, "thresh_init": 0.5},
    "UniMatchV2": {"conf_thresh": 0.5},
}
CROP = 65
# The run's W&B logger, offline (no account, no network).
WANDB = {
    "class_path": "pytorch_lightning.loggers.WandbLogger",
    "init_args": {"project": "corrmatch", "offline": True},
}
# A Trainer of the tests without logger, checkpoints, sanity check, progress bar or summary.
QUIET_TRAINER: dict[str, Any] = {
    "num_sanity_val_steps": 0,
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}
VIT_NETWORK: dict[str, Any] = {"encoder_name": "dinov2_small", "encoder_weights": None}  # random, no download
VIT_CROP = 56  # 4 × 4 patches
VIT_MODEL: dict[str, Any] = {"network": VIT_NETWORK, "lr": 1e-4, "lr_multi": 10.0}


@pytest.fixture(scope="package")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo-layout dataset of 4 labeled, 8 unlabeled and 2 validation images of about 72×72."""
    from corrmatch.data import generate_demo

    return generate_demo(
        tmp_path_factory.mktemp("data") / "demo", num_labeled=4, num_unlabeled=8, num_val=2, size=72
    )


@pytest.fixture(scope="package")
def tiny_run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of a finished tiny CorrMatch run (``train.py fit`` through the CLI's ``main``)."""
    from corrmatch.cli import main

    tmp = tmp_path_factory.mktemp("tiny_run")
    main(["fit", "--config", str(tiny_config(tmp / "tiny.yaml", tiny_root, tmp / "run"))])
    return tmp / "run"


def tiny_config(
    path: Path,
    root: Path,
    run_dir: Path,
    method: str = "CorrMatch",
    model: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> Path:
    """Writes a complete, tiny CPU run config to ``path`` and returns it."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 1,
            "limit_train_batches": 2,
            "limit_val_batches": 2,
            "deterministic": True,
            "default_root_dir": str(run_dir),
            "num_sanity_val_steps": 0,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            **(trainer or {}),
        },
        "model": {
            "class_path": f"corrmatch.methods.{method}",
            "init_args": {**TINY_MODEL, **METHOD_ARGS[method], **(model or {})},
        },
        "data": {
            "preset": "demo",
            "root": str(root),
            "crop_size": CROP,
            "batch_size": 2,
            "num_workers": 0,
            **(data or {}),
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def run_train(*args: str, timeout: float = HANG_GUARD, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Runs ``python train.py <args>`` from the repository root and returns the finished process."""
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def wandb_records(run_file: Path) -> list[Any]:
    """The protobuf records of an offline W&B run file (``run-<id>.wandb``, LevelDB log format)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", f"{run_file} is not a W&B run file"
    block, position, chunk, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        room = block - position % block
        if room < 7:  # a block's tail too short for a header is padding
            position += room
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            break
        chunk += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST fragment
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def finished_wandb_records(run_file: Path) -> list[Any]:
    """The records of an offline W&B run once its ``exit`` record is written: W&B's service process may
    still be writing the file when ``wandb.finish`` returns on a busy machine, so wait for that event."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        try:
            records = wandb_records(run_file) if run_file.is_file() else []
        except (AssertionError, DecodeError):  # a file the service has only begun to write
            records = []
        if any(record.WhichOneof("record_type") == "exit" for record in records):
            return records
        assert time.monotonic() < deadline, f"{run_file} has no exit record"
        time.sleep(0.2)


def wandb_history(run_dir: Path) -> dict[str, list[str]]:
    """Every history key logged by the offline W&B run in ``run_dir`` with its JSON values."""
    history: dict[str, list[str]] = {}
    for record in finished_wandb_records(run_dir / f"run-{run_dir.name.rsplit('-', 1)[-1]}.wandb"):
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                history.setdefault(key, []).append(item.value_json)
    return history


class StopAfterFirstEpoch(pl.Callback):
    """A Lightning callback (given to the CLI by class path) that ends ``fit`` after its first epoch,
    as an interrupted run does, with the checkpoints of that epoch written."""

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        trainer.should_stop = True
