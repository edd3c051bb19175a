"""ONNX artefacts: fp32 through tf2onnx (opset >= 17, dynamic batch), int8 by onnxruntime static quantisation."""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from edgeclf.edge_runtime.backends import needs_reduce_range
from edgeclf.edge_runtime.errors import missing_dependency

from .._deps import import_tf
from .archive import INPUT_NAME, concrete_function
from .spec import QuantSpec
from edgeclf.edge_runtime.errors import ExportError

logger = logging.getLogger(__name__)


def convert_fp32(model, out_path: str | Path, opset: int) -> None:
    """Writes the Keras model's inference function as ONNX with a dynamic batch dimension."""
    try:
        import tf2onnx
    except ImportError as exc:
        raise missing_dependency("tf2onnx", "train", exc) from None
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    fn, signature = concrete_function(model)
    with warnings.catch_warnings():
        # The patch probes ``hasattr(np, "object")``, which makes NumPy 2 print a FutureWarning for nothing.
        warnings.filterwarnings("ignore", message=".*np\\.object", category=FutureWarning)
        patch_tf2onnx()  # numpy >= 2 compatibility, as Keras' own ONNX export does
    try:
        _from_function(tf2onnx, fn, signature, opset, out_path)
    except Exception as exc:
        raise ExportError(f"ONNX conversion failed: {str(exc)[:400]}") from None


def _from_function(tf2onnx, fn, signature, opset: int, out_path: str | Path) -> None:
    """``tf2onnx.convert.from_function`` with the signature's tensors as the only graph inputs.

    tf2onnx takes every non-resource input of the traced function for a model input, the constants the function
    captures among them: a Keras ``Normalization`` layer's mean and variance (EfficientNet's first layers) became
    two more ONNX inputs, and onnxruntime refused to run the model without them. Freezing turns those captures into
    constants, so only the signature's own inputs are named here.
    """
    tf, _ = import_tf()
    concrete = fn.get_concrete_function(*signature)
    inputs = concrete.inputs[: len(tf.nest.flatten(concrete.structured_input_signature))]
    input_names = [t.name for t in inputs if t.dtype != tf.dtypes.resource]
    output_names = [t.name for t in concrete.outputs if t.dtype != tf.dtypes.resource]
    renames = tf2onnx.convert.tensor_names_from_structed(concrete, input_names, output_names)
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)  # from_graph_def freezes with TF1 functions, each deprecated in three lines
    try:
        with tf.device("/cpu:0"):
            frozen = tf2onnx.tf_loader.from_function(concrete, input_names, output_names)
        tf2onnx.convert.from_graph_def(frozen, name=concrete.name, input_names=input_names,
                                       output_names=output_names, opset=opset, tensors_to_rename=renames,
                                       output_path=str(out_path))
    finally:
        tf_logger.setLevel(level)


class _Reader:
    """Adapts calibration batches to onnxruntime's ``CalibrationDataReader``."""

    def __init__(self, batches: Callable[[], Iterable[np.ndarray]], input_name: str):
        self._it = iter(batches())
        self._name = input_name

    def get_next(self):
        batch = next(self._it, None)
        return None if batch is None else {self._name: np.asarray(batch, dtype=np.float32)}


def quantize_int8(fp32_path: str | Path, out_path: str | Path, quant: QuantSpec,
                  calibration: Callable[[], Iterable[np.ndarray]]) -> dict:
    """Static QDQ int8 quantisation of an fp32 ONNX model with onnxruntime.

    Runs ``quant_pre_process`` (shape inference and graph optimisation) first, then quantises with per-channel
    weights and the chosen calibration method; 7-bit weights when ``quant.reduce_range`` says so, or, when it is
    None, when this machine is an x86 CPU without VNNI.

    Returns:
        The quantisation settings used (recorded in the metadata).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if quant.calibration_method != "minmax":
        # Histogram calibrators stack every batch's outputs and fail when the last batch is smaller
        # (onnxruntime#18792): feed them one image at a time so all shapes match.
        batches = calibration
        calibration = lambda: (img[None] for batch in batches() for img in batch)  # noqa: E731
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[quant.calibration_method]
    reduce = needs_reduce_range() if quant.reduce_range is None else quant.reduce_range
    with tempfile.TemporaryDirectory(dir=Path(out_path).parent) as tmp:  # inside export's own working folder
        prepped = Path(tmp) / "prepped.onnx"
        pre_processed = True
        try:
            # ONNX shape inference and graph optimisation; symbolic shape inference (which needs sympy) only
            # matters for dynamic spatial shapes, and edgeclf models have fixed ones.
            quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
        except Exception as exc:
            logger.warning("quant_pre_process failed (%s); quantising the model without it", exc)
            prepped, pre_processed = Path(fp32_path), False
        try:
            quantize_static(str(prepped), str(out_path), _Reader(calibration, INPUT_NAME),
                            quant_format=QuantFormat.QDQ, per_channel=quant.per_channel, reduce_range=reduce,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method)
        except Exception as exc:
            raise ExportError(f"ONNX int8 quantisation failed: {str(exc)[:400]}") from None
    return {"format": "QDQ", "pre_processed": pre_processed, "activations": "uint8", "weights": "int8", "per_channel": quant.per_channel,
            "reduce_range": reduce, "reduce_range_from": "this CPU" if quant.reduce_range is None else "--reduce-range",
            "calibration_method": quant.calibration_method}


def write_metadata(path: str | Path, meta_json: str, key: str) -> None:
    """Stores ``meta_json`` in the model's ``metadata_props`` under ``key`` (in place)."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props[key] = meta_json
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
