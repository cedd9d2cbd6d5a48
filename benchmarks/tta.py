"""Test-time augmentation on the demo dataset: validation mIoU and time per image of a trained model
without TTA, with the horizontal flip, with three scales, and with both.

    python train.py fit --config configs/demo.yaml --trainer.default_root_dir /tmp/tta_demo
    python benchmarks/tta.py /tmp/tta_demo --data data/demo_plain

``--data`` is the demo folder the model was trained on (``data/demo_plain`` for ``configs/demo.yaml``,
``data/demo`` for the standard demo).

The model is loaded with ``corrmatch.Segmenter.from_checkpoint`` (a run directory: its best checkpoint).
Every validation image of the demo split is predicted by
``corrmatch.evaluation.segment_probabilities`` in two modes: ``original`` (the whole image in one pass,
the demo's validation mode) and the sliding window of the training crop (what ``train.py predict`` and
``Segmenter.predict`` use for the demo's images, larger than the crop). The mIoU sums intersections and
unions over the set (DESIGN.md §4). Time: mean wall-clock milliseconds per image of the prediction alone
(images read and normalised beforehand), after one warm-up image, on one process.

The figures are written to ``--results`` (default ``benchmarks/results``) as
``tta/<machine>-<method>-threads<N>.json`` (:mod:`record`).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from record import RESULTS, machine_slug, write_result

from corrmatch import Segmenter
from corrmatch.data import ValDataset, ensure_demo
from corrmatch.data.transforms import AugmentConfig
from corrmatch.evaluation import MeanIoU, segment_probabilities

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "none": (None, False),
    "flip": (None, True),
    "scales 0.75/1/1.25": ([0.75, 1.0, 1.25], False),
    "scales 0.75/1/1.25 + flip": ([0.75, 1.0, 1.25], True),
}


def evaluate(model: Segmenter, samples: list[dict], mode: str, scales, flip: bool) -> tuple[float, float]:
    """(mIoU in percent, mean milliseconds per image) of one setting over ``samples``."""
    metric = MeanIoU(model.num_classes)
    settings = (model.crop_size, scales, flip, model.window_placement)
    segment_probabilities(model.logits, samples[0]["image"][None], mode, *settings)
    start = time.perf_counter()
    for sample in samples:
        image = sample["image"][None]
        labels, _ = segment_probabilities(model.logits, image, mode, *settings)
        metric.update(labels.cpu(), sample["mask"][None])
    elapsed = (time.perf_counter() - start) / len(samples) * 1000
    return metric.compute()[0].item(), elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="run directory or checkpoint of a demo run")
    parser.add_argument("--data", default=str(ROOT / "data" / "demo"), help="demo dataset root")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the result files")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = Segmenter.from_checkpoint(args.checkpoint, device="cpu")
    root = ensure_demo(args.data)
    augment = AugmentConfig(mean=model.info.mean, std=model.info.std)
    samples = list(ValDataset(root, root / "splits" / "val.txt", augment))
    sides = [side for sample in samples for side in sample["image"].shape[-2:]]
    print(
        f"torch {torch.__version__}, {platform.machine()}, {args.threads} threads; {args.checkpoint}: "
        f"{model.method}, val mIoU {model.val_miou} (recorded), crop {model.crop_size}; "
        f"{len(samples)} validation images, sides {min(sides)}-{max(sides)} pixels"
    )
    print("| TTA | views | mIoU whole image | ms/image | mIoU sliding window | ms/image |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name, (scales, flip) in SETTINGS.items():
        views = len(scales or [1.0]) * (2 if flip else 1)
        whole = evaluate(model, samples, "original", scales, flip)
        window = evaluate(model, samples, "sliding_window", scales, flip)
        print(f"| {name} | {views} | {whole[0]:.2f} | {whole[1]:.1f} | {window[0]:.2f} | {window[1]:.1f} |")
        figures = {"miou_whole": whole[0], "ms_whole": whole[1], "miou_window": window[0], "ms_window": window[1]}
        rows.append({"tta": name, "views": views, "scales": scales, "flip": flip} | {
            key: round(value, 2 if key.startswith("miou") else 1) for key, value in figures.items()
        })
    model_info = {"method": model.method, "val_miou": model.val_miou, "crop": model.crop_size}
    data_root = Path(args.data).resolve()
    data_root = data_root.relative_to(ROOT) if ROOT in data_root.parents else data_root
    data = {"benchmark": "tta", "checkpoint": args.checkpoint, "data": str(data_root), "threads": args.threads}
    data |= {"model": model_info, "images": len(samples), "sides": [min(sides), max(sides)], "rows": rows}
    write_result(f"tta/{machine_slug()}-{model.method}-threads{args.threads}.json", data, args.results)


if __name__ == "__main__":
    main()
