"""Predicting with a trained model: :class:`Segmenter` predicts whole images as ``train.py predict`` does
(DESIGN.md §4), optionally with test-time augmentation, and writes label maps, overlays and confidence
maps (:mod:`corrmatch.visualize`). It is built from what :mod:`corrmatch.inference.loading` reads, and
saved, loaded and shared in the Hugging Face layout through ``huggingface_hub``'s
:class:`~huggingface_hub.ModelHubMixin` (:mod:`corrmatch.inference.hub`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import ModelHubMixin
from PIL import Image
from torch import Tensor

from corrmatch import __version__
from corrmatch.data.datasets import PredictDataset
from corrmatch.data.io import read_image
from corrmatch.data.transforms import normalize
from corrmatch.errors import ConfigError, DataError
from corrmatch.evaluation import WindowPlacement, predict_mode, segment_probabilities
from corrmatch.inference.hub import (
    CARD_TEMPLATE,
    card_values,
    loading_errors,
    upload_errors,
    weights_file,
    write_pretrained,
)
from corrmatch.inference.loading import (
    TrainedModel,
    check_no_settings,
    check_window_placement,
    is_pretrained_folder,
    load_checkpoint,
    load_pretrained,
    method_window_placement,
)
from corrmatch.metadata import InferenceInfo
from corrmatch.models import DPT, DeepLabV3Plus, NetworkConfig, region_masks, region_rows
from corrmatch.pseudo import region_propagation
from corrmatch.visualize import write_prediction

__all__ = ["Segmenter", "image_files"]

ImageInput = str | os.PathLike | Image.Image | np.ndarray | Tensor


def image_files(source: str | os.PathLike) -> Iterator[tuple[str, str, np.ndarray]]:
    """``(name, output id, uint8 image)`` of an image file (both: its file name) or of every image under
    a folder (names: relative paths, sorted; output ids: the file names unless two images share one,
    as ``train.py predict --data.predict_dir`` writes them)."""
    path = Path(source)
    if path.is_dir():
        dataset = PredictDataset.from_directory(path)
        for name, output_id in zip(dataset.images, dataset.ids):
            yield name, output_id, read_image(path / name)
    elif path.is_file():
        yield path.name, path.name, read_image(path)
    else:
        raise DataError(f"no such image file or folder: {path}")


class Segmenter(
    ModelHubMixin,
    library_name="corrmatch",
    pipeline_tag="image-segmentation",
    tags=["semantic-segmentation", "semi-supervised"],
    model_card_template=CARD_TEMPLATE,
):
    """A trained network that predicts class maps of whole images (DESIGN.md §4): one pass, or the
    sliding window of the training crop when a side exceeds it, exactly as ``train.py predict``.

    Build it with :meth:`from_checkpoint` or :meth:`from_pretrained`; :meth:`save_pretrained` and
    :meth:`push_to_hub` are ``huggingface_hub``'s (:class:`~huggingface_hub.ModelHubMixin`).

    Args:
        net: the network; put in eval mode on ``device``.
        network: its settings (for ``config.json``).
        info: class names, palette and normalisation.
        crop_size: the training crop, the sliding window's size.
        method: the method that trained it, if known.
        window_placement: whose release places the sliding windows (corrmatch.evaluation.window_grid);
            None: that of method (UniMatchV2's for UniMatch V2, CorrMatch's otherwise).
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
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net = net.eval().to(self.device)
        self.info, self.crop_size = info, int(crop_size)
        self.network = replace(network, encoder_weights=None)
        self.method, self.val_miou = method, val_miou
        placement = check_window_placement(window_placement, "Segmenter")
        self.window_placement = placement or method_window_placement(method)
        self.bf16, self.tta_scales, self.tta_flip = bf16, tta_scales, tta_flip

    @classmethod
    def _of(cls, model: TrainedModel, **options: Any) -> Segmenter:
        return cls(
            model.net,
            model.network,
            model.info,
            model.crop_size,
            method=model.method,
            val_miou=model.val_miou,
            **{"window_placement": model.window_placement, **options},
        )

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

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
        ``last.ckpt``), a :meth:`save_pretrained` folder, or a checkpoint of the authors' code
        (:mod:`corrmatch.inference.loading`). ``network`` (default: the paper's, :class:`NetworkConfig`)
        and ``crop_size`` (default 321) describe an authors' checkpoint, which records neither.
        ``kwargs`` are :class:`Segmenter`'s (``bf16``, ``tta_scales``, ``tta_flip``). Files are read
        with ``weights_only=True``; anything else is a one-line :class:`CheckpointError` naming the path."""
        path = Path(path)
        if is_pretrained_folder(path):
            check_no_settings(path, network, crop_size)
            return cls.from_pretrained(path, device, **kwargs)
        return cls._of(load_checkpoint(path, network, crop_size), device=device, **kwargs)

    @classmethod
    def from_pretrained(
        cls, dir_or_repo_id: str | os.PathLike, device: str | torch.device | None = None, **kwargs: Any
    ) -> Segmenter:
        """Loads a :meth:`save_pretrained` folder, or a Hugging Face Hub repository holding one, through
        :meth:`huggingface_hub.ModelHubMixin.from_pretrained` (its ``revision``, ``token``,
        ``cache_dir``, ``force_download`` and ``local_files_only``); other ``kwargs`` are
        :class:`Segmenter`'s. A failure, a Hub that cannot be reached included, is one
        :class:`CheckpointError` line."""
        source = str(dir_or_repo_id)
        with loading_errors(source):
            return super().from_pretrained(source, device=device, **kwargs)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: Mapping[str, Any] | None = None,
        network: Any = None,
        crop_size: Any = None,
        method: Any = None,
        val_miou: Any = None,
        **options: Any,
    ) -> Segmenter:
        """:class:`~huggingface_hub.ModelHubMixin`'s loading step: the model of ``config`` (the
        ``config.json`` the mixin read) and of ``model.safetensors``, the folder's or downloaded. The
        mixin also passes the ``config.json`` entries named like :meth:`__init__`'s parameters
        (``network``, ``crop_size``, ``method``, ``val_miou``); they are read from ``config`` instead."""
        weights = weights_file(
            model_id,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        return cls._of(load_pretrained(config, weights, model_id), **options)

    def _save_pretrained(self, save_directory: Path) -> None:
        """:class:`~huggingface_hub.ModelHubMixin`'s saving step: ``model.safetensors`` (every tensor of
        the network), ``config.json`` (:meth:`config`) and the ``README.md`` model card."""
        config = self.config()
        write_pretrained(save_directory, self.net, config, self.generate_model_card(**card_values(config)))

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Creates the Hub repository ``repo_id`` if needed and uploads :meth:`save_pretrained`'s files
        (:meth:`huggingface_hub.ModelHubMixin.push_to_hub`: ``private``, ``token``, ``commit_message``,
        ``branch``, …); returns the commit's URL. A failure, a Hub that cannot be reached included, is
        one :class:`CheckpointError` line."""
        with upload_errors(repo_id):
            return super().push_to_hub(repo_id, **kwargs)

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

    def _predictions(
        self, source: str | os.PathLike
    ) -> Iterator[tuple[str, str, np.ndarray, Tensor, Tensor]]:
        """``(name, output id, image, labels (H, W), probabilities (K, H, W))``, on the device, of each
        of :func:`image_files`."""
        for name, output_id, image in image_files(source):
            pred, probs = self._segment(self.preprocess(image))
            yield name, output_id, image, pred[0], probs[0]

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
            for name, _, _, pred, probs in self._predictions(x):
                labels[name] = pred.cpu()
                if return_probs:
                    probabilities[name] = probs.cpu()
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
        for _, name, image, pred, probs in self._predictions(source):
            write_prediction(
                output_dir,
                name,
                pred.cpu().numpy(),
                palette,
                image=image if overlay else None,
                confidence=probs.amax(dim=0).cpu().numpy() if confidence else None,
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

    @torch.inference_mode()
    def pseudo_label(
        self,
        image: ImageInput,
        threshold: float,
        num_region_samples: int = 128,
        rows: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """CorrMatch's pseudo-label of one image, computed as training does for the weak view
        (DESIGN.md §2 steps 4, 8 and 9) from one pass over the whole image, without a CutMix box or
        ignored pixels: the confident pixels (confidence ≥ ``threshold``, the dynamic τ), then region
        propagation over ``num_region_samples`` region masks (their correlation rows ``rows``, drawn
        by corrmatch.models.region_rows from torch's generator unless given).

        Returns (H, W) tensors on the CPU: ``label`` (the argmax), ``confidence`` (the highest class
        probability), ``confident`` (bool), ``target`` (the label after propagation) and
        ``propagated`` (bool, the pixels region propagation added to the confident ones)."""
        if self.net.correlation is None:
            raise ConfigError("pseudo_label needs a network with the correlation branch (CorrMatch)")
        batch = self.preprocess(image)[:1].to(self.device)
        with self._autocast():
            result = self.net(batch, correlation=True)
        logits, corr = result["out"].float(), result["corr"].float()
        h, w = result["feature_size"]
        if rows is None:
            rows = region_rows(h * w, num_region_samples)
        regions = region_masks(corr, (h, w), batch.shape[-2:], index=rows)
        confidence, label = logits.softmax(dim=1).amax(dim=1), logits.argmax(dim=1)
        tau = torch.tensor(threshold, dtype=torch.float32)
        confident = confidence >= tau.to(confidence.device)
        target, used = region_propagation(label, confident, regions, tau)
        outputs = {
            "label": label,
            "confidence": confidence,
            "confident": confident,
            "target": target,
            "propagated": used & ~confident,
        }
        return {key: value[0].cpu() for key, value in outputs.items()}
