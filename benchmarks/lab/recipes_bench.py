"""Artefact sizes and CPU latency of every recipe, for the recipes page.

    python benchmarks/lab/recipes_bench.py [--recipes helmet-cnn,aiart-cnn] [--threads 2] [--work DIR]

For each registered recipe, through the public commands only:

1. ``edgeclf train`` on a small subset of the bundled Fashion-MNIST 2-class data (``--per-class`` images per class,
   resized to the recipe's own input size) with ``--weights none`` and ``--epochs`` epochs: the recipe's real
   architecture, input size and preprocessing, with weights that are not the original's (ImageNet weights cannot be
   downloaded here and the originals' datasets are not available);
2. ``edgeclf export --quantize fp32,int8 --no-verify`` (TFLite and ONNX): the gate is skipped because the weights are
   barely trained; the gate itself is exercised by ``tests/test_recipes.py``;
3. ``edgeclf bench RUN`` at the given threads, batch 1.

Size and latency do not depend on what the weights learned, so they are the figures a user of the recipe will see
on this CPU; the accuracy column is only the smoke figure of this short run and says nothing about the recipe.
Writes ``benchmarks/results/recipes.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from edgeclf.benchmarks.machine import describe, run_edgeclf, write_record
from edgeclf.models import get_recipe, list_recipes

HERE = Path(__file__).resolve().parent
BUNDLED = HERE.parent / "data" / "fashion-mnist-2class"
RESULTS = HERE.parent / "results"


def _subset(dest: Path, per_class: int) -> None:
    """The first ``per_class`` images of each class of the bundled data, copied to ``dest``."""
    for cls in sorted(p for p in BUNDLED.iterdir() if p.is_dir()):
        (dest / cls.name).mkdir(parents=True)
        for img in sorted(cls.glob("*.png"))[:per_class]:
            shutil.copy2(img, dest / cls.name / img.name)


def bench_recipe(name: str, work: Path, *, per_class: int, epochs: int, threads: int) -> dict:
    recipe = get_recipe(name)
    data = work / "data"
    _subset(data / "adult" if recipe.per_category else data, per_class)  # per-category: DATA/<category>/<class>
    out = work / "run"
    started = time.perf_counter()
    run_edgeclf("train", str(data), "--recipe", name, "--weights", "none", "--epochs", str(epochs), "--folds", "1",
         "--fine-tune-layers", "0", "--no-early-stopping", "--out", str(out), "--force")
    train_s = time.perf_counter() - started
    run = out / "adult" if recipe.per_category else out
    run_edgeclf("export", str(run / "model.keras"), "--quantize", "fp32,int8", "--no-verify", "--force")
    run_edgeclf("bench", str(run), "--threads", str(threads), "--out", str(work / "bench"), "--force", ok=(0, 1))
    result = json.loads((work / "bench" / "results.json").read_text())
    rows = {}
    for row in result["rows"]:
        key = "keras" if row["format"] == "keras" else f"{row['format']}_{row['quantization']}"
        rows[key] = {k: row.get(k) for k in ("status", "reason", "size_bytes", "accuracy", "p50_ms", "p90_ms",
                                             "images_per_s", "cold_start_s", "peak_rss_mib")}
    return {"recipe": name, "backbone": recipe.backbone, "img_size": recipe.img_size,
            "params": _params(run / "model.keras"), "train_s": train_s, "epochs": epochs,
            "train_images": 2 * per_class, "rows": rows}


def _params(model: Path) -> int:
    from edgeclf.toolkit.evaluate import load_keras_model

    return int(load_keras_model(model).count_params())


def _mib(b) -> str:
    return f"{b / 2**20:.1f}" if b else "—"


def _rss(mib) -> str:
    return f"{mib:.0f}" if mib else "—"


def _ms(row) -> str:
    return f"{row['p50_ms']:.2f}" if row and row.get("status") == "ok" and row.get("p50_ms") else "failed"


def markdown(record: dict) -> str:
    m = record["machine"]
    lines = [
        "# Recipes: artefact sizes and latency on this CPU", "",
        f"- date {record['date']}; {m['cpu']}, {m['affinity_cores']} cores; {record['threads']} threads, batch 1",
        f"- command: `python benchmarks/lab/recipes_bench.py --threads {record['threads']} "
        f"--per-class {record['per_class']}`",
        "- each recipe trained with `--weights none` on "
        f"{2 * record['per_class']} bundled Fashion-MNIST images resized to its input size, exported with "
        "`--no-verify`, benchmarked with `edgeclf bench` (p50 ms per image, every row in a fresh process). Sizes and "
        "latency are the recipe's; the weights are not (no ImageNet weights, no original data here), so accuracy is "
        "not reported.", "",
        "| recipe | backbone | input | parameters | Keras MiB | TFLite fp32 MiB | TFLite int8 MiB | ONNX fp32 MiB "
        "| ONNX int8 MiB | Keras ms | TFLite fp32 ms | TFLite int8 ms | ONNX fp32 ms | ONNX int8 ms "
        "| int8 TFLite peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in record["recipes"]:
        if "error" in r:
            lines.append(f"| `{r['recipe']}` | failed: {r['error']} |" + " |" * 13)
            continue
        get = r["rows"].get
        lines.append(
            f"| `{r['recipe']}` | {r['backbone']} | {r['img_size']} | {r['params'] / 1e6:.2f} M | "
            + " | ".join(_mib((get(k) or {}).get("size_bytes"))
                         for k in ("keras", "tflite_fp32", "tflite_int8", "onnx_fp32", "onnx_int8"))
            + " | " + " | ".join(_ms(get(k)) for k in ("keras", "tflite_fp32", "tflite_int8", "onnx_fp32", "onnx_int8"))
            + f" | {_rss((get('tflite_int8') or {}).get('peak_rss_mib'))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=",".join(list_recipes()), help="comma-separated [default: all]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=16, help="training images per class")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeclf-recipes-bench"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    records = []
    for name in [n.strip() for n in args.recipes.split(",") if n.strip()]:
        work = args.work / name
        if work.exists():
            shutil.rmtree(work)
        print(f"{name} ...", flush=True)
        try:
            records.append(bench_recipe(name, work, per_class=args.per_class, epochs=args.epochs,
                                        threads=args.threads))
        except RuntimeError as exc:  # one failing recipe does not stop the table
            records.append({"recipe": name, "error": str(exc)[:300]})
        print(json.dumps(records[-1])[:400], flush=True)
    record = {"benchmark": "recipes: sizes and latency", "date": time.strftime("%Y-%m-%d"), "threads": args.threads,
              "per_class": args.per_class, "epochs": args.epochs, "machine": describe(), "recipes": records}
    previous = args.results / "recipes.json"
    if previous.exists():  # a rerun of some recipes replaces their rows and keeps the others' (same settings only)
        old = json.loads(previous.read_text())
        if all(old.get(k) == record[k] for k in ("threads", "per_class", "epochs")):
            done = {r["recipe"] for r in records}
            record["recipes"] = sorted([r for r in old["recipes"] if r["recipe"] not in done] + records,
                                       key=lambda r: r["recipe"])
            records = record["recipes"]
    write_record(args.results, "recipes", record, markdown(record))
    return 0 if all("error" not in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
