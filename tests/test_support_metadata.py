"""TFLite Support metadata: what MediaPipe Tasks and the TFLite Task Library read from an edgeclf ``.tflite`` file.

Runtime only (LiteRT, flatbuffers; no TensorFlow): CI runs this module in the ``edgeclf[runtime]`` environment
too. The files are the committed fixtures of ``tests/data/runtime/`` rewritten by ``write_tflite_metadata``, the
one function export and adopt write through.
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeclf.cli import main
from edgeclf.edge_runtime import Classifier
from edgeclf.edge_runtime.artifact import read_metadata, write_tflite_metadata
from edgeclf.edge_runtime.errors import DataError
from edgeclf.edge_runtime.flatbuf import Table
from edgeclf.edge_runtime.metadata import ArtifactMetadata
from edgeclf.edge_runtime.support_metadata import (SUPPORT_METADATA, SupportMetadata, read_support_metadata,
                                                   support_metadata_for)

DATA = Path(__file__).resolve().parent / "data"
FP32, INT8 = DATA / "runtime" / "bars_fp32.tflite", DATA / "runtime" / "bars_int8.tflite"
MODEL_MAKER = DATA / "support_metadata.tflite"  # written by tflite-support's own metadata writer


def _rewrite(src: Path, tmp_path: Path, meta: dict | None = None, name: str | None = None) -> tuple[Path, dict]:
    meta = read_metadata(src) if meta is None else meta
    out = tmp_path / (name or src.name)
    out.write_bytes(write_tflite_metadata(src.read_bytes(), meta))
    return out, meta


def _entries(data: bytes) -> list[str]:
    return [e.string(0) for e in Table.root(data).tables(6)]  # Model.metadata, Metadata.name


def test_an_fp32_artefact_carries_support_metadata_that_reads_back_field_for_field(tmp_path):
    out, meta = _rewrite(FP32, tmp_path)
    data = out.read_bytes()
    got = read_support_metadata(data)
    assert got == support_metadata_for(ArtifactMetadata.from_dict(meta, 'test'))[0]  # every field written is read back as it was meant
    assert got.labels == ("bar_h", "bar_v") and got.labels_file == "labels.txt"
    # float input with the normalisation in the graph: 0-255 pixels, mean 0 and std 1
    assert got.mean == (0.0, 0.0, 0.0) and got.std == (1.0, 1.0, 1.0) and got.color_space == "RGB"
    assert got.input_min == (0.0, 0.0, 0.0) and got.input_max == (255.0, 255.0, 255.0)
    assert got.output_min == (0.0,) and got.output_max == (1.0,)
    assert got.name == "ImageClassifier" and got.min_parser_version == "1.0.0"
    assert got.version == "sha256:" + meta["source_model_sha256"][:16] and got.author.startswith("edgeclf ")
    assert "bar_h, bar_v" in got.description
    with zipfile.ZipFile(out) as packed:
        assert packed.namelist() == ["labels.txt"] and packed.read("labels.txt") == b"bar_h\nbar_v\n"
    # edgeclf's own metadata is still there and still what the runtime reads, and the model computes the same
    assert read_metadata(out) == meta
    pixels = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(Classifier.load(out, threads=1).backend.run(pixels),
                                  Classifier.load(FP32, threads=1).backend.run(pixels))


def test_an_int8_artefact_declares_uint8_ranges(tmp_path):
    out, meta = _rewrite(INT8, tmp_path)
    got = read_support_metadata(out.read_bytes())
    assert meta["input"]["dtype"] == "uint8"
    assert got.input_min == (0.0,) and got.input_max == (255.0,) and got.output_max == (255.0,)
    assert got.labels == ("bar_h", "bar_v")


def test_it_has_the_fields_model_maker_writes():
    theirs = read_support_metadata(MODEL_MAKER.read_bytes())
    ours = support_metadata_for(ArtifactMetadata.from_dict(read_metadata(FP32), 'test'))[0]
    written = {f.name for f in fields(SupportMetadata) if getattr(theirs, f.name) is not None}
    assert written <= {f.name for f in fields(SupportMetadata) if getattr(ours, f.name) is not None}


def test_writing_again_replaces_both_blocks_and_the_labels_file(tmp_path):
    once, meta = _rewrite(FP32, tmp_path, name="once.tflite")
    renamed = copy.deepcopy(meta)
    renamed["class_names"] = ["horizontal", "vertical"]
    twice = tmp_path / "twice.tflite"
    twice.write_bytes(write_tflite_metadata(once.read_bytes(), renamed))
    data = twice.read_bytes()
    assert sorted(n for n in _entries(data) if n in ("edgeclf", SUPPORT_METADATA)) == [SUPPORT_METADATA, "edgeclf"]
    assert read_support_metadata(data).labels == ("horizontal", "vertical")
    with zipfile.ZipFile(twice) as packed:
        assert packed.namelist() == ["labels.txt"] and packed.read("labels.txt") == b"horizontal\nvertical\n"
    # the replaced blocks leave nothing behind: the file does not grow with each write
    assert abs(len(data) - once.stat().st_size) < 64


@pytest.mark.parametrize("change, reason", [
    ({"color": "BGR", "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]}, "BGR"),
    ({"layout": "NCHW"}, "channels-first"),
])
def test_an_input_the_schema_cannot_describe_gets_no_support_metadata(tmp_path, change, reason):
    meta = read_metadata(FP32)
    meta["input"].update(change)
    support, why = support_metadata_for(ArtifactMetadata.from_dict(meta, 'test'))
    assert support is None and reason in why
    data = write_tflite_metadata(FP32.read_bytes(), meta)
    assert read_support_metadata(data) is None and "edgeclf" in _entries(data)


def test_one_sigmoid_unit_gets_one_label():
    meta = read_metadata(FP32)
    meta["output"]["units"] = 1
    assert support_metadata_for(ArtifactMetadata.from_dict(meta, 'test'))[0].labels == ("bar_v",)


def test_a_class_name_with_a_line_break_is_not_written_into_a_labels_file():
    meta = read_metadata(FP32)
    meta["class_names"] = ["bar\nh", "bar_v"]
    support, why = support_metadata_for(ArtifactMetadata.from_dict(meta, 'test'))
    assert support is None and "line break" in why


def test_an_oversized_packed_labels_file_is_refused(tmp_path):
    out, _ = _rewrite(FP32, tmp_path)
    data = out.read_bytes()
    model = data[: data.index(b"PK\x03\x04")]
    buf = io.BytesIO(model)
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_DEFLATED) as packed:  # 4 MiB that deflate to a few KiB
        packed.writestr("labels.txt", "x\n" * (2 << 20))
    with pytest.raises(DataError, match="over the 1,048,576 allowed"):
        read_support_metadata(buf.getvalue())


def test_info_shows_both_blocks_and_who_can_read_the_file(tmp_path):
    out, _ = _rewrite(FP32, tmp_path, name="with.tflite")
    result = CliRunner().invoke(main, ["info", str(out), str(FP32)])
    assert result.exit_code == 0, result.output
    described, plain = result.output.split(str(FP32))
    assert "support meta  ImageClassifier; 2 labels in labels.txt (bar_h, bar_v); RGB" in described
    assert "MediaPipe Tasks ImageClassifier, the TFLite Task Library" in described
    assert "support meta  none" in plain and "edgeclf only" in plain
    result = CliRunner().invoke(main, ["info", str(out), "--json"])
    record = json.loads(result.stdout)
    assert record["support_metadata"] == json.loads(json.dumps(asdict(read_support_metadata(out.read_bytes()))))
    assert record["metadata"]["class_names"] == ["bar_h", "bar_v"]


def test_info_warns_when_the_labels_disagree_with_edgeclfs_class_names(tmp_path):
    meta = read_metadata(FP32)
    data = write_tflite_metadata(FP32.read_bytes(), {**meta, "class_names": ["left", "right"]})
    # edgeclf's own block says bar_h/bar_v again; the support block keeps left/right from the first write
    from ai_edge_litert.tools import flatbuffer_utils

    from edgeclf.edge_runtime.artifact import METADATA_KEY

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data[: data.index(b"PK\x03\x04")]))
    entry = next(m for m in model.metadata if (m.name.decode() if isinstance(m.name, bytes) else m.name) == METADATA_KEY)
    model.buffers[entry.buffer].data = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    out = tmp_path / "mixed.tflite"
    out.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)) + data[data.index(b"PK\x03\x04"):])
    result = CliRunner().invoke(main, ["info", str(out)])
    assert result.exit_code == 0, result.output
    assert "TFLite Support labels differ from edgeclf's class names" in result.output


def test_info_warns_that_mediapipe_does_not_crop_as_the_model_was_trained(tmp_path):
    meta = read_metadata(FP32)
    meta["preprocess"]["crop"] = 0.875
    out, _ = _rewrite(FP32, tmp_path, meta, name="cropped.tflite")
    result = CliRunner().invoke(main, ["info", str(out)])
    assert result.exit_code == 0, result.output
    assert "resize the whole image: they do not apply this model's centre crop" in result.output


@pytest.mark.parametrize("fixture", [FP32, INT8], ids=lambda p: p.name)
def test_the_typed_metadata_round_trips_what_an_export_wrote(fixture):
    meta = read_metadata(fixture)
    typed = ArtifactMetadata.from_dict(meta, fixture)
    assert typed.input.dtype == meta["input"]["dtype"] and typed.class_names == ("bar_h", "bar_v")
    assert typed.to_dict() == {**meta, "schema_version": 1}  # these fixtures predate the version field
    assert ArtifactMetadata.from_dict(typed.to_dict(), fixture) == typed
