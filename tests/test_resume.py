"""Checkpoints: atomic writes, an exact resume after SIGKILL, a resumable checkpoint on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import HANG_GUARD, REPO, run_train, tiny_config

from corrmatch.callbacks import AtomicCheckpointIO

# Three steps and one validation image per epoch, a checkpoint file per epoch for the test to watch.
TRAINER = {"limit_train_batches": 3, "limit_val_batches": 1}
PER_EPOCH = ["--checkpoint.save_top_k=-1"]


def test_a_failed_write_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "weight": torch.ones(3)}, path)

    def write_half_then_fail(obj: Any, file: Any, *args: Any, **kwargs: Any) -> None:
        file.write(b"the first bytes of a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"global_step": 2, "weight": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def train_command(processes: int) -> list[str]:
    """``python train.py``, or ``torchrun --nproc_per_node N train.py`` for several CPU processes."""
    if processes == 1:
        return [sys.executable, str(REPO / "train.py")]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), str(REPO / "train.py")]


def start_train(*args: str, processes: int = 1) -> subprocess.Popen[str]:
    """``train.py`` started in a process group of its own, so that a kill reaches every process it starts."""
    return subprocess.Popen(
        [*train_command(processes), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,
    )


def finish_train(*args: str, processes: int = 1) -> None:
    """A ``train.py`` run to its end: the CLI's ``main`` in this process for one process, else torchrun."""
    if processes == 1:
        from corrmatch.cli import main  # noqa: PLC0415

        main(list(args))
        return
    result = subprocess.run(
        [*train_command(processes), *args], cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD
    )
    assert result.returncode == 0, result.stderr[-3000:]


def wait_for(condition: Any, process: subprocess.Popen[str], timeout: float = HANG_GUARD) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def epoch_done(checkpoints: Path, epoch: int) -> bool:
    """The per-epoch file of ``epoch`` exists and ``last.ckpt`` was replaced after it."""
    done = list(checkpoints.glob(f"best-epoch={epoch:03d}-*.ckpt"))
    last = checkpoints / "last.ckpt"
    return bool(done) and last.is_file() and last.stat().st_mtime_ns >= done[0].stat().st_mtime_ns


@pytest.mark.parametrize("processes", [1, 2], ids=["one_process", "ddp_two_processes"])
def test_killed_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(
    processes: int, tiny_root: Path, tmp_path: Path
) -> None:
    """SIGKILL to the run (with two processes: to torchrun and both ranks, as a lost node) after its
    first epoch's checkpoint; ``--ckpt_path last`` on as many processes finishes it bit for bit."""
    trainer = {**TRAINER, "max_epochs": 3, "devices": processes}
    straight = tiny_config(tmp_path / "straight.yaml", tiny_root, tmp_path / "straight", trainer=trainer)
    killed = tiny_config(tmp_path / "killed.yaml", tiny_root, tmp_path / "killed", trainer=trainer)
    checkpoints = tmp_path / "killed" / "checkpoints"

    process = start_train("fit", "--config", str(killed), *PER_EPOCH, processes=processes)
    wait_for(lambda: epoch_done(checkpoints, 0), process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    interrupted = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert 0 <= interrupted["epoch"] < 2
    assert len(interrupted["rng_states"]) == processes

    finish_train("fit", "--config", str(straight), *PER_EPOCH, processes=processes)
    finish_train("fit", "--config", str(killed), "--ckpt_path=last", *PER_EPOCH, processes=processes)
    expected = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=False)
    resumed = torch.load(checkpoints / "last.ckpt", weights_only=False)

    steps = {1: 3, 2: 2}[processes]  # per epoch: 3 (limit_train_batches), or a rank's 4 unlabeled images in 2
    assert (
        (resumed["epoch"], resumed["global_step"]) == (expected["epoch"], expected["global_step"]) == (2, 3 * steps)
    )
    assert resumed["state_dict"].keys() == expected["state_dict"].keys()
    assert "threshold.value" in expected["state_dict"]
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
    optimizer, expected_optimizer = resumed["optimizer_states"][0], expected["optimizer_states"][0]
    assert [g["lr"] for g in optimizer["param_groups"]] == [
        g["lr"] for g in expected_optimizer["param_groups"]
    ]
    for index, state in expected_optimizer["state"].items():
        assert torch.equal(optimizer["state"][index]["momentum_buffer"], state["momentum_buffer"])


def test_sigterm_saves_a_resumable_checkpoint(tiny_root: Path, tmp_path: Path) -> None:
    config = tiny_config(
        tmp_path / "tiny.yaml", tiny_root, tmp_path / "run", trainer={**TRAINER, "max_epochs": 100}
    )
    checkpoints = tmp_path / "run" / "checkpoints"
    process = start_train("fit", "--config", str(config), *PER_EPOCH)
    wait_for(lambda: epoch_done(checkpoints, 0), process)
    before = (checkpoints / "last.ckpt").stat().st_mtime_ns
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=HANG_GUARD)[0]
    assert "SIGTERM: saved a resumable checkpoint" in output, output[-3000:]
    # Written again at the signal: after the next batch, or at the end of epoch 0 when the signal
    # lands before epoch 1 starts (then at the same step as the epoch-0 checkpoint).
    assert (checkpoints / "last.ckpt").stat().st_mtime_ns > before
    saved = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert saved["global_step"] >= 3

    result = run_train(
        "fit", "--config", str(config), "--ckpt_path=last", f"--trainer.max_epochs={saved['epoch'] + 2}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] > saved["global_step"]


def test_last_checkpoint_follows_every_validation_not_only_the_best(tiny_root: Path, tmp_path: Path) -> None:
    """The best checkpoint stays at epoch 0 (its monitor never improves); ``last.ckpt`` still holds
    the final epoch, so ``--ckpt_path last`` resumes the whole run."""
    from corrmatch.cli import main  # noqa: PLC0415

    config = tiny_config(tmp_path / "tiny.yaml", tiny_root, tmp_path / "run", trainer={**TRAINER, "max_epochs": 3})
    main(["fit", "--config", str(config), "--checkpoint.monitor=epoch", "--checkpoint.mode=min"])
    checkpoints = tmp_path / "run" / "checkpoints"
    assert [p.name.split("-miou=")[0] for p in checkpoints.glob("best-*.ckpt")] == ["best-epoch=000"]
    last = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 9)


def test_how_often_a_run_validates_leaves_its_training_unchanged(tiny_root: Path, tmp_path: Path) -> None:
    """CorrMatch draws its region rows and dropout masks from torch's global generator; validating after
    every epoch must not shift those draws, so the weights equal a run validated only at the end."""
    from corrmatch.cli import main  # noqa: PLC0415

    weights = {}
    for every in (1, 2):
        run_dir = tmp_path / f"every{every}"
        trainer = {**TRAINER, "max_epochs": 2, "check_val_every_n_epoch": every}
        config = tiny_config(tmp_path / f"{every}.yaml", tiny_root, run_dir, trainer=trainer)
        main(["fit", "--config", str(config)])
        weights[every] = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert weights[1]["global_step"] == weights[2]["global_step"] == 6
    for name, tensor in weights[2]["state_dict"].items():
        assert torch.equal(weights[1]["state_dict"][name], tensor), name
