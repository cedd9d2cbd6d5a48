"""The student networks: DeepLabV3+ (DESIGN.md §1) and DINOv2 with the DPT head (§7)."""

from corrmatch.models.deeplabv3plus import DeepLabV3Plus, pixel_propagation, region_masks, region_rows
from corrmatch.models.dpt import DPT, complementary_dropout_mask
from corrmatch.models.network import NetworkConfig

__all__ = [
    "DPT",
    "DeepLabV3Plus",
    "NetworkConfig",
    "complementary_dropout_mask",
    "pixel_propagation",
    "region_masks",
    "region_rows",
]
