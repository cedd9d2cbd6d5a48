"""The command line: every config builds, configs compose, and fit → validate → test → predict run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, tiny_config
from PIL import Image
from pytorch_lightning.loggers import WandbLogger

from corrmatch.cli import CorrMatchCLI, check_composition, main
from corrmatch.data import SemiSupervisedDataModule
from corrmatch.data.presets import DEMO_CLASSES
from corrmatch.methods import SemiSupervisedMethod

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

MISSING_ROOT = "/nonexistent/corrmatch-data"
ON_CPU = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.num_nodes=1",
    "--trainer.strategy=auto",
    "--trainer.sync_batchnorm=false",
    "--model.init_args.encoder_weights=null",
]
ALL_YAML = sorted((REPO / "configs").rglob("*.yaml"))
CONFIGS = sorted(  # runnable configs; pieces (_base/, _*.yaml) are tested through them
    p for p in (REPO / "configs").rglob("*.yaml") if not any(part.startswith("_") for part in p.parts)
)


def build(config: Path, *extra: str) -> CorrMatchCLI:
    """Parses ``config`` and instantiates model, datamodule and trainer (network on the meta device)."""
    with torch.device("meta"):
        return CorrMatchCLI(args=["--config", str(config), *ON_CPU, *extra], run=False)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_config_builds_without_data(config: Path) -> None:
    cli = build(config, f"--data.root={MISSING_ROOT}", "--trainer.logger=false")
    assert isinstance(cli.model, SemiSupervisedMethod)
    assert isinstance(cli.datamodule, SemiSupervisedDataModule)
    assert cli.model.hparams.num_classes == cli.datamodule.num_classes
    assert cli.model.hparams.crop_size == cli.datamodule.crop_size
    assert cli.model.num_strong_views == cli.datamodule.num_strong_views
    assert cli.model.labeled_only == cli.datamodule.labeled_only
    assert not Path(MISSING_ROOT).exists()


@pytest.mark.parametrize("config", ALL_YAML, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_no_config_overrides_a_piece_it_names(config: Path) -> None:
    check_composition(config)


def test_configs_compose_from_pieces(tmp_path: Path) -> None:
    """A paper config names a trainer piece (which names the W&B piece), writes the other groups
    inline and gets its run directory from its path; key-by-key overrides come from the command line."""
    configs = tmp_path / "configs"
    (configs / "cityscapes" / "unimatch").mkdir(parents=True)
    (configs / "cityscapes" / "_trainer.yaml").write_text(
        f"max_epochs: 240\nsync_batchnorm: true\nlogger: {REPO / 'configs/_base/wandb.yaml'}\n"
    )
    config = configs / "cityscapes" / "unimatch" / "1_16.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "trainer": "../_trainer.yaml",
                "model": {"class_path": "corrmatch.methods.UniMatch", "init_args": {"conf_thresh": 0.0}},
                "data": {"preset": "cityscapes", "root": MISSING_ROOT, "num_strong_views": 2},
            }
        )
    )
    cli = build(config, "--model.init_args.lr=0.004")
    assert cli.trainer.max_epochs == 240
    assert cli.model.hparams.lr == 0.004 and cli.model.hparams.conf_thresh == 0.0
    assert (cli.model.hparams.num_classes, cli.model.hparams.crop_size) == (19, 801)
    run_dir = Path("runs/cityscapes/unimatch/1_16")
    assert Path(cli.trainer.default_root_dir) == run_dir
    logger = cli.trainer.logger
    assert isinstance(logger, WandbLogger) and logger._offline and Path(logger.save_dir) == run_dir


def test_a_piece_with_dotted_overrides_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    (tmp_path / "_trainer.yaml").write_text("max_epochs: 80\n")
    config.write_text("trainer: _trainer.yaml\ntrainer.max_epochs: 3\n")
    with pytest.raises(
        ValueError, match=r"'trainer' names the piece .* 'trainer.max_epochs' sets a key of it"
    ):
        build(config)


def test_fit_validate_test_predict(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    config = tiny_config(tmp_path / "tiny.yaml", tiny_root, run, model={"reference_global_batch": 16})
    with pytest.warns(UserWarning, match=r"global batch is 2 .* set for a global batch of 16"):
        main(["fit", "--config", str(config)])
    assert "val mIoU = " in capsys.readouterr().out
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run / "checkpoints").glob("best-epoch=000-miou=*.ckpt"))) == 1

    main(["validate", "--config", str(config), "--ckpt_path", "last"])
    out = capsys.readouterr().out
    miou = float(re.search(r"val mIoU = ([0-9.]+)", out).group(1))
    per_class = re.search(r"val IoU per class: (.*)", out).group(1).split(", ")
    assert [entry.rsplit(" ", 1)[0] for entry in per_class] == list(DEMO_CLASSES)
    assert sum(float(entry.rsplit(" ", 1)[1]) for entry in per_class) / len(per_class) == pytest.approx(
        miou, abs=0.01
    )
    main(["test", "--config", str(config), "--ckpt_path", "last"])
    assert "test mIoU = " in capsys.readouterr().out
    main(["predict", "--config", str(config), "--ckpt_path", "last"])
    assert {p.name for p in run.glob("*_config.yaml")} == {
        f"{s}_config.yaml" for s in ("validate", "test", "predict")
    }

    palette = SemiSupervisedDataModule(preset="demo").palette
    val_images = [line.split()[0] for line in (tiny_root / "splits" / "val.txt").read_text().splitlines()]
    for image in val_images:
        name = Path(image).with_suffix(".png")
        labels = np.array(Image.open(run / "predictions" / "labels" / name))
        color = np.array(Image.open(run / "predictions" / "color" / name))
        assert labels.shape == Image.open(tiny_root / image).size[::-1]
        assert labels.max() < 6 and np.array_equal(color, palette[labels])


def test_run_directory_guards(tiny_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = tiny_config(tmp_path / "tiny.yaml", tiny_root, run, trainer={"limit_train_batches": 1})
    main(["fit", "--config", str(config)])
    with pytest.raises(RuntimeError, match="holds the config of another run"):
        main(["fit", "--config", str(config), "--model.init_args.lr=0.02"])
    with pytest.raises(
        SystemExit,
        match=r"^error: checkpoint has encoder_name='resnet18' but the model has encoder_name='resnet34'$",
    ):
        main(["fit", "--config", str(config), "--ckpt_path=last", "--model.init_args.encoder_name=resnet34"])
    with pytest.raises(
        SystemExit, match=r"^error: checkpoint has num_classes=6 but the model has num_classes=4$"
    ):
        main(
            [
                "fit",
                "--config",
                str(config),
                "--ckpt_path=last",
                "--data.num_classes=4",
                "--data.check_masks=false",
            ]
        )
    assert "lr: 0.02" not in (run / "config.yaml").read_text()
