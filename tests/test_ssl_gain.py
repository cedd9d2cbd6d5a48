"""benchmarks/ssl_gain.py end to end on a budget of a few steps: the seeds' labeled draws,
the reference's split, the last line's JSON, the read-back of finished runs and the refusal to overwrite
a finished run of other settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import HANG_GUARD

from corrmatch.data.io import parse_split, read_mask

ROOT = Path(__file__).resolve().parents[1]
ARGS = "--seeds 0 3 --methods CorrMatch FullySupervised --steps 12 --encoder-weights none".split()
PL_KEYS = {"pl_acc", "pl_used", "pl_confident_acc", "pl_confident_used", "pl_propagated_acc", "pl_propagated_used"}


def run_ssl_gain(*args: str) -> subprocess.CompletedProcess[str]:
    """The script with ``args``; its result files go to ``<--out>/results``, never into the repository."""
    out = args[args.index("--out") + 1]
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ssl_gain.py"), *args, "--results", f"{out}/results"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )


def ssl_gain(*args: str) -> list[str]:
    result = run_ssl_gain(*args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout.strip().splitlines()


@pytest.fixture(scope="module")
def gain_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str], list[str]]:
    """Two seeds (0 and 3) of CorrMatch and the FullySupervised reference, 12 steps each, from a
    from-scratch encoder; then the same command again."""
    tmp = tmp_path_factory.mktemp("ssl_gain")
    data, out = tmp / "data", tmp / "runs"
    places = ("--data-dir", str(data), "--out", str(out))
    return data, out, ssl_gain(*ARGS, *places), ssl_gain(*ARGS, *places)


def test_each_run_writes_its_result_file_with_where_and_how_it_ran(gain_runs) -> None:
    _, out, first, _ = gain_runs
    result = json.loads(first[-1])
    files = sorted((out / "results").glob("*.json"))
    assert [path.name for path in files] == [
        "CorrMatch-seed0.json", "CorrMatch-seed3.json", "FullySupervised-seed0.json", "FullySupervised-seed3.json"
    ]
    for path in files:
        record = json.loads(path.read_text())
        method, seed = record["method"], record["seed"]
        assert record["miou"] == result[method][[0, 3].index(seed)]
        assert abs(sum(record["iou_per_class"].values()) / 6 - record["miou"]) < 0.01
        assert record["regime"]["steps"] == 12 and record["command"].startswith("python benchmarks/ssl_gain.py")
        assert record["machine"]["cores"] >= 1 and record["torch"] and record["date"]


def test_last_line_holds_miou_per_seed_and_pseudo_label_metrics(gain_runs) -> None:
    _, _, first, _ = gain_runs
    result = json.loads(first[-1])
    assert set(result) == {"CorrMatch", "FullySupervised", "pseudo_label_accuracy"}
    for method in ("CorrMatch", "FullySupervised"):
        assert len(result[method]) == 2 and all(0.0 <= value <= 100.0 for value in result[method])
    assert list(result["pseudo_label_accuracy"]) == ["CorrMatch"]
    for metrics in result["pseudo_label_accuracy"]["CorrMatch"]:
        assert set(metrics) == PL_KEYS
        for kind in ("pl", "pl_confident", "pl_propagated"):  # an accuracy of no pixels is undefined, not 0
            share, accuracy = metrics[f"{kind}_used"], metrics[f"{kind}_acc"]
            assert 0.0 <= share <= 100.0
            assert accuracy is None if share == 0.0 else 0.0 <= accuracy <= 100.0


def test_each_seed_draws_eight_labeled_images_showing_every_class_three_times(gain_runs) -> None:
    data, out, _, _ = gain_runs
    root = data / "demo_plain_t2"
    pool = {
        entry.image
        for name in ("labeled", "unlabeled")
        for entry in parse_split(root / "splits" / f"{name}.txt")
    }
    draws = []
    for seed in (0, 3):
        run = out / f"CorrMatch-seed{seed}"
        labeled, unlabeled = parse_split(run / "labeled.txt"), parse_split(run / "unlabeled.txt")
        assert len(labeled) == 8
        images = {entry.image for entry in labeled}
        assert images.isdisjoint(entry.image for entry in unlabeled)
        assert images | {entry.image for entry in unlabeled} == pool
        shown = np.array([np.isin(np.arange(1, 6), read_mask(root / entry.mask)) for entry in labeled])
        assert shown.sum(0).min() >= 3
        reference = out / f"FullySupervised-seed{seed}"
        assert (reference / "labeled.txt").read_text() == (run / "labeled.txt").read_text()
        assert {entry.image for entry in parse_split(reference / "all_labeled.txt")} == pool
        draws.append(images)
    assert draws[0] != draws[1]


def test_a_finished_run_is_read_back_not_repeated(gain_runs) -> None:
    _, _, first, second = gain_runs
    assert sum("earlier run" in line for line in second) == 4
    assert json.loads(second[-1]) == json.loads(first[-1])


def test_a_finished_run_of_other_settings_is_refused_and_kept(gain_runs) -> None:
    """Nine labeled images change only the split files of CorrMatch's runs (their config is the same at
    12 steps): the script stops before training and leaves the finished runs as they were."""
    data, out, _, _ = gain_runs
    run = out / "CorrMatch-seed0"
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    result = run_ssl_gain(*ARGS, "--num-labeled", "9", "--data-dir", str(data), "--out", str(out))
    assert result.returncode != 0
    assert f"error: {run} holds a finished run of other settings" in result.stderr
    assert "Traceback" not in result.stderr
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before


def test_batch_size_sets_both_batches_and_keeps_the_rate(gain_runs, tmp_path: Path) -> None:
    """``--batch-size`` is the labeled (and unlabeled) batch of every run; the learning rate is used as given,
    not rescaled for the new batch."""
    data, _, _, _ = gain_runs
    options = "--seeds 0 --methods SupervisedOnly --steps 4 --batch-size 2 --lr 0.02 --encoder-weights none"
    lines = ssl_gain(*options.split(), "--data-dir", str(data), "--out", str(tmp_path))
    assert json.loads(lines[-1])["SupervisedOnly"][0] >= 0.0
    config = yaml.safe_load((tmp_path / "SupervisedOnly-seed0" / "benchmark.yaml").read_text())
    assert config["data"]["batch_size"] == 2
    init = config["model"]["init_args"]
    assert init["reference_global_batch"] == 2 and init["lr"] == 0.02
    steps = config["trainer"]["max_epochs"] * config["trainer"]["limit_train_batches"]
    assert steps == 4  # one epoch: the 8 labeled images, 2 a step


@pytest.mark.parametrize("batch", ["9"])
def test_a_batch_the_labeled_images_cannot_fill_is_refused_in_one_line(batch: str, tmp_path: Path) -> None:
    result = run_ssl_gain("--batch-size", batch, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path))
    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"error: --batch-size {batch} must be between 1 and --num-labeled (8): "
        "SupervisedOnly takes each batch from the labeled images alone"
    )
    assert not (tmp_path / "data").exists()
