"""A few fields of a flatbuffer, read with the generic ``flatbuffers`` reader instead of generated schema code.

The TFLite schema module is 6 MB, and the TFLite Support metadata schema is not installed at all; reading the
handful of fields edgeclf needs takes the field's slot number from the ``.fbs`` file (its position among the
table's fields, counting a union as two) and nothing else.
"""

from __future__ import annotations

from .errors import missing_dependency


def _flatbuffers():
    try:
        from flatbuffers import builder, encode, number_types, packer, table
    except ImportError as exc:
        raise missing_dependency("flatbuffers", "runtime-litert", exc) from None
    return encode, number_types, packer, table, builder


class Table:
    """One flatbuffer table; methods take a field's slot and return None (or empty) when the field is absent."""

    def __init__(self, buf, pos: int):
        self.buf = buf
        self._t = _flatbuffers()[3].Table(buf, pos)

    @classmethod
    def root(cls, data: bytes) -> "Table":
        """The root table of a flatbuffer (a file's bytes)."""
        encode, _, packer, _, _ = _flatbuffers()
        buf = bytearray(data) if not isinstance(data, (bytearray, memoryview)) else data
        return cls(buf, encode.Get(packer.uoffset, buf, 0))

    def _offset(self, slot: int) -> int:
        return self._t.Offset(4 + 2 * slot)

    def string(self, slot: int) -> str | None:
        o = self._offset(slot)
        return self._t.String(o + self._t.Pos).decode("utf-8") if o else None

    def uint(self, slot: int, default: int = 0) -> int:
        o = self._offset(slot)
        return int(self._t.Get(_flatbuffers()[1].Uint32Flags, o + self._t.Pos)) if o else default

    def byte(self, slot: int, default: int = 0) -> int:
        o = self._offset(slot)
        return int(self._t.Get(_flatbuffers()[1].Int8Flags, o + self._t.Pos)) if o else default

    def table(self, slot: int) -> "Table | None":
        """A table field, or a union's value (its type is the slot before)."""
        o = self._offset(slot)
        return Table(self.buf, self._t.Indirect(o + self._t.Pos)) if o else None

    def tables(self, slot: int) -> list["Table"]:
        o = self._offset(slot)
        if not o:
            return []
        start = self._t.Vector(o)
        return [Table(self.buf, self._t.Indirect(start + 4 * i)) for i in range(self._t.VectorLen(o))]

    def raw_vector(self, slot: int, width: int = 1) -> bytes | None:
        """A vector of scalars as its little-endian bytes (``width`` bytes each)."""
        o = self._offset(slot)
        if not o:
            return None
        start = self._t.Vector(o)
        return bytes(self.buf[start : start + width * self._t.VectorLen(o)])


# Slots of the TFLite schema (schema.fbs): Model.buffers, Model.metadata, Metadata.name/buffer, Buffer.data.
_MODEL_BUFFERS, _MODEL_METADATA = 4, 6
_METADATA_NAME, _METADATA_BUFFER = 0, 1
_BUFFER_DATA = 0


def tflite_metadata_buffer(data: bytes, name: str) -> bytes | None:
    """The bytes of the TFLite model's metadata entry ``name`` (``edgeclf``, ``TFLITE_METADATA``), or None."""
    model = Table.root(data)
    for entry in model.tables(_MODEL_METADATA):
        if entry.string(_METADATA_NAME) == name:
            buffers = model.tables(_MODEL_BUFFERS)
            return buffers[entry.uint(_METADATA_BUFFER)].raw_vector(_BUFFER_DATA)
    return None


# Model.subgraphs; SubGraph.tensors/outputs; Tensor.shape.
_MODEL_SUBGRAPHS = 2
_SUBGRAPH_TENSORS, _SUBGRAPH_OUTPUTS = 0, 2
_TENSOR_SHAPE = 0


def tflite_output_width(data: bytes) -> int | None:
    """The last dimension of the TFLite model's first output (its scores per image), or None where not fixed."""
    import struct

    subgraphs = Table.root(data).tables(_MODEL_SUBGRAPHS)
    if not subgraphs:
        return None
    outputs = subgraphs[0].raw_vector(_SUBGRAPH_OUTPUTS, 4) or b""
    tensors = subgraphs[0].tables(_SUBGRAPH_TENSORS)
    if len(outputs) < 4:
        return None
    index = struct.unpack_from("<i", outputs)[0]
    if not 0 <= index < len(tensors):
        return None
    shape = tensors[index].raw_vector(_TENSOR_SHAPE, 4) or b""
    width = struct.unpack_from("<i", shape, len(shape) - 4)[0] if len(shape) >= 4 else -1
    return width if width > 0 else None
