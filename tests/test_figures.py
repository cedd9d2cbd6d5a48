"""benchmarks/figures.py: every figure rendered from small fixtures (result files written here, tiny
trained runs), each checked for what it must show; and Segmenter.pseudo_label, which the qualitative
panel draws, against region propagation worked out by hand for one region mask."""

from __future__ import annotations

import json
from pathlib import Path

import figures
import numpy as np
import pytest
import torch
from conftest import tiny_config
from matplotlib.collections import LineCollection, PathCollection

from corrmatch import Segmenter
from corrmatch.cli import main as train_main
from corrmatch.data.io import parse_split, read_image
from corrmatch.inference.loading import pseudo_label_settings
from corrmatch.visualize import colorize, outline

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

MAX_BYTES = 300 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REGIME_MIOU = {  # method: mIoU of seeds 0, 1, 2
    "SupervisedOnly": [20.0, 22.0, 21.0],
    "FixMatch": [25.5, 24.0, 27.0],
    "UniMatch": [26.0, 28.0, 27.5],
    "CorrMatch": [30.0, 29.0, 31.5],
    "FullySupervised": [40.0, 42.0, 41.0],
}
STEP_ROWS = {  # device: (method, network, crop, precision, step_s, peak_mib)
    "cpu": [
        ("CorrMatch", "resnet101s", 97, "fp32", 3.5, 1400),
        ("SupervisedOnly", "resnet101s", 97, "fp32", 1.25, 900),
        ("CorrMatch", "resnet101s", 97, "bf16", 2.0, None),
    ],
    "cuda": [("CorrMatch", "resnet101s", 321, "bf16", 0.21, 10240), ("UniMatchV2", "dinov2_small", 518, "bf16", 0.15, 8000)],
}
STEP_LABELS = {  # device: the rows' labels, top to bottom (methods in the toolkit's order)
    "cpu": ["SupervisedOnly · resnet101s 97²", "CorrMatch · resnet101s 97²"],
    "cuda": ["CorrMatch · resnet101s 321²", "UniMatchV2 · dinov2_small 518²"],
}


@pytest.fixture(scope="module")
def supervised_run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of a finished tiny SupervisedOnly run."""
    tmp = tmp_path_factory.mktemp("supervised_run")
    train_main(["fit", "--config", str(tiny_config(tmp / "tiny.yaml", tiny_root, tmp / "run", "SupervisedOnly"))])
    return tmp / "run"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder with the regime's per-run files and a CPU and a GPU step-time file."""
    regime = tmp_path / "results" / "ssl_gain" / "label_bound"
    regime.mkdir(parents=True)
    for method, values in REGIME_MIOU.items():
        for seed, miou in enumerate(values):
            record = {"method": method, "seed": seed, "miou": miou, "machine": {"cpu": "Test CPU 9000"},
                      "date": "2026-01-02T03:04:05Z"}
            (regime / f"{method}-seed{seed}.json").write_text(json.dumps(record))
    step_time = tmp_path / "results" / "step_time"
    step_time.mkdir()
    for device, rows in STEP_ROWS.items():
        keys = ("method", "network", "crop", "precision", "step_s", "peak_mib")
        data = {
            "rows": [{**dict(zip(keys, row)), "channels_last": False, "device": device} for row in rows],
            "machine": {"cpu": "Test CPU 9000", "gpu": "Test GPU" if device == "cuda" else None},
            "date": "2026-01-02T03:04:05Z",
        }
        (step_time / f"{device}.json").write_text(json.dumps(data))
    return tmp_path / "results"


def test_every_figure_is_a_small_png(
    results: Path, tiny_run: Path, supervised_run: Path, tiny_root: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    out = tmp_path / "figures"
    args = ["--out", str(out), "--results", str(results), "--corrmatch", str(tiny_run),
            "--supervised", str(supervised_run), "--data", str(tiny_root), "--num-images", "2"]
    assert figures.main(args) == 0
    printed = capsys.readouterr().out
    for name in ("regime", "qualitative", "step_time"):
        path = out / f"{name}.png"
        assert f"wrote {path} (" in printed
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size <= MAX_BYTES, name
    assert figures.main([*args, "--only", "regime", "--out", str(tmp_path / "only")]) == 0
    assert [p.name for p in (tmp_path / "only").iterdir()] == ["regime.png"]


def test_regime_shows_every_seed_the_means_and_the_references(results: Path) -> None:
    runs = figures.load_regime(results / "ssl_gain" / "label_bound")
    ax = figures.regime_figure(runs).axes[0]
    methods = ["SupervisedOnly", "FixMatch", "UniMatch", "CorrMatch"]
    assert [label.get_text().split("\n")[0] for label in ax.get_xticklabels()] == methods
    dots = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    assert len(dots) == 4
    for x, (method, offsets) in enumerate(zip(methods, dots)):
        assert np.allclose(offsets[:, 1], REGIME_MIOU[method])  # one dot per seed, in seed order
        assert np.all(np.abs(offsets[:, 0] - x) < 0.3)
    bars = [c.get_segments()[0] for c in ax.collections if isinstance(c, LineCollection)]
    assert [(segment[:, 0].mean(), segment[0, 1]) for segment in bars] == [
        (pytest.approx(x), pytest.approx(np.mean(REGIME_MIOU[m]))) for x, m in enumerate(methods)
    ]
    lines = {line.get_label(): line.get_ydata()[0] for line in ax.get_lines()}
    assert lines == {"FullySupervised mean 41.0": pytest.approx(41.0), "SupervisedOnly mean 21.0": pytest.approx(21.0)}
    assert "3 seeds (0–2)" in ax.get_title() and "Test CPU 9000" in ax.get_title()


def test_regime_title_names_the_machine_of_each_seed(results: Path) -> None:
    regime = results / "ssl_gain" / "label_bound"
    for path in regime.glob("*-seed2.json"):
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "machine": {"cpu": "Other CPU 1"}, "date": "2026-02-03T00:00:00Z"}))
    title = figures.regime_figure(figures.load_regime(regime)).axes[0].get_title()
    assert "Test CPU 9000 (seeds 0, 1); Other CPU 1 (seeds 2); 2026-01-02 to 2026-02-03" in title


def test_step_time_bars_are_the_measured_rows(results: Path) -> None:
    fig = figures.step_time_figure(figures.load_step_time(results / "step_time"))
    (cpu_time, cpu_memory), (gpu_time, gpu_memory) = np.reshape(fig.axes, (2, 2))
    assert cpu_time.get_title(loc="left") == "CPU: Test CPU 9000"
    assert gpu_time.get_title(loc="left") == "GPU: Test GPU"
    for (time_ax, memory_ax), device in (((cpu_time, cpu_memory), "cpu"), ((gpu_time, gpu_memory), "cuda")):
        labels = STEP_LABELS[device]
        assert [label.get_text() for label in time_ax.get_yticklabels()] == labels
        for ax, column in ((time_ax, 4), (memory_ax, 5)):
            drawn = {  # (label, precision: plain fp32, hatched bf16) → bar length
                (labels[round(bar.get_y() + bar.get_height() / 2)], "bf16" if bar.get_hatch() else "fp32"): bar.get_width()
                for bar in ax.patches
            }
            expected = {
                (f"{row[0]} · {row[1]} {row[2]}²", row[3]): row[column] or 0.0 for row in STEP_ROWS[device]
            }
            assert drawn == pytest.approx(expected)
        texts = [text.get_text() for text in memory_ax.texts]
        assert ("bf16 n/a" in texts) == (device == "cpu")  # a peak not measured is written, not drawn


def test_qualitative_panel_draws_each_column(
    tiny_run: Path, supervised_run: Path, tiny_root: Path
) -> None:
    corrmatch = Segmenter.from_checkpoint(tiny_run, device="cpu")
    supervised = Segmenter.from_checkpoint(supervised_run, device="cpu")
    samples = figures.val_samples(tiny_root, 2)
    first = corrmatch.logits(corrmatch.preprocess(samples[0][1])).softmax(dim=1).amax(dim=1)
    tau = float(first.median())  # two training steps leave confidences near 1/6: half the pixels pass
    fig, pseudo_labels = figures.qualitative_figure(corrmatch, supervised, samples, tau, 8, seed=5)
    axes = np.reshape(fig.axes[: 2 * 6], (2, 6))  # the colour bar's axes come last
    assert len(fig.axes) == 2 * 6 + 1
    assert [ax.get_title() for ax in axes[0]] == list(figures.PANEL_COLUMNS)
    palette = corrmatch.info.palette_array()
    propagated_somewhere = False
    for row, (name, image, mask) in enumerate(samples):
        assert axes[row, 0].get_ylabel() == name
        drawn = [np.asarray(ax.images[0].get_array()) for ax in axes[row]]
        assert np.array_equal(drawn[0], image) and np.array_equal(drawn[1], colorize(mask, palette))
        assert np.array_equal(drawn[2], colorize(supervised.predict(image).numpy().astype(np.uint8), palette))
        labels, probs = corrmatch.predict(image, return_probs=True)
        assert np.array_equal(drawn[3], colorize(labels.numpy().astype(np.uint8), palette))
        assert np.allclose(drawn[5], probs.amax(dim=0).numpy())
        with torch.random.fork_rng():  # the same region rows as the figure's
            torch.manual_seed(5 + row)
            pseudo = corrmatch.pseudo_label(image, tau, 8)
        assert all(torch.equal(pseudo[key], pseudo_labels[row][key]) for key in pseudo)
        edge = outline(pseudo["propagated"].numpy())
        white = (drawn[4] == figures.OUTLINE_COLOUR).all(axis=2)
        assert np.array_equal(white, edge)  # the outline is exactly the propagated pixels' boundary
        used = (pseudo["confident"] | pseudo["propagated"]).numpy()
        expected = colorize(np.where(used, pseudo["target"].numpy(), 255).astype(np.uint8), palette)
        assert np.array_equal(drawn[4][~edge], expected[~edge])
        propagated_somewhere |= bool(edge.any())
    assert propagated_somewhere


def test_missing_inputs(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "no_run"
    code = figures.main(["--out", str(tmp_path / "out"), "--results", str(tmp_path / "none"),
                         "--corrmatch", str(tiny_run), "--supervised", str(missing)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.splitlines() == [
        f"error: qualitative.png: no run directory {missing}: train it with python train.py fit --config "
        "configs/demo.yaml --model.class_path corrmatch.methods.SupervisedOnly"
    ]
    assert "skipped regime.png: no " in captured.out and "python benchmarks/ssl_gain.py" in captured.out
    assert "skipped step_time.png: no " in captured.out and "python benchmarks/step_time.py" in captured.out
    assert not (tmp_path / "out").exists()


def test_pseudo_label_propagates_over_a_region_as_training_does(tiny_run: Path, tiny_root: Path) -> None:
    """One region mask, the correlation region of a pixel: region propagation worked out by hand
    (DESIGN.md §2 step 9) against Segmenter.pseudo_label for several pixels and thresholds."""
    segmenter = Segmenter.from_checkpoint(tiny_run, device="cpu")
    settings = pseudo_label_settings(tiny_run)
    assert set(settings) == {"threshold", "num_region_samples"} and settings["num_region_samples"] == 8
    image = read_image(tiny_root / parse_split(tiny_root / "splits" / "val.txt")[0].image)
    logits = segmenter.logits(segmenter.preprocess(image))[0]
    confidence, label = logits.softmax(dim=0).amax(dim=0), logits.argmax(dim=0)
    height, width = label.shape
    with torch.inference_mode():
        feature_h, feature_w = segmenter.net(segmenter.preprocess(image), correlation=True)["feature_size"]
    accepted = 0
    for y, x in ((0, 0), (height // 2, width // 2), (height - 1, width // 3)):
        cell = round(y * (feature_h - 1) / (height - 1)) * feature_w + round(x * (feature_w - 1) / (width - 1))
        region = segmenter.correlation_region(image, y, x)
        for tau in [float(confidence.quantile(q)) for q in (0.3, 0.5, 0.7)] + [settings["threshold"]]:
            pseudo = segmenter.pseudo_label(image, tau, rows=torch.tensor([cell]))
            confident = confidence >= tau
            assert torch.allclose(pseudo["confidence"], confidence) and torch.equal(pseudo["label"], label)
            assert torch.equal(pseudo["confident"], confident)
            segment = region & confident
            counts = torch.bincount(label[segment], minlength=segmenter.num_classes)
            accept = bool(segment.any()) and segment.sum() / region.sum() >= tau and counts.max() / segment.sum() > tau
            target = torch.where(region, counts.argmax(), label) if accept else label
            assert torch.equal(pseudo["target"], target)
            assert torch.equal(pseudo["propagated"], region & ~confident if accept else torch.zeros_like(region))
            accepted += accept and bool((region & ~confident).any())
    assert accepted > 0
