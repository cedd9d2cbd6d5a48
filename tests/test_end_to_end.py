"""benchmarks/end_to_end.py: the Pascal paper config trains a few iterations on generated images on the
CPU and its result file holds the settings, iterations per second and the data-wait share."""

from __future__ import annotations

import json
from pathlib import Path

import end_to_end
import torch


def test_end_to_end_writes_its_result(tmp_path: Path) -> None:
    argv = ["--crop", "33", "--images", "4", "--steps", "1", "--warmup", "1", "--num-workers", "0"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on two busy cores make a step several times slower
    try:
        end_to_end.main([*argv, "--accelerator", "cpu", "--results", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    files = list((tmp_path / "end_to_end").glob("*.json"))
    assert len(files) == 1
    assert files[0].name.endswith("-steps1-warmup1-images4-crop33-acceleratorcpu-workers0.json")
    data = json.loads(files[0].read_text(encoding="utf-8"))
    settings = data["settings"]
    given = {"crop": 33, "images": 4, "steps": 1, "warmup": 1, "num_workers": 0, "accelerator": "cpu"}
    assert {key: settings[key] for key in given} == given
    assert settings["precision"] == "32-true" and settings["config"] == "configs/pascal/corrmatch.yaml"
    assert data["device_type"] == "cpu" and data["device"]
    assert data["iterations_per_s"] > 0 and 0 <= data["data_wait_share"] <= 1
    assert len(data["wait_s"]) == len(data["step_s"]) == 1
    assert "--data.crop_size 33" in data["train_command"]
    assert "end_to_end.DataWait" in data["train_command"]
