"""``edgeclf adopt``: a ``.tflite`` or ``.onnx`` classifier made elsewhere, given the metadata the runtime reads.

A Teachable Machine or Model Maker ``.tflite``, or a PyTorch model exported to ONNX, takes its training pipeline's
input (``x / 127.5 - 1``, ImageNet mean and std, channels first) and may output logits. Nothing in the file says
which, so the user says it (``--labels``, ``--input-norm``, as ``export`` takes them for a ``.keras`` file) and
adopt writes a copy carrying edgeclf metadata: the input tensor (layout, channel order, mean, std) and output kind
that ``edge_runtime.tensor`` applies, the class names and the preprocessing contract. The graph is left as it is
(an ONNX input whose size is not fixed gets ``--img-size``). There is no source model to gate it against, so the
metadata says so; ``--check DATA`` measures its accuracy on labelled images and checks the label order.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import edgeclf
from edgeclf.edge_runtime.artifact import (METADATA_KEY, artifact_format, read_tflite_metadata, sha256_file,
                                           write_tflite_metadata)
from edgeclf.edge_runtime.backends.onnx import ONNX_INPUT_DTYPES
from edgeclf.edge_runtime.classifier import Classifier
from edgeclf.edge_runtime.errors import ConfigError, DataError
from edgeclf.edge_runtime.metadata import ArtifactMetadata, InputInfo, OutputInfo
from edgeclf.edge_runtime.preprocess import PreprocessSpec
from edgeclf.edge_runtime.support_metadata import read_support_metadata
from edgeclf.edge_runtime.tensor import InputTensor, to_probabilities

from ..io import atomic_path, clean_leftovers, ensure_writable_dir, write_json
from ..progress import Reporter
from .foreign import (ForeignSpec, check_label_count, check_labels, check_probabilities, input_size,
                      label_order_problem, probability_problem)
from .images import folder_images
from .onnx import write_metadata as write_onnx_metadata

logger = logging.getLogger(__name__)
CHECK_IMAGES = 1000  # --check: at most this many labelled images
PROBE_IMAGES = 8  # synthetic images that tell probabilities from logits when no --check data is given
_ONNX_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                   "MatMulInteger"}


@dataclass(frozen=True)
class AdoptResult:
    """The adopted artefact, its metadata, and what ``--check`` measured (None without it)."""

    path: Path
    metadata: ArtifactMetadata
    check: dict | None


@dataclass(frozen=True)
class _ModelIO:
    shape: tuple  # input shape with the batch dimension; None where not fixed
    dtype: str
    quantization: dict | None
    output_shape: tuple
    output_dtype: str
    output_quantization: dict | None
    mode: str
    existing: bool  # already carries edgeclf metadata


def _tflite_io(data: bytes, path: Path) -> _ModelIO:
    from ai_edge_litert.interpreter import Interpreter

    try:
        existing = read_tflite_metadata(data) is not None
        interp = Interpreter(model_content=data)
    except Exception as exc:
        raise DataError(f"{path} is not a readable tflite file ({type(exc).__name__}: {str(exc)[:200]}).") from None
    inp, out = interp.get_input_details(), interp.get_output_details()
    if len(inp) != 1 or len(out) != 1:
        raise ConfigError(f"{path} has {len(inp)} input(s) and {len(out)} output(s). Expected an image classifier "
                          "with one image input and one output.")
    inp, out = inp[0], out[0]
    signature = [int(d) for d in inp.get("shape_signature", inp["shape"])]
    shape = tuple(None if d < 0 else int(s) for d, s in zip(signature, inp["shape"]))
    in_dtype = np.dtype(inp["dtype"])
    dtypes = {np.dtype(t["dtype"]) for t in interp.get_tensor_details()}
    if in_dtype.kind in "iu":
        mode = "int8"
    elif np.dtype(np.float16) in dtypes:
        mode = "fp16"
    elif np.dtype(np.int8) in dtypes:
        mode = "dynamic"
    else:
        mode = "fp32"

    def quant(detail):
        scale, zero_point = detail["quantization"]
        return {"scale": float(scale), "zero_point": int(zero_point)} if scale else None

    return _ModelIO(shape, in_dtype.name, quant(inp), tuple(int(d) for d in out["shape"]),
                    np.dtype(out["dtype"]).name, quant(out), mode, existing)


def _onnx_inputs(model) -> list:
    """The graph's real inputs: older exporters also list the initializers (weights) among them."""
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _onnx_io(model, path: Path) -> _ModelIO:
    import onnx

    inputs = _onnx_inputs(model)
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ConfigError(f"{path} has {len(inputs)} input(s) and {len(model.graph.output)} output(s). Expected an "
                          "image classifier with one image input and one output.")

    def dims(value_info):
        return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in value_info.type.tensor_type.shape.dim)

    def dtype(value_info, what: str, allowed) -> str:
        elem = value_info.type.tensor_type.elem_type
        name = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).name if elem else "undefined"
        if name not in allowed:
            raise ConfigError(f"{path} {'takes' if what == 'input' else 'gives'} {name} {what}. Expected one of "
                              f"{', '.join(allowed)}.")
        return name

    # An integer output carries no scale to turn it back into scores: only float outputs are read.
    in_dtype = dtype(inputs[0], "input", ONNX_INPUT_DTYPES)
    out_dtype = dtype(model.graph.output[0], "output", [t for t in ONNX_INPUT_DTYPES if t.startswith("float")])
    ops = {n.op_type for n in model.graph.node}
    if "DynamicQuantizeLinear" in ops:
        mode = "dynamic"
    elif ops & _ONNX_QUANT_OPS:
        mode = "int8"
    elif any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer):
        mode = "fp16"
    else:
        mode = "fp32"
    existing = any(p.key == METADATA_KEY for p in model.metadata_props)
    return _ModelIO(dims(inputs[0]), in_dtype, None, dims(model.graph.output[0]), out_dtype, None, mode, existing)


def _layout(shape: tuple, path: Path) -> tuple[str, int | None, int | None, int]:
    """``(layout, height, width, channels)`` from an input shape (batch first); one channel is grayscale."""
    if len(shape) == 4 and shape[3] in (1, 3):
        return "NHWC", shape[1], shape[2], shape[3]
    if len(shape) == 4 and shape[1] in (1, 3):
        return "NCHW", shape[2], shape[3], shape[1]
    raise ConfigError(f"{path} takes input of shape {shape}. Expected an image batch: (N, H, W, 3) or (N, 3, H, W), "
                      "or one channel for grayscale.")


def _fix_onnx_size(model, layout: str, height: int, width: int) -> None:
    """Sets the input's height and width where they are not fixed."""
    dims = _onnx_inputs(model)[0].type.tensor_type.shape.dim
    for axis, size in zip((1, 2) if layout == "NHWC" else (2, 3), (height, width)):
        if not (dims[axis].HasField("dim_value") and dims[axis].dim_value > 0):
            dims[axis].Clear()
            dims[axis].dim_value = size


@dataclass(frozen=True)
class _Contract:
    """What the adopted file is told: from the options, or from the file's own TFLite Support metadata."""

    class_names: tuple[str, ...]
    tensor: InputTensor
    input_norm: str  # an --input-norm name, or where the normalisation was read from
    output: str
    resize: str
    crop: float | None = None
    pad: tuple[int, int, int] | None = None

    def preprocess(self, height: int, width: int) -> PreprocessSpec:
        return PreprocessSpec(height, width, resize=self.resize, crop=self.crop, pad=self.pad)


def _contract(spec: ForeignSpec | None, support, layout: str, channels: int, src: Path, reporter: Reporter
              ) -> _Contract:
    """``channels`` 1 (grayscale): the runtime feeds the luminance Pillow's convert("L") computes."""
    if spec is not None:
        contract = _Contract(spec.class_names, spec.input_tensor(layout, channels), spec.describe_norm(), spec.output,
                             spec.resize, spec.crop, spec.pad)
        if support is not None and support.labels and tuple(support.labels) != contract.class_names:
            reporter.warn(f"{src}'s own metadata names its classes {', '.join(support.labels)}; using --labels "
                          f"{', '.join(contract.class_names)} as given.")
        if support is not None and support.mean is not None and not np.allclose(
                (support.mean, support.std), (contract.tensor.mean, contract.tensor.std), rtol=1e-4):
            reporter.warn(f"{src}'s own metadata normalises its input with mean {list(support.mean)} and std "
                          f"{list(support.std)}; using {spec.describe_norm()} as given.")
        return contract
    if support is None or not support.labels or support.mean is None:
        if src.suffix.lower() == ".onnx":
            missing = "is an ONNX file, which does not say what its classes are or how its input is scaled"
        else:
            missing = ("carries no TFLite Support metadata" if support is None else
                       "has TFLite Support metadata without " + (
                           "a labels file" if not support.labels else "an input normalisation"))
            missing += " to read its classes and input scaling from"
        raise ConfigError(f"{src} {missing}. Pass --labels (class names in output order) and --input-norm (how its "
                          "training scaled pixels).")
    tensor = InputTensor(layout, "RGB", support.mean, support.std, channels)
    return _Contract(check_labels(support.labels), tensor,
                     f"from its TFLite Support metadata (mean {list(support.mean)}, std {list(support.std)})",
                     "auto", "bilinear")


def _metadata(src: Path, sha: str, io: _ModelIO, contract: _Contract, h: int, w: int, kind: str, units: int,
              check: dict | None) -> ArtifactMetadata:
    pre = contract.preprocess(h, w)
    tensor = contract.tensor
    return ArtifactMetadata(
        edgeclf_version=edgeclf.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        format=artifact_format(src),
        class_names=tuple(contract.class_names),
        input=InputInfo(shape=tuple(tensor.shape(h, w)), dtype=io.dtype, layout=tensor.layout, color=tensor.color,
                        value_range=(0.0, 255.0), resize=contract.resize, quantization=io.quantization,
                        mean=tuple(tensor.mean), std=tuple(tensor.std), channels=tensor.channels),
        output=OutputInfo(kind=kind, dtype=io.output_dtype, quantization=io.output_quantization, units=units),
        preprocess=pre.to_dict(),
        quantization={"mode": io.mode},
        backbone=None,
        adapter={"adopted": True, "source_input_shape": [None if d is None else int(d) for d in io.shape[1:]],
                 "input_norm": contract.input_norm, "output": kind, "output_units": units,
                 "grayscale": tensor.channels == 1},
        source_model=src.name,
        source_model_sha256=sha,
        fidelity={"verified": False, "reason": "adopted: made outside edgeclf, no source model to compare with",
                  **({"check": check} if check else {})},
        gate={"verified": False, "passed": True, "reason": ""},
    )


def adopt(model_path: str | os.PathLike, out_path: str | os.PathLike | None = None, *, spec: ForeignSpec | None,
          check: str | os.PathLike | None = None, force: bool = False, reporter: Reporter | None = None
          ) -> AdoptResult:
    """Writes a copy of a foreign ``.tflite`` / ``.onnx`` classifier that carries edgeclf metadata.

    Args:
        model_path: The classifier, made outside edgeclf.
        out_path: Where to write the copy; default ``NAME_edgeclf.tflite`` / ``.onnx`` beside it.
        spec: Its class names (in output order), input normalisation, output kind, input size and resize filter.
            None for a ``.tflite`` file whose TFLite Support metadata (Model Maker's) gives its labels and
            normalisation.
        check: Labelled images (any form ``train`` accepts) to measure its accuracy and check the label order on.
        force: Overwrite ``out_path``.
        reporter: Progress and warnings.

    Raises:
        ConfigError: For a model the runtime cannot run as described, or an existing output without ``force``.
        DataError: For an unreadable file or check data.
    """
    reporter = reporter or Reporter()
    src = Path(model_path)
    fmt = artifact_format(src)
    if not src.is_file():
        raise DataError(f"Model not found: {src}.")
    out = _target(src, fmt, out_path, force, reporter)
    model = _read_model(src, fmt)
    contract, h, w, units = _input_and_output(model, spec, src, reporter)
    names = contract.class_names
    pre = contract.preprocess(h, w)
    images = None
    if check is not None:
        reporter.stage(f"Loading check images from {check}")
        images = folder_images(check, list(names), pre, CHECK_IMAGES, warn=reporter.warn)

    with atomic_path(out, suffix=out.suffix) as tmp:
        sha = sha256_file(src)
        kind = "probabilities" if contract.output == "auto" else contract.output
        model.write(_metadata(src, sha, model.io, contract, h, w, kind, units, None), tmp)
        clf = Classifier.load(tmp)  # the runtime reads the copy as predict will
        pixels = images.pixels if images is not None else _probe_images(h, w)
        probs = np.concatenate([clf.backend.run(pixels[i : i + 32]) for i in range(0, len(pixels), 32)])
        if np.isnan(probs).any():
            raise ConfigError(f"{src} outputs NaN on {'the --check' if images is not None else 'probe'} images: "
                              "the file is broken (weights lost in conversion?). Convert the model again.")
        kind, probs = _output_kind(probs, contract, model.io, units, reporter)
        result = _check_result(probs, images, names, reporter)
        meta = _metadata(src, sha, model.io, contract, h, w, kind, units, result)
        model.write(meta, tmp)
        Classifier.load(tmp)  # the final file loads
    write_json(Path(f"{out}.json"), meta.to_dict())
    return AdoptResult(out, meta, result)


def _target(src: Path, fmt: str, out_path, force: bool, reporter: Reporter) -> Path:
    """Where the copy goes (``NAME_edgeclf.EXT`` beside the model by default), refused before any work when it is
    the model itself, of another format, or already there without ``force``."""
    out = Path(out_path) if out_path is not None else src.with_name(f"{src.stem}_edgeclf{src.suffix}")
    if artifact_format(out) != fmt:
        raise ConfigError(f"Received: --out {out} for a .{fmt} model. Expected a .{fmt} file name.")
    if out.resolve() == src.resolve():
        raise ConfigError(f"Received: --out {out}, the model itself. Expected a new file (the original is kept).")
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists. Pass --force to overwrite it.")
    ensure_writable_dir(out.parent)
    clean_leftovers(out.parent, reporter)
    return out


@dataclass
class _ForeignModel:
    """A foreign model file as read: its input/output description, its TFLite bytes or ONNX graph, and the TFLite
    Support metadata it carries (Model Maker's labels and normalisation), if any."""

    fmt: str
    io: _ModelIO
    data: bytes | None = None
    onnx_model: object = None
    support: object = None

    def write(self, meta: ArtifactMetadata, target: Path) -> None:
        """Writes the model with ``meta`` embedded to ``target``."""
        if self.fmt == "tflite":
            target.write_bytes(write_tflite_metadata(self.data, meta))
        else:
            import onnx

            onnx.save(self.onnx_model, str(target))
            write_onnx_metadata(target, meta.to_json(), METADATA_KEY)


def _read_model(src: Path, fmt: str) -> _ForeignModel:
    """Reads the file, refusing one edgeclf already wrote (it carries its metadata: predict with it as it is)."""
    if fmt == "tflite":
        data = src.read_bytes()
        model = _ForeignModel(fmt, _tflite_io(data, src), data=data, support=read_support_metadata(data))
    else:
        import onnx

        try:
            onnx_model = onnx.load(str(src))
        except Exception as exc:
            raise DataError(f"{src} is not a readable onnx file ({type(exc).__name__}: {str(exc)[:200]}).") from None
        model = _ForeignModel(fmt, _onnx_io(onnx_model, src), onnx_model=onnx_model)
    if model.io.existing:
        raise ConfigError(f"{src} already carries edgeclf metadata (it was exported or adopted by edgeclf): "
                          "predict with it as it is.")
    return model


def _input_and_output(model: _ForeignModel, spec: ForeignSpec | None, src: Path,
                      reporter: Reporter) -> tuple[_Contract, int, int, int]:
    """The input contract (from ``spec`` or the file's own metadata), the input size (an ONNX graph with a free
    size is fixed to it; a .tflite file is left as it is, the runtime resizes its input to the size the metadata
    records) and the number of output units, each checked against the file."""
    io = model.io
    layout, h, w, channels = _layout(io.shape, src)
    contract = _contract(spec, model.support, layout, channels, src, reporter)
    if model.fmt == "onnx" and io.dtype == "uint8" and (contract.tensor.mean, contract.tensor.std) != ((0.0,) * 3, (1.0,) * 3):
        raise ConfigError(f"{src} takes uint8 input: pixels 0-255 as they are, which its graph scales itself; "
                          f"the normalisation given was {contract.input_norm}. Pass --input-norm raw.")
    unfixed = h is None or w is None
    h, w = input_size(h, w, spec.img_size if spec is not None else None,
                      f"{src}'s input size is not fixed ({io.shape})")
    if unfixed and model.fmt == "onnx":
        _fix_onnx_size(model.onnx_model, layout, h, w)
    if len(io.output_shape) != 2 or not io.output_shape[1]:
        raise ConfigError(f"{src}'s output has shape {io.output_shape}. Expected (batch, classes).")
    units = int(io.output_shape[1])
    check_label_count(contract.class_names, units)
    return contract, h, w, units


def _output_kind(probs: np.ndarray, contract: _Contract, io: _ModelIO, units: int,
                 reporter: Reporter) -> tuple[str, np.ndarray]:
    """What the outputs are: as given, or with ``--output auto`` probabilities unless the run shows they are not
    (then logits, and ``probs`` turned into probabilities); given probabilities are checked to be so."""
    # a uint8 output rounds each probability to its scale
    q = io.output_quantization
    tolerance = max(1e-3, probs.shape[1] * q["scale"]) if q else 1e-3
    kind = "probabilities" if contract.output == "auto" else contract.output
    if kind == "probabilities" and contract.output == "auto":
        problem = probability_problem(probs, tolerance, tolerance)
        if problem:
            # one unit: the runtime turned p into (1 - p, p); the raw output is the second column
            kind, probs = "logits", to_probabilities(probs[:, 1:] if units == 1 else probs, logits=True)
            reporter.stage(f"Its outputs are not probabilities ({problem}): recorded as logits, which the "
                           f"runtime turns into probabilities with a {'sigmoid' if units == 1 else 'softmax'}")
    elif kind == "probabilities":
        check_probabilities(probs, tolerance, tolerance)
    return kind, probs


def _check_result(probs: np.ndarray, images, names, reporter: Reporter) -> dict | None:
    """Accuracy on labelled check images, and a warning when the labels look like they are in another order."""
    if images is None or images.labels is None:
        return None
    result = {"images": images.origin, "n": int(len(images)),
              "accuracy": float((probs.argmax(1) == images.labels).mean())}
    problem = label_order_problem(probs, images.labels, names, subject="The model")
    if problem:
        reporter.warn(problem)
        result["label_order_problem"] = problem
    return result


def _probe_images(h: int, w: int) -> np.ndarray:
    """Synthetic pixels (mid-grey, black, white, noise): enough to tell softmax outputs from logits."""
    rng = np.random.default_rng(0)
    fixed = [np.full((h, w, 3), v, np.uint8) for v in (128, 0, 255)]
    noise = list(rng.integers(0, 256, (PROBE_IMAGES - len(fixed), h, w, 3), dtype=np.uint8))
    return np.stack(fixed + noise)

