"""Whether a trained model's predictions depend on how much of the image it sees (docs/regime-search.md,
"How much of the image the models see"). Every variant is scored on the same pixels: the centred
window of the training crop in each validation image.

    python benchmarks/context.py runs/regime/p15/CorrMatch-seed0/checkpoints/last.ckpt --root data/demo_plain_t2

Variants, each one line with its mIoU and the share of object pixels predicted background:
  whole          the whole image in one pass (the benchmark's validation), cut to the window
  window         the window alone
  padded         the window padded with zeros (the normalised mean colour) to the image's size
  pool-window    whole image, the ASPP image-pooling branch averaging only the window's features
  taps-zeroed    whole image, the dilated ASPP branches without their off-centre taps (at the crop's
                 feature map, smaller than the rates, those taps only ever see padding in training)
  bn-clean       whole image after re-estimating every BatchNorm's statistics on clean windows of the
                 unlabeled images (training mode, no gradients), instead of the training run's averages
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from corrmatch.evaluation import center_crop
from corrmatch.inference import Segmenter
from corrmatch.models.deeplabv3plus import resize

VARIANTS = ("whole", "window", "padded", "pool-window", "taps-zeroed", "bn-clean")


def load(root: Path, split: str, limit: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    lines = (root / split).read_text().splitlines()[:limit]
    return [
        (
            np.asarray(Image.open(root / image).convert("RGB")),
            np.asarray(Image.open(root / mask)).astype(np.int64),
        )
        for image, mask in (line.split() for line in lines)
    ]


def window_scores(segmenter: Segmenter, pairs: list, window: int, variant: str) -> np.ndarray:
    """(K, K) pixel counts of the centred windows, rows the mask's classes, columns the predictions."""
    k = segmenter.num_classes
    counts = np.zeros((k, k), np.int64)
    for image, mask in pairs:
        x = segmenter.preprocess(image)
        height, width = x.shape[-2:]
        if min(height, width) < window:
            raise SystemExit(
                f"error: a validation image of {height} × {width} is smaller than the window {window}"
            )
        top, left = (height - window) // 2, (width - window) // 2
        if variant == "window":
            x = center_crop(x, window)
        elif variant == "padded":
            x = F.pad(center_crop(x, window), (left, width - window - left, top, height - window - top))
        predicted = segmenter.logits(x).argmax(1)[0].cpu().numpy()
        if variant != "window":
            predicted = predicted[top : top + window, left : left + window]
        truth = mask[top : top + window, left : left + window]
        keep = truth < k
        counts += np.bincount(truth[keep] * k + predicted[keep], minlength=k * k).reshape(k, k)
    return counts


def pool_on_window(segmenter: Segmenter, window: int) -> None:
    """Makes the ASPP image-pooling branch average only the features of the centred window."""
    stride = segmenter.network.output_stride

    def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
        features = inputs[0]
        return resize(module.gap(center_crop(features, max(window // stride, 1))), features.shape[-2:])

    segmenter.net.decoder.aspp.b4.register_forward_hook(hook)


def zero_off_centre_taps(segmenter: Segmenter) -> None:
    aspp = segmenter.net.decoder.aspp
    with torch.no_grad():
        for branch in (aspp.b1, aspp.b2, aspp.b3):
            weight = branch[0].weight
            centre = weight[:, :, 1, 1].clone()
            weight.zero_()
            weight[:, :, 1, 1] = centre


def reestimate_batchnorm(segmenter: Segmenter, images: list[np.ndarray], window: int, batches: int) -> None:
    net, rng = segmenter.net, random.Random(0)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    net.train()
    with torch.no_grad():
        for _ in range(batches):
            crops = []
            for image in rng.sample(images, 8):
                x = segmenter.preprocess(image)
                top = rng.randint(0, x.shape[-2] - window)
                left = rng.randint(0, x.shape[-1] - window)
                crops.append(x[..., top : top + window, left : left + window])
            net(torch.cat(crops).to(segmenter.device))
    net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--root", type=Path, default=Path("data/demo_plain_t2"), help="dataset root")
    parser.add_argument("--limit", type=int, default=None, help="only the first validation images")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()
    pairs = load(args.root, "splits/val.txt", args.limit)
    unlabeled = (
        [image for image, _ in load(args.root, "splits/unlabeled.txt", 480)]
        if "bn-clean" in args.variants
        else []
    )
    for checkpoint in args.checkpoints:
        for variant in args.variants:
            segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu")
            window = segmenter.crop_size
            if variant == "pool-window":
                pool_on_window(segmenter, window)
            elif variant == "taps-zeroed":
                zero_off_centre_taps(segmenter)
            elif variant == "bn-clean":
                reestimate_batchnorm(segmenter, unlabeled, window, batches=60)
            with torch.inference_mode():
                counts = window_scores(segmenter, pairs, window, variant)
            hit = np.diag(counts)
            iou = hit / np.maximum(counts.sum(0) + counts.sum(1) - hit, 1)
            to_background = counts[1:, 0].sum() / max(counts[1:].sum(), 1)
            print(
                f"{checkpoint}  {variant:>11}: mIoU {100 * iou.mean():5.1f}  "
                f"object pixels predicted background {100 * to_background:5.1f} %"
            )


if __name__ == "__main__":
    main()
