"""A Keras model trained outside edgeclf, the way a notebook does it, exported with ``--labels`` / ``--input-norm``.

The notebook: Fashion-MNIST's IDX arrays as they are (28x28 grayscale, ``x / 255``), a small CNN whose last Dense
layer outputs logits (``from_logits=True``), trained with plain ``model.fit`` and saved as ``notebook.keras`` with
no ``metadata.json``. edgeclf then exports it (both formats, fp32 and int8) with calibration images from the test
set, and every artefact classifies all 10,000 test images as PNG files through the runtime. They are compared with
the notebook's own predictions (``softmax(model(x / 255))`` on the IDX arrays): the adapter edgeclf wraps round the
model (RGB -> luminance, x/255, softmax) must reproduce the notebook's pipeline, not just agree with itself.

    apt-get install dataset-fashion-mnist
    python benchmarks/lab/foreign_fashion_mnist.py --work /tmp/edgeclf-foreign
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fashion_mnist import CLASS_NAMES, DEFAULT_SOURCE, load
from edgeclf.benchmarks.machine import describe

RESULTS = Path(__file__).resolve().parent.parent / "results"


def fit_notebook_cnn(x: np.ndarray, labels: np.ndarray, epochs: int, path: Path, name: str,
                     dropout: float = 0.0) -> float:
    """What a tutorial does: a small CNN on ``x`` (scaled as its pipeline scales it) with a logits output, ``fit``,
    ``save``. Returns seconds taken."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(x.shape[1:]),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), *([keras.layers.Dropout(dropout)] if dropout else []),
        keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10),
    ], name=name)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(x, labels, epochs=epochs, batch_size=128, validation_split=0.1, verbose=2)
    model.save(path)
    return time.perf_counter() - started


def notebook_probabilities(path: Path, images: np.ndarray) -> np.ndarray:
    import keras

    from edgeclf.edge_runtime.tensor import softmax

    return softmax(keras.models.load_model(path).predict(images[..., None] / 255.0, batch_size=512, verbose=0))


def runtime_vs_notebook(clf, paths, expected: np.ndarray, labels: np.ndarray) -> dict:
    """Classifies ``paths`` through the runtime and compares with the notebook's own probabilities ``expected``:
    top-1 agreement, the largest probability difference, accuracy on ``labels`` and the time it took."""
    started = time.perf_counter()
    probs = np.stack([c.probabilities for c in clf.classify([str(p) for p in paths])])
    wall = time.perf_counter() - started
    return {"agreement_with_notebook": float((probs.argmax(1) == expected.argmax(1)).mean()),
            "max_abs_diff_vs_notebook": float(np.abs(probs - expected).max()),
            "accuracy": float((probs.argmax(1) == labels).mean()), "classify_10k_s": round(wall, 2)}


def write_test_pngs(images: np.ndarray, labels: np.ndarray, root: Path) -> list[Path]:
    """``root/<class>/<index>.png``, lossless, in the test set's order."""
    from PIL import Image

    paths = []
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / CLASS_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(folder / f"test_{i:05d}.png")
        if not paths[-1].exists():
            Image.fromarray(img).save(paths[-1])
    return paths


def notebook_setup(argv: list[str] | None, doc: str, work: str, epochs: int):
    """The options the notebook benchmarks take; returns them, Fashion-MNIST's train and test arrays."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="folder with Fashion-MNIST's IDX files")
    parser.add_argument("--work", type=Path, default=Path(work))
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    data = load(args.source)
    args.work.mkdir(parents=True, exist_ok=True)
    return args, data["train"], data["test"]


def main(argv: list[str] | None = None) -> int:
    from edgeclf.edge_runtime import Classifier
    from edgeclf.toolkit.export import ExportSpec, ForeignSpec, export_model

    args, (train_x, train_y), (test_x, test_y) = notebook_setup(argv, __doc__, "/tmp/edgeclf-foreign", epochs=3)
    model_path = args.work / "notebook.keras"
    train_s = fit_notebook_cnn(train_x[..., None] / 255.0, train_y, args.epochs, model_path, "notebook_cnn",
                               dropout=0.3)
    expected = notebook_probabilities(model_path, test_x)
    files = write_test_pngs(test_x, test_y, args.work / "test")

    out = args.work / "export"
    started = time.perf_counter()
    results = export_model(model_path, out, spec=ExportSpec(), calib=args.work / "test",
                           foreign=ForeignSpec(CLASS_NAMES, "unit"), force=True)
    export_s = time.perf_counter() - started
    sizes = {r.path.name: r.size_bytes for r in results}

    rows = []
    for r in results:
        clf = Classifier.load(r.path, threads=2)
        fp32 = sizes[r.path.name.replace("_int8", "_fp32")]
        rows.append({
            "artefact": r.path.name, "passed": r.passed, "size_bytes": r.size_bytes,
            "size_vs_fp32": r.size_bytes / fp32, "gate_n": r.fidelity.get("n"),
            "gate_agreement": r.fidelity.get("agreement"),
            "gate_accuracy_change_pp": r.fidelity.get("accuracy_change_pp"),
            **runtime_vs_notebook(clf, files, expected, test_y),
        })
    notebook_accuracy = float((expected.argmax(1) == test_y).mean())
    report = json.loads((out / "export_report.json").read_text())
    record = {
        "benchmark": "a Keras model trained outside edgeclf (grayscale, x/255, logits) exported with --labels and "
                     "--input-norm; runtime on the 10,000 test PNGs vs the notebook's own predictions",
        "date": time.strftime("%Y-%m-%d"), "machine": describe(), "epochs": args.epochs,
        "train_s": round(train_s, 1), "export_s": round(export_s, 1), "notebook_accuracy": notebook_accuracy,
        "calibration": report["calibration"], "verification": report["verification"],
        "adapter": json.loads(Path(f"{results[0].path}.json").read_text())["adapter"], "rows": rows,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "foreign_fashion_mnist.json").write_text(json.dumps(record, indent=2) + "\n")
    m = record["machine"]
    md = ["# Exporting a Keras model trained outside edgeclf (Fashion-MNIST, 10 classes)", "",
          f"- date {record['date']}; {m['cpu']}, {m['affinity_cores']} cores; command: "
          "`python benchmarks/lab/foreign_fashion_mnist.py`",
          f"- the notebook: 28x28 grayscale IDX arrays, x/255, Conv32-Pool-Conv64-Pool-Dense128-Dense10 (logits), "
          f"{args.epochs} epochs of `model.fit` ({record['train_s']} s); test accuracy of its own predictions "
          f"**{notebook_accuracy:.4f}**",
          f"- exported with `--labels <10 names> --input-norm unit --calib TEST_PNGS` in {record['export_s']} s; "
          f"adapter read from the model: `{json.dumps(record['adapter'])}`",
          f"- calibration: {record['calibration']}; gate: {record['verification']}",
          "- then every artefact classified all 10,000 test images as PNG files through the runtime "
          "(`Classifier.classify`, 2 threads), compared with the notebook's `softmax(model(x / 255))` on the IDX "
          "arrays", "",
          "| artefact | gate | size | vs fp32 | gate agreement | agreement with the notebook (10,000) | "
          "max abs diff p | accuracy | Δ vs notebook pp |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    md += [f"| {r['artefact']} | {'pass' if r['passed'] else 'REJECTED'} | {r['size_bytes'] / 1024:.0f} KiB | "
           f"{100 * r['size_vs_fp32']:.1f}% | {100 * r['gate_agreement']:.2f}% ({r['gate_n']}) | "
           f"{100 * r['agreement_with_notebook']:.2f}% | {r['max_abs_diff_vs_notebook']:.2e} | {r['accuracy']:.4f} | "
           f"{100 * (r['accuracy'] - notebook_accuracy):+.2f} |" for r in rows]
    (args.results / "foreign_fashion_mnist.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
