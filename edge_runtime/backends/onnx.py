"""ONNX models through onnxruntime on the CPU."""

from __future__ import annotations

import os

import numpy as np

from ..artifact import METADATA_KEY
from ..errors import DataError, missing_dependency
from ..metadata import parse_metadata


# The input types the backend feeds (numpy's name -> onnxruntime's): edgeclf's exports take float32 pixels 0-255
# (QDQ models quantise inside the graph); adopted models may take float16 (converted to half precision with their
# inputs), float64, or uint8 pixels as they are. Float outputs of any precision are read as float32.
ONNX_INPUT_DTYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "float64": "tensor(double)",
                     "uint8": "tensor(uint8)"}
_NUMPY_DTYPES = {ort_type: name for name, ort_type in ONNX_INPUT_DTYPES.items()}


class OnnxBackend:
    """Runs a ``.onnx`` classifier on onnxruntime's CPU provider."""

    def __init__(self, path: str | os.PathLike, threads: int):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_dependency("onnxruntime", "runtime-onnx", exc) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise DataError(f"Cannot load {path} with onnxruntime: {exc}") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.metadata = parse_metadata(raw, path) if raw else None
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        if not all(isinstance(d, int) for d in inp.shape[1:]):
            raise DataError(f"{path}: its input size is not fixed ({inp.shape}). Adopt it with `edgeclf adopt "
                            "--img-size N` to fix it.")
        self.input_shape = tuple(int(d) for d in inp.shape[1:])
        if inp.type not in _NUMPY_DTYPES:
            raise DataError(f"{path} takes {inp.type} input. Expected one of {', '.join(ONNX_INPUT_DTYPES)}.")
        self.input_dtype = _NUMPY_DTYPES[inp.type]
        self._dtype = np.dtype(self.input_dtype)
        # A model exported with a fixed batch (PyTorch's usual batch of 1) runs a batch in slices of that size.
        self._batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        out_shape = self.session.get_outputs()[0].shape
        width = out_shape[-1] if out_shape else None
        self.output_width = width if isinstance(width, int) and width > 0 else None

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """(N, *input_shape) model input (pixels 0-255 for edgeclf's exports) -> (N, C) float32 outputs."""
        if self._dtype == np.uint8 and pixels.dtype != np.uint8:  # pixels moved (resized, transposed) as floats
            pixels = np.clip(np.rint(pixels), 0, 255)
        x = np.ascontiguousarray(pixels, dtype=self._dtype)
        step = self._batch or len(x)
        if len(x) % step:
            raise DataError(f"This model takes batches of exactly {step} images; received {len(x)}.")
        try:
            parts = [self.session.run(None, {self._input_name: x[i : i + step]})[0] for i in range(0, len(x), step)]
            out = np.asarray(parts[0] if len(parts) == 1 else np.concatenate(parts), dtype=np.float32)
        except Exception:  # onnxruntime's own error types
            if step == 1:
                raise
            out = None  # the graph cannot take this batch at all
        if out is None or len(out) != len(x):
            if step == 1:
                raise DataError(f"The model answers one image with {len(out)} rows of outputs. Expected one.")
            # A graph that fixes its batch inside (a model made elsewhere, reshaping to [1, -1]) fails on a batch or
            # answers it with the wrong number of rows: from now on it gets one image at a time.
            self._batch = 1
            return self.run(pixels)
        return out
