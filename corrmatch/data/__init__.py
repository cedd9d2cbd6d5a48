"""Data: split files, datasets, the paper's augmentations, presets, demo set, datamodule (DESIGN.md §4)."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would query PyPI on import

from corrmatch.data.checks import validate_dataset, validate_split  # noqa: E402
from corrmatch.data.datamodule import DataContract, SemiSupervisedDataModule, ShardSampler  # noqa: E402
from corrmatch.data.datasets import LabeledDataset, PredictDataset, UnlabeledDataset, ValDataset  # noqa: E402
from corrmatch.data.demo import ensure_demo, generate_demo  # noqa: E402
from corrmatch.data.io import DataError, DataWarning, SplitEntry, parse_split, read_image, read_mask  # noqa: E402
from corrmatch.data.presets import PRESETS, get_preset, load_class_file, voc_palette  # noqa: E402
from corrmatch.data.transforms import AugmentConfig, cutmix_box  # noqa: E402

__all__ = [
    "PRESETS",
    "AugmentConfig",
    "DataContract",
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


def __getattr__(name: str) -> object:
    """``make_splits`` and ``write_splits`` on first use: importing :mod:`corrmatch.data.splits` with the
    package would make ``python -m corrmatch.data.splits`` warn that the module ran after its import."""
    if name in ("make_splits", "write_splits"):
        from corrmatch.data import splits

        return getattr(splits, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
