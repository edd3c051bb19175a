"""An independent latency measurement: a plain LiteRT ``Interpreter.invoke()`` (or onnxruntime ``run``) loop.

    python benchmarks/lab/invoke_loop.py MODEL IMAGE [--threads 2] [--runs 100] [--min-time 2] [--warmup 10]

Prints one JSON line: ``{"p50_ms": ..., "mean_ms": ..., "runs": ...}``. It shares no code with ``edgeclf bench``
(no edgeclf imports at all): the image is resized with Pillow and fed as the model's input dtype.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
from PIL import Image


def _image(path: str, h: int, w: int, dtype) -> np.ndarray:
    with Image.open(path) as img:
        x = np.asarray(img.convert("RGB").resize((w, h), Image.Resampling.BILINEAR))
    return x[None].astype(dtype)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("image")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=100, help="minimum timed runs")
    parser.add_argument("--min-time", type=float, default=2.0, help="keep timing at least this many seconds")
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)
    if args.model.endswith(".onnx"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        sess = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        dtype = np.uint8 if "uint8" in inp.type else np.float32
        x = _image(args.image, int(inp.shape[1]), int(inp.shape[2]), dtype)
        feed = {inp.name: x}
        step = lambda: sess.run(None, feed)
    else:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=args.model, num_threads=args.threads)
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        x = _image(args.image, int(inp["shape"][1]), int(inp["shape"][2]), inp["dtype"])

        def step():
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            interp.get_tensor(out["index"])

    for _ in range(args.warmup):
        step()
    times = []
    started = time.perf_counter()
    while len(times) < args.runs or time.perf_counter() - started < args.min_time:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    print(json.dumps({"p50_ms": statistics.median(times) * 1000, "mean_ms": statistics.fmean(times) * 1000,
                      "runs": len(times)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
