"""``.tflite`` / ``.onnx`` files made by other tools, adopted with ``edgeclf adopt`` and run by the runtime.

The notebook: Fashion-MNIST's IDX arrays as an RGB model sees them (the grey channel three times), scaled
``x / 127.5 - 1`` as MobileNet-style pipelines do, a small CNN whose last Dense layer outputs logits, plain
``model.fit``. Then the files other tools hand over, made the way their users make them, none with edgeclf:

- ``notebook_float.tflite``: ``model.export`` + ``TFLiteConverter.from_saved_model`` (float input and output);
- ``notebook_uint8.tflite``: the same with full-integer quantisation, uint8 input and output (Teachable Machine's
  "quantized" export), calibrated on 300 training images scaled as the notebook scales them;
- ``notebook_nchw.onnx``: tf2onnx with ``inputs_as_nchw``, channels-first as a PyTorch export takes its input.

Each is adopted (``--labels <10 names> --input-norm tf``, the output kind left to ``auto``) and classifies all
10,000 test images as PNG files through the runtime. They are compared with the notebook's own predictions
(``softmax(model(x / 127.5 - 1))`` on the IDX arrays): the runtime must feed each file what the notebook fed it.

A second notebook is the binary classifier tutorials write: sneaker vs ankle boot, the grey images as they are
(one channel), ``x / 255``, one output logit (``Dense(1)``, ``BinaryCrossentropy(from_logits=True)``). Its float
TFLite and tf2onnx files are adopted with ``--labels sneaker,ankle_boot --input-norm unit`` and compared on the
2,000 test images of those classes with ``sigmoid(model(x / 255))``.

    apt-get install dataset-fashion-mnist
    python benchmarks/lab/adopt_fashion_mnist.py --work /tmp/edgeclf-adopt
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from fashion_mnist import CLASS_NAMES
from foreign_fashion_mnist import (fit_notebook_cnn, notebook_setup, runtime_vs_notebook,
                                                      write_test_pngs)
from edgeclf.benchmarks.machine import describe

CALIBRATION_IMAGES = 300
BINARY = ("sneaker", "ankle_boot")  # negative class first: the unit scores ankle_boot


def _rgb(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) grey -> (N, 28, 28, 3) float, scaled as the notebook scales it."""
    return np.repeat(images[..., None], 3, axis=-1).astype(np.float32) / 127.5 - 1.0


def _float_tflite(model, work: Path, name: str) -> tuple[Path, Path]:
    """``model.export`` (a SavedModel) and ``TFLiteConverter.from_saved_model`` on it, as TFLite users convert:
    returns (the SavedModel folder, the float .tflite file)."""
    import tensorflow as tf

    saved = work / f"{name}_saved_model"
    model.export(str(saved), verbose=False)
    path = work / f"{name}.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())
    return saved, path


def _tf2onnx(model, shape: tuple[int, ...], path: Path, nchw: bool = False) -> Path:
    """tf2onnx's ``from_function`` on the model's inference call (opset 17), channels-first input if ``nchw``."""
    import tensorflow as tf
    import tf2onnx
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    patch_tf2onnx()
    signature = [tf.TensorSpec((None, *shape), tf.float32, name="x")]
    fn = tf.function(lambda x: model(x, training=False), input_signature=signature)
    tf2onnx.convert.from_function(fn, input_signature=signature, opset=17, output_path=str(path),
                                  **({"inputs_as_nchw": ["x:0"]} if nchw else {}))
    return path


def other_tools_files(model_path: Path, calibration: np.ndarray, work: Path) -> dict[str, Path]:
    """The files a TFLite converter user and a tf2onnx user would hand over."""
    import keras
    import tensorflow as tf

    model = keras.models.load_model(model_path)
    saved, float_file = _float_tflite(model, work, "notebook_float")
    files = {"float": float_file, "uint8": work / "notebook_uint8.tflite"}
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in _rgb(calibration))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    files["uint8"].write_bytes(converter.convert())
    files["nchw"] = _tf2onnx(model, (28, 28, 3), work / "notebook_nchw.onnx", nchw=True)
    return files


def binary_gray_files(images: np.ndarray, labels: np.ndarray, epochs: int, work: Path):
    """The binary grayscale notebook: its model (trained here) and the float TFLite and ONNX files of it."""
    import keras

    keep = np.isin(labels, [CLASS_NAMES.index(c) for c in BINARY])
    x = images[keep][..., None].astype(np.float32) / 255.0
    y = (labels[keep] == CLASS_NAMES.index(BINARY[1])).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1),
    ], name="notebook_gray_binary")
    model.compile("adam", keras.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=128, validation_split=0.1, verbose=2)
    files = {"gray_float": _float_tflite(model, work, "notebook_binary_gray")[1],
             "gray_onnx": _tf2onnx(model, (28, 28, 1), work / "notebook_binary_gray.onnx")}
    return model, files


def main(argv: list[str] | None = None) -> int:
    import keras

    from edgeclf.edge_runtime import Classifier
    from edgeclf.edge_runtime.tensor import softmax
    from edgeclf.toolkit.export import ForeignSpec
    from edgeclf.toolkit.export.adopt import adopt

    args, (train_x, train_y), (test_x, test_y) = notebook_setup(argv, __doc__, "/tmp/edgeclf-adopt", epochs=2)
    model_path = args.work / "notebook.keras"
    train_s = fit_notebook_cnn(_rgb(train_x), train_y, args.epochs, model_path, "notebook_rgb_cnn")
    expected = softmax(keras.models.load_model(model_path).predict(_rgb(test_x), batch_size=512, verbose=0))
    notebook_accuracy = float((expected.argmax(1) == test_y).mean())
    files = other_tools_files(model_path, train_x[:CALIBRATION_IMAGES], args.work)
    pngs = [str(p) for p in write_test_pngs(test_x, test_y, args.work / "test")]

    rows = []
    for kind, src in files.items():
        started = time.perf_counter()
        result = adopt(src, args.work / f"adopted_{src.name}", spec=ForeignSpec(CLASS_NAMES, "tf"), force=True)
        adopt_s = time.perf_counter() - started
        meta = result.metadata
        clf = Classifier.load(result.path, threads=2)
        rows.append({
            "file": src.name, "made_by": {"float": "TFLiteConverter", "uint8": "TFLiteConverter, full integer uint8",
                                          "nchw": "tf2onnx inputs_as_nchw"}[kind],
            "size_bytes": src.stat().st_size, "adopt_s": round(adopt_s, 2),
            "input": {k: meta["input"][k] for k in ("shape", "dtype", "layout", "color", "mean", "std")},
            "output_kind_found": meta["output"]["kind"], "mode": meta["quantization"]["mode"],
            **runtime_vs_notebook(clf, pngs, expected, test_y),
        })
    model, binary_files = binary_gray_files(train_x, train_y, args.epochs, args.work)
    test_keep = np.flatnonzero(np.isin(test_y, [CLASS_NAMES.index(c) for c in BINARY]))
    truth = (test_y[test_keep] == CLASS_NAMES.index(BINARY[1])).astype(int)
    logit = model.predict(test_x[test_keep][..., None].astype(np.float32) / 255.0, batch_size=512, verbose=0)[:, 0]
    p_expected = 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))
    binary_accuracy = float(((p_expected >= 0.5) == truth).mean())
    binary_rows = []
    for kind, src in binary_files.items():
        result = adopt(src, args.work / f"adopted_{src.name}", spec=ForeignSpec(BINARY, "unit"), force=True)
        meta = result.metadata
        clf = Classifier.load(result.path, threads=2)
        p = np.stack([c.probabilities for c in clf.classify([pngs[i] for i in test_keep])])[:, 1]
        binary_rows.append({
            "file": src.name, "made_by": {"gray_float": "TFLiteConverter", "gray_onnx": "tf2onnx"}[kind],
            "input": {k: meta["input"][k] for k in ("shape", "layout", "channels", "mean", "std")},
            "output_found": {"kind": meta["output"]["kind"], "units": meta["output"]["units"]},
            "agreement_with_notebook": float(((p >= 0.5) == (p_expected >= 0.5)).mean()),
            "max_abs_diff_vs_notebook": float(np.abs(p - p_expected).max()),
            "accuracy": float(((p >= 0.5) == truth).mean()),
        })
    record = {
        "benchmark": "files made by other tools (TFLiteConverter float and uint8, tf2onnx NCHW) from a notebook model "
                     "(RGB, x/127.5-1, logits), adopted with --labels --input-norm tf; runtime on the 10,000 test "
                     "PNGs vs the notebook's own predictions",
        "date": time.strftime("%Y-%m-%d"), "machine": describe(), "epochs": args.epochs, "train_s": round(train_s, 1),
        "notebook_accuracy": notebook_accuracy, "rows": rows,
        "binary_grayscale": {"classes": list(BINARY), "test_images": int(len(test_keep)),
                             "notebook_accuracy": binary_accuracy, "rows": binary_rows},
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "adopt_fashion_mnist.json").write_text(json.dumps(record, indent=2) + "\n")
    m = record["machine"]
    md = ["# Adopting .tflite / .onnx files made by other tools (Fashion-MNIST, 10 classes)", "",
          f"- date {record['date']}; {m['cpu']}, {m['affinity_cores']} cores; command: "
          "`python benchmarks/lab/adopt_fashion_mnist.py`",
          f"- the notebook: IDX arrays as RGB (grey x3), x/127.5-1, Conv32-Pool-Conv64-Pool-Dense128-Dense10 (logits), "
          f"{args.epochs} epochs of `model.fit` ({record['train_s']} s); test accuracy of its own predictions "
          f"**{notebook_accuracy:.4f}**",
          "- each file adopted with `edgeclf adopt FILE --labels <10 names> --input-norm tf` (output kind: auto), then "
          "all 10,000 test images classified as PNG files through the runtime (`Classifier.classify`, 2 threads) and "
          "compared with the notebook's `softmax(model(x / 127.5 - 1))` on the IDX arrays", "",
          "| file | made by | input found | output found | agreement with the notebook (10,000) | max abs diff p | "
          "accuracy | Δ vs notebook pp | 10k images |",
          "|---|---|---|---|---:|---:|---:|---:|---:|"]
    md += [f"| {r['file']} | {r['made_by']} | {r['input']['layout']} {r['input']['dtype']} {r['input']['shape']} | "
           f"{r['output_kind_found']} | {100 * r['agreement_with_notebook']:.2f}% | "
           f"{r['max_abs_diff_vs_notebook']:.2e} | {r['accuracy']:.4f} | "
           f"{100 * (r['accuracy'] - notebook_accuracy):+.2f} | {r['classify_10k_s']} s |" for r in rows]
    md += ["", f"Binary grayscale notebook ({BINARY[0]} vs {BINARY[1]}, one channel, x/255, one output logit, "
           f"{args.epochs} epochs): test accuracy of its own `sigmoid(model(x / 255))` **{binary_accuracy:.4f}** on "
           f"{len(test_keep)} images; each file adopted with `--labels {','.join(BINARY)} --input-norm unit` (output "
           "kind: auto) and run on the same images as PNG files (the runtime feeds Pillow's luminance and turns the "
           "unit into (1-p, p)).", "",
           "| file | made by | input found | output found | agreement with the notebook | max abs diff p | "
           "accuracy |", "|---|---|---|---|---:|---:|---:|"]
    md += [f"| {r['file']} | {r['made_by']} | {r['input']['layout']} {r['input']['shape']} | "
           f"{r['output_found']['kind']}, {r['output_found']['units']} unit | {100 * r['agreement_with_notebook']:.2f}% | "
           f"{r['max_abs_diff_vs_notebook']:.2e} | {r['accuracy']:.4f} |" for r in binary_rows]
    (args.results / "adopt_fashion_mnist.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
