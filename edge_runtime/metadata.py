"""The checks every artefact's embedded metadata passes before the runtime uses any of it.

Metadata comes from a model file, which may come from anyone: it is bounded in size, its fields are checked for
presence, type and range, and its class names for length, here in one place, before ``predict``, ``camera``,
``bench`` or ``info`` read it. A file that fails is refused in one line naming the file and the field.
"""

from __future__ import annotations

import json
import os

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
