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
    python benchmarks/lab/adopt_pad_fashion_mnist.py --work /tmp/edgeclf-adopt-pad
"""

from __future__ import annotations

import sys

import numpy as np

from adopt_crop_fashion_mnist import adoption_benchmark

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
    option = "--pad " + ",".join(map(str, FILL))
    return adoption_benchmark(
        argv, __doc__, "adopt-pad", pipeline_pixels, widen, options=[(option, {"pad": FILL}), ("(no --pad)", {})],
        model_name="notebook_letterboxed_cnn",
        benchmark="a notebook model evaluated on 42x28 images letterboxed to 28x28 (timm's crop_mode='border', "
                  "ImageNet mean fill) with ImageNet mean/std, its tf2onnx NCHW and TFLite files adopted with and "
                  f"without {option}; runtime on the 10,000 test PNGs vs the notebook's own predictions",
        title="Adopting a letterboxing pipeline's files: `--pad` (Fashion-MNIST stretched to 42x28, 10 classes)",
        notebook="the images: IDX arrays stretched to 42x28 (Pillow bilinear), as wide photos; the notebook: each as "
                 "a Pillow RGB image resized whole to 28x19, centred on a 28x28 canvas of (124, 116, 104) (timm's "
                 "`crop_mode='border'` at `crop_pct` 1)",
        adopted=f"with and without `{option}`, then all 10,000 test images classified as 42x28 PNG files")


if __name__ == "__main__":
    sys.exit(main())
