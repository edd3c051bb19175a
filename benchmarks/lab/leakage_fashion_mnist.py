"""Reference result: the split-leakage check on the official Fashion-MNIST train (60,000) and test (10,000) sets.

    python benchmarks/lab/leakage_fashion_mnist.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fashion_mnist import load
from edgeclf.benchmarks.machine import describe
from edgeclf.toolkit.leakage import DEFAULT_THRESHOLD, find_leaks

RESULTS = Path(__file__).resolve().parent.parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    data = load()
    rgb = {s: np.repeat(data[s][0][..., None], 3, axis=3) for s in ("train", "test")}
    started = time.perf_counter()
    report = find_leaks({"train": rgb["train"], "test": rgb["test"]}, args.threshold)
    wall = time.perf_counter() - started
    hist = np.bincount([p.distance for p in report.pairs], minlength=args.threshold + 1).tolist()
    summary = report.summary()
    record = {"benchmark": "leakage check, Fashion-MNIST official train vs test", "threshold_bits": args.threshold,
              "summary": summary, "distance_histogram": hist, "wall_time_s": round(wall, 1), "machine": describe(),
              "date": time.strftime("%Y-%m-%d")}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "leakage_fashion_mnist.json").write_text(json.dumps(record, indent=2) + "\n")
    md = ["# Leakage check on Fashion-MNIST (official train vs test)", "",
          f"- date {record['date']}; {record['machine']['cpu']}, {record['machine']['affinity_cores']} cores",
          f"- command: `python benchmarks/lab/leakage_fashion_mnist.py`; {summary['hash']} "
          f"{summary['hash_bits']} bits, threshold {args.threshold}; wall time {record['wall_time_s']} s for 70,000 "
          "images",
          f"- test images matching a training image: **{summary['leaked_images']['test']}** of 10,000 "
          f"({summary['exact_pairs']} byte-identical, {summary['near_pairs']} near); exact duplicates inside a split: "
          f"{summary['within_split_exact_duplicates']}",
          f"- matches per Hamming distance 0..{args.threshold}: {hist}"]
    (args.results / "leakage_fashion_mnist.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
