"""Data: split files, datasets, the paper's augmentations, presets, demo set, datamodule (DESIGN.md §4).

Names are imported lazily, so ``python -m corrmatch.data.splits`` starts without loading torch.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would query PyPI on import

_EXPORTS = {
    "validate_dataset": "checks",
    "validate_split": "checks",
    "SemiSupervisedDataModule": "datamodule",
    "ShardSampler": "datamodule",
    "LabeledDataset": "datasets",
    "PredictDataset": "datasets",
    "UnlabeledDataset": "datasets",
    "ValDataset": "datasets",
    "ensure_demo": "demo",
    "generate_demo": "demo",
    "DataError": "io",
    "DataWarning": "io",
    "SplitEntry": "io",
    "parse_split": "io",
    "read_image": "io",
    "read_mask": "io",
    "PRESETS": "presets",
    "get_preset": "presets",
    "load_class_file": "presets",
    "voc_palette": "presets",
    "make_splits": "splits",
    "write_splits": "splits",
    "AugmentConfig": "transforms",
    "cutmix_box": "transforms",
}

__all__ = [
    "PRESETS",
    "AugmentConfig",
    "DataError",
    "DataWarning",
    "LabeledDataset",
    "PredictDataset",
    "SemiSupervisedDataModule",
    "ShardSampler",
    "SplitEntry",
    "UnlabeledDataset",
    "ValDataset",
    "cutmix_box",
    "ensure_demo",
    "generate_demo",
    "get_preset",
    "load_class_file",
    "make_splits",
    "parse_split",
    "read_image",
    "read_mask",
    "validate_dataset",
    "validate_split",
    "voc_palette",
    "write_splits",
]

if TYPE_CHECKING:
    from corrmatch.data.checks import validate_dataset, validate_split
    from corrmatch.data.datamodule import SemiSupervisedDataModule, ShardSampler
    from corrmatch.data.datasets import LabeledDataset, PredictDataset, UnlabeledDataset, ValDataset
    from corrmatch.data.demo import ensure_demo, generate_demo
    from corrmatch.data.io import DataError, DataWarning, SplitEntry, parse_split, read_image, read_mask
    from corrmatch.data.presets import PRESETS, get_preset, load_class_file, voc_palette
    from corrmatch.data.splits import make_splits, write_splits
    from corrmatch.data.transforms import AugmentConfig, cutmix_box


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'corrmatch.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"corrmatch.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
