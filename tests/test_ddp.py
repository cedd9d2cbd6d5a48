"""DDP with two CPU processes (gloo): a CorrMatch fit runs, validates and checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import run_train, tiny_config


def test_ddp_fit_on_two_cpu_processes(tiny_root: Path, tmp_path: Path) -> None:
    trainer = {"strategy": "ddp", "devices": 2, "limit_train_batches": 2, "limit_val_batches": 1}
    config = tiny_config(tmp_path / "ddp.yaml", tiny_root, tmp_path / "run", trainer=trainer)
    result = run_train("fit", "--config", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("val mIoU = ") == 1  # printed by rank 0 only
    assert result.stdout.count("fit finished in ") == 1
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 2
    assert len(checkpoint["rng_states"]) == 2  # one generator state per process
