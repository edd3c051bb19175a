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
    (lambda m: {**m, "schema_version": 2}, "schema version 2, written by a newer edgeclf"),
    (lambda m: {**m, "schema_version": "1"}, "'schema_version' is '1'"),
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


# ---------------------------------------------------------------------------------------------- video files

def test_a_truncated_video_file_is_reported_and_fails(exported, tmp_path):
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    rng = np.random.default_rng(0)
    for _ in range(60):
        writer.write(cv2.resize(class_image(0, rng, 16), (64, 64)))
    writer.release()
    whole = CliRunner().invoke(main, ["camera", "--model", str(_artefact(exported, "run_int8.tflite")), "--source",
                                      str(path), "--headless"])
    assert whole.exit_code == 0, whole.output
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # an AVI cut in half: its header still announces 60 frames
    cut = CliRunner().invoke(main, ["camera", "--model", str(_artefact(exported, "run_int8.tflite")), "--source",
                                    str(path), "--headless"])
    assert cut.exit_code == 1, cut.output
    summary = json.loads(next(line for line in cut.output.splitlines() if line.startswith('{"summary"')))["summary"]
    assert summary["truncated"] is True and "of the 60 frames its header announces" in summary["stopped_by"]
    assert summary["frames_read"] < 60


# ---------------------------------------------------------------------------------------------- folders and manifests

def _images(folder, label, n=4):
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(label)
    for i in range(n):
        Image.fromarray(class_image(label, rng)).save(folder / f"{label}_{i}.png")


def test_an_empty_class_folder_is_named_not_dropped_silently(tmp_path):
    from edgeclf.toolkit.data import discover

    _images(tmp_path / "ds" / "no_helmet", 0)
    _images(tmp_path / "ds" / "person", 1)
    (tmp_path / "ds" / "helmet").mkdir()
    ds = discover(tmp_path / "ds")
    assert ds.class_names == ["no_helmet", "person"]
    assert any("helmet in" in note and "no images" in note for note in ds.notes), ds.notes


def test_a_symlink_loop_is_not_a_class_and_is_not_walked_twice(tmp_path):
    from edgeclf.edge_runtime.sources import walk_images
    from edgeclf.toolkit.data import discover

    root = tmp_path / "ds"
    _images(root / "a", 0)
    _images(root / "b", 1)
    (root / "self").symlink_to(".", target_is_directory=True)
    (root / "a" / "up").symlink_to("..", target_is_directory=True)
    ds = discover(root)
    assert ds.class_names == ["a", "b"]
    assert len(ds.splits["all"].sources) == 8
    assert any("self" in note and "link back" in note for note in ds.notes)
    assert len(list(walk_images(root))) == 8  # predict's and --calib's walk: each image once


def test_a_linked_folder_is_followed_by_predict_and_train(exported, tmp_path):
    from edgeclf.toolkit.data import discover

    _images(tmp_path / "elsewhere" / "more", 0)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "linked").symlink_to(tmp_path / "elsewhere" / "more", target_is_directory=True)
    result = CliRunner().invoke(main, ["predict", str(_artefact(exported, "run_int8.tflite")), str(photos),
                                       "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    assert len([line for line in result.stdout.splitlines() if line.startswith("{")]) == 4
    root = tmp_path / "ds"
    _images(root / "a", 0)
    _images(root / "b", 1)
    (root / "a" / "linked").symlink_to(tmp_path / "elsewhere" / "more", target_is_directory=True)
    assert len(discover(root).splits["all"].sources) == 12


def test_manifest_rows_outside_its_folder_are_counted_and_refused_with_confine(tmp_path):
    from edgeclf.toolkit.data import discover

    _images(tmp_path / "data" / "imgs", 0)
    _images(tmp_path / "outside", 1)
    manifest = tmp_path / "data" / "m.csv"
    rows = ["path,label"] + [f"imgs/0_{i}.png,a" for i in range(4)] + [f"../outside/1_{i}.png,b" for i in range(4)]
    rows.append("/etc/passwd,b")
    manifest.write_text("\n".join(rows) + "\n")
    ds = discover(manifest)
    assert any(note.startswith("5 row(s) of m.csv name images outside its folder") for note in ds.notes), ds.notes
    with pytest.raises(DataError, match=r"m.csv:6: '../outside/1_0.png' is outside the manifest's folder"):
        discover(manifest, confine=True)


# ---------------------------------------------------------------------------------------------- leftovers and --force

def test_leftovers_of_a_killed_run_are_removed_and_only_those(tmp_path):
    from edgeclf.toolkit.io import remove_stale

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / f".edgeclf-tmp-{dead}-abc").mkdir()
    (folder / f".edgeclf-tmp-{dead}-abc" / "saved_model.pb").write_bytes(b"x" * 100)
    (folder / f".run_int8.tflite.pid{dead}.k2j3.part").write_bytes(b"")
    (folder / f".run.tflite.pid{__import__('os').getpid()}.zz.part").write_bytes(b"")  # this process: in use
    (folder / "notes.part").write_text("mine")
    (folder / ".hidden").write_text("mine")
    removed = remove_stale(folder)
    assert sorted(removed) == sorted([f".edgeclf-tmp-{dead}-abc", f".run_int8.tflite.pid{dead}.k2j3.part"])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".hidden", "notes.part", f".run.tflite.pid{__import__('os').getpid()}.zz.part"])


def test_export_works_inside_its_output_folder_not_the_system_temp(trained_run, tmp_path, monkeypatch):
    import tempfile

    from edgeclf.toolkit.export import ExportSpec, QuantSpec, export_model

    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    out = tmp_path / "out"
    seen = []
    from edgeclf.toolkit.export import tflite as tflite_export

    convert = tflite_export.convert

    def spy(saved_model, *args, **kwargs):
        seen.append(saved_model)
        return convert(saved_model, *args, **kwargs)

    monkeypatch.setattr(tflite_export, "convert", spy)
    export_model(trained_run / "model.keras", out, spec=ExportSpec(quant=(QuantSpec.float32(),), verify=False),
                 name="m")
    assert seen and all(str(p).startswith(str(out / ".edgeclf-tmp-")) for p in seen)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # nothing left behind
    assert not list(system_tmp.iterdir())


def test_train_force_keeps_the_old_run_until_the_new_one_has_finished(tmp_path):
    from edgeclf.toolkit.augment import AugmentSpec
    from edgeclf.toolkit.progress import Reporter
    from edgeclf.toolkit.train import TrainSpec, train

    data = tmp_path / "ds"
    _images(data / "a", 0, 12)
    _images(data / "b", 1, 12)
    run = tmp_path / "run"
    spec = TrainSpec(epochs=1, batch_size=8, augment=AugmentSpec.none())
    train(data, run, backbone="simple_cnn", img_size=16, weights="none", spec=spec)
    old = (run / "model.keras").read_bytes()

    class Killed(Reporter):
        def stage(self, message):
            if message.startswith("Fold 0 phase 1"):
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data, run, backbone="simple_cnn", img_size=16, weights="none", spec=TrainSpec(epochs=2, batch_size=8),
              force=True, reporter=Killed())
    assert (run / "model.keras").read_bytes() == old  # the failed replacement put the old run back
    assert json.loads((run / "run_state.json").read_text())["status"] == "done"
    assert not (run / ".edgeclf-replaced").exists()
    train(data, run, backbone="simple_cnn", img_size=16, weights="none", spec=TrainSpec(epochs=2, batch_size=8,
          augment=AugmentSpec.none()), force=True)
    assert json.loads((run / "run_state.json").read_text())["config"]["train"]["epochs"] == 2
    assert not (run / ".edgeclf-replaced").exists()


def test_a_credentialed_stream_that_plays_and_drops_never_shows_its_password(exported, tmp_path):
    """A stream URL with user and password that really plays (a local HTTP server), then ends: the events, the
    snapshots, the summary, the reconnection warnings and the --verbose log are searched for the password."""
    import http.server
    import threading

    cv2 = pytest.importorskip("cv2")
    import numpy as np

    clip = tmp_path / "site" / "clip.avi"
    clip.parent.mkdir()
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    rng = np.random.default_rng(0)
    for label in [0] * 6 + [1] * 6:
        writer.write(cv2.resize(class_image(label, rng, 16)[:, :, ::-1], (64, 64), interpolation=cv2.INTER_NEAREST))
    writer.release()

    served = []

    class Once(http.server.SimpleHTTPRequestHandler):
        """Serves the clip once; then the stream is gone (404), so the camera reconnects and gives up."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(clip.parent), **kwargs)

        def do_GET(self):
            if served:
                self.send_error(404)
                return
            served.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Once)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://admin:{SECRET}@127.0.0.1:{server.server_address[1]}/clip.avi"
        events, snaps = tmp_path / "events.jsonl", tmp_path / "snaps"
        proc = _edgeclf("--verbose", "camera", "--model", str(_artefact(exported, "run_int8.tflite")), "--source", url,
                        "--headless", "--events", str(events), "--snapshot-dir", str(snaps), "--alert", "bar_v",
                        "--min-frames", "1", "--max-reconnects", "1", timeout=120)
    finally:
        server.shutdown()
    written = events.read_text() if events.exists() else ""
    names = " ".join(p.name for p in snaps.iterdir()) if snaps.exists() else ""
    assert written.count('"label"') >= 1, proc.stderr[-2000:]  # it did play
    for text in (proc.stdout, proc.stderr, written, names):
        assert SECRET not in text
    assert "admin:***@127.0.0.1" in proc.stderr  # the reconnection warnings name the source, masked


# ---------------------------------------------------------------------------------------------- cases that pass already
# Kept here so they stay passing: each is one hostile input the runtime must survive with one clear line.

def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels and holds no image data (a decompression bomb's
    first bytes)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def test_hostile_images_are_failed_records_and_the_batch_goes_on(exported, tmp_path):
    import io

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image_ = pytest.importorskip("PIL.Image")
    good = folder / "good.png"
    Image_.fromarray(class_image(0, __import__("numpy").random.default_rng(0))).save(good)
    (folder / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    Image_.new("RGB", (64, 64), (200, 10, 10)).save(buf, "JPEG")
    (folder / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "notes.jpg").write_text("not an image at all")
    (folder / "bomb.png").write_bytes(_png_header(60000, 60000))
    result = CliRunner().invoke(main, ["predict", str(_artefact(exported, "run_int8.tflite")), str(folder),
                                       "--format", "jsonl"])
    assert result.exit_code == 1
    records = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in result.stdout.splitlines()}
    assert set(records) == {"good.png", "empty.png", "cut.jpg", "notes.jpg", "bomb.png"}
    assert "label" in records["good.png"]
    assert all("error" in records[n] for n in ("empty.png", "cut.jpg", "notes.jpg", "bomb.png"))
    assert "decompression bomb" in records["bomb.png"]["error"]


@pytest.mark.parametrize("name", ["garbage.tflite", "garbage.onnx"])
def test_a_corrupt_model_file_is_one_line(tmp_path, name):
    model = tmp_path / name
    model.write_bytes(b"\x00\x01not a model" * 50)
    for args in (["predict", str(model), str(tmp_path)], ["info", str(model)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code != 0
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "unexpected" not in result.output and "Traceback" not in result.output


def test_onnx_external_data_outside_the_model_folder_is_not_read(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 16)
    folder = tmp_path / "models"
    folder.mkdir()
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    path = folder / "traversal.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(DataError, match="escapes model directory") as e:
        Classifier.load(path)
    assert "\n" not in str(e.value)
