"""Makes ``benchmarks/results/runtime_install.md``: what each device-side extra installs, and its size on disk.

Each extra is installed with ``pip install --target`` into an empty folder (so nothing already installed is
counted out) and measured with its dependencies; the packages it must never bring (TensorFlow, Keras, tf2onnx,
PyTorch, JAX) are checked for.

    python benchmarks/lab/runtime_install.py [--extras runtime-litert,runtime-onnx,runtime,...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgeclf.benchmarks.machine import describe

RESULTS = Path(__file__).resolve().parent.parent / "results"
ROOT = Path(__file__).resolve().parents[2]  # the repository
FORBIDDEN = {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "torch", "jax"}
EXTRAS = ("runtime-litert", "runtime-onnx", "runtime-litert+camera-headless", "runtime-litert+camera", "runtime")


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def measure(extra: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target",
                        str(target), f"{ROOT}[{extra}]"], check=True)
        packages = {}
        for info in target.glob("*.dist-info"):
            name = info.name.split("-")[0].lower().replace("_", "-")
            files = [line.split(",")[0] for line in (info / "RECORD").read_text().splitlines() if line]
            packages[name] = sum((target / f).stat().st_size for f in files if (target / f).is_file())
        total = folder_bytes(target)
    return {"extra": extra, "mib": round(total / 2**20, 1), "packages": dict(sorted(packages.items())),
            "largest": sorted(packages.items(), key=lambda kv: -kv[1])[:4],
            "forbidden_found": sorted(FORBIDDEN & set(packages))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extras", default=",".join(EXTRAS),
                        help="extras to measure, separated by commas; join several with + (runtime-litert+camera)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = [measure(extra.replace("+", ",")) for extra in args.extras.split(",")]
    record = {"benchmark": "installed size of each device-side extra (pip install --target, with dependencies)",
              "rows": rows, "machine": describe(), "date": time.strftime("%Y-%m-%d"),
              "target": "smallest useful extra <= 200 MiB"}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "runtime_install.json").write_text(json.dumps(record, indent=2) + "\n")
    md = ["# What each device-side extra installs", "",
          f"- date {record['date']}; {record['machine']['os']}, Python {record['machine']['python']}; "
          "`python benchmarks/lab/runtime_install.py` (`pip install --target` into an empty folder)",
          "- target: the smallest useful extra (file inference on one backend) at most 200 MiB", "",
          "| extra | installed MiB | packages | largest | TensorFlow, Keras, tf2onnx, PyTorch, JAX |",
          "|---|---:|---:|---|---|"]
    for r in rows:
        largest = ", ".join(f"{n} {b / 2**20:.0f}" for n, b in r["largest"])
        md.append(f"| `{r['extra']}` | {r['mib']} | {len(r['packages'])} | {largest} | "
                  f"{', '.join(r['forbidden_found']) or 'none'} |")
    history_path = args.results / "runtime_install_history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    history.append({"date": record["date"], "sizes_mib": {r["extra"]: r["mib"] for r in rows}})
    history_path.write_text(json.dumps(history, indent=2) + "\n")
    md += ["", "## History", "", "| date | " + " | ".join(f"`{r['extra']}` MiB" for r in rows) + " |",
           "|---|" + "---:|" * len(rows)]
    md += [f"| {h['date']} | " + " | ".join(str(h["sizes_mib"].get(r["extra"], "")) for r in rows) + " |"
           for h in history]
    (args.results / "runtime_install.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if not any(r["forbidden_found"] for r in rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("PIP_NO_INPUT", "1")
    sys.exit(main())
