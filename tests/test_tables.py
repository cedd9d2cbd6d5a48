"""benchmarks/tables.py: the committed tables match the result files, a hand-edited figure is caught and
named, the ssl_gain statistics come out of a small set of files, and a benchmark's file renders."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pseudo_label
import pytest
import tables
import torch
from conftest import HANG_GUARD, REPO

PROVENANCE = {
    "machine": {"cpu": "AMD EPYC", "cpu_extensions": ["avx2"], "cores": 2, "gpu": None, "platform": None},
    "load_average": 1.25,
    "torch": "2.14.1",
    "date": "2026-12-07T10:00:00Z",
    "commit": None,
    "command": "python benchmarks/ssl_gain.py",
}


def run_tables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "tables.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )


def test_committed_tables_match_the_result_files() -> None:
    result = run_tables("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_names_the_table_whose_figure_was_edited(tmp_path: Path) -> None:
    text = (REPO / "BENCHMARKS.md").read_text(encoding="utf-8")
    region = re.search(r"<!-- table: pseudo_label -->\n(.*?)<!-- /table -->", text, re.S)
    assert region, "BENCHMARKS.md has no pseudo_label table"
    row = region.group(1).splitlines()[2]
    edited = re.sub(r"\| (\d+)\.(\d) \|", lambda m: f"| {int(m.group(1)) + 1}.{m.group(2)} |", row, count=1)
    assert edited != row
    copy = tmp_path / "BENCHMARKS.md"
    copy.write_text(text.replace(row, edited, 1), encoding="utf-8")
    result = run_tables("--check", str(copy))
    assert result.returncode == 1
    assert "table pseudo_label differs" in result.stdout and edited in result.stdout and row in result.stdout
    assert run_tables(str(copy)).returncode == 0  # rewriting restores the generated region
    assert copy.read_text(encoding="utf-8") == text


def test_unknown_marker_is_an_error(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- table: no_such_table -->\n<!-- /table -->\n")
    result = run_tables("--check", str(page))
    assert result.returncode != 0 and "unknown table 'no_such_table'" in result.stderr


def write_run(results: Path, method: str, seed: int, miou: float) -> None:
    folder = results / "ssl_gain" / "label_bound"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "ssl_gain", "method": method, "seed": seed, "miou": miou, **PROVENANCE}
    (folder / f"{method}-seed{seed}.json").write_text(json.dumps(record))


def test_ssl_gain_tables_from_a_fixture(tmp_path: Path) -> None:
    runs = {
        "SupervisedOnly": [30.0, 40.0, 50.0, 40.0],
        "CorrMatch": [40.0, 38.0, 60.0, 62.0],
        "FullySupervised": [70.0, 80.0, 75.0, 75.0],
    }
    for method, values in runs.items():
        for seed, miou in enumerate(values):
            write_run(tmp_path, method, seed, miou)
    lines = tables.ssl_gain_summary(tmp_path, "label_bound")
    rows = {line.split(" | ")[0].strip("| "): line.strip("|").split(" | ") for line in lines[2:5]}
    assert [cell.strip() for cell in rows["SupervisedOnly"]] == ["SupervisedOnly", "4", "40.00 ± 8.16",
                                                                 "30.00–50.00", "—", "45.00 ± 7.07"]
    assert [cell.strip() for cell in rows["CorrMatch"]] == ["CorrMatch", "4", "50.00 ± 12.75", "38.00–62.00",
                                                            "3 of 4", "61.00 ± 1.41"]
    assert rows["FullySupervised"][4].strip() == "4 of 4"
    assert lines[-1].startswith("Measured on *AMD EPYC with AVX2 only*, 2026-12-07 (12 files; ")
    assert "load average 1.3" in lines[-1]

    seeds = tables.ssl_gain_seeds(tmp_path, "label_bound")
    assert seeds[0].startswith("| seed | SupervisedOnly | CorrMatch | FullySupervised | (FullySupervised ")
    assert seeds[3] == "| 1 | 40.00 | 38.00 | 80.00 | 20.00 | \N{MINUS SIGN}2.00 |"
    assert seeds[4] == "| 2 | 50.00 | 60.00 | 75.00 | 12.50 | +10.00 |" and len(seeds) == 8


def test_seeds_table_names_each_seeds_machine_when_they_differ(tmp_path: Path) -> None:
    for seed in (0, 1):
        write_run(tmp_path, "SupervisedOnly", seed, 40.0)
    path = tmp_path / "ssl_gain" / "label_bound" / "SupervisedOnly-seed1.json"
    record = json.loads(path.read_text())
    record["machine"] = {**record["machine"], "cpu": "Intel(R) Xeon(R) CPU", "cpu_extensions": ["avx2", "avx512f"]}
    path.write_text(json.dumps(record))
    seeds = tables.ssl_gain_seeds(tmp_path, "label_bound")
    assert seeds[0].endswith(" | machine |")
    assert seeds[2:4] == ["| 0 | 40.00 |  |  | AMD EPYC with AVX2 only |", "| 1 | 40.00 |  |  | Intel Xeon with AVX-512 |"]
    assert "*AMD EPYC with AVX2 only*, 2026-12-07 (1 file;" in seeds[-1]
    assert "*Intel Xeon with AVX-512*, 2026-12-07 (1 file;" in seeds[-1]


def test_pseudo_label_result_file_renders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    try:
        pseudo_label.main(["--size", "16", "--repeats", "1", "--threads", "1", "--results", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    [path] = (tmp_path / "pseudo_label").glob("*.json")
    assert f"results: {path}" in printed and path.name.endswith("-threads1-repeats1-size16.json")
    record = json.loads(path.read_text())
    assert record["settings"]["size"] == 16 and record["machine"]["cores"] >= 1
    assert record["load_average"] is None or record["load_average"] >= 0
    assert [row["implementation"] for row in record["rows"]] == ["naive_loop", "fast", "dense_sweep"]
    naive = record["rows"][0]
    assert f"naive loop: {naive['ms']:8.1f} ms, {naive['ops']:6d} dispatched ops" in printed
    [row] = tables.pseudo_label(tmp_path)[2:3]
    assert row.startswith(f"| {tables.machine_label(record)} | {record['date'][:10]} | cpu | 1 |")
    assert f"| {naive['ms']:.1f} |" in row


def test_compiled_step_times_get_their_own_table_beside_the_eager_ones(tmp_path: Path) -> None:
    folder = tmp_path / "step_time"
    folder.mkdir()

    def row(precision: str, step_s: float, peak: int, compile_mode: str | None) -> dict:
        return {"method": "CorrMatch", "network": "resnet101s", "crop": 97, "precision": precision,
                "step_s": step_s, "peak_mib": peak, "channels_last": False, "compile": compile_mode,
                "first_step_s": 61.25 if compile_mode else 2.0}

    eager = {"benchmark": "step_time", "rows": [row("fp32", 1.5, 900, None), row("bf16", 1.25, 800, None)]}
    compiled = {"benchmark": "step_time", "rows": [row("fp32", 0.75, 850, "default")]}
    for name, data in (("eager", eager), ("compiled", compiled)):
        (folder / f"{name}.json").write_text(json.dumps({**data, **PROVENANCE}))
    lines = tables.step_time(tmp_path, gpu=False)
    assert lines[0] == "| machine | date | method | network | crop | fp32 (s) | bf16 (s) | peak fp32 / bf16 (MiB) |"
    assert lines[2] == "| AMD EPYC with AVX2 only | 2026-12-07 | CorrMatch | resnet101s | 97 | 1.500 | 1.250 | 900 / 800 |"
    compiled = tables.step_time_compiled(tmp_path, gpu=False)
    assert compiled[0] == (
        "| machine | date | method | network | crop | precision | mode | eager (s) | compiled (s) | compiled / eager "
        "| first compiled step (s) | peak eager / compiled (MiB) |"
    )
    assert compiled[2:] == [
        "| AMD EPYC with AVX2 only | 2026-12-07 | CorrMatch | resnet101s | 97 | fp32 | default | 1.500 | 0.750 "
        "| 0.50× | 61.3 | 900 / 850 |",
        "",
        compiled[-1],
    ] and compiled[-1].startswith("Measured on *AMD EPYC with AVX2 only*, 2026-12-07 (2 files;")


def test_the_side_by_side_table_marks_the_fastest_row_with_the_goal(tmp_path: Path) -> None:
    folder = tmp_path / "authors_step"
    folder.mkdir()
    authors = {"code": "authors", "precision": "fp32", "compile": None, "step_s": 0.2, "peak_mib": 9000,
               "attention": "matmul", "ratio": 1.0}
    mine = [
        {"code": "toolkit", "precision": "fp32", "compile": None, "step_s": 0.18, "peak_mib": 8000, "ratio": 0.9},
        {"code": "toolkit", "precision": "bf16", "compile": "default", "step_s": 0.09, "peak_mib": 9500, "ratio": 0.45},
    ]
    verdict = {"target": 0.5, "best": {}, "no_more_memory": False, "met": False}
    settings = {"method": "UniMatchV2", "network": "dinov2_small", "crop": 518}
    record = {"benchmark": "authors_step", "settings": settings, "rows": [authors, *mine], "goal": verdict}
    (folder / "h100.json").write_text(json.dumps({**record, **PROVENANCE, "machine": {"gpu": "NVIDIA H100"}}))
    lines = tables.authors_step(tmp_path)
    assert lines[2:4] == [
        "| NVIDIA H100 | 2026-12-07 | UniMatchV2 | dinov2_small | 518 | 0.200 (matmul attention) | fp32 | eager "
        "| 0.180 | 0.90× | 9000 / 8000 |  |",
        "| NVIDIA H100 | 2026-12-07 | UniMatchV2 | dinov2_small | 518 | 0.200 (matmul attention) | bf16 | default "
        "| 0.090 | 0.45× | 9000 / 9500 | not met (≤ 0.5×, more memory) |",
    ]
    assert lines[-1].startswith("Measured on *NVIDIA H100*, 2026-12-07 (1 file;")
