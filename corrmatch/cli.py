"""Command line: ``python train.py {fit,validate,test,predict} --config configs/<dataset>/<method>.yaml``.

A run lives in ``trainer.default_root_dir``, the *run directory*; when a config does not set it, it is
``runs/<dataset>/<method>/<split>[_<crop>]`` (:func:`default_run_dir`). It holds the resolved config
(``config.yaml``; ``<stage>_config.yaml`` for validate/test/predict), ``checkpoints/`` (``last.ckpt``
and the best by validation mIoU), the W&B files (``wandb/``) and the W&B run id (``wandb_run_id``), so
that ``fit --ckpt_path last`` continues the same W&B run.

Everything a user can get wrong is checked before any compute or any write: the data, the checkpoint
to resume (its format and its network), the run directory. Such an error ends the command with one
line ``error: …`` and exit status 2 (``--debug`` or ``CORRMATCH_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import re
import sys
import time
from argparse import ArgumentError
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import wandb
from jsonargparse import DefaultHelpFormatter, Namespace
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.accelerators import CUDAAccelerator
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from corrmatch.callbacks import (
    AtomicCheckpointIO,
    PredictionWriter,
    RunCheckpoint,
    TrainingSpeed,
    ValidationExamples,
    WandbImageLogger,
)
from corrmatch.checkpoints import best_checkpoint, read_weights
from corrmatch.data import SemiSupervisedDataModule
from corrmatch.data.presets import get_preset
from corrmatch.errors import CheckpointError, ConfigError, UserError
from corrmatch.methods import SemiSupervisedMethod, check_compatible
from corrmatch.models.compile import check_compile
from corrmatch.models.dpt import DINOV2_SIZES

__all__ = ["WANDB_ID_FILE", "CorrMatchCLI", "SaveRunConfig", "default_run_dir", "main"]

WANDB_ID_FILE = "wandb_run_id"
DEBUG_FLAG = "--debug"
DESCRIPTION = (
    "corrmatch: semi-supervised semantic segmentation (CorrMatch, UniMatch, FixMatch, supervised "
    "baseline) on PyTorch Lightning."
)
EPILOG = """examples:
  python train.py fit --config configs/demo.yaml
  python train.py fit --config configs/pascal/corrmatch.yaml --data.split 92 --data.crop_size 513
  python train.py fit --config runs/demo/corrmatch/config.yaml --ckpt_path last
  python train.py predict --config runs/demo/corrmatch/config.yaml --ckpt_path last --data.predict_dir IMAGES
options of a method:  python train.py fit --model.help CorrMatch
all options:          python train.py fit --help
tracebacks of errors: add --debug (or set CORRMATCH_DEBUG=1)"""
METHOD_NAMES = {"SupervisedOnly": "supervised", "UniMatchV2": "unimatch_v2"}  # names other than the class's


def default_run_dir(
    preset: str,
    root: str | None,
    split: str | None,
    crop_size: int | None,
    method: str,
    encoder: str | None = None,
) -> Path:
    """``runs/<dataset>/<method>[_<encoder>]/<split>[_<crop>]``: the dataset is the preset (the root's
    folder name for ``folder``), the method its class name in lower case (``supervised`` for
    SupervisedOnly, ``unimatch_v2`` for UniMatchV2), followed by the encoder for a DINOv2 network, the
    split ``data.split`` (left out without one) and ``_<crop>`` is added when the crop is not the
    preset's default."""
    dataset = Path(root).name if preset == "folder" and root else preset
    name = method.rsplit(".", 1)[-1]
    name = METHOD_NAMES.get(name, name.lower())
    if encoder in DINOV2_SIZES:
        name = f"{name}_{encoder}"
    parts = ["runs", dataset, name]
    suffix = "" if crop_size in (None, get_preset(preset).crop_size) else f"_{crop_size}"
    if split is not None:
        parts.append(f"{split}{suffix}")
    elif suffix:
        parts[-1] += suffix
    return Path(*parts)


def _encoder_name(model: Any) -> str | None:
    """``network.encoder_name`` of the parsed model settings (a namespace, mapping or NetworkConfig)."""
    network = getattr(getattr(model, "init_args", None), "network", None)
    if isinstance(network, Mapping):
        return network.get("encoder_name")
    return getattr(network, "encoder_name", None)


def _num_processes(accelerator: Any, devices: Any, num_nodes: int | None) -> int:
    """Processes a Trainer with these settings starts (per node × nodes)."""
    gpus = torch.cuda.device_count() if str(accelerator) in ("auto", "gpu", "cuda") else 0
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        per_node = len(devices)
    elif str(devices) in ("auto", "-1"):
        per_node = max(gpus, 1)
    elif isinstance(devices, str) and "," in devices:
        per_node = len([d for d in devices.split(",") if d.strip()])
    else:
        per_node = int(devices)
    return per_node * (num_nodes or 1)


def _check_gpus(accelerator: Any, devices: Any) -> None:
    """GPUs asked for that torch does not see stop the command in one line, before a network is built
    (the paper configs ask for 4; ``auto`` without a GPU has already become one CPU process)."""
    if str(accelerator) not in ("auto", "gpu", "cuda") or str(devices) == "auto":
        return
    try:
        CUDAAccelerator.parse_devices(devices)
    except MisconfigurationException:
        count = torch.cuda.device_count()
        instead = f"pass --trainer.devices {count} or fewer" if count else "set trainer.accelerator auto or cpu"
        raise ConfigError(
            f"trainer.accelerator {accelerator} with trainer.devices {devices}: torch {torch.__version__} sees "
            f"{count} CUDA GPU{'' if count == 1 else 's'} on this machine; {instead}"
        ) from None


def _warn_slow_precision(accelerator: Any, precision: Any) -> None:
    """Half precision on a CPU without AVX-512 (``torch.backends.cpu.get_cpu_capability``) has no
    hardware for bf16, to which Lightning turns 16 on a CPU: a training step there took tens of times
    longer than in 32-true on the CPUs measured, so the run is told at start."""
    capability = torch.backends.cpu.get_cpu_capability()
    if str(accelerator) == "cpu" and str(precision).startswith(("bf16", "16")) and capability in ("AVX2", "DEFAULT"):
        rank_zero_warn(
            f"trainer.precision {precision} on a CPU with {capability} only: bf16 runs without hardware "
            "support here, many times slower than --trainer.precision 32-true"
        )


def _wandb_loggers(logger_config: Any) -> list[Namespace]:
    """The WandbLogger entries of a ``trainer.logger`` config value (bool, one spec or a list)."""
    specs = logger_config if isinstance(logger_config, list) else [logger_config]
    return [
        spec
        for spec in specs
        if isinstance(spec, Namespace) and str(spec.get("class_path", "")).endswith("WandbLogger")
    ]


def _described(method: Callable[..., Any], doc: str) -> Callable[..., Any]:
    """``method`` under another docstring (its signature unchanged): the description that
    ``train.py --help`` shows for a subcommand, and the help of the subcommand's options."""

    @functools.wraps(method)
    def wrapper(self: Trainer, *args: Any, **kwargs: Any) -> Any:
        return method(self, *args, **kwargs)

    wrapper.__doc__ = doc
    return wrapper


CKPT_DOC = """
    Args:
        ckpt_path: a checkpoint file, or ``last`` (the run directory's last.ckpt) or ``best`` (its
            best-*.ckpt, the highest validation mIoU)."""


class HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help, with the description and the examples kept line by line."""


class CorrMatchTrainer(Trainer):
    """Lightning's Trainer, with the subcommands described for ``train.py --help``."""

    fit = _described(
        Trainer.fit,
        "Train a method on the split: validates, prints the mIoU and writes last.ckpt and the best checkpoint."
        + CKPT_DOC.replace("a checkpoint file", "continue a run from a checkpoint file"),
    )
    validate = _described(
        Trainer.validate,
        "Evaluate a checkpoint on the validation split: prints the mIoU and every class's IoU."
        + CKPT_DOC
        + "\n        verbose: also print Lightning's table of the logged metrics.",
    )
    test = _described(
        Trainer.test,
        "The same evaluation as validate, under test/ (the papers report their validation split)."
        + CKPT_DOC
        + "\n        verbose: also print Lightning's table of the logged metrics.",
    )
    predict = _described(
        Trainer.predict,
        "Write the label maps (and colour pictures) of a folder's images, or of the validation images."
        + CKPT_DOC
        + "\n        return_predictions: keep every prediction in memory as well (off: the writer saves them).",
    )


class SaveRunConfig(SaveConfigCallback):
    """Saves the resolved config into the run directory: ``config.yaml`` for ``fit``, written once
    training starts (so a start that fails leaves nothing behind), ``<stage>_config.yaml`` for the other
    commands."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            self._write(trainer, f"{TrainerFn(stage).value}_{self.config_filename}")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, self.config_filename)

    def _write(self, trainer: Trainer, name: str) -> None:
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.parser.dump(self.config, skip_none=False))


class CorrMatchCLI(LightningCLI):
    """LightningCLI over :class:`SemiSupervisedMethod` subclasses (``model.class_path``) and
    :class:`SemiSupervisedDataModule`.

    Adds ``checkpoint`` (:class:`RunCheckpoint`), ``wandb_images`` (:class:`WandbImageLogger`),
    ``val_examples`` (:class:`ValidationExamples`) and ``predict_writer`` (:class:`PredictionWriter`)
    groups, links ``data.num_classes`` and ``data.crop_size`` into the model, logs to W&B offline by
    default with the learning rates (``LearningRateMonitor``) and the training speed
    (:class:`~corrmatch.callbacks.TrainingSpeed`), writes checkpoints atomically, and uses DDP with
    SyncBatchNorm exactly when more than one process trains.
    """

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault(
            "parser_kwargs",
            {
                "description": DESCRIPTION,
                "epilog": EPILOG,
                "exit_on_error": False,
                "formatter_class": HelpFormatter,
            },
        )
        kwargs.setdefault("trainer_class", CorrMatchTrainer)
        kwargs.setdefault(
            "trainer_defaults",
            {
                "logger": {
                    "class_path": "pytorch_lightning.loggers.WandbLogger",
                    "init_args": {"project": "corrmatch", "offline": True},
                }
            },
        )
        super().__init__(
            SemiSupervisedMethod,
            SemiSupervisedDataModule,
            subclass_mode_model=True,
            save_config_callback=SaveRunConfig,
            auto_configure_optimizers=False,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.crop_size", "model.init_args.crop_size", apply_on="instantiate")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_lightning_class_args(WandbImageLogger, "wandb_images")
        parser.add_lightning_class_args(ValidationExamples, "val_examples")
        parser.add_lightning_class_args(PredictionWriter, "predict_writer")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parses, then checks that a ``ckpt_path`` file is a plain PyTorch checkpoint before Lightning
        reads its hyperparameters."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path not in (None, "last", "best", "hpc", "registry"):
            read_weights(ckpt_path, "--ckpt_path")

    def _subcommand_config(self) -> Namespace:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        """Resolves the run directory, the checkpoint folder, the distributed settings and the W&B
        files (:meth:`_set_run_dir`, :meth:`_set_distributed`, :meth:`_check_compile`, :meth:`_set_wandb`),
        and stops on GPUs the machine lacks (:func:`_check_gpus`)."""
        config = self._subcommand_config()
        if self.subcommand == "predict" and config.get("return_predictions") is None:
            config.return_predictions = False  # the writer saves them
        run_dir = self._set_run_dir(config)
        self._set_distributed(config.trainer)
        _check_gpus(config.trainer.accelerator, config.trainer.devices)
        _warn_slow_precision(config.trainer.accelerator, config.trainer.precision)
        self._check_compile(config)
        self._set_wandb(config, run_dir)
        if self.subcommand == "fit":
            self._validate_within_budget(config.trainer)

    def _set_run_dir(self, config: Namespace) -> Path:
        if config.trainer.default_root_dir is None:
            data = config.data
            config.trainer.default_root_dir = str(
                default_run_dir(
                    data.preset,
                    data.root,
                    data.split,
                    data.crop_size,
                    config.model.class_path,
                    _encoder_name(config.model),
                )
            )
        run_dir = Path(config.trainer.default_root_dir)
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(run_dir / "checkpoints")
        return run_dir

    @staticmethod
    def _set_distributed(trainer: Namespace) -> None:
        """DDP and SyncBatchNorm follow the number of processes: a config written for 4 GPUs runs on
        one device with ``--trainer.devices 1``, and on a machine without a GPU on one CPU process.
        Several CPU processes (gloo) cannot synchronise BatchNorm: asked to, the run stops here."""
        if str(trainer.accelerator) == "auto" and not torch.cuda.is_available():
            if _num_processes("cpu", trainer.devices, 1) > 1:
                rank_zero_info(f"no GPU: training on one CPU process instead of devices={trainer.devices}")
            trainer.accelerator, trainer.devices = "cpu", 1
        processes = _num_processes(trainer.accelerator, trainer.devices, trainer.num_nodes)
        if processes > 1 and str(trainer.strategy) == "auto":
            trainer.strategy = "ddp"
        if processes == 1 and trainer.sync_batchnorm:
            trainer.sync_batchnorm = False
        if processes > 1 and trainer.sync_batchnorm and str(trainer.accelerator) == "cpu":
            raise ConfigError(
                f"trainer.sync_batchnorm true with {processes} CPU processes: torch's SyncBatchNorm runs on "
                "GPUs only; pass --trainer.sync_batchnorm false (each process keeps its own BatchNorm "
                "statistics) or train on GPUs"
            )

    @staticmethod
    def _check_compile(config: Namespace) -> None:
        """With ``model.compile``: the device's part of :func:`check_compile` (CUDA graphs off a GPU,
        inductor on a CPU without a C++ compiler), before the run directory or a W&B run exist. The
        method checks again in ``configure_model`` when it is trained without this CLI."""
        init = config.model.init_args  # every setting resolved, defaults included
        if not init.get("compile"):
            return
        accelerator = str(config.trainer.accelerator)
        if accelerator == "auto":
            accelerator = "cuda" if torch.cuda.is_available() else "cpu"
        device = {"gpu": "cuda", "cuda": "cuda", "cpu": "cpu"}.get(accelerator)
        if device is not None:
            check_compile(init.compile_mode, torch.device(device), init.compile_backend)

    @staticmethod
    def _validate_within_budget(trainer: Namespace) -> None:
        """A run of fewer epochs than ``check_val_every_n_epoch`` validates after its last epoch (the
        interval becomes the epoch count); a run cut by ``max_steps`` validates at that step
        (:class:`ValidateAtLastStep`)."""
        epochs, every = trainer.max_epochs, trainer.check_val_every_n_epoch
        if every is not None and epochs is not None and 0 < epochs < every:
            rank_zero_info(
                f"trainer.max_epochs {epochs} < trainer.check_val_every_n_epoch {every}: validating after "
                f"epoch {epochs}"
            )
            trainer.check_val_every_n_epoch = epochs

    def _set_wandb(self, config: Namespace, run_dir: Path) -> None:
        """W&B files go into the run directory unless ``save_dir`` is set. A resumed ``fit`` continues
        the run whose id the run directory holds; ``validate``/``test`` start their own run, and
        ``predict`` logs nothing."""
        if self.subcommand == "predict" and _wandb_loggers(config.trainer.logger):
            config.trainer.logger = False
            return
        for spec in _wandb_loggers(config.trainer.logger):
            init = spec.init_args
            if init.get("save_dir") in (None, ".") and init.get("dir") is None:
                init.save_dir = str(run_dir)
            if self.subcommand != "fit":
                init.id = init.version = None
                continue
            id_file = Path(init.save_dir or init.dir) / WANDB_ID_FILE
            resuming = config.get("ckpt_path") is not None
            if resuming and init.get("id") is None and init.get("version") is None and id_file.is_file():
                init.id = id_file.read_text().strip()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Lightning's Trainer with atomic checkpoint writes and the toolkit's callbacks; a trainer setting
        Lightning refuses (an unknown or unavailable strategy, accelerator or plugin) is a ConfigError."""
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except UserError:
            raise
        except (MisconfigurationException, ImportError, ValueError) as error:
            raise ConfigError(f"trainer: {error}") from error
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.loggers:
            trainer.callbacks.append(LearningRateMonitor(logging_interval="step"))
        trainer.callbacks.extend([ValidateAtLastStep(), TrainingSpeed()])
        return trainer

    # ------------------------------------------------------------------ checks before any compute

    def _checkpoint_dir(self) -> Path:
        return Path(self._subcommand_config().checkpoint.dirpath)

    def _check_ckpt_path(self) -> Path | None:
        """The checkpoint ``ckpt_path`` names (``last``: the run's ``last.ckpt``; ``best``: its
        ``best-*.ckpt`` of the highest mIoU, :func:`best_checkpoint`), checked to be a checkpoint of this
        method and network; None without ``ckpt_path``."""
        ckpt_path = self._subcommand_config().get("ckpt_path")
        if ckpt_path is None or ckpt_path in ("hpc", "registry"):
            return None
        folder = self._checkpoint_dir()
        instead = "start without --ckpt_path" if self.subcommand == "fit" else "train it first with fit"
        if ckpt_path == "last":
            path = folder / "last.ckpt"
            if not path.is_file():
                raise CheckpointError(f"--ckpt_path last: no checkpoint {path} ({instead})")
        elif ckpt_path == "best":
            best = best_checkpoint(folder)
            if best is None:
                other = "use --ckpt_path last" if (folder / "last.ckpt").is_file() else instead
                raise CheckpointError(f"--ckpt_path best: no best-*.ckpt in {folder}, the run has not validated ({other})")
            path = best
            self.config_init[self.subcommand]["ckpt_path"] = str(path)
        else:
            path = Path(ckpt_path)
        checkpoint = read_weights(path, "--ckpt_path")
        if "state_dict" not in checkpoint:
            raise CheckpointError(f"{path}: not a checkpoint written by train.py fit (no 'state_dict')")
        check_compatible(checkpoint, self.model)
        return path

    def _check_inputs(self, stage: str) -> None:
        """Data and checkpoint, before the W&B run is created or anything is written."""
        self.datamodule.contract = self.model.data_contract
        self.datamodule.check(stage)
        self._check_ckpt_path()

    def before_fit(self) -> None:
        """Checks the inputs; refuses to start a new run over a run directory that holds checkpoints;
        records the W&B run id in the run directory (rank 0) for a later resume."""
        self._fit_start = time.perf_counter()
        self._check_inputs("fit")
        if self._subcommand_config().get("ckpt_path") is None:
            existing = sorted(self._checkpoint_dir().glob("*.ckpt"))
            if existing:
                raise ConfigError(
                    f"{existing[0]}: the run directory {self.trainer.default_root_dir} already holds a run; "
                    "continue it with --ckpt_path last, or give this run its own directory with "
                    "--trainer.default_root_dir"
                )
        if rank_zero_only.rank != 0:
            return
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                Path(logger.save_dir).mkdir(parents=True, exist_ok=True)
                (Path(logger.save_dir) / WANDB_ID_FILE).write_text(logger.experiment.id)

    def before_validate(self) -> None:
        self._check_inputs("validate")

    def before_test(self) -> None:
        self._check_inputs("test")

    def before_predict(self) -> None:
        self._check_inputs("predict")

    def _finish_wandb(self) -> None:
        """Ends the W&B run with the command (Lightning leaves it open for further trainer calls)."""
        if rank_zero_only.rank == 0 and any(isinstance(lg, WandbLogger) for lg in self.trainer.loggers):
            wandb.finish()

    def after_fit(self) -> None:
        """Ends the W&B run and prints how long the command took, from the checks to the last epoch, and
        where the picture of validation examples is (``--val_examples.enabled true``)."""
        self._finish_wandb()
        if rank_zero_only.rank == 0:
            minutes, seconds = divmod(round(time.perf_counter() - self._fit_start), 60)
            ended = "interrupted after" if self.trainer.interrupted else "finished in"
            print(f"fit {ended} {minutes} min {seconds:02d} s, run directory {self.trainer.default_root_dir}")
            for callback in self.trainer.callbacks:
                if isinstance(callback, ValidationExamples) and callback.path is not None:
                    print(f"validation examples (image | ground truth | prediction): {callback.path}")

    after_validate = after_test = after_predict = _finish_wandb


class ValidateAtLastStep(Callback):
    """Ends the run at ``trainer.max_steps`` with a validation: Lightning validates when a run is asked
    to stop, so a budget shorter than ``val_check_interval`` (or ending inside an epoch whose end would
    validate) still prints its mIoU and writes its best checkpoint."""

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


def _user_error(error: BaseException) -> UserError | None:
    """The :class:`UserError` behind ``error`` (jsonargparse and Lightning may wrap it), if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _argument_error_line(message: str) -> str:
    """One line from jsonargparse's multi-line message: the setting at fault and the innermost reason."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    lines = [line.strip(" -") for line in message.splitlines() if line.strip(" -")]
    reasons = [
        line
        for line in lines
        if not line.startswith(("Parser key", "Does not validate", "Subtypes:", "Errors:", "Given value"))
        and "NoneType" not in line
        and not line.startswith("Problem with given class_path")
    ]
    where = f"setting {'.'.join(keys)}: " if keys else ""
    return f"{where}{reasons[0] if reasons else lines[0]} (options: python train.py fit --help)"


def _module_help_requested(args: Sequence[str]) -> bool:
    return any(arg.endswith(".help") or arg in ("-h", "--help") for arg in args)


def main(args: ArgsType = None) -> None:
    """Entry point of ``train.py``: a user error is one line ``error: …`` on stderr, exit status 2."""
    argv = list(sys.argv[1:] if args is None else args)
    debug = DEBUG_FLAG in argv or os.environ.get("CORRMATCH_DEBUG", "") not in ("", "0")
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    if _module_help_requested(argv):
        importlib.import_module("corrmatch.methods")  # so `--model.help CorrMatch` finds the classes
    if args is None:
        sys.argv[1:] = argv
    try:
        CorrMatchCLI(args=None if args is None else argv)
    except ArgumentError as error:
        if debug:
            raise
        print(f"error: {_argument_error_line(str(error))}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as error:
        user_error = _user_error(error)
        if user_error is None or debug:
            raise
        message = " ".join(str(user_error).split())
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
