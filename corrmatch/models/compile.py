"""Regional compilation of the networks with ``torch.compile`` (``--model.init_args.compile true``).

The parts of a network whose shapes are fixed by the crop and the batch are compiled in place
(``nn.Module.compile``, so parameter names and checkpoints stay those of the eager network): a
DeepLabV3+'s encoder and decoder, and a DINOv2 network's transformer blocks one by one — a ViT's blocks
are the same code, so compiling one block compiles all of them and compile time does not grow with the
depth — and its DPT head. The correlation branch (its Dropout2d draws from torch's generator as in eager
mode), pixel propagation, the region masks, the feature perturbation's dropout and the resizing stay
eager, so every random draw of a training step is the eager one.
"""

from __future__ import annotations

import os
import shutil
from typing import Literal, get_args

import torch
from torch import nn

from corrmatch.errors import ConfigError
from corrmatch.models.dpt import DPT

__all__ = ["COMPILE_MODES", "CompileMode", "check_compile", "check_mode", "compile_network", "compiled_regions"]

CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
CXX_COMPILERS = ("c++", "g++", "clang++")


def compiled_regions(net: nn.Module) -> list[nn.Module]:
    """The submodules of ``net`` that :func:`compile_network` compiles: every transformer block and the
    DPT head of a DINOv2 network, the encoder and the decoder of a DeepLabV3+."""
    if isinstance(net, DPT):
        return [*net.encoder.vit.blocks, net.decoder]
    return [net.encoder, net.decoder]


def compile_network(net: nn.Module, mode: CompileMode = "default", backend: str = "inductor") -> nn.Module:
    """Compiles the regions of ``net`` (:func:`compiled_regions`) in place with ``torch.compile`` in
    ``mode`` (``reduce-overhead``: CUDA graphs; ``max-autotune``: also searches kernel configurations)
    by ``backend`` (inductor, torch's default; the modes are inductor's) and returns ``net``."""
    check_mode(mode, backend)
    options = {"mode": mode} if backend == "inductor" else {}
    for region in compiled_regions(net):
        region.compile(backend=backend, **options)
    return net


def check_mode(mode: str, backend: str = "inductor") -> None:
    """Raises :class:`ConfigError` for a mode that is not one of :data:`COMPILE_MODES`, a backend that
    ``torch.compiler.list_backends`` does not know, or a mode other than ``default`` for a backend
    other than inductor."""
    if mode not in COMPILE_MODES:
        raise ConfigError(f"model.compile_mode {mode!r}: one of {', '.join(COMPILE_MODES)}")
    if backend == "inductor":
        return
    backends = torch.compiler.list_backends(exclude_tags=())  # imports every backend: seconds
    if backend not in backends:
        raise ConfigError(f"model.compile_backend {backend!r}: one of {', '.join(backends)}")
    if mode != "default":
        raise ConfigError(
            f"model.compile_mode {mode} is a mode of the inductor backend, model.compile_backend is "
            f"{backend}: use compile_mode default, or compile_backend inductor"
        )


def check_compile(mode: str, device: torch.device, backend: str = "inductor") -> None:
    """Raises :class:`ConfigError` for a setup that ``torch.compile`` cannot serve, before any step:
    an unknown mode or backend, CUDA graphs (``reduce-overhead``) off a CUDA device, or inductor on the
    CPU without the C++ compiler its CPU code needs."""
    check_mode(mode, backend)
    if mode == "reduce-overhead" and device.type != "cuda":
        raise ConfigError(
            f"model.compile_mode reduce-overhead records CUDA graphs and needs a CUDA device, the run is on "
            f"{device.type}: use compile_mode default or max-autotune"
        )
    if backend == "inductor" and device.type == "cpu" and not any(
        shutil.which(name) for name in (os.environ.get("CXX", ""), *CXX_COMPILERS) if name
    ):
        raise ConfigError(
            "model.compile true on the CPU needs a C++ compiler for torch.compile (g++ or clang++ on PATH, "
            "or CXX): install one, or train without --model.init_args.compile"
        )
