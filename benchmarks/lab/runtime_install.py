"""Reference result: what ``pip install 'edgeclf[runtime]'`` installs (resolved with ``pip --dry-run``).

    python benchmarks/lab/runtime_install.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgeclf.benchmarks.machine import describe

RESULTS = Path(__file__).resolve().parent.parent / "results"
ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "torch", "jax"}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), f"{ROOT}[runtime]"], check=True)
        names = sorted(item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"])
    heavy = sorted(FORBIDDEN & set(names))
    record = {"benchmark": "packages installed by pip install 'edgeclf[runtime]'", "packages": names,
              "count": len(names), "forbidden_found": heavy, "met": not heavy, "machine": describe(),
              "date": time.strftime("%Y-%m-%d")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "runtime_install.json").write_text(json.dumps(record, indent=2) + "\n")
    md = ["# What `pip install 'edgeclf[runtime]'` installs", "",
          f"- date {record['date']}; resolved with `pip install --dry-run --ignore-installed` "
          "(`python benchmarks/lab/runtime_install.py`)",
          f"- {len(names)} packages: {', '.join(names)}",
          f"- TensorFlow, Keras, tf2onnx, PyTorch, JAX: {'none' if not heavy else ', '.join(heavy)}"]
    (RESULTS / "runtime_install.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if record["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
