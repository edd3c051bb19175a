"""TFLite models through LiteRT (``ai-edge-litert``), falling back to the older ``tflite-runtime``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..artifact import read_tflite_metadata
from ..errors import DataError, missing_dependency


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise missing_dependency("ai-edge-litert", "runtime", exc) from None
    return Interpreter


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Float values to integer tensor values: round(x / scale) + zero_point, saturated to the dtype."""
    info = np.iinfo(dtype)
    if scale == 1.0 and zero_point == 0 and x.dtype == dtype:
        return x  # raw pixels already are the tensor values
    q = np.rint(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer tensor values to floats: (q - zero_point) * scale."""
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


class LiteRTBackend:
    """Runs a ``.tflite`` classifier; quantised inputs and outputs are converted at this boundary."""

    def __init__(self, path: str | os.PathLike, threads: int):
        Interpreter = _interpreter_class()
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DataError(f"Cannot read {path}: {exc.strerror or exc}") from None
        try:
            self.metadata = read_tflite_metadata(data)
        except Exception:  # not a flatbuffer LiteRT can parse; the interpreter below says why
            self.metadata = None
        try:
            self.interpreter = Interpreter(model_content=data, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise DataError(f"Cannot load {path} with LiteRT: {exc}") from None
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self._in["shape"][1:])
        self.input_dtype = np.dtype(self._in["dtype"]).name
        self._batch = int(self._in["shape"][0])

    def _resize(self, n: int) -> None:
        if n != self._batch:
            self.interpreter.resize_tensor_input(self._in["index"], [n, *self.input_shape])
            self.interpreter.allocate_tensors()
            self._in = self.interpreter.get_input_details()[0]
            self._out = self.interpreter.get_output_details()[0]
            self._batch = n

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) pixels 0-255 -> (N, C) float32 probabilities."""
        self._resize(len(pixels))
        dtype = self._in["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero_point = self._in["quantization"]
            x = quantize(pixels, scale, zero_point, dtype)
        else:
            x = np.asarray(pixels, dtype=dtype)
        self.interpreter.set_tensor(self._in["index"], np.ascontiguousarray(x))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._out["index"])
        if np.issubdtype(y.dtype, np.integer):
            y = dequantize(y, *self._out["quantization"])
        return np.asarray(y, dtype=np.float32)
