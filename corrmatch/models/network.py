"""The network settings of a method's config and the network they build: DeepLabV3+ on a CNN encoder
(DESIGN.md §1) or, for a DINOv2 encoder, UniMatch V2's DPT network (§7)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal

from torch import nn

from corrmatch.errors import ConfigError
from corrmatch.models.deeplabv3plus import DeepLabV3Plus
from corrmatch.models.dpt import DINOV2_SIZES, DPT, PATCH_SIZE

__all__ = ["NetworkConfig"]

NO_WEIGHTS = ("", "None", "none", "null")


@dataclass(frozen=True)
class NetworkConfig:
    """The student network's settings, one typed group of the method's config
    (--model.network.<field> on the command line).

    Args:
        encoder_name: for DeepLabV3+ any smp encoder name, timm encoders as tu-<name> (the paper's:
            tu-resnet101s); or dinov2_small, dinov2_base, dinov2_large or dinov2_giant for the DINOv2
            ViT with UniMatch V2's DPT head (§7), whose widths and levels follow from the size (the
            four DeepLabV3+ settings below do not apply to it).
        encoder_weights: null (from scratch), a pretrained tag (imagenet for smp and timm CNNs, lvd142m
            for DINOv2; downloaded), or a local .pth, .pt or .safetensors file of the encoder (for
            DINOv2 with the original release's names, as in UniMatch V2's pretrained/ folder).
        output_stride: DeepLabV3+: 8 (CorrMatch's release) or 16 (UniMatch's).
        atrous_rates: DeepLabV3+: ASPP dilations (12, 24, 36 at stride 8; 6, 12, 18 at stride 16).
        head: DeepLabV3+: paper (the authors' decoder layout) or smp (smp's stock decoder).
        decoder_channels: DeepLabV3+: ASPP and decoder width (256 in the paper).
        lock_backbone: freeze the encoder (UniMatch V2's setting on ADE20K).
    """

    encoder_name: str = "tu-resnet101s"
    encoder_weights: str | None = None
    output_stride: Literal[8, 16] = 8
    atrous_rates: tuple[int, int, int] = (12, 24, 36)
    head: Literal["paper", "smp"] = "paper"
    decoder_channels: int = 256
    lock_backbone: bool = False

    # The fields that fix the network's tensors: a checkpoint must agree on all of them.
    SHAPE_FIELDS: ClassVar[tuple[str, ...]] = (
        "encoder_name",
        "output_stride",
        "atrous_rates",
        "head",
        "decoder_channels",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "atrous_rates", tuple(self.atrous_rates))
        if self.encoder_weights in NO_WEIGHTS:  # jsonargparse passes `--…encoder_weights null` as "None"
            object.__setattr__(self, "encoder_weights", None)

    @property
    def is_vit(self) -> bool:
        """A DINOv2 encoder with the DPT head (§7)."""
        return self.encoder_name in DINOV2_SIZES

    @property
    def min_crop_size(self) -> int:
        """The smallest input side whose feature grid has 2×2 cells: twice the output stride, or two
        patches of 14 for a DINOv2 encoder (CorrMatch's region masks sample among those cells)."""
        return 2 * (PATCH_SIZE if self.is_vit else self.output_stride)

    @classmethod
    def coerce(cls, value: NetworkConfig | Mapping[str, Any] | None) -> NetworkConfig:
        """A ``NetworkConfig`` from itself, a mapping of its fields (as checkpoints store it) or None."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"network: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def build(self, num_classes: int, correlation: bool) -> nn.Module:
        """The network with ``num_classes`` outputs, with or without the correlation branch; its
        encoder frozen with ``lock_backbone``."""
        if self.is_vit:
            net: nn.Module = DPT(self.encoder_name, num_classes, self.encoder_weights, correlation)
        else:
            settings = {key: value for key, value in self.to_dict().items() if key != "lock_backbone"}
            net = DeepLabV3Plus(num_classes=num_classes, correlation=correlation, **settings)
        if self.lock_backbone:
            net.encoder.requires_grad_(False)
        return net
