"""Loading a trained model (DESIGN.md §4) from what wrote it: a checkpoint of ``train.py fit``, a run
directory (its best checkpoint, else ``last.ckpt``), a checkpoint of the authors' code
(:func:`corrmatch.compat.load_official`), or the files of a ``save_pretrained`` folder. Weight files are
read with ``weights_only=True``; anything unusable is a one-line :class:`CheckpointError` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, get_args

from corrmatch.checkpoints import best_checkpoint, match_state_dict, miou_in_name, read_weights
from corrmatch.compat import load_official
from corrmatch.errors import CheckpointError, ConfigError, first_line
from corrmatch.evaluation import WindowPlacement
from corrmatch.metadata import INFERENCE_KEY, InferenceInfo
from corrmatch.models import DPT, DeepLabV3Plus, NetworkConfig

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "TrainedModel",
    "checkpoint_miou",
    "is_pretrained_folder",
    "load_checkpoint",
    "load_pretrained",
    "pseudo_label_settings",
    "run_checkpoint",
]

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"  # of a save_pretrained folder
MONITOR = "val/mIoU"
# The authors' checkpoints record no crop: Pascal's (DeepLabV3+ 321, UniMatch V2 518) unless crop_size is given.
OFFICIAL_CROP = 321
OFFICIAL_CROP_DPT = 518


@dataclass(frozen=True)
class TrainedModel:
    """A trained network and what describes it: its settings, class names, palette and normalisation,
    training crop, and the method and validation mIoU (%) when known."""

    net: DeepLabV3Plus | DPT
    network: NetworkConfig
    info: InferenceInfo
    crop_size: int
    method: str | None = None
    val_miou: float | None = None
    window_placement: WindowPlacement | None = None  # None: the method's (method_window_placement)


def method_window_placement(method: str | None) -> WindowPlacement:
    """The sliding-window placement of the toolkit's method named ``method`` (its class's
    ``window_placement``, §4); CorrMatch's for None or a name that is no method of the toolkit."""
    from corrmatch import methods  # corrmatch.methods imports what this package imports

    found = getattr(methods, method, None) if method else None
    if isinstance(found, type) and issubclass(found, methods.SemiSupervisedMethod):
        return found.window_placement
    return "corrmatch"


def check_window_placement(placement: str | None, source: str) -> WindowPlacement | None:
    """``placement`` if it names one (or is None), else a one-line :class:`ConfigError`."""
    known = get_args(WindowPlacement)
    if placement is not None and placement not in known:
        raise ConfigError(f"{source}: window_placement {placement!r} is none of {', '.join(known)}")
    return placement


def run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint of a run directory (or of its ``checkpoints/`` folder): the best by validation
    mIoU (:func:`~corrmatch.checkpoints.best_checkpoint`), else ``last.ckpt``."""
    for folder in (run_dir / "checkpoints", run_dir):
        best = best_checkpoint(folder)
        if best is not None:
            return best
        if (folder / "last.ckpt").is_file():
            return folder / "last.ckpt"
    raise CheckpointError(
        f"{run_dir}: no checkpoints/best-*.ckpt or checkpoints/last.ckpt (not a run directory)"
    )


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
    return miou_in_name(path)


def is_pretrained_folder(path: Path) -> bool:
    """Whether ``path`` is a folder with a ``config.json`` (written by ``save_pretrained``)."""
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def check_no_settings(path: Path, network: Any, crop_size: int | None) -> None:
    """``network`` and ``crop_size`` describe an authors' checkpoint; a file that records its own is
    a one-line :class:`ConfigError`."""
    if network is not None or crop_size is not None:
        raise ConfigError(
            f"{path} records its network and crop: network= and crop_size= are for the authors' checkpoints"
        )


def load_checkpoint(
    path: Path, network: NetworkConfig | Mapping[str, Any] | None = None, crop_size: int | None = None
) -> TrainedModel:
    """The model of a ``train.py fit`` checkpoint, a run directory (:func:`run_checkpoint`) or an
    authors' DeepLabV3+ or UniMatch V2 checkpoint; ``network`` (default: the paper's,
    :class:`NetworkConfig`) and ``crop_size`` (default: Pascal's) describe the latter."""
    path = run_checkpoint(path) if path.is_dir() else path
    checkpoint = read_weights(path, "checkpoint")
    if "state_dict" in checkpoint:
        check_no_settings(path, network, crop_size)
        return _from_lightning(checkpoint, path)
    tensors = checkpoint["model"] if isinstance(checkpoint.get("model"), Mapping) else checkpoint
    classifiers = ("classifier.weight", "head.scratch.output_conv.2.weight")
    if not any(key.removeprefix("module.") in classifiers for key in tensors):
        raise CheckpointError(
            f"{path}: neither a checkpoint of train.py fit (no 'state_dict') nor an authors' "
            "DeepLabV3+ or UniMatch V2 checkpoint (no classifier)"
        )
    del checkpoint, tensors  # load_official reads the file again, strictly
    net = load_official(path, **NetworkConfig.coerce(network).to_dict())
    info = InferenceInfo.from_mapping(None, net.num_classes)
    if isinstance(net, DPT):  # UniMatch V2's release: its sliding window
        settings = NetworkConfig(encoder_name=net.encoder.name)
        return TrainedModel(net, settings, info, crop_size or OFFICIAL_CROP_DPT, window_placement="unimatch_v2")
    return TrainedModel(net, NetworkConfig.coerce(network), info, crop_size or OFFICIAL_CROP)


def _from_lightning(checkpoint: Mapping[str, Any], path: Path) -> TrainedModel:
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
    return TrainedModel(
        net,
        network,
        InferenceInfo.from_mapping(checkpoint.get(INFERENCE_KEY), num_classes, str(path)),
        int(hparams.get("crop_size", OFFICIAL_CROP)),
        checkpoint.get("method"),
        checkpoint_miou(checkpoint, path),
    )


def pseudo_label_settings(path: Path) -> dict[str, float | int]:
    """What CorrMatch's pseudo-labelling used at the end of a ``train.py fit`` run (a checkpoint or a run
    directory, :func:`run_checkpoint`): ``threshold`` (the dynamic τ it saved) and
    ``num_region_samples`` (the region masks per image), the keywords of
    :meth:`corrmatch.Segmenter.pseudo_label`; empty for a checkpoint of another method."""
    path = run_checkpoint(path) if path.is_dir() else path
    checkpoint = read_weights(path, "checkpoint")
    state, hparams = checkpoint.get("state_dict") or {}, checkpoint.get("hyper_parameters") or {}
    settings: dict[str, float | int] = {}
    if "threshold.value" in state:
        settings["threshold"] = float(state["threshold.value"])
    if "num_region_samples" in hparams:
        settings["num_region_samples"] = int(hparams["num_region_samples"])
    return settings


def load_pretrained(config: Mapping[str, Any] | None, weights: Path, source: str) -> TrainedModel:
    """The model of a ``save_pretrained`` folder (or Hub repository) ``source``: its ``config.json``
    content (None when it has none) and its ``model.safetensors`` file."""
    config_path = f"{source.rstrip('/')}/{CONFIG_FILE}"
    if config is None:
        raise CheckpointError(
            f"{source}: no {CONFIG_FILE}, not a folder written by Segmenter.save_pretrained"
        )
    try:
        num_classes, crop_size = int(config["num_classes"]), int(config["crop_size"])
        network = replace(NetworkConfig.coerce(config["network"]), encoder_weights=None)
        correlation = bool(config["correlation"])
        placement = check_window_placement(config.get("window_placement"), config_path)
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{config_path}: not the config.json of Segmenter.save_pretrained ({first_line(error)})"
        ) from None
    net = network.build(num_classes, correlation=correlation)
    net.load_state_dict(match_state_dict(read_weights(weights, WEIGHTS_FILE), net.state_dict(), str(weights)))
    return TrainedModel(
        net,
        network,
        InferenceInfo.from_mapping(config, num_classes, config_path),
        crop_size,
        config.get("method"),
        config.get("val_miou"),
        placement,
    )
