"""Makes ``benchmarks/results/distribute_train.md``: ``edgeclf train --distribute data-parallel`` on Keras' JAX
backend with one device, two host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``) and two
processes on localhost (``KERAS_DISTRIBUTION_*``), on the bundled Fashion-MNIST data: every epoch's history side
by side, test accuracy and wall time. The runs go one after another, so their times compare.

    .venv/bin/python benchmarks/lab/distribute_train.py [--epochs 10]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data" / "fashion-mnist-2class"
RESULTS = HERE.parent / "results"
LAYOUTS = {"1 device": (1, 1), "2 devices": (2, 1), "2 processes": (1, 2)}
EXPLAINED = (
    'Two devices and two processes give the same figures to the printed digit: the same global batches, '
    'reduced the same way. One device differs from them from the first epoch at the level of float '
    "rounding (loss 0.415063 vs 0.415125 after the first epoch): a batch's BatchNorm statistics and "
    "gradients are summed over two devices' halves in another order, and SGD amplifies such differences "
    "over the run, as it does between two GPU models. Without augmentation, on the test's small set, all "
    'three agree to 1e-7 over the run (`tests/test_distribute.py`); the augmentation itself is identical '
    'in every layout.'
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_layout(devices: int, processes: int, out: Path, epochs: int) -> dict:
    args = [sys.executable, "-m", "edgeclf.cli", "train", str(DATA), "--backbone", "simple_cnn", "--weights", "none",
            "--img-size", "28", "--epochs", str(epochs), "--distribute", "data-parallel", "--force"]
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    ports = [_port() for _ in range(processes)]
    t0 = time.monotonic()
    jobs = []
    for i in range(processes):
        extra = {} if processes == 1 else {
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": ",".join(f"localhost:{p}" for p in ports),
            "KERAS_DISTRIBUTION_NUM_PROCESSES": str(processes), "KERAS_DISTRIBUTION_PROCESS_ID": str(i)}
        jobs.append(subprocess.Popen([*args, "--out", str(out / f"p{i}")], env={**env, **extra},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for job in jobs:
        text, _ = job.communicate()
        if job.returncode:
            raise SystemExit(text[-2000:])
    wall = time.monotonic() - t0
    run = out / "p0"
    with open(run / "history.csv", newline="") as fh:
        history = [{k: float(v) for k, v in r.items() if k not in ("fold", "phase")} for r in csv.DictReader(fh)]
    metrics = json.loads((run / "metrics.json").read_text())["splits"]["test"]
    meta = json.loads((run / "metadata.json").read_text())
    return {"wall_s": wall, "history": history, "test_accuracy": metrics["accuracy"], "test_n": metrics["n"],
            "distribution": meta["hardware"]["distribution"], "batch_size": meta["train"]["batch_size"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    from edgeclf.benchmarks.machine import describe, write_record

    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: run_layout(d, p, Path(tmp) / name.replace(" ", "_"), args.epochs)
                for name, (d, p) in LAYOUTS.items()}
    m = describe()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    ref = runs["1 device"]["history"]
    worst = max(abs(h[k] - r[k]) for run in runs.values() for h, r in zip(run["history"], ref)
                for k in ("loss", "val_loss", "accuracy", "val_accuracy"))
    record = {"epochs": args.epochs, "data": str(DATA.relative_to(HERE.parents[1])), "runs": runs,
              "max_history_diff": worst, "machine": m, "date": time.strftime("%Y-%m-%d"), "commit": commit}
    earlier = RESULTS / "distribute_train.json"
    history = json.loads(earlier.read_text()).get("history", []) if earlier.exists() else []
    history.append({"date": record["date"], "commit": commit, "machine": m["cpu"],
                    **{f"{k} test accuracy": v["test_accuracy"] for k, v in runs.items()},
                    "max_history_diff": worst})
    record["history"] = history
    names = list(runs)
    lines = [
        "# `edgeclf train --distribute data-parallel`: 1 device, 2 devices, 2 processes",
        "",
        f"`benchmarks/lab/distribute_train.py`: `simple_cnn` from scratch at 28 px on `{record['data']}` (the bundled "
        f"800 Fashion-MNIST images), {args.epochs} epochs, batch {runs['1 device']['batch_size']}, Keras on JAX, on "
        "the CPU: one device; two host devices in one process (`XLA_FLAGS=--xla_force_host_platform_device_count=2`); "
        "two processes on localhost with one device each (`KERAS_DISTRIBUTION_*`, as a launcher sets them). The "
        "runs went one after another.",
        "",
        f"- {record['date']}, commit {commit}, {m['cpu']}, {m['affinity_cores']} cores, jax "
        f"{m['versions'].get('jax')}, keras {m['versions'].get('keras')}. No GPU machine was available for this "
        "record: the layouts are the CPU's host devices.",
        "",
        "| layout | devices | processes | test accuracy | wall s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in runs.items():
        d = r["distribution"]
        lines.append(f"| {name} | {d['devices']} | {d['processes']} | {r['test_accuracy']:.4f} ({r['test_n']} "
                     f"images) | {r['wall_s']:.1f} |")
    lines += ["", f"Largest difference between any layout's epoch figures and the one-device run's: {worst:.2e}.", "",
              EXPLAINED, "",
              "| epoch | " + " | ".join(f"{n} loss | {n} val acc" for n in names) + " |",
              "|---:|" + "---:|---:|" * len(names)]
    for e in range(len(ref)):
        lines.append(f"| {e + 1} | " + " | ".join(
            f"{runs[n]['history'][e]['loss']:.6f} | {runs[n]['history'][e]['val_accuracy']:.4f}" for n in names) + " |")
    lines += ["", "## History", "", "| date | commit | " + " | ".join(f"{n} test acc" for n in names)
              + " | max diff |", "|---|---|" + "---:|" * (len(names) + 1)]
    for h in history:
        lines.append(f"| {h['date']} | {h['commit']} | " + " | ".join(f"{h[f'{n} test accuracy']:.4f}" for n in names)
                     + f" | {h['max_history_diff']:.1e} |")
    write_record(RESULTS, "distribute_train", record, lines)


if __name__ == "__main__":
    main()
