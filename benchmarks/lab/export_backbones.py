"""Export gate figures of the backbones no recipe covers, trained on the bundled Fashion-MNIST data.

    python benchmarks/lab/export_backbones.py [--backbones mobilenet_v3_small,efficientnet_b0] [--epochs 6]

For each backbone, through the public commands only:

1. ``edgeclf train`` on the bundled 2-class data (800 images: 560 train, 120 val, 120 test) at ``--img-size`` with
   ``--weights none`` (ImageNet weights cannot be downloaded here);
2. ``edgeclf export --quantize fp32,fp16,dynamic,int8`` (TFLite and ONNX) with the gate on: int8 calibrated on the
   run's validation split, every artefact compared with the Keras model on its test split;
3. each int8 artefact the gate rejected, exported again with ``--calib`` on the run's 560 training images.

The figures say whether each artefact of that architecture converts, runs and passes the gate; they are not the
figures of an ImageNet-initialised model fine-tuned on a user's data, whose int8 sensitivity can differ.
Writes ``benchmarks/results/export_backbones.{md,json}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

from edgeclf.benchmarks.machine import describe, run_edgeclf, write_record

HERE = Path(__file__).resolve().parent
BUNDLED = HERE.parent / "data" / "fashion-mnist-2class"
RESULTS = HERE.parent / "results"
DEFAULT = ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")


def export_backbone(name: str, work: Path, *, img_size: int, epochs: int) -> dict:
    run = work / name
    started = time.perf_counter()
    run_edgeclf("train", str(BUNDLED), "--backbone", name, "--weights", "none", "--img-size", str(img_size), "--epochs",
         str(epochs), "--out", str(run), "--force")
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    proc = run_edgeclf("export", str(run / "model.keras"), "--quantize", "fp32,fp16,dynamic,int8", "--force", ok=(0, 1))
    export_s = time.perf_counter() - started
    metrics = json.loads((run / "metrics.json").read_text())
    report = json.loads((run / "export" / "export_report.json").read_text())
    artefacts = []
    for a in report["artifacts"]:
        fid = a.get("fidelity", {})
        artefacts.append({"file": Path(a["path"]).name, "format": a["format"], "mode": a["mode"],
                          "passed": a["passed"], "size_bytes": a["size_bytes"],
                          **{k: fid.get(k) for k in ("n", "agreement", "agreement_ci95", "max_abs_diff",
                                                     "mean_abs_diff", "accuracy_change_pp")}})
    advice = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("instead of")]
    retried = [_calibrated_on_train(run, a["format"], work) for a in artefacts if a["mode"] == "int8" and not a["passed"]]
    return {"backbone": name, "img_size": img_size, "epochs": epochs, "train_s": round(train_s, 1),
            "export_s": round(export_s, 1), "test_accuracy": _test_accuracy(metrics), "export_exit": proc.returncode,
            "artefacts": artefacts, "advice": advice, "calibrated_on_train": retried}


def _calibrated_on_train(run: Path, fmt: str, work: Path) -> dict:
    """A rejected int8 artefact exported again with int8 ranges fitted to the run's training images (560) instead
    of its validation split (120): does more calibration data rescue it?"""
    calib = work / f"{run.name}-train-images"
    if not calib.exists():
        with open(run / "splits.csv", newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row["split"] == "train":
                    (calib / row["path"]).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(BUNDLED / row["path"], calib / row["path"])
    n = sum(1 for f in calib.rglob("*") if f.is_file())
    out = work / f"{run.name}-train-calibrated"
    run_edgeclf("export", str(run / "model.keras"), "--format", fmt, "--quantize", "int8", "--calib", str(calib),
                "--calib-images", str(n), "--out", str(out), "--force", ok=(0, 1))
    entry = json.loads((out / "export_report.json").read_text())["artifacts"][0]
    fid = entry["fidelity"]
    return {"file": Path(entry["path"]).name, "calibration_images": n, "passed": entry["passed"],
            **{k: fid.get(k) for k in ("n", "agreement", "agreement_ci95", "max_abs_diff", "accuracy_change_pp")}}


def _test_accuracy(metrics: dict) -> float | None:
    return metrics["splits"].get("test", {}).get("accuracy")


def _pct(x) -> str:
    return f"{100 * x:.2f} %" if x is not None else "—"


def markdown(record: dict) -> str:
    m = record["machine"]
    lines = [
        "# Export gate by backbone (Fashion-MNIST 2-class, trained from scratch)", "",
        f"- date {record['date']}; {m['cpu']}, {m['affinity_cores']} cores",
        f"- command: `python benchmarks/lab/export_backbones.py --backbones {','.join(record['backbones'])} "
        f"--img-size {record['img_size']} --epochs {record['epochs']}`",
        "- each backbone trained with `--weights none` on the bundled 800 images (560 train / 120 val / 120 test), "
        "then `edgeclf export --quantize fp32,fp16,dynamic,int8` with the gate on: int8 calibrated on the 120 "
        "validation images, every artefact compared with the Keras model on the 120 test images (gate: 99.9 % "
        "top-1 agreement for fp32/fp16, 98 % for dynamic/int8). Weights trained from scratch for a few epochs are "
        "not an ImageNet-initialised model's: these rows say each artefact converts, runs and what its gate "
        "measured for this model, not what int8 costs a fine-tuned one.", "",
        "| backbone | Keras test acc | artefact | size | agreement (95 % interval) | max abs dp | acc change | gate |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in record["results"]:
        if "error" in r:
            lines.append(f"| {r['backbone']} | failed: {r['error']} | | | | | | |")
            continue
        for a in r["artefacts"]:
            lo, hi = a["agreement_ci95"] or (None, None)
            interval = f" ({_pct(lo)}–{_pct(hi)})" if lo is not None else ""
            change = f"{a['accuracy_change_pp']:+.2f} pp" if a["accuracy_change_pp"] is not None else "—"
            lines.append(f"| {r['backbone']} | {_pct(r['test_accuracy'])} | `{a['file']}` | "
                         f"{a['size_bytes'] / 2**20:.2f} MiB | {_pct(a['agreement'])}{interval} | "
                         f"{a['max_abs_diff']:.4f} | {change} | {'pass' if a['passed'] else '**rejected**'} |")
    advice = [f"- {r['backbone']}: {line}" for r in record["results"] for line in r.get("advice", [])]
    if advice:
        lines += ["", "What `edgeclf export` advised after a rejection:", "", *advice]
    retried = [(r["backbone"], a) for r in record["results"] for a in r.get("calibrated_on_train", [])]
    if retried:
        lines += ["", "Each rejected int8 artefact exported again with its ranges fitted to the run's training images "
                  "(`--calib` on them) instead of its validation split, gated on the same test images:", ""]
        for backbone, a in retried:
            lo, hi = a["agreement_ci95"]
            lines.append(f"- {backbone}: `{a['file']}` calibrated on {a['calibration_images']} images: agreement "
                         f"{_pct(a['agreement'])} ({_pct(lo)}–{_pct(hi)}), max abs dp {a['max_abs_diff']:.4f}, "
                         f"{a['accuracy_change_pp']:+.2f} pp: {'pass' if a['passed'] else 'rejected'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default=",".join(DEFAULT), help="comma-separated [default: %(default)s]")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeclf-export-backbones"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    results = []
    for name in names:
        if (args.work / name).exists():
            shutil.rmtree(args.work / name)
        print(f"{name} ...", flush=True)
        try:
            results.append(export_backbone(name, args.work, img_size=args.img_size, epochs=args.epochs))
        except RuntimeError as exc:  # one failing backbone does not stop the table
            results.append({"backbone": name, "error": str(exc)[:300]})
        print(json.dumps(results[-1])[:300], flush=True)
    record = {"benchmark": "export gate by backbone", "date": time.strftime("%Y-%m-%d"), "backbones": names,
              "img_size": args.img_size, "epochs": args.epochs, "machine": describe(), "results": results}
    write_record(args.results, "export_backbones", record, markdown(record))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
