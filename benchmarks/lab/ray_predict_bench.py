"""Makes ``benchmarks/results/ray_predict.md``: ``edgeclf predict --engine ray`` against the local engine on the same
20,000 Fashion-MNIST images (28 x 28 PNGs) with the README demo's int8 TFLite artefact, in one run: the rows of
both compared field for field, the wall time and the peak memory of each job's whole process tree (Ray's GCS,
raylet and actors included), Ray's start-up, and 1 vs 2 actors.

    .venv/bin/python benchmarks/lab/ray_predict_bench.py runs/demo/export/demo_int8.tflite [--images 20000]

Needs ``pip install -e '.[ray]'`` and Fashion-MNIST (``apt-get install dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fashion_mnist import CLASS_NAMES, load  # noqa: E402

from edgeclf.benchmarks.machine import describe, write_record  # noqa: E402

RESULTS = HERE.parent / "results"
EDGECLF = [sys.executable, "-m", "edgeclf.cli"]


def _tree_rss_mib(root: int) -> float:
    """The resident memory of ``root`` and every process below it, in MiB (read from /proc)."""
    parents: dict[int, int] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        pid = int(stat.split("/")[2])
        parents[pid] = int(text[text.rindex(")") + 2 :].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier and p not in tree]
        tree.update(frontier)
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def timed(cmd: list[str], stdout=subprocess.DEVNULL) -> dict:
    """Runs ``cmd``; its wall time, peak process-tree RSS (sampled every 0.2 s) and stderr."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True)
    peak = [0.0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss_mib(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.monotonic() - t0
    sampler.join()
    return {"wall_s": wall, "peak_rss_mib": peak[0], "exit": proc.returncode, "stderr_tail": err.strip()[-400:]}


def rows_of(folder: Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    rows = pq.read_table(sorted(folder.glob("part-*.parquet"))).to_pylist()
    return {r["path"]: {k: v for k, v in r.items() if v is not None} for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--images", type=int, default=20_000)
    args = parser.parse_args()
    data = load()
    images = np.concatenate([data["train"][0], data["test"][0]])[: args.images]
    labels = np.concatenate([data["train"][1], data["test"][1]])[: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = []
        for i, (img, y) in enumerate(zip(images, labels)):
            p = tmp / "imgs" / CLASS_NAMES[y] / f"{i:05d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, "L").save(p)
            paths.append(str(p))
        manifest = tmp / "images.txt"
        manifest.write_text("\n".join(paths) + "\n")
        runs = {}
        with open(tmp / "local.jsonl", "w") as fh:
            runs["local"] = timed([*EDGECLF, "predict", str(args.model), "--manifest", str(manifest), "--format",
                                   "jsonl", "--batch-size", "32"], stdout=fh)
        local = {r["path"]: r for r in map(json.loads, (tmp / "local.jsonl").read_text().splitlines())}
        for actors in (1, 2):
            out = tmp / f"ray{actors}"
            r = timed([*EDGECLF, "predict", str(args.model), "--manifest", str(manifest), "--engine", "ray",
                       "--out", str(out), "--actors", str(actors), "--batch-size", "256"])
            found = re.search(r"Ray start-up ([\d.]+) s", r["stderr_tail"])
            r["ray_startup_s"] = float(found.group(1)) if found else None
            ray_rows = rows_of(out)
            r["rows"] = len(ray_rows)
            r["rows_equal_local"] = ray_rows == local
            runs[f"ray_{actors}"] = r
    m = describe()
    record = {"images": len(paths), "model": str(args.model), "runs": runs, "local_rows": len(local),
              "machine": m, "date": time.strftime("%Y-%m-%d"),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True).stdout.strip()}
    earlier = RESULTS / "ray_predict.json"
    history = json.loads(earlier.read_text()).get("history", []) if earlier.exists() else []
    history.append({"date": record["date"], "commit": record["commit"], "images": record["images"],
                    **{f"{k}_wall_s": round(v["wall_s"], 1) for k, v in runs.items()},
                    "rows_equal": all(v.get("rows_equal_local", True) for v in runs.values())})
    record["history"] = history
    loc = runs["local"]
    lines = [
        "# `edgeclf predict --engine ray` vs the local engine",
        "",
        f"`benchmarks/lab/ray_predict_bench.py`: {record['images']:,} Fashion-MNIST images (28 x 28 PNG files, listed "
        f"in a manifest) through `{args.model}` (the README demo's int8 TFLite), every job in a fresh process, in "
        "one run. Memory is the peak resident memory of the job's whole process tree, sampled every 0.2 s (for Ray: "
        "the driver, GCS, raylet and the actors).",
        "",
        f"- {record['date']}, commit {record['commit']}, {m['cpu']}, {m['affinity_cores']} cores, ray "
        f"{_version('ray')}.",
        "",
        "| engine | wall s | vs local | peak RSS MiB | vs local | Ray start-up s | rows | equal to local |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        f"| local (`--batch-size 32`, all cores) | {loc['wall_s']:.1f} | 1.00x | {loc['peak_rss_mib']:.0f} | 1.00x | "
        f"- | {len(local):,} | - |",
    ]
    for actors in (1, 2):
        r = runs[f"ray_{actors}"]
        lines.append(f"| ray, {actors} actor(s) x 1 thread, `--batch-size 256` | {r['wall_s']:.1f} | "
                     f"{r['wall_s'] / loc['wall_s']:.2f}x | {r['peak_rss_mib']:.0f} | "
                     f"{r['peak_rss_mib'] / loc['peak_rss_mib']:.2f}x | {r['ray_startup_s']} | {r['rows']:,} | "
                     f"{'yes' if r['rows_equal_local'] else 'NO'} |")
    lines += ["", "On one small machine Ray costs time and memory (its start-up, its GCS and raylet, one process per "
              "actor, rows passing through its object store) for no gain: the local engine already uses every core. "
              "It pays where one machine is not enough: the same command with `--address` runs the actors on every "
              "node of a cluster.", "", "## History", "", "| date | commit | images | local s | ray 1 actor s | ray 2 actors s | rows equal |",
              "|---|---|---:|---:|---:|---:|---|"]
    for h in history:
        lines.append(f"| {h['date']} | {h['commit']} | {h['images']:,} | {h['local_wall_s']} | {h['ray_1_wall_s']} | "
                     f"{h['ray_2_wall_s']} | {'yes' if h['rows_equal'] else 'NO'} |")
    write_record(RESULTS, "ray_predict", record, lines)


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
