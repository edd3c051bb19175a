"""TFLite Support metadata: what MediaPipe Tasks, the TFLite Task Library and Android Studio's ML Model Binding read
from a ``.tflite`` file — its class labels and how its input is normalised.

The metadata is a flatbuffer of ``metadata_schema.fbs`` (tflite-support, also shipped by MediaPipe) stored in the
model's ``TFLITE_METADATA`` entry; the files it names (``labels.txt``) are packed in a zip archive appended to the
model. edgeclf writes it beside its own ``edgeclf`` entry, from the same metadata, so that an exported artefact is
a drop-in for those consumers, and reads it to adopt a Model Maker file without ``--labels``/``--input-norm``.

Both directions use the generic ``flatbuffers`` package with the field slots of the schema (a table's fields
numbered in order, a union taking two), like ``flatbuf``: the generated schema module is not installed by any
light package.
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .flatbuf import Table, _flatbuffers, tflite_metadata_buffer
from .metadata import MAX_METADATA_BYTES, ArtifactMetadata

SUPPORT_METADATA = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
# Every field written here exists since version 1.0.0 of the schema (no TensorGroup, no file version or locale).
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
MAX_LABELS_BYTES = MAX_METADATA_BYTES

# Slots in metadata_schema.fbs (tflite-support 0.4.4, MediaPipe Tasks).
_MODEL_NAME, _MODEL_DESCRIPTION, _MODEL_VERSION, _MODEL_SUBGRAPHS, _MODEL_AUTHOR = 0, 1, 2, 3, 4
_MODEL_MIN_PARSER_VERSION = 7
_SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS = 2, 3
_TENSOR_NAME, _TENSOR_DESCRIPTION, _TENSOR_CONTENT, _TENSOR_PROCESS_UNITS, _TENSOR_STATS, _TENSOR_FILES = \
    0, 1, 3, 4, 5, 6
_CONTENT_PROPERTIES_TYPE, _CONTENT_PROPERTIES = 0, 1
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2  # ContentProperties' members
_IMAGE_COLOR_SPACE = 0
_UNIT_OPTIONS_TYPE, _UNIT_OPTIONS = 0, 1
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions' first member
_NORM_MEAN, _NORM_STD = 0, 1
_STATS_MAX, _STATS_MIN = 0, 1
_FILE_NAME, _FILE_DESCRIPTION, _FILE_TYPE = 0, 1, 2
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType: one label per output unit
COLOR_SPACES = {1: "RGB", 2: "GRAYSCALE"}  # ColorSpaceType
_COLOR_SPACE_IDS = {v: k for k, v in COLOR_SPACES.items()}


def labels_from_text(text: str) -> tuple[str, ...]:
    """One class name per non-empty line; lines numbered in order from 0 (``0 cat``) lose their numbers."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    numbered = [line.split(None, 1) for line in lines]
    if lines and all(len(parts) == 2 and parts[0] == str(i) for i, parts in enumerate(numbered)):
        return tuple(parts[1].strip() for parts in numbered)
    return tuple(lines)


@dataclass(frozen=True)
class SupportMetadata:
    """What a file's TFLite Support metadata says (None where it says nothing), or what edgeclf writes.

    Args:
        labels: Class names in output order, from the output tensor's ``TENSOR_AXIS_LABELS`` file.
        labels_file: That file's name inside the model.
        mean: Per-channel mean of the input normalisation, ``(x - mean) / std`` on 0-255 pixels.
        std: Per-channel standard deviation.
        name: The model's name.
        description: What the model does.
        version: Which model this is.
        author: Who wrote the file.
        color_space: The input image's colour space, ``RGB`` or ``GRAYSCALE``.
        input_min, input_max: The range of the input tensor's values per channel (``Stats``).
        output_min, output_max: The range of the scores.
        min_parser_version: The oldest metadata parser that reads every field.
    """

    labels: tuple[str, ...] | None = None
    labels_file: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    name: str | None = None
    description: str | None = None
    version: str | None = None
    author: str | None = None
    color_space: str | None = None
    input_min: tuple[float, ...] | None = None
    input_max: tuple[float, ...] | None = None
    output_min: tuple[float, ...] | None = None
    output_max: tuple[float, ...] | None = None
    min_parser_version: str | None = None


def _floats(values: bytes | None) -> tuple[float, ...] | None:
    # float32's digits, not its binary tail: 123.675 stays 123.675
    return None if values is None else tuple(float(f"{x:.7g}") for x in np.frombuffer(values, "<f4"))


def _three(values: bytes | None, what: str) -> tuple[float, float, float] | None:
    v = _floats(values)
    if v is None:
        return None
    if len(v) == 1:
        return (v[0],) * 3
    if len(v) != 3:
        raise DataError(f"The file's TFLite Support metadata gives {len(v)} normalisation {what} values. Expected "
                        "1 or 3; pass --labels and --input-norm instead.")
    return v  # type: ignore[return-value]


def read_support_metadata(data: bytes) -> SupportMetadata | None:
    """What a ``.tflite`` file's TFLite Support metadata gives, or None without it.

    Raises:
        DataError: If the metadata names a labels file that is not packed in the model, or is unreadable.
    """
    raw = tflite_metadata_buffer(data, SUPPORT_METADATA)
    if raw is None:
        return None
    root = Table.root(raw)
    general = dict(name=root.string(_MODEL_NAME), description=root.string(_MODEL_DESCRIPTION),
                   version=root.string(_MODEL_VERSION), author=root.string(_MODEL_AUTHOR),
                   min_parser_version=root.string(_MODEL_MIN_PARSER_VERSION))
    subgraphs = root.tables(_MODEL_SUBGRAPHS)
    if not subgraphs:
        return SupportMetadata(**general)
    inputs, outputs = subgraphs[0].tables(_SUBGRAPH_INPUTS), subgraphs[0].tables(_SUBGRAPH_OUTPUTS)
    mean = std = color = None
    in_stats = out_stats = None
    if inputs:
        for unit in inputs[0].tables(_TENSOR_PROCESS_UNITS):
            options = unit.table(_UNIT_OPTIONS)
            if unit.byte(_UNIT_OPTIONS_TYPE) == _NORMALIZATION_OPTIONS and options is not None:
                mean = _three(options.raw_vector(_NORM_MEAN, 4), "mean")
                std = _three(options.raw_vector(_NORM_STD, 4), "std")
        content = inputs[0].table(_TENSOR_CONTENT)
        if content is not None and content.byte(_CONTENT_PROPERTIES_TYPE) == _IMAGE_PROPERTIES:
            props = content.table(_CONTENT_PROPERTIES)
            color = COLOR_SPACES.get(props.byte(_IMAGE_COLOR_SPACE)) if props is not None else None
        in_stats = inputs[0].table(_TENSOR_STATS)
    files = outputs[0].tables(_TENSOR_FILES) if outputs else []
    if outputs:
        out_stats = outputs[0].table(_TENSOR_STATS)
    name = next((f.string(_FILE_NAME) for f in files if f.byte(_FILE_TYPE) == _TENSOR_AXIS_LABELS), None)
    labels = None
    if name:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as packed:
                size = packed.getinfo(name).file_size
                if size > MAX_LABELS_BYTES:  # a model file is untrusted: no unbounded read from it
                    raise DataError(f"The file's TFLite Support metadata packs a labels file {name} of {size:,} "
                                    f"bytes, over the {MAX_LABELS_BYTES:,} allowed. Pass --labels and --input-norm.")
                labels = labels_from_text(packed.read(name).decode("utf-8-sig"))
        except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, NotImplementedError) as exc:
            raise DataError(f"The file's TFLite Support metadata names the labels file {name}, which cannot be read "
                            f"from the model ({type(exc).__name__}). Pass --labels and --input-norm.") from None

    def stat(table, slot):
        return _floats(table.raw_vector(slot, 4)) if table is not None else None

    return SupportMetadata(labels, name, mean, std, color_space=color,
                           input_min=stat(in_stats, _STATS_MIN), input_max=stat(in_stats, _STATS_MAX),
                           output_min=stat(out_stats, _STATS_MIN), output_max=stat(out_stats, _STATS_MAX),
                           **general)


def packed_files(data: bytes) -> bytes:
    """The zip archive of associated files (``labels.txt``) appended to a ``.tflite`` file, or b"" without one."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as packed:
            infos = packed.infolist()
    except zipfile.BadZipFile:
        return b""
    # zipfile reports each member's offset from the start of the file, however much model precedes the archive
    return data[min(i.header_offset for i in infos):] if infos else b""


def strip_packed_files(data: bytes) -> bytes:
    """The model without the archive of associated files appended to it (the flatbuffer alone)."""
    tail = packed_files(data)
    return data[: len(data) - len(tail)] if tail else data


def support_metadata_for(meta: ArtifactMetadata) -> tuple[SupportMetadata | None, str]:
    """The TFLite Support metadata that describes an artefact as edgeclf's metadata ``meta`` does, or None with the
    reason where the schema cannot say it (a BGR or channels-first input: its consumers feed RGB, channels last).

    Float inputs get the normalisation that turns 0-255 pixels into what the model takes: mean 0 and std 1 for
    edgeclf's exports (the normalisation is in the graph). A uint8 input takes the pixels as they are.
    """
    inp, out = meta.input, meta.output
    if inp.layout != "NHWC":
        return None, f"its input is channels-first ({inp.layout}); MediaPipe and the Task Library feed channels-last"
    if inp.color != "RGB":
        return None, f"its input is {inp.color}; MediaPipe and the Task Library feed RGB"
    names = list(meta.class_names)
    if any("\n" in n or "\r" in n for n in names):
        return None, "a class name holds a line break, which a labels file (one name per line) cannot hold"
    n = 1 if inp.channels == 1 else 3
    mean = tuple(float(m) for m in (inp.mean or (0.0,) * 3))[:n]
    std = tuple(float(s) for s in (inp.std or (1.0,) * 3))[:n]
    if inp.dtype == "uint8":
        in_min, in_max = (0.0,), (255.0,)
    else:
        in_min = tuple((0.0 - m) / s for m, s in zip(mean, std))
        in_max = tuple((255.0 - m) / s for m, s in zip(mean, std))
    # one sigmoid unit scores the second class: one unit, one label
    labels = tuple(names[1:]) if out.units == 1 else tuple(names)
    if out.dtype == "uint8":
        out_min, out_max = (0.0,), (255.0,)
    else:
        out_min, out_max = ((0.0,), (1.0,)) if out.kind == "probabilities" else (None, None)
    sha = meta.source_model_sha256 if meta.source_model_sha256 not in ("", "?") else ""
    return SupportMetadata(
        labels=labels, labels_file=LABELS_FILE, mean=mean, std=std,
        name="ImageClassifier",
        description=(f"Image classifier of {len(names)} classes ({', '.join(names[:10])}"
                     f"{', ...' if len(names) > 10 else ''}), {meta.format} {meta.quantization.get('mode', '')}, "
                     f"from {meta.source_model}."),
        version=f"sha256:{sha[:16]}" if sha else None,
        author=f"edgeclf {meta.edgeclf_version}",
        color_space="GRAYSCALE" if inp.channels == 1 else "RGB",
        input_min=in_min, input_max=in_max, output_min=out_min, output_max=out_max,
        min_parser_version=MIN_PARSER_VERSION), ""


def build_support_metadata(info: SupportMetadata) -> bytes:
    """The metadata flatbuffer (identifier ``M001``) for the model's ``TFLITE_METADATA`` entry; its labels file goes
    in the archive ``pack_labels`` appends.

    Raises:
        ValueError: For normalisation values that are not finite, or a zero standard deviation.
    """
    for v in (info.mean or ()) + (info.std or ()):
        if not math.isfinite(v):
            raise ValueError(f"normalisation value {v} is not finite")
    if info.std and any(s == 0 for s in info.std):
        raise ValueError("a normalisation standard deviation is 0")
    b = _flatbuffers()[4].Builder(1024)

    def string(text):
        return b.CreateString(text) if text is not None else None

    def floats(values):
        return b.CreateNumpyVector(np.asarray(values, "<f4")) if values is not None else None

    def table(fields: list[tuple[int, str, object]]) -> int:
        b.StartObject(max(slot for slot, _, _ in fields) + 1)
        for slot, kind, value in fields:
            if value is None:
                continue
            if kind == "offset":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            else:
                b.PrependInt8Slot(slot, value, 0)
        return b.EndObject()

    def vector(offsets: list[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    def stats(lo, hi):
        if lo is None or hi is None:
            return None
        mx, mn = floats(hi), floats(lo)
        return table([(_STATS_MAX, "offset", mx), (_STATS_MIN, "offset", mn)])

    # input: image properties, normalisation, value range
    image = table([(_IMAGE_COLOR_SPACE, "byte", _COLOR_SPACE_IDS.get(info.color_space or "RGB", 0))])
    content_in = table([(_CONTENT_PROPERTIES_TYPE, "byte", _IMAGE_PROPERTIES), (_CONTENT_PROPERTIES, "offset", image)])
    units = None
    if info.mean is not None and info.std is not None:
        mean, std = floats(info.mean), floats(info.std)
        norm = table([(_NORM_MEAN, "offset", mean), (_NORM_STD, "offset", std)])
        units = vector([table([(_UNIT_OPTIONS_TYPE, "byte", _NORMALIZATION_OPTIONS), (_UNIT_OPTIONS, "offset", norm)])])
    in_stats = stats(info.input_min, info.input_max)
    in_name, in_desc = string("image"), string("Input image to be classified.")
    tensor_in = table([(_TENSOR_NAME, "offset", in_name), (_TENSOR_DESCRIPTION, "offset", in_desc),
                       (_TENSOR_CONTENT, "offset", content_in), (_TENSOR_PROCESS_UNITS, "offset", units),
                       (_TENSOR_STATS, "offset", in_stats)])
    # output: scores with one label per unit in an associated file
    feature = table([(0, "byte", None)])
    content_out = table([(_CONTENT_PROPERTIES_TYPE, "byte", _FEATURE_PROPERTIES),
                         (_CONTENT_PROPERTIES, "offset", feature)])
    files = None
    if info.labels:
        f_name, f_desc = string(info.labels_file or LABELS_FILE), string("Labels for the categories the model "
                                                                         "scores, in output order.")
        files = vector([table([(_FILE_NAME, "offset", f_name), (_FILE_DESCRIPTION, "offset", f_desc),
                               (_FILE_TYPE, "byte", _TENSOR_AXIS_LABELS)])])
    out_stats = stats(info.output_min, info.output_max)
    out_name, out_desc = string("probability"), string("Probabilities of the labels respectively.")
    tensor_out = table([(_TENSOR_NAME, "offset", out_name), (_TENSOR_DESCRIPTION, "offset", out_desc),
                        (_TENSOR_CONTENT, "offset", content_out), (_TENSOR_STATS, "offset", out_stats),
                        (_TENSOR_FILES, "offset", files)])
    inputs, outputs = vector([tensor_in]), vector([tensor_out])
    subgraph = table([(_SUBGRAPH_INPUTS, "offset", inputs), (_SUBGRAPH_OUTPUTS, "offset", outputs)])
    subgraphs = vector([subgraph])
    name, desc, version, author, parser = (string(info.name), string(info.description), string(info.version),
                                           string(info.author), string(info.min_parser_version))
    root = table([(_MODEL_NAME, "offset", name), (_MODEL_DESCRIPTION, "offset", desc),
                  (_MODEL_VERSION, "offset", version), (_MODEL_SUBGRAPHS, "offset", subgraphs),
                  (_MODEL_AUTHOR, "offset", author), (_MODEL_MIN_PARSER_VERSION, "offset", parser)])
    b.Finish(root, FILE_IDENTIFIER)
    return bytes(b.Output())


def pack_labels(model: bytes, info: SupportMetadata) -> bytes:
    """The model with its labels file packed in a zip archive appended to it, as the TFLite Support populator
    appends it (offsets from the start of the file, so readers that take the file as one archive find it)."""
    if not info.labels:
        return model
    buf = io.BytesIO(model)
    buf.seek(0, io.SEEK_END)
    # stored, not deflated: consumers may map the file and read the labels in place
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_STORED) as packed:
        packed.writestr(zipfile.ZipInfo(info.labels_file or LABELS_FILE, date_time=(1980, 1, 1, 0, 0, 0)),
                        "\n".join(info.labels) + "\n")
    return buf.getvalue()


def consumers(fmt: str, support: SupportMetadata | None, reason: str = "") -> str:
    """Which runtimes can run the file with its class names and input contract, in words."""
    if fmt != "tflite":
        return ("edgeclf (predict, camera, bench); onnxruntime runs it too, but the class names and input contract "
                "are only in edgeclf's metadata (metadata_props key 'edgeclf')")
    if support is None:
        why = f" ({reason})" if reason else ""
        return ("edgeclf only: the file has no TFLite Support metadata" + why + ", so MediaPipe Tasks shows no class "
                "names and refuses a float input. Export or adopt it again with this edgeclf to add it")
    missing = [what for what, have in (("labels", support.labels), ("input normalisation", support.mean))
               if not have]
    if missing:
        return (f"edgeclf; its TFLite Support metadata has no {' or '.join(missing)}, so MediaPipe Tasks and the "
                "TFLite Task Library run it without them")
    return ("edgeclf; MediaPipe Tasks ImageClassifier, the TFLite Task Library ImageClassifier and Android Studio's "
            "ML Model Binding (labels and normalisation from its TFLite Support metadata)")


def describe_support(support: SupportMetadata) -> str:
    """One line on what a file's TFLite Support metadata says."""
    parts = [support.name or "unnamed"]
    if support.labels:
        shown = ", ".join(support.labels[:5]) + (", ..." if len(support.labels) > 5 else "")
        parts.append(f"{len(support.labels)} labels in {support.labels_file} ({shown})")
    else:
        parts.append("no labels")
    if support.color_space:
        parts.append(support.color_space)
    if support.mean is not None:
        fmt = ", ".join
        parts.append(f"(x - mean) / std with mean ({fmt(f'{m:g}' for m in support.mean)}) and std "
                     f"({fmt(f'{v:g}' for v in support.std)})")
    if support.output_min and support.output_max:
        parts.append(f"scores {support.output_min[0]:g}-{support.output_max[0]:g}")
    if support.version:
        parts.append(f"version {support.version}")
    if support.min_parser_version:
        parts.append(f"parser >= {support.min_parser_version}")
    return "; ".join(parts)
