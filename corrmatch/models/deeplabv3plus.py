"""The student network of DESIGN.md §1: an smp/timm encoder, a DeepLabV3+ decoder and the
correlation branch of CorrMatch.

Composition follows smp: ``encoder`` → ``decoder`` → ``classifier``, plus ``correlation``.
The ``"paper"`` decoder reproduces the authors' layout exactly (so their checkpoints load, see
:mod:`corrmatch.compat`); the ``"smp"`` decoder is smp's stock DeepLabV3+ decoder.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder
from torch import nn

from corrmatch.checkpoints import match_state_dict, read_weights
from corrmatch.errors import ConfigError, first_line

__all__ = ["DeepLabV3Plus", "network_outputs", "pixel_propagation", "region_masks", "region_rows", "resize"]

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".safetensors")

LOW_LEVEL = 2  # index of the stride-4 feature (ResNet layer1, "c1") in an smp encoder's outputs


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True``, the only resize the official network uses."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1
) -> nn.Sequential:
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ASPPPooling(nn.Module):
    """Image-pooling branch: global average pool → 1×1 conv → BN → ReLU → resize back."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.gap = nn.Sequential(nn.AdaptiveAvgPool2d(1), *conv_bn_relu(in_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize(self.gap(x), x.shape[-2:])


class ASPP(nn.Module):
    """ASPP of the official head (§1): 1×1, three dilated 3×3, image pooling; concat → 1×1."""

    def __init__(self, in_channels: int, out_channels: int, atrous_rates: Sequence[int]) -> None:
        super().__init__()
        rate1, rate2, rate3 = atrous_rates
        self.b0 = conv_bn_relu(in_channels, out_channels)
        self.b1 = conv_bn_relu(in_channels, out_channels, 3, rate1)
        self.b2 = conv_bn_relu(in_channels, out_channels, 3, rate2)
        self.b3 = conv_bn_relu(in_channels, out_channels, 3, rate3)
        self.b4 = ASPPPooling(in_channels, out_channels)
        self.project = conv_bn_relu(5 * out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.b0, self.b1, self.b2, self.b3, self.b4)
        return self.project(torch.cat([branch(x) for branch in branches], dim=1))


class PaperDecoder(nn.Module):
    """The official DeepLabV3+ decoder (§1): ASPP on c4, 48-channel c1 reduction, two fuse convs."""

    def __init__(
        self, low_channels: int, high_channels: int, out_channels: int, atrous_rates: Sequence[int]
    ) -> None:
        super().__init__()
        self.aspp = ASPP(high_channels, out_channels, atrous_rates)
        self.reduce = conv_bn_relu(low_channels, 48)
        self.fuse = nn.Sequential(
            *conv_bn_relu(out_channels + 48, out_channels, 3), *conv_bn_relu(out_channels, out_channels, 3)
        )

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        high = resize(self.aspp(high), low.shape[-2:])
        return self.fuse(torch.cat([self.reduce(low), high], dim=1))


class SmpDecoder(nn.Module):
    """smp's stock DeepLabV3+ decoder, with its upsampling replaced by a resize to c1's size so that
    any input size works (smp's fixed ×4 upsampling needs sizes divisible by the output stride)."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        out_channels: int,
        atrous_rates: Sequence[int],
        output_stride: int,
    ) -> None:
        super().__init__()
        decoder = DeepLabV3PlusDecoder(
            encoder_channels=encoder_channels,
            encoder_depth=5,
            out_channels=out_channels,
            atrous_rates=tuple(atrous_rates),
            output_stride=output_stride,
            aspp_separable=True,
            aspp_dropout=0.5,
        )
        self.aspp, self.block1, self.block2 = decoder.aspp, decoder.block1, decoder.block2

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        high = resize(self.aspp(high), low.shape[-2:])
        return self.block2(torch.cat([high, self.block1(low)], dim=1))


class CorrelationBranch(nn.Module):
    """Correlation branch of §1: ``proj`` on the clean c4, two 1×1 convs and the softmaxed
    correlation matrix ``A`` (B, N, N) on the feature grid."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=True),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.1),
        )
        self.conv1 = nn.Conv2d(channels, num_classes, 1, bias=True)
        self.conv2 = nn.Conv2d(channels, num_classes, 1, bias=True)

    def forward(self, high: torch.Tensor) -> torch.Tensor:
        features = self.proj(high)
        f1 = self.conv1(features).flatten(2)
        f2 = self.conv2(features).flatten(2)
        scores = torch.matmul(f1.transpose(1, 2), f2) / math.sqrt(f1.shape[1])
        return scores.softmax(dim=-1)


def pixel_propagation(out: torch.Tensor, corr: torch.Tensor, feature_size: Sequence[int]) -> torch.Tensor:
    """Pixel propagation (§1): detached logits, resized to the feature grid, propagated by ``corr``
    and resized back to the logits' size. Gradients reach only the correlation branch."""
    h, w = feature_size
    logits = resize(out.detach(), (h, w)).flatten(2)
    propagated = torch.matmul(logits, corr.to(logits.dtype)).unflatten(2, (h, w))
    return resize(propagated, out.shape[-2:])


def network_outputs(
    logits: torch.Tensor, perturb: bool, branch: nn.Module | None, high: torch.Tensor
) -> dict:
    """The forward result of either network: ``out`` (and ``out_fp``, the second half of ``logits``,
    when ``perturb``); with a correlation ``branch`` run on the clean feature ``high``, also ``corr``,
    ``feature_size`` and ``corr_out`` (pixel propagation of ``out``)."""
    result = {}
    if perturb:
        result["out"], result["out_fp"] = logits.chunk(2)
    else:
        result["out"] = logits
    if branch is not None:
        corr = branch(high)
        feature_size = tuple(high.shape[-2:])
        result["corr"] = corr
        result["feature_size"] = feature_size
        result["corr_out"] = pixel_propagation(result["out"], corr, feature_size)
    return result


def region_rows(num_rows: int, num_samples: int) -> torch.Tensor:
    """The ``num_samples`` row indices of the region masks (§1), drawn uniformly from {0, …, N−2} with
    torch's generator, as the official ``randint(0, N-1)``."""
    return torch.randint(0, num_rows - 1, (num_samples,))


def region_masks(
    corr: torch.Tensor,
    feature_size: Sequence[int],
    output_size: Sequence[int],
    num_samples: int = 128,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Region masks of §1: ``num_samples`` rows of ``corr`` (indices drawn from {0, …, N−2}, one set
    for the whole batch, as the official ``randint(0, N-1)``), resized to ``output_size``, min–max
    normalised per map and thresholded at 0.5. Returns a bool tensor (B, M, H, W)."""
    batch, n, _ = corr.shape
    if index is None:
        index = region_rows(n, num_samples)
    index = index.to(corr.device)
    rows = corr.detach()[:, index].reshape(batch * index.numel(), 1, *feature_size)
    maps = resize(rows, output_size).flatten(1)
    low = maps.min(dim=1, keepdim=True).values
    high = maps.max(dim=1, keepdim=True).values
    masks = (maps - low) / (high - low) > 0.5
    return masks.reshape(batch, index.numel(), *output_size)


WITHOUT_WEIGHTS = (
    "start from scratch with --model.network.encoder_weights null, "
    "or give a local .pth/.safetensors file as encoder_weights"
)


def check_hub_reachable(encoder_name: str, tag: str, timeout: float = 3.0) -> None:
    """Pretrained tags are downloaded from the Hugging Face hub: without a connection to it, fail in
    seconds instead of a minute of retries. ``HF_HUB_OFFLINE=1`` skips the check (weights from the
    local cache)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise ConfigError(
            f"network.encoder_weights {tag!r} of {encoder_name} needs a download from {url.hostname}, "
            f"which cannot be reached ({first_line(error)}); {WITHOUT_WEIGHTS} "
            "(HF_HUB_OFFLINE=1 uses weights already in the Hugging Face cache)"
        ) from None


def load_encoder_file(encoder: nn.Module, path: Path) -> None:
    """Load a local ImageNet checkpoint into an smp encoder (timm/torchvision parameter names),
    strictly (:func:`corrmatch.checkpoints.match_state_dict`); the classifier tensors (``fc.*``,
    ``head.*``, ``classifier.*``) that a features-only encoder lacks are dropped."""
    state = read_weights(path, "encoder_weights")
    state = state.get("state_dict", state.get("model", state))
    state = {k.removeprefix("module."): v for k, v in state.items()}
    target = getattr(encoder, "model", encoder)  # timm `tu-*` encoders wrap the timm model
    classifier = ("fc.", "head.", "classifier.", "last_linear.")
    target.load_state_dict(
        match_state_dict(state, target.state_dict(), f"encoder_weights {path}", skip=classifier)
    )


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ student with feature perturbation and the CorrMatch correlation branch (§1).

    Args:
        encoder_name: any smp encoder name, including timm encoders as ``tu-<name>``.
        num_classes: number of classes K.
        output_stride: 8 (the paper's) or 16.
        atrous_rates: ASPP dilations.
        encoder_weights: ``None``, an smp/timm weight tag (e.g. ``"imagenet"``), or a path to a local
            ``.pth``/``.safetensors`` file with the encoder's (timm or torchvision) parameter names.
        head: ``"paper"`` (the official layout) or ``"smp"`` (smp's stock decoder).
        correlation: build the correlation branch.
        decoder_channels: ASPP/decoder width (256 in the paper).
    """

    def __init__(
        self,
        encoder_name: str = "tu-resnet101s",
        num_classes: int = 21,
        output_stride: Literal[8, 16] = 8,
        atrous_rates: Sequence[int] = (12, 24, 36),
        encoder_weights: str | None = None,
        head: Literal["paper", "smp"] = "paper",
        correlation: bool = True,
        decoder_channels: int = 256,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ConfigError(f"network.output_stride must be 8 or 16, got {output_stride}")
        if head not in ("paper", "smp"):
            raise ConfigError(f"network.head must be 'paper' or 'smp', got {head!r}")
        weights_file = None
        if encoder_weights is not None and Path(encoder_weights).suffix in WEIGHT_FILE_SUFFIXES:
            weights_file, encoder_weights = Path(encoder_weights), None
        if encoder_weights is not None:
            check_hub_reachable(encoder_name, encoder_weights)
        try:
            self.encoder = smp.encoders.get_encoder(
                encoder_name, in_channels=3, depth=5, weights=encoder_weights, output_stride=output_stride
            )
        except (KeyError, ValueError) as error:
            raise ConfigError(f"network.encoder_name {encoder_name!r}: {first_line(error)}") from None
        except OSError as error:
            raise ConfigError(
                f"network.encoder_weights {encoder_weights!r} of {encoder_name} could not be loaded "
                f"({first_line(error)}); {WITHOUT_WEIGHTS}"
            ) from None
        if weights_file is not None:
            load_encoder_file(self.encoder, weights_file)
        channels = self.encoder.out_channels
        low_channels, high_channels = channels[LOW_LEVEL], channels[-1]
        if head == "paper":
            self.decoder: nn.Module = PaperDecoder(
                low_channels, high_channels, decoder_channels, atrous_rates
            )
        else:
            self.decoder = SmpDecoder(channels, decoder_channels, atrous_rates, output_stride)
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1, bias=True)
        self.correlation = CorrelationBranch(high_channels, num_classes) if correlation else None
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, perturb: bool = False, correlation: bool = False) -> dict:
        """Returns ``out``; ``out_fp`` when ``perturb``; ``corr_out``, ``corr`` and ``feature_size``
        when ``correlation`` (§1). The perturbation's Dropout2d(0.5) is active in eval mode too."""
        size = x.shape[-2:]
        features = self.encoder(x)
        low, high = features[LOW_LEVEL], features[-1]
        if correlation and self.correlation is None:
            raise ValueError("correlation=True needs a network built with correlation=True")
        if perturb:
            decoded = self.decoder(
                torch.cat([low, F.dropout2d(low, 0.5, training=True)]),
                torch.cat([high, F.dropout2d(high, 0.5, training=True)]),
            )
        else:
            decoded = self.decoder(low, high)
        logits = resize(self.classifier(decoded), size)
        return network_outputs(logits, perturb, self.correlation if correlation else None, high)
