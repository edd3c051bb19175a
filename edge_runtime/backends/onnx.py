"""ONNX models through onnxruntime on the CPU."""

from __future__ import annotations

import json
import os

import numpy as np

from ..artifact import METADATA_KEY
from ..errors import DataError, missing_dependency


class OnnxBackend:
    """Runs a ``.onnx`` classifier with float32 pixel input (QDQ models quantise inside the graph)."""

    def __init__(self, path: str | os.PathLike, threads: int):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_dependency("onnxruntime", "runtime", exc) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise DataError(f"Cannot load {path} with onnxruntime: {exc}") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.metadata = json.loads(raw) if raw else None
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        self.input_shape = tuple(int(d) for d in inp.shape[1:])
        self.input_dtype = "float32"

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) pixels 0-255 -> (N, C) float32 probabilities."""
        x = np.ascontiguousarray(pixels, dtype=np.float32)
        return np.asarray(self.session.run(None, {self._input_name: x})[0], dtype=np.float32)
