"""The baseline a careful engineer writes by hand: LiteRT Interpreter, Pillow draft decoding, one image at a time.

    python benchmarks/lab/minimal_litert_loop.py MODEL.tflite FOLDER [--threads 2]

Prints one ``path,class_index`` line per image. It hard-codes what edgeclf reads from the artefact (RGB, bilinear
resize to the input size, uint8 input) - which is exactly the point of comparing against it.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("folder")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    interp = Interpreter(model_path=args.model, num_threads=args.threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    h, w = int(inp["shape"][1]), int(inp["shape"][2])
    lines = []
    for name in sorted(os.listdir(args.folder)):
        path = os.path.join(args.folder, name)
        with Image.open(path) as img:
            img.draft("RGB", (w, h))
            x = np.asarray(img.convert("RGB").resize((w, h), Image.Resampling.BILINEAR), dtype=inp["dtype"])
        interp.set_tensor(inp["index"], x[None])
        interp.invoke()
        lines.append(f"{path},{int(np.argmax(interp.get_tensor(out['index'])[0]))}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
