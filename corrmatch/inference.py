"""Using a trained model: :class:`Segmenter` predicts whole images as ``train.py predict`` does
(DESIGN.md §4), optionally with test-time augmentation, writes overlays and confidence maps, and saves
or loads the model in the Hugging Face layout (``model.safetensors``, ``config.json``, ``README.md``).

It loads a checkpoint of ``train.py fit``, a run directory (its best checkpoint, else ``last.ckpt``), a
``save_pretrained`` folder or Hub repository, or a checkpoint of the authors' code
(:func:`corrmatch.compat.load_official`). What a prediction needs besides the weights, the class names,
palette and normalisation (:class:`InferenceInfo`), is stored in the toolkit's checkpoints under
``"inference"``; checkpoints without it get the defaults: ``class_<k>`` names, the VOC palette, ImageNet
statistics.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from corrmatch import __version__
from corrmatch.checkpoints import match_state_dict, read_weights
from corrmatch.compat import load_official
from corrmatch.constants import IMAGENET_MEAN, IMAGENET_STD
from corrmatch.data.datasets import PredictDataset
from corrmatch.data.io import read_image
from corrmatch.data.presets import voc_palette
from corrmatch.data.transforms import normalize
from corrmatch.errors import CheckpointError, ConfigError, DataError, first_line
from corrmatch.evaluation import WindowPlacement, predict_mode, segment_probabilities
from corrmatch.models import DPT, DeepLabV3Plus, NetworkConfig, region_masks
from corrmatch.visualize import write_prediction

__all__ = [
    "INFERENCE_KEY",
    "InferenceInfo",
    "Segmenter",
    "checkpoint_miou",
    "method_window_placement",
    "model_card",
    "run_checkpoint",
]

INFERENCE_KEY = "inference"  # checkpoint entry holding InferenceInfo.to_dict()
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
MONITOR = "val/mIoU"
MIOU_IN_NAME = re.compile(r"miou=([0-9]+(?:\.[0-9]+)?)")
REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
# The authors' checkpoints record no crop: Pascal's (DeepLabV3+ 321, UniMatch V2 518) unless crop_size is given.
OFFICIAL_CROP = 321
OFFICIAL_CROP_DPT = 518

ImageInput = str | os.PathLike | Image.Image | np.ndarray | Tensor


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


def run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint of a run directory (or of its ``checkpoints/`` folder): the best by validation
    mIoU (``best-*.ckpt``), else ``last.ckpt``."""
    for folder in (run_dir / "checkpoints", run_dir):
        best = sorted(folder.glob("best-*.ckpt"))
        if best:
            return max(best, key=lambda path: (_miou_in_name(path) or -1.0, path.stat().st_mtime))
        if (folder / "last.ckpt").is_file():
            return folder / "last.ckpt"
    raise CheckpointError(
        f"{run_dir}: no checkpoints/best-*.ckpt or checkpoints/last.ckpt (not a run directory)"
    )


def _miou_in_name(path: Path) -> float | None:
    found = MIOU_IN_NAME.search(path.name)
    return float(found.group(1)) if found else None


def checkpoint_miou(checkpoint: Mapping[str, Any], path: Path) -> float | None:
    """The validation mIoU (%) of a ``train.py fit`` checkpoint: the score its ``val/mIoU``
    ModelCheckpoint recorded for it, else the ``miou=`` of its file name, else None."""
    for state in (checkpoint.get("callbacks") or {}).values():
        if (
            isinstance(state, Mapping)
            and state.get("monitor") == MONITOR
            and state.get("current_score") is not None
        ):
            return round(float(state["current_score"]), 4)
    return _miou_in_name(path)


def method_window_placement(method: str | None) -> WindowPlacement:
    """The sliding-window placement of the toolkit's method named ``method`` (its class's
    ``window_placement``, §4); CorrMatch's for None or a name that is no method of the toolkit."""
    from corrmatch import methods  # corrmatch.methods imports this module

    found = getattr(methods, method, None) if method else None
    if isinstance(found, type) and issubclass(found, methods.SemiSupervisedMethod):
        return found.window_placement
    return "corrmatch"


def _download(repo_id: str, revision: str | None) -> Path:
    """A Hub repository's ``config.json``, ``model.safetensors`` and card, through the local cache."""
    if not REPO_ID.match(repo_id):
        raise CheckpointError(f"no such folder: {repo_id}")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id, revision=revision, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, CARD_FILE]
        )
    except Exception as error:  # any failure (network, missing repository) ends in one line
        raise CheckpointError(
            f"{repo_id}: no such folder, and no Hugging Face Hub model ({type(error).__name__}: "
            f"{first_line(error)})"
        ) from None
    return Path(folder)


def model_card(config: Mapping[str, Any]) -> str:
    """The ``README.md`` of a ``save_pretrained`` folder, from its ``config.json`` content."""
    network = config["network"]
    miou = config.get("val_miou")
    classes = "\n".join(
        f"| {index} | {name} | `{tuple(colour)}` |"
        for index, (name, colour) in enumerate(zip(config["class_names"], config["palette"]))
    )
    return f"""---
library_name: corrmatch
pipeline_tag: image-segmentation
tags:
- semantic-segmentation
- semi-supervised
---

# {config.get("method") or "DeepLabV3+"} semantic segmentation model

A DeepLabV3+ network trained with the `corrmatch` toolkit (method: {config.get("method") or "unknown"}).

- encoder `{network["encoder_name"]}`, output stride {network["output_stride"]}, ASPP rates
  {tuple(network["atrous_rates"])}, {network["head"]} decoder head of width {network["decoder_channels"]}
- {config["num_classes"]} classes, training crop {config["crop_size"]}
- validation mIoU: {"unknown" if miou is None else f"{miou:.2f} %"}
- input: RGB, `(x/255 − mean)/std` with mean {tuple(config["mean"])} and std {tuple(config["std"])}

## Use

```python
from corrmatch import Segmenter

model = Segmenter.from_pretrained("<this folder or repository>")
labels = model.predict("image.jpg")  # class index per pixel, at the image's size
```

## Classes

| index | name | colour |
|---|---|---|
{classes}
"""


class Segmenter:
    """A trained network that predicts class maps of whole images (DESIGN.md §4): one pass, or the
    sliding window of the training crop when a side exceeds it, exactly as ``train.py predict``
    (the windows placed as the training method's release places them).

    Build it with :meth:`from_checkpoint` or :meth:`from_pretrained`.

    Args:
        net: the network; put in eval mode on ``device``.
        network: its settings (for ``config.json``).
        info: class names, palette and normalisation.
        crop_size: the training crop, the sliding window's size.
        method: the method that trained it, if known.
        window_placement: whose release places the sliding windows
            (:func:`corrmatch.evaluation.window_grid`); None: the placement of ``method``
            (:func:`method_window_placement`).
        val_miou: its validation mIoU (%), if known.
        device: where the network runs; ``"cuda"`` when available, else ``"cpu"``, by default.
        bf16: run the network under bfloat16 autocast.
        tta_scales, tta_flip: test-time augmentation, off by default
            (:func:`corrmatch.evaluation.segment_probabilities`).
    """

    def __init__(
        self,
        net: DeepLabV3Plus | DPT,
        network: NetworkConfig,
        info: InferenceInfo,
        crop_size: int,
        *,
        method: str | None = None,
        window_placement: WindowPlacement | None = None,
        val_miou: float | None = None,
        device: str | torch.device | None = None,
        bf16: bool = False,
        tta_scales: Sequence[float] | None = None,
        tta_flip: bool = False,
    ) -> None:
        if tta_scales is not None and (not tta_scales or min(tta_scales) <= 0):
            raise ConfigError(f"tta_scales must be positive numbers, got {tta_scales}")
        known = get_args(WindowPlacement)
        if window_placement is not None and window_placement not in known:
            raise ConfigError(f"window_placement {window_placement!r}: the placements are {', '.join(known)}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net = net.eval().to(self.device)
        self.info, self.crop_size = info, int(crop_size)
        self.network = replace(network, encoder_weights=None)
        self.method, self.val_miou = method, val_miou
        self.window_placement = window_placement or method_window_placement(method)
        self.bf16, self.tta_scales, self.tta_flip = bf16, tta_scales, tta_flip

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device | None = None,
        *,
        network: NetworkConfig | Mapping[str, Any] | None = None,
        crop_size: int | None = None,
        **kwargs: Any,
    ) -> Segmenter:
        """Loads a checkpoint of ``train.py fit``, a run directory (its best checkpoint, else
        ``last.ckpt``: :func:`run_checkpoint`), a :meth:`save_pretrained` folder, or a checkpoint of the
        authors' code. ``network`` (default: the paper's, :class:`NetworkConfig`) and ``crop_size``
        (default 321) describe an authors' checkpoint, which records neither; an authors' UniMatch V2
        checkpoint predicts with UniMatch V2's sliding window. ``kwargs`` are :class:`Segmenter`'s
        (``bf16``, ``tta_scales``, ``tta_flip``, ``window_placement``). Files are read with
        ``weights_only=True``; anything else is a one-line :class:`CheckpointError` naming the path."""
        path = Path(path)
        own_settings = ConfigError(
            f"{path} records its network and crop: network= and crop_size= are for the authors' checkpoints"
        )
        if path.is_dir() and (path / CONFIG_FILE).is_file():
            if network is not None or crop_size is not None:
                raise own_settings
            return cls.from_pretrained(path, device, **kwargs)
        path = run_checkpoint(path) if path.is_dir() else path
        checkpoint = read_weights(path, "checkpoint")
        if "state_dict" in checkpoint:
            if network is not None or crop_size is not None:
                raise own_settings
            return cls._from_lightning(checkpoint, path, device, **kwargs)
        tensors = checkpoint["model"] if isinstance(checkpoint.get("model"), Mapping) else checkpoint
        classifiers = ("classifier.weight", "head.scratch.output_conv.2.weight")
        if not any(key.removeprefix("module.") in classifiers for key in tensors):
            raise CheckpointError(
                f"{path}: neither a checkpoint of train.py fit (no 'state_dict') nor an authors' "
                "DeepLabV3+ or UniMatch V2 checkpoint (no classifier)"
            )
        del checkpoint, tensors  # load_official reads the file again, strictly
        net = load_official(path, **NetworkConfig.coerce(network).to_dict())
        if isinstance(net, DPT):
            settings, crop = NetworkConfig(encoder_name=net.encoder.name), crop_size or OFFICIAL_CROP_DPT
            kwargs.setdefault("window_placement", "unimatch_v2")
        else:
            settings, crop = NetworkConfig.coerce(network), crop_size or OFFICIAL_CROP
        info = InferenceInfo.from_mapping(None, net.num_classes)
        return cls(net, settings, info, crop, device=device, **kwargs)

    @classmethod
    def _from_lightning(
        cls, checkpoint: Mapping[str, Any], path: Path, device: str | torch.device | None, **kwargs: Any
    ) -> Segmenter:
        hparams = checkpoint.get("hyper_parameters") or {}
        if "num_classes" not in hparams or not isinstance(checkpoint["state_dict"], Mapping):
            raise CheckpointError(
                f"{path}: no 'hyper_parameters' with 'num_classes': not written by train.py fit"
            )
        num_classes = int(hparams["num_classes"])
        network = replace(NetworkConfig.coerce(hparams.get("network")), encoder_weights=None)
        state = {key[4:]: value for key, value in checkpoint["state_dict"].items() if key.startswith("net.")}
        net = network.build(num_classes, correlation=any(key.startswith("correlation.") for key in state))
        net.load_state_dict(match_state_dict(state, net.state_dict(), str(path)))
        return cls(
            net,
            network,
            InferenceInfo.from_mapping(checkpoint.get(INFERENCE_KEY), num_classes, str(path)),
            int(hparams.get("crop_size", OFFICIAL_CROP)),
            method=checkpoint.get("method"),
            val_miou=checkpoint_miou(checkpoint, path),
            device=device,
            **kwargs,
        )

    @classmethod
    def from_pretrained(
        cls,
        dir_or_repo_id: str | os.PathLike,
        device: str | torch.device | None = None,
        *,
        revision: str | None = None,
        **kwargs: Any,
    ) -> Segmenter:
        """Loads a :meth:`save_pretrained` folder, or a Hugging Face Hub repository holding one
        (``huggingface_hub.snapshot_download``, at ``revision``). ``kwargs`` are :class:`Segmenter`'s."""
        folder = Path(dir_or_repo_id)
        if not folder.is_dir():
            folder = _download(str(dir_or_repo_id), revision)
        config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            num_classes, crop_size = int(config["num_classes"]), int(config["crop_size"])
            network = replace(NetworkConfig.coerce(config["network"]), encoder_weights=None)
            correlation = bool(config["correlation"])
            placement, known = config.get("window_placement"), get_args(WindowPlacement)
            if placement is not None and placement not in known:
                raise ValueError(f"window_placement {placement!r} is none of {', '.join(known)}")
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"{config_path}: not the config.json of Segmenter.save_pretrained ({first_line(error)})"
            ) from None
        net = network.build(num_classes, correlation=correlation)
        state = read_weights(weights_path, WEIGHTS_FILE)
        net.load_state_dict(match_state_dict(state, net.state_dict(), str(weights_path)))
        kwargs.setdefault("window_placement", placement)
        return cls(
            net,
            network,
            InferenceInfo.from_mapping(config, num_classes, str(config_path)),
            crop_size,
            method=config.get("method"),
            val_miou=config.get("val_miou"),
            device=device,
            **kwargs,
        )

    def config(self) -> dict[str, Any]:
        """The content of ``config.json``: network settings, classes, palette, normalisation, crop,
        method, sliding-window placement and validation mIoU."""
        return {
            "corrmatch_version": __version__,
            "method": self.method,
            "network": {**self.network.to_dict(), "atrous_rates": list(self.network.atrous_rates)},
            "correlation": self.net.correlation is not None,
            "num_classes": self.num_classes,
            **self.info.to_dict(),
            "crop_size": self.crop_size,
            "window_placement": self.window_placement,
            "val_miou": self.val_miou,
        }

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Writes ``model.safetensors`` (every tensor of the network), ``config.json`` (:meth:`config`)
        and a ``README.md`` model card into ``directory``; :meth:`from_pretrained` loads it."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {key: value.detach().cpu().contiguous() for key, value in self.net.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
        config = self.config()
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (directory / CARD_FILE).write_text(model_card(config), encoding="utf-8")
        return directory

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload corrmatch model",
    ) -> str:
        """Creates the Hub repository ``repo_id`` if needed and uploads :meth:`save_pretrained`'s files;
        returns the commit's URL."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
        return commit.commit_url

    # ------------------------------------------------------------------ prediction

    def preprocess(self, image: ImageInput) -> Tensor:
        """The normalised float32 batch (B, 3, H, W) the network sees (on the CPU), ``(x/255 − mean)/std``
        as in training: of an image file, a PIL image, a uint8 array (H, W, 3), or a uint8 tensor
        (3, H, W) or (B, 3, H, W). A floating-point tensor is taken as normalised already."""
        if isinstance(image, Tensor):
            if image.dim() not in (3, 4) or image.shape[-3] != 3:
                raise DataError(
                    f"expected an image tensor (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}"
                )
            batch = image if image.dim() == 4 else image[None]
            if batch.is_floating_point():
                return batch.float().cpu()
            if batch.dtype != torch.uint8:
                raise DataError(f"expected a uint8 or floating-point image tensor, got {batch.dtype}")
            return torch.cat([self.preprocess(item.permute(1, 2, 0).cpu().numpy()) for item in batch])
        if isinstance(image, Image.Image):
            array = np.asarray(image.convert("RGB"))
        elif isinstance(image, np.ndarray):
            array = image
        elif isinstance(image, str | os.PathLike):
            if not Path(image).is_file():
                raise DataError(f"no such image file: {image}")
            array = read_image(image)
        else:
            raise DataError(
                f"cannot read a {type(image).__name__} as an image: give a path, a folder, a PIL image, "
                "a uint8 array (H, W, 3) or a tensor"
            )
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise DataError(f"expected a uint8 array (H, W, 3), got {array.dtype} {array.shape}")
        return normalize(np.ascontiguousarray(array), self.info.mean, self.info.std)[None]

    def _autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @torch.inference_mode()
    def logits(self, batch: Tensor) -> Tensor:
        """Logits (B, K, H, W) of the clean forward of a normalised batch: what the exported graph
        computes (:mod:`corrmatch.export`)."""
        with self._autocast():
            return self.net(batch.to(self.device))["out"]

    @torch.inference_mode()
    def _segment(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """Labels (B, H, W) and probabilities (B, K, H, W) of a normalised batch, on the device."""
        mode = predict_mode(*batch.shape[-2:], self.crop_size)
        return segment_probabilities(
            self.logits,
            batch.to(self.device),
            mode,
            self.crop_size,
            self.tta_scales,
            self.tta_flip,
            self.window_placement,
        )

    def _files(self, source: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
        """``(id, uint8 image)`` of an image file (id: its name) or of every image under a folder (ids:
        relative paths, sorted, as ``train.py predict --data.predict_dir`` reads them)."""
        path = Path(source)
        if path.is_dir():
            for name in PredictDataset.from_directory(path).images:
                yield name, read_image(path / name)
        elif path.is_file():
            yield path.name, read_image(path)
        else:
            raise DataError(f"no such image file or folder: {path}")

    def predict(
        self, x: ImageInput, return_probs: bool = False
    ) -> Tensor | dict[str, Tensor] | tuple[Tensor | dict[str, Tensor], Tensor | dict[str, Tensor]]:
        """Class maps at the input's size, on the CPU: int64 (H, W) for one image (a path, a PIL image,
        an array, a (3, H, W) tensor), (B, H, W) for a (B, 3, H, W) tensor, and a dict from relative
        path to (H, W) map for a folder. Inputs are read as :meth:`preprocess` describes.

        With ``return_probs``, returns ``(labels, probs)``, the probabilities float32 (K, H, W) per image
        (averaged over the test-time views when TTA is on)."""
        if isinstance(x, str | os.PathLike) and Path(x).is_dir():
            labels, probabilities = {}, {}
            for name, image in self._files(x):
                pred, probs = self._segment(self.preprocess(image))
                labels[name] = pred[0].cpu()
                if return_probs:
                    probabilities[name] = probs[0].cpu()
            return (labels, probabilities) if return_probs else labels
        pred, probs = self._segment(self.preprocess(x))
        if not (isinstance(x, Tensor) and x.dim() == 4):
            pred, probs = pred[0], probs[0]
        return (pred.cpu(), probs.cpu()) if return_probs else pred.cpu()

    def write(
        self,
        source: str | os.PathLike,
        output_dir: str | os.PathLike,
        *,
        overlay: bool = True,
        confidence: bool = True,
        alpha: float = 0.5,
    ) -> list[str]:
        """Predicts an image file or every image under a folder and writes what ``train.py predict``
        writes (:func:`corrmatch.visualize.write_prediction`): ``labels/`` and ``color/``, and
        ``overlay/`` (the image blended with the palette colours) and ``confidence/`` (the highest
        class probability, 0–255) unless turned off. Returns the image ids written."""
        palette, written = self.info.palette_array(), []
        for name, image in self._files(source):
            pred, probs = self._segment(self.preprocess(image))
            write_prediction(
                output_dir,
                name,
                pred[0].cpu().numpy(),
                palette,
                image=image if overlay else None,
                confidence=probs[0].amax(dim=0).cpu().numpy() if confidence else None,
                alpha=alpha,
            )
            written.append(name)
        return written

    @torch.inference_mode()
    def correlation_region(self, image: ImageInput, y: int, x: int) -> Tensor:
        """CorrMatch's region of pixel (y, x) (§1, region masks): the correlation row of the pixel's
        feature-grid cell, resized to the image, min–max rescaled and thresholded at 0.5; bool (H, W),
        from one pass over the whole image. Needs a network with the correlation branch."""
        if self.net.correlation is None:
            raise ConfigError("correlation_region needs a network with the correlation branch (CorrMatch)")
        batch = self.preprocess(image)[:1]
        height, width = batch.shape[-2:]
        if not (0 <= y < height and 0 <= x < width):
            raise ConfigError(f"pixel ({y}, {x}) is outside the {height}×{width} image")
        with self._autocast():
            result = self.net(batch.to(self.device), correlation=True)
        h, w = result["feature_size"]
        cell = round(y * (h - 1) / max(height - 1, 1)) * w + round(x * (w - 1) / max(width - 1, 1))
        masks = region_masks(result["corr"].float(), (h, w), (height, width), index=torch.tensor([cell]))
        return masks[0, 0].cpu()
