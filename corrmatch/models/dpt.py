"""The UniMatch V2 network (docs/DESIGN.md §7): a DINOv2 ViT from timm with the DPT head.

Composition as for :class:`~corrmatch.models.DeepLabV3Plus`: ``encoder`` (the ViT, returning the
patch tokens of four blocks as maps) → ``decoder`` (the DPT head up to its last ReLU) →
``classifier`` (its final 1×1 convolution), plus CorrMatch's ``correlation`` branch on the patch
features of the deepest of the four blocks. The forward pass has the same keywords and outputs as
DeepLabV3+'s, so every method trains either network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from corrmatch.checkpoints import match_state_dict, read_weights
from corrmatch.errors import ConfigError, first_line
from corrmatch.models.deeplabv3plus import (
    WEIGHT_FILE_SUFFIXES,
    WITHOUT_WEIGHTS,
    CorrelationBranch,
    check_hub_reachable,
    network_outputs,
    resize,
)

__all__ = [
    "DINOV2_SIZES",
    "DPT",
    "PATCH_SIZE",
    "DinoV2Encoder",
    "DinoV2Size",
    "complementary_dropout_mask",
    "dinov2_position_embedding",
    "dinov2_to_timm",
    "nearest_multiple",
]

PATCH_SIZE = 14
PRETRAINED_SIZE = 518  # DINOv2's position embeddings are a 37 × 37 grid


@dataclass(frozen=True)
class DinoV2Size:
    """One encoder size as UniMatch V2 builds it: the timm model, the four blocks whose tokens the
    head reads, and the head's widths (``out_channels`` per level, ``features`` after fusion)."""

    timm_name: str
    layers: tuple[int, int, int, int]
    out_channels: tuple[int, int, int, int]
    features: int


DINOV2_SIZES: dict[str, DinoV2Size] = {
    "dinov2_small": DinoV2Size("vit_small_patch14_dinov2", (2, 5, 8, 11), (48, 96, 192, 384), 64),
    "dinov2_base": DinoV2Size("vit_base_patch14_dinov2", (2, 5, 8, 11), (96, 192, 384, 768), 128),
    "dinov2_large": DinoV2Size("vit_large_patch14_dinov2", (4, 11, 17, 23), (256, 512, 1024, 1024), 256),
    "dinov2_giant": DinoV2Size("vit_giant_patch14_dinov2", (9, 19, 29, 39), (1536, 1536, 1536, 1536), 384),
}


def nearest_multiple(size: int, multiple: int = PATCH_SIZE) -> int:
    """The multiple of ``multiple`` nearest to ``size`` (halves round up), as the authors' evaluation
    rounds each side: ``int(size / multiple + 0.5) * multiple``, at least one patch."""
    return max(int(size / multiple + 0.5), 1) * multiple


def dinov2_position_embedding(pos_embed: Tensor, height: int, width: int, offset: float = 0.1) -> Tensor:
    """Position embeddings (1, 1 + h·w, C) for a ``height × width`` patch grid, as DINOv2 computes
    them: the square grid is resized bicubically by the scale factors ``(h + offset) / side`` and
    ``(w + offset) / side`` (no antialiasing); the class token's embedding is kept. The pretrained
    grid itself is returned for a square grid of the pretrained side."""
    side, height, width = math.isqrt(pos_embed.shape[1] - 1), int(height), int(width)  # ints when traced too
    if height == side and width == side:
        return pos_embed
    grid = pos_embed[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    scale = ((height + offset) / side, (width + offset) / side)
    grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    if tuple(grid.shape[-2:]) != (height, width):
        raise ValueError(f"position embedding resized to {tuple(grid.shape[-2:])}, not {(height, width)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, height * width, -1)
    return torch.cat((pos_embed[:, :1].float(), grid), dim=1)


def dinov2_to_timm(key: str) -> str:
    """One parameter name of the original DINOv2 release (UniMatch V2's ``pretrained/dinov2_*.pth``)
    under timm's name: the giant's SwiGLU ``w12``/``w3`` are timm's ``fc1``/``fc2``."""
    return key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")


class DinoV2Encoder(nn.Module):
    """A DINOv2 ViT (timm, scaled-dot-product attention) returning, for an input whose sides are
    multiples of 14, the patch tokens of the four blocks of :attr:`DinoV2Size.layers` after the final
    LayerNorm, as (B, C, h, w) maps (class token dropped).

    Args:
        size: a key of :data:`DINOV2_SIZES`.
        weights: None (from scratch, layer scale initialised at 1.0 as UniMatch V2 builds it), a
            local file with the original DINOv2 parameter names (UniMatch V2's ``pretrained/``
            files) or timm's names, or a timm pretrained tag (``"lvd142m"``, downloaded).
    """

    def __init__(self, size: str, weights: str | None = None) -> None:
        super().__init__()
        self.name, self.size = size, DINOV2_SIZES[size]
        weights_file = None
        if weights is not None and Path(weights).suffix in WEIGHT_FILE_SUFFIXES:
            weights_file, weights = Path(weights), None
        name = self.size.timm_name if weights is None else f"{self.size.timm_name}.{weights}"
        if weights is not None:
            tags = [known.split(".", 1)[1] for known in timm.list_pretrained(f"{self.size.timm_name}.*")]
            if weights not in tags:
                raise ConfigError(
                    f"network.encoder_weights {weights!r} of {size}: timm's tags are {', '.join(tags)}; "
                    f"or give a local .pth/.safetensors file (e.g. UniMatch V2's pretrained/{size}.pth)"
                )
            check_hub_reachable(size, weights)
        try:
            self.vit = timm.create_model(
                name,
                pretrained=weights is not None,
                img_size=PRETRAINED_SIZE,
                init_values=1.0,
                dynamic_img_size=True,
                num_classes=0,
            )
        except (RuntimeError, OSError) as error:
            raise ConfigError(
                f"network.encoder_weights {weights!r} of {size} could not be loaded ({first_line(error)}); "
                f"{WITHOUT_WEIGHTS}"
            ) from None
        if weights_file is not None:
            state = read_weights(weights_file, "encoder_weights")
            state = {dinov2_to_timm(key.removeprefix("backbone.")): value for key, value in state.items()}
            self.vit.load_state_dict(
                match_state_dict(state, self.vit.state_dict(), f"encoder_weights {weights_file}", skip=("mask_token",))
            )
        self.out_channels = self.vit.embed_dim

    def forward(self, x: Tensor) -> list[Tensor]:
        vit, (height, width) = self.vit, (x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE)
        tokens = vit.patch_embed(x).flatten(1, 2)
        tokens = torch.cat((vit.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        tokens = tokens + dinov2_position_embedding(vit.pos_embed, height, width).to(tokens.dtype)
        tokens = vit.norm_pre(vit.pos_drop(tokens))
        maps = []
        for index, block in enumerate(vit.blocks[: self.size.layers[-1] + 1]):
            tokens = block(tokens)
            if index in self.size.layers:
                patches = vit.norm(tokens)[:, 1:]
                maps.append(patches.transpose(1, 2).unflatten(2, (height, width)))
        return maps


class ResidualConvUnit(nn.Module):
    """ReLU → 3×3 conv → ReLU → 3×3 conv, plus the input (no normalisation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class FusionBlock(nn.Module):
    """RefineNet fusion: the coarser path plus a residual unit of the lateral map, a second residual
    unit, a bilinear resize (``align_corners=True``; ×2 when no size is given) and a 1×1 conv. The
    deepest block has no lateral input, hence no first unit."""

    def __init__(self, channels: int, lateral: bool = True) -> None:
        super().__init__()
        self.res1 = ResidualConvUnit(channels) if lateral else None
        self.res2 = ResidualConvUnit(channels)
        self.out_conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, lateral: Tensor | None = None, size: Sequence[int] | None = None) -> Tensor:
        if lateral is not None:
            x = x + self.res1(lateral)
        x = self.res2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = resize(x, size)
        return self.out_conv(x)


class DPTHead(nn.Module):
    """The DPT head of UniMatch V2 (from Depth Anything) up to its last ReLU: per level a 1×1
    projection, a resize (×4 and ×2 transposed convolutions, identity, a stride-2 3×3 conv) and a
    3×3 conv to ``features``; four fusion blocks from the coarsest level; a 3×3 conv and ReLU. The
    output is at 8× the patch grid."""

    def __init__(self, in_channels: int, out_channels: Sequence[int], features: int) -> None:
        super().__init__()
        c1, c2, _, c4 = out_channels
        self.projects = nn.ModuleList(nn.Conv2d(in_channels, c, 1) for c in out_channels)
        self.resize = nn.ModuleList(
            [
                nn.ConvTranspose2d(c1, c1, 4, stride=4),
                nn.ConvTranspose2d(c2, c2, 2, stride=2),
                nn.Identity(),
                nn.Conv2d(c4, c4, 3, stride=2, padding=1),
            ]
        )
        self.layer_rn = nn.ModuleList(nn.Conv2d(c, features, 3, padding=1, bias=False) for c in out_channels)
        self.fusion = nn.ModuleList(FusionBlock(features, lateral=i < 3) for i in range(4))
        self.output = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        levels = [
            rn(up(project(x)))
            for x, project, up, rn in zip(features, self.projects, self.resize, self.layer_rn)
        ]
        path = self.fusion[3](levels[3], size=levels[2].shape[-2:])
        path = self.fusion[2](path, levels[2], size=levels[1].shape[-2:])
        path = self.fusion[1](path, levels[1], size=levels[0].shape[-2:])
        path = self.fusion[0](path, levels[0])
        return F.relu(self.output(path))


def complementary_dropout_mask(
    pairs: int, channels: int, device: torch.device | str | None = None, keep_share: float = 0.5
) -> Tensor:
    """UniMatch V2's complementary channel dropout (DESIGN.md §7), a (2·pairs, C) mask for a batch
    whose two halves are paired views: the first half's mask is Bernoulli(0.5)·2, the second half's
    is 2 − that, and ``int(pairs · keep_share)`` pairs, chosen at random, keep every channel (1)."""
    first = torch.bernoulli(torch.full((pairs, channels), 0.5, device=device)) * 2.0
    second = 2.0 - first
    kept = torch.randperm(pairs, device=device)[: int(pairs * keep_share)]
    first[kept] = 1.0
    second[kept] = 1.0
    return torch.cat((first, second))


class DPT(nn.Module):
    """DINOv2 + DPT student (DESIGN.md §7) with the keywords and outputs of
    :class:`~corrmatch.models.DeepLabV3Plus`.

    Args:
        encoder_name: ``dinov2_small``, ``dinov2_base``, ``dinov2_large`` or ``dinov2_giant``.
        num_classes: number of classes K.
        encoder_weights: see :class:`DinoV2Encoder`.
        correlation: build CorrMatch's correlation branch on the deepest level's patch features.

    Inputs of any size are predicted at the nearest multiple of 14 per side (a bilinear resize,
    ``align_corners=True``) and the logits resized back, which is the authors' evaluation; training
    crops that are multiples of 14 pass unchanged, as in their training.
    """

    input_multiple = PATCH_SIZE

    def __init__(
        self,
        encoder_name: str = "dinov2_small",
        num_classes: int = 21,
        encoder_weights: str | None = None,
        correlation: bool = False,
    ) -> None:
        super().__init__()
        if encoder_name not in DINOV2_SIZES:
            raise ConfigError(f"network.encoder_name {encoder_name!r}: known DINOv2 sizes are {', '.join(DINOV2_SIZES)}")
        self.encoder = DinoV2Encoder(encoder_name, encoder_weights)
        size, channels = self.encoder.size, self.encoder.out_channels
        self.decoder = DPTHead(channels, size.out_channels, size.features)
        self.classifier = nn.Conv2d(size.features, num_classes, 1)
        self.correlation = CorrelationBranch(channels, num_classes) if correlation else None
        self.num_classes = num_classes

    def forward(
        self,
        x: Tensor,
        perturb: bool = False,
        correlation: bool = False,
        channel_mask: Tensor | None = None,
    ) -> dict:
        """Returns ``out``; ``out_fp`` when ``perturb`` (Dropout2d(0.5) on each level's patch features,
        as UniMatch's feature perturbation); ``corr_out``, ``corr`` and ``feature_size`` when
        ``correlation``. ``channel_mask`` (B, C) multiplies every level's features before the head
        (complementary dropout, :func:`complementary_dropout_mask`)."""
        if correlation and self.correlation is None:
            raise ValueError("correlation=True needs a network built with correlation=True")
        size = tuple(x.shape[-2:])
        grid = (nearest_multiple(size[0]), nearest_multiple(size[1]))
        if grid != size:
            x = resize(x, grid)
        features = self.encoder(x)
        clean_high = features[-1]
        if channel_mask is not None:
            features = [f * channel_mask[:, :, None, None].to(f.dtype) for f in features]
        if perturb:
            features = [torch.cat((f, F.dropout2d(f, 0.5, training=True))) for f in features]
        logits = resize(self.classifier(self.decoder(features)), grid)
        if grid != size:
            logits = resize(logits, size)
        return network_outputs(logits, perturb, self.correlation if correlation else None, clean_high)
