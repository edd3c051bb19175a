"""TFLite artefacts: fp32, fp16 weights, dynamic-range and full-integer int8, builtin ops only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from edgeclf.edge_runtime.errors import ExportError
from edgeclf.edge_runtime.native_log import quiet_native_log

from .._deps import import_tf
from .spec import QuantSpec


# The quantiser's C++ side prints its settings on stderr for every int8 conversion.
CONVERTER_NOTICES = ("fully_quantize: ",)


def representative_dataset(batches: Callable[[], Iterable[np.ndarray]]):
    """Adapts calibration batches of uint8 pixels to TFLite's ``representative_dataset``.

    The first sample carries one 0 and one 255 pixel value so that the uint8 input tensor is calibrated to the
    full pixel range: its scale is then exactly 1 and its zero point 0, so raw pixels are the tensor values.
    """

    def gen():
        first = True
        for batch in batches():
            for img in batch:
                x = np.asarray(img, dtype=np.float32)[None].copy()
                if first:
                    x[0, 0, 0, 0], x[0, 0, 1, 0] = 0.0, 255.0
                    first = False
                yield [x]

    return gen


def make_converter(saved_model_dir: str | Path, quant: QuantSpec,
                   calibration: Callable[[], Iterable[np.ndarray]] | None):
    """A ``TFLiteConverter`` set up for ``quant`` (see ``convert``), not yet run.

    Raises:
        ExportError: For int8 without calibration data.
    """
    tf, _ = import_tf()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    # Builtins only: the standalone LiteRT wheels cannot run Flex (SELECT_TF_OPS) kernels, so fail here, not on
    # the device.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quant.mode == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quant.mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quant.mode == "int8":
        if calibration is None:
            raise ExportError("int8 needs calibration images; none were given.")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter


def convert(saved_model_dir: str | Path, quant: QuantSpec, calibration: Callable[[], Iterable[np.ndarray]] | None) -> bytes:
    """Converts the SavedModel to a TFLite flatbuffer.

    Args:
        saved_model_dir: Directory written by ``archive.write_saved_model``.
        quant: The mode. ``int8`` is full-integer with uint8 input and output.
        calibration: Returns an iterable of uint8 pixel batches (int8 only).

    Raises:
        ExportError: If conversion fails or would need TensorFlow (Flex) ops.
    """
    converter = make_converter(saved_model_dir, quant, calibration)
    try:
        with quiet_native_log(CONVERTER_NOTICES):
            return converter.convert()
    except Exception as exc:  # the converter raises ConverterError and plain exceptions
        text = str(exc)
        ops = unsupported_ops(text)
        if ops or "Flex" in text or "flex op" in text or "select TensorFlow op" in text:
            found = ", ".join(ops) if ops else "see --verbose"
            raise ExportError(
                f"The model uses TensorFlow ops that LiteRT's builtin kernels cannot run ({found}), so no standalone "
                "runtime could execute it. Replace the layers that use them, or export ONNX only with --format onnx."
            ) from exc
        raise ExportError(f"TFLite conversion ({quant.mode}) failed: {text[:400]}") from exc


def unsupported_ops(converter_message: str) -> list[str]:
    """Names of the TensorFlow ops a failed conversion could not map to TFLite builtins, in order, without repeats."""
    names = re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", converter_message)
    for line in re.findall(r"^(?:Custom|Flex) ops: (.+)$", converter_message, flags=re.MULTILINE):
        names += [n.strip() for n in line.split(",") if n.strip()]
    return list(dict.fromkeys(names))


def describe_io(data: bytes) -> dict:
    """Input/output dtypes and quantisation parameters of a converted model (read with LiteRT)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    return {
        "input_dtype": np.dtype(inp["dtype"]).name,
        "input_quantization": {"scale": float(inp["quantization"][0]), "zero_point": int(inp["quantization"][1])},
        "output_dtype": np.dtype(out["dtype"]).name,
        "output_quantization": {"scale": float(out["quantization"][0]), "zero_point": int(out["quantization"][1])},
    }
