"""Reference results for ``edgeclf export``.

Six benchmarks, each recorded in ``benchmarks/results/`` with the machine:

- ``fidelity``: export a model trained on the full Fashion-MNIST-10 (``fashion_mnist_train``) to every format and
  mode and gate it on the whole 10,000-image test split: top-1 agreement, accuracy change, size.
- ``speed``: MobileNetV2 at 224 px, int8 vs fp32 TFLite, ``Interpreter.invoke()`` at 2 threads, batch 1 (and 1
  thread, batch 8 for context). The two models are timed in alternating rounds in one process and compared by their
  medians, so machine noise hits both alike.
- ``calibration``: int8 fidelity of one run (default: the MobileNetV2 Fashion-MNIST run) against the number of
  calibration images and the ONNX calibration method, each gated on the whole test split.
- ``variants``: the ``speed`` comparison (2 threads, batch 1) under the settings that could change the int8/fp32
  ratio: per-tensor int8 weights, XNNPACK's latest-features flag, and LiteRT's builtin kernels without XNNPACK.
  Run ``speed`` first (it trains and exports the model).
- ``layers``: where a run's int8 TFLite error comes from (default: the EfficientNet-B0 of ``export_backbones``,
  whose int8 TFLite the gate rejects): TFLite's ``QuantizationDebugger`` error per layer, and the agreement of
  selectively quantised variants that keep some ops in float. Diagnostic: edgeclf exports none of these variants.
- ``reshapes``: what converting Keras ``Reshape`` / ``Flatten`` layers with a constant shape (the export's default,
  ``archive.without_dynamic_reshapes``) changes in the TFLite files of some runs: op and XNNPACK partition counts,
  outputs, and fp32 / int8 latency against the same model traced as Keras traces it, timed interleaved.

    python benchmarks/lab/export_benchmarks.py fidelity --run /tmp/edgeclf-fmnist/run-simple_cnn
    python benchmarks/lab/export_benchmarks.py speed --work /tmp/edgeclf-mnv2
    python benchmarks/lab/export_benchmarks.py calibration --run /tmp/fmnist/run-mobilenet_v2
    python benchmarks/lab/export_benchmarks.py variants --work /tmp/edgeclf-mnv2
    python benchmarks/lab/export_benchmarks.py layers --run /tmp/edgeclf-export-backbones/efficientnet_b0
    python benchmarks/lab/export_benchmarks.py reshapes --runs /tmp/edgeclf-export-backbones/efficientnet_b0
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeclf.benchmarks.machine import EDGECLF, describe, git_commit, write_record

RESULTS = Path(__file__).resolve().parent.parent / "results"
BUNDLED = Path(__file__).resolve().parent.parent / "data" / "fashion-mnist-2class"


def fidelity(run: Path, results: Path) -> bool:
    from edgeclf.toolkit.export import ExportSpec, QuantSpec, export_model

    spec = ExportSpec(quant=(QuantSpec.float32(), QuantSpec.float16(), QuantSpec.dynamic(), QuantSpec.int8()),
                      verify_images=10_000, calibration_images=500)
    started = time.perf_counter()
    artefacts = export_model(run / "model.keras", run / "export", spec=spec, name="fmnist_simple_cnn", force=True)
    wall = time.perf_counter() - started
    fp32 = {a.format: a.size_bytes for a in artefacts if a.mode == "fp32"}
    rows = []
    for a in artefacts:
        f = a.fidelity
        rows.append({"artefact": a.path.name, "format": a.format, "mode": a.mode, "passed": a.passed,
                     "size_bytes": a.size_bytes, "size_vs_fp32": a.size_bytes / fp32[a.format], "n": f["n"],
                     "agreement": f["agreement"], "max_abs_diff": f["max_abs_diff"],
                     "accuracy_keras": f["accuracy_keras"], "accuracy": f["accuracy"],
                     "accuracy_change_pp": f["accuracy_change_pp"], "f1_change_pp": f["f1_change_pp"]})
    int8 = [r for r in rows if r["mode"] == "int8"]
    met = all(r["agreement"] >= 0.99 and r["accuracy_change_pp"] >= -0.5 and r["size_vs_fp32"] <= 0.30 for r in int8)
    record = {"benchmark": "export fidelity, simple_cnn on Fashion-MNIST-10, full test split",
              "target": "int8 TFLite and ONNX: >= 99% top-1 agreement, <= 0.5 pp accuracy drop, <= 30% of fp32 size",
              "met": met, "export_wall_time_s": round(wall, 1), "rows": rows, "machine": describe(),
              "date": time.strftime("%Y-%m-%d")}
    md = ["# Export fidelity: simple_cnn on Fashion-MNIST-10", "",
          f"- date {record['date']}; {record['machine']['cpu']}, {record['machine']['affinity_cores']} cores",
          f"- command: `python benchmarks/lab/export_benchmarks.py fidelity --run {run}`",
          f"- every artefact run through the edge runtime on the {rows[0]['n']} test images and compared with the "
          "Keras model; export wall time " f"{record['export_wall_time_s']} s",
          f"- target ({record['target']}): **{'met' if met else 'NOT met'}**", "",
          "| artefact | size | vs fp32 | top-1 agreement | max abs Δp | accuracy (Keras → artefact) | Δ pp | gate |",
          "|---|---:|---:|---:|---:|---:|---:|---|"]
    md += [f"| {r['artefact']} | {r['size_bytes'] / 1024:.0f} KiB | {100 * r['size_vs_fp32']:.1f}% | "
           f"{100 * r['agreement']:.2f}% | {r['max_abs_diff']:.4f} | {r['accuracy_keras']:.4f} → {r['accuracy']:.4f} | "
           f"{r['accuracy_change_pp']:+.2f} | {'pass' if r['passed'] else 'REJECTED'} |" for r in rows]
    write_record(results, "export_fidelity_fashion_mnist", record, md)
    return met


def _time_rounds(interpreters: dict, rounds: int, per_round: int) -> dict[str, list[float]]:
    times = {name: [] for name in interpreters}
    for _ in range(rounds):
        for name, interp in interpreters.items():  # alternate, so drift and noise hit both models alike
            for _ in range(per_round):
                t = time.perf_counter()
                interp.invoke()
                times[name].append(time.perf_counter() - t)
    return times


def _interpreters(paths: dict, threads: int, batch: int, options: dict | None = None) -> dict:
    """Warmed-up interpreters, one per name in ``paths``; ``options[name]`` adds ``Interpreter`` keyword arguments."""
    from ai_edge_litert.interpreter import Interpreter

    pixels = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
    interpreters = {}
    for mode, path in paths.items():
        interp = Interpreter(model_path=str(path), num_threads=threads, **(options or {}).get(mode, {}))
        inp = interp.get_input_details()[0]
        interp.resize_tensor_input(inp["index"], [batch, 224, 224, 3])
        interp.allocate_tensors()
        interp.set_tensor(inp["index"], pixels.astype(inp["dtype"]))
        for _ in range(10):
            interp.invoke()  # warm-up
        interpreters[mode] = interp
    return interpreters


def speed(work: Path, results: Path, threads: int, rounds: int) -> bool:
    """int8 vs fp32 at ``threads`` threads, batch 1 (the target), plus 1 thread and batch 8 for context."""
    from edgeclf.toolkit.export import ExportSpec, QuantSpec, export_model

    run = work / "run-mobilenet_v2-224"
    if not (run / "model.keras").exists():
        # Latency does not depend on what the weights learned; one epoch on the bundled data gives a real model
        # and real calibration images without ImageNet weights (no internet here).
        subprocess.run([*EDGECLF, "train", str(BUNDLED), "--backbone", "mobilenet_v2", "--weights", "none",
                        "--img-size", "224", "--epochs", "1", "--batch-size", "32", "--no-augment", "--out", str(run),
                        "--force"], check=True)
    artefacts = export_model(run / "model.keras", run / "export", name="mobilenet_v2_224", force=True,
                             spec=ExportSpec(formats=("tflite",), quant=(QuantSpec.float32(), QuantSpec.int8())))
    paths = {a.mode: a.path for a in artefacts}
    configs = list(dict.fromkeys([(threads, 1), (1, 1), (threads, 8), (1, 8)]))
    grid = []
    for t, b in configs:
        times = _time_rounds(_interpreters(paths, t, b), rounds, 10)
        med = {m: statistics.median(v) * 1000 / b for m, v in times.items()}  # per image
        p90 = {m: float(np.percentile(v, 90)) * 1000 / b for m, v in times.items()}
        grid.append({"threads": t, "batch": b, "median_ms_per_image": med, "p90_ms_per_image": p90,
                     "speedup": med["fp32"] / med["int8"], "invocations_per_model": len(times["fp32"])})
    target = grid[0]
    record = {"benchmark": f"MobileNetV2-224 TFLite, int8 vs fp32, Interpreter.invoke() at {threads} threads",
              "target": f"int8 >= 1.8x faster than fp32 (median latency ratio, {threads} threads, batch 1)",
              "threads": threads, "invocations_per_model": target["invocations_per_model"],
              "median_ms": target["median_ms_per_image"], "p90_ms": target["p90_ms_per_image"],
              "speedup": target["speedup"], "met": target["speedup"] >= 1.8, "grid": grid,
              "sizes_bytes": {m: p.stat().st_size for m, p in paths.items()},
              "gate": {a.mode: {"passed": a.passed, "agreement": a.fidelity.get("agreement")} for a in artefacts},
              "machine": describe(), "date": time.strftime("%Y-%m-%d")}
    record["rounds"], record["work"] = rounds, str(work)
    write_record(results, "tflite_int8_speed_mobilenet_v2", record, speed_page(record),
                 history=speed_history_row(record, git_commit()))
    return record["met"]


def speed_page(record: dict) -> list[str]:
    """The speed record's page (its history table is added by ``write_record``)."""
    m, threads, grid = record["machine"], record["threads"], record["grid"]
    md = ["# MobileNetV2-224: int8 vs fp32 TFLite latency", "",
          f"- date {record['date']}; {m['cpu']}, {m['affinity_cores']} cores, instruction sets "
          f"{', '.join(m['instruction_sets'])}; ai-edge-litert {m['versions']['ai-edge-litert']}",
          f"- command: `python benchmarks/lab/export_benchmarks.py speed --work {record.get('work', '/tmp/edgeclf-mnv2')}`",
          f"- per configuration, {record['invocations_per_model']} `invoke()` calls per model in "
          f"{record.get('rounds', 10)} alternating rounds after 10 warm-up calls; milliseconds per image (batch time / "
          "batch size), medians",
          f"- sizes: fp32 {record['sizes_bytes']['fp32'] / 2**20:.2f} MiB, int8 "
          f"{record['sizes_bytes']['int8'] / 2**20:.2f} MiB",
          "", "| threads | batch | fp32 median (p90) | int8 median (p90) | int8 speed-up |",
          "|---:|---:|---:|---:|---:|"]
    for g in grid:
        med, p90 = g["median_ms_per_image"], g["p90_ms_per_image"]
        md.append(f"| {g['threads']} | {g['batch']} | {med['fp32']:.2f} ms ({p90['fp32']:.2f}) | "
                  f"{med['int8']:.2f} ms ({p90['int8']:.2f}) | {g['speedup']:.2f}x |")
    md += ["", f"**int8 speed-up at {threads} threads, batch 1: {record['speedup']:.2f}x** (target >= 1.8x: "
           f"{'met' if record['met'] else 'NOT met'})", "",
           "Which artefact is faster depends on the CPU (int8 gains most with 8-bit dot-product instructions such as "
           "AVX-512 VNNI): the history below keeps every run with its CPU."]
    return md


def speed_history_row(record: dict, commit: str) -> dict:
    """The speed run's row of the history table, with the whole record kept beside it."""
    by_config = {(g["threads"], g["batch"]): g["speedup"] for g in record["grid"]}
    m, t = record["machine"], record["threads"]
    med = record["median_ms"]
    return {"date": record["date"], "commit": commit, "cpu": m["cpu"],
            "instruction sets": ", ".join(m["instruction_sets"]),
            f"{t} threads, batch 1: fp32 / int8 ms": f"{med['fp32']:.2f} / {med['int8']:.2f}",
            "int8 speed-up": f"{record['speedup']:.2f}x",
            "1 thread": f"{by_config[(1, 1)]:.2f}x" if (1, 1) in by_config else "-",
            f"{t} threads, batch 8": f"{by_config[(t, 8)]:.2f}x" if (t, 8) in by_config else "-",
            "record": record}


def _per_tensor_int8(run: Path, out: Path) -> Path:
    """The int8 model converted with one weight scale per tensor instead of per output channel.

    edgeclf exports per-channel int8 (per-tensor costs MobileNets accuracy); the converter's switch for this is a
    private attribute, so it is used here, in a benchmark, and not in the exporter.
    """
    from edgeclf.edge_runtime.preprocess import PreprocessSpec
    from edgeclf.edge_runtime.artifact import read_run_metadata
    from edgeclf.toolkit.evaluate import load_keras_model
    from edgeclf.toolkit.export import QuantSpec
    from edgeclf.toolkit.export.archive import write_saved_model
    from edgeclf.toolkit.export.images import run_split
    from edgeclf.toolkit.export.tflite import make_converter

    meta = read_run_metadata(run / "model.keras")
    calib = run_split(meta, run, "val", PreprocessSpec.from_dict(meta["preprocess"]), 300)
    with tempfile.TemporaryDirectory(prefix="edgeclf-variants-") as tmp:
        saved = Path(tmp) / "saved_model"
        write_saved_model(load_keras_model(run / "model.keras"), saved)
        converter = make_converter(saved, QuantSpec.int8(), calib.batches())  # the exporter's int8 settings
        converter._experimental_disable_per_channel = True
        out.write_bytes(converter.convert())
    return out


def variants(work: Path, results: Path, threads: int, rounds: int) -> bool:
    """int8 vs fp32 at ``threads`` threads, batch 1, under settings that could change the ratio; one process,
    every interpreter timed in alternating rounds. Returns whether any variant reaches 1.8x."""
    from ai_edge_litert.interpreter import OpResolverType

    export = work / "run-mobilenet_v2-224" / "export"
    fp32, int8 = export / "mobilenet_v2_224_fp32.tflite", export / "mobilenet_v2_224_int8.tflite"
    if not (fp32.exists() and int8.exists()):
        raise SystemExit(f"{fp32} and {int8} are needed: run `export_benchmarks speed --work {work}` first.")
    per_tensor = _per_tensor_int8(work / "run-mobilenet_v2-224", work / "mobilenet_v2_224_int8_per_tensor.tflite")
    builtin = {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    latest = {"experimental_default_delegate_latest_features": True}
    # (name, what it is, fp32 path and options, int8 path and options)
    plan = [("default", "as exported, XNNPACK (what edgeclf runs)", {}, {}, int8),
            ("per-tensor int8", "int8 weights with one scale per tensor", {}, {}, per_tensor),
            ("XNNPACK latest features", "experimental_default_delegate_latest_features=True", latest, latest, int8),
            ("builtin kernels", "LiteRT's own kernels, no XNNPACK delegate", builtin, builtin, int8)]
    paths, options = {}, {}
    for name, _, fp32_opts, int8_opts, int8_path in plan:
        paths[f"{name}/fp32"], options[f"{name}/fp32"] = fp32, fp32_opts
        paths[f"{name}/int8"], options[f"{name}/int8"] = int8_path, int8_opts
    times = _time_rounds(_interpreters(paths, threads, 1, options), rounds, 10)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    rows = [{"variant": name, "what": what, "fp32_ms": med[f"{name}/fp32"], "int8_ms": med[f"{name}/int8"],
             "speedup": med[f"{name}/fp32"] / med[f"{name}/int8"]} for name, what, *_ in plan]
    record = {"benchmark": f"MobileNetV2-224 TFLite int8 vs fp32 under other settings, {threads} threads, batch 1",
              "threads": threads, "rounds": rounds, "invocations_per_model": len(times[f"{plan[0][0]}/fp32"]),
              "rows": rows, "met_by_any": any(r["speedup"] >= 1.8 for r in rows), "machine": describe(),
              "date": time.strftime("%Y-%m-%d")}
    record["work"] = str(work)
    write_record(results, "tflite_int8_speed_variants_mobilenet_v2", record, variants_page(record),
                 history=variants_history_row(record, git_commit()))
    return record["met_by_any"]


def variants_page(record: dict) -> list[str]:
    """The variants record's page (its history table is added by ``write_record``)."""
    m, rows = record["machine"], record["rows"]
    md = ["# MobileNetV2-224: int8 vs fp32 TFLite under other settings", "",
          f"- date {record['date']}; {m['cpu']}, {m['affinity_cores']} cores, instruction sets "
          f"{', '.join(m['instruction_sets'])}; ai-edge-litert {m['versions']['ai-edge-litert']}",
          f"- command: `python benchmarks/lab/export_benchmarks.py variants --work {record.get('work', '/tmp/edgeclf-mnv2')}`",
          f"- {record['threads']} threads, batch 1; all {2 * len(rows)} interpreters in one process, timed in "
          f"{record['rounds']} alternating rounds of 10 `invoke()` calls after 10 warm-up calls; medians",
          "- per-tensor int8 is timed only: its accuracy was not gated (this model was trained one epoch, for speed)",
          "", "| variant | what | fp32 median | int8 median | int8 speed-up |", "|---|---|---:|---:|---:|"]
    md += [f"| {r['variant']} | {r['what']} | {r['fp32_ms']:.2f} ms | {r['int8_ms']:.2f} ms | {r['speedup']:.2f}x |"
           for r in rows]
    md += ["", f"**Any variant >= 1.8x: {'yes' if record['met_by_any'] else 'no'}**"]
    return md


def variants_history_row(record: dict, commit: str) -> dict:
    """The variants run's row of the history table, with the whole record kept beside it."""
    best = max(record["rows"], key=lambda r: r["speedup"])
    return {"date": record["date"], "commit": commit, "cpu": record["machine"]["cpu"],
            "instruction sets": ", ".join(record["machine"]["instruction_sets"]),
            "as exported": f"{record['rows'][0]['speedup']:.2f}x", "fastest variant": best["variant"],
            "its speed-up": f"{best['speedup']:.2f}x", "any >= 1.8x": "yes" if record["met_by_any"] else "no",
            "record": record}


def calibration(run: Path, results: Path, sizes: list[int], work: Path) -> bool:
    """int8 fidelity of one run against the number of calibration images and the ONNX calibration method.

    Every variant is gated on the whole test split (10,000 images for Fashion-MNIST) so that differences of a
    tenth of a percent are not sampling noise. Returns whether every variant passed its gate.
    """
    from edgeclf.toolkit.export import ExportSpec, QuantSpec, export_model

    variants = [(n, "minmax", ("tflite", "onnx")) for n in sizes]
    variants += [(sizes[0], m, ("onnx",)) for m in ("entropy", "percentile")]
    rows = []
    for n, method, formats in variants:
        spec = ExportSpec(formats=formats, quant=(QuantSpec.int8(method),), verify_images=10_000,
                          calibration_images=n)
        for a in export_model(run / "model.keras", work / f"{n}-{method}", spec=spec, name=run.name, force=True):
            f = a.fidelity
            rows.append({"format": a.format, "calibration_images": n, "method": method, "n": f["n"],
                         "agreement": f["agreement"], "accuracy_keras": f["accuracy_keras"], "accuracy": f["accuracy"],
                         "accuracy_change_pp": f["accuracy_change_pp"], "passed": a.passed, "reason": a.reason})
    record = {"benchmark": f"int8 fidelity vs calibration set, {run.name}", "run": str(run), "rows": rows,
              "machine": describe(), "date": time.strftime("%Y-%m-%d")}
    md = [f"# int8 fidelity vs calibration: {run.name}", "",
          f"- date {record['date']}; command: `python benchmarks/lab/export_benchmarks.py calibration --run {run} "
          f"--sizes {','.join(map(str, sizes))}`",
          f"- calibration images from the run's validation split; each artefact gated on {rows[0]['n']} test images",
          "", "| format | calibration images | method | top-1 agreement | accuracy (Keras → int8) | Δ pp | gate |",
          "|---|---:|---|---:|---:|---:|---|"]
    md += [f"| {r['format']} | {r['calibration_images']} | {r['method']} | {100 * r['agreement']:.2f}% | "
           f"{r['accuracy_keras']:.4f} → {r['accuracy']:.4f} | {r['accuracy_change_pp']:+.2f} | "
           f"{'pass' if r['passed'] else 'REJECTED'} |" for r in rows]
    write_record(results, f"int8_calibration_{run.name}", record, md)
    return all(r["passed"] for r in rows)

def _tflite_probabilities(content: bytes, pixels: np.ndarray):
    """A TFLite model's (dequantised) outputs on uint8 ``pixels``, one image at a time, float or integer input, at
    2 threads; and the interpreter, warmed up, for timing."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=2)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for x in pixels:
        interpreter.set_tensor(inp["index"], x[None].astype(inp["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"]).astype(np.float32)[0]
        scale, zero = out["quantization"]
        rows.append((y - zero) * scale if scale else y)
    return np.stack(rows), interpreter


def layers(run: Path, results: Path, top: int, rounds: int) -> bool:
    """Where the int8 TFLite error of a run's model arises, and whether keeping some ops in float removes it.

    The per-layer figure is TFLite's ``QuantizationDebugger`` RMSE between each quantised layer's output and the
    float one, over that tensor's quantisation step: about 0.29 (1/sqrt(12)) is a layer adding only its own rounding
    noise, larger ones add more. Variants are converted with the exporter's int8 settings and calibration images
    (300 of the validation split) and compared with the Keras model on the test split, as the gate does. Returns
    whether any variant reaches the 98 % int8 gate.
    """
    import tensorflow as tf

    from edgeclf.edge_runtime.artifact import read_run_metadata
    from edgeclf.edge_runtime.preprocess import PreprocessSpec
    from edgeclf.toolkit.evaluate import load_keras_model
    from edgeclf.toolkit.export import QuantSpec
    from edgeclf.toolkit.export.archive import write_saved_model
    from edgeclf.toolkit.export.images import run_split
    from edgeclf.toolkit.export.tflite import make_converter, representative_dataset
    from edgeclf.toolkit.metrics import wilson_interval

    meta = read_run_metadata(run / "model.keras")
    pre = PreprocessSpec.from_dict(meta["preprocess"])
    calib, test = run_split(meta, run, "val", pre, 300), run_split(meta, run, "test", pre, 1000)
    model = load_keras_model(run / "model.keras")
    reference = model.predict(test.pixels.astype(np.float32), batch_size=64, verbose=0)
    with tempfile.TemporaryDirectory(prefix="edgeclf-layers-") as tmp:
        saved = Path(tmp) / "saved_model"
        write_saved_model(model, saved)

        def debugger(**denylist):
            return tf.lite.experimental.QuantizationDebugger(
                converter=make_converter(saved, QuantSpec.int8(), calib.batches()),
                debug_dataset=representative_dataset(test.head(32).batches()),
                debug_options=tf.lite.experimental.QuantizationDebugOptions(**denylist) if denylist else None)

        full = debugger()
        full.run()
        dump = io.StringIO()
        full.layer_statistics_dump(dump)
        dump.seek(0)
        stats = []
        for row in csv.DictReader(dump):
            scale = float(row["scale"])
            if scale > 0:
                stats.append({"op": row["op_name"], "tensor": row["tensor_name"],
                              "rmse_over_scale": float(row["mean_squared_error"]) ** 0.5 / scale})
        stats.sort(key=lambda r: -r["rmse_over_scale"])
        worst = [r["tensor"] for r in stats[:top]]
        plan = [("fp32", "float, for reference", make_converter(saved, QuantSpec.float32(), None).convert()),
                ("full int8", "every op integer, as `edgeclf export` converts it",
                 make_converter(saved, QuantSpec.int8(), calib.batches()).convert()),
                ("swish and gates in float",
                 "LOGISTIC and MUL ops left float (swish activations, squeeze-excite gates)",
                 debugger(denylisted_ops=["LOGISTIC", "MUL"]).get_nondebug_quantized_model()),
                (f"worst {top} layers in float", f"the {top} layers with the largest error above left float",
                 debugger(denylisted_nodes=worst).get_nondebug_quantized_model()),
                ("only convolutions integer", "LOGISTIC, MUL, ADD, MEAN, SOFTMAX and FULLY_CONNECTED left float",
                 debugger(denylisted_ops=["LOGISTIC", "MUL", "ADD", "MEAN", "SOFTMAX", "FULLY_CONNECTED"])
                 .get_nondebug_quantized_model())]
    rows, interpreters = [], {}
    for name, what, content in plan:
        probs, interpreters[name] = _tflite_probabilities(content, test.pixels)
        rows.append({"variant": name, "what": what, "size_bytes": len(content),
                     "agreement": float((probs.argmax(1) == reference.argmax(1)).mean()),
                     "max_abs_dp": float(np.abs(probs - reference).max())})
    times = _time_rounds(interpreters, rounds, 20)
    for r in rows:
        r["median_invoke_ms"] = 1000 * statistics.median(times[r["variant"]])
        print(r, flush=True)
    values = np.array([r["rmse_over_scale"] for r in stats])
    record = {"benchmark": f"int8 TFLite error by layer and selectively quantised variants, {run.name}",
              "run": str(run), "backbone": meta.get("backbone"), "calibration_images": len(calib),
              "test_images": len(test), "layers": len(stats),
              "rmse_over_scale_quantiles": {q: float(np.quantile(values, q)) for q in (0.1, 0.5, 0.9, 1.0)},
              "worst_layers": stats[:top], "rows": rows, "machine": describe(), "date": time.strftime("%Y-%m-%d")}
    quant = record["rmse_over_scale_quantiles"]
    md = [f"# Where int8 TFLite loses agreement: {run.name} ({meta.get('backbone')})", "",
          f"- date {record['date']}; {record['machine']['cpu']}; command: `python "
          f"benchmarks/lab/export_benchmarks.py layers --run {run}`",
          f"- calibration: {len(calib)} validation images (the exporter's default: up to 300 of them); agreement "
          "with the Keras model "
          f"on {len(test)} test images, as the gate measures it; per-layer error on 32 of them",
          f"- per-layer error (QuantizationDebugger RMSE / quantisation step; 0.29 is rounding alone) over "
          f"{len(stats)} quantised layers: 10 % {quant[0.1]:.2f}, median {quant[0.5]:.2f}, 90 % {quant[0.9]:.2f}, "
          f"max {quant[1.0]:.2f}",
          f"- latency: median `invoke()`, 2 threads, batch 1, every variant in one process, timed in {rounds} "
          "alternating rounds of 20 calls", "",
          "| variant | what | size | top-1 agreement (95 % interval) | max abs dp | median invoke, 2 threads | "
          "speed vs fp32 |", "|---|---|---:|---:|---:|---:|---:|"]
    fp32_ms = rows[0]["median_invoke_ms"]
    for r in rows:
        low, high = wilson_interval(round(r["agreement"] * len(test)), len(test))
        md.append(f"| {r['variant']} | {r['what']} | {r['size_bytes'] / 2**20:.2f} MiB | {100 * r['agreement']:.2f}% "
                  f"({100 * low:.1f}-{100 * high:.1f} %) | {r['max_abs_dp']:.4f} | {r['median_invoke_ms']:.2f} ms | "
                  f"{fp32_ms / r['median_invoke_ms']:.2f}x |")
    passing = [r["variant"] for r in rows[1:] if r["agreement"] >= 0.98]
    md += ["", f"At or above the 98 % int8 gate: {', '.join(passing) if passing else 'none'}."]
    md += ["", f"The {top} layers with the largest error:", "", "| op | tensor | RMSE / step |", "|---|---|---:|"]
    md += [f"| {r['op']} | `{r['tensor'].split(';')[0]}` | {r['rmse_over_scale']:.3f} |" for r in stats[:top]]
    write_record(results, f"int8_layers_{run.name}", record, md)
    return any(r["agreement"] >= 0.98 for r in rows if r["variant"] != "fp32")


def _op_counts(interpreter) -> dict[str, int]:
    names = [op["op_name"] for op in interpreter._get_ops_details()]
    return {"ops": len(names), "SHAPE": names.count("SHAPE"), "partitions": names.count("DELEGATE")}


def reshapes(runs: list[Path], results: Path, rounds: int) -> bool:
    """Each run's fp32 and int8 TFLite traced with Keras' batch-dependent reshapes and with constant ones.

    Returns whether every constant-shape file is one XNNPACK partition with the other's top-1 on every test image.
    """
    from edgeclf.edge_runtime.artifact import read_run_metadata
    from edgeclf.edge_runtime.preprocess import PreprocessSpec
    from edgeclf.toolkit.evaluate import load_keras_model
    from edgeclf.toolkit.export import QuantSpec
    from edgeclf.toolkit.export.archive import write_saved_model
    from edgeclf.toolkit.export.images import run_split
    from edgeclf.toolkit.export.tflite import make_converter

    rows, interpreters = [], {}
    for run in runs:
        meta = read_run_metadata(run / "model.keras")
        pre = PreprocessSpec.from_dict(meta["preprocess"])
        calib, test = run_split(meta, run, "val", pre, 300), run_split(meta, run, "test", pre, 1000)
        model = load_keras_model(run / "model.keras")
        reference = model.predict(test.pixels.astype(np.float32), batch_size=64, verbose=0)
        for quant in (QuantSpec.float32(), QuantSpec.int8()):
            probs = {}
            for static in (False, True):
                with tempfile.TemporaryDirectory(prefix="edgeclf-reshapes-") as tmp:
                    write_saved_model(model, Path(tmp), static_reshapes=static)
                    content = make_converter(tmp, quant, calib.batches() if quant.needs_calibration else None
                                             ).convert()
                name = f"{run.name} {quant.mode} {'constant' if static else 'keras'}"
                probs[static], interpreters[name] = _tflite_probabilities(content, test.pixels)
                rows.append({"run": run.name, "backbone": meta.get("backbone"), "mode": quant.mode,
                             "reshapes": "constant" if static else "keras", "name": name, "size_bytes": len(content),
                             **_op_counts(interpreters[name]), "test_images": len(test),
                             "agreement": float((probs[static].argmax(1) == reference.argmax(1)).mean())})
            rows[-1]["max_abs_diff_vs_keras_trace"] = float(np.abs(probs[True] - probs[False]).max())
            rows[-1]["same_top1_as_keras_trace"] = float((probs[True].argmax(1) == probs[False].argmax(1)).mean())
    times = _time_rounds(interpreters, rounds, 20)
    for r in rows:
        r["median_invoke_ms"] = 1000 * statistics.median(times[r["name"]])
    for keras_row, constant_row in zip(rows[::2], rows[1::2]):
        constant_row["speedup"] = keras_row["median_invoke_ms"] / constant_row["median_invoke_ms"]
        print(keras_row, constant_row, flush=True)
    ok = all(r["partitions"] == 1 and r["same_top1_as_keras_trace"] == 1.0 for r in rows[1::2])
    record = {"benchmark": "TFLite with Keras' batch-dependent reshapes vs constant-shape reshapes",
              "runs": [str(r) for r in runs], "rows": rows, "rounds": rounds,
              "machine": describe(), "date": time.strftime("%Y-%m-%d")}
    md = ["# Constant-shape reshapes in the exported TFLite graph", "",
          f"- date {record['date']}; {record['machine']['cpu']}, {record['machine']['affinity_cores']} cores; "
          f"ai-edge-litert {record['machine']['versions']['ai-edge-litert']}",
          f"- command: `python benchmarks/lab/export_benchmarks.py reshapes --rounds {rounds} --runs "
          f"{','.join(map(str, runs))}`",
          "- each run's model converted twice per mode, as the exporter converts it (int8 calibrated on the run's "
          "validation images): traced as Keras traces `Reshape` / `Flatten` (batch size read at run time: SHAPE, "
          "STRIDED_SLICE, PACK ops) and with constant shapes (`-1` for the batch), what `edgeclf export` now writes",
          f"- outputs compared on the run's test images; latency: median `invoke()`, 2 threads, batch 1, all files "
          f"in one process, timed in {rounds} alternating rounds of 20 calls", "",
          "| run | mode | reshapes | ops | SHAPE ops | XNNPACK partitions | agreement with Keras | max abs dp vs "
          "Keras trace | median invoke | speed-up |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        diff = f"{r['max_abs_diff_vs_keras_trace']:.1e}" if "max_abs_diff_vs_keras_trace" in r else "-"
        speed = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        md.append(f"| {r['run']} ({r['backbone']}) | {r['mode']} | {r['reshapes']} | {r['ops']} | {r['SHAPE']} | "
                  f"{r['partitions']} | {100 * r['agreement']:.2f}% | {diff} | {r['median_invoke_ms']:.3f} ms | "
                  f"{speed} |")
    write_record(results, "tflite_static_reshapes", record, md)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="which", required=True)
    f = sub.add_parser("fidelity", help="export the Fashion-MNIST run and gate it on the full test split")
    f.add_argument("--run", type=Path, default=Path("/tmp/edgeclf-fmnist/run-simple_cnn"))
    s = sub.add_parser("speed", help="MobileNetV2-224 int8 vs fp32 TFLite latency")
    s.add_argument("--work", type=Path, default=Path("/tmp/edgeclf-mnv2"))
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--rounds", type=int, default=10)
    v = sub.add_parser("variants", help="the speed comparison under other converter and runtime settings")
    v.add_argument("--work", type=Path, default=Path("/tmp/edgeclf-mnv2"))
    v.add_argument("--threads", type=int, default=2)
    v.add_argument("--rounds", type=int, default=10)
    c = sub.add_parser("calibration", help="int8 fidelity vs calibration set size and ONNX calibration method")
    c.add_argument("--run", type=Path, default=Path("/tmp/fmnist/run-mobilenet_v2"))
    c.add_argument("--sizes", default="300,1000,3000", help="comma-separated calibration set sizes")
    c.add_argument("--work", type=Path, default=Path("/tmp/edgeclf-calibration"))
    lay = sub.add_parser("layers", help="int8 TFLite error by layer, and variants that keep some ops in float")
    lay.add_argument("--run", type=Path, default=Path("/tmp/edgeclf-export-backbones/efficientnet_b0"))
    lay.add_argument("--top", type=int, default=10, help="how many of the worst layers to list and keep in float")
    lay.add_argument("--rounds", type=int, default=10)
    rs = sub.add_parser("reshapes", help="TFLite partitions and latency with constant-shape vs Keras' reshapes")
    rs.add_argument("--runs", default="/tmp/edgeclf-export-backbones/efficientnet_b0",
                    help="comma-separated run folders")
    rs.add_argument("--rounds", type=int, default=10)
    for p in (f, s, v, c, lay, rs):
        p.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.which == "fidelity":
        ok = fidelity(args.run, args.results)
    elif args.which == "speed":
        ok = speed(args.work, args.results, args.threads, args.rounds)
    elif args.which == "variants":
        ok = variants(args.work, args.results, args.threads, args.rounds)
    elif args.which == "layers":
        ok = layers(args.run, args.results, args.top, args.rounds)
    elif args.which == "reshapes":
        ok = reshapes([Path(r) for r in args.runs.split(",")], args.results, args.rounds)
    else:
        ok = calibration(args.run, args.results, [int(v) for v in args.sizes.split(",")], args.work)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
