"""What machine a benchmark ran on: CPU model, cores, instruction sets and library versions."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# The edgeclf CLI of the Python running the benchmark, whether or not its venv is on PATH.
EDGECLF = [sys.executable, "-m", "edgeclf.cli"]


def write_record(results: Path, name: str, record: dict, md: str | list[str], history: dict | None = None) -> None:
    """Writes a benchmark's ``NAME.json`` (the record) and ``NAME.md`` (its page) into ``results``, and prints the
    page. ``md`` is the page's text or its lines.

    ``history``: this run's row of the benchmark's history, appended to ``NAME_history.json``; the page then ends
    with the table of every row (its columns are the rows' keys; a ``record`` key keeps the run's whole record in
    the JSON and stays out of the table).
    """
    text = md if isinstance(md, str) else "\n".join(md) + "\n"
    results.mkdir(parents=True, exist_ok=True)
    if history is not None:
        path = results / f"{name}_history.json"
        rows = json.loads(path.read_text()) if path.exists() else []
        rows.append(history)
        path.write_text(json.dumps(rows, indent=2) + "\n")
        text += "\n" + "\n".join(history_table(rows)) + "\n"
    (results / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (results / f"{name}.md").write_text(text)
    print(text, end="")


def history_table(rows: list[dict]) -> list[str]:
    """A "History" section: one table row per run, the columns in the order the rows first name them."""
    columns = list(dict.fromkeys(k for row in rows for k in row if k != "record"))
    lines = ["## History", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "-")) for c in columns) + " |" for row in rows]
    return lines


def git_commit() -> str:
    """The short commit of the checkout a benchmark runs from, for its history ("unknown" outside a checkout)."""
    try:
        proc = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=False)
    except OSError:  # no git
        return "unknown"
    return proc.stdout.strip() or "unknown"


def run_edgeclf(*args: str, ok=(0,)) -> subprocess.CompletedProcess:
    """Runs ``edgeclf ARGS...`` and returns it; an exit code outside ``ok`` raises RuntimeError with its last line."""
    proc = subprocess.run([*EDGECLF, *args], capture_output=True, text=True, check=False)
    if proc.returncode not in ok:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:]
        raise RuntimeError(f"edgeclf {args[0]} exited {proc.returncode}: {tail}")
    return proc

LIBRARIES = ("edgeclf", "tensorflow", "keras", "jax", "jaxlib", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "numpy",
             "pillow", "opencv-python")
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "fma", "neon", "asimd", "asimddp")


def describe() -> dict:
    """A JSON-ready description of this machine and the installed library versions."""
    from edgeclf.edge_runtime.backends import cpu_flags  # here: bench workers import this module for vm_hwm_mib

    cpu, flags = platform.processor() or platform.machine(), cpu_flags()
    ident: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware") and cpu in ("", platform.machine()):
                    cpu = value.strip()
                elif key in ("cpu family", "model") and key not in ident:
                    ident[key] = value.strip()
    except OSError:
        pass
    if len(ident) == 2 and not any(ch.isdigit() for ch in cpu):
        # A VM may name only the brand ("AMD EPYC" for Zen 3 and Zen 4 alike): the family and model tell them apart
        cpu = f"{cpu} (family {ident['cpu family']}, model {ident['model']})"
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "instruction_sets": sorted(f for f in FLAGS if f in flags),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        if hasattr(os, "sysconf") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def vm_hwm_mib(pid: int | str = "self") -> float | None:
    """A process's peak resident memory (``VmHWM`` from /proc, which starts afresh at exec) in MiB, or None."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None
