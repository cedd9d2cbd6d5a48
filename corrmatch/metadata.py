"""What a checkpoint of ``train.py fit`` carries for prediction besides the weights (DESIGN.md §4): the
class names, palette and input normalisation of :class:`InferenceInfo`, stored under :data:`INFERENCE_KEY`.
Training writes it (``SemiSupervisedMethod.on_save_checkpoint``) and its callbacks read it from the
datamodule; :class:`corrmatch.Segmenter` reads it back. Checkpoints without it get the defaults:
``class_<k>`` names, the VOC palette, ImageNet statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from corrmatch.constants import IMAGENET_MEAN, IMAGENET_STD
from corrmatch.data.presets import voc_palette
from corrmatch.errors import CheckpointError

__all__ = ["INFERENCE_KEY", "InferenceInfo"]

INFERENCE_KEY = "inference"  # checkpoint entry holding InferenceInfo.to_dict()


@dataclass(frozen=True)
class InferenceInfo:
    """What a prediction needs besides the weights: the class names, one palette colour per class and
    the input normalisation ``(x/255 − mean)/std`` (§4)."""

    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_mapping(
        cls, value: Mapping[str, Any] | None, num_classes: int, source: str = "checkpoint"
    ) -> InferenceInfo:
        """From its stored form (:meth:`to_dict`, or a ``config.json``); an entry that is missing or
        None gets its default (``class_<k>``, the VOC palette, ImageNet statistics)."""
        value = {key: item for key, item in (value or {}).items() if item is not None}
        names = tuple(
            str(name) for name in value.get("class_names", [f"class_{k}" for k in range(num_classes)])
        )
        colours = np.asarray(value.get("palette", voc_palette()[:num_classes]))
        mean, std = tuple(value.get("mean", IMAGENET_MEAN)), tuple(value.get("std", IMAGENET_STD))
        if len(names) != num_classes or colours.shape != (num_classes, 3):
            raise CheckpointError(
                f"{source}: {len(names)} class names and {len(colours)} palette colours "
                f"for a network of {num_classes} classes"
            )
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise CheckpointError(f"{source}: normalisation needs 3 means and 3 positive stds")
        palette = tuple((int(r), int(g), int(b)) for r, g, b in colours)
        return cls(names, palette, tuple(map(float, mean)), tuple(map(float, std)))

    @classmethod
    def from_datamodule(cls, datamodule: Any, num_classes: int) -> InferenceInfo:
        """From a datamodule's ``class_names``, ``palette`` and ``augment.mean``/``std`` (defaults for
        what it lacks, or without one)."""
        palette, augment = getattr(datamodule, "palette", None), getattr(datamodule, "augment", None)
        return cls.from_mapping(
            {
                "class_names": getattr(datamodule, "class_names", None),
                "palette": None if palette is None else np.asarray(palette)[:num_classes],
                "mean": getattr(augment, "mean", None),
                "std": getattr(augment, "std", None),
            },
            num_classes,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (checkpoints load with ``weights_only=True``; JSON for ``config.json``)."""
        return {
            "class_names": list(self.class_names),
            "palette": [list(colour) for colour in self.palette],
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def palette_array(self) -> np.ndarray:
        """uint8 (256, 3): the classes' colours, then the VOC palette."""
        palette = voc_palette()
        palette[: len(self.palette)] = self.palette
        return palette
