"""The notebook way: ``keras.models.load_model`` and ``model.predict`` per image.

    python benchmarks/lab/keras_loop.py MODEL.keras FOLDER
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image


def main(argv=None) -> int:
    import keras

    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("folder")
    args = parser.parse_args(argv)
    model = keras.models.load_model(args.model)
    h, w = model.input_shape[1:3]
    lines = []
    for name in sorted(os.listdir(args.folder)):
        path = os.path.join(args.folder, name)
        x = np.asarray(Image.open(path).convert("RGB").resize((w, h), Image.Resampling.BILINEAR), dtype="float32")
        probs = model.predict(x[None], verbose=0)
        lines.append(f"{path},{int(np.argmax(probs[0]))}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
