"""Import of checkpoints written by the authors' code: CorrMatch / UniMatch (DeepLabV3+, DESIGN.md §1)
and UniMatch V2 (DINOv2 + DPT, §7)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from corrmatch.checkpoints import match_state_dict, read_weights
from corrmatch.errors import CheckpointError
from corrmatch.models import DPT, DeepLabV3Plus
from corrmatch.models.dpt import DINOV2_SIZES, dinov2_to_timm

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

Rule = tuple[str, "str | Callable[[re.Match[str]], str]"]

# This toolkit's DPT names → UniMatch V2's; the opposite direction is read off a network's own names.
DPT_NAMES: list[Rule] = [
    (r"^encoder\.vit\.", "backbone."),
    (r"^decoder\.projects\.", "head.projects."),
    (r"^decoder\.resize\.", "head.resize_layers."),
    (r"^decoder\.layer_rn\.(\d)\.", lambda m: f"head.scratch.layer{int(m[1]) + 1}_rn."),
    (r"^decoder\.fusion\.(\d)\.res(\d)\.", lambda m: f"head.scratch.refinenet{int(m[1]) + 1}.resConfUnit{m[2]}."),
    (r"^decoder\.fusion\.(\d)\.out_conv\.", lambda m: f"head.scratch.refinenet{int(m[1]) + 1}.out_conv."),
    (r"^decoder\.output\.", "head.scratch.output_conv.0."),
    (r"^classifier\.", "head.scratch.output_conv.2."),
]
# Never read by the authors' forward pass, so not built here: DINOv2's mask token and the lateral
# unit of the deepest fusion block, which has no lateral input.
DPT_UNUSED = ("backbone.mask_token", "head.scratch.refinenet4.resConfUnit1.")


def official_to_toolkit(key: str) -> str:
    """Maps one official DeepLabV3+ parameter name to this toolkit's name; raises for an unknown prefix."""
    for prefix, target in OFFICIAL_PREFIXES.items():
        if key.startswith(prefix):
            return target + key[len(prefix) :]
    raise CheckpointError(f"unexpected key {key!r}: not a parameter of the official DeepLabV3+")


def toolkit_to_official(name: str) -> str:
    """Maps one of this toolkit's DeepLabV3+ parameter names back to the official name."""
    for prefix, target in sorted(OFFICIAL_PREFIXES.items(), key=lambda item: -len(item[1])):
        if name.startswith(target):
            return prefix + name[len(target) :]
    raise CheckpointError(f"{name!r} has no counterpart in the official DeepLabV3+")


def dpt_toolkit_to_official(name: str) -> str:
    """Maps one of this toolkit's DPT parameter names to UniMatch V2's name (the giant's SwiGLU layers
    keep timm's ``fc1``/``fc2``, which its release calls ``w12``/``w3``); a name without counterpart
    there (CorrMatch's correlation branch) is returned as it is."""
    for pattern, replacement in DPT_NAMES:
        renamed, count = re.subn(pattern, replacement, name)
        if count:
            return renamed
    return name


def _read(
    path_or_state_dict: str | Path | Mapping[str, torch.Tensor], entry: str = "model"
) -> tuple[dict[str, torch.Tensor], str]:
    """The checkpoint's tensors without ``module.`` prefixes (the authors' training files
    ``{model, model_ema, optimizer, …}``: the ``entry`` one), and the name to report in errors."""
    if isinstance(path_or_state_dict, Mapping):
        state, source = dict(path_or_state_dict), "official checkpoint"
    else:
        state, source = read_weights(path_or_state_dict, "official_checkpoint"), str(path_or_state_dict)
    if entry in state and isinstance(state[entry], Mapping):
        state = dict(state[entry])
    elif entry != "model":
        raise CheckpointError(f"{source}: no {entry!r} entry")
    return {key.removeprefix("module."): value for key, value in state.items()}, source


def _is_dpt(state: Mapping[str, torch.Tensor]) -> bool:
    return any(key.startswith("head.scratch.") for key in state)


def official_state_dict(
    path_or_state_dict: str | Path | Mapping[str, torch.Tensor], model: nn.Module, entry: str = "model"
) -> dict[str, torch.Tensor]:
    """An official checkpoint's tensors under ``model``'s names (a :class:`DeepLabV3Plus` for
    CorrMatch/UniMatch files, a :class:`DPT` for UniMatch V2 files), checked strictly
    (:func:`corrmatch.checkpoints.match_state_dict`): every tensor must map onto a parameter or buffer
    of the same shape and every one of ``model``'s must be present; otherwise one
    :class:`CheckpointError` names the file and the first offending (official) key."""
    state, source = _read(path_or_state_dict, entry)
    if isinstance(model, DPT):
        if not _is_dpt(state):
            raise CheckpointError(f"{source}: not a UniMatch V2 (DPT) checkpoint, the network is DINOv2 + DPT")
        target = model.state_dict()
        names = {dpt_toolkit_to_official(name): name for name in target}
        return match_state_dict(
            state,
            target,
            source,
            rename=lambda key: names.get(dinov2_to_timm(key), key),
            skip=DPT_UNUSED,
            display=dpt_toolkit_to_official,
        )
    if _is_dpt(state):
        raise CheckpointError(f"{source}: a UniMatch V2 (DPT) checkpoint, the network is DeepLabV3+")
    return match_state_dict(
        state, model.state_dict(), source, rename=official_to_toolkit, display=toolkit_to_official
    )


def load_official(
    path_or_state_dict: str | Path | Mapping[str, torch.Tensor], entry: str = "model", **model_kwargs
) -> nn.Module:
    """Builds the authors' network and loads their checkpoint into it, strictly
    (:func:`official_state_dict`).

    UniMatch V2 files (DINOv2 + DPT) give a :class:`DPT` whose size is read from the embedding width;
    ``entry="model_ema"`` takes their teacher. CorrMatch / UniMatch files give a
    :class:`DeepLabV3Plus` (default encoder ``tu-resnet101s``, ``head="paper"``), with the correlation
    branch when the checkpoint has one. The class count is read from the classifier; ``model_kwargs``
    go to the network's constructor.
    """
    state, source = _read(path_or_state_dict, entry)
    model_kwargs["encoder_weights"] = None
    if _is_dpt(state):
        classifier = state.get("head.scratch.output_conv.2.weight")
        width = state.get("backbone.cls_token")
        if classifier is None or width is None:
            raise CheckpointError(f"{source}: no classifier or class token: not a complete UniMatch V2 checkpoint")
        sizes = [name for name, size in DINOV2_SIZES.items() if size.out_channels[-1] == width.shape[-1]]
        if not sizes:
            raise CheckpointError(f"{source}: no DINOv2 size has an embedding width of {width.shape[-1]}")
        name = model_kwargs.get("encoder_name")
        model: nn.Module = DPT(
            name if name in DINOV2_SIZES else sizes[0],
            model_kwargs.get("num_classes", classifier.shape[0]),
        )
    else:
        if "classifier.weight" not in state:
            raise CheckpointError(f"{source}: no 'classifier.weight': not an official DeepLabV3+ checkpoint")
        model_kwargs.setdefault("num_classes", state["classifier.weight"].shape[0])
        model_kwargs.setdefault("correlation", any(key.startswith(("corr.", "proj.")) for key in state))
        model_kwargs.setdefault("head", "paper")
        model_kwargs.pop("lock_backbone", None)
        model = DeepLabV3Plus(**model_kwargs)
    model.load_state_dict(official_state_dict(state, model))
    return model
