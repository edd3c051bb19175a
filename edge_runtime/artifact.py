"""Metadata carried inside exported artefacts: a JSON document under the key ``edgeclf``.

TFLite: an entry of the flatbuffer's ``metadata`` table pointing at a buffer. ONNX: ``metadata_props``.
Reading needs only the runtime's own libraries (the LiteRT wheel's flatbuffer schema, or onnxruntime). Also the
``metadata.json`` a training run writes beside its ``model.keras``, and the SHA-256 that ties files to each other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ConfigError, DataError, EdgeclfError, missing_dependency
from .flatbuf import tflite_metadata_buffer, tflite_output_width
from .metadata import ArtifactMetadata, MetadataError, check_metadata, parse_metadata

METADATA_KEY = "edgeclf"
NO_METADATA = ("{path} carries no edgeclf metadata. Export it with `edgeclf export`, or adopt a model made elsewhere "
               "with `edgeclf adopt {path} --labels ... --input-norm ...`, so that it describes itself.")
FORMATS = {".tflite": "tflite", ".onnx": "onnx"}


REJECTED = ".rejected"  # what export appends to an artefact that failed its fidelity gate


def files_in_run(folder: str | os.PathLike, endings: tuple[str, ...]) -> list[Path]:
    """The files in ``folder`` and in its ``export/`` folder (a run directory) whose names end with one of
    ``endings`` (in any case), each folder's in name order."""
    folder = Path(folder)
    return [f for d in (folder, folder / "export") if d.is_dir() for f in sorted(d.iterdir())
            if f.is_file() and f.name.lower().endswith(endings)]


def check_keras_file(path: Path) -> None:
    """Refuses a path that is not an existing ``.keras`` file, saying what it is instead.

    Raises:
        ConfigError: For a missing file, a legacy HDF5 model or another type.
    """
    if not path.is_file():
        raise ConfigError(f"Model not found: {path}. Expected a .keras model file.")
    if path.suffix.lower() in (".h5", ".hdf5"):
        raise ConfigError(f"Received: {path}, a legacy HDF5 model, which cannot be loaded with Keras' safe_mode. "
                          "Re-save it in the Keras that trained it: "
                          f"load_model('{path.name}').save('{path.stem}.keras').")
    if path.suffix != ".keras":
        raise ConfigError(f"Received: {path}. Expected a .keras model file (exported .tflite/.onnx files are for "
                          "`edgeclf predict` and `edgeclf bench`).")


def read_run_metadata(model_path: str | os.PathLike) -> dict:
    """Reads the ``metadata.json`` written beside a trained ``model.keras``.

    Raises:
        ConfigError: If ``model_path`` is missing or not a ``.keras`` file, or has no metadata beside it.
        DataError: If the metadata is unreadable.
    """
    check_keras_file(Path(model_path))
    path = Path(model_path).with_name("metadata.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path} not found: {Path(model_path).name} is not from `edgeclf train`, whose metadata.json gives the "
            "class names and input. For a Keras model trained elsewhere, pass --labels (its class names in output "
            "order) and --input-norm (how its pixels were scaled)."
        ) from None
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from None


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    import hashlib  # here, not at the top: it loads OpenSSL, 3.7 MiB of resident memory `predict` does not need

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_format(path: str | os.PathLike, *, rejected: bool = False) -> str:
    """``"tflite"`` or ``"onnx"`` from the file suffix.

    Args:
        path: The artefact.
        rejected: Also take a ``NAME.tflite.rejected`` / ``NAME.onnx.rejected`` file left by a failed gate.

    Raises:
        ConfigError: For any other suffix.
    """
    path = Path(path)
    if rejected and path.name.lower().endswith(REJECTED):
        path = path.with_name(path.name[: -len(REJECTED)])
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None and path.suffix.lower() in (".keras", ".h5", ".hdf5"):
        raise ConfigError(f"Received: {path}, a Keras model. Expected a .tflite or .onnx file: export it first with "
                          f"`edgeclf export {path}`, or use `edgeclf evaluate {path} DATA` to score the Keras model "
                          "itself on labelled images.")
    if fmt is None:
        raise ConfigError(f"Received: {path}. Expected a .tflite or .onnx file"
                          + (f" (or one that export left as {REJECTED})." if rejected else "."))
    return fmt


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:
        raise missing_dependency("ai-edge-litert", "runtime-litert", exc) from None
    return schema


def read_tflite_metadata(data: bytes, source: str | os.PathLike = "the model") -> dict | None:
    """The ``edgeclf`` metadata of a TFLite flatbuffer, checked (``metadata.parse_metadata``), or None when it has
    none.

    Reads the few flatbuffer fields it needs (``flatbuf``), without importing the 6 MB schema module.

    Raises:
        MetadataError: For metadata that is too large, malformed or incomplete.
    """
    raw = tflite_metadata_buffer(data, METADATA_KEY)
    return parse_metadata(bytes(raw), source) if raw else None


def write_tflite_metadata(data: bytes, meta: ArtifactMetadata | dict) -> bytes:
    """A copy of the TFLite model describing itself twice, from the one metadata ``meta``: edgeclf's own entry
    (``edgeclf``, what edgeclf's runtime reads) and TFLite Support metadata with its labels file packed in
    (``support_metadata``, what MediaPipe Tasks and the TFLite Task Library read). Earlier entries of either kind,
    and files packed in before, are replaced.

    Where the schema cannot describe the input (BGR, channels-first), only edgeclf's entry is written: a consumer
    that fed the wrong channels would score every image wrongly without a word. Export and adopt pass the typed
    ``ArtifactMetadata``; a dict (a tool or test crafting a file) is written as given, with TFLite Support metadata
    only if it passes the runtime's checks.
    """
    import numpy as np

    from .support_metadata import SUPPORT_METADATA, build_support_metadata, pack_labels, strip_packed_files, \
        support_metadata_for

    payload = (meta.to_json() if isinstance(meta, ArtifactMetadata) else json.dumps(meta, sort_keys=True)).encode()
    if not isinstance(meta, ArtifactMetadata):
        try:  # a dict is written as given; it is described to other consumers only if it is sound metadata
            meta = ArtifactMetadata.from_dict(meta, "the metadata to write")
        except MetadataError:
            meta = None
    schema = _schema()
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(strip_packed_files(data)))
    ours = [m for m in model.metadata or [] if (m.name.decode() if isinstance(m.name, bytes) else m.name)
            in (METADATA_KEY, SUPPORT_METADATA)]
    for old in ours:
        model.buffers[old.buffer].data = None  # no orphaned copy left in the file
    model.metadata = [m for m in model.metadata or [] if m not in ours]
    support = support_metadata_for(meta)[0] if meta is not None else None
    entries = [(METADATA_KEY, payload)]
    if support is not None:
        entries.append((SUPPORT_METADATA, build_support_metadata(support)))
    for name, payload in entries:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(payload, dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    out = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return pack_labels(out, support) if support is not None else out


def read_metadata(path: str | os.PathLike, *, rejected: bool = False) -> dict:
    """The metadata embedded in an exported ``.tflite`` or ``.onnx`` file.

    Args:
        path: The artefact.
        rejected: Also read a file that export left as ``*.rejected``.

    Raises:
        DataError: If the file has no edgeclf metadata (it was not exported by edgeclf).
    """
    path = Path(path)
    fmt = artifact_format(path, rejected=rejected)
    if not path.is_file():
        raise DataError(f"Model not found: {path}.")
    try:
        if fmt == "tflite":
            data = path.read_bytes()
            meta = read_tflite_metadata(data, path)
            width = tflite_output_width(data) if meta is not None else None
        else:
            try:
                import onnxruntime as ort
            except ImportError as exc:
                raise missing_dependency("onnxruntime", "runtime-onnx", exc) from None
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
            meta = parse_metadata(raw, path) if raw else None
            shape = session.get_outputs()[0].shape
            width = shape[-1] if shape and isinstance(shape[-1], int) and shape[-1] > 0 else None
    except EdgeclfError:
        raise
    except Exception as exc:  # not a flatbuffer / ONNX protobuf, or its metadata is not JSON
        raise DataError(f"{path} is not a readable {fmt} file ({type(exc).__name__}: {str(exc)[:200]}).") from None
    if meta is None:
        raise DataError(NO_METADATA.format(path=path))
    return check_metadata(meta, path, width)
