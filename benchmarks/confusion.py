"""Where a trained model's pixels go: the confusion matrix of checkpoints on a split of the demo (or any
dataset in its layout), each row (a true class) in percent of its pixels, optionally after one operation
of the strong augmentation applied to the whole input image (docs/regime-search.md, "Why the semi-supervised
runs lose objects").

    python benchmarks/confusion.py runs/regime/p5/CorrMatch-seed1/checkpoints/last.ckpt
    python benchmarks/confusion.py CKPT --views none blur2 half gray hue36 hue72 --limit 50

Pixels marked 255 in the mask are left out. The model predicts whole images as ``train.py predict`` does
(:class:`corrmatch.inference.Segmenter`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from corrmatch.inference import Segmenter

VIEWS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "none": lambda image: image,
    "blur1": lambda image: image.filter(ImageFilter.GaussianBlur(1)),
    "blur2": lambda image: image.filter(ImageFilter.GaussianBlur(2)),
    "half": lambda image: image.resize((image.width // 2, image.height // 2), Image.BILINEAR).resize(
        image.size, Image.BILINEAR
    ),
    "gray": lambda image: image.convert("L").convert("RGB"),
    "hue36": lambda image: shift_hue(image, 36),
    "hue72": lambda image: shift_hue(image, 72),
}


def shift_hue(image: Image.Image, degrees: float) -> Image.Image:
    """The image with every hue turned by ``degrees`` (the strong view's colour jitter turns it by up to
    ±90°; the demo's class hues are 72° apart)."""
    h, s, v = image.convert("HSV").split()
    turned = h.point(lambda value: (value + round(degrees / 360 * 256)) % 256)
    return Image.merge("HSV", (turned, s, v)).convert("RGB")


def confusion(segmenter: Segmenter, pairs: list[tuple[Path, Path]], view: str) -> np.ndarray:
    """(K, K) pixel counts, rows the mask's classes, columns the predictions."""
    k = segmenter.num_classes
    counts = np.zeros((k, k), np.int64)
    for image_path, mask_path in pairs:
        image = VIEWS[view](Image.open(image_path).convert("RGB"))
        predicted = segmenter.predict(np.asarray(image)).numpy()
        truth = np.asarray(Image.open(mask_path))
        keep = truth < k
        counts += np.bincount(truth[keep] * k + predicted[keep], minlength=k * k).reshape(k, k)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--root", type=Path, default=Path("data/demo_plain"), help="dataset root")
    parser.add_argument("--split", default="splits/val.txt", help="split file, relative to --root")
    parser.add_argument("--views", nargs="+", choices=VIEWS, default=["none"])
    parser.add_argument("--limit", type=int, default=None, help="only the split's first images")
    args = parser.parse_args()
    lines = (args.root / args.split).read_text().splitlines()[: args.limit]
    pairs = [(args.root / image, args.root / mask) for image, mask in (line.split() for line in lines)]
    for checkpoint in args.checkpoints:
        segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu")
        names = segmenter.class_names
        for view in args.views:
            counts = confusion(segmenter, pairs, view)
            hit = np.diag(counts)
            iou = hit / np.maximum(counts.sum(0) + counts.sum(1) - hit, 1)
            print(f"{checkpoint}  view {view}: mIoU {100 * iou.mean():.1f}  ({len(pairs)} images)")
            print("true \\ predicted (% of the row): " + " ".join(f"{name:>10}" for name in names))
            rows = 100 * counts / np.maximum(counts.sum(1, keepdims=True), 1)
            for name, row in zip(names, rows, strict=True):
                print(f"{name:>32} " + " ".join(f"{value:10.1f}" for value in row))


if __name__ == "__main__":
    main()
