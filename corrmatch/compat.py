"""Import of checkpoints written by the authors' code (CorrMatch / UniMatch, DESIGN.md §1)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from corrmatch.checkpoints import match_state_dict, read_weights
from corrmatch.errors import CheckpointError
from corrmatch.models import DeepLabV3Plus

__all__ = [
    "OFFICIAL_PREFIXES",
    "CheckpointError",
    "load_official",
    "official_state_dict",
    "official_to_toolkit",
    "toolkit_to_official",
]

OFFICIAL_PREFIXES = {
    "backbone.": "encoder.model.",
    "head.": "decoder.aspp.",
    "reduce.": "decoder.reduce.",
    "fuse.": "decoder.fuse.",
    "classifier.": "classifier.",
    "proj.": "correlation.proj.",
    "corr.": "correlation.",
}


def official_to_toolkit(key: str) -> str:
    """Maps one official parameter name to this toolkit's name; raises for an unknown prefix."""
    for prefix, target in OFFICIAL_PREFIXES.items():
        if key.startswith(prefix):
            return target + key[len(prefix) :]
    raise CheckpointError(f"unexpected key {key!r}: not a parameter of the official DeepLabV3+")


def toolkit_to_official(name: str) -> str:
    """Maps one of this toolkit's parameter names back to the official name (longest prefix first)."""
    for prefix, target in sorted(OFFICIAL_PREFIXES.items(), key=lambda item: -len(item[1])):
        if name.startswith(target):
            return prefix + name[len(target) :]
    raise CheckpointError(f"{name!r} has no counterpart in the official DeepLabV3+")


def _read(path_or_state_dict: str | Path | Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """The checkpoint's tensors without ``module.`` prefixes (UniMatch's later ``{model, optimizer, …}``
    files: the ``model`` entry), and the name to report in errors."""
    if isinstance(path_or_state_dict, Mapping):
        state, source = dict(path_or_state_dict), "official checkpoint"
    else:
        state, source = read_weights(path_or_state_dict, "official_checkpoint"), str(path_or_state_dict)
    if "model" in state and isinstance(state["model"], Mapping):
        state = dict(state["model"])
    return {key.removeprefix("module."): value for key, value in state.items()}, source


def official_state_dict(
    path_or_state_dict: str | Path | Mapping[str, torch.Tensor], model: DeepLabV3Plus
) -> dict[str, torch.Tensor]:
    """An official checkpoint's tensors under ``model``'s names, checked strictly
    (:func:`corrmatch.checkpoints.match_state_dict`): every tensor must map onto a parameter or buffer
    of the same shape and every one of ``model``'s must be present; otherwise one
    :class:`CheckpointError` names the file and the first offending (official) key."""
    state, source = _read(path_or_state_dict)
    return match_state_dict(
        state, model.state_dict(), source, rename=official_to_toolkit, display=toolkit_to_official
    )


def load_official(
    path_or_state_dict: str | Path | Mapping[str, torch.Tensor], **model_kwargs
) -> DeepLabV3Plus:
    """Builds the paper network and loads an official checkpoint into it, strictly
    (:func:`official_state_dict`).

    The class count is read from ``classifier.weight``; the correlation branch is built when the
    checkpoint has one. ``model_kwargs`` go to :class:`DeepLabV3Plus` (default encoder
    ``tu-resnet101s``, ``head="paper"``).
    """
    state, source = _read(path_or_state_dict)
    if "classifier.weight" not in state:
        raise CheckpointError(f"{source}: no 'classifier.weight': not an official DeepLabV3+ checkpoint")
    model_kwargs.setdefault("num_classes", state["classifier.weight"].shape[0])
    model_kwargs.setdefault("correlation", any(key.startswith(("corr.", "proj.")) for key in state))
    model_kwargs.setdefault("head", "paper")
    model_kwargs["encoder_weights"] = None
    model = DeepLabV3Plus(**model_kwargs)
    model.load_state_dict(official_state_dict(state, model))
    return model
