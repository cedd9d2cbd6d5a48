"""Shared base of the four methods: network, optimiser and poly schedule (DESIGN.md §2 step 11),
evaluation (§4), checkpoint compatibility and random state.

Subclasses implement ``training_step`` and declare what they read from the data
(:attr:`SemiSupervisedMethod.data_contract`); the pieces several of them share (the eval-mode
prediction on the mixing batch, pasting CutMix boxes, mixing pseudo-labels, the fixed-threshold
consistency loss) live here so each ``training_step`` reads like its section of DESIGN.md.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from corrmatch.compat import official_state_dict
from corrmatch.constants import IGNORE_INDEX
from corrmatch.data.datamodule import DataContract
from corrmatch.errors import CheckpointError, ConfigError, check_range
from corrmatch.evaluation import (
    EvalMode,
    Logits,
    MeanIoU,
    WindowPlacement,
    center_crop,
    predict_mode,
    segment_probabilities,
)
from corrmatch.losses import cross_entropy, masked_cross_entropy, ohem_cross_entropy
from corrmatch.metadata import INFERENCE_KEY, InferenceInfo
from corrmatch.models import NetworkConfig
from corrmatch.models.compile import CompileMode, check_compile, check_mode, compile_network

__all__ = ["SemiSupervisedMethod", "check_compatible", "poly_factor", "pseudo_label_accuracy", "rank_seed"]

DEFAULT_NETWORK = NetworkConfig()
# Learning rates and weight decay of the two optimizers, as the authors set them: SGD for
# DeepLabV3+ (CorrMatch, UniMatch; §2 step 11), AdamW for DINOv2 + DPT (UniMatch V2, §7).
RECIPES: dict[str, dict[str, float]] = {
    "sgd": {"lr": 0.001, "lr_multi": 10.0, "weight_decay": 1e-4},
    "adamw": {"lr": 5e-6, "lr_multi": 40.0, "weight_decay": 0.01},
}
PROGRESS_BAR = ("loss", "loss_x", "loss_u_s", "tau", "pl_acc")
NUM_EXAMPLES = 4  # training images kept for the W&B pseudo-label overlays
# How a command runs the model, not what the model is: left out of the checkpoint's hyperparameters.
RUN_OPTIONS = ("tta_scales", "tta_flip", "compile", "compile_mode", "compile_backend")


def poly_factor(step: int, total: int, power: float = 0.9) -> float:
    """§2 step 11: the factor of the base learning rate used by optimiser step ``step`` (from 0).

    The authors set ``lr = base·(1 − it/total)^power`` after the step of iteration ``it``, so steps 0
    and 1 both run at the base rate and step ``k ≥ 1`` at the factor of ``it = k − 1``."""
    return (1.0 - max(step - 1, 0) / total) ** power


def rank_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank`` in a run seeded with ``seed``: ``seed`` itself for rank 0, another
    one per rank derived from both (NumPy's ``SeedSequence``), within NumPy's 32-bit range."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def _rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states, in checkpoint-safe types."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    kind, keys, position, has_gauss, gauss = state["numpy"]
    random.setstate(state["python"])
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class SemiSupervisedMethod(pl.LightningModule):
    """The base of every method (SupervisedOnly, FixMatch, UniMatch, CorrMatch, UniMatchV2): network,
    optimiser, poly schedule, evaluation and checkpoints.

    Args:
        network: the student network's settings (NetworkConfig, DESIGN.md §1).
        num_classes: class count K, taken from data.num_classes by the command line.
        optimizer: "sgd" (with momentum; CorrMatch and UniMatch on DeepLabV3+) or "adamw" (betas 0.9,
            0.999; UniMatch V2 on DINOv2). Unset: AdamW for a DINOv2 network, SGD otherwise.
        lr: base learning rate of the encoder; every other parameter trains at lr × lr_multi (§2 step
            11). Unset: SGD 0.001, AdamW 5e-6.
        lr_multi: learning-rate factor of the decoder, classifier and correlation branch. Unset: SGD
            10, AdamW 40.
        momentum: SGD momentum (0.9 in the paper).
        weight_decay: unset: SGD 1e-4 (the paper), AdamW 0.01 (UniMatch V2).
        poly_power: exponent of the poly decay of the learning rate.
        criterion: supervised loss: "ce" (cross-entropy; Pascal) or "ohem" (online hard example
            mining; Cityscapes, §2 step 10).
        ohem_thresh: OHEM: pixels whose probability of their true class is below this are hard.
        ohem_min_kept: OHEM: at least this many pixels of the batch enter the loss.
        crop_size: training crop, taken from data.crop_size by the command line; also the window of
            the center_crop and sliding_window evaluations.
        eval_mode: "original" (whole images), "center_crop" or "sliding_window" (§4).
        sliding_window_last_epochs: evaluate with the sliding window in the last N epochs of fit
            (CorrMatch on Cityscapes: 20) and in validate and test; 0 keeps eval_mode throughout.
        reference_global_batch: the global batch the learning rate was set for; a run with another
            global batch warns with both numbers.
        tta_scales: test-time augmentation in validation, test and prediction: the image scales to
            average the class probabilities over (e.g. [0.75, 1.0, 1.25]); unset keeps the paper's
            single-scale evaluation.
        tta_flip: test-time augmentation: also average over the horizontally mirrored image(s).
        channels_last: run the network and its inputs in channels-last memory format.
        compile: compile the network(s) with torch.compile before the first step (regional: the
            encoder and decoder of DeepLabV3+, each transformer block and the DPT head of DINOv2, the
            EMA teacher alike; corrmatch.models.compile). The losses and gradients are the eager ones
            within float rounding; the first steps take the compile time.
        compile_mode: torch.compile's mode: default, reduce-overhead (CUDA graphs, on a GPU) or
            max-autotune (also searches kernel configurations; longer to compile); inductor's modes.
        compile_backend: torch.compile's backend: inductor (torch's default, generated kernels) or
            another of torch.compiler.list_backends() (aot_eager: the traced graphs run by eager
            kernels, to tell a tracing problem from a kernel one).
        official_checkpoint: a checkpoint saved by the authors' code (CorrMatch, UniMatch) to start
            from, loaded strictly into the network; one without the correlation branch fits the
            methods without one.
    """

    correlation: ClassVar[bool] = False  # build the network's correlation branch
    # whose release places the sliding windows (corrmatch.evaluation.window_grid): CorrMatch's, which
    # UniMatch's shares; UniMatch V2 has its own. Segmenter finds it by the checkpoint's method name.
    window_placement: ClassVar[WindowPlacement] = "corrmatch"
    data_contract: ClassVar[DataContract] = DataContract()  # what the datamodule must provide

    def __init__(
        self,
        network: NetworkConfig = DEFAULT_NETWORK,
        num_classes: int = 21,
        optimizer: Literal["sgd", "adamw"] | None = None,
        lr: float | None = None,
        lr_multi: float | None = None,
        momentum: float = 0.9,
        weight_decay: float | None = None,
        poly_power: float = 0.9,
        criterion: Literal["ce", "ohem"] = "ce",
        ohem_thresh: float = 0.7,
        ohem_min_kept: int = 100_000,
        crop_size: int = 321,
        eval_mode: EvalMode = "original",
        sliding_window_last_epochs: int = 0,
        reference_global_batch: int | None = None,
        tta_scales: list[float] | None = None,
        tta_flip: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: CompileMode = "default",
        compile_backend: str = "inductor",
        official_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        if tta_scales is not None and (not tta_scales or min(tta_scales) <= 0):
            raise ConfigError(f"model.tta_scales must be positive numbers, got {tta_scales}")
        for setting, value, low, high in (
            ("model.num_classes", num_classes, 2, None),
            ("model.lr", lr, 0, None),
            ("model.lr_multi", lr_multi, 0, None),
            ("model.momentum", momentum, 0, 1),
            ("model.weight_decay", weight_decay, 0, None),
            ("model.poly_power", poly_power, 0, None),
            ("model.ohem_thresh", ohem_thresh, 0, 1),
            ("model.ohem_min_kept", ohem_min_kept, 0, None),
            ("model.sliding_window_last_epochs", sliding_window_last_epochs, 0, None),
            ("model.reference_global_batch", reference_global_batch, 1, None),
        ):
            check_range(setting, value, low, high)
        check_mode(compile_mode, compile_backend)
        self.network = NetworkConfig.coerce(network)
        if crop_size < self.network.min_crop_size:
            raise ConfigError(
                f"data.crop_size {crop_size} is too small for the network: at least "
                f"{self.network.min_crop_size}, so that its feature grid has 2×2 cells"
            )
        self.save_hyperparameters()
        self.hparams["network"] = self.network.to_dict()  # plain data in checkpoints
        optimizer = optimizer or ("adamw" if self.network.is_vit else "sgd")
        recipe = {"optimizer": optimizer, **RECIPES[optimizer]}
        for name, default in recipe.items():  # the values in use, in checkpoints and on W&B
            if self.hparams.get(name) is None:
                self.hparams[name] = default
        self.net = self.network.build(num_classes, correlation=self.correlation)
        if official_checkpoint is not None:
            self.net.load_state_dict(official_state_dict(official_checkpoint, self.net))
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
            self.net.register_forward_pre_hook(_channels_last_input)
        self.iou = MeanIoU(num_classes)
        self.pseudo_label_examples: dict[str, Tensor] = {}
        self._compiled = False

    def networks(self) -> tuple[torch.nn.Module, ...]:
        """The networks the method runs: the student (and the EMA teacher of UniMatchV2)."""
        return (self.net,)

    def configure_model(self) -> None:
        """With ``compile``: checks that the run's device can serve ``compile_mode``
        (:func:`~corrmatch.models.compile.check_compile`), then compiles every network once
        (:func:`~corrmatch.models.compile.compile_network`)."""
        if not self.hparams.compile or self._compiled:
            return
        mode, backend = self.hparams.compile_mode, self.hparams.compile_backend
        check_compile(mode, self.trainer.strategy.root_device, backend)
        for net in self.networks():
            compile_network(net, mode, backend)
        self._compiled = True

    def setup(self, stage: str) -> None:
        """Before ``fit``, every process but the first reseeds Python's, NumPy's and torch's generators
        with :func:`rank_seed`: ``seed_everything`` gives all processes one seed, and the draws taken
        from these generators in the training step (region rows, the feature perturbation's and the
        complementary dropout masks) would otherwise repeat on every rank. The first process keeps its
        seed, so a one-process run is unchanged; a resumed run then restores each rank's own states."""
        if stage == "fit" and self.global_rank > 0:
            seed = rank_seed(torch.initial_seed(), self.global_rank)
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)

    # ------------------------------------------------------------------ optimisation (§2 step 11)

    def configure_optimizers(self) -> dict[str, Any]:
        """SGD or AdamW over two groups, the trainable encoder parameters at ``lr`` and every other
        parameter of the network at ``lr * lr_multi``, with the poly decay (:func:`poly_factor`) as a
        per-step ``LambdaLR``; the scheduler's state is in every checkpoint, so a resumed run continues
        the schedule exactly."""
        total = self.trainer.estimated_stepping_batches
        if not np.isfinite(total):
            raise ConfigError(
                "the poly schedule needs a finite run: set trainer.max_epochs or trainer.max_steps"
            )
        encoder_ids = {id(p) for p in self.net.encoder.parameters()}
        encoder = [p for p in self.net.encoder.parameters() if p.requires_grad]
        rest = [p for p in self.net.parameters() if id(p) not in encoder_ids]
        hp = self.hparams
        groups = [
            {"params": encoder, "lr": hp.lr, "name": "encoder"},
            {"params": rest, "lr": hp.lr * hp.lr_multi, "name": "rest"},
        ]
        if hp.optimizer == "adamw":
            optimizer: torch.optim.Optimizer = torch.optim.AdamW(
                groups, lr=hp.lr, betas=(0.9, 0.999), weight_decay=hp.weight_decay
            )
        else:
            optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        power = self.hparams.poly_power
        schedule = LambdaLR(optimizer, lambda step: poly_factor(step, int(total), power))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_fit_start(self) -> None:
        reference = self.hparams.reference_global_batch
        batch_size = getattr(self.trainer.datamodule, "batch_size", None)
        if reference is None or batch_size is None:
            return
        trainer = self.trainer
        accumulate = trainer.accumulate_grad_batches
        actual = trainer.num_devices * trainer.num_nodes * batch_size * accumulate
        if actual != reference:
            rank_zero_warn(
                f"global batch is {actual} (devices {trainer.num_devices} × nodes {trainer.num_nodes} × "
                f"batch_size {batch_size} × accumulate_grad_batches {accumulate}) but lr={self.hparams.lr} "
                f"was set for a global batch of {reference}; consider scaling the learning rate"
            )

    # ------------------------------------------------------------------ shared training pieces

    def logits(self, image: Tensor) -> Tensor:
        """Clean logits ``out`` of the network (the evaluation forward)."""
        return self.net(image)["out"]

    def supervised_loss(self, logits: Tensor, mask: Tensor) -> Tensor:
        """``crit`` of §2 step 10: CE with ignore 255, or OHEM."""
        if self.hparams.criterion == "ohem":
            return ohem_cross_entropy(
                logits, mask, thresh=self.hparams.ohem_thresh, min_kept=self.hparams.ohem_min_kept
            )
        return cross_entropy(logits, mask)

    @torch.no_grad()
    def predict_mix(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """§2 step 1: confidence and label of the mixing batch, with the network in eval mode."""
        self.net.eval()
        logits = self.logits(image)
        self.net.train()
        return confidence(logits)

    def fixed_threshold_loss(
        self,
        pred_s: Tensor,
        box: Tensor,
        weak: tuple[Tensor, Tensor, Tensor],
        mix: tuple[Tensor, Tensor, Tensor],
        threshold: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """FixMatch/UniMatch loss of one strong view (§3): the pseudo-labels of the weak view, mixed
        by the view's CutMix box, masked by ``conf ≥ threshold`` and not ignored. Returns the loss, the
        mixed pseudo-labels and the mask of the pixels the loss uses."""
        label_m, conf_m, ignore_m = mix_targets(box, weak, mix)
        used = (conf_m >= threshold) & (ignore_m != IGNORE_INDEX)
        return masked_cross_entropy(pred_s, label_m, used, ignore_m), label_m, used

    @staticmethod
    def label_quality(
        batch: Mapping[str, Any], box: Tensor, label_m: Tensor, used: Tensor, name: str = "pl"
    ) -> dict[str, Tensor]:
        """``<name>_acc`` and ``<name>_used`` (:func:`pseudo_label_accuracy`) of mixed pseudo-labels
        against the unlabeled images' ground truth (``mask_w``, mixed by the same box); nothing when
        the unlabeled list has no masks. The masks reach no loss."""
        truth = batch["unlabeled"].get("mask_w")
        if truth is None:
            return {}
        mix = batch.get("unlabeled_mix")  # none: the boxes were pasted from the batch reversed
        truth_m = torch.where(box == 1, truth.flip(0) if mix is None else mix["mask_w"], truth)
        accuracy, share = pseudo_label_accuracy(label_m, used, truth_m)
        return {f"{name}_acc": accuracy, f"{name}_used": share}

    def remember_pseudo_labels(self, image: Tensor, pseudo_label: Tensor, **masks: Tensor) -> None:
        """Keeps the first training images with their pseudo-labels (and extra boolean masks) for the
        W&B overlays; detached device copies, no host synchronisation."""
        examples = {"image": image, "pseudo_label": pseudo_label, **masks}
        self.pseudo_label_examples = {
            key: value[:NUM_EXAMPLES].detach().clone() for key, value in examples.items()
        }

    def finish_step(
        self, losses: Mapping[str, Tensor], stats: Mapping[str, Tensor], batch_size: int
    ) -> dict[str, Tensor]:
        """Logs the loss terms and statistics per step under ``train/`` (the main terms and τ also on
        the progress bar) and returns the step output: ``loss`` plus the detached terms."""
        for name, value in {**losses, **stats}.items():
            self.log(
                f"train/{name}",
                value,
                on_step=True,
                on_epoch=False,
                prog_bar=name in PROGRESS_BAR,
                batch_size=batch_size,
            )
        return {name: value if name == "loss" else value.detach() for name, value in losses.items()}

    # ------------------------------------------------------------------ evaluation (§4)

    def evaluation_mode(self) -> EvalMode:
        """``eval_mode``, or the sliding window in the last ``sliding_window_last_epochs`` epochs of
        ``fit`` and in ``validate``/``test`` when that option is set (CorrMatch on Cityscapes)."""
        last = self.hparams.sliding_window_last_epochs
        if last <= 0:
            return self.hparams.eval_mode
        trainer = self.trainer
        if trainer.state.fn != TrainerFn.FITTING:
            return "sliding_window"
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0 and trainer.current_epoch >= max_epochs - last:
            return "sliding_window"
        return self.hparams.eval_mode

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """Adds the batch to the mIoU metric; returns the evaluated image, mask and prediction
        (centre-cropped in that mode) for the image-logging callback."""
        image, mask, mode = batch["image"], batch["mask"], self.evaluation_mode()
        if mode == "center_crop":
            image, mask = (
                center_crop(image, self.hparams.crop_size),
                center_crop(mask, self.hparams.crop_size),
            )
        pred = self.segment(self.logits, image, mode)[0]
        self.iou.update(pred, mask)
        return {"image": image, "mask": mask, "pred": pred}

    test_step = validation_step

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")

    def _finish_evaluation(self, stage: str, metric: MeanIoU | None = None, name: str = "mIoU") -> None:
        """Logs and prints ``<stage>/<name>``, the mIoU of ``metric`` (the student's by default) over
        the whole set and all processes (:class:`MeanIoU`), and the IoU of every class."""
        metric = self.iou if metric is None else metric
        miou, iou = metric.compute()
        metric.reset()
        self.log(f"{stage}/{name}", miou.float(), prog_bar=True)  # already summed over processes
        if self.trainer.sanity_checking:
            return
        names = list(getattr(self.trainer.datamodule, "class_names", None) or range(len(iou)))
        rows = [[str(label), float(value) * 100.0] for label, value in zip(names, iou.tolist())]
        suffix = name.removeprefix("mIoU")  # "" for the student, "_teacher" for an EMA teacher
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(f"{stage}/iou_per_class{suffix}", ["class", "IoU"], rows, step=self.global_step)
        self.print(f"{stage} {name} = {miou.item():.2f} ({self.evaluation_mode()}, epoch {self.current_epoch})")
        whose = f" ({suffix[1:]})" if suffix else ""
        self.print(f"{stage} IoU per class{whose}: " + ", ".join(f"{label} {value:.2f}" for label, value in rows))

    def segment(self, logits: Logits, image: Tensor, mode: EvalMode) -> tuple[Tensor, Tensor]:
        """Labels and class probabilities of ``logits`` on ``image`` in ``mode``, with this method's
        crop, test-time augmentation and :attr:`window_placement`
        (:func:`corrmatch.evaluation.segment_probabilities`)."""
        hp = self.hparams
        return segment_probabilities(
            logits, image, mode, hp.crop_size, hp.tta_scales, hp.tta_flip, self.window_placement
        )

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        """Labels and confidence (highest class probability) of whole images: the sliding window when
        an image exceeds the crop size (:func:`corrmatch.evaluation.predict_mode`)."""
        image = batch["image"]
        mode = predict_mode(*image.shape[-2:], self.hparams.crop_size)
        pred, probs = self.segment(self.logits, image, mode)
        return {"id": batch["id"], "pred": pred, "confidence": probs.amax(dim=1)}

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Adds the method's name, what inference needs besides the weights (class names, palette,
        normalisation of the attached datamodule: :class:`corrmatch.metadata.InferenceInfo`) and every
        process's random generator states. The test-time augmentation and compile options
        (:data:`RUN_OPTIONS`) are left out of the saved hyperparameters: LightningCLI applies a
        ``--ckpt_path`` file's hyperparameters over the command line, and these belong to the command
        that runs the model."""
        checkpoint["method"] = type(self).__name__
        for key in RUN_OPTIONS:
            checkpoint.get("hyper_parameters", {}).pop(key, None)
        datamodule = self.trainer.datamodule
        checkpoint[INFERENCE_KEY] = InferenceInfo.from_datamodule(
            datamodule, self.hparams.num_classes
        ).to_dict()
        state = _rng_state()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)
        else:
            states = [state]
        checkpoint["rng_states"] = states

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuses a checkpoint of another method or network (one-line :class:`CheckpointError`
        naming the setting), then restores this process's random generator states."""
        check_compatible(checkpoint, self)
        states = checkpoint.get("rng_states")
        if states:
            _set_rng_state(states[self.global_rank] if self.global_rank < len(states) else states[0])


def check_compatible(checkpoint: Mapping[str, Any], method: SemiSupervisedMethod) -> None:
    """Raises :class:`CheckpointError` when ``checkpoint`` was written by another method, or for a
    network whose shape (class count or a :attr:`NetworkConfig.SHAPE_FIELDS` field) differs."""
    name = type(method).__name__
    written_by = checkpoint.get("method", name)
    if written_by != name:
        raise CheckpointError(f"checkpoint was written by {written_by}, the model is {name}")
    saved = checkpoint.get("hyper_parameters", {})
    pairs = [("num_classes", saved.get("num_classes"), method.hparams.num_classes)]
    if "network" in saved:
        network = NetworkConfig.coerce(saved["network"])
        pairs += [
            (f"network.{field}", getattr(network, field), getattr(method.network, field))
            for field in NetworkConfig.SHAPE_FIELDS
        ]
    for setting, theirs, ours in pairs:
        if theirs is not None and theirs != ours:
            raise CheckpointError(f"checkpoint has {setting}={theirs!r} but the model has {setting}={ours!r}")


def _channels_last_input(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook of the network: its image input in channels-last memory format."""
    return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])


def confidence(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Max softmax probability and argmax label per pixel (the argmax taken on the logits, as the
    reference does)."""
    return logits.softmax(dim=1).amax(dim=1), logits.argmax(dim=1)


def pseudo_label_accuracy(label: Tensor, used: Tensor, truth: Tensor) -> tuple[Tensor, Tensor]:
    """Accuracy of the pseudo-labels ``label`` on the pixels the loss ``used``, and the share of the
    pixels with a known ground truth (``truth`` ≠ 255) that the loss uses; both 0-d tensors, no host
    synchronisation. The accuracy of no pixels is NaN (undefined, so that means over steps can skip it
    instead of counting a 0); the share is then 0."""
    known = truth != IGNORE_INDEX
    counted = used & known
    correct = (counted & (label == truth)).sum()
    return correct / counted.sum(), counted.sum() / known.sum().clamp(min=1)


def mask_ratio(conf: Tensor, ignore: Tensor, threshold: Tensor | float) -> Tensor:
    """Share of the non-ignored pixels whose confidence reaches the threshold (the logged ratio)."""
    valid = ignore != IGNORE_INDEX
    return ((conf >= threshold) & valid).sum() / valid.sum().clamp(min=1)


def paste(image_s: Tensor, image_mix: Tensor, box: Tensor) -> Tensor:
    """CutMix (§2 step 1): the pixels of ``image_mix`` inside ``box`` (1 inside) replace ``image_s``'s."""
    return torch.where(box.unsqueeze(1) == 1, image_mix, image_s)


def mix_targets(box: Tensor, own: tuple[Tensor, ...], mix: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """§2 step 5: each of ``own`` outside ``box`` and the matching tensor of ``mix`` inside it."""
    inside = box == 1
    return tuple(torch.where(inside, m, o) for o, m in zip(own, mix))
