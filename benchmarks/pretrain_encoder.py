"""An encoder pretrained by the toolkit itself, standing in for the paper's ImageNet encoder on a machine
that cannot download one (docs/regime-search.md).

Four pretraining tasks, all on images drawn by the demo generator with another seed (so none of the
demo's own images):

- ``objectness``: the demo's shapes, masks that keep only "object" (any of the five
  shapes) against background. The encoder learns to separate the textured shapes from the textured
  background clutter, but never sees which shape is which class.
- ``shapes`` (this script's default; ``ssl_gain.py``'s in regimes P5–P8): six *other* shapes (star, hexagon, ellipse, bar,
  crescent, half disk), each painted with any texture family and any colours on plain backgrounds,
  segmented by shape (with the standard demo's clutter the 1500 steps learn nothing but background:
  val mIoU 13.0). The encoder is meant to tell shapes apart by their outline alone, as ImageNet
  features tell objects apart, without ever seeing the demo's classes (whose texture and hue it never
  learns to read); in 1500 steps it gets to val mIoU 17.9 (docs/regime-search.md, P5).
- ``textures``: the same images segmented by texture family (dots, stripes, checks, waves, speckle) in
  any colours: the demo's texture families, never tied to its classes' shapes or hues. In 1500 steps
  it gets to val mIoU 23.1 (dots and stripes ~0), 23.8 with textures ×2, the encoder of regime P9
  (docs/regime-search.md).
- ``classes``: the demo's own kinds of objects (its plain variant, seed 1), with image-level labels
  only: the encoder learns which of the five object kinds a crop shows (multi-label classification),
  never where they are. This is how ImageNet pretraining relates to Pascal VOC, whose classes ImageNet's
  labels mostly name, on images that are not Pascal's and without masks. With textures ×2, 1500 steps
  (284 s) learn four of the five kinds but not cross (presence right on 54 % of the validation images,
  its base rate 58 %); 3000 steps (570 s) get every kind right on 78–92 % (docs/regime-search.md, P13, P14).

``--texture-scale`` and ``--object-scale`` draw the images like the demo's variants of those scales.

    python benchmarks/pretrain_encoder.py                       # -> data/demo_pretrain_shapes/encoder.pth
    python benchmarks/pretrain_encoder.py --task objectness     # -> data/demo_pretrain/encoder.pth
    python benchmarks/pretrain_encoder.py --accelerator gpu     # -> data/demo_pretrain_shapes_gpu/encoder.pth
    python benchmarks/pretrain_encoder.py --task textures --texture-scale 2   # -> data/demo_pretrain_textures_t2/
    python benchmarks/pretrain_encoder.py --task classes --texture-scale 2    # -> data/demo_pretrain_classes_t2/

The dataset, the run and the encoder file are cached under ``--out``: a second call with the same
settings returns the existing file. The encoder file holds the smp encoder's tensors (its own names),
usable as ``network.encoder_weights``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
import yaml
from PIL import Image

from corrmatch.constants import IMAGENET_MEAN, IMAGENET_STD
from corrmatch.data.demo import render_sample
from corrmatch.data.io import parse_split, read_image, read_mask
from corrmatch.data.presets import DEMO_CLASSES

ROOT = Path(__file__).resolve().parents[1]
SEED = 1  # the demo itself uses seed 0
STEPS = 1500  # pretraining steps unless told otherwise
MIN_SHOWN = 20  # pixels of an object kind in a crop for the crop to count as showing it (task "classes")


def _star(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return np.hypot(u, v) <= r * (0.55 + 0.45 * np.cos(5 * np.arctan2(v, u)))


def _hexagon(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    a, b = np.abs(u), np.abs(v)
    return (b <= 0.866 * r) & (0.866 * a + 0.5 * b <= 0.866 * r)


def _ellipse(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return (u / r) ** 2 + (v / (0.45 * r)) ** 2 <= 1


def _bar(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return (np.abs(u) <= r) & (np.abs(v) <= 0.28 * r)


def _crescent(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return (u * u + v * v <= r * r) & ((u - 0.5 * r) ** 2 + v * v > (0.75 * r) ** 2)


def _half_disk(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return (u * u + v * v <= r * r) & (v >= 0)


OTHER_SHAPES = {
    "star": _star,
    "hexagon": _hexagon,
    "ellipse": _ellipse,
    "bar": _bar,
    "crescent": _crescent,
    "half disk": _half_disk,
}
TEXTURES = ("dots", "stripes", "checks", "waves", "speckle")  # the generator's texture families, in order
TASKS = ("objectness", "shapes", "textures", "classes")


def scale_suffix(texture_scale: float = 1.0, object_scale: float = 1.0) -> str:
    """``_t<texture scale>`` and ``_o<object scale>`` for the scales that are not the demo's (1), to name
    the folders of the generator's variants."""
    suffix = "" if texture_scale == 1 else f"_t{texture_scale:g}"
    return suffix + ("" if object_scale == 1 else f"_o{object_scale:g}")


def default_out(
    task: str = "shapes",
    accelerator: str = "cpu",
    texture_scale: float = 1.0,
    object_scale: float = 1.0,
    steps: int = STEPS,
) -> Path:
    """The cache folder of a task's encoder, relative to the repository root: ``data/demo_pretrain``
    for objectness on the CPU at the demo's scales and :data:`STEPS`, with ``_<task>``,
    :func:`scale_suffix`, ``_s<steps>`` and ``_gpu`` appended for the others."""
    suffix = ("" if task == "objectness" else f"_{task}") + scale_suffix(texture_scale, object_scale)
    suffix += "" if steps == STEPS else f"_s{steps}"
    return Path(f"data/demo_pretrain{suffix}" + ("" if accelerator == "cpu" else f"_{accelerator}"))


def device_settings(accelerator: str) -> dict:
    """The trainer's device and determinism: deterministic on the CPU; on a GPU, operations without a
    deterministic CUDA kernel (bilinear interpolation's backward) warn instead of stopping the run."""
    return {"accelerator": accelerator, "deterministic": True if accelerator == "cpu" else "warn"}


def task_classes(task: str) -> list[str]:
    names = {
        "objectness": ["object"],
        "shapes": list(OTHER_SHAPES),
        "textures": list(TEXTURES),
        "classes": list(DEMO_CLASSES[1:]),
    }
    return ["background", *names[task]]


def write_dataset(folder: Path, count: int, val: int, task: str = "shapes", **scales: float) -> None:
    """``count`` + ``val`` samples of the pretraining ``task`` in the folder layout with its class list,
    drawn at the generator's ``texture_scale`` and ``object_scale`` (:func:`render_sample`)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    (folder / "splits").mkdir(exist_ok=True)
    lines = []
    for index in range(count + val):
        if task == "objectness":
            image, label = render_sample(SEED, index, **scales)
            label = np.where(label == 255, 255, (label > 0).astype(np.uint8))
        elif task == "classes":
            image, label = render_sample(SEED, index, clutter=False, **scales)
        else:
            image, label = render_sample(
                SEED,
                index,
                clutter=False,
                shapes=tuple(OTHER_SHAPES.values()),
                class_appearance=False,
                label_by="shape" if task == "shapes" else "texture",
                **scales,
            )
        Image.fromarray(image).save(folder / "images" / f"p{index:05d}.png")
        Image.fromarray(label.astype(np.uint8)).save(folder / "masks" / f"p{index:05d}.png")
        lines.append(f"images/p{index:05d}.png masks/p{index:05d}.png\n")
    (folder / "splits" / "labeled.txt").write_text("".join(lines[:count]))
    (folder / "splits" / "val.txt").write_text("".join(lines[count:]))
    (folder / "classes.yaml").write_text(yaml.safe_dump(task_classes(task)))


def load_split(data: Path, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (image (3, H, W), mask (H, W)) uint8 pairs of a written split; sizes differ per image."""
    return [
        (torch.from_numpy(read_image(data / entry.image)).permute(2, 0, 1), torch.from_numpy(read_mask(data / entry.mask)))
        for entry in parse_split(data / "splits" / f"{split}.txt")
    ]


def shown(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, num_classes) float: whether each object class (1..num_classes) covers at least
    ``MIN_SHOWN`` pixels of each mask."""
    counts = torch.stack([(masks == c).flatten(1).sum(1) for c in range(1, num_classes + 1)], 1)
    return (counts >= MIN_SHOWN).float()


def classify(
    data: Path, steps: int, encoder: str, crop: int, accelerator: str, batch: int = 16
) -> tuple[dict[str, torch.Tensor], str]:
    """Image-level pretraining (task ``classes``): the encoder, global average pooling and a linear
    layer learn which of the demo's object kinds a random crop (flipped half the time) shows,
    multi-label with binary cross-entropy, as an ImageNet classifier learns which objects an image
    shows without their masks. SGD (lr 0.05, momentum 0.9, weight decay 1e-4, poly decay), seed 0.
    Returns the encoder's tensors and one line of validation figures (per-class accuracy of the
    presence at 0.5 on the whole validation images)."""
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    num_classes = len(task_classes("classes")) - 1
    samples = load_split(data, "labeled")
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
    net = smp.encoders.get_encoder(encoder, in_channels=3, depth=5, weights=None)
    net = net.to(device, memory_format=torch.channels_last)
    head = torch.nn.Linear(net.out_channels[-1], num_classes).to(device)
    parameters = [*net.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=0.05, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=steps, power=0.9)

    def logits(x: torch.Tensor) -> torch.Tensor:
        x = ((x.to(device).float() - mean) / std).contiguous(memory_format=torch.channels_last)
        return head(net(x)[-1].mean((2, 3)))

    net.train()
    for _ in range(steps):
        index = torch.randint(len(samples), (batch,), generator=generator).tolist()
        corners = torch.rand(batch, 2, generator=generator).tolist()
        flips = (torch.rand(batch, generator=generator) < 0.5).tolist()
        views = []
        for i, (fy, fx), flip in zip(index, corners, flips, strict=True):
            image, mask = samples[i]
            top, left = int(fy * (mask.shape[0] - crop + 1)), int(fx * (mask.shape[1] - crop + 1))
            view = image[:, top : top + crop, left : left + crop], mask[top : top + crop, left : left + crop]
            views.append((view[0].flip(-1), view[1].flip(-1)) if flip else view)
        x = torch.stack([image for image, _ in views])
        target = shown(torch.stack([mask for _, mask in views]), num_classes).to(device)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    net.eval()
    with torch.no_grad():
        right = torch.cat(
            [
                (logits(image[None]) > 0).cpu().float() == shown(mask[None], num_classes)
                for image, mask in load_split(data, "val")
            ]
        ).float()
    accuracy = ", ".join(
        f"{name} {100 * a:.1f}" for name, a in zip(task_classes("classes")[1:], right.mean(0).tolist(), strict=True)
    )
    return net.cpu().state_dict(), f"val accuracy of presence: {accuracy}; all right {100 * right.all(1).float().mean():.1f} %"


def segment(data: Path, run: Path, count: int, steps: int, encoder: str, crop: int, accelerator: str) -> dict[str, torch.Tensor]:
    """Pixel-level pretraining (tasks ``objectness``, ``shapes``, ``textures``): SupervisedOnly
    through ``train.py`` on the written dataset, batch 8, lr 0.05, one validation at the end (its
    figures in ``run/output.log``). Returns the encoder's tensors."""
    epochs = -(-steps // (count // 8))  # batch 8, one validation at the end
    config = {
        "seed_everything": 0,
        "trainer": {
            **device_settings(accelerator),
            "devices": 1,
            "max_epochs": epochs,
            "limit_train_batches": steps // epochs,
            "check_val_every_n_epoch": epochs,
            "num_sanity_val_steps": 0,
            "logger": False,
            "enable_progress_bar": False,
            "default_root_dir": str(run),
        },
        "model": {
            "class_path": "corrmatch.methods.SupervisedOnly",
            "init_args": {
                "network": {"encoder_name": encoder, "encoder_weights": None, "output_stride": 16,
                            "atrous_rates": [6, 12, 18]},
                "lr": 0.05,
                "lr_multi": 1.0,
                "channels_last": True,
            },
        },
        "data": {
            "preset": "folder",
            "root": str(data),
            "labeled_split": str(data / "splits" / "labeled.txt"),
            "val_split": str(data / "splits" / "val.txt"),
            "crop_size": crop,
            "batch_size": 8,
            "num_workers": 0,
        },
    }
    run.mkdir(parents=True, exist_ok=True)
    for old in (run / "checkpoints").glob("*.ckpt"):
        old.unlink()
    config_path = run / "pretrain.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(config_path)],
        cwd=ROOT, capture_output=True, text=True,
    )
    (run / "output.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"pretraining failed, see {run / 'output.log'}")
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    prefix = "net.encoder."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    return state


def pretrain(
    out: Path,
    count: int = 1000,
    steps: int = STEPS,
    encoder: str = "resnet18",
    crop: int = 96,
    accelerator: str = "cpu",
    task: str = "shapes",
    texture_scale: float = 1.0,
    object_scale: float = 1.0,
) -> Path:
    """The cached encoder file for these settings, pretrained first if there is none, on images drawn at
    the generator's ``texture_scale`` and ``object_scale``. On a GPU (``accelerator="gpu"``) the run is
    not bit-reproducible and gives another file than the CPU."""
    scales = {"texture_scale": texture_scale, "object_scale": object_scale}
    settings = {"count": count, "steps": steps, "encoder": encoder, "crop": crop, "seed": SEED, "channels_last": True}
    if accelerator != "cpu":
        settings["accelerator"] = accelerator
    if task != "objectness":
        settings.update(task=task, background="plain")
    settings.update({name: value for name, value in scales.items() if value != 1.0})
    weights, stamp = out / "encoder.pth", out / "settings.json"
    if weights.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings:
        print(f"cached: {weights}")
        return weights
    data, labeled = out / "data", out / "data" / "splits" / "labeled.txt"
    classes = data / "classes.yaml"
    if (
        not labeled.is_file()
        or not classes.is_file()
        or len(labeled.read_text().splitlines()) != count
        or yaml.safe_load(classes.read_text()) != task_classes(task)
    ):
        write_dataset(data, count, 50, task, **scales)
    start = time.perf_counter()
    if task == "classes":
        state, summary = classify(data, steps, encoder, crop, accelerator)
        (out / "run").mkdir(parents=True, exist_ok=True)
        (out / "run" / "output.log").write_text(summary + "\n")
        print(summary)
    else:
        state = segment(data, out / "run", count, steps, encoder, crop, accelerator)
    torch.save(state, weights)
    stamp.write_text(json.dumps(settings))
    print(f"pretrained {encoder} for {steps} steps in {time.perf_counter() - start:.0f} s -> {weights}")
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="default: data/demo_pretrain[_TASK][_gpu]")
    parser.add_argument("--count", type=int, default=1000, help="pretraining images")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--task", choices=TASKS, default="shapes")
    parser.add_argument("--texture-scale", type=float, default=1.0, help="the generator's texture periods times this")
    parser.add_argument("--object-scale", type=float, default=1.0, help="the generator's object sizes times this")
    args = parser.parse_args()
    scales = {"texture_scale": args.texture_scale, "object_scale": args.object_scale}
    out = args.out or ROOT / default_out(args.task, args.accelerator, steps=args.steps, **scales)
    pretrain(out, args.count, args.steps, args.encoder, args.crop, args.accelerator, args.task, **scales)


if __name__ == "__main__":
    main()
