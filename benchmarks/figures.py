"""The figures of the README and BENCHMARKS.md, drawn with matplotlib (``pip install -e ".[docs]"``) from
the result files under ``benchmarks/results/`` and from trained demo runs, into ``docs/figures/``:

- ``regime.png``: the label-bound regime of ``ssl_gain.py``, the mIoU of each seed and the mean of
  SupervisedOnly, FixMatch, UniMatch and CorrMatch, with the means of FullySupervised and SupervisedOnly
  as reference lines (``<results>/ssl_gain/label_bound/*.json``);
- ``qualitative.png``: demo validation images, their ground truth, the predictions of SupervisedOnly and
  CorrMatch, CorrMatch's pseudo-label of the image (the pixels at or above its dynamic threshold τ, and
  those region propagation adds, outlined) and CorrMatch's confidence (``--corrmatch``, ``--supervised``,
  ``--data``);
- ``step_time.png``: the time and peak memory of one training step per method, network and precision,
  CPU and GPU rows apart (``<results>/step_time/*.json``, ``step_time.py``).

    python train.py fit --config configs/demo.yaml
    python train.py fit --config configs/demo.yaml --model.class_path corrmatch.methods.SupervisedOnly
    python benchmarks/figures.py                        # every figure
    python benchmarks/figures.py --only qualitative     # one of them

A figure without its result files is skipped with a line saying which script writes them; a missing run
directory, or a file that cannot be read, is one line ``error: …`` and exit status 2 (after the other
figures are drawn).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from record import extensions_label  # noqa: E402

from corrmatch import Segmenter  # noqa: E402
from corrmatch.constants import IGNORE_INDEX  # noqa: E402
from corrmatch.data.io import parse_split, read_image, read_mask  # noqa: E402
from corrmatch.errors import DataError, UserError  # noqa: E402
from corrmatch.inference.loading import pseudo_label_settings  # noqa: E402
from corrmatch.visualize import colorize, outline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REGIME_METHODS = ("SupervisedOnly", "FixMatch", "UniMatch", "CorrMatch")
REFERENCE = "FullySupervised"
METHOD_COLOURS = {
    "SupervisedOnly": "tab:gray",
    "FixMatch": "tab:orange",
    "UniMatch": "tab:blue",
    "CorrMatch": "tab:red",
    "UniMatchV2": "tab:purple",
    REFERENCE: "tab:green",
}
DEMO_COMMAND = "python train.py fit --config configs/demo.yaml"
SUPERVISED_COMMAND = f"{DEMO_COMMAND} --model.class_path corrmatch.methods.SupervisedOnly"
OUTLINE_COLOUR = (255, 255, 255)  # the outline of the propagated pixels; no colour of the demo palette
PANEL_COLUMNS = (
    "image",
    "ground truth",
    "SupervisedOnly",
    "CorrMatch",
    "CorrMatch pseudo-label",
    "CorrMatch confidence",
)
DPI = 110


class MissingResults(Exception):
    """A figure's result files are not there (yet): the figure is skipped."""


def read_json(path: Path, keys: Sequence[str]) -> dict[str, Any]:
    """The JSON object of ``path``, which must hold ``keys``; else one :class:`DataError` line."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a JSON result file ({error})") from None
    missing = [key for key in keys if not isinstance(data, Mapping) or key not in data]
    if missing:
        raise DataError(f"{path}: no {', '.join(repr(key) for key in missing)}")
    return data


def result_files(folder: Path, script: str) -> list[Path]:
    """The ``*.json`` files of ``folder``, sorted; :class:`MissingResults` when there are none."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise MissingResults(f"no {folder}/*.json yet (written by python benchmarks/{script})")
    return files


def machines(records: Sequence[Mapping[str, Any]], key: str = "cpu") -> list[str]:
    """The distinct ``machine[key]`` of ``records``, in order of appearance."""
    names = [str((record.get("machine") or {}).get(key) or "unknown") for record in records]
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------- regime.png


def load_regime(folder: Path) -> list[dict[str, Any]]:
    """The runs of the label-bound regime: one JSON file per run with "method", "seed", "miou" (%)."""
    return [read_json(path, ("method", "seed", "miou")) for path in result_files(folder, "ssl_gain.py")]


def regime_figure(runs: Sequence[Mapping[str, Any]]) -> Figure:
    """mIoU per method, one dot per seed and the mean as a bar, with the means of FullySupervised and
    SupervisedOnly as horizontal lines; the title names the seeds and the machines."""
    by_method: dict[str, list[tuple[int, float]]] = {}
    for run in runs:
        by_method.setdefault(str(run["method"]), []).append((int(run["seed"]), float(run["miou"])))
    methods = [method for method in REGIME_METHODS if method in by_method]
    if not methods:
        raise MissingResults(f"no run of {', '.join(REGIME_METHODS)} in the regime's results")
    fig, ax = plt.subplots(figsize=(7.5, 4.6), layout="constrained")
    for method, style in ((REFERENCE, "--"), ("SupervisedOnly", ":")):
        if method in by_method:
            mean = statistics.fmean(miou for _, miou in by_method[method])
            ax.axhline(mean, linestyle=style, color=METHOD_COLOURS[method], linewidth=1.2,
                       label=f"{method} mean {mean:.1f}")
    for x, method in enumerate(methods):
        seeds = sorted(by_method[method])
        values = [miou for _, miou in seeds]
        spread = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(x + spread, values, s=28, color=METHOD_COLOURS[method], alpha=0.8, zorder=3)
        for (seed, value), dx in zip(seeds, spread):
            ax.annotate(str(seed), (x + dx, value), xytext=(3, 2), textcoords="offset points", fontsize=6,
                        color="dimgray")
        mean = statistics.fmean(values)
        ax.hlines(mean, x - 0.28, x + 0.28, color="black", linewidth=2.2, zorder=4)
        ax.annotate(f"{mean:.1f}", (x + 0.3, mean), va="center", fontsize=9)
    ax.set_xticks(range(len(methods)), [f"{m}\n({len(by_method[m])} seeds)" for m in methods])
    ax.set_xlim(-0.6, len(methods) - 0.3)
    ax.set_ylabel("validation mIoU (%)  (small numbers: the seed)")
    ax.grid(axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", linewidth=2.2))
    labels.append("mean over the seeds (dots: one seed each)")
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    seeds = sorted({seed for values in by_method.values() for seed, _ in values})
    by_machine: dict[str, set[int]] = {}
    for run in runs:
        by_machine.setdefault(machines([run])[0], set()).add(int(run["seed"]))
    where = "; ".join(f"{name} (seeds {seed_list(sorted(ran))})" for name, ran in by_machine.items())
    if len(by_machine) == 1:
        where = next(iter(by_machine))
    dates = sorted({str(run.get("date", ""))[:10] for run in runs})
    dates = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
    ax.set_title(
        f"Label-bound regime (demo data, benchmarks/ssl_gain.py): {len(seeds)} seeds ({seed_list(seeds)})\n"
        f"{where}; {dates}",
        fontsize=9.5,
    )
    return fig


def seed_list(seeds: Sequence[int]) -> str:
    """``0–11`` for three or more consecutive seeds, else ``0, 1``."""
    consecutive = list(seeds) == list(range(seeds[0], seeds[-1] + 1))
    return f"{seeds[0]}–{seeds[-1]}" if consecutive and len(seeds) > 2 else ", ".join(map(str, seeds))


def render_regime(args: argparse.Namespace) -> Path:
    return save(regime_figure(load_regime(args.results / "ssl_gain" / "label_bound")), args.out / "regime.png")


# ----------------------------------------------------------------------------------- qualitative.png


def load_run(run_dir: Path, command: str) -> Segmenter:
    """The Segmenter of a demo run directory; a missing one is a :class:`DataError` naming its command."""
    if not run_dir.is_dir():
        raise DataError(f"no run directory {run_dir}: train it with {command}")
    return Segmenter.from_checkpoint(run_dir, device="cpu")


def val_samples(data: Path, count: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The first ``count`` validation images of a demo folder: (name, uint8 image, mask)."""
    split = data / "splits" / "val.txt"
    if not split.is_file():
        raise DataError(f"no {split}: {DEMO_COMMAND} generates the demo data")
    entries = parse_split(split)[:count]
    return [(Path(e.image).stem, read_image(data / e.image), read_mask(data / e.mask)) for e in entries]


def pseudo_label_picture(pseudo: Mapping[str, torch.Tensor], palette: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): the pseudo-label's classes on the pixels training learns from (confident or
    propagated), the ignore colour elsewhere, and the outline of the propagated pixels in white."""
    used = (pseudo["confident"] | pseudo["propagated"]).numpy()
    labels = np.where(used, pseudo["target"].numpy(), IGNORE_INDEX).astype(np.uint8)
    picture = colorize(labels, palette).copy()
    picture[outline(pseudo["propagated"].numpy())] = OUTLINE_COLOUR
    return picture


def qualitative_figure(
    corrmatch: Segmenter,
    supervised: Segmenter,
    samples: Sequence[tuple[str, np.ndarray, np.ndarray]],
    threshold: float,
    num_region_samples: int,
    seed: int = 0,
) -> tuple[Figure, list[dict[str, torch.Tensor]]]:
    """One row per sample, the columns of :data:`PANEL_COLUMNS`; returns the figure and each row's
    pseudo-label (:meth:`Segmenter.pseudo_label`, its region rows drawn after ``torch.manual_seed(seed
    + row)``)."""
    palette = corrmatch.info.palette_array()
    fig, axes = plt.subplots(
        len(samples), len(PANEL_COLUMNS), figsize=(1.55 * len(PANEL_COLUMNS) + 0.7, 1.55 * len(samples) + 1.1),
        layout="constrained", squeeze=False,
    )
    pseudo_labels, confidence_image = [], None
    for row, (name, image, mask) in enumerate(samples):
        with torch.random.fork_rng():
            torch.manual_seed(seed + row)
            pseudo = corrmatch.pseudo_label(image, threshold, num_region_samples)
        pseudo_labels.append(pseudo)
        labels, probs = corrmatch.predict(image, return_probs=True)
        pictures = [
            image,
            colorize(mask, palette),
            colorize(supervised.predict(image).numpy().astype(np.uint8), palette),
            colorize(labels.numpy().astype(np.uint8), palette),
            pseudo_label_picture(pseudo, palette),
        ]
        for column, picture in enumerate(pictures):
            axes[row, column].imshow(picture, interpolation="nearest")
        confidence_image = axes[row, -1].imshow(
            probs.amax(dim=0).numpy(), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest"
        )
        axes[row, 0].set_ylabel(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for column, title in enumerate(PANEL_COLUMNS):
        axes[0, column].set_title(title, fontsize=8.5)
    fig.colorbar(confidence_image, ax=axes[:, -1], shrink=0.5, label="highest class probability")
    names = corrmatch.class_names
    handles = [Patch(color=palette[k] / 255, label=name) for k, name in enumerate(names)]
    handles.append(Patch(color=palette[IGNORE_INDEX] / 255, label=f"ignored / below τ = {threshold:.3f}"))
    handles.append(Patch(facecolor="dimgray", edgecolor=np.array(OUTLINE_COLOUR) / 255, linewidth=1.5,
                         label="white outline: added by region propagation"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=7.5)
    miou = {s.method: f"{s.val_miou:.1f}" if s.val_miou is not None else "?" for s in (supervised, corrmatch)}
    fig.suptitle(
        f"Demo validation images: SupervisedOnly (mIoU {miou.get('SupervisedOnly', '?')}) and CorrMatch "
        f"(mIoU {miou.get('CorrMatch', '?')}) trained by configs/demo.yaml\nCorrMatch's pseudo-label of the "
        f"whole image: its pixels of confidence ≥ τ, then region propagation over {num_region_samples} region masks",
        fontsize=8.5,
    )
    return fig, pseudo_labels


def render_qualitative(args: argparse.Namespace) -> Path:
    corrmatch = load_run(args.corrmatch, DEMO_COMMAND)
    supervised = load_run(args.supervised, SUPERVISED_COMMAND)
    settings = pseudo_label_settings(args.corrmatch)
    if "threshold" not in settings:
        raise DataError(f"{args.corrmatch}: not a CorrMatch run (no dynamic threshold τ in its checkpoint)")
    samples = val_samples(args.data, args.num_images)
    fig, _ = qualitative_figure(corrmatch, supervised, samples, settings["threshold"],
                                int(settings.get("num_region_samples", 128)))
    return save(fig, args.out / "qualitative.png")


# ------------------------------------------------------------------------------------- step_time.png

STEP_KEYS = ("method", "network", "crop", "precision", "channels_last", "device", "step_s", "peak_mib")


def load_step_time(folder: Path) -> list[dict[str, Any]]:
    """Every measured row of the step-time files, each with the file's ``machine`` added; rows without
    a step time (a failed measurement) are left out."""
    rows = []
    for path in result_files(folder, "step_time.py"):
        data = read_json(path, ("rows",))
        for number, row in enumerate(data["rows"]):
            missing = [key for key in STEP_KEYS if key not in row]
            if missing:
                raise DataError(f"{path}: row {number} has no {', '.join(repr(key) for key in missing)}")
            if row["step_s"] is not None:
                rows.append({**row, "machine": data.get("machine") or {}, "date": data.get("date")})
    if not rows:
        raise MissingResults(f"no measured row in {folder}/*.json")
    return rows


def device_group(row: Mapping[str, Any]) -> str:
    """``CPU: <model>`` (with its vector extensions where recorded: two EPYCs differ) or ``GPU: <name>``,
    the panel a row belongs to."""
    machine = row["machine"]
    if str(row["device"]).lower().startswith("cpu"):
        return f"CPU: {machine.get('cpu') or 'unknown'}{extensions_label(machine.get('cpu_extensions'))}"
    return f"GPU: {machine.get('gpu') or row['device']}"


def row_label(row: Mapping[str, Any]) -> str:
    """``<method> · <network> <crop>²``, and ``, channels last`` or ``, compiled`` when they were on: one
    bar per precision."""
    layout = ", channels last" if row["channels_last"] else ""
    layout += ", compiled" if row.get("compile") else ""
    return f"{row['method']} · {row['network']} {row['crop']}²{layout}"


def step_time_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Horizontal bars, step time (s) on the left and peak memory (MiB) on the right, one bar per
    precision (hatched: the second and later ones) for each method, network and layout, one pair of
    panels per device (CPU rows, then GPU rows), each with its own scale and the values written
    (n/a: not measured)."""
    groups: dict[str, dict[str, dict[str, Mapping[str, Any]]]] = {}  # device → label → precision → row
    methods = list(METHOD_COLOURS)
    networks = list(dict.fromkeys(str(row["network"]) for row in rows))  # in the files' order
    ordered = sorted(rows, key=lambda r: (networks.index(str(r["network"])), bool(r["channels_last"]), bool(r.get("compile")),
                                          methods.index(r["method"]) if r["method"] in methods else len(methods)))
    for row in ordered:
        groups.setdefault(device_group(row), {}).setdefault(row_label(row), {})[str(row["precision"])] = row
    precisions = sorted(dict.fromkeys(str(row["precision"]) for row in rows), key=lambda p: p != "fp32")
    names = sorted(groups, key=lambda name: (not name.startswith("CPU"), name))
    sizes = [len(groups[name]) for name in names]
    height = 0.85 / len(precisions)
    fig, axes = plt.subplots(
        len(names), 2, figsize=(10, 0.3 * len(precisions) * sum(sizes) + 0.9 * len(names) + 0.6),
        gridspec_kw={"height_ratios": sizes}, layout="constrained", squeeze=False,
    )
    for (time_ax, memory_ax), name in zip(axes, names):
        labels = list(groups[name])
        for ax, key, unit, fmt in ((time_ax, "step_s", "step time (s)", "{:.3g}"),
                                   (memory_ax, "peak_mib", "peak memory (MiB)", "{:.0f}")):
            top = 0.0
            for p, precision in enumerate(precisions):
                cells = [(y, groups[name][label].get(precision)) for y, label in enumerate(labels)]
                cells = [(y, row) for y, row in cells if row is not None]
                values = [float(row[key]) if row[key] is not None else 0.0 for _, row in cells]
                bars = ax.barh(
                    [y - 0.425 + height * (p + 0.5) for y, _ in cells], values, height=height,
                    color=[METHOD_COLOURS.get(str(row["method"]), "tab:olive") for _, row in cells],
                    hatch="///" if p else None, edgecolor="white", linewidth=0, label=precision,
                )
                texts = [f"{precision} " + (fmt.format(v) if row[key] is not None else "n/a")
                         for v, (_, row) in zip(values, cells)]
                ax.bar_label(bars, texts, padding=2, fontsize=6.5)
                top = max([top, *values])
            ax.set_xlim(0, top * 1.3 or 1)
            ax.set_ylim(len(labels) - 0.5, -0.5)
            ax.set_xlabel(unit, fontsize=8)
            ax.tick_params(labelsize=7.5)
            ax.grid(axis="x", alpha=0.3)
        time_ax.set_yticks(range(len(labels)), labels)
        memory_ax.set_yticks(range(len(labels)), [])
        time_ax.set_title(name, fontsize=9, loc="left")
    dates = sorted({str(row["date"])[:10] for row in rows if row.get("date")})
    fig.suptitle("One training step (4 labeled + 4 unlabeled images), benchmarks/step_time.py"
                 + (f", measured {', '.join(dates)}" if dates else "")
                 + f"; bars: {' / '.join(precisions)}", fontsize=9.5)
    return fig


def render_step_time(args: argparse.Namespace) -> Path:
    return save(step_time_figure(load_step_time(args.results / "step_time")), args.out / "step_time.png")


# ------------------------------------------------------------------------------------------- main

FIGURES: dict[str, Callable[[argparse.Namespace], Path]] = {
    "regime": render_regime,
    "qualitative": render_qualitative,
    "step_time": render_step_time,
}


def save(fig: Figure, path: Path) -> Path:
    """Writes ``fig`` as a PNG of :data:`DPI` dots per inch and closes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, pil_kwargs={"optimize": True})
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures", help="default: docs/figures")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results",
                        help="default: benchmarks/results")
    parser.add_argument("--only", nargs="+", choices=list(FIGURES), default=list(FIGURES), metavar="NAME",
                        help=f"draw only these: {', '.join(FIGURES)}")
    parser.add_argument("--corrmatch", type=Path, default=Path("runs/demo/corrmatch"),
                        help=f"CorrMatch's demo run directory (default runs/demo/corrmatch: {DEMO_COMMAND})")
    parser.add_argument("--supervised", type=Path, default=Path("runs/demo/supervised"),
                        help=f"SupervisedOnly's demo run directory (default runs/demo/supervised: "
                        f"{SUPERVISED_COMMAND})")
    parser.add_argument("--data", type=Path, default=Path("data/demo_plain"),
                        help="the demo data of those runs (default data/demo_plain)")
    parser.add_argument("--num-images", type=int, default=4, help="rows of qualitative.png (default 4)")
    args = parser.parse_args(argv)
    if args.num_images < 1:
        parser.error(f"--num-images must be at least 1, got {args.num_images}")
    failed = False
    for name in dict.fromkeys(args.only):
        try:
            path = FIGURES[name](args)
        except MissingResults as reason:
            print(f"skipped {name}.png: {reason}")
            continue
        except UserError as error:
            print(f"error: {name}.png: {' '.join(str(error).split())}", file=sys.stderr)
            failed = True
            continue
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
