"""The command line: one config per dataset × method with the releases' settings, the split and crop as
arguments, the README's commands and paths, fit → validate → test → predict, and one-line errors that
leave an existing run untouched."""

from __future__ import annotations

import hashlib
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, WANDB, run_train, tiny_config
from PIL import Image

from corrmatch.cli import CorrMatchCLI, _warn_slow_precision, default_run_dir, main
from corrmatch.data import SemiSupervisedDataModule, generate_demo
from corrmatch.data.presets import DEMO_CLASSES
from corrmatch.data.splits import main as splits_main
from corrmatch.methods import SemiSupervisedMethod

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

MISSING_ROOT = "/nonexistent/corrmatch-data"
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
README = (REPO / "README.md").read_text()

# The settings of the release that published each config's numbers (UniMatch's configs/*.yaml for the
# baselines, CorrMatch's configs/*.yaml for CorrMatch; DESIGN.md §3, §5): output stride, ASPP rates,
# batch per GPU, lr, lr_multi, criterion, OHEM min_kept, conf_thresh, eval mode, sliding-window epochs,
# epochs, crop.
UNIMATCH_PASCAL = (16, (6, 12, 18), 2, 0.001, 10.0, "ce", None, 0.95, "original", 0, 80, 321)
UNIMATCH_CITYSCAPES = (16, (6, 12, 18), 2, 0.005, 1.0, "ohem", 200_000, 0.0, "sliding_window", 0, 240, 801)
RELEASES = {
    "pascal/supervised": UNIMATCH_PASCAL[:7] + (None,) + UNIMATCH_PASCAL[8:],
    "pascal/fixmatch": UNIMATCH_PASCAL,
    "pascal/unimatch": UNIMATCH_PASCAL,
    "pascal/corrmatch": (8, (12, 24, 36), 4, 0.001, 10.0, "ce", None, None, "original", 0, 80, 321),
    "cityscapes/supervised": UNIMATCH_CITYSCAPES[:7] + (None,) + UNIMATCH_CITYSCAPES[8:],
    "cityscapes/fixmatch": UNIMATCH_CITYSCAPES,
    "cityscapes/unimatch": UNIMATCH_CITYSCAPES,
    "cityscapes/corrmatch": (
        8,
        (12, 24, 36),
        2,
        0.005,
        1.0,
        "ohem",
        100_000,
        None,
        "center_crop",
        20,
        240,
        801,
    ),
}


def build(config: Path | str, *extra: str) -> CorrMatchCLI:
    """Parses ``config`` and instantiates model, datamodule and trainer (network on the meta device,
    no pretrained weights: nothing is downloaded)."""
    no_download = "--model.network.encoder_weights=null"
    with torch.device("meta"):
        return CorrMatchCLI(args=["--config", str(config), no_download, *extra], run=False)


# UniMatch V2's settings (its configs/*.yaml and the published runs' logs; DESIGN.md §7), shared by
# CorrMatch on DINOv2: encoder, batch per GPU, epochs, crop, criterion, OHEM min_kept, conf_thresh,
# eval mode, class count.
V2_RELEASES = {
    "pascal/unimatch_v2": ("dinov2_base", 4, 60, 518, "ce", None, 0.95, "original", 21),
    "cityscapes/unimatch_v2": ("dinov2_base", 2, 180, 798, "ohem", 200_000, 0.95, "sliding_window", 19),
    "ade20k/unimatch_v2": ("dinov2_base", 2, 60, 518, "ce", None, 0.95, "original", 150),
    "coco/unimatch_v2": ("dinov2_base", 4, 20, 518, "ce", None, 0.95, "original", 81),
    "pascal/corrmatch_dinov2": ("dinov2_base", 4, 60, 518, "ce", None, None, "original", 21),
    "cityscapes/corrmatch_dinov2": ("dinov2_base", 2, 180, 798, "ohem", 200_000, None, "sliding_window", 19),
}


def test_one_config_per_dataset_and_method() -> None:
    names = {str(path.relative_to(REPO / "configs")) for path in CONFIGS}
    expected = {f"{key}.yaml" for key in (*RELEASES, *V2_RELEASES)} | {"demo.yaml", "folder/corrmatch.yaml"}
    assert expected == names


@pytest.mark.parametrize("name", sorted(V2_RELEASES))
def test_dinov2_configs_use_unimatch_v2_settings(name: str) -> None:
    cli = build(REPO / "configs" / f"{name}.yaml", "--trainer.logger=false")
    model, data, hp = cli.model, cli.datamodule, cli.model.hparams
    resolved = (
        model.network.encoder_name,
        data.batch_size,
        cli.trainer.max_epochs,
        data.crop_size,
        hp.criterion,
        hp.ohem_min_kept if hp.criterion == "ohem" else None,
        hp.get("conf_thresh"),
        hp.eval_mode,
        hp.num_classes,
    )
    assert resolved == V2_RELEASES[name]
    assert (hp.optimizer, hp.lr, hp.lr_multi, hp.weight_decay) == ("adamw", 5e-6, 40.0, 0.01)
    assert not model.network.lock_backbone and hp.reference_global_batch == 4 * data.batch_size
    if hp.criterion == "ohem":
        assert hp.ohem_thresh == 0.7
    if "corrmatch" in name:
        assert (hp.thresh_init, hp.thresh_momentum, hp.num_region_samples) == (0.85, 0.999, 128)
    else:
        assert hp.ema_ceiling == 0.996


def test_one_line_of_the_folder_config_trains_dinov2_small(tmp_path: Path) -> None:
    """The README's line replaces the folder config's network line; the optimiser follows."""
    line = re.search(r"^ +network: \{encoder_name: dinov2_small[^\n]*$", README, re.M).group(0)
    original = (REPO / "configs/folder/corrmatch.yaml").read_text()
    current = re.search(r"^ +network: \{encoder_name: tu-resnet101s[^\n]*$", original, re.M).group(0)
    config = tmp_path / "corrmatch.yaml"
    config.write_text(original.replace(current, line))
    assert sum(a != b for a, b in zip(original.splitlines(), config.read_text().splitlines())) == 1
    cli = build(config, "--data.root=my_data", "--data.num_classes=3", "--data.split=10pct", "--trainer.logger=false")
    assert cli.model.network.encoder_name == "dinov2_small" and type(cli.model.net).__name__ == "DPT"
    assert (cli.model.hparams.optimizer, cli.model.hparams.lr, cli.model.hparams.lr_multi) == ("adamw", 5e-6, 40.0)
    assert Path(cli.trainer.default_root_dir) == Path("runs/my_data/corrmatch_dinov2_small/10pct")
    resnet = build(REPO / "configs/folder/corrmatch.yaml", "--data.num_classes=3", "--trainer.logger=false")
    assert (resnet.model.hparams.optimizer, resnet.model.hparams.lr, resnet.model.hparams.lr_multi) == ("sgd", 0.001, 10.0)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_config_builds_without_data(config: Path) -> None:
    classes = ["--data.num_classes=3"] if config.parent.name == "folder" else []
    cli = build(config, f"--data.root={MISSING_ROOT}", "--trainer.logger=false", *classes)
    assert isinstance(cli.model, SemiSupervisedMethod)
    assert isinstance(cli.datamodule, SemiSupervisedDataModule)
    assert cli.model.hparams.num_classes == cli.datamodule.num_classes
    assert cli.model.hparams.crop_size == cli.datamodule.crop_size
    assert cli.trainer.num_devices == 1 or torch.cuda.is_available()  # no GPU: one CPU process
    assert not Path(MISSING_ROOT).exists()


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_published_configs_use_their_releases_settings(name: str) -> None:
    cli = build(REPO / "configs" / f"{name}.yaml", "--trainer.logger=false")
    model, data, hp = cli.model, cli.datamodule, cli.model.hparams
    conf = hp.get("conf_thresh")
    min_kept = hp.ohem_min_kept if hp.criterion == "ohem" else None
    resolved = (
        model.network.output_stride,
        model.network.atrous_rates,
        data.batch_size,
        hp.lr,
        hp.lr_multi,
        hp.criterion,
        min_kept,
        conf,
        hp.eval_mode,
        hp.sliding_window_last_epochs,
        cli.trainer.max_epochs,
        data.crop_size,
    )
    assert resolved == RELEASES[name]
    assert model.network.encoder_name == "tu-resnet101s" and model.network.head == "paper"
    assert hp.reference_global_batch == 4 * data.batch_size  # 4 GPUs
    if name.endswith("corrmatch"):
        assert (hp.thresh_init, hp.thresh_momentum, hp.num_region_samples) == (0.85, 0.999, 128)
    if hp.criterion == "ohem":
        assert hp.ohem_thresh == 0.7


def test_split_and_crop_are_arguments(tmp_path: Path) -> None:
    root = tmp_path / "pascal"
    cli = build(
        REPO / "configs/pascal/corrmatch.yaml",
        f"--data.root={root}",
        "--data.split=1_16",
        "--data.crop_size=513",
    )
    assert cli.datamodule.splits == {
        "labeled": str(root / "splits/1_16/labeled.txt"),
        "unlabeled": str(root / "splits/1_16/unlabeled.txt"),
        "val": str(root / "splits/val.txt"),
    }
    assert cli.model.hparams.crop_size == 513
    assert Path(cli.trainer.default_root_dir) == Path("runs/pascal/corrmatch/1_16_513")
    assert (
        Path(cli.trainer.checkpoint_callback.dirpath)
        == Path("runs/pascal/corrmatch/1_16_513/checkpoints").resolve()
    )


def test_run_directory_names() -> None:
    assert default_run_dir("pascal", "data/pascal", "92", 321, "corrmatch.methods.CorrMatch") == Path(
        "runs/pascal/corrmatch/92"
    )
    assert default_run_dir("cityscapes", None, "1_8", 801, "corrmatch.methods.SupervisedOnly") == Path(
        "runs/cityscapes/supervised/1_8"
    )
    assert default_run_dir("folder", "/data/leaves", "10pct", 321, "corrmatch.methods.UniMatch") == Path(
        "runs/leaves/unimatch/10pct"
    )
    assert default_run_dir("demo", "data/demo", None, None, "corrmatch.methods.CorrMatch") == Path(
        "runs/demo/corrmatch"
    )
    assert default_run_dir(
        "pascal", "data/pascal", "92", 518, "corrmatch.methods.UniMatchV2", "dinov2_base"
    ) == Path("runs/pascal/unimatch_v2_dinov2_base/92_518")


def test_every_path_the_readme_names_exists() -> None:
    paths = set(re.findall(r"(?<![\w/.])((?:configs|benchmarks|docs|corrmatch|tests)/[\w./-]*\w)", README))
    paths |= {"train.py", "BENCHMARKS.md", "Dockerfile", "pyproject.toml"}
    assert len(paths) > 10
    missing = sorted(p for p in paths if "<" not in p and not (REPO / p).exists())
    assert not missing


def test_each_published_row_of_the_readme_is_reachable_by_its_command() -> None:
    rows = re.findall(r"^\| (\w+) \| (\w+) \| ([\d./ ]+) \| `(python train\.py fit [^`]+)` \|$", README, re.M)
    assert len(rows) >= 6
    for dataset, method, _numbers, command in rows:
        args = command.split()[3:]
        cli = build(REPO / args[1], *args[2:], "--trainer.logger=false")
        split, run_dir = cli.datamodule.split, Path(cli.trainer.default_root_dir)
        assert run_dir.parent == Path(f"runs/{dataset.lower()}/{method}")
        assert run_dir.name in (split, f"{split}_{cli.datamodule.crop_size}")


def test_fit_validate_test_predict(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    config = tiny_config(tmp_path / "tiny.yaml", tiny_root, run, model={"reference_global_batch": 16})
    with pytest.warns(UserWarning, match=r"global batch is 2 .* set for a global batch of 16"):
        main(["fit", "--config", str(config)])
    out = capsys.readouterr().out
    assert "val mIoU = " in out
    assert re.search(rf"fit finished in \d+ min \d\d s, run directory {re.escape(str(run))}$", out, re.M)
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run / "checkpoints").glob("best-epoch=000-miou=*.ckpt"))) == 1

    main(["validate", "--config", str(run / "config.yaml"), "--ckpt_path", "last"])
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
    assert f"predict wrote the predictions of 2 images to {run / 'predictions'} (labels, color)" in (
        capsys.readouterr().out
    )
    assert {p.name for p in run.glob("*_config.yaml")} == {
        f"{s}_config.yaml" for s in ("validate", "test", "predict")
    }

    palette = SemiSupervisedDataModule(preset="demo").palette
    val_images = [line.split()[0] for line in (tiny_root / "splits" / "val.txt").read_text().splitlines()]
    assert {path.name for path in (run / "predictions" / "labels").iterdir()} == {
        Path(image).with_suffix(".png").name for image in val_images
    }  # the file names alone, without the images' folder (JPEGImages/)
    for image in val_images:
        name = Path(image).with_suffix(".png").name
        labels = np.array(Image.open(run / "predictions" / "labels" / name))
        color = np.array(Image.open(run / "predictions" / "color" / name))
        assert labels.shape == Image.open(tiny_root / image).size[::-1]
        assert labels.max() < 6 and np.array_equal(color, palette[labels])


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished tiny run (config, run directory) and a copy of the data to break."""
    tmp = tmp_path_factory.mktemp("finished")
    config = tiny_config(tmp / "tiny.yaml", tiny_root, tmp / "run", trainer={"limit_train_batches": 1})
    main(["fit", "--config", str(config)])
    return config, tmp / "run"


def broken_data(tiny_root: Path, tmp_path: Path, fault: str) -> Path:
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    labeled = root / "splits" / "labeled.txt"
    first_image, first_mask = labeled.read_text().splitlines()[0].split()
    if fault == "missing image":
        (root / first_image).unlink()
    elif fault == "bad mask values":
        mask = np.array(Image.open(root / first_mask))
        mask[0, 0] = 17
        Image.fromarray(mask).save(root / first_mask)
    elif fault == "size mismatch":
        Image.fromarray(np.zeros((5, 7), np.uint8)).save(root / first_mask)
    elif fault == "corrupt image":
        (root / first_image).write_bytes(b"not a jpeg")
    elif fault == "empty split":
        labeled.write_text("")
    elif fault == "missing split":
        labeled.unlink()
    elif fault == "one class in the labeled masks":
        for line in labeled.read_text().splitlines():
            mask = root / line.split()[1]
            Image.fromarray(np.zeros_like(np.array(Image.open(mask)))).save(mask)
    return root


BAD_INPUTS = {
    "missing root": (
        ["--data.root=/nonexistent/corrmatch-data", "--data.preset=pascal", "--data.split=92"],
        r"nonexistent",
    ),
    "unknown split": (["--data.split=nosuch"], r"data\.split 'nosuch'"),
    "not a checkpoint": (["--ckpt_path={bad}"], r"not a PyTorch checkpoint: .*bad\.ckpt"),
    "missing checkpoint": (["--ckpt_path={tmp}/absent.ckpt"], r"no such file: .*absent\.ckpt"),
    "other network": (
        ["--ckpt_path=last", "--model.network.encoder_name=resnet34"],
        r"network\.encoder_name='resnet18' but the model has network\.encoder_name='resnet34'",
    ),
    "other class count": (
        ["--ckpt_path=last", "--data.num_classes=4", "--data.check_masks=false"],
        r"num_classes=6 but the model has num_classes=4",
    ),
    "other method": (
        [
            "--ckpt_path=last",
            "--model.class_path=corrmatch.methods.FixMatch",
            "--model.conf_thresh=0.5",
        ],
        r"written by CorrMatch, the model is FixMatch",
    ),
    "missing official checkpoint": (
        ["--model.official_checkpoint={tmp}/official.pth"],
        r"official_checkpoint: no such file: .*official\.pth",
    ),
    "bad config value": (["--model.network.output_stride=4"], r"output_stride"),
    "unknown preset": (["--data.preset=nosuch"], r"data\.preset"),
    "new run over a finished one": ([], r"already holds a run; continue it with --ckpt_path last"),
    "last of a run that does not exist": (
        ["--ckpt_path=last", "--trainer.default_root_dir={tmp}/elsewhere"],
        r"--ckpt_path last: no checkpoint .*elsewhere/checkpoints/last\.ckpt \(start without --ckpt_path\)",
    ),
    "best of a run that does not exist": (
        ["--ckpt_path=best", "--trainer.default_root_dir={tmp}/elsewhere"],
        r"--ckpt_path best: no best-\*\.ckpt in .*elsewhere/checkpoints",
    ),
    "one class": (["--data.num_classes=1"], r"data\.num_classes is 1; .* so name the background too"),
    "zero crop": (["--data.crop_size=0"], r"data\.crop_size must be at least 1, got 0"),
    "negative crop": (["--data.crop_size=-5"], r"data\.crop_size must be at least 1, got -5"),
    "crop too small for the network": (
        ["--data.crop_size=7"],
        r"data\.crop_size 7 is too small for the network: at least 32",
    ),
    "zero batch": (["--data.batch_size=0"], r"data\.batch_size must be at least 1, got 0"),
    "zero validation batch": (["--data.val_batch_size=0"], r"data\.val_batch_size must be at least 1"),
    "negative workers": (["--data.num_workers=-1"], r"data\.num_workers must be at least 0, got -1"),
    "zero demo scale": (["--data.demo_texture_scale=0"], r"data\.demo_texture_scale must be above 0"),
    "negative learning rate": (["--model.lr=-0.01"], r"model\.lr must be at least 0, got -0\.01"),
    "negative rate factor": (["--model.lr_multi=-1"], r"model\.lr_multi must be at least 0"),
    "negative weight decay": (["--model.weight_decay=-1e-4"], r"model\.weight_decay must be at least 0"),
    "threshold above one": (["--model.thresh_init=1.5"], r"model\.thresh_init must be between 0 and 1"),
    "momentum above one": (["--model.thresh_momentum=2"], r"model\.thresh_momentum must be between 0 and 1"),
    "negative region samples": (["--model.num_region_samples=-1"], r"model\.num_region_samples must be at least 0"),
    "zero reference batch": (["--model.reference_global_batch=0"], r"model\.reference_global_batch must be at least 1"),
    "negative image count": (["--wandb_images.num_images=-1"], r"wandb_images\.num_images must be at least 0"),
    "more GPUs than the machine has": (
        ["--ckpt_path=last", "--trainer.accelerator=gpu", "--trainer.devices=64"],
        r"trainer\.accelerator gpu with trainer\.devices 64: torch \S+ sees \d+ CUDA GPUs? on this machine; "
        r"(pass --trainer\.devices \d+ or fewer|set trainer\.accelerator auto or cpu)$",
    ),
    "strategy the accelerator cannot run": (
        ["--ckpt_path=last", "--trainer.strategy=fsdp"],
        r"^error: trainer: The strategy `fsdp` requires a GPU accelerator",
    ),
    "overlay weight above one": (["--predict_writer.overlay_alpha=2"], r"predict_writer\.overlay_alpha must be between 0 and 1"),
}
DATA_FAULTS = [
    "missing image",
    "bad mask values",
    "size mismatch",
    "corrupt image",
    "empty split",
    "missing split",
    "one class in the labeled masks",
]


@pytest.mark.parametrize("method", ["SupervisedOnly", "CorrMatch"])
def test_demo_config_gives_every_method_the_same_iterations(
    method: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """configs/demo.yaml counts iterations, not epochs: SupervisedOnly (an epoch = the labeled list)
    and CorrMatch (an epoch = the unlabeled list) train the same number of steps and validate once."""
    root = generate_demo(tmp_path / "plain", num_labeled=4, num_unlabeled=8, num_val=2, size=72, clutter=False)
    run = tmp_path / "run"
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "demo.yaml"),
            f"--model.class_path=corrmatch.methods.{method}",
            f"--data.root={root}",
            "--data.crop_size=48",
            "--data.batch_size=2",
            "--trainer.max_steps=5",
            "--trainer.val_check_interval=5",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={run}",
        ]
    )
    assert capsys.readouterr().out.count("val mIoU = ") == 1
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 5
    assert checkpoint["epoch"] == (2 if method == "SupervisedOnly" else 1)


@pytest.mark.parametrize("case", [*BAD_INPUTS, *DATA_FAULTS])
def test_bad_input_is_one_error_line_and_leaves_the_run_untouched(
    case: str,
    finished_run: tuple[Path, Path],
    tiny_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    config, run = finished_run
    (tmp_path / "bad.ckpt").write_bytes(b"certainly not a checkpoint")
    if case in DATA_FAULTS:
        root = broken_data(tiny_root, tmp_path, case)
        splits = [f"--data.{role}_split={root}/splits/{role}.txt" for role in ("labeled", "unlabeled", "val")]
        args = [
            "--ckpt_path=last",
            "--data.preset=folder",
            "--data.num_classes=6",
            f"--data.root={root}",
            *splits,
        ]
        pattern = r"labeled\.txt"
    else:
        args, pattern = BAD_INPUTS[case]
        args = [arg.format(bad=tmp_path / "bad.ckpt", tmp=tmp_path) for arg in args]
    before = snapshot(run)
    error = cli_error(capsys, ["fit", "--config", str(config), *args])
    assert re.search(pattern, error), error
    assert snapshot(run) == before


def test_fast_dev_run_checks_the_pipeline_and_leaves_no_run_behind(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The README's pipeline check: one training and one validation batch, W&B on in the config, and
    nothing a later fit in the same run directory would take for a run."""
    run = tmp_path / "run"
    config = tiny_config(tmp_path / "tiny.yaml", tiny_root, run, trainer={"logger": WANDB})
    main(["fit", "--config", str(config), "--trainer.fast_dev_run=true"])
    out = capsys.readouterr().out
    assert out.count("val mIoU = ") == 1 and "fit finished in" in out
    assert not [path for path in run.rglob("*") if path.is_file()]
    main(["fit", "--config", str(config)])
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()


def test_train_py_prints_no_traceback_and_a_failed_start_blocks_nothing(
    tiny_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    config = tiny_config(tmp_path / "tiny.yaml", tiny_root, run, trainer={"limit_train_batches": 1})
    result = run_train("fit", "--config", str(config), "--data.split=nosuch")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: data.split 'nosuch'")
    assert not (run / "config.yaml").exists() and not (run / "checkpoints").exists()
    with pytest.raises(Exception, match="nosuch") as debug:  # --debug: the exception itself, traceback and all
        main(["fit", "--config", str(config), "--data.split=nosuch", "--debug"])
    assert not isinstance(debug.value, SystemExit)
    main(["fit", "--config", str(config)])
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()


MARKUP = re.compile(r"``|:(?:func|class|meth|data|attr|mod):")


def cli_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """The one ``error:`` line a refused ``train.py <args>`` prints (exit status 2), from the CLI's ``main``
    in this process."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


def help_output(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """What ``train.py <args>`` prints for a help option, from the CLI's ``main`` in this process."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


def option_help(text: str, prefix: str) -> dict[str, str]:
    """``{option: its description}`` of the options starting with ``prefix`` in a ``--help`` output: the
    text after the option's name and metavar, without jsonargparse's ``(type: …, default: …)``."""
    found = {}
    for block in re.split(r"\n  (?=--)", text):
        name = block.split(maxsplit=1)[0].rstrip(",")
        if not name.startswith(prefix) or name.endswith(".help"):
            continue
        first, _, rest = block.partition("\n")
        invocation_and_help = re.split(r"\s{2,}", first.strip(), maxsplit=1)
        described = invocation_and_help[1] if len(invocation_and_help) == 2 else ""
        described = " ".join(f"{described} {rest}".split())
        found[name] = re.sub(r"\s*\((?:required, )?(?:type|default): .*\)$", "", described)
    return found


def test_help_describes_the_subcommands_and_the_examples_whole() -> None:
    result = run_train("--help")
    assert result.returncode == 0 and "corrmatch" in result.stdout
    lines = result.stdout.splitlines()
    listed = result.stdout.split("Available subcommands:", 1)[1].split("\n\n", 1)[0]
    descriptions = re.split(r"\n    (?=fit|validate|test|predict)", listed)[1:]
    assert [text.split()[0] for text in descriptions] == ["fit", "validate", "test", "predict"]
    for text in descriptions:
        assert " ".join(text.split()).endswith("."), text  # sentences that end, not cut off
    assert "  python train.py fit --config configs/demo.yaml" in lines  # the examples keep their lines
    assert not MARKUP.search(result.stdout)


@pytest.mark.parametrize("method", ["SupervisedOnly", "FixMatch", "UniMatch", "CorrMatch", "UniMatchV2"])
def test_each_methods_help_describes_every_option_in_plain_text(method: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = help_output(capsys, "fit", "--model.help", method)
    options = option_help(text, "--model.")
    assert "--model.lr" in options and "--model.network.encoder_name" in options
    assert "--model.ohem_min_kept" in options and "--model.ohem_thresh" in options
    assert not [name for name, text in options.items() if not text], options
    assert not MARKUP.search(text)


def test_the_toolkits_option_groups_describe_every_option_in_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_output(capsys, "fit", "--help")
    for group in ("--data.", "--wandb_images.", "--predict_writer."):
        options = option_help(text, group)
        assert options, group
        assert not [name for name, text in options.items() if not text or MARKUP.search(text)], options
    own = ("dirpath", "filename", "monitor", "mode", "save_last", "save_top_k", "auto_insert_metric_name")
    checkpoint = option_help(text, "--checkpoint.")
    assert all(checkpoint[f"--checkpoint.{name}"] and not MARKUP.search(checkpoint[f"--checkpoint.{name}"]) for name in own)
    augment = help_output(capsys, "fit", "--data.augment.help", "AugmentConfig")
    options = option_help(augment, "--data.augment.")
    assert len(options) == 12 and all(options.values()) and not MARKUP.search(augment)


def test_a_budget_shorter_than_its_validation_interval_validates_once_at_its_end(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """configs/demo.yaml validates every 150 steps; cut to 3 it still prints one mIoU and writes the
    best checkpoint at step 3. A run of fewer epochs than check_val_every_n_epoch validates after its
    last one."""
    root = generate_demo(tmp_path / "plain", num_labeled=4, num_unlabeled=8, num_val=2, size=72, clutter=False)
    common = [f"--data.root={root}", "--data.crop_size=48", "--data.batch_size=2", "--trainer.logger=false"]
    main(["fit", "--config", str(REPO / "configs" / "demo.yaml"), *common, "--trainer.max_steps=3",
          f"--trainer.default_root_dir={tmp_path / 'steps'}"])
    assert capsys.readouterr().out.count("val mIoU = ") == 1
    best = list((tmp_path / "steps" / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1 and torch.load(best[0], weights_only=False)["global_step"] == 3
    main(["fit", "--config", str(REPO / "configs" / "demo.yaml"), *common, "--trainer.max_steps=-1",
          "--trainer.max_epochs=2", "--trainer.check_val_every_n_epoch=5", "--trainer.val_check_interval=1.0", "--trainer.limit_train_batches=2",
          f"--trainer.default_root_dir={tmp_path / 'epochs'}"])
    assert capsys.readouterr().out.count("val mIoU = ") == 1
    assert len(list((tmp_path / "epochs" / "checkpoints").glob("best-epoch=001-*.ckpt"))) == 1


def test_validate_best_reads_the_runs_best_checkpoint(
    finished_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config, run = finished_run
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    main(["validate", "--config", str(config), "--ckpt_path", "best", f"--trainer.default_root_dir={run}"])
    assert f"val mIoU = {best.stem.rsplit('miou=', 1)[1]}" in capsys.readouterr().out
    only_last = tmp_path / "only_last"
    (only_last / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "checkpoints" / "last.ckpt", only_last / "checkpoints")
    error = cli_error(capsys, ["validate", "--config", str(config), "--ckpt_path", "best", f"--trainer.default_root_dir={only_last}"])
    assert re.search(r"--ckpt_path best: no best-\*\.ckpt in .*only_last/checkpoints.*use --ckpt_path last", error)


def test_a_folder_dataset_of_one_class_is_refused_with_what_to_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Masks all 0 and one name in classes.yaml: the error says to name the background too; with two
    names and masks that still hold one class, the labeled list is refused before training."""
    root = tmp_path / "leaves"
    for index in range(6):
        for folder, array in (("images", np.full((40, 40, 3), 90 + index, np.uint8)), ("masks", np.zeros((40, 40), np.uint8))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / folder / f"{index}.png")
    (root / "classes.yaml").write_text("- leaf\n")
    splits_main(["--root", str(root), "--preset", "folder", "--labeled", "2", "--val", "1", "--out", str(root / "splits" / "two")])
    command = ["fit", "--config", str(REPO / "configs/folder/corrmatch.yaml"), f"--data.root={root}", "--data.split=two",
               "--model.network.encoder_name=resnet18", "--model.network.encoder_weights=null", "--trainer.logger=false",
               f"--trainer.default_root_dir={tmp_path / 'run'}"]
    assert cli_error(capsys, command) == (
        f"error: {root / 'classes.yaml'} names 1 class ('leaf'); a segmentation needs at least two classes, so name "
        "the background too, e.g. [background, leaf] with mask value 0 for background and 1 for leaf"
    )
    (root / "classes.yaml").write_text("- background\n- leaf\n")
    assert re.search(r"^error: .*labeled\.txt: the labeled masks hold only class 0 of the 2", cli_error(capsys, command))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "accelerator, precision", [("cpu", "bf16-mixed"), ("cpu", "16-mixed"), ("cpu", "32-true"), ("cuda", "bf16-mixed")]
)
def test_half_precision_on_a_cpu_without_avx512_is_warned_of(accelerator: str, precision: str) -> None:
    """The warning falls where bf16 has no hardware (a CPU whose torch capability is AVX2 or less), and
    only for half precision on the CPU."""
    slow = accelerator == "cpu" and precision != "32-true" and torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warn_slow_precision(accelerator, precision)
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == (1 if slow else 0)
    assert all(re.match(rf"trainer\.precision {precision} on a CPU with \w+ only: .* slower than --trainer\.precision "
                        "32-true$", message) for message in messages)
