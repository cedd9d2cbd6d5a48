"""Benchmark results as data: every benchmark script writes what it measured as JSON under
``benchmarks/results/``, with the machine, the torch version, the date, the commit and the exact command,
so that BENCHMARKS.md, the README and ``figures.py`` read their figures from files, not from prose.

    from record import write_result
    write_result("step_time/cpu.json", {"rows": rows})
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def cpu_model() -> str:
    """The processor's model name as the kernel reports it (``/proc/cpuinfo``), else the platform's."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_extensions() -> list[str]:
    """The vector extensions that set how fast (and in which order) the CPU kernels sum: AVX-512, AVX2."""
    cpuinfo = Path("/proc/cpuinfo")
    flags: set[str] = set()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return [name for name in ("avx512f", "avx2") if name in flags]


def extensions_label(extensions: list[str] | None) -> str:
    """How a CPU's recorded vector extensions read after its name: `` with AVX-512``, `` with AVX2 only``,
    `` without AVX2``, or nothing where they were not recorded."""
    if extensions is None:
        return ""
    if "avx512f" in extensions:
        return " with AVX-512"
    return " with AVX2 only" if "avx2" in extensions else " without AVX2"


def machine() -> dict[str, Any]:
    """The machine a result was measured on: CPU model, cores, vector extensions, GPU name if any."""
    return {
        "cpu": cpu_model(),
        "cpu_extensions": cpu_extensions(),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "platform": platform.platform(terse=True),
    }


def machine_slug() -> str:
    """A file-name part that tells machines apart: the GPU's name, else the CPU model and its widest
    vector extension (``amd-epyc-avx2``)."""
    gpu = machine()["gpu"]
    name = gpu or re.sub(r"\((R|TM)\)", "", cpu_model())
    extension = "" if gpu else next((f"-{e.removesuffix('f')}" for e in cpu_extensions()), "")
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + extension


def load_average() -> float | None:
    """The 1-minute load average (processes running or waiting for a core), None where unavailable."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def commit() -> str | None:
    """The checkout's commit, with ``-dirty`` when tracked files differ from it; None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=ROOT).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def command() -> str:
    """The command that is running, as one would type it from the repository root."""
    script = Path(sys.argv[0])
    if script.is_absolute() and ROOT in script.parents:
        script = script.relative_to(ROOT)
    return shlex.join(["python", str(script), *sys.argv[1:]])


def provenance() -> dict[str, Any]:
    """Machine, load average, torch version, date (UTC), commit and command of the running benchmark."""
    return {
        "machine": machine(),
        "load_average": load_average(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit(),
        "command": command(),
    }


def write_result(name: str | Path, data: dict[str, Any], results: Path = RESULTS) -> Path:
    """Writes ``data`` with :func:`provenance` to ``results/name`` (JSON) and returns the path."""
    path = results / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**data, **provenance()}, indent=2) + "\n", encoding="utf-8")
    print(f"results: {path}", flush=True)
    return path
