"""Reference result: a backbone trained on the full Fashion-MNIST-10 on this CPU.

Converts the IDX files to class folders (official 60k/10k train/test split; val is carved out of train), runs
``edgeclf train`` exactly as a user would, and records the test accuracy, wall time, command and machine in
``benchmarks/results/fashion_mnist_BACKBONE.json`` (and ``.md``).

    apt-get install dataset-fashion-mnist
    python benchmarks/lab/fashion_mnist.py_train --work /tmp/fmnist
    # MobileNetV2 from scratch at its smallest input (32 px; 28 px images are upsampled), 6 epochs
    python benchmarks/lab/fashion_mnist.py_train --work /tmp/fmnist --backbone mobilenet_v2 --img-size 32 \
        --epochs 6 --target 0.88
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from edgeclf.benchmarks.machine import EDGECLF, describe

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeclf-fmnist"), help="Folder for images and the run.")
    parser.add_argument("--backbone", default="simple_cnn")
    parser.add_argument("--img-size", type=int, default=28)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.92, help="test accuracy the result is checked against")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    data, run = args.work / "fashion-mnist", args.work / f"run-{args.backbone}"
    if not data.exists():
        subprocess.run([sys.executable, str(HERE / "fashion_mnist.py"), "--out", str(data)], check=True)
    cmd = [*EDGECLF, "train", str(data), "--backbone", args.backbone, "--weights", "none", "--img-size",
           str(args.img_size), "--epochs", str(args.epochs), "--batch-size", "64", "--no-augment", "--patience", "4",
           "--out", str(run), "--force"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - started
    meta = json.loads((run / "metadata.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())["splits"]
    history = (run / "history.csv").read_text().strip().splitlines()
    record = {
        "benchmark": f"{args.backbone} on Fashion-MNIST-10 (official test split, 10,000 images)",
        "command": shlex.join(cmd),
        "wall_time_s": round(wall, 1),
        "epochs_run": len(history) - 1,
        "test_accuracy": metrics["test"]["accuracy"],
        "test_f1_macro": metrics["test"]["f1_macro"],
        "val_accuracy": metrics["val"]["accuracy"],
        "split_sizes": meta["dataset"]["split_sizes"],
        "leakage": {k: meta["dataset"]["leakage"][k] for k in ("hash", "exact_pairs", "near_pairs", "leaked_images")},
        "target": f">= {args.target} test accuracy",
        "met": metrics["test"]["accuracy"] >= args.target,
        "machine": describe(),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"fashion_mnist_{args.backbone}.json").write_text(json.dumps(record, indent=2) + "\n")
    md = [
        f"# {args.backbone} on Fashion-MNIST-10", "",
        f"- date: {record['date']}; machine: {record['machine']['cpu']}, {record['machine']['affinity_cores']} cores, "
        f"TensorFlow {record['machine']['versions']['tensorflow']}",
        f"- command: `{record['command']}`",
        f"- splits: {record['split_sizes']} (val carved from the official train split; test is the official test set)",
        f"- epochs run: {record['epochs_run']} (early stopping, patience 4); wall time {record['wall_time_s']} s "
        "(includes decoding 70,000 PNGs and the leakage check)",
        f"- **test accuracy {record['test_accuracy']:.4f}** "
        f"(target >= {args.target}: {'met' if record['met'] else 'NOT met'}), "
        f"macro F1 {record['test_f1_macro']:.4f}, val accuracy {record['val_accuracy']:.4f}",
        f"- leakage check: {record['leakage']}",
    ]
    (args.results / f"fashion_mnist_{args.backbone}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if record["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
