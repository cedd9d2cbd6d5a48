"""Checks this toolkit against the authors' own code (not part of the tests: it needs checkouts of
https://github.com/BBBBchan/CorrMatch and https://github.com/LiheYoung/UniMatch-V2, which are not vendored
here; their modules are imported from the checkout at run time).

    git clone https://github.com/BBBBchan/CorrMatch /tmp/CorrMatch   # needs `pip install einops`
    python benchmarks/verify_official.py --official-repo /tmp/CorrMatch
    git clone https://github.com/LiheYoung/UniMatch-V2 /tmp/UniMatch-V2   # needs tensorboard
    python benchmarks/verify_official.py --unimatch-v2-repo /tmp/UniMatch-V2   # or AUTHORS_CODE_V2=...

``--official-repo``: builds the authors' DeepLabV3Plus (ResNet-101, 21 classes, random weights, BN
statistics and affine parameters away from their defaults), saves its state dict, loads it with
:func:`corrmatch.compat.load_official` and compares, on random 97×97 and 321×321 inputs: ``out`` and
``corr_out`` in eval mode, ``out``, ``out_fp`` and ``corr_out`` in train mode (same RNG seed, so the
same dropout masks), the region masks for the same sampled rows, and the parameter counts. Then the
sliding window (DESIGN.md §4): CorrMatch's labels against the ``evaluate`` of CorrMatch's
``evaluate.py``.

``--unimatch-v2-repo``: UniMatch V2's sliding-window labels against the ``evaluate`` of its
``supervised.py`` (which its ``unimatch_v2.py`` imports).

The sliding-window checks give the release's ``evaluate`` and the toolkit's method (``validation_step``)
the same network (random weights, 19 classes: the releases' window loop allocates 19) and the same
random images, the Cityscapes size among them, and compare every label; the labels are read from the
release's call of ``intersectionAndUnion`` (a recorder that passes its arguments on). The toolkit stacks
windows of equal shape into one forward pass, the release runs one window at a time, which may change
the last bits of a score: so the toolkit's scores are also computed one window per pass, whose labels
must all be equal, and the batched labels may differ only where the release's two best classes are
within ``TIE`` of each other. Without a GPU
their ``.cuda()`` calls are made no-ops, and their ``dist.all_reduce`` runs in a one-process gloo group.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.distributed as dist

from corrmatch import methods
from corrmatch.compat import load_official
from corrmatch.evaluation import segment_probabilities, sliding_window_scores
from corrmatch.models import region_masks

RELEASE_PACKAGES = ("model", "util", "dataset")  # top-level packages both checkouts name alike
NUM_CLASSES = 19  # the releases' sliding window allocates 19 class channels
TIE = 1e-5  # summed-softmax margin below which batched and single forward passes may pick either class


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def release_module(repo: Path, name: str) -> ModuleType:
    """Module ``name`` of a checkout, imported afresh (the checkouts share package names)."""
    for key in [key for key in sys.modules if key.split(".")[0] in (*RELEASE_PACKAGES, name)]:
        del sys.modules[key]
    sys.path.insert(0, str(repo))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(repo))


def check_network(repo: Path) -> None:
    """CorrMatch's DeepLabV3Plus against :func:`corrmatch.compat.load_official` (module docstring)."""
    OfficialDeepLabV3Plus = release_module(repo, "model.semseg.deeplabv3plus").DeepLabV3Plus

    torch.manual_seed(0)
    config = {
        "backbone": "resnet101",
        "pretrain": False,
        "multi_grid": False,
        "replace_stride_with_dilation": [False, True, True],
        "dilations": [12, 24, 36],
        "nclass": 21,
    }
    official = OfficialDeepLabV3Plus(config)
    with torch.no_grad():
        for module in official.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "official.pth"
        torch.save(official.state_dict(), path)
        ours = load_official(path)
    counts = [sum(p.numel() for p in net.parameters()) for net in (official, ours)]
    print(f"parameters: official {counts[0]:,}, corrmatch {counts[1]:,}")
    worst = 0.0
    for size in (97, 321):
        x = torch.randn(2, 3, size, size)
        official.eval()
        ours.eval()
        with torch.no_grad():
            torch.manual_seed(1)
            expected = official(x, use_corr=True)
            torch.manual_seed(1)
            actual = ours(x, correlation=True)
        errors = {key: relative_error(actual[key], expected[key]) for key in ("out", "corr_out")}
        index = torch.randint(0, actual["corr"].shape[1] - 1, (128,))
        sampled = actual["corr"][:, index]
        expected_masks = official.corr.normalize_corr_map(sampled, *actual["feature_size"], size, size)
        same_masks = torch.equal(
            region_masks(actual["corr"], actual["feature_size"], (size, size), index=index), expected_masks
        )
        official.train()
        ours.train()
        torch.manual_seed(2)
        expected = official(x, need_fp=True, use_corr=True)
        torch.manual_seed(2)
        actual = ours(x, perturb=True, correlation=True)
        errors |= {
            f"train {key}": relative_error(actual[key], expected[key])
            for key in ("out", "out_fp", "corr_out")
        }
        worst = max(worst, *errors.values())
        print(
            f"{size}x{size}: "
            + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
            + f", region masks equal: {same_masks}"
        )
        if not same_masks:
            raise SystemExit("region masks differ")
    if counts[0] != counts[1] or worst > 1e-5:
        raise SystemExit(f"mismatch: worst relative error {worst:.2e}")
    print(f"OK: worst relative error {worst:.2e}")


class Logits(torch.nn.Module):
    """The toolkit's network as the releases call it: ``model(x)`` gives the logits (UniMatch V2's DPT)
    or ``{"out": logits}`` (CorrMatch's DeepLabV3Plus)."""

    def __init__(self, net: torch.nn.Module, as_dict: bool) -> None:
        super().__init__()
        self.net, self.as_dict = net, as_dict

    def forward(self, x: torch.Tensor) -> Any:
        out = self.net(x)["out"]
        return {"out": out} if self.as_dict else out


def release_labels(
    release: ModuleType, model: torch.nn.Module, batches: list[tuple], crop: int
) -> tuple[torch.Tensor, float]:
    """The labels of the release's ``evaluate`` in ``sliding_window`` mode (all batches) and its mIoU."""
    recorded: list[torch.Tensor] = []
    original: Callable = release.intersectionAndUnion

    def recorder(output: Any, target: Any, *args: Any) -> Any:
        recorded.append(torch.as_tensor(output).clone())
        return original(output, target, *args)

    release.intersectionAndUnion = recorder
    try:
        cfg = {"crop_size": crop, "nclass": NUM_CLASSES}
        result = release.evaluate(model, batches, "sliding_window", cfg)
    finally:
        release.intersectionAndUnion = original
    miou = result["mIOU"] if isinstance(result, dict) else result[0]  # CorrMatch's dict, UniMatch V2's pair
    return torch.cat(recorded), float(miou)


def window_by_window(logits: Callable, batch: int, windows: torch.Tensor) -> torch.Tensor:
    """``logits`` of stacked windows (each ``batch`` images), one window per forward pass."""
    return torch.cat([logits(part) for part in windows.split(batch)])


def check_sliding_window(repo: Path, name: str) -> bool:
    """The method's validation labels against its release's ``evaluate`` (module docstring); prints one
    line per image size and returns whether every label is equal."""
    if name == "UniMatchV2":
        release = release_module(repo, "supervised")
        network = {"encoder_name": "dinov2_small", "encoder_weights": None}
        cases = [((1024, 2048), 798, 1), ((144, 288), 112, 2), ((98, 252), 112, 2), ((112, 126), 112, 2)]
        other = "corrmatch"
    else:
        release = release_module(repo, "evaluate")
        network = {
            "encoder_name": "resnet18",
            "encoder_weights": None,
            "output_stride": 16,
            "atrous_rates": (6, 12, 18),
            "decoder_channels": 64,
        }
        cases = [((1024, 2048), 801, 1), ((97, 131), 65, 2), ((50, 200), 65, 2)]
        other = "unimatch_v2"
    all_equal = True
    for (height, width), crop, batch in cases:
        torch.manual_seed(0)
        module = getattr(methods, name)(
            network=network, num_classes=NUM_CLASSES, crop_size=crop, eval_mode="sliding_window"
        )
        with torch.no_grad():
            for parameter in module.parameters():  # away from the initialisation, so classes vary
                parameter.add_(torch.randn_like(parameter) * 0.05)
        module.eval()
        image = torch.randn(batch, 3, height, width)
        mask = torch.randint(0, NUM_CLASSES, (batch, height, width))
        ids = ["id"] * batch
        loader = [(image, mask, ids, image)] if name == "CorrMatch" else [(image, mask, ids)]
        model = Logits(module.net, as_dict=name == "CorrMatch")
        with torch.no_grad():
            theirs, their_miou = release_labels(release, model, loader, crop)
            ours = module.validation_step({"image": image, "mask": mask}, 0)["pred"]
            # the same placement, one window per forward pass as the release runs them (the toolkit
            # stacks windows of equal shape into one batch, which may change the last bits)
            one_by_one = sliding_window_scores(
                partial(window_by_window, module.logits, batch),
                image,
                crop,
                module.window_placement,
            )
            moved = segment_probabilities(module.logits, image, "sliding_window", crop, placement=other)[0]
        our_miou = module.iou.compute()[0].item()
        pixels, unbatched = ours.numel(), int((one_by_one.argmax(1) == theirs).sum())
        differ = ours != theirs
        # the release's margin where the batched labels differ: its score of its label minus that of ours
        margin = (one_by_one.gather(1, theirs[:, None]) - one_by_one.gather(1, ours[:, None]))[:, 0][differ]
        near_tie = margin.max().item() if differ.any() else 0.0
        all_equal &= unbatched == pixels and near_tie < TIE
        changed = 100 * (moved != ours).float().mean().item()
        print(
            f"{name} {height}x{width} at {crop}, batch {batch}: labels equal on {pixels - int(differ.sum())}"
            f"/{pixels} pixels (largest score margin where not: {near_tie:.1e}), one window per "
            f"forward {unbatched}/{pixels}; mIoU release {their_miou:.4f} / toolkit {our_miou:.4f}; "
            f"the other placement ({other}) changes {changed:.2f} % of the labels"
        )
    return all_equal


def one_process_group(backend: str = "gloo") -> None:
    """A process group of one (gloo, or ``backend``), for the releases' collectives."""
    if not dist.is_initialized():
        store = Path(tempfile.mkdtemp()) / "store"
        dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--official-repo", type=Path, help="checkout of BBBBchan/CorrMatch")
    parser.add_argument(
        "--unimatch-v2-repo",
        type=Path,
        default=os.environ.get("AUTHORS_CODE_V2"),
        help="checkout of LiheYoung/UniMatch-V2 (default: $AUTHORS_CODE_V2)",
    )
    args = parser.parse_args()
    if args.official_repo is None and args.unimatch_v2_repo is None:
        parser.error("give --official-repo and/or --unimatch-v2-repo (or set AUTHORS_CODE_V2)")
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self  # the releases' .cuda(): stay on the CPU
    one_process_group()
    equal = True
    if args.official_repo is not None:
        check_network(args.official_repo)
        equal &= check_sliding_window(args.official_repo, "CorrMatch")
    if args.unimatch_v2_repo is not None:
        equal &= check_sliding_window(args.unimatch_v2_repo, "UniMatchV2")
    if not equal:
        raise SystemExit("sliding-window labels differ from the release's")
    print("OK: sliding-window labels equal the releases'")


if __name__ == "__main__":
    main()
