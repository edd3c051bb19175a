"""The checks every artefact's embedded metadata passes before the runtime uses any of it.

Metadata comes from a model file, which may come from anyone: it is bounded in size, its fields are checked for
presence, type and range, and its class names for length, here in one place, before ``predict``, ``camera``,
``bench`` or ``info`` read it. A file that fails is refused in one line naming the file and the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .errors import DataError

# A real artefact's metadata is a few KiB (ImageNet's 1,000 labels: ~20 KiB).
MAX_METADATA_BYTES = 1 << 20
MAX_LABEL_CHARS = 256
MAX_CLASSES = 100_000


class MetadataError(DataError):
    """An artefact's embedded metadata is too large, malformed or inconsistent with its model."""


def parse_metadata(raw: bytes | str, source: str | os.PathLike) -> dict:
    """Decodes and checks an artefact's edgeclf metadata (``check_metadata``).

    Raises:
        MetadataError: Naming ``source`` and what is wrong.
    """
    size = len(raw.encode("utf-8") if isinstance(raw, str) else raw)
    if size > MAX_METADATA_BYTES:
        raise MetadataError(f"{source}: its edgeclf metadata is {size:,} bytes, over the {MAX_METADATA_BYTES:,} "
                            "allowed. The file is not a model edgeclf wrote; export or adopt it again.")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise MetadataError(f"{source}: its edgeclf metadata is not valid JSON ({exc}).") from None
    check_metadata(meta, source)
    return meta


def _refuse(source, field: str, problem: str):
    raise MetadataError(f"{source}: metadata field '{field}' {problem}. Export or adopt the model again.")


def check_metadata(meta, source: str | os.PathLike, output_width: int | None = None) -> dict:
    """Refuses metadata the runtime cannot trust: missing or mistyped required fields, class names that are empty,
    repeated, over ``MAX_LABEL_CHARS`` characters or not as many as the model's outputs (``output_width``, when
    known).

    Returns:
        ``meta`` itself.

    Raises:
        MetadataError: Naming ``source`` and the field.
    """
    if not isinstance(meta, dict):
        _refuse(source, "(top level)", f"is a JSON {type(meta).__name__}, expected an object")
    version = meta.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        _refuse(source, "schema_version", f"is {version!r}, expected a whole number from 1")
    if version > SCHEMA_VERSION:
        raise MetadataError(f"{source}: its metadata is schema version {version}, written by a newer edgeclf than "
                            f"this one (which reads up to {SCHEMA_VERSION}). Upgrade edgeclf to run it.")
    names = meta.get("class_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        _refuse(source, "class_names", "is missing or not a list of strings")
    if not 2 <= len(names) <= MAX_CLASSES:
        _refuse(source, "class_names", f"has {len(names)} names, expected 2 to {MAX_CLASSES:,}")
    long = next((n for n in names if len(n) > MAX_LABEL_CHARS), None)
    if long is not None:
        _refuse(source, "class_names", f"holds a name of {len(long):,} characters, over the {MAX_LABEL_CHARS} allowed")
    if any(not n.strip() for n in names):
        _refuse(source, "class_names", "holds an empty name")
    if len(set(names)) != len(names):
        _refuse(source, "class_names", "names a class more than once")
    if "num_classes" in meta and meta["num_classes"] != len(names):
        _refuse(source, "num_classes", f"is {meta['num_classes']!r} but class_names has {len(names)} names")
    # One sigmoid unit scores the second of two classes (an adopted binary model; its metadata says so).
    one_unit = output_width == 1 and len(names) == 2 and isinstance(meta.get("output"), dict) \
        and meta["output"].get("units") == 1
    if output_width is not None and output_width != len(names) and not one_unit:
        _refuse(source, "class_names", f"has {len(names)} names but the model outputs {output_width} scores")
    pre = meta.get("preprocess")
    if not isinstance(pre, dict):
        _refuse(source, "preprocess", "is missing or not an object")
    for key in ("height", "width"):
        value = pre.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 16384:
            _refuse(source, f"preprocess.{key}", f"is {value!r}, expected a whole number of pixels from 1 to 16384")
    for key in ("input", "output", "quantization", "fidelity", "gate", "adapter"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            _refuse(source, key, f"is a JSON {type(meta[key]).__name__}, expected an object")
    return meta


# Version of the layout below. Files without the field were written before it was versioned and are version 1.
SCHEMA_VERSION = 1


def _without_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class InputInfo:
    """The model's input tensor: what the runtime feeds it.

    Args:
        shape: Without the batch dimension, in ``layout`` order.
        dtype: ``float32``, ``uint8``, ...
        layout: ``NHWC`` or ``NCHW``.
        color: ``RGB`` or ``BGR``.
        value_range: Pixels before ``mean``/``std``; always 0-255.
        resize: Resampling filter the preprocessing uses.
        quantization: ``{"scale", "zero_point"}`` of a quantised tensor, else None.
        mean, std: Per-channel normalisation the runtime applies (adopted models); None: the graph does it.
        channels: 1 for a grayscale model (adopted), None for 3.
    """

    shape: tuple[int | None, ...]
    dtype: str
    layout: str = "NHWC"
    color: str = "RGB"
    value_range: tuple[float, float] = (0.0, 255.0)
    resize: str | None = None
    quantization: dict | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int | None = None

    def to_dict(self) -> dict:
        d = {"shape": list(self.shape), "dtype": self.dtype, "layout": self.layout, "color": self.color,
             "value_range": list(self.value_range), "resize": self.resize, "quantization": self.quantization}
        d.update(_without_none({"mean": None if self.mean is None else list(self.mean),
                                "std": None if self.std is None else list(self.std), "channels": self.channels}))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InputInfo":
        return cls(tuple(d.get("shape") or ()), str(d.get("dtype", "float32")), d.get("layout", "NHWC"),
                   d.get("color", "RGB"), tuple(d.get("value_range", (0.0, 255.0))), d.get("resize"),
                   d.get("quantization"), None if d.get("mean") is None else tuple(d["mean"]),
                   None if d.get("std") is None else tuple(d["std"]), d.get("channels"))


@dataclass(frozen=True)
class OutputInfo:
    """The model's output: ``probabilities`` or ``logits``, its dtype and quantisation, and ``units`` = 1 for one
    sigmoid unit scoring the second of two classes (None: one score per class)."""

    kind: str
    dtype: str
    quantization: dict | None = None
    units: int | None = None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "dtype": self.dtype, "quantization": self.quantization,
                **_without_none({"units": self.units})}

    @classmethod
    def from_dict(cls, d: dict) -> "OutputInfo":
        return cls(str(d.get("kind", "probabilities")), str(d.get("dtype", "float32")), d.get("quantization"),
                   d.get("units"))


@dataclass(frozen=True)
class ArtifactMetadata:
    """What an exported or adopted artefact says about itself: the one object export and adopt write (as
    edgeclf's JSON entry and, for TFLite, as TFLite Support metadata) and ``info`` describes.

    The figure sections (``quantization``, ``fidelity``, ``gate``, ``adapter``) hold what was measured or chosen
    and stay open dicts; ``preprocess`` is ``PreprocessSpec.to_dict()``.
    """

    format: str
    class_names: tuple[str, ...]
    input: InputInfo
    output: OutputInfo
    preprocess: dict
    quantization: dict
    source_model: str
    source_model_sha256: str
    fidelity: dict
    gate: dict
    edgeclf_version: str
    created: str
    backbone: str | None = None
    adapter: dict | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version, "edgeclf_version": self.edgeclf_version, "created": self.created,
            "format": self.format, "class_names": list(self.class_names), "input": self.input.to_dict(),
            "output": self.output.to_dict(), "preprocess": self.preprocess, "quantization": self.quantization,
            "backbone": self.backbone, "adapter": self.adapter, "source_model": self.source_model,
            "source_model_sha256": self.source_model_sha256, "fidelity": self.fidelity, "gate": self.gate,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, meta, source: str | os.PathLike, output_width: int | None = None) -> "ArtifactMetadata":
        """Checks ``meta`` (``check_metadata``) and types it.

        Raises:
            MetadataError: For metadata the runtime cannot trust, or of a newer schema than this edgeclf reads.
        """
        check_metadata(meta, source, output_width)
        return cls(
            format=str(meta.get("format", "?")), class_names=tuple(meta["class_names"]),
            input=InputInfo.from_dict(meta.get("input") or {}), output=OutputInfo.from_dict(meta.get("output") or {}),
            preprocess=meta["preprocess"], quantization=meta.get("quantization") or {},
            source_model=str(meta.get("source_model", "?")),
            source_model_sha256=str(meta.get("source_model_sha256", "?")), fidelity=meta.get("fidelity") or {},
            gate=meta.get("gate") or {}, edgeclf_version=str(meta.get("edgeclf_version", "?")),
            created=str(meta.get("created", "?")), backbone=meta.get("backbone"), adapter=meta.get("adapter"),
            schema_version=int(meta.get("schema_version", 1)))
