"""``edgeclf adopt --pad``: a model whose pipeline letterboxed wide images, run by the runtime with and without it.

The images are wide: each Fashion-MNIST image (as RGB, the grey channel three times) stretched by Pillow to 42x28,
as photos from a wide camera would come. The notebook evaluates them the way timm's ``crop_mode="border"`` (at
``crop_pct`` 1) does, written out here by hand: the whole image resized with its aspect ratio kept until its longer
side is 28 (Pillow bilinear: 28x19), centred on a 28x28 canvas filled with the ImageNet mean colour (124, 116, 104),
scaled to 0-1 and normalised with the ImageNet mean and standard deviation (``--input-norm torch``); a small CNN
with a logits output is trained on that with plain ``model.fit``. Its files are made the way such users make them,
none with edgeclf - tf2onnx with a channels-first input and ``TFLiteConverter`` - and each is adopted twice: with
``--pad 124,116,104`` and without (the whole image stretched to the input). All 10,000 test images are classified as
42x28 PNG files through the runtime and compared with the notebook's own predictions; the pixels the runtime feeds
are compared with the pipeline's on every test image.

    apt-get install dataset-fashion-mnist
    python -m edgeclf.benchmarks.adopt_pad_fashion_mnist --work /tmp/edgeclf-adopt-pad
"""

from __future__ import annotations

import sys
import time

import numpy as np

from edgeclf.benchmarks.adopt_crop_fashion_mnist import _normalise, adopt_each, adoption_table, notebook_files
from edgeclf.benchmarks.foreign_fashion_mnist import fit_notebook_cnn, notebook_setup, write_test_pngs
from edgeclf.benchmarks.machine import describe, write_record

SIDE, WIDE = 28, 42  # the model's square input; the width the images are stretched to
FILL = (124, 116, 104)  # timm's border fill: round(255 * IMAGENET_DEFAULT_MEAN)


def widen(images: np.ndarray) -> np.ndarray:
    """The wide "photos": each 28x28 grey image stretched to 42x28 (Pillow bilinear)."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(g).resize((WIDE, SIDE), Image.Resampling.BILINEAR)) for g in images])


def pipeline_pixels(images: np.ndarray) -> np.ndarray:
    """The notebook's pixels before normalisation: timm's ResizeKeepRatio(longest=1) + CenterCropOrPad(fill), as
    Pillow RGB images."""
    from PIL import Image

    out = np.empty((len(images), SIDE, SIDE, 3), np.uint8)
    for i, grey in enumerate(images):
        img = Image.fromarray(grey).convert("RGB")
        ratio = max(img.width / SIDE, img.height / SIDE)
        w, h = round(img.width / ratio), round(img.height / ratio)
        canvas = Image.new("RGB", (SIDE, SIDE), FILL)
        canvas.paste(img.resize((w, h), Image.Resampling.BILINEAR), ((SIDE - w) // 2, (SIDE - h) // 2))
        out[i] = np.asarray(canvas)
    return out


def main(argv: list[str] | None = None) -> int:
    import keras

    from edgeclf.edge_runtime.tensor import softmax

    args, (train_x, train_y), (test_x, test_y) = notebook_setup(argv, __doc__, "/tmp/edgeclf-adopt-pad", epochs=2)
    model_path = args.work / "notebook.keras"
    train_s = fit_notebook_cnn(_normalise(pipeline_pixels(widen(train_x))), train_y, args.epochs, model_path,
                               "notebook_letterboxed_cnn")
    model = keras.models.load_model(model_path)
    wide_test = widen(test_x)
    test_pixels = pipeline_pixels(wide_test)
    expected = softmax(model.predict(_normalise(test_pixels), batch_size=512, verbose=0))
    notebook_accuracy = float((expected.argmax(1) == test_y).mean())
    files = notebook_files(model, (SIDE, SIDE, 3), args.work)
    pngs = [str(p) for p in write_test_pngs(wide_test, test_y, args.work / "test")]
    option = "--pad " + ",".join(map(str, FILL))
    rows = adopt_each(files, [(option, {"pad": FILL}), ("(no --pad)", {})], pngs, test_pixels, expected, test_y,
                      args.work)
    record = {
        "benchmark": "a notebook model evaluated on 42x28 images letterboxed to 28x28 (timm's crop_mode='border', "
                     "ImageNet mean fill) with ImageNet mean/std, its tf2onnx NCHW and TFLite files adopted with and "
                     f"without {option}; runtime on the 10,000 test PNGs vs the notebook's own predictions",
        "date": time.strftime("%Y-%m-%d"), "machine": describe(), "epochs": args.epochs, "train_s": round(train_s, 1),
        "notebook_accuracy": notebook_accuracy, "rows": rows,
    }
    m = record["machine"]
    md = ["# Adopting a letterboxing pipeline's files: `--pad` (Fashion-MNIST stretched to 42x28, 10 classes)", "",
          f"- date {record['date']}; {m['cpu']}, {m['affinity_cores']} cores; command: "
          "`python -m edgeclf.benchmarks.adopt_pad_fashion_mnist`",
          "- the images: IDX arrays stretched to 42x28 (Pillow bilinear), as wide photos; the notebook: each as a "
          "Pillow RGB image resized whole to 28x19, centred on a 28x28 canvas of (124, 116, 104) (timm's "
          "`crop_mode='border'` at `crop_pct` 1), x/255 then ImageNet mean/std, "
          "Conv32-Pool-Conv64-Pool-Dense128-Dense10 (logits), "
          f"{args.epochs} epochs of `model.fit` ({record['train_s']} s); test accuracy of its own predictions "
          f"**{notebook_accuracy:.4f}**",
          "- each file adopted with `edgeclf adopt FILE --labels <10 names> --input-norm torch`, with and without "
          f"`{option}`, then all 10,000 test images classified as 42x28 PNG files through the runtime "
          "(`Classifier.classify`, 2 threads) and compared with the notebook; \"pixels fed\" compares what the "
          "runtime feeds (`Classifier.prepare`) with the notebook's letterboxed pixels on all 10,000", ""]
    write_record(args.results, "adopt_pad_fashion_mnist", record, md + adoption_table(rows, notebook_accuracy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
