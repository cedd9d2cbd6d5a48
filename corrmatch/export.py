"""Export of the inference network to ONNX or TorchScript:

    python -m corrmatch.export CHECKPOINT --format onnx|torchscript --out FILE [--height H --width W] [--dynamic]

The exported graph is the clean forward of DESIGN.md §1, ``net(x)["out"]`` (no feature perturbation, no
correlation branch): input ``image``, a normalised float32 batch (B, 3, H, W) as
:meth:`corrmatch.Segmenter.preprocess` returns it, output ``logits`` (B, K, H, W). ``CHECKPOINT`` is
anything :meth:`corrmatch.Segmenter.from_checkpoint` loads. The example input is 1 × 3 × H × W (default:
the training crop); ONNX fixes that shape unless ``--dynamic`` (batch, height and width free), a
TorchScript graph takes any size. The model's ``config.json`` content (classes, palette,
normalisation) is stored with the graph: ONNX metadata ``corrmatch_config``, TorchScript extra file
``config.json``. After writing, the graph's logits are compared with PyTorch's and the largest
difference is printed. ONNX needs the optional packages ``onnx`` and ``onnxruntime``
(``pip install -e ".[export]"``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import torch
from torch import Tensor, nn

from corrmatch.errors import ConfigError, UserError
from corrmatch.inference import Segmenter

__all__ = ["FORMATS", "LogitsNet", "export", "main", "max_logit_difference"]

FORMATS = ("onnx", "torchscript")
INSTALL = 'pip install -e ".[export]"'
METADATA_KEY = "corrmatch_config"
OPSET = 17
# deprecation notices of the exporters used here, not actionable by the user
QUIET = (
    "You are using the legacy TorchScript-based ONNX export",
    "The feature will be removed",
    "`torch.jit.",
)


class LogitsNet(nn.Module):
    """The network's clean forward as a graph-friendly module: ``image`` → ``net(image)["out"]``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image)["out"]


@contextmanager
def _quiet() -> Iterator[None]:
    """Hides the exporters' deprecation notices (:data:`QUIET`)."""
    with warnings.catch_warnings():
        for message in QUIET:
            warnings.filterwarnings("ignore", message=f".*{message}")
        yield


def _check_format(fmt: str) -> None:
    """A known format whose packages are installed, else a one-line :class:`ConfigError`."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r} (choose {' or '.join(FORMATS)})")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as error:
            raise ConfigError(f"ONNX export needs the optional package {error.name}: {INSTALL}") from None


def export(
    model: Segmenter,
    out: str | os.PathLike,
    fmt: str = "onnx",
    height: int | None = None,
    width: int | None = None,
    dynamic: bool = False,
) -> Path:
    """Writes ``model``'s inference network (:class:`LogitsNet`, float32 on the CPU) to ``out`` in
    ``fmt``, traced on a 1 × 3 × ``height`` × ``width`` input (default: the training crop)."""
    _check_format(fmt)
    height, width = height or model.crop_size, width or model.crop_size
    if min(height, width) < 1:
        raise ConfigError(f"--height and --width must be positive, got {height} × {width}")
    if dynamic and model.network.is_vit:
        raise ConfigError(
            f"--dynamic: the {model.network.encoder_name} network resizes its position embeddings per input "
            "size, which a traced graph fixes; export one file per size with --height and --width"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = LogitsNet(copy.deepcopy(model.net)).float().cpu().eval()  # the model keeps its device
    example = torch.zeros(1, 3, height, width)
    config = json.dumps(model.config())
    with _quiet():
        if fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(module, example)
            torch.jit.save(traced, str(out), _extra_files={"config.json": config})
        else:
            import onnx

            axes = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(
                module,
                (example,),
                str(out),
                dynamo=False,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": axes, "logits": axes} if dynamic else None,
                opset_version=OPSET,
            )
            graph = onnx.load(str(out))
            onnx.helper.set_model_props(graph, {METADATA_KEY: config})
            onnx.save(graph, str(out))
    return out


def max_logit_difference(path: str | os.PathLike, fmt: str, model: Segmenter, batch: Tensor) -> float:
    """Largest absolute difference between the exported graph's logits and PyTorch's on ``batch``."""
    _check_format(fmt)
    expected = model.logits(batch).float().cpu()
    if fmt == "torchscript":
        with torch.no_grad(), _quiet():
            got = torch.jit.load(str(path), map_location="cpu")(batch.float().cpu())
    else:
        import onnxruntime

        runtime = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(runtime.run(None, {"image": batch.float().cpu().numpy()})[0])
    return (got - expected).abs().max().item()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (usage: python -m corrmatch.export --help)", file=sys.stderr)
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; a user error is one line ``error: …`` on stderr and exit status 2."""
    parser = _Parser(
        prog="python -m corrmatch.export",
        description="Export the inference network (clean-forward logits) to ONNX or TorchScript.",
    )
    parser.add_argument(
        "checkpoint", help="checkpoint, run directory, save_pretrained folder or authors' file"
    )
    parser.add_argument("--format", required=True, help="onnx or torchscript")
    parser.add_argument("--out", required=True, help="file to write")
    parser.add_argument("--height", type=int, help="example input height (default: the training crop)")
    parser.add_argument("--width", type=int, help="example input width (default: the training crop)")
    parser.add_argument("--dynamic", action="store_true", help="ONNX: free batch, height and width")
    args = parser.parse_args(argv)
    try:
        _check_format(args.format)  # before the checkpoint is read
        model = Segmenter.from_checkpoint(args.checkpoint, device="cpu")
        out = export(model, args.out, args.format, args.height, args.width, args.dynamic)
    except UserError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    height, width = args.height or model.crop_size, args.width or model.crop_size
    sizes = [(height, width)] + ([(height + 17, width + 31)] if args.dynamic else [])
    generator = torch.Generator().manual_seed(0)
    difference = max(
        max_logit_difference(out, args.format, model, torch.randn(1, 3, h, w, generator=generator))
        for h, w in sizes
    )
    checked = ", ".join(f"{h}×{w}" for h, w in sizes)
    print(
        f"wrote {out} ({args.format}, input 'image'; max |logit difference| vs PyTorch at {checked}: {difference:.2e})"
    )


if __name__ == "__main__":
    main()
