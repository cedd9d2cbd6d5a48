"""A few training steps of CorrMatch or UniMatchV2 through Lightning's Trainer, on one process or on
every process of ``torchrun`` (gloo), saving what each rank computed for tests/test_ddp.py.

    python tests/ddp_probe.py METHOD ROOT OUT                          # one process
    torchrun --nproc_per_node 2 tests/ddp_probe.py METHOD ROOT OUT     # two processes

Two fits run one after the other on batches of the tiny dataset at ``ROOT``, drawn once before the
processes meet, so that every rank holds the same ones:

* ``same``: every rank trains on the same batches, its generators reseeded alike before each step (so
  the region rows and dropout masks agree with a one-process run), and saves each step's loss terms,
  τ, the gradients after DDP's reduction and the teacher;
* ``own``: rank r trains on batch r of each step with its own generators, and saves the inputs of each
  τ update with the τ that follows it, and the networks at the end.

Rank r writes ``OUT/<fit>-rank<r>.pt``. :class:`RecordDraws` is a callback for ``train.py fit`` that
saves the augmentation draws, region rows and sampler indices each rank trained on.
"""

from __future__ import annotations

import os
import sys
from itertools import islice
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from conftest import CROP, METHOD_ARGS, QUIET_TRAINER, TINY_MODEL, VIT_CROP, VIT_MODEL
from torch.utils.data import DataLoader

from corrmatch import methods
from corrmatch.data import SemiSupervisedDataModule

STEPS = {"CorrMatch": 2, "UniMatchV2": 2}
# Thresholds low enough for the random networks' pseudo-labels to reach the unlabeled losses.
THRESHOLDS = {"CorrMatch": {"thresh_init": 0.2}, "UniMatchV2": {"conf_thresh": 0.2}}
PROCESSES = 2  # the batches are drawn for this many ranks, whatever the run's world
NUM_CLASSES = 6


def build(method: str, **overrides: Any) -> tuple[pl.LightningModule, int]:
    """The method on the tiny network (CorrMatch: ResNet-18 DeepLabV3+; UniMatchV2: DINOv2-S) with the
    method's ``overrides``, and its crop."""
    torch.manual_seed(0)
    model, crop = (VIT_MODEL, VIT_CROP) if method == "UniMatchV2" else (TINY_MODEL, CROP)
    settings = {
        **model,
        **METHOD_ARGS[method],
        **THRESHOLDS[method],
        "num_classes": NUM_CLASSES,
        "crop_size": crop,
        **overrides,
    }
    module = getattr(methods, method)(**settings)
    return module, crop


def batches(method: str, root: str) -> list[dict[str, Any]]:
    """The training batches of the tiny dataset that the fits of ``method`` use, as one process reads
    them: ``STEPS × PROCESSES``, over as many epochs as that takes."""
    module, crop = build(method)
    data = SemiSupervisedDataModule(
        root=root, preset="demo", crop_size=crop, batch_size=2, num_workers=0, seed=0
    )
    data.contract = module.data_contract
    data.setup("fit")
    pl.seed_everything(0, verbose=False)  # the items' seeds come from Python's generator
    count, drawn = STEPS[method] * PROCESSES, []
    while len(drawn) < count:
        drawn += [batch for batch, _, _ in islice(data.train_dataloader(), count - len(drawn))]
    return drawn


class Recorder(pl.Callback):
    """Keeps each step's loss terms, τ, gradients (after DDP's all-reduce) and teacher; with ``reseed``,
    sets torch's generator to the same state on every rank before each step."""

    def __init__(self, reseed: bool) -> None:
        self.reseed = reseed  # the ``same`` fit, which also keeps the gradients
        self.steps: list[dict[str, Any]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        if self.reseed:
            torch.manual_seed(1000 + batch_idx)
        self.steps.append({"rng": torch.get_rng_state()})

    def on_before_optimizer_step(self, trainer: pl.Trainer, module: Any, optimizer: Any) -> None:
        if self.reseed:
            self.steps[-1]["grads"] = {
                name: p.grad.detach().clone() for name, p in module.named_parameters() if p.grad is not None
            }

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = self.steps[-1]
        step["losses"] = {name: value.detach().clone() for name, value in outputs.items()}
        if hasattr(module, "threshold"):
            step["tau"] = module.threshold.value.clone()
        if hasattr(module, "teacher"):
            step["teacher"] = {name: t.detach().clone() for name, t in module.teacher.state_dict().items()}


def fit(method: str, drawn: list[dict[str, Any]], fit_name: str, out: Path, **overrides: Any) -> Path:
    """One fit (``same`` or ``own``, see the module's docstring) of the method with ``overrides`` on the
    batches ``drawn`` by :func:`batches`; writes and returns ``OUT/<fit>-rank<r>.pt``."""
    module, _ = build(method, **overrides)
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    steps = STEPS[method]
    own = drawn[rank::PROCESSES][:steps] if fit_name == "own" else drawn[:steps]
    updates: list[tuple[torch.Tensor, ...]] = []
    if hasattr(module, "threshold"):
        update = module.threshold.update

        def recorded_update(logits: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
            before = module.threshold.value.clone()
            tau = update(logits, ignore)
            updates.append((logits.detach().clone(), ignore.clone(), before, tau.clone()))
            return tau

        module.threshold.update = recorded_update
    recorder = Recorder(reseed=fit_name == "same")
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=world,
        strategy="ddp" if world > 1 else "auto",
        max_steps=steps,
        limit_val_batches=0,
        use_distributed_sampler=False,
        deterministic=True,
        callbacks=[recorder],
        **QUIET_TRAINER,
    )
    trainer.fit(module, train_dataloaders=DataLoader(own, batch_size=None))  # one batch an item
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{fit_name}-rank{rank}.pt"
    torch.save(
        {
            "steps": recorder.steps,
            "tau_updates": updates,
            "net": module.net.state_dict(),
            "params": {name: p.detach().clone() for name, p in module.net.named_parameters()},
            "teacher": module.teacher.state_dict() if hasattr(module, "teacher") else None,
        },
        path,
    )
    return path


class RecordDraws(pl.Callback):
    """For ``train.py fit``: saves, per rank, the epoch's labeled and unlabeled indices, the training
    batches (crops, strong views, CutMix boxes), the region rows and torch's generator state before
    each step into ``<out>/draws-rank<r>.pt``.

    Args:
        out: the folder of the files.
    """

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.record: dict[str, Any] = {"indices": {}, "batches": [], "rows": [], "rng": []}

    def on_fit_start(self, trainer: pl.Trainer, module: Any) -> None:
        draw = module.region_rows

        def recorded_rows(num_rows: int, num_samples: int) -> torch.Tensor:
            rows = draw(num_rows, num_samples)
            self.record["rows"].append(rows.clone())
            return rows

        module.region_rows = recorded_rows

    def on_train_epoch_start(self, trainer: pl.Trainer, module: Any) -> None:
        for name, loader in trainer.train_dataloader.items():
            self.record["indices"].setdefault(name, []).append(list(loader.sampler))

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        self.record["rng"].append(torch.get_rng_state())
        self.record["batches"].append(
            {
                group: {key: value.clone() for key, value in items.items() if isinstance(value, torch.Tensor)}
                for group, items in batch.items()
            }
        )

    def on_train_end(self, trainer: pl.Trainer, module: Any) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        torch.save(self.record, self.out / f"draws-rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    method, root, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    drawn = batches(method, root)  # before the processes meet: every rank reads the same batches
    for name in ("same", "own"):
        fit(method, drawn, name, out)
