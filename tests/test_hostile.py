"""Hostile inputs: what comes from a model file, a stream URL or the command line is never trusted.

Model metadata is bounded and checked against the model before use, and shown escaped; stream credentials are
masked wherever edgeclf writes a source; odd inputs get one clear line instead of a library's error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import class_image
from edgeclf.cli import main
from edgeclf.edge_runtime import DataError
from edgeclf.edge_runtime.artifact import read_metadata, read_tflite_metadata, write_tflite_metadata
from edgeclf.edge_runtime.classifier import Classifier
from edgeclf.edge_runtime.paths import mask_credentials, printable

SECRET = "secret123"
URL = f"rtsp://admin:{SECRET}@127.0.0.1:9/stream"


def _artefact(exported, name):
    return next(r.path for r in exported[1] if r.path.name == name)


def _tampered(exported, tmp_path, change, name="run_fp32.tflite"):
    """A copy of an exported TFLite file whose metadata ``change(meta)`` rewrote (it returns the new metadata)."""
    data = _artefact(exported, name).read_bytes()
    meta = change(read_tflite_metadata(data))
    out = tmp_path / f"tampered_{name}"
    out.write_bytes(write_tflite_metadata(data, meta))
    return out


def _image(tmp_path):
    from PIL import Image
    import numpy as np

    path = tmp_path / "img.png"
    Image.fromarray(class_image(0, np.random.default_rng(0))).save(path)
    return path


def _edgeclf(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "edgeclf.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


# ---------------------------------------------------------------------------------------------- secrets

@pytest.mark.parametrize("text, shown", [
    (URL, "rtsp://admin:***@127.0.0.1:9/stream"),
    ("rtsp://admin:p@ss@cam/live", "rtsp://admin:***@cam/live"),  # a password holding '@'
    ("https://TOKEN@host/v.mp4", "https://***@host/v.mp4"),
    ("http://cam/s?user=a&password=hunter2&x=1", "http://cam/s?user=a&password=***&x=1"),
    ("Lost rtsp://u:pw@h/1; reconnecting", "Lost rtsp://u:***@h/1; reconnecting"),
    ("/data/user@example/photo.jpg", "/data/user@example/photo.jpg"),  # not a URL: left alone
])
def test_url_credentials_are_masked(text, shown):
    assert mask_credentials(text) == shown


@pytest.mark.parametrize("verbose", [False, True])
def test_camera_never_prints_a_stream_password(exported, verbose):
    model = _artefact(exported, "run_int8.tflite")
    proc = _edgeclf(*(["--verbose"] if verbose else []), "camera", "--model", str(model), "--source", URL,
                    "--headless")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert SECRET not in out, out
    assert "Cannot open video source 'rtsp://admin:***@127.0.0.1:9/stream'" in out
    if verbose:
        assert "Traceback" in out  # the traceback is still there for --verbose, masked


def test_a_camera_index_out_of_range_is_one_line(exported):
    result = CliRunner().invoke(main, ["camera", "--model", str(_artefact(exported, "run_int8.tflite")), "--source",
                                       "99999999999", "--headless"])
    assert result.exit_code != 0
    assert "Cannot open video source '99999999999'" in result.output
    assert "unexpected" not in result.output and "Overload" not in result.output


# ---------------------------------------------------------------------------------------------- metadata

HOSTILE_LABELS = ["\x1b]52;c;aGFja2Vk\x07ok", "\x1b]0;title\x07\x1b[2J\r\u202egpj.exe"]


@pytest.mark.parametrize("fmt", ["table", "summary"])
def test_labels_from_a_model_file_reach_the_terminal_escaped(exported, tmp_path, fmt):
    def hostile(meta):
        return {**meta, "class_names": HOSTILE_LABELS}

    model = _tampered(exported, tmp_path, hostile)
    result = CliRunner().invoke(main, ["predict", str(model), str(_image(tmp_path))])
    assert result.exit_code == 0, result.output
    for raw in ("\x1b", "\x07", "\r", "\u202e"):
        assert raw not in result.output
    assert "\\x1b]52;c;aGFja2Vk\\x07ok" in result.output or "\\x1b]0;title" in result.output
    if fmt == "summary":  # the tally line names the labels too
        assert "1 image(s), 0 failed; \\x1b" in result.output


def test_info_shows_hostile_labels_escaped(exported, tmp_path):
    model = _tampered(exported, tmp_path, lambda meta: {**meta, "class_names": HOSTILE_LABELS})
    result = CliRunner().invoke(main, ["info", str(model)])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\u202e" not in result.output and "\\u202egpj.exe" in result.output


def test_jsonl_keeps_the_label_as_it_is(exported, tmp_path):
    model = _tampered(exported, tmp_path, lambda meta: {**meta, "class_names": HOSTILE_LABELS})
    result = CliRunner().invoke(main, ["predict", str(model), str(_image(tmp_path)), "--format", "jsonl"])
    record = json.loads(result.stdout.splitlines()[0])
    assert record["label"] in HOSTILE_LABELS  # JSON escapes it; a program reading it gets the real name


@pytest.mark.parametrize("change, field", [
    (lambda m: {**m, "class_names": ["x" * 300, "b"]}, "class_names' holds a name of 300 characters"),
    (lambda m: {**m, "class_names": [f"c{i}" for i in range(1000)]}, "has 1000 names but the model outputs 2"),
    (lambda m: {**m, "class_names": ["a", "b", "c"], "num_classes": 3}, "has 3 names but the model outputs 2"),
    (lambda m: {k: v for k, v in m.items() if k != "preprocess"}, "'preprocess' is missing"),
    (lambda m: {**m, "class_names": "bar_h,bar_v"}, "'class_names' is missing or not a list"),
    (lambda m: {**m, "class_names": ["a", "a"]}, "names a class more than once"),
    (lambda m: {**m, "preprocess": {**m["preprocess"], "height": -4}}, "'preprocess.height' is -4"),
    (lambda m: {**m, "padding": "x" * (1 << 20)}, "over the 1,048,576 allowed"),
])
def test_metadata_that_does_not_fit_the_model_is_refused_in_one_line(exported, tmp_path, change, field):
    model = _tampered(exported, tmp_path, change)
    for args in (["predict", str(model), str(_image(tmp_path))], ["info", str(model)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code != 0, (args, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and str(model) in errors[0] and field in errors[0], result.output
        assert "unexpected" not in result.output
    with pytest.raises(DataError, match="metadata"):
        Classifier.load(model)


def test_onnx_metadata_is_checked_against_the_model_too(exported, tmp_path):
    import onnx

    source = _artefact(exported, "run_fp32.onnx")
    proto = onnx.load(str(source))
    for prop in proto.metadata_props:
        if prop.key == "edgeclf":
            meta = json.loads(prop.value)
            prop.value = json.dumps({**meta, "class_names": [f"c{i}" for i in range(1000)]})
    path = tmp_path / "tampered.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(DataError, match="has 1000 names but the model outputs 2"):
        Classifier.load(path)
    with pytest.raises(DataError, match="has 1000 names but the model outputs 2"):
        read_metadata(path)


def test_printable_escapes_only_what_a_terminal_would_act_on():
    assert printable("helmet ✓ 安全帽 café") == "helmet ✓ 安全帽 café"
    assert printable("a\x1b[2Jb\rc\u202ed\x7f") == "a\\x1b[2Jb\\x0dc\\u202ed\\x7f"


# ---------------------------------------------------------------------------------------------- clear errors

def test_predict_on_a_keras_model_says_to_export_it_first(trained_run, tmp_path):
    result = CliRunner().invoke(main, ["predict", str(trained_run / "model.keras"), str(_image(tmp_path))])
    assert result.exit_code != 0
    assert "edgeclf export" in result.output and "edgeclf evaluate" in result.output


def test_a_copied_artefact_keeps_working(exported, tmp_path):
    # The checks refuse hostile files only: every artefact export writes passes them.
    for r in exported[1]:
        path = tmp_path / r.path.name
        shutil.copyfile(r.path, path)
        assert Classifier.load(path).class_names == ("bar_h", "bar_v")
