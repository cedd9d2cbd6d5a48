"""Export (python -m corrmatch.export): ONNX and TorchScript graphs of the clean forward give PyTorch's
logits (at two input sizes when dynamic), carry the model's config, and bad requests are one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HANG_GUARD, REPO

from corrmatch import Segmenter
from corrmatch.export import main

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def model(tiny_run: Path) -> Segmenter:
    return Segmenter.from_checkpoint(tiny_run, device="cpu")


def inputs(*sizes: tuple[int, int]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(1, 3, h, w, generator=generator) for h, w in sizes]


def test_onnx_dynamic_matches_pytorch_at_two_sizes(
    tiny_run: Path, model: Segmenter, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    main([str(tiny_run), "--format", "onnx", "--out", str(out), "--dynamic"])
    assert "max |logit difference| vs PyTorch at 65×65, 82×96" in capsys.readouterr().out
    runtime = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in runtime.get_inputs()] == ["image"]
    for x in inputs((65, 65), (80, 112)) + [torch.randn(2, 3, 71, 57)]:
        (logits,) = runtime.run(None, {"image": x.numpy()})
        expected = model.logits(x).numpy()
        assert logits.shape == expected.shape
        assert np.abs(logits - expected).max() < TOLERANCE
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(metadata["corrmatch_config"]) == model.config()


def test_onnx_static_shape_and_torchscript(tiny_run: Path, model: Segmenter, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "fixed.onnx"
    main([str(tiny_run), "--format", "onnx", "--out", str(out), "--height", "48", "--width", "72"])
    runtime = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert runtime.get_inputs()[0].shape == [1, 3, 48, 72]
    (x,) = inputs((48, 72))
    assert np.abs(runtime.run(None, {"image": x.numpy()})[0] - model.logits(x).numpy()).max() < TOLERANCE

    out = tmp_path / "model.pt"
    main([str(tiny_run / "checkpoints" / "last.ckpt"), "--format", "torchscript", "--out", str(out)])
    extra = {"config.json": ""}
    graph = torch.jit.load(str(out), map_location="cpu", _extra_files=extra)
    assert json.loads(extra["config.json"]) == model.config()
    with torch.no_grad():
        for x in inputs((65, 65), (80, 112)):
            assert (graph(x) - model.logits(x)).abs().max().item() < TOLERANCE


def test_bad_export_requests_are_one_line_errors(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def error_line(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--out", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        return lines[0]

    assert "unknown export format 'tflite'" in error_line(str(tiny_run), "--format", "tflite")
    bad = tmp_path / "bad.ckpt"
    bad.write_text("text")
    assert f"not a PyTorch checkpoint: {bad}" in error_line(str(bad), "--format", "torchscript")
    assert "--format" in error_line(str(tiny_run))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # the optional extra is not installed
    line = error_line(str(tiny_run), "--format", "onnx")
    assert "onnxruntime" in line and 'pip install -e ".[export]"' in line
    assert not (tmp_path / "out").exists()


def test_module_entry_point(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "corrmatch.export",
            "x.ckpt",
            "--format",
            "coreml",
            "--out",
            str(tmp_path / "m"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: unknown export format 'coreml' (choose onnx or torchscript)"
    )
