"""The student network (DESIGN.md §1)."""

from corrmatch.models.deeplabv3plus import DeepLabV3Plus, NetworkConfig, pixel_propagation, region_masks

__all__ = ["DeepLabV3Plus", "NetworkConfig", "pixel_propagation", "region_masks"]
