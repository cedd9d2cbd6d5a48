"""Reading weight files safely and loading them strictly, for every kind of checkpoint the toolkit
reads: an encoder's ImageNet weights, the authors' checkpoints (:mod:`corrmatch.compat`) and the
toolkit's own Lightning checkpoints (checked by the command line before training starts)."""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from corrmatch.errors import CheckpointError, first_line

__all__ = ["best_checkpoint", "check_checkpoint_file", "match_state_dict", "miou_in_name", "read_weights"]

MIOU_IN_NAME = re.compile(r"miou=([0-9]+(?:\.[0-9]+)?)")


def miou_in_name(path: Path) -> float | None:
    """The ``miou=`` of a checkpoint file's name (``best-epoch=003-miou=71.20.ckpt``), if any."""
    found = MIOU_IN_NAME.search(path.name)
    return float(found.group(1)) if found else None


def best_checkpoint(folder: Path) -> Path | None:
    """The best checkpoint a run wrote into ``folder`` (``best-*.ckpt``, the highest ``miou=`` in its
    name, the newest among equals); None when the run has not written one."""
    best = sorted(folder.glob("best-*.ckpt"))
    if not best:
        return None
    return max(best, key=lambda path: (miou_in_name(path) or -1.0, path.stat().st_mtime))


def check_checkpoint_file(path: str | Path, what: str = "checkpoint") -> Path:
    """The path of an existing file in PyTorch's (zip) checkpoint format, else a one-line
    :class:`CheckpointError` naming it. Reads only the archive's directory, never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what}: no such file: {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"not a PyTorch checkpoint: {path}")
    return path


def read_weights(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """The content of a ``.pth``/``.pt``/``.ckpt`` (loaded with ``weights_only=True``: tensors and plain
    containers, never arbitrary objects) or ``.safetensors`` file, as a dict."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"{what}: no such file: {path}")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except SafetensorError as error:
            raise CheckpointError(f"not a safetensors file: {path} ({error})") from None
    check_checkpoint_file(path, what)
    try:  # memory-mapped: a large checkpoint costs little when only a few entries are read
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(
            f"not a plain PyTorch checkpoint of tensors: {path} ({first_line(error)})"
        ) from None
    if not isinstance(content, Mapping):
        raise CheckpointError(f"{path}: holds a {type(content).__name__}, not a dict of tensors")
    return dict(content)


def match_state_dict(
    state: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    source: str,
    rename: Callable[[str], str] = str,
    skip: tuple[str, ...] = (),
    display: Callable[[str], str] = str,
) -> dict[str, Tensor]:
    """``state``'s tensors under ``target``'s names, checked strictly.

    Every tensor of ``state`` (except keys starting with one of ``skip``) must map through ``rename``
    onto a tensor of ``target`` with the same shape, and every tensor of ``target`` must be given;
    otherwise one :class:`CheckpointError` names ``source`` and the first offending key (a missing
    key written as ``display`` gives it, e.g. in the checkpoint's own naming)."""
    matched = {}
    for key, value in state.items():
        if key.startswith(skip) and key not in target:
            continue
        name = rename(key)
        if name not in target:
            raise CheckpointError(f"{source}: unexpected key {key!r}: the network has no {name!r}")
        if target[name].shape != value.shape:
            raise CheckpointError(
                f"{source}: key {key!r} has shape {tuple(value.shape)}, "
                f"the network expects {tuple(target[name].shape)}"
            )
        matched[name] = value
    missing = [name for name in target if name not in matched]
    if missing:
        raise CheckpointError(
            f"{source}: missing key {display(missing[0])!r} ({len(missing)} tensors missing)"
        )
    return matched
