"""TFLite models through LiteRT (``ai-edge-litert``), falling back to the older ``tflite-runtime``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..artifact import read_tflite_metadata
from ..errors import DataError, missing_dependency
from ..metadata import MetadataError
from ..native_log import quiet_native_log


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise missing_dependency("ai-edge-litert", "runtime-litert", exc) from None
    return Interpreter


# What LiteRT's C++ logger prints on stderr for every interpreter it builds; no Python API turns it off.
LITERT_NOTICES = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Float values to integer tensor values: round(x / scale) + zero_point, saturated to the dtype."""
    info = np.iinfo(dtype)
    if scale == 1.0 and zero_point == 0 and x.dtype == dtype:
        return x  # raw pixels already are the tensor values
    q = np.rint(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


class LiteRTBackend:
    """Runs a ``.tflite`` classifier; quantised inputs and outputs are converted at this boundary.

    Everything that does not change between calls (tensor indices, dtypes, quantisation parameters) is worked
    out when tensors are allocated, so ``run`` does no more than a hand-written ``invoke()`` loop must.
    """

    def __init__(self, path: str | os.PathLike, threads: int):
        Interpreter = _interpreter_class()
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DataError(f"Cannot read {path}: {exc.strerror or exc}") from None
        try:
            self.metadata = read_tflite_metadata(data, path)
        except MetadataError:
            raise
        except Exception:  # not a flatbuffer LiteRT can parse; the interpreter below says why
            self.metadata = None
        try:
            # model_path lets LiteRT memory-map the file instead of holding a second copy of it.
            with quiet_native_log(LITERT_NOTICES):
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
                inp = self.interpreter.get_input_details()[0]
                size = ((self.metadata or {}).get("input") or {}).get("shape")
                if size and any(d < 0 for d in inp.get("shape_signature", inp["shape"])[1:]):
                    # an adopted model whose input size is not fixed runs at the size its metadata records
                    self.interpreter.resize_tensor_input(inp["index"], [1, *size])
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise DataError(f"Cannot load {path} with LiteRT: {exc}") from None
        self._configure()
        self._one_at_a_time = False
        self.input_shape = tuple(int(d) for d in self._in["shape"][1:])
        self.input_dtype = np.dtype(self._in["dtype"]).name
        width = int(self._out["shape"][-1]) if len(self._out["shape"]) else -1
        self.output_width = width if width > 0 else None

    def _configure(self) -> None:
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        self._batch = int(self._in["shape"][0])
        self._in_index, self._out_index = self._in["index"], self._out["index"]
        self._in_dtype = np.dtype(self._in["dtype"])
        self._in_quant = self._in["quantization"] if self._in_dtype.kind in "iu" else None
        # uint8 input calibrated to the full pixel range (scale 1, zero point 0): raw pixels are the tensor values.
        self._passthrough = self._in_dtype == np.uint8 and tuple(self._in["quantization"]) == (1.0, 0)
        out_dtype = np.dtype(self._out["dtype"])
        if out_dtype.kind in "iu":  # (q - zero_point) * scale as one multiply and one add, in place
            scale, zero_point = self._out["quantization"]
            self._out_scale, self._out_offset = np.float32(scale), np.float32(-zero_point * scale)
        else:
            self._out_scale = None

    def _resize(self, n: int) -> None:
        self.interpreter.resize_tensor_input(self._in_index, [n, *self.input_shape])
        self.interpreter.allocate_tensors()
        self._configure()

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) pixels 0-255 (or an adopted model's own input) -> (N, C) float32 outputs."""
        if self._one_at_a_time and len(pixels) != 1:
            return np.concatenate([self.run(pixels[i : i + 1]) for i in range(len(pixels))])
        try:
            if len(pixels) != self._batch:
                self._resize(len(pixels))
            out = self._invoke(pixels)
        except (RuntimeError, ValueError):
            if len(pixels) == 1:
                raise
            out, self._batch = None, -1  # the graph cannot take this batch at all; resize before the next call
        if out is None or len(out) != len(pixels):
            if len(pixels) == 1:
                raise DataError(f"The model answers one image with {len(out)} rows of outputs. Expected one.")
            # A graph that fixes its batch (a model made elsewhere, reshaping to [1, -1]) fails on a batch or
            # answers it with the wrong number of rows: from now on it gets one image at a time.
            self._one_at_a_time = True
            return self.run(pixels)
        return out

    def _invoke(self, pixels: np.ndarray) -> np.ndarray:
        if self._passthrough and pixels.dtype == np.uint8:
            x = pixels
        elif self._in_quant is not None:
            x = quantize(pixels, *self._in_quant, self._in_dtype)
        else:
            x = pixels.astype(self._in_dtype, copy=False)
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        self.interpreter.set_tensor(self._in_index, x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._out_index)
        if self._out_scale is not None:
            out = np.multiply(y, self._out_scale, dtype=np.float32)
            out += self._out_offset
            return out
        return y.astype(np.float32, copy=False)
