"""Does ``edgeclf predict`` give the figures the export's fidelity gate recorded in each artefact?

The gate runs every artefact through the runtime backends on the training run's held-out test images and writes
top-1 agreement with the Keras model and accuracy into the artefact's metadata. This benchmark takes the same
images (the same selection the gate makes), writes them as lossless PNG files, runs the installed ``edgeclf
predict`` command on each artefact in a fresh process - files decoded by the runtime, batching and all - and
recomputes agreement and accuracy from its JSON lines. They must equal the figures inside the artefact.

    python benchmarks/lab/export_benchmarks.py fidelity --run /tmp/fmnist/run-simple_cnn   # writes the artefacts
    python benchmarks/lab/runtime_vs_gate.py /tmp/fmnist/run-simple_cnn
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeclf.benchmarks.machine import EDGECLF, describe

RESULTS = Path(__file__).resolve().parent.parent / "results"


def write_pngs(pixels: np.ndarray, folder: Path) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:05d}.png" for i in range(len(pixels))]
    for path, img in zip(paths, pixels):
        Image.fromarray(img).save(path)
    return paths


def predict_labels(artefact: Path, folder: Path, class_names: list[str]) -> dict[str, int]:
    """``edgeclf predict`` in a fresh process: path -> predicted class index."""
    proc = subprocess.run([*EDGECLF, "predict", str(artefact), str(folder), "--format", "jsonl"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"edgeclf predict {artefact.name} failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    index = {c: i for i, c in enumerate(class_names)}
    return {Path(r["path"]).name: index[r["label"]] for r in map(json.loads, proc.stdout.splitlines())}


def main(argv: list[str] | None = None) -> int:
    from edgeclf.edge_runtime.artifact import read_metadata
    from edgeclf.edge_runtime.preprocess import PreprocessSpec
    from edgeclf.toolkit.evaluate import load_keras_model
    from edgeclf.edge_runtime.artifact import read_run_metadata
    from edgeclf.toolkit.export.images import run_split
    from edgeclf.toolkit.pipeline import predict_probs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="training run whose export/ folder holds gated artefacts")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeclf-runtime-vs-gate"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    artefacts = sorted(p for p in (args.run / "export").iterdir() if p.suffix in (".tflite", ".onnx"))
    metas = {a: read_metadata(a) for a in artefacts}
    fid = {a: m["fidelity"] for a, m in metas.items()}
    if not artefacts or not all(f.get("verified") for f in fid.values()):
        raise SystemExit(f"{args.run / 'export'}: needs artefacts exported with the gate on (not --no-verify).")
    counts = {f["n"] for f in fid.values()}
    if len(counts) != 1:
        raise SystemExit(f"The artefacts were gated on different numbers of images ({sorted(counts)}); re-export them.")
    n = counts.pop()

    run_meta = read_run_metadata(args.run / "model.keras")
    spec = PreprocessSpec.from_dict(run_meta["preprocess"])
    held_out = run_split(run_meta, args.run, "test", spec, n, seed=1)  # the exporter's own selection
    if held_out is None or len(held_out) != n:
        raise SystemExit(f"Could not rebuild the {n} held-out images of {args.run} (dataset moved?).")
    args.work.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{args.run.name}-", dir=args.work))  # never stale images of another run
    paths = write_pngs(held_out.pixels, folder)
    keras_labels = predict_probs(load_keras_model(args.run / "model.keras"), held_out.pixels).argmax(1)
    names = [p.name for p in paths]

    rows = []
    for a in artefacts:
        started = time.perf_counter()
        got = predict_labels(a, folder, run_meta["class_names"])
        wall = time.perf_counter() - started
        labels = np.array([got[name] for name in names])
        agreement = float((labels == keras_labels).mean())
        accuracy = float((labels == held_out.labels).mean())
        rows.append({"artefact": a.name, "n": n, "predict_wall_s": round(wall, 2),
                     "gate_agreement": fid[a]["agreement"], "predict_agreement": agreement,
                     "gate_accuracy": fid[a]["accuracy"], "predict_accuracy": accuracy,
                     # equal counts of images, not floating-point closeness
                     "equal": round(agreement * n) == round(fid[a]["agreement"] * n)
                     and round(accuracy * n) == round(fid[a]["accuracy"] * n)})
    shutil.rmtree(folder)
    met = all(r["equal"] for r in rows)
    record = {"benchmark": "edgeclf predict on the gate's held-out images vs the fidelity figures inside each artefact",
              "run": str(args.run), "images": held_out.origin, "met": met, "rows": rows, "machine": describe(),
              "date": time.strftime("%Y-%m-%d")}
    args.results.mkdir(parents=True, exist_ok=True)
    stem = f"runtime_vs_gate_{args.run.name}"
    (args.results / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    md = [f"# edgeclf predict vs the export gate: {args.run.name}", "",
          f"- date {record['date']}; {record['machine']['cpu']}, {record['machine']['affinity_cores']} cores",
          f"- command: `python benchmarks/lab/runtime_vs_gate.py {args.run}`",
          f"- images: {held_out.origin}, written as PNG files and classified by `edgeclf predict ARTEFACT FOLDER "
          "--format jsonl` in a fresh process; agreement is with the Keras model's top-1 on the same pixels",
          f"- runtime figures equal the gate's for every artefact: **{'yes' if met else 'NO'}**", "",
          "| artefact | gate agreement | predict agreement | gate accuracy | predict accuracy | equal |",
          "|---|---:|---:|---:|---:|---|"]
    md += [f"| {r['artefact']} | {100 * r['gate_agreement']:.2f}% | {100 * r['predict_agreement']:.2f}% | "
           f"{r['gate_accuracy']:.4f} | {r['predict_accuracy']:.4f} | {'yes' if r['equal'] else 'NO'} |" for r in rows]
    (args.results / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
