"""Markdown tables from the result files under ``benchmarks/results`` (:mod:`record`), written between
``<!-- table: NAME -->`` and ``<!-- /table -->`` in BENCHMARKS.md, README.md and docs/regime-search.md.

    python benchmarks/tables.py            # rewrites every marked region
    python benchmarks/tables.py --check    # exits 1, naming the table and its first differing line

Every file of a benchmark is used, not only the newest per machine. Step-time rows of one machine and
day share a table row (a cell measured twice shows the newer file's figure); the other tables give one
row per file and row. A line under each table names the machine, date, commands and load average of its
rows, and which were transcribed from the prose tables of an earlier BENCHMARKS.md. A marker whose name
is not in :data:`TABLES` is an error; ``FILE`` arguments and ``--results`` point it elsewhere.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable, Iterable
from decimal import ROUND_HALF_UP, Decimal
from functools import partial
from itertools import zip_longest
from pathlib import Path
from typing import Any

from record import extensions_label

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FILES = (ROOT / "BENCHMARKS.md", ROOT / "README.md", ROOT / "docs" / "regime-search.md")
REGION = re.compile(r"^<!-- table: (\S+) -->\n(.*?)^<!-- /table -->$", re.M | re.S)
OPENING = re.compile(r"^<!-- table:", re.M)
SSL_METHODS = ("SupervisedOnly", "FixMatch", "UniMatch", "CorrMatch", "FullySupervised")
MINUS = "\N{MINUS SIGN}"

Record = dict[str, Any]


def load(results: Path, folder: str) -> list[Record]:
    """The result files under ``results/folder``, oldest first."""
    records = [json.loads(path.read_text(encoding="utf-8")) for path in sorted((results / folder).glob("*.json"))]
    return sorted(records, key=lambda record: record["date"])


def number(value: float | Decimal | None, digits: int = 2, sign: bool = False) -> str:
    """``value`` rounded half up to ``digits`` decimals (as printed), with ``+``/``−`` if ``sign``; "" for None."""
    if value is None:
        return ""
    rounded = Decimal(str(value)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    text = f"{abs(rounded):.{digits}f}"
    if rounded < 0:
        return MINUS + text
    return ("+" if sign else "") + text


def machine_label(record: Record) -> str:
    """The GPU's name, else the CPU model and its vector extensions: ``AMD EPYC with AVX2 only``."""
    machine = record["machine"]
    if machine.get("gpu"):
        return machine["gpu"]
    name = " ".join(re.sub(r"\((R|TM)\)|\bProcessor\b|\bCPU\b", "", machine.get("cpu") or "").split())
    return (name or "unknown CPU") + extensions_label(machine.get("cpu_extensions"))


def day(record: Record) -> str:
    return record["date"][:10]


def sources(records: list[Record], notes: bool = True, detail: Callable[[Record], str] | None = None) -> str:
    """One line naming, per machine and day, the files, commands, load average, torch and what was transcribed."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        groups.setdefault((machine_label(record), day(record)), []).append(record)
    described = []
    for (label, date), group in groups.items():
        parts = [f"{len(group)} files" if len(group) > 1 else "1 file"]
        commands = list(dict.fromkeys(record["command"] for record in group))
        if len(commands) <= 2:
            parts.append(", ".join(f"`{command}`" for command in commands))
        if detail:
            parts.extend(dict.fromkeys(detail(record) for record in group))
        loads = sorted(record["load_average"] for record in group if record.get("load_average") is not None)
        if loads:
            parts.append("load average " + "–".join(dict.fromkeys((number(loads[0], 1), number(loads[-1], 1)))))
        parts.append(f"torch {group[0]['torch']}")
        if any(record.get("transcribed") for record in group):
            kept = [part for record in group if notes for part in record.get("note", "").split("; ") if part]
            parts.extend(["transcribed: measured before the scripts wrote files", *dict.fromkeys(kept)])
        described.append(f"*{label}*, {date} ({'; '.join(parts)})")
    return "Measured on " + "; ".join(described) + "." if described else "No result files."


def markdown(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def ssl_runs(results: Path, regime: str) -> tuple[list[Record], dict[int, dict[str, float]]]:
    """The ssl_gain files of one regime folder and their mIoU by seed and method."""
    records = [record for record in load(results, f"ssl_gain/{regime}") if record["method"] in SSL_METHODS]
    by_seed: dict[int, dict[str, float]] = {}
    for record in records:
        by_seed.setdefault(record["seed"], {})[record["method"]] = record["miou"]
    return records, dict(sorted(by_seed.items()))


def mean_std(values: list[float]) -> str:
    """``mean ± sample std`` (``—`` for the std of one value)."""
    std = number(statistics.stdev(values)) if len(values) > 1 else "—"
    return f"{number(statistics.fmean(values))} ± {std}"


def ssl_gain_summary(results: Path, regime: str) -> list[str]:
    """Per method: seeds, mean ± sample std, min–max, seeds beating SupervisedOnly, and mean ± sample std
    over the seeds ≥ 2 (those the regime was not chosen on)."""
    records, by_seed = ssl_runs(results, regime)
    rows = []
    for method in SSL_METHODS:
        seeds = {seed: runs[method] for seed, runs in by_seed.items() if method in runs}
        if not seeds:
            continue
        values = list(seeds.values())
        late = [value for seed, value in seeds.items() if seed >= 2]
        if method == "SupervisedOnly":
            beats = "—"
        else:
            pairs = [(by_seed[seed]["SupervisedOnly"], value) for seed, value in seeds.items()
                     if "SupervisedOnly" in by_seed[seed]]
            beats = f"{sum(value > base for base, value in pairs)} of {len(pairs)}"
        rows.append([
            method, str(len(values)), mean_std(values), f"{number(min(values))}–{number(max(values))}", beats,
            mean_std(late) if late else "",
        ])
    header = ["method", "seeds", "mIoU mean ± sample std", "min–max", "beats SupervisedOnly"]
    header.append("mean ± std, seeds ≥ 2 (not those the regime was chosen on)")
    return markdown(header, rows) + ["", sources(records, notes=False)]


def ssl_gain_seeds(results: Path, regime: str) -> list[str]:
    """One row per seed: every method's mIoU, half the gap FullySupervised − SupervisedOnly, CorrMatch's gain,
    and the machine when the seeds ran on more than one."""
    records, by_seed = ssl_runs(results, regime)
    methods = [method for method in SSL_METHODS if any(method in runs for runs in by_seed.values())]
    seed_machines: dict[int, list[str]] = {}
    for record in records:
        seed_machines.setdefault(record["seed"], []).append(machine_label(record))
    several = len({label for labels in seed_machines.values() for label in labels}) > 1
    rows = []
    for seed, runs in by_seed.items():
        values = {method: Decimal(str(runs[method])) for method in methods if method in runs}
        if {"SupervisedOnly", "FullySupervised"} <= values.keys():
            values["half"] = (values["FullySupervised"] - values["SupervisedOnly"]) / 2
        if {"SupervisedOnly", "CorrMatch"} <= values.keys():
            values["gain"] = values["CorrMatch"] - values["SupervisedOnly"]
        rows.append([str(seed), *(number(values.get(key), sign=key == "gain") for key in [*methods, "half", "gain"])])
        if several:
            rows[-1].append(", ".join(dict.fromkeys(seed_machines[seed])))
    header = ["seed", *methods, f"(FullySupervised {MINUS} SupervisedOnly) / 2", f"CorrMatch {MINUS} SupervisedOnly"]
    header += ["machine"] if several else []
    return markdown(header, rows) + ["", sources(records, notes=False)]


def step_cells(results: Path, gpu: bool) -> tuple[list[Record], dict[tuple[str, ...], dict[tuple[str, bool, bool], dict]]]:
    """The step-time files of the CPU or the GPU and their rows by (machine, day, method, network, crop)
    and (precision, channels_last, compiled); a newer file's cell replaces an older one's."""
    records = [record for record in load(results, "step_time") if bool(record["machine"].get("gpu")) == gpu]
    cells: dict[tuple[str, ...], dict[tuple[str, bool, bool], dict]] = {}
    for record in records:  # oldest first
        for row in record["rows"]:
            key = (machine_label(record), day(record), row["method"], row["network"], str(row["crop"]))
            cells.setdefault(key, {})[row["precision"], row["channels_last"], bool(row.get("compile"))] = row
    return records, cells


def step_time(results: Path, gpu: bool) -> list[str]:
    """Step time per method, network and crop, fp32 and bf16 (and channels_last where measured), eager,
    and the peak memory."""
    records, cells = step_cells(results, gpu)
    cells = {key: measured for key, measured in cells.items() if any(not cell[2] for cell in measured)}
    layouts = [("fp32", False, False), ("bf16", False, False)]
    if any(cell[1] for measured in cells.values() for cell in measured):
        layouts += [("fp32", True, False), ("bf16", True, False)]
    rows = []
    for key, measured in cells.items():
        times = [number(measured[cell]["step_s"], 3) if cell in measured else "" for cell in layouts]
        rows.append([*key, *times, peak_cell(measured, False)])
    header = ["machine", "date", "method", "network", "crop"]
    header += [f"{precision}{' channels_last' if layout else ''} (s)" for precision, layout, _ in layouts]
    header.append("peak fp32 / bf16 (MiB)")
    used = {key[:2] for key in cells}
    return markdown(header, rows) + ["", sources([r for r in records if (machine_label(r), day(r)) in used])]


def step_time_compiled(results: Path, gpu: bool) -> list[str]:
    """Per method, network, crop and precision measured compiled: the eager and the compiled step, their
    ratio, the first compiled step (the compile time) and both peaks."""
    records, cells = step_cells(results, gpu)
    rows = []
    for key, measured in cells.items():
        for precision in ("fp32", "bf16"):
            eager, compiled = measured.get((precision, False, False)), measured.get((precision, False, True))
            if compiled is None:
                continue
            ratio = f"{number(compiled['step_s'] / eager['step_s'])}×" if eager else ""
            peaks = pair(row["peak_mib"] if row else None for row in (eager, compiled))
            rows.append([
                *key, precision, compiled["compile"], number(eager["step_s"], 3) if eager else "",
                number(compiled["step_s"], 3), ratio, number(compiled.get("first_step_s"), 1), peaks,
            ])
    header = ["machine", "date", "method", "network", "crop", "precision", "mode", "eager (s)", "compiled (s)",
              "compiled / eager", "first compiled step (s)", "peak eager / compiled (MiB)"]
    used = {tuple(row[:2]) for row in rows}
    return markdown(header, rows) + ["", sources([r for r in records if (machine_label(r), day(r)) in used])]


def peak_cell(measured: dict[tuple[str, bool, bool], dict], compiled: bool) -> str:
    """``fp32 / bf16`` peak memory of the rows without channels_last, eager or compiled; "" if neither."""
    peaks = [measured.get((precision, False, compiled), {}).get("peak_mib") for precision in ("fp32", "bf16")]
    return "" if peaks == [None, None] else pair(peaks)


def pair(peaks: Iterable[int | None]) -> str:
    """Peaks side by side, ``a / b``, with ``–`` for one not measured."""
    return " / ".join("–" if peak is None else str(peak) for peak in peaks)


def authors_step(results: Path) -> list[str]:
    """Per file (a machine, a method and its network): the authors' fp32 step and each toolkit row, its
    ratio to it and peak memory, the fastest row marked with the goal's verdict (at most half, no more memory)."""
    records = load(results, "authors_step")
    rows = []
    for record in records:
        settings, (authors, *mine), verdict = record["settings"], record["rows"], record["goal"]
        fastest = min(mine, key=lambda row: row["step_s"])
        attention = f" ({authors['attention']} attention)" if authors.get("attention") else ""
        for row in mine:
            goal = ""
            if row is fastest:
                memory = {None: ", memory not judged", True: "", False: ", more memory"}[verdict["no_more_memory"]]
                goal = f"{'met' if verdict['met'] else 'not met'} (≤ {verdict['target']}×{memory})"
            rows.append([
                machine_label(record), day(record), settings["method"], settings["network"], str(settings["crop"]),
                f"{number(authors['step_s'], 3)}{attention}", row["precision"],
                (row["compile"] or "eager") + (", channels_last" if row.get("channels_last") else ""),
                number(row["step_s"], 3), f"{number(row['ratio'])}×",
                pair((authors["peak_mib"], row["peak_mib"])),
                goal,
            ])
    header = ["machine", "date", "method", "network", "crop", "authors fp32 (s)", "toolkit precision", "mode",
              "toolkit (s)", "toolkit / authors", "peak authors / toolkit (MiB)", "goal"]
    return markdown(header, rows) + ["", sources(records)]


PSEUDO_COLUMNS = {"naive_loop": "naive loop", "fast": "fast", "dense_sweep": "dense sweep"}


def pseudo_label(results: Path) -> list[str]:
    """Per file and device: threads, load, each implementation's median time (speed-up) and dispatched ops."""
    records = load(results, "pseudo_label")
    rows = []
    for record in sorted(records, key=lambda record: (record["date"][:10], record["settings"]["threads"])):
        for device in dict.fromkeys(row["device"] for row in record["rows"]):
            found = {row["implementation"]: row for row in record["rows"] if row["device"] == device}
            times = []
            for name in PSEUDO_COLUMNS:
                row = found.get(name)
                speedup = f" ({number(row['speedup'], 1)}×)" if row and row["speedup"] is not None else ""
                times.append(f"{number(row['ms'], 1)}{speedup}" if row else "")
            ops = " / ".join(str(found[name]["ops"]) if name in found else "–" for name in PSEUDO_COLUMNS)
            load_average = record.get("load_average")
            rows.append([
                machine_label(record), day(record), device, str(record["settings"]["threads"]),
                "" if load_average is None else number(load_average, 1), *times, ops,
            ])
    header = ["machine", "date", "device", "threads", "load", *(f"{name} (ms)" for name in PSEUDO_COLUMNS.values())]
    header.append("ops naive / fast / dense")
    return markdown(header, rows) + ["", sources(records)]


def data_throughput(results: Path) -> list[str]:
    """Per file: steps and samples per second of each pipeline and mode, the speed-up, best and per run."""
    records = load(results, "data_throughput")
    rows = []
    for record in records:
        speedups = {speedup["mode"]: speedup for speedup in record["speedups"]}
        for row in record["rows"]:
            speedup = speedups.get(row["mode"]) if row["pipeline"] == "corrmatch.data" else None
            cell = ""
            if speedup:
                spread = f"{number(speedup['per_run_min'])}–{number(speedup['per_run_max'])}"
                cell = f"{number(speedup['best_vs_best'])}× ({spread})"
            rows.append([
                machine_label(record), day(record), row["pipeline"], row["mode"], number(row["steps_per_s"]),
                number(row["samples_per_s"]), cell,
            ])
    header = ["machine", "date", "pipeline", "mode", "steps/s", "samples/s", "speed-up (per run)"]
    return markdown(header, rows) + ["", sources(records)]


def tta(results: Path) -> list[str]:
    """Per file and setting: views, mIoU and ms per image for the whole image and the sliding window."""
    records = load(results, "tta")
    rows = [
        [
            machine_label(record), day(record), row["tta"], str(row["views"]), number(row["miou_whole"]),
            number(row["ms_whole"], 1), number(row["miou_window"]), number(row["ms_window"], 1),
        ]
        for record in records
        for row in record["rows"]
    ]
    header = ["machine", "date", "TTA", "views", "mIoU whole image", "ms/image", "mIoU sliding window", "ms/image"]

    def model(record: Record) -> str:
        return f"{record['model']['method']} (val mIoU {record['model']['val_miou']}), {record['threads']} threads"

    return markdown(header, rows) + ["", sources(records, detail=model)]


TABLES: dict[str, Callable[[Path], list[str]]] = {
    "ssl_gain_label_bound": partial(ssl_gain_summary, regime="label_bound"),
    "ssl_gain_label_bound_seeds": partial(ssl_gain_seeds, regime="label_bound"),
    "ssl_gain_label_bound_avx512_seeds": partial(ssl_gain_seeds, regime="label_bound_avx512"),
    "step_time_cpu": partial(step_time, gpu=False),
    "step_time_gpu": partial(step_time, gpu=True),
    "step_time_compiled_cpu": partial(step_time_compiled, gpu=False),
    "step_time_compiled_gpu": partial(step_time_compiled, gpu=True),
    "authors_step": authors_step,
    "pseudo_label": pseudo_label,
    "data_throughput": data_throughput,
    "tta": tta,
}


def render(text: str, results: Path, path: Path) -> tuple[str, list[tuple[str, str, str]]]:
    """``text`` with every marked region filled from ``results``, and (name, old, new) for each region."""
    if len(OPENING.findall(text)) != len(REGION.findall(text)):
        raise SystemExit(f"{path}: a '<!-- table: NAME -->' marker has no '<!-- /table -->' line after it")
    regions = []

    def fill(match: re.Match[str]) -> str:
        name, old = match.group(1), match.group(2)
        if name not in TABLES:
            raise SystemExit(f"{path}: unknown table {name!r} (known: {', '.join(TABLES)})")
        new = "\n".join(TABLES[name](results)) + "\n"
        regions.append((name, old, new))
        return f"<!-- table: {name} -->\n{new}<!-- /table -->"

    return REGION.sub(fill, text), regions


def first_difference(old: str, new: str) -> tuple[int, str, str]:
    """(line number within the region, found line, expected line) of the first line that differs."""
    end = "(end of the region)"
    pairs = zip_longest(old.splitlines(), new.splitlines(), fillvalue=end)
    return next((index, found, expected) for index, (found, expected) in enumerate(pairs, 1) if found != expected)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, help="default: BENCHMARKS.md, README.md, docs/regime-search.md")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the result files")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a region differs")
    args = parser.parse_args(argv)
    files = args.files or [path for path in FILES if path.is_file()]
    stale = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        rendered, regions = render(text, args.results, path)
        if not args.check:
            if rendered != text:
                path.write_text(rendered, encoding="utf-8")
            print(f"{path}: {len(regions)} tables written" + ("" if rendered != text else " (unchanged)"))
            continue
        for name, old, new in regions:
            if old != new:
                line, found, expected = first_difference(old, new)
                print(f"{path}: table {name} differs from {args.results} at its line {line}:")
                print(f"  found:    {found}\n  expected: {expected}")
                stale += 1
    if stale:
        print("run python benchmarks/tables.py to rewrite them", file=sys.stderr)
    elif args.check:
        print(f"{', '.join(str(path) for path in files)}: every table matches {args.results}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
