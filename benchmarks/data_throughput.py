"""Training-data throughput: corrmatch.data against a literal PIL + torchvision pipeline (DESIGN.md §4).

One training step reads one labeled and two unlabeled samples (weak view, one strong view, CutMix box,
ignore mask) at crop 321 from Pascal-sized 500×375 JPEGs with palette-PNG masks, generated into a
temporary folder. Both pipelines are timed in-process and through a DataLoader with one worker that
collates batches of 4 steps (the paper's batch per GPU), as training does. Both compute the same rescale,
pad, crop, flip and blur, Pillow's (corrmatch.data resizes only the crop's pixels; see
corrmatch/data/transforms.py).

    python benchmarks/data_throughput.py [--images 50] [--steps 150] [--repeats 3]

Prints one line per (pipeline, mode) with steps/s and samples/s (3 samples a step), best of the repeats,
which alternate between the two pipelines.
In-process runs are single-threaded (torch and OpenCV), as DataLoader workers are.
The figures are written to ``--results`` (default ``benchmarks/results``) as
``data_throughput/<machine>[-<options>].json`` (:mod:`record`).
"""

from __future__ import annotations

import argparse
import platform
import random
import tempfile
import time
from copy import deepcopy
from pathlib import Path

import albumentations
import cv2
import numpy as np
import PIL
import torch
import torchvision
from PIL import Image, ImageFilter, ImageOps
from record import RESULTS, machine_slug, write_result
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from corrmatch.data import LabeledDataset, SplitEntry, UnlabeledDataset, voc_palette

CROP = 321
BATCH = 4  # steps per collated DataLoader batch (the paper's batch per GPU)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_images(root: Path, count: int, seed: int = 0) -> list[str]:
    """Writes ``count`` 500×375 JPEGs (smooth colour fields, shapes, noise) and palette PNG masks."""
    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    palette = voc_palette().ravel().tolist()
    lines = []
    for index in range(count):
        coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.float32)
        image = cv2.resize(coarse, (500, 375), interpolation=cv2.INTER_CUBIC)
        mask = np.zeros((375, 500), np.uint8)
        for _ in range(4):
            cx, cy, r = rng.integers(0, 500), rng.integers(0, 375), rng.integers(20, 120)
            cls = int(rng.integers(1, 21))
            cv2.circle(mask, (int(cx), int(cy)), int(r), cls, -1)
            cv2.circle(image, (int(cx), int(cy)), int(r), rng.uniform(0, 255, 3).tolist(), -1)
        image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        name = f"bench_{index:04d}"
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=90)
        png = Image.fromarray(mask)
        png.putpalette(palette)
        png.save(root / "SegmentationClass" / f"{name}.png")
        lines.append(f"JPEGImages/{name}.jpg SegmentationClass/{name}.png")
    return lines


def entries(lines: list[str]) -> list[SplitEntry]:
    """Split lines as corrmatch entries."""
    return [SplitEntry(*line.split(), source=f"bench:{number}") for number, line in enumerate(lines, 1)]


def baseline_cutmix_box(size: int, p: float = 0.5) -> torch.Tensor:
    """The reference's CutMix box: a float (size, size) tensor, drawn with NumPy's global generator."""
    box = torch.zeros(size, size)
    if random.random() > p:
        return box
    area = np.random.uniform(0.02, 0.4) * size * size
    while True:
        ratio = np.random.uniform(0.3, 1 / 0.3)
        width, height = int(np.sqrt(area / ratio)), int(np.sqrt(area * ratio))
        x, y = np.random.randint(0, size), np.random.randint(0, size)
        if x + width <= size and y + height <= size:
            break
    box[y : y + height, x : x + width] = 1
    return box


class BaselineDataset(Dataset):
    """§4 as the authors' ``SemiDataset`` computes it, with PIL and torchvision, for comparison.

    Same operations in the same order (transforms built per call, copies of the crop, a zero float image
    for the ignore mask, NumPy draws for σ and the CutMix box); the extra ``img_ori`` and ``id`` outputs,
    which corrmatch.data does not produce, are left out.
    """

    def __init__(self, root: Path, lines: list[str], labeled: bool) -> None:
        self.root, self.lines, self.labeled = root, lines, labeled

    def __len__(self) -> int:
        return len(self.lines)

    @staticmethod
    def normalize(image: Image.Image) -> torch.Tensor:
        return T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])(image)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image_path, mask_path = self.lines[index].split()
        image = Image.open(self.root / image_path).convert("RGB")
        mask = Image.fromarray(np.array(Image.open(self.root / mask_path)))
        w, h = image.size
        long_side = random.randint(int(max(w, h) * 0.5), int(max(w, h) * 2.0))
        size = (
            (long_side, int(h * long_side / w + 0.5)) if w >= h else (int(w * long_side / h + 0.5), long_side)
        )
        image, mask = image.resize(size, Image.BILINEAR), mask.resize(size, Image.NEAREST)
        fill = 255 if self.labeled else 254
        pad = (0, 0, max(CROP - size[0], 0), max(CROP - size[1], 0))
        image, mask = ImageOps.expand(image, border=pad, fill=0), ImageOps.expand(mask, border=pad, fill=fill)
        x, y = random.randint(0, image.size[0] - CROP), random.randint(0, image.size[1] - CROP)
        image, mask = image.crop((x, y, x + CROP, y + CROP)), mask.crop((x, y, x + CROP, y + CROP))
        if random.random() < 0.5:
            image, mask = image.transpose(Image.FLIP_LEFT_RIGHT), mask.transpose(Image.FLIP_LEFT_RIGHT)
        if self.labeled:
            return {"image": self.normalize(image), "mask": torch.from_numpy(np.array(mask)).long()}
        weak, strong = deepcopy(image), deepcopy(image)
        if random.random() < 0.8:
            strong = T.ColorJitter(0.5, 0.5, 0.5, 0.25)(strong)
        strong = T.RandomGrayscale(p=0.2)(strong)
        if random.random() < 0.5:
            strong = strong.filter(ImageFilter.GaussianBlur(radius=np.random.uniform(0.1, 2.0)))
        box = baseline_cutmix_box(CROP)
        ignore = torch.from_numpy(np.array(Image.fromarray(np.zeros((mask.size[1], mask.size[0]))))).long()
        ignore[torch.from_numpy(np.array(mask)).long() == 254] = 255
        return {
            "image_w": self.normalize(weak),
            "image_s": self.normalize(strong),
            "ignore": ignore,
            "cutmix_box": box,
        }


class Steps(Dataset):
    """Item i = one training step: labeled[i], unlabeled[i], unlabeled[permutation[i]]."""

    def __init__(self, labeled: Dataset, unlabeled: Dataset, steps: int) -> None:
        self.labeled, self.unlabeled, self.steps = labeled, unlabeled, steps
        self.order = np.random.default_rng(1).permutation(steps) % len(unlabeled)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> tuple[dict, dict, dict]:
        n = len(self.unlabeled)
        return self.labeled[index % n], self.unlabeled[index % n], self.unlabeled[int(self.order[index])]


def steps_per_second(steps: Steps, workers: int | None) -> float:
    """Steps per second in-process (``workers=None``) or through a DataLoader with ``workers`` workers."""
    if workers is None:
        steps[0]
        start = time.perf_counter()
        for index in range(len(steps)):
            steps[index]
        return len(steps) / (time.perf_counter() - start)
    loader = DataLoader(steps, batch_size=BATCH, num_workers=workers, prefetch_factor=4)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not timed
    start = time.perf_counter()
    count = sum(BATCH for _ in iterator)
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the result files")
    args = parser.parse_args(argv)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # in-process runs single-threaded, like a DataLoader worker
    cv2.setNumThreads(0)
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "albumentations": albumentations.__version__,
        "opencv": cv2.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
    }
    listed = ", ".join(f"{name} {version}" for name, version in versions.items())
    print(f"{listed}; torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lines = make_images(root, args.images)
        pipelines = {
            "corrmatch.data": Steps(
                LabeledDataset(root, entries(lines), CROP),
                UnlabeledDataset(root, entries(lines), CROP),
                args.steps,
            ),
            "baseline (PIL/torchvision)": Steps(
                BaselineDataset(root, lines, True), BaselineDataset(root, lines, False), args.steps
            ),
        }
        results: dict[tuple[str, str], list[float]] = {}
        for mode, workers in (("in-process", None), ("1 worker", 1)):
            for _ in range(args.repeats):  # interleaved, so that load from other processes hits both alike
                for name, steps in pipelines.items():
                    results.setdefault((name, mode), []).append(steps_per_second(steps, workers))
            for name in pipelines:
                runs = results[name, mode]
                print(
                    f"{name:32s} {mode:10s} best {max(runs):7.2f} steps/s = {3 * max(runs):7.2f} samples/s"
                    f"  (runs: {', '.join(f'{run:.2f}' for run in runs)} steps/s)"
                )
        speedups = []
        for mode in ("in-process", "1 worker"):
            ours, baseline = (results[name, mode] for name in pipelines)
            per_run = [round(a / b, 2) for a, b in zip(ours, baseline)]
            print(f"speed-up {mode}: {max(ours) / max(baseline):.2f}x best vs best, per-run {per_run}")
            best = round(max(ours) / max(baseline), 2)
            speedups.append(
                {"mode": mode, "best_vs_best": best, "per_run": per_run, "per_run_min": min(per_run),
                 "per_run_max": max(per_run)}
            )
    rows = [
        {"pipeline": name, "mode": mode, "steps_per_s": round(max(runs), 2),
         "samples_per_s": round(3 * max(runs), 2), "runs_steps_per_s": [round(run, 2) for run in runs]}
        for (name, mode), runs in results.items()
    ]
    settings = {"images": args.images, "steps": args.steps, "repeats": args.repeats, "crop": CROP}
    settings |= {"batch": BATCH, "samples_per_step": 3, "torch_threads": torch.get_num_threads()}
    defaults = {"images": 50, "steps": 150, "repeats": 3}
    options = [f"{name}{settings[name]}" for name, default in defaults.items() if settings[name] != default]
    data = {"benchmark": "data_throughput", "settings": settings, "versions": versions}
    data |= {"rows": rows, "speedups": speedups}
    write_result(f"data_throughput/{'-'.join([machine_slug(), *options])}.json", data, args.results)


if __name__ == "__main__":
    main()
