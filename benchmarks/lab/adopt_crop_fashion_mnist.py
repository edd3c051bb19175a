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
    python benchmarks/lab/adopt_crop_fashion_mnist.py --work /tmp/edgeclf-adopt-crop
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from adopt_fashion_mnist import _float_tflite, _tf2onnx
from fashion_mnist import CLASS_NAMES
from foreign_fashion_mnist import (fit_notebook_cnn, notebook_setup, runtime_vs_notebook,
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


def _adopt_each(files: dict[str, Path], options: list[tuple[str, dict]], pngs: list[str], pipeline: np.ndarray,
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


def adoption_benchmark(argv: list[str] | None, doc: str, name: str, pipeline, images=lambda x: x, *,
                       options: list[tuple[str, dict]], model_name: str, benchmark: str, title: str, notebook: str,
                       adopted: str) -> int:
    """One notebook, its files adopted with and without an option, all 10,000 test images compared.

    The notebook CNN is trained on ``pipeline(images(train images))`` scaled by the ImageNet mean and std; its
    tf2onnx (channels-first) and TFLiteConverter files are adopted with each of ``options`` (as typed ->
    ``ForeignSpec`` keywords); the test images, ``images(test images)``, are written as PNG files and classified
    through the runtime. Writes the record ``name``: ``title`` over lines that say what ``notebook`` did to the
    images and how the files were ``adopted``.
    """
    import keras

    from edgeclf.edge_runtime.tensor import softmax

    args, (train_x, train_y), (test_x, test_y) = notebook_setup(argv, doc, f"/tmp/edgeclf-{name}", epochs=2)
    model_path = args.work / "notebook.keras"
    train_s = fit_notebook_cnn(_normalise(pipeline(images(train_x))), train_y, args.epochs, model_path, model_name)
    model = keras.models.load_model(model_path)
    test_images = images(test_x)
    test_pixels = pipeline(test_images)
    expected = softmax(model.predict(_normalise(test_pixels), batch_size=512, verbose=0))
    notebook_accuracy = float((expected.argmax(1) == test_y).mean())
    files = {"tf2onnx, channels-first input": _tf2onnx(model, test_pixels.shape[1:], args.work / "notebook_nchw.onnx",
                                                       nchw=True),
             "TFLiteConverter": _float_tflite(model, args.work, "notebook_float")[1]}
    pngs = [str(p) for p in write_test_pngs(test_images, test_y, args.work / "test")]
    rows = _adopt_each(files, options, pngs, test_pixels, expected, test_y, args.work)
    record = {"benchmark": benchmark, "date": time.strftime("%Y-%m-%d"), "machine": describe(),
              "epochs": args.epochs, "train_s": round(train_s, 1), "notebook_accuracy": notebook_accuracy,
              "rows": rows}
    m = record["machine"]
    md = [f"# {title}", "",
          f"- date {record['date']}; {m['cpu']}, {m['affinity_cores']} cores; command: "
          f"`python -m edgeclf.benchmarks.{name.replace('-', '_')}_fashion_mnist`",
          f"- {notebook}, x/255 then ImageNet mean/std, Conv32-Pool-Conv64-Pool-Dense128-Dense10 (logits), "
          f"{args.epochs} epochs of `model.fit` ({record['train_s']} s); test accuracy of its own predictions "
          f"**{notebook_accuracy:.4f}**",
          f"- each file adopted with `edgeclf adopt FILE --labels <10 names> --input-norm torch`, {adopted} through "
          "the runtime (`Classifier.classify`, 2 threads) and compared with the notebook; \"pixels fed\" compares "
          "what the runtime feeds (`Classifier.prepare`) with the notebook's pixels on all 10,000", "",
          "| file | made by | adopted with | pixels fed vs the pipeline's: max / mean abs diff | agreement with the "
          "notebook (10,000) | max abs diff p | accuracy | Δ vs notebook pp |",
          "|---|---|---|---:|---:|---:|---:|---:|"]
    md += [f"| {r['file']} | {r['made_by']} | `{r['adopted_with']}` | {r['max_pixel_diff_vs_pipeline']} / "
           f"{r['mean_pixel_diff_vs_pipeline']:.3f} | {100 * r['agreement_with_notebook']:.2f}% | "
           f"{r['max_abs_diff_vs_notebook']:.2e} | {r['accuracy']:.4f} | "
           f"{100 * (r['accuracy'] - notebook_accuracy):+.2f} |" for r in rows]
    write_record(args.results, f"{name.replace('-', '_')}_fashion_mnist", record, md)
    return 0


def main(argv: list[str] | None = None) -> int:
    return adoption_benchmark(
        argv, __doc__, "adopt-crop", pipeline_pixels, options=[("--crop 0.875", {"crop": 0.875}), ("(no --crop)", {})],
        model_name="notebook_cropped_cnn",
        benchmark="a notebook model evaluated with Resize(32) + CenterCrop(28) and ImageNet mean/std, its tf2onnx "
                  "NCHW and TFLite files adopted with and without --crop 0.875; runtime on the 10,000 test PNGs vs "
                  "the notebook's own predictions",
        title="Adopting a centre-cropping pipeline's files: `--crop` (Fashion-MNIST, 10 classes)",
        notebook="the notebook: IDX arrays as Pillow RGB images, `Resize(32)` (bilinear) + `CenterCrop(28)`",
        adopted="with and without `--crop 0.875` (28/32), then all 10,000 test images classified as PNG files")


if __name__ == "__main__":
    sys.exit(main())
