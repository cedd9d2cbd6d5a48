"""The dynamic confidence threshold τ of CorrMatch (DESIGN.md §2 step 7)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from corrmatch.constants import IGNORE_INDEX

__all__ = ["DynamicThreshold"]


class DynamicThreshold(nn.Module):
    """Exponential moving average of the per-class peak confidence (DESIGN.md §2 steps 7 and 12).

    The statistic of one step: among the non-ignored pixels of the predictions of *all* processes, take
    for every predicted class (argmax of the logits) the largest softmax confidence, and average these
    maxima over the classes predicted at least once. Then ``τ ← m·τ + (1 − m)·statistic``; τ stays as it
    is when every pixel is ignored.

    Across processes the per-class maxima are combined with one ``all_reduce(MAX)`` of a K-vector, which
    gives exactly the maxima of the gathered batch at a fraction of the traffic of gathering logits; every
    process therefore holds the same τ. Inputs that were already gathered give the same result.

    ``update`` never reads a value back to the host, so it does not stall an accelerator. τ is a buffer:
    it follows ``.to(device)`` and is part of ``state_dict()``.

    Args:
        init: initial τ.
        momentum: weight ``m`` of the previous τ.
    """

    value: Tensor

    def __init__(self, init: float = 0.85, momentum: float = 0.999) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("value", torch.tensor(init, dtype=torch.float32))

    @torch.no_grad()
    def update(self, logits: Tensor, ignore: Tensor) -> Tensor:
        """Updates τ from logits (B, K, H, W) and their ignore mask (B, H, W; 255 = ignored); returns τ."""
        logits = logits.detach().float()
        predicted = logits.argmax(1).flatten()
        confidence = logits.softmax(1).amax(1).flatten()
        valid = (ignore != IGNORE_INDEX).flatten().to(logits.device)
        peak = torch.full((logits.shape[1],), -torch.inf, device=logits.device)
        peak.scatter_reduce_(0, predicted, torch.where(valid, confidence, -torch.inf), "amax")
        peak = _all_reduce_max(peak)
        predicted_once = peak > -torch.inf
        statistic = torch.where(predicted_once, peak, 0.0).sum() / predicted_once.sum()
        value = self.value
        updated = self.momentum * value + (1 - self.momentum) * statistic.to(value.device)
        value.copy_(torch.where(predicted_once.any().to(value.device), updated, value))
        return value

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> DynamicThreshold:
        """Moves τ like any buffer but keeps it float32 when the module is cast (e.g. ``bf16-true``
        precision): a bf16 τ could not follow steps of ``1 − m = 0.001``."""
        value = self.value
        super()._apply(fn, recurse)
        if self.value.dtype != torch.float32:
            self.value = value.to(self.value.device)
        return self

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}"


def _all_reduce_max(tensor: Tensor) -> Tensor:
    """Element-wise maximum over all processes (identity without an initialised process group).

    Gloo reduces CPU tensors and NCCL CUDA tensors; the tensor travels to the backend's device and back.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    backend = dist.get_backend()
    if backend == dist.Backend.GLOO:
        device = torch.device("cpu")
    elif backend == dist.Backend.NCCL:
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = tensor.device
    shared = tensor.to(device)
    dist.all_reduce(shared, op=dist.ReduceOp.MAX)
    return shared.to(tensor.device)
