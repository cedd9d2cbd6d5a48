"""Using a trained model: Segmenter against ``train.py predict``, every input kind, checkpoints of every
kind (the toolkit's, a run directory, the authors', save_pretrained), test-time augmentation (off: the
paper's evaluation bit for bit), overlays and confidence maps, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_NETWORK
from PIL import Image
from safetensors.torch import save_file

import corrmatch
from corrmatch import Segmenter
from corrmatch.cli import main
from corrmatch.compat import toolkit_to_official
from corrmatch.constants import IMAGENET_MEAN, IMAGENET_STD
from corrmatch.data.presets import DEMO_CLASSES, voc_palette
from corrmatch.errors import CheckpointError, ConfigError, DataError
from corrmatch.evaluation import (
    center_crop,
    segment_probabilities,
    sliding_window_scores,
    tta_views,
)
from corrmatch.metadata import INFERENCE_KEY, InferenceInfo
from corrmatch.methods import CorrMatch
from corrmatch.models import NetworkConfig
from corrmatch.models.deeplabv3plus import resize
from corrmatch.visualize import blend, confidence_image

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

KINDS = ("labels", "color", "overlay", "confidence")


def val_images(root: Path) -> list[str]:
    return [line.split()[0] for line in (root / "splits" / "val.txt").read_text().splitlines()]


def best_checkpoint(run: Path) -> Path:
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    return best


def read_png(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


@pytest.fixture(scope="module")
def model(tiny_run: Path) -> Segmenter:
    return Segmenter.from_checkpoint(tiny_run, device="cpu")


def tiny_net(correlation: bool = True, **network: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return NetworkConfig(**{**TINY_NETWORK, **network}).build(4, correlation=correlation).eval()


def one_line(error: pytest.ExceptionInfo, *names: str) -> None:
    message = str(error.value)
    assert "\n" not in message and all(name in message for name in names), message


# ---------------------------------------------------------------------- test-time augmentation (§4)


def paper_segment(logits, image: torch.Tensor, mode: str, crop: int) -> torch.Tensor:
    """The evaluation as it was before test-time augmentation existed."""
    if mode == "sliding_window":
        return sliding_window_scores(logits, image, crop).argmax(dim=1)
    if mode == "center_crop":
        image = center_crop(image, crop)
    return logits(image).argmax(dim=1)


@pytest.mark.parametrize("mode", ["original", "center_crop", "sliding_window"])
@torch.no_grad()
def test_without_tta_the_labels_are_the_papers_bit_for_bit(mode: str) -> None:
    net = tiny_net()
    image = torch.randn(2, 3, 47, 61, generator=torch.Generator().manual_seed(1))

    def logits(x: torch.Tensor) -> torch.Tensor:
        return net(x)["out"]

    expected = paper_segment(logits, image, mode, 33)
    for scales in (None, [1.0]):
        assert torch.equal(segment_probabilities(logits, image, mode, 33, scales, False)[0], expected)
        labels, probs = segment_probabilities(logits, image, mode, 33, scales, False)
        assert torch.equal(labels, expected)
        assert torch.allclose(probs.sum(dim=1), torch.ones(1), atol=1e-5)


@torch.no_grad()
def test_tta_averages_the_probabilities_of_scaled_and_mirrored_views() -> None:
    net = tiny_net()
    image = torch.randn(1, 3, 40, 52, generator=torch.Generator().manual_seed(2))

    def logits(x: torch.Tensor) -> torch.Tensor:
        return net(x)["out"]

    assert tta_views(40, 52, [0.5, 1.0], True) == [
        (20, 26, False),
        (20, 26, True),
        (40, 52, False),
        (40, 52, True),
    ]
    views = []
    for scale in (0.5, 1.0):
        scaled = resize(image, (round(40 * scale), round(52 * scale)))
        views.append(resize(logits(scaled).softmax(dim=1), (40, 52)))
        views.append(resize(logits(scaled.flip(-1)).softmax(dim=1).flip(-1), (40, 52)))
    expected = torch.stack(views).mean(dim=0)
    labels, probs = segment_probabilities(logits, image, "original", 64, [0.5, 1.0], True)
    assert torch.allclose(probs, expected, atol=1e-6)
    assert torch.equal(labels, probs.argmax(dim=1))
    assert not torch.equal(
        labels, segment_probabilities(logits, image, "original", 64)[0]
    )  # the views do change labels
    # sliding window: each view windowed at the crop, its probabilities normalised per pixel
    labels, probs = segment_probabilities(logits, image, "sliding_window", 30, [0.75, 1.25], True)
    assert probs.shape == (1, 4, 40, 52) and torch.allclose(probs.sum(dim=1), torch.ones(1), atol=1e-5)


def test_tta_is_an_option_of_every_method_and_off_by_default() -> None:
    method = CorrMatch(network=TINY_NETWORK, num_classes=4, crop_size=33)
    assert (method.hparams.tta_scales, method.hparams.tta_flip) == (None, False)
    image = torch.randn(1, 3, 40, 52, generator=torch.Generator().manual_seed(3))
    batch = {"image": image, "mask": torch.zeros(1, 40, 52, dtype=torch.long), "id": ["a.jpg"]}
    method.eval()
    with torch.no_grad():
        expected = paper_segment(method.logits, image, "sliding_window", 33)
        assert torch.equal(method.predict_step(batch, 0)["pred"], expected)
        assert torch.equal(
            method.validation_step(batch, 0)["pred"], paper_segment(method.logits, image, "original", 33)
        )
        method.hparams.tta_flip = True
        flipped = segment_probabilities(method.logits, image, "sliding_window", 33, None, True)[0]
        assert torch.equal(method.predict_step(batch, 0)["pred"], flipped)
        flipped = segment_probabilities(method.logits, image, "original", 33, None, True)[0]
        assert torch.equal(method.validation_step(batch, 0)["pred"], flipped)
    with pytest.raises(ConfigError, match="tta_scales"):
        CorrMatch(network=TINY_NETWORK, num_classes=4, tta_scales=[1.0, 0.0])


# ---------------------------------------------------------------------- Segmenter against train.py predict


def test_segmenter_equals_train_py_predict_and_writes_the_same_files(
    tiny_run: Path, tiny_root: Path, model: Segmenter, tmp_path: Path
) -> None:
    best = best_checkpoint(tiny_run)
    for tta, options in (
        ({}, []),
        (
            {"tta_flip": True, "tta_scales": [0.75, 1.25]},
            ["--model.tta_flip=true", "--model.tta_scales=[0.75,1.25]"],
        ),
    ):
        out = tmp_path / ("tta" if tta else "plain")
        main(
            [
                "predict",
                "--config",
                str(tiny_run / "config.yaml"),
                f"--ckpt_path={best}",
                f"--predict_writer.output_dir={out}",
                "--predict_writer.overlay=true",
                "--predict_writer.confidence=true",
                *options,
            ]
        )
        segmenter = Segmenter.from_checkpoint(best, device="cpu", **tta)
        written = tmp_path / ("ours_tta" if tta else "ours")
        for image in val_images(tiny_root):  # both name a prediction by the image's file name
            assert segmenter.write(tiny_root / image, written) == [Path(image).name]
            name = Path(image).with_suffix(".png").name
            labels = segmenter.predict(tiny_root / image)
            assert labels.shape == Image.open(tiny_root / image).size[::-1]
            assert np.array_equal(read_png(out / "labels" / name), labels.numpy())
            for kind in KINDS:
                assert np.array_equal(read_png(out / kind / name), read_png(written / kind / name)), kind
    names = [Path(image).with_suffix(".png").name for image in val_images(tiny_root)]
    assert any(  # the command line's TTA options took effect
        not np.array_equal(
            read_png(tmp_path / "tta" / "labels" / n), read_png(tmp_path / "plain" / "labels" / n)
        )
        for n in names
    )
    # the image blended with the palette, and the highest probability as 0-255
    path = tiny_root / val_images(tiny_root)[0]
    image = np.array(Image.open(path).convert("RGB"))
    labels, probs = model.predict(path, return_probs=True)
    palette, name = model.info.palette_array(), path.with_suffix(".png").name
    assert np.array_equal(
        read_png(tmp_path / "ours" / "overlay" / name), blend(image, labels.numpy(), palette)
    )
    expected = confidence_image(probs.amax(dim=0).numpy())
    assert np.array_equal(read_png(tmp_path / "ours" / "confidence" / name), expected)
    assert np.array_equal(read_png(tmp_path / "ours" / "color" / name), palette[labels.numpy()])


def test_every_input_kind_gives_the_same_class_map(model: Segmenter, tiny_root: Path) -> None:
    folder = tiny_root / "JPEGImages"
    by_name = model.predict(folder)
    assert sorted(by_name) == sorted(p.name for p in folder.glob("*.jpg"))
    name = sorted(by_name)[0]
    path = folder / name
    array = np.array(Image.open(path).convert("RGB"))
    expected = by_name[name]
    assert expected.dtype == torch.int64 and expected.shape == array.shape[:2]
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    for x in (path, str(path), Image.open(path), array, tensor):
        assert torch.equal(model.predict(x), expected)
    assert torch.equal(model.predict(torch.stack([tensor, tensor])), torch.stack([expected, expected]))
    normalised = model.preprocess(path)
    assert normalised.shape == (1, 3, *array.shape[:2]) and normalised.dtype == torch.float32
    assert torch.equal(model.predict(normalised)[0], expected)  # a float tensor is the network's input
    labels, probs = model.predict(path, return_probs=True)
    assert torch.equal(labels, expected) and probs.shape == (6, *array.shape[:2])
    assert torch.allclose(probs.sum(dim=0), torch.ones(1), atol=1e-5)
    assert torch.equal(probs.argmax(dim=0), labels)
    folder_labels, folder_probs = model.predict(folder, return_probs=True)
    assert torch.equal(folder_probs[name], probs) and torch.equal(folder_labels[name], labels)


def test_bf16_autocast_and_tta_give_class_maps_at_the_input_size(tiny_run: Path, tiny_root: Path) -> None:
    path = tiny_root / val_images(tiny_root)[0]
    reference = Segmenter.from_checkpoint(tiny_run, device="cpu").predict(path)
    bf16 = Segmenter.from_checkpoint(tiny_run, device="cpu", bf16=True).predict(path)
    assert bf16.shape == reference.shape and (bf16 == reference).float().mean() > 0.9
    tta = Segmenter.from_checkpoint(tiny_run, device="cpu", tta_scales=[0.75, 1.0, 1.25], tta_flip=True)
    labels, probs = tta.predict(path, return_probs=True)
    assert labels.shape == reference.shape and torch.equal(probs.argmax(dim=0), labels)


def test_the_sliding_window_is_placed_as_the_training_methods_release(
    model: Segmenter, tmp_path: Path
) -> None:
    image = torch.randn(1, 3, 100, 150, generator=torch.Generator().manual_seed(5))
    assert model.window_placement == "corrmatch"  # a CorrMatch run
    v2 = Segmenter(model.net, model.network, model.info, 65, method="UniMatchV2", device="cpu")
    assert v2.window_placement == "unimatch_v2"
    expected = segment_probabilities(v2.logits, image, "sliding_window", 65, placement="unimatch_v2")[0]
    assert torch.equal(v2.predict(image), expected)
    assert not torch.equal(model.predict(image), expected)  # the same network under CorrMatch's windows
    folder = tmp_path / "v2"
    v2.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["window_placement"] == "unimatch_v2"
    assert torch.equal(Segmenter.from_pretrained(folder, device="cpu").predict(image), expected)
    del config["window_placement"]  # a config.json without the entry: the placement of its method
    (folder / "config.json").write_text(json.dumps(config))
    assert Segmenter.from_pretrained(folder, device="cpu").window_placement == "unimatch_v2"
    unknown = Segmenter(model.net, model.network, model.info, 65, method=None, device="cpu")
    assert unknown.window_placement == "corrmatch"
    chosen = Segmenter.from_pretrained(folder, device="cpu", window_placement="corrmatch")
    assert chosen.window_placement == "corrmatch"
    (folder / "config.json").write_text(json.dumps({**config, "window_placement": "centred"}))
    with pytest.raises(CheckpointError) as error:
        Segmenter.from_pretrained(folder)
    one_line(error, "config.json", "'centred'")
    with pytest.raises(ConfigError) as error:
        Segmenter(model.net, model.network, model.info, 65, window_placement="tiled")  # type: ignore
    one_line(error, "window_placement", "unimatch_v2")


# ---------------------------------------------------------------------- checkpoints and metadata


def test_checkpoints_carry_class_names_palette_and_normalisation(tiny_run: Path, model: Segmenter) -> None:
    checkpoint = torch.load(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    palette = voc_palette()[:6].tolist()
    assert checkpoint[INFERENCE_KEY] == {
        "class_names": list(DEMO_CLASSES),
        "palette": palette,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }
    assert not {"tta_scales", "tta_flip"} & set(checkpoint["hyper_parameters"])  # the evaluating command's
    assert model.class_names == DEMO_CLASSES and model.crop_size == 65 and model.method == "CorrMatch"
    miou = float(best_checkpoint(tiny_run).stem.rsplit("=", 1)[1])
    assert model.val_miou == pytest.approx(miou, abs=0.005)
    assert model.network == NetworkConfig(**TINY_NETWORK)


def test_a_checkpoint_without_metadata_gets_the_defaults(
    tiny_run: Path, tmp_path: Path, model: Segmenter
) -> None:
    checkpoint = torch.load(best_checkpoint(tiny_run), map_location="cpu", weights_only=True)
    del checkpoint[INFERENCE_KEY], checkpoint["callbacks"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    old = Segmenter.from_checkpoint(tmp_path / "old.ckpt", device="cpu")
    assert old.class_names == tuple(f"class_{k}" for k in range(6)) and old.val_miou is None
    assert (old.info.mean, old.info.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert np.array_equal(old.info.palette_array(), voc_palette())
    x = model.preprocess(torch.zeros(3, 70, 70, dtype=torch.uint8))
    assert torch.equal(old.logits(x), model.logits(x))
    info = InferenceInfo.from_mapping({"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}, 2)
    array = np.full((2, 2, 3), 255, dtype=np.uint8)
    assert torch.allclose(
        Segmenter(tiny_net(), NetworkConfig(), info, 65, device="cpu").preprocess(array),
        torch.full((1, 3, 2, 2), 2.0),
    )


def test_run_directory_uses_its_best_checkpoint_then_last(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "checkpoints", run / "checkpoints")
    best = best_checkpoint(run)
    (run / "checkpoints" / "last.ckpt").unlink()
    assert Segmenter.from_checkpoint(run, device="cpu").val_miou is not None
    best.rename(run / "checkpoints" / "last.ckpt")
    assert Segmenter.from_checkpoint(run, device="cpu").method == "CorrMatch"
    (run / "checkpoints" / "last.ckpt").unlink()
    with pytest.raises(CheckpointError) as error:
        Segmenter.from_checkpoint(run)
    one_line(error, str(run), "not a run directory")


def test_an_authors_checkpoint_loads_with_its_network_settings(tiny_run: Path, tmp_path: Path) -> None:
    settings = {**TINY_NETWORK, "encoder_name": "tu-resnet18"}  # the authors' names are timm's
    net = tiny_net(**settings)
    official = {f"module.{toolkit_to_official(key)}": value for key, value in net.state_dict().items()}
    torch.save(official, tmp_path / "official.pth")
    model = Segmenter.from_checkpoint(tmp_path / "official.pth", device="cpu", network=settings, crop_size=50)
    x = torch.randn(1, 3, 45, 45)
    with torch.no_grad():
        assert torch.equal(model.logits(x), net(x)["out"])
    assert model.crop_size == 50 and model.class_names == ("class_0", "class_1", "class_2", "class_3")
    assert model.method is None and model.network == NetworkConfig(**settings)
    with pytest.raises(ConfigError) as error:  # a toolkit checkpoint records its own settings
        Segmenter.from_checkpoint(tiny_run, crop_size=50)
    one_line(error, "for the authors' checkpoints")


# ---------------------------------------------------------------------- Hugging Face layout


def test_save_pretrained_then_from_pretrained_gives_identical_logits(
    model: Segmenter, tmp_path: Path
) -> None:
    folder = tmp_path / "hf"
    model.save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["network"] == {**TINY_NETWORK, "head": "paper", "lock_backbone": False}
    assert (config["num_classes"], config["crop_size"], config["method"]) == (6, 65, "CorrMatch")
    assert config["class_names"] == list(DEMO_CLASSES) and config["palette"] == voc_palette()[:6].tolist()
    assert (config["mean"], config["std"]) == (list(IMAGENET_MEAN), list(IMAGENET_STD))
    assert config["val_miou"] == model.val_miou and config["correlation"] is True
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: corrmatch\npipeline_tag: image-segmentation\n")
    assert (
        "# CorrMatch semantic segmentation model" in card
        and f"validation mIoU: {model.val_miou:.2f} %" in card
    )
    assert (
        "encoder `resnet18`, output stride 16, ASPP rates\n  (1, 2, 3), paper decoder head of width 32"
        in card
    )
    assert 'Segmenter.from_pretrained("<this folder or repository>")' in card
    rows = [
        f"| {k} | {name} | `{tuple(colour)}` |"
        for k, (name, colour) in enumerate(zip(DEMO_CLASSES, config["palette"]))
    ]
    assert card.endswith("|---|---|---|\n" + "\n".join(rows) + "\n")
    for loaded in (
        Segmenter.from_pretrained(folder, device="cpu"),
        Segmenter.from_checkpoint(folder, device="cpu"),
    ):
        x = torch.randn(2, 3, 70, 81, generator=torch.Generator().manual_seed(4))
        assert torch.equal(loaded.logits(x), model.logits(x))
        assert loaded.config() == model.config()


def test_a_folder_in_the_first_layout_loads_and_saving_writes_it_unchanged(
    model: Segmenter, tmp_path: Path
) -> None:
    """The layout ``save_pretrained`` has written since its first version, written out here: the network's
    tensors in safetensors (``{"format": "pt"}``), ``config.json`` indented by 2. That layout predates
    ``window_placement``: such a folder gets its method's placement, and saving it again adds that one key."""
    first = tmp_path / "first"
    first.mkdir()
    state = {key: value.contiguous() for key, value in model.net.state_dict().items()}
    save_file(state, str(first / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "corrmatch_version": corrmatch.__version__,
        "method": "CorrMatch",
        "network": {
            "encoder_name": "resnet18",
            "encoder_weights": None,
            "output_stride": 16,
            "atrous_rates": [1, 2, 3],
            "head": "paper",
            "decoder_channels": 32,
            "lock_backbone": False,
        },
        "correlation": True,
        "num_classes": 6,
        "class_names": list(DEMO_CLASSES),
        "palette": voc_palette()[:6].tolist(),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "crop_size": 65,
        "val_miou": model.val_miou,
    }
    (first / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    loaded = Segmenter.from_pretrained(first, device="cpu")
    x = torch.randn(1, 3, 70, 81, generator=torch.Generator().manual_seed(5))
    placed = {**config, "window_placement": "corrmatch"}
    assert torch.equal(loaded.logits(x), model.logits(x)) and loaded.config() == placed
    assert (loaded.class_names, loaded.method, loaded.crop_size) == (DEMO_CLASSES, "CorrMatch", 65)
    loaded.save_pretrained(tmp_path / "again")
    again = tmp_path / "again"
    assert (again / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()
    written = (again / "config.json").read_text()
    assert json.loads(written) == placed and written == json.dumps(json.loads(written), indent=2) + "\n"


HUB_SCRIPT = """
import json, sys
import torch
from corrmatch import Segmenter
from corrmatch.errors import UserError

folder, *calls = sys.argv[1:]
model = Segmenter.from_pretrained(folder, device="cpu")
results = {}
for call in calls:
    try:
        if call == "download":
            hub = Segmenter.from_pretrained("someone/shapes", device="cpu", revision="v1")
            x = torch.randn(1, 3, 40, 50)
            results[call] = hub.config() == model.config() and torch.equal(hub.logits(x), model.logits(x))
        elif call == "absent":
            Segmenter.from_pretrained("someone/absent", device="cpu")
        else:
            model.push_to_hub("someone/shapes")
    except UserError as error:
        results[call] = [type(error).__name__, str(error)]
print(json.dumps(results))
"""


def test_the_hub_without_a_network_loads_from_its_cache_and_fails_in_one_line(
    model: Segmenter, tmp_path: Path
) -> None:
    """Real ``huggingface_hub`` calls in fresh processes: offline (``HF_HUB_OFFLINE=1``) a repository in
    the local cache (its documented layout) loads at a revision and one that is not there fails; an
    upload fails offline and against an endpoint that refuses connections. Every failure is one line
    naming the repository and what to do."""
    folder = tmp_path / "hf"
    model.save_pretrained(folder)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repository = tmp_path / "cache" / "models--someone--shapes"
    (repository / "snapshots" / commit).mkdir(parents=True)
    (repository / "refs").mkdir()
    (repository / "refs" / "v1").write_text(commit)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, repository / "snapshots" / commit / name)
    home = {"HF_HOME": str(tmp_path / "home"), "HF_HUB_CACHE": str(tmp_path / "cache")}
    with socket.socket() as closed:  # bound, never listening: connections to it are refused
        closed.bind(("127.0.0.1", 0))
        unreachable = f"http://127.0.0.1:{closed.getsockname()[1]}"
        runs = {
            "offline": (["download", "absent", "push"], {"HF_HUB_OFFLINE": "1"}),
            "refused": (["push"], {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": unreachable}),
        }
        processes = {
            name: subprocess.Popen(
                [sys.executable, "-c", HUB_SCRIPT, str(folder), *calls],
                cwd=REPO,
                env={**os.environ, **home, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, (calls, env) in runs.items()
        }
        outputs = {name: process.communicate(timeout=300) for name, process in processes.items()}
    results = {}
    for name, (stdout, stderr) in outputs.items():
        assert processes[name].returncode == 0, stderr
        results[name] = json.loads(stdout.splitlines()[-1])
    assert results["offline"]["download"] is True
    failures = [results["offline"]["absent"], results["offline"]["push"], results["refused"]["push"]]
    for (kind, message), repo, cause in zip(
        failures,
        ("someone/absent", "someone/shapes", "someone/shapes"),
        ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectError"),
    ):
        assert kind == "CheckpointError" and "\n" not in message, message
        assert message.startswith(f"{repo}: ") and cause in message and "network connection" in message
        assert "hf auth login" in message
    assert "give a local folder" in results["offline"]["absent"][1]


# ---------------------------------------------------------------------- CorrMatch's region of a pixel


def test_correlation_region_of_a_pixel(model: Segmenter, tiny_root: Path) -> None:
    path = tiny_root / val_images(tiny_root)[0]
    height, width = Image.open(path).size[::-1]
    region = model.correlation_region(path, 10, 20)
    assert region.dtype == torch.bool and region.shape == (height, width) and region.any()
    with pytest.raises(ConfigError, match="outside"):
        model.correlation_region(path, height, 0)
    plain = Segmenter(
        tiny_net(correlation=False), NetworkConfig(**TINY_NETWORK), model.info, 65, device="cpu"
    )
    with pytest.raises(ConfigError, match="correlation branch"):
        plain.correlation_region(path, 0, 0)


# ---------------------------------------------------------------------- bad input: one line naming it


def test_bad_input_is_a_one_line_error_naming_it(model: Segmenter, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(DataError) as error:
        model.predict(text)
    one_line(error, str(text))
    with pytest.raises(DataError) as error:
        model.predict(tmp_path / "absent.png")
    one_line(error, "absent.png")
    with pytest.raises(DataError) as error:
        model.predict(np.zeros((4, 4), dtype=np.float64))
    one_line(error, "uint8 array (H, W, 3)")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as error:
        model.predict(empty)
    one_line(error, str(empty))

    tensors = tmp_path / "random.pth"
    torch.save({"weight": torch.randn(3, 3)}, tensors)
    text_checkpoint = tmp_path / "notes.ckpt"
    text_checkpoint.write_text("hello")
    cases = {
        tensors: "neither a checkpoint of train.py fit",
        text_checkpoint: "not a PyTorch checkpoint",
        tmp_path / "absent.ckpt": "no such file",
        tmp_path: "not a run directory",
    }
    for path, reason in cases.items():
        with pytest.raises(CheckpointError) as error:
            Segmenter.from_checkpoint(path)
        one_line(error, str(path), reason)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{")
    with pytest.raises(CheckpointError) as error:
        Segmenter.from_pretrained(tmp_path / "hf")
    one_line(error, str(tmp_path / "hf" / "config.json"))
    with pytest.raises(CheckpointError) as error:
        Segmenter.from_pretrained(tmp_path / "no" / "such" / "folder")
    one_line(error, "no such folder")
    (tmp_path / "no_config").mkdir()
    with pytest.raises(CheckpointError) as error:
        Segmenter.from_pretrained(tmp_path / "no_config")
    one_line(error, str(tmp_path / "no_config"), "no config.json")
