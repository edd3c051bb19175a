"""``edgeclf adopt --crop``: a model whose pipeline centre-cropped, run by the runtime with and without the crop.

The notebook evaluates the way torchvision pipelines do: each Fashion-MNIST image (as RGB, the grey channel three
times) goes through Pillow's ``Resize(32)`` (bilinear) and ``CenterCrop(28)``, is scaled to 0-1 and normalised
with the ImageNet mean and standard deviation (``--input-norm torch``), and a small CNN with a logits output is
trained on that with plain ``model.fit``. Its files are made the way such users make them, none with edgeclf -
tf2onnx with a channels-first input (as a PyTorch export takes it) and ``TFLiteConverter`` - and each is adopted
twice: with ``--crop 0.875`` (28/32: the crop the pipeline made) and without (the whole image resized). All 10,000
test images are classified as PNG files through the runtime and compared with the notebook's own predictions; the
pixels the runtime feeds are compared with the pipeline's on every test image.

    apt-get install dataset-fashion-mnist
    python -m edgeclf.benchmarks.adopt_crop_fashion_mnist --work /tmp/edgeclf-adopt-crop
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from edgeclf.benchmarks.adopt_fashion_mnist import _float_tflite, _tf2onnx
from edgeclf.benchmarks.fashion_mnist import CLASS_NAMES
from edgeclf.benchmarks.foreign_fashion_mnist import (fit_notebook_cnn, notebook_setup, runtime_vs_notebook,
                                                      write_test_pngs)
from edgeclf.benchmarks.machine import describe, write_record

RESIZE, CROP = 32, 28  # torchvision's Resize(32) + CenterCrop(28): the centre 28/32 of the image
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def pipeline_pixels(images: np.ndarray) -> np.ndarray:
    """The notebook's pixels before normalisation: ``Resize(32)`` then ``CenterCrop(28)`` on Pillow RGB images."""
    from PIL import Image

    top = (RESIZE - CROP) // 2
    out = np.empty((len(images), CROP, CROP, 3), np.uint8)
    for i, grey in enumerate(images):
        img = Image.fromarray(grey).convert("RGB").resize((RESIZE, RESIZE), Image.Resampling.BILINEAR)
        out[i] = np.asarray(img.crop((top, top, top + CROP, top + CROP)))
    return out


def _normalise(pixels: np.ndarray) -> np.ndarray:
    return ((pixels / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def adopt_each(files: dict[str, Path], options: list[tuple[str, dict]], pngs: list[str], pipeline: np.ndarray,
               expected: np.ndarray, labels: np.ndarray, work: Path) -> list[dict]:
    """Adopts each of ``files`` (how it was made -> path) with ``--input-norm torch`` and each of ``options`` (as
    typed -> ``ForeignSpec`` keywords), then compares what the runtime feeds with the ``pipeline``'s pixels and
    what it predicts on ``pngs`` with the notebook's ``expected`` probabilities."""
    from edgeclf.edge_runtime import Classifier
    from edgeclf.toolkit.export import ForeignSpec
    from edgeclf.toolkit.export.adopt import adopt

    rows = []
    for made_by, src in files.items():
        for i, (option, fit) in enumerate(options):
            result = adopt(src, work / f"adopted_{i}_{src.name}", force=True,
                           spec=ForeignSpec(CLASS_NAMES, "torch", **fit))
            clf = Classifier.load(result.path, threads=2)
            fed = np.stack([clf.prepare(p) for p in pngs]).astype(int)
            rows.append({
                "file": src.name, "made_by": made_by, "adopted_with": option,
                "preprocess": {k: v for k, v in result.metadata["preprocess"].items() if k in ("crop", "pad")},
                "max_pixel_diff_vs_pipeline": int(np.abs(fed - pipeline).max()),
                "mean_pixel_diff_vs_pipeline": float(np.abs(fed - pipeline).mean()),
                **runtime_vs_notebook(clf, pngs, expected, labels),
            })
            print(rows[-1], flush=True)
    return rows


def adoption_table(rows: list[dict], notebook_accuracy: float) -> list[str]:
    """The Markdown table of ``adopt_each``'s rows."""
    return ["| file | made by | adopted with | pixels fed vs the pipeline's: max / mean abs diff | agreement with the "
            "notebook (10,000) | max abs diff p | accuracy | Δ vs notebook pp |",
            "|---|---|---|---:|---:|---:|---:|---:|"] + [
        f"| {r['file']} | {r['made_by']} | `{r['adopted_with']}` | {r['max_pixel_diff_vs_pipeline']} / "
        f"{r['mean_pixel_diff_vs_pipeline']:.3f} | {100 * r['agreement_with_notebook']:.2f}% | "
        f"{r['max_abs_diff_vs_notebook']:.2e} | {r['accuracy']:.4f} | "
        f"{100 * (r['accuracy'] - notebook_accuracy):+.2f} |" for r in rows]


def notebook_files(model, shape: tuple[int, int, int], work: Path) -> dict[str, Path]:
    """The notebook's files made the way such users make them, none with edgeclf: how each was made -> path."""
    return {"tf2onnx, channels-first input": _tf2onnx(model, shape, work / "notebook_nchw.onnx", nchw=True),
            "TFLiteConverter": _float_tflite(model, work, "notebook_float")[1]}


def main(argv: list[str] | None = None) -> int:
    import keras

    from edgeclf.edge_runtime.tensor import softmax

    args, (train_x, train_y), (test_x, test_y) = notebook_setup(argv, __doc__, "/tmp/edgeclf-adopt-crop", epochs=2)
    model_path = args.work / "notebook.keras"
    train_s = fit_notebook_cnn(_normalise(pipeline_pixels(train_x)), train_y, args.epochs, model_path,
                               "notebook_cropped_cnn")
    model = keras.models.load_model(model_path)
    test_pixels = pipeline_pixels(test_x)
    expected = softmax(model.predict(_normalise(test_pixels), batch_size=512, verbose=0))
    notebook_accuracy = float((expected.argmax(1) == test_y).mean())
    files = notebook_files(model, (CROP, CROP, 3), args.work)
    pngs = [str(p) for p in write_test_pngs(test_x, test_y, args.work / "test")]
    rows = adopt_each(files, [("--crop 0.875", {"crop": 0.875}), ("(no --crop)", {})], pngs, test_pixels, expected,
                      test_y, args.work)
    record = {
        "benchmark": "a notebook model evaluated with Resize(32) + CenterCrop(28) and ImageNet mean/std, its tf2onnx "
                     "NCHW and TFLite files adopted with and without --crop 0.875; runtime on the 10,000 test PNGs "
                     "vs the notebook's own predictions",
        "date": time.strftime("%Y-%m-%d"), "machine": describe(), "epochs": args.epochs, "train_s": round(train_s, 1),
        "notebook_accuracy": notebook_accuracy, "rows": rows,
    }
    m = record["machine"]
    md = ["# Adopting a centre-cropping pipeline's files: `--crop` (Fashion-MNIST, 10 classes)", "",
          f"- date {record['date']}; {m['cpu']}, {m['affinity_cores']} cores; command: "
          "`python -m edgeclf.benchmarks.adopt_crop_fashion_mnist`",
          "- the notebook: IDX arrays as Pillow RGB images, `Resize(32)` (bilinear) + `CenterCrop(28)`, x/255 then "
          "ImageNet mean/std, Conv32-Pool-Conv64-Pool-Dense128-Dense10 (logits), "
          f"{args.epochs} epochs of `model.fit` ({record['train_s']} s); test accuracy of its own predictions "
          f"**{notebook_accuracy:.4f}**",
          "- each file adopted with `edgeclf adopt FILE --labels <10 names> --input-norm torch`, with and without "
          "`--crop 0.875` (28/32), then all 10,000 test images classified as PNG files through the runtime "
          "(`Classifier.classify`, 2 threads) and compared with the notebook; \"pixels fed\" compares what the "
          "runtime feeds (`Classifier.prepare`) with the notebook's cropped pixels on all 10,000", ""]
    write_record(args.results, "adopt_crop_fashion_mnist", record, md + adoption_table(rows, notebook_accuracy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
