"""Command line: ``python train.py {fit,validate,test,predict} --config configs/….yaml [--key value …]``.

A run lives in ``trainer.default_root_dir``, the *run directory*; when a config does not set it, it is
``runs/<config path below configs/, without .yaml>`` (``runs/<name>`` for a config elsewhere). It holds
the resolved config (``config.yaml``; ``<stage>_config.yaml`` for validate/test/predict),
``checkpoints/`` (``last.ckpt`` and the best by validation mIoU), the W&B files (``wandb/``) and the W&B
run id (``wandb_run_id``), so that ``fit --ckpt_path last`` continues the same W&B run.

Composition: a config may name a YAML *piece* as the value of a group (``trainer``, ``model``,
``data``; ``logger`` inside a trainer piece), with paths relative to the naming file. A group is either
a piece or written inline: jsonargparse replaces a piece named in a file by any dotted key of the same
group in that file (``trainer.max_epochs: 80`` next to ``trainer: piece.yaml``), so such a file is
refused with an error. Key-by-key overrides go on the command line (``--trainer.max_epochs 80``) or in
a later ``--config`` file, which merge into the groups.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import wandb
import yaml
from jsonargparse import Namespace
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only

from corrmatch.callbacks import AtomicCheckpointIO, PredictionWriter, RunCheckpoint, WandbImageLogger
from corrmatch.data import SemiSupervisedDataModule
from corrmatch.methods import CheckpointMismatchError, SemiSupervisedMethod

__all__ = ["WANDB_ID_FILE", "CorrMatchCLI", "SaveRunConfig", "check_composition", "default_run_dir", "main"]

WANDB_ID_FILE = "wandb_run_id"
PIECE_SUFFIXES = (".yaml", ".yml")


def check_composition(path: str | os.PathLike) -> None:
    """Raises ``ValueError`` when a config file (or a piece it names, recursively) names a piece for a
    group and also sets dotted keys of that group, which jsonargparse would let replace the piece."""
    path = Path(path)
    content = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(content, dict):
        return
    for key, value in content.items():
        if not (isinstance(value, str) and value.endswith(PIECE_SUFFIXES)):
            continue
        overrides = [other for other in content if str(other).startswith(f"{key}.")]
        if overrides:
            raise ValueError(
                f"{path}: '{key}' names the piece {value} and '{overrides[0]}' sets a key of it in the same "
                f"file, which would replace the whole piece; write '{key}' inline, or override on the "
                f"command line (--{overrides[0]} …) or in a later --config file"
            )
        piece = path.parent / value
        if piece.is_file():
            check_composition(piece)


def default_run_dir(config_path: str | os.PathLike) -> str:
    """``runs/<path below configs/ without suffix>`` for a config inside a ``configs`` folder, else
    ``runs/<file name without suffix>``."""
    parts = Path(config_path).with_suffix("").parts
    below = parts[len(parts) - parts[::-1].index("configs") :] if "configs" in parts else parts[-1:]
    return str(Path("runs", *below))


def _config_args(args: list[str]) -> Iterator[str]:
    """The values of ``--config`` in a command line."""
    for index, arg in enumerate(args):
        if arg == "--config" and index + 1 < len(args):
            yield args[index + 1]
        elif arg.startswith("--config="):
            yield arg.split("=", 1)[1]


class SaveRunConfig(SaveConfigCallback):
    """Saves the resolved config into the run directory: ``config.yaml`` for ``fit``,
    ``<stage>_config.yaml`` otherwise. A ``fit`` that does not resume (no ``ckpt_path``) refuses to
    replace a *different* ``config.yaml`` already there, which belongs to another run; a resumed ``fit``
    writes its config once its checkpoint has loaded, so a refused checkpoint leaves the file alone."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if stage != "fit":
            self._write(trainer, f"{TrainerFn(stage).value}_{self.config_filename}")
        elif self.config.get("ckpt_path") is None:
            path = Path(trainer.default_root_dir) / self.config_filename
            text = self.parser.dump(self.config, skip_none=False)
            other_run = trainer.is_global_zero and path.is_file() and path.read_text() != text
            if trainer.strategy.broadcast(other_run):
                raise RuntimeError(
                    f"{path} holds the config of another run: resume it with --ckpt_path last, or give this "
                    "run its own directory with --trainer.default_root_dir"
                )
            self._write(trainer, self.config_filename)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.already_saved:
            self._write(trainer, self.config_filename)

    def _write(self, trainer: Trainer, name: str) -> None:
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.parser.dump(self.config, skip_none=False))
        self.already_saved = trainer.strategy.broadcast(True)


def _wandb_loggers(logger_config: Any) -> list[Namespace]:
    """The WandbLogger entries of a ``trainer.logger`` config value (bool, one spec or a list)."""
    specs = logger_config if isinstance(logger_config, list) else [logger_config]
    return [
        spec
        for spec in specs
        if isinstance(spec, Namespace) and str(spec.get("class_path", "")).endswith("WandbLogger")
    ]


class CorrMatchCLI(LightningCLI):
    """LightningCLI over :class:`SemiSupervisedMethod` subclasses (``model.class_path``) and
    :class:`SemiSupervisedDataModule`.

    Adds ``checkpoint`` (:class:`RunCheckpoint`), ``wandb_images`` (:class:`WandbImageLogger`) and
    ``predict_writer`` (:class:`PredictionWriter`) groups, links ``data.num_classes`` and
    ``data.crop_size`` into the model, writes checkpoints atomically, and puts the W&B files into the
    run directory.
    """

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs: Any) -> None:
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
        parser.add_lightning_class_args(PredictionWriter, "predict_writer")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Checks the composition of every ``--config`` file (:func:`check_composition`) first."""
        command_line = sys.argv[1:] if args is None else args
        if isinstance(command_line, list):
            for path in _config_args(command_line):
                if Path(path).is_file():
                    check_composition(path)
        super().parse_arguments(parser, args)

    def _subcommand_config(self) -> Namespace:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        """Sets the run directory when the config does not (:func:`default_run_dir` of the last
        ``--config``); W&B files go into it unless ``save_dir`` is set; a resumed ``fit`` (with
        ``ckpt_path``) continues the W&B run whose id the run directory holds. ``predict`` keeps no
        predictions in memory unless ``--return_predictions true`` (the writer saves them)."""
        config = self._subcommand_config()
        if self.subcommand == "predict" and config.get("return_predictions") is None:
            config.return_predictions = False
        if config.trainer.default_root_dir is None and config.get("config"):
            config.trainer.default_root_dir = default_run_dir(str(config.config[-1]))
        run_dir = config.trainer.default_root_dir or os.getcwd()
        for spec in _wandb_loggers(config.trainer.logger):
            init = spec.init_args
            if init.get("save_dir") in (None, ".") and init.get("dir") is None:
                init.save_dir = run_dir
            id_file = Path(init.save_dir or init.dir) / WANDB_ID_FILE
            resuming = self.subcommand == "fit" and config.get("ckpt_path") is not None
            if resuming and init.get("id") is None and init.get("version") is None and id_file.is_file():
                init.id = id_file.read_text().strip()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def before_fit(self) -> None:
        """Records the W&B run id in the run directory (rank 0) for a later resume."""
        if rank_zero_only.rank != 0:
            return
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                Path(logger.save_dir).mkdir(parents=True, exist_ok=True)
                (Path(logger.save_dir) / WANDB_ID_FILE).write_text(logger.experiment.id)

    def _finish_wandb(self) -> None:
        """Ends the W&B run with the command (Lightning leaves it open for further trainer calls)."""
        if rank_zero_only.rank == 0 and any(isinstance(lg, WandbLogger) for lg in self.trainer.loggers):
            wandb.finish()

    after_fit = after_validate = after_test = after_predict = _finish_wandb


def main(args: ArgsType = None) -> None:
    """Entry point of ``train.py``; a checkpoint that does not fit the model is a one-line error."""
    try:
        CorrMatchCLI(args=args)
    except CheckpointMismatchError as error:
        raise SystemExit(f"error: {error}") from None
