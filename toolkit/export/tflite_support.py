"""TFLite Support metadata, as MediaPipe Model Maker and the TFLite Support metadata writers put it in a ``.tflite``:
the class labels and the input normalisation, so that ``edgeclf adopt`` needs neither ``--labels`` nor
``--input-norm`` for such a file.

The metadata is a flatbuffer (``metadata_schema.fbs`` of tflite-support) in the model's ``TFLITE_METADATA`` entry;
the files it names (``labels.txt``) are packed in a zip archive appended to the model. Only the few fields needed
are read (``edge_runtime.flatbuf``), so tflite-support itself is not a dependency.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np

from edgeclf.edge_runtime.errors import DataError
from edgeclf.edge_runtime.flatbuf import Table, tflite_metadata_buffer

from .foreign import labels_from_text

SUPPORT_METADATA = "TFLITE_METADATA"
# Slots in metadata_schema.fbs (tflite-support 0.4.4); a union takes two (its type, then its value).
_MODEL_SUBGRAPHS = 3
_SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS = 2, 3
_TENSOR_PROCESS_UNITS, _TENSOR_FILES = 4, 6
_UNIT_OPTIONS_TYPE, _UNIT_OPTIONS = 0, 1
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions' first member
_NORM_MEAN, _NORM_STD = 0, 1
_FILE_NAME, _FILE_TYPE = 0, 2
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType: one label per output unit


@dataclass(frozen=True)
class SupportMetadata:
    """What a file's TFLite Support metadata says; None where it says nothing.

    Args:
        labels: Class names in output order, from the output tensor's ``TENSOR_AXIS_LABELS`` file.
        labels_file: That file's name inside the model.
        mean: Per-channel mean of the input normalisation, ``(x - mean) / std`` on 0-255 pixels.
        std: Per-channel standard deviation.
    """

    labels: tuple[str, ...] | None = None
    labels_file: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


def _three(values: bytes | None, what: str) -> tuple[float, float, float] | None:
    if values is None:
        return None
    v = tuple(float(f"{x:.7g}") for x in np.frombuffer(values, "<f4"))  # float32's digits, not its binary tail
    if len(v) == 1:
        return (v[0],) * 3
    if len(v) != 3:
        raise DataError(f"The file's TFLite Support metadata gives {len(v)} normalisation {what} values. Expected "
                        "1 or 3; pass --labels and --input-norm instead.")
    return v  # type: ignore[return-value]


def read_support_metadata(data: bytes) -> SupportMetadata | None:
    """The labels and input normalisation a ``.tflite`` file's TFLite Support metadata gives, or None without it.

    Raises:
        DataError: If the metadata names a labels file that is not packed in the model, or is unreadable.
    """
    raw = tflite_metadata_buffer(data, SUPPORT_METADATA)
    if raw is None:
        return None
    subgraphs = Table.root(raw).tables(_MODEL_SUBGRAPHS)
    if not subgraphs:
        return SupportMetadata()
    inputs, outputs = subgraphs[0].tables(_SUBGRAPH_INPUTS), subgraphs[0].tables(_SUBGRAPH_OUTPUTS)
    mean = std = None
    for unit in inputs[0].tables(_TENSOR_PROCESS_UNITS) if inputs else []:
        options = unit.table(_UNIT_OPTIONS)
        if unit.byte(_UNIT_OPTIONS_TYPE) == _NORMALIZATION_OPTIONS and options is not None:
            mean = _three(options.raw_vector(_NORM_MEAN, 4), "mean")
            std = _three(options.raw_vector(_NORM_STD, 4), "std")
    name = next((f.string(_FILE_NAME) for f in (outputs[0].tables(_TENSOR_FILES) if outputs else [])
                 if f.byte(_FILE_TYPE) == _TENSOR_AXIS_LABELS), None)
    labels = None
    if name:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as packed:
                labels = labels_from_text(packed.read(name).decode("utf-8-sig"))
        except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
            raise DataError(f"The file's TFLite Support metadata names the labels file {name}, which cannot be read "
                            f"from the model ({type(exc).__name__}). Pass --labels and --input-norm.") from None
    return SupportMetadata(labels, name, mean, std)


def packed_files(data: bytes) -> bytes:
    """The zip archive of associated files (``labels.txt``) appended to a ``.tflite`` file, or b"" without one.

    Writing edgeclf's metadata rebuilds the flatbuffer, which leaves this archive behind; appending it again keeps
    the adopted copy a complete TFLite Support model (MediaPipe Tasks reads its labels from it).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as packed:
            infos = packed.infolist()
    except zipfile.BadZipFile:
        return b""
    # zipfile reports each member's offset from the start of the file, however much model precedes the archive
    return data[min(i.header_offset for i in infos):] if infos else b""
