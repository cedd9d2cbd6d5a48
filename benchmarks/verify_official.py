"""Checks this toolkit's paper network against the authors' own model class (not part of the tests: it
needs a checkout of https://github.com/BBBBchan/CorrMatch, which is not vendored here).

    git clone https://github.com/BBBBchan/CorrMatch /tmp/CorrMatch   # needs `pip install einops`
    python benchmarks/verify_official.py --official-repo /tmp/CorrMatch

Builds the authors' DeepLabV3Plus (ResNet-101, 21 classes, random weights, BN statistics and affine
parameters away from their defaults), saves its state dict, loads it with
:func:`corrmatch.compat.load_official` and compares, on random 97×97 and 321×321 inputs: ``out`` and
``corr_out`` in eval mode, ``out``, ``out_fp`` and ``corr_out`` in train mode (same RNG seed, so the
same dropout masks), the region masks for the same sampled rows, and the parameter counts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from corrmatch.compat import load_official
from corrmatch.models import region_masks


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--official-repo", type=Path, required=True)
    args = parser.parse_args()
    sys.path.append(str(args.official_repo))
    from model.semseg.deeplabv3plus import DeepLabV3Plus as OfficialDeepLabV3Plus

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


if __name__ == "__main__":
    main()
