"""corrmatch.callbacks.TrainingSpeed in a tiny fit through the CLI: what the loggers get and the line it
prints after each validation, with a wait for data made long on purpose."""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
from conftest import tiny_config

from corrmatch.cli import main

DELAY = 0.3  # seconds added before each batch's start, counted in the wait for data


class SlowData(pl.Callback):
    """Holds every training batch back by ``delay`` seconds before its step starts, as a slow loader would
    (it runs before TrainingSpeed's own hook, which the CLI appends after the configured callbacks)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        time.sleep(self.delay)


def test_the_loggers_get_the_pace_and_the_wait_and_each_validation_prints_them(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = {
        "max_epochs": 2,
        "limit_train_batches": 3,
        "limit_val_batches": 1,
        "log_every_n_steps": 2,
        "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path / "csv")}},
        "callbacks": [{"class_path": "test_training_speed.SlowData", "init_args": {"delay": DELAY}}],
    }
    config = tiny_config(tmp_path / "tiny.yaml", tiny_root, tmp_path / "run", trainer=trainer)
    main(["fit", "--config", str(config)])

    lines = re.findall(r"^training speed: .*$", capsys.readouterr().out, re.M)
    assert len(lines) == 2  # one per validation
    pattern = r"training speed: ([0-9.]+) s an iteration, (\d+) % of it waiting for data"
    first = re.fullmatch(pattern + r"; 3 iterations left, about 0 h \d\d min", lines[0])
    assert first and float(first[1]) >= DELAY and 0 <= int(first[2]) <= 100
    assert re.fullmatch(pattern, lines[1])  # nothing left after the last epoch

    (metrics,) = (tmp_path / "csv").rglob("metrics.csv")
    rows = [row for row in csv.DictReader(metrics.open()) if row.get("time/iteration_s")]
    assert [int(row["step"]) for row in rows] == [2, 4, 6]
    for row in rows:
        wait, iteration, share = (float(row[f"time/{name}"]) for name in ("data_wait_s", "iteration_s", "data_wait_share"))
        assert DELAY <= wait < iteration and share == pytest.approx(wait / iteration)


def test_a_run_that_never_logs_still_prints_its_pace(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``log_every_n_steps 0`` turns Lightning's step logging off; the loggers then get no times either."""
    trainer = {
        "limit_train_batches": 3,
        "limit_val_batches": 1,
        "log_every_n_steps": 0,
        "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path / "csv")}},
    }
    main(["fit", "--config", str(tiny_config(tmp_path / "tiny.yaml", tiny_root, tmp_path / "run", trainer=trainer))])
    assert len(re.findall(r"^training speed: [0-9.]+ s an iteration", capsys.readouterr().out, re.M)) == 1
    assert not any("time/" in path.read_text() for path in (tmp_path / "csv").rglob("metrics.csv"))
