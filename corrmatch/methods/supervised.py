"""Supervised-only baseline (DESIGN.md §3): the labeled loss alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from corrmatch.data.datamodule import DataContract
from corrmatch.methods.base import SemiSupervisedMethod

__all__ = ["SupervisedOnly"]


class SupervisedOnly(SemiSupervisedMethod):
    """The supervised baseline: the labeled loss alone, on labeled batches alone; an epoch is one pass
    over the labeled list, as in UniMatch's baseline (DESIGN.md §3)."""

    data_contract = DataContract(labeled_only=True)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Tensor]:
        labeled = batch["labeled"]
        loss_x = self.supervised_loss(self.logits(labeled["image"]), labeled["mask"])
        return self.finish_step({"loss": loss_x, "loss_x": loss_x}, {}, labeled["image"].shape[0])
