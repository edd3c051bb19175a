"""Reference tables for ``edgeclf bench``, and a check of its latency against an independent loop.

For each run directory (``model.keras`` + ``export/``):

- ``invoke_loop`` on each artefact (a plain LiteRT ``Interpreter.invoke()`` / onnxruntime ``run`` loop that shares
  no code with edgeclf, in its own fresh process), then ``--rounds`` times: ``edgeclf bench RUN`` (every artefact
  beside the Keras model, the run's test split) followed by ``invoke_loop`` on each artefact again;
- edgeclf's per-call overhead over the plain runtime calls in one process (``stats.runtime_overhead``).

The last round's report is published under ``benchmarks/results/bench_<run>/``. A round's ratio is bench's p50
over the mean of the two loop p50s bracketing it; the check takes the median ratio over rounds (target: within
15 %).

    python benchmarks/lab/reference_bench.py /tmp/fmnist/run-simple_cnn --threads 2 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgeclf.benchmarks.machine import EDGECLF, describe
from edgeclf.benchmarks.stats import runtime_overhead

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"
TOLERANCE = 0.15


def _bench(run: Path, out: Path, threads: int, max_images: int | None) -> dict:
    cmd = [*EDGECLF, "bench", str(run), "--threads", str(threads), "--out", str(out), "--force"]
    if max_images:
        cmd += ["--max-images", str(max_images)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"edgeclf bench failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads((out / "results.json").read_text())


def _loop(model: Path, image: Path, threads: int, runs: int) -> float:
    out = subprocess.run([sys.executable, str(HERE / "invoke_loop.py"), str(model), str(image),
                          "--threads", str(threads), "--runs", str(runs)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["p50_ms"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="Run directories with model.keras and export/.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop-runs", type=int, default=100, help="minimum timed runs of the loop (and >= 2 s, "
                        "as edgeclf bench's defaults)")
    parser.add_argument("--no-publish", action="store_true", help="only the latency check; keep the published tables")
    parser.add_argument("--max-images", type=int, help="Evaluate at most this many test images per run.")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    checks, published = [], []
    with tempfile.TemporaryDirectory(prefix="edgeclf-refbench-") as tmp:
        for run in args.runs:
            artefacts = sorted(p for p in (run / "export").iterdir() if p.suffix in (".tflite", ".onnx"))
            image = _sample_image(run)
            bench_p50 = {a.name: [] for a in artefacts}
            # The loop runs before the first round and after every round, so each bench row is bracketed by two
            # loop measurements taken just before and just after it: a round's ratio is bench / mean(bracket).
            loop_p50 = {a.name: [_loop(a, image, args.threads, args.loop_runs)] for a in artefacts}
            for r in range(args.rounds):
                out = Path(tmp) / f"{run.name}-{r}"
                rows = {row["model"]: row for row in _bench(run, out, args.threads, args.max_images)["rows"]}
                for a in artefacts:
                    row = rows.get(a.name)
                    bench_p50[a.name].append(row["p50_ms"] if row and row["status"] == "ok" else None)
                for a in artefacts:
                    loop_p50[a.name].append(_loop(a, image, args.threads, args.loop_runs))
            overhead = {a.name: runtime_overhead(a, image, args.threads) for a in artefacts}
            if not args.no_publish:
                dest = args.results / f"bench_{run.name}"
                if dest.exists():
                    shutil.rmtree(dest)
                shutil.copytree(Path(tmp) / f"{run.name}-{args.rounds - 1}", dest)
                published.append(dest)
            for a in artefacts:
                ratios = [b / ((loop_p50[a.name][r] + loop_p50[a.name][r + 1]) / 2)
                          for r, b in enumerate(bench_p50[a.name]) if b is not None]
                if not ratios:
                    checks.append({"run": run.name, "artefact": a.name, "error": "no successful bench row"})
                    continue
                ratio = statistics.median(ratios)
                checks.append({"run": run.name, "artefact": a.name,
                               "bench_p50_ms": statistics.median(b for b in bench_p50[a.name] if b is not None),
                               "loop_p50_ms": statistics.median(loop_p50[a.name]), "ratio": ratio,
                               "round_ratios": ratios, "within_15pct": abs(ratio - 1) <= TOLERANCE,
                               "bench_p50_rounds": bench_p50[a.name], "loop_p50_rounds": loop_p50[a.name],
                               "in_process": overhead[a.name]})
    ok = all(c.get("within_15pct") for c in checks)
    record = {"benchmark": f"edgeclf bench p50 vs an independent invoke loop, {args.threads} threads, batch 1",
              "rounds": args.rounds, "loop_runs": args.loop_runs, "checks": checks, "all_within_15pct": ok,
              "published": [str(p.relative_to(args.results.parent.parent)) if p.is_relative_to(args.results.parent.parent)
                            else str(p) for p in published],
              "machine": describe(), "date": time.strftime("%Y-%m-%d")}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "bench_vs_invoke_loop.json").write_text(json.dumps(record, indent=2) + "\n")
    md = ["# edgeclf bench latency vs an independent invoke loop", "",
          f"- date {record['date']}; {record['machine']['cpu']}, {record['machine']['affinity_cores']} cores; "
          f"{args.threads} threads, batch 1",
          f"- command: `python benchmarks/lab/reference_bench.py {' '.join(str(r) for r in args.runs)} "
          f"--threads {args.threads} --rounds {args.rounds}"
          + (f" --max-images {args.max_images}" if args.max_images else "") + (" --no-publish" if args.no_publish else "")
          + "`",
          f"- {args.rounds} rounds of `edgeclf bench` on the run (every row in a fresh process), each bracketed by "
          f"`benchmarks/invoke_loop.py` runs (at least {args.loop_runs} timed runs and 2 s, fresh process) on each "
          "artefact just before and just after it; a round's ratio is bench p50 / mean of the two bracketing loop "
          "p50s; the ratio shown is the median over rounds (the p50 columns are medians over rounds)",
          "- in-process overhead: edgeclf's backend `run()` vs plain `set_tensor`/`invoke`/`get_tensor` (onnxruntime "
          "`run`) on one model in one process, interleaved call by call (200 pairs a round, which goes first "
          "alternating), median of the per-round ratios of median call times: what edgeclf's own code adds per call, "
          "free of process-to-process variation", "",
          "| run | artefact | bench p50 ms | invoke loop p50 ms | ratio | round ratios | within 15 % "
          "| in-process backend overhead |",
          "|---|---|---:|---:|---:|---|---|---:|"]
    for c in checks:
        if "error" in c:
            md.append(f"| {c['run']} | {c['artefact']} | failed: {c['error']} | | | | NO | |")
        else:
            md.append(f"| {c['run']} | {c['artefact']} | {c['bench_p50_ms']:.4f} | {c['loop_p50_ms']:.4f} | "
                      f"{c['ratio']:.3f} | {', '.join(f'{x:.2f}' for x in c['round_ratios'])} | "
                      f"{'yes' if c['within_15pct'] else 'NO'} | {100 * c['in_process']['overhead']:+.1f} % |")
    md += ["", f"All within 15 %: **{'yes' if ok else 'NO'}**."
           + (" Published tables: " + ", ".join(f"`{p}`" for p in record["published"]) if published else "")]
    (args.results / "bench_vs_invoke_loop.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if ok else 1


def _sample_image(run: Path) -> Path:
    """An image of the run's own dataset, for the loop's input."""
    data = Path(json.loads((run / "metadata.json").read_text())["dataset"]["path"])
    image = next((p for p in sorted(data.rglob("*")) if p.suffix.lower() in (".png", ".jpg", ".jpeg")), None)
    if image is None:
        raise SystemExit(f"No image files in {data}, the dataset of {run}.")
    return image


if __name__ == "__main__":
    sys.exit(main())
