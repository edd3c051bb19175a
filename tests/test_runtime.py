"""The edge runtime: Classifier, streaming, path expansion and ``edgeclf predict``; no TensorFlow."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import run_python
from edgeclf.cli import main
from edgeclf.edge_runtime import ConfigError, DataError, ImageDecodeError, load_image
from edgeclf.edge_runtime.backends import open_backend
from edgeclf.edge_runtime.classifier import Classifier, distinct_names, stream_many
from edgeclf.edge_runtime.sources import expand_paths


def _artefact(exported, name):
    run, results = exported
    return next(r.path for r in results if r.path.name == name)


def _images(exported):
    run, _ = exported
    return sorted((run.parent / "data").rglob("*.png"))


def test_classifier_reads_everything_from_the_file(exported):
    c = Classifier.load(_artefact(exported, "run_int8.tflite"), threads=1)
    assert c.class_names == ("bar_h", "bar_v")
    assert c.preprocess.size == (16, 16)
    assert c.metadata["quantization"]["mode"] == "int8"
    # the same metadata, typed
    assert (c.info.format, c.info.quantization["mode"], c.info.input.dtype) == ("tflite", "int8", "uint8")
    assert c.info.class_names == c.class_names and c.info.schema_version == 1
    assert 0.5 <= c.info.fidelity["agreement"] <= 1.0
    assert repr(c) == f"Classifier('{c.path}', tflite int8, input 16x16, classes ['bar_h', 'bar_v'])"


def test_classify_matches_the_backend_and_keras(exported):
    import keras

    run, results = exported
    files = _images(exported)[:5] + _images(exported)[-5:]
    model = keras.models.load_model(run / "model.keras", safe_mode=True)
    pixels = np.stack([load_image(f, Classifier.load(results[0].path).preprocess) for f in files])
    reference = np.asarray(model(pixels.astype("float32")))
    for r in results:
        c = Classifier.load(r.path, threads=1)
        got = np.stack([x.probabilities for x in c.classify(files)])
        # Same code path as the export gate: identical to the backend on the same pixels.
        np.testing.assert_array_equal(got, open_backend(r.path, threads=1).run(pixels))
        assert (got.argmax(1) == reference.argmax(1)).all()


def test_runtime_agrees_with_the_export_gate_figures(exported):
    run, results = exported
    import csv

    with open(run / "splits.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    files = [run.parent / "data" / r["path"] for r in rows]
    for r in results:
        c = Classifier.load(r.path, threads=1)
        probs = np.stack([x.probabilities for x in c.classify(files)])
        labels = np.array([c.class_names.index(row["label"]) for row in rows])
        assert float((probs.argmax(1) == labels).mean()) == pytest.approx(r.fidelity["accuracy"])


def test_top_k_and_threshold(exported):
    c = Classifier.load(_artefact(exported, "run_fp32.onnx"))
    result = c.classify([_images(exported)[0]])[0]
    top = result.top(2)
    assert [p.index for p in top] == list(np.argsort(-result.probabilities))
    assert top[0].score >= top[1].score
    assert result.probabilities[1] < 1.0
    assert result.decide(0.0).label == "bar_v" and result.decide(1.0).label == "bar_h"
    for bad in (1.01, 50, -0.1):  # a percentage or a typo would silently decide every image one way
        with pytest.raises(ConfigError, match="between 0 and 1"):
            result.decide(bad)


def test_stream_keeps_order_reports_bad_images_and_bounds_memory(exported, tmp_path):
    c = Classifier.load(_artefact(exported, "run_int8.tflite"), threads=1)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    files = _images(exported)[:20]
    items = files[:7] + [bad] + files[7:]
    pulled = []

    def source():
        for f in items:
            pulled.append(f)
            yield f

    seen = []
    for i, (item, result) in enumerate(c.stream(source(), batch_size=4, workers=2)):
        assert len(pulled) - i <= 2 * 4 + 4 + 1  # read-ahead is bounded, whatever the input size
        seen.append((item, result))
    assert [s[0] for s in seen] == items
    assert isinstance(seen[7][1], ImageDecodeError) and seen[7][1].reason == "empty file (0 bytes)"
    assert all(not isinstance(r, ImageDecodeError) for _, r in seen[:7] + seen[8:])


def test_classify_takes_pil_images_bytes_and_generators_and_refuses_one_image(exported, tmp_path):
    from PIL import Image

    from edgeclf.edge_runtime import decode_image, resize_pixels

    c = Classifier.load(_artefact(exported, "run_fp32.tflite"), threads=1)
    photo = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; upright is 48 x 64
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photo, exif=exif)
    upright = resize_pixels(decode_image(photo), c.preprocess)  # full-size decode, EXIF applied: no draft scale
    expected = c.classify_pixels(upright[None])[0].probabilities

    img = Image.open(photo)
    got = c.classify([img])[0].probabilities
    np.testing.assert_array_equal(got, expected)
    assert img.size == (64, 48) and img.getexif()[0x0112] == 6  # the caller's image is not drafted or rotated
    img.load()  # nor closed
    encoded = photo.read_bytes()
    for same in (bytearray(encoded), memoryview(encoded), io.BytesIO(encoded), str(photo)):
        np.testing.assert_allclose(c.classify([same])[0].probabilities, c.classify([encoded])[0].probabilities)
    assert len(c.classify(p for p in [photo, photo])) == 2 and c.classify([]) == []

    for one in (str(photo), photo, img, upright, encoded):
        with pytest.raises(ConfigError, match=r"one image .* For one image: classify\(\[image\]\)"):
            c.classify(one)
        with pytest.raises(ConfigError, match="stream"):
            next(c.stream(one))
    with pytest.raises(ConfigError, match="type int. Expected a path"):
        c.classify([3])
    # OpenCV images are BGR: bgr=True gives the same result as the RGB array, and without it the colours swap.
    bgr = np.ascontiguousarray(upright[:, :, ::-1])
    np.testing.assert_array_equal(c.classify([bgr], bgr=True)[0].probabilities, expected)
    np.testing.assert_array_equal(next(c.stream([bgr], bgr=True))[1].probabilities, expected)
    assert not np.array_equal(c.prepare(bgr), c.prepare(upright))


def test_several_models_share_one_decode(exported):
    a = Classifier.load(_artefact(exported, "run_fp32.tflite"))
    b = Classifier.load(_artefact(exported, "run_int8.onnx"))
    out = list(stream_many([a, b], _images(exported)[:3], batch_size=2))
    assert len(out) == 3 and all(len(results) == 2 for _, results in out)


def test_file_without_metadata_is_refused(tmp_path):
    (tmp_path / "x.tflite").write_bytes(b"garbage")
    with pytest.raises(DataError):
        Classifier.load(tmp_path / "x.tflite")
    with pytest.raises(ConfigError, match="Expected a .tflite or .onnx"):
        Classifier.load(__file__)
    with pytest.raises(DataError, match="a folder. Expected a .tflite or .onnx file .*takes the model first"):
        Classifier.load(tmp_path)  # `predict photos/ model.tflite`: the arguments the wrong way round


def test_metadata_asking_for_another_input_range_is_refused_not_ignored(exported, tmp_path):
    from edgeclf.edge_runtime.artifact import read_tflite_metadata, write_tflite_metadata

    data = _artefact(exported, "run_fp32.tflite").read_bytes()
    meta = read_tflite_metadata(data)
    meta["preprocess"]["value_range"] = [-1.0, 1.0]  # a model that wants x/127.5-1 fed to it
    path = tmp_path / "wants_minus1_1.tflite"
    path.write_bytes(write_tflite_metadata(data, meta))
    with pytest.raises(DataError, match=r"wants_minus1_1.tflite: .*value_range=\(-1.0, 1.0\). Supported: \(0, 255\)"):
        Classifier.load(path)


def test_expand_paths(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / ".thumbs").mkdir()
    for name in ("a/1.jpg", "a/b/2.png", "a/notes.txt", "3.webp", "a/._1.jpg", "a/.thumbs/1.jpg"):
        (tmp_path / name).write_bytes(b"x")
    got = list(expand_paths([str(tmp_path / "a"), str(tmp_path / "*.webp"), str(tmp_path / "missing.jpg"), "-",
                             str(tmp_path / "a" / "._1.jpg")],
                            io.StringIO(f"{tmp_path}/from_stdin.png\n\n")))
    # Hidden files inside a folder are left out (macOS ._ resource forks would each fail); named, one is kept.
    assert got == [str(tmp_path / "a" / "1.jpg"), str(tmp_path / "a" / "b" / "2.png"), str(tmp_path / "3.webp"),
                   str(tmp_path / "missing.jpg"), f"{tmp_path}/from_stdin.png", str(tmp_path / "a" / "._1.jpg")]


def test_predict_cli_jsonl_with_a_bad_file(exported, tmp_path):
    model = _artefact(exported, "run_int8.tflite")
    files = [str(f) for f in _images(exported)[:3]]
    result = CliRunner().invoke(main, ["predict", str(model), *files, str(tmp_path / "gone.jpg"),
                                       str(tmp_path / "*.nomatch"), "--format", "jsonl"])
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records.pop() == {"path": str(tmp_path / "*.nomatch"), "error": "no file matches this pattern"}
    assert [r["path"] for r in records] == files + [str(tmp_path / "gone.jpg")]
    assert records[-1]["error"].startswith("unreadable")
    assert set(records[0]["scores"]) == {"bar_h", "bar_v"} and records[0]["label"] in ("bar_h", "bar_v")
    labels = [r["label"] for r in records[:3]]
    tally = ", ".join(f"{name} {labels.count(name)}" for name in ("bar_h", "bar_v") if labels.count(name))
    assert f"5 image(s), 2 failed; {tally}\n" in result.stderr  # what the folder held, by decided label


def test_predict_cli_reports_a_folder_without_images(exported, tmp_path):
    import pillow_heif
    from PIL import Image

    model = str(_artefact(exported, "run_int8.tflite"))
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "VID_0001.MOV").write_bytes(b"x")
    (tmp_path / "videos" / "._IMG_0002.jpg").write_bytes(b"x")
    (tmp_path / "blank").mkdir()
    (tmp_path / "iphone").mkdir()  # phone photos are read (through pillow-heif)
    heic = tmp_path / "iphone" / "IMG_0003.HEIC"
    pillow_heif.from_pillow(Image.open(_images(exported)[0]).convert("RGB")).save(str(heic), quality=95)
    image = str(_images(exported)[0])
    result = CliRunner().invoke(main, ["predict", model, str(tmp_path / "videos"), str(tmp_path / "blank"), image,
                                       str(tmp_path / "iphone"), "--format", "jsonl"])
    assert result.exit_code == 1  # a folder that gave nothing was a mistake, not a success with no output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == [str(tmp_path / "videos"), str(tmp_path / "blank"), image, str(heic)]
    assert records[0]["error"].startswith("no image files in this folder or below; it holds only .mov files.")
    assert records[1]["error"].startswith("no image files in this folder or below. Readable types: .jpg")
    assert "label" in records[2] and records[3]["label"] == records[2]["label"]
    listed = CliRunner().invoke(main, ["predict", model, "-", "--format", "jsonl"], input=str(exported[0]) + "\n")
    assert json.loads(listed.stdout)["error"].startswith("a folder, not an image")


def test_predict_prints_file_names_that_are_not_utf8(exported, tmp_path):
    import os
    import shutil

    folder = tmp_path / "latin1"
    folder.mkdir()
    try:
        shutil.copy(_images(exported)[0], os.fsencode(folder) + b"/caf\xe9.png")
    except OSError:
        pytest.skip("this file system only takes UTF-8 names")
    model = str(_artefact(exported, "run_int8.tflite"))
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict")  # a UTF-8 terminal, not the C locale's escapes
    for fmt in ("csv", "jsonl", "table"):
        out = subprocess.run([sys.executable, "-m", "edgeclf.cli", "predict", model, str(folder), "--format", fmt],
                             capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr  # was UnicodeEncodeError on the first such name, ending the batch
        assert f"{folder}/caf\\xe9.png" in out.stdout.replace("\\\\", "\\"), out.stdout
    # The same name in a list on stdin (`find ... | edgeclf predict MODEL -`) was an UnicodeDecodeError.
    listed = subprocess.run([sys.executable, "-m", "edgeclf.cli", "predict", model, "-", "--format", "csv"],
                            input=os.fsencode(folder) + b"/caf\xe9.png\n", capture_output=True, env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert b"caf\\xe9.png,bar_" in listed.stdout


def test_ctrl_c_ends_predict_with_a_count_and_no_traceback(exported):
    import os
    import signal

    model = str(_artefact(exported, "run_int8.tflite"))
    proc = subprocess.Popen([sys.executable, "-m", "edgeclf.cli", "predict", model, "-", "--format", "jsonl"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.stdin.write(b"".join(os.fsencode(f) + b"\n" for f in _images(exported)[:5]))
    proc.stdin.flush()  # stdin stays open: after these it waits for more paths
    first = proc.stdout.readline()  # a record is out, so the command is inside its loop
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and json.loads(first)["label"]
    assert re.search(r"Interrupted after [1-5] image\(s\), 0 failed; every record written is complete", err.decode())
    assert b"Traceback" not in err and b"resume" not in err  # predict has nothing to resume


def test_predict_answers_each_path_from_stdin_while_it_waits_for_the_next(exported):
    """A program that feeds paths one at a time and waits for each record: the read-ahead held the last few back
    until more input came (a deadlock for such a feeder), and CSV rows sat in Python's buffer."""
    import os
    import select

    model = str(_artefact(exported, "run_int8.tflite"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as a user's shell has it
    for fmt in ("csv", "jsonl"):
        proc = subprocess.Popen([sys.executable, "-m", "edgeclf.cli", "predict", model, "-", "--format", fmt],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        try:
            if fmt == "csv":
                assert select.select([proc.stdout], [], [], 60)[0], "no CSV header"
            for image in _images(exported)[:2]:
                proc.stdin.write(os.fsencode(image) + b"\n")
                proc.stdin.flush()  # stdin stays open: it waits for more paths
                lines = []
                while not lines or str(image) not in lines[-1]:
                    assert select.select([proc.stdout], [], [], 60)[0], f"{fmt}: no record for {image.name}"
                    lines.append(proc.stdout.readline().decode())
        finally:
            proc.kill()
            proc.wait()


def test_stream_yields_what_it_holds_when_the_source_is_idle(exported):
    from edgeclf.edge_runtime.sources import INPUT_IDLE

    clf = Classifier.load(_artefact(exported, "run_int8.tflite"), threads=1)
    images = [str(f) for f in _images(exported)[:3]]
    got = []

    def source():  # hands out two images, says it has nothing more for now, then checks both came back
        yield images[0]
        yield images[1]
        yield INPUT_IDLE
        assert [item for item, _ in got] == images[:2]
        yield images[2]

    for batch_size in (1, 8):
        got.clear()
        for item, results in stream_many([clf], source(), batch_size=batch_size, workers=2):
            got.append((item, results))
        assert [item for item, _ in got] == images and all(r[0].top(1)[0].label for _, r in got)


def test_expand_paths_says_when_stdin_has_nothing_ready():
    import os

    from edgeclf.edge_runtime.sources import INPUT_IDLE

    read_end, write_end = os.pipe()
    os.write(write_end, b"a.jpg\nb.jpg\n")
    with os.fdopen(read_end, "r") as stdin:
        paths = expand_paths(["-"], stdin, idle=True)
        assert [next(paths), next(paths), next(paths)] == ["a.jpg", "b.jpg", INPUT_IDLE]
        os.write(write_end, b"c.jpg")  # no newline: the last line still counts
        os.close(write_end)
        assert list(paths) == ["c.jpg"]
    assert list(expand_paths(["-"], io.StringIO("a.jpg\n"), idle=True)) == ["a.jpg"]  # not a pipe: no marker


def test_predict_records_to_a_pipe_go_out_together(exported, monkeypatch):
    """Not one write (a system call, with PYTHONUNBUFFERED) per record: gathered, and written within a second."""
    from edgeclf.cli import _PredictionWriter

    clf = Classifier.load(_artefact(exported, "run_int8.tflite"), threads=1)
    writes = []
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(write=writes.append, flush=lambda: None))
    results = [[r] for r in clf.classify([str(f) for f in _images(exported)[:3]])]
    for fmt, lines in (("jsonl", 3), ("csv", 4)):  # CSV: a header row, then one row per record
        writes.clear()
        writer = _PredictionWriter(fmt, [clf], top_k=1, threshold=None, live=False)
        for f, r in zip(_images(exported), results):
            writer.write(str(f), r)
        assert writes == []
        writer.flush()
        assert len(writes) == 1 and writes[0].count("\n") == lines
        writer.flushed -= writer.FLUSH_EVERY_S  # a second on
        writer.write("late.png", results[0])
        assert len(writes) == 2 and "late.png" in writes[1]
    live = _PredictionWriter("jsonl", [clf], top_k=1, threshold=None, live=True)
    live.write("now.png", results[0])
    assert "now.png" in writes[-1]


@pytest.mark.parametrize("buffering", [-1, 0], ids=["buffered", "unbuffered"])
def test_records_to_a_full_non_blocking_pipe_wait_for_the_reader(monkeypatch, buffering):
    """A stdout that whoever shares the pipe made non-blocking: once the pipe is full, the rest waits for the reader
    (buffered, as Python's own stdout, it failed with BlockingIOError; unbuffered, it spun until the reader came)."""
    import os
    import threading
    import time

    from edgeclf.cli import _write_all

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    out = io.TextIOWrapper(open(write_end, "wb", buffering=buffering), encoding="utf-8", write_through=True)
    monkeypatch.setattr(sys, "stdout", out)
    text = "".join(f'{{"path": "photos/img_{i:06d}.jpg", "label": "bar_h"}}\n' for i in range(20000))
    got = []

    def read():
        time.sleep(0.3)  # the pipe (64 KiB) fills long before
        with open(read_end, "rb") as fh:
            got.append(fh.read())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        _write_all(text)
        _write_all("last\n")
    finally:
        out.close()
        reader.join(timeout=60)
    assert got[0].decode() == text + "last\n"


def test_predict_whose_reader_is_gone_before_its_last_flush_stops_quietly(exported):
    """Records short of a pipe buffer are flushed once, at the end: a reader gone by then is still exit 141."""
    import os

    model = str(_artefact(exported, "run_int8.tflite"))
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first flush fails
    proc = subprocess.run([sys.executable, "-m", "edgeclf.cli", "predict", model, str(_images(exported)[0]),
                           "--format", "jsonl"], stdout=write_end, stderr=subprocess.PIPE, timeout=120)
    os.close(write_end)
    assert proc.returncode == 141 and b"Error" not in proc.stderr and b"Exception" not in proc.stderr, proc.stderr


def test_predict_command_exits_without_teardown_only_after_finishing(exported, tmp_path):
    """The console command skips Python's teardown once predict has written everything (~15 ms of a one-image
    call); every record, the summary and the exit code are there, and any other ending exits as usual."""
    model = str(_artefact(exported, "run_int8.tflite"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    code = ("import atexit, sys; atexit.register(lambda: sys.stderr.write('TEARDOWN\\n'))\n"
            "from edgeclf.cli import run\n"
            "sys.argv = ['edgeclf', 'predict'] + sys.argv[1:]\n"
            "run()\n")

    def edgeclf(*args):
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)

    images = [str(f) for f in _images(exported)[:3]]
    for fmt, extra, exit_code in (("jsonl", [], 0), ("csv", [str(bad)], 1)):
        proc = edgeclf(model, *images, *extra, "--format", fmt)
        assert proc.returncode == exit_code, proc.stderr
        assert "TEARDOWN" not in proc.stderr
        lines = proc.stdout.splitlines()
        assert len(lines) == len(images) + len(extra) + (fmt == "csv"), proc.stdout
        if fmt == "jsonl":
            assert [json.loads(line)["path"] for line in lines] == images
        assert f"{len(images) + len(extra)} image(s), {len(extra)} failed" in proc.stderr
    for args, exit_code in (([model, str(tmp_path / "missing.jpg"), "--top-k", "0"], 2), (["--help"], 0),
                            ([model], 2)):
        proc = edgeclf(*args)
        assert proc.returncode == exit_code and "TEARDOWN" in proc.stderr, (args, proc.stderr)


def test_predict_cli_several_models_csv_and_stdin(exported):
    a, b = _artefact(exported, "run_fp32.tflite"), _artefact(exported, "run_int8.onnx")
    files = "\n".join(str(f) for f in _images(exported)[:4]) + "\n"
    result = CliRunner().invoke(main, ["predict", "--model", str(a), "--model", str(b), "-", "--format", "csv"],
                                input=files)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("path,run_fp32.label,run_fp32.score,") and "run_int8.label" in lines[0]
    assert len(lines) == 5
    assert "4 image(s), 0 failed; run_fp32: " in result.stderr and "; run_int8: " in result.stderr


def test_predict_cli_models_sharing_a_name_keep_separate_results(exported):
    tflite, onnx = _artefact(exported, "run_int8.tflite"), _artefact(exported, "run_int8.onnx")
    image = str(_images(exported)[0])
    result = CliRunner().invoke(main, ["predict", "--model", str(tflite), "--model", str(onnx), "--model", str(onnx),
                                       image, "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    models = json.loads(result.stdout)["models"]
    assert list(models) == ["run_int8.tflite", "run_int8.onnx", "run_int8.onnx#2"]
    assert models["run_int8.onnx"] == models["run_int8.onnx#2"]
    csv_out = CliRunner().invoke(main, ["predict", "--model", str(tflite), "--model", str(onnx), image,
                                        "--format", "csv"])
    header = csv_out.stdout.splitlines()[0].split(",")
    assert len(header) == len(set(header)) and "run_int8.onnx.label" in header


def test_distinct_names_escalate_only_where_names_clash(exported, tmp_path):
    import shutil

    fp32, int8 = _artefact(exported, "run_fp32.tflite"), _artefact(exported, "run_int8.tflite")
    (tmp_path / "other").mkdir()
    copy = shutil.copy(int8, tmp_path / "other" / int8.name)
    classifiers = [Classifier.load(p, threads=1) for p in (fp32, int8, copy)]
    distinct_names(classifiers)
    assert [c.name for c in classifiers] == ["run_fp32", f"{int8.parent.name}/run_int8.tflite",
                                             "other/run_int8.tflite"]


def test_predict_cli_usage_errors(exported):
    model = str(_artefact(exported, "run_fp32.onnx"))
    for option in ("--threads", "--workers"):  # 0 used to mean "all cores" silently, -1 crashed
        for value in ("0", "-1"):
            bad = CliRunner().invoke(main, ["predict", model, str(_images(exported)[0]), option, value])
            assert bad.exit_code == 2 and "x>=1" in bad.output, bad.output
    with pytest.raises(ConfigError, match="threads=0"):
        Classifier.load(model, threads=0)
    with pytest.raises(ConfigError, match="workers=0"):
        list(stream_many([Classifier.load(model, threads=1)], [], workers=0))
    no_images = CliRunner().invoke(main, ["predict", model])
    assert no_images.exit_code == 2 and "no images" in no_images.output
    top0 = CliRunner().invoke(main, ["predict", model, str(_images(exported)[0]), "--top-k", "0"])
    assert top0.exit_code == 2
    percent = CliRunner().invoke(main, ["predict", model, str(_images(exported)[0]), "--threshold", "50"])
    assert percent.exit_code == 2 and "0<=x<=1" in percent.output, percent.output
    other = str(_artefact(exported, "run_int8.tflite"))
    for args in ([model, other, str(_images(exported)[0])], ["--model", model, other, str(_images(exported)[0])]):
        stray = CliRunner().invoke(main, ["predict", *args, "--format", "csv"])  # was a record "not an image"
        assert stray.exit_code == 2 and f"the model file '{other}' among the images" in stray.output, stray.output
        assert "--model A.tflite --model B.onnx" in stray.output and ".png," not in stray.output


def test_predict_in_a_fresh_process_never_imports_tensorflow(exported):
    """Nor OpenSSL (``_hashlib``): 3.7 MiB of resident memory that classifying images does not need; nor, on Linux,
    ``tempfile`` (with ``shutil``, 6 ms of every start-up) to keep LiteRT's notice off the terminal."""
    model = _artefact(exported, "run_int8.tflite")
    image = _images(exported)[0]
    unwanted = ("tensorflow", "keras", "_hashlib") + (("tempfile", "shutil") if sys.platform == "linux" else ())
    code = ("import sys\n"
            "from edgeclf.cli import main\n"
            f"sys.argv = ['edgeclf', 'predict', {str(model)!r}, {str(image)!r}, '--format', 'jsonl']\n"
            "try:\n"
            "    main()\n"
            "except SystemExit as exc:\n"
            "    assert exc.code == 0, exc.code\n"
            f"print('imported:', *(m for m in {unwanted!r} if m in sys.modules))\n")
    out = run_python(code)
    record, modules = out.stdout.splitlines()
    assert json.loads(record)["path"] == str(image)
    assert modules == "imported:", out.stdout


def test_predict_stops_quietly_when_its_reader_goes_away(exported):
    """``edgeclf predict ... | head -1``: exit 141 like a tool killed by SIGPIPE, and no error on stderr."""
    import fcntl
    import os

    model = _artefact(exported, "run_int8.tflite")
    folder = _images(exported)[0].parent.parent
    plain = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    # PYTHONUNBUFFERED: Python's text layer ignored the short write to a pipe whose reader left (exit 0, output cut)
    for env in (plain, {**plain, "PYTHONUNBUFFERED": "1"}):
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # the output (~100 records) cannot all fit: writes block
        proc = subprocess.Popen([sys.executable, "-m", "edgeclf.cli", "predict", str(model), str(folder), "--format",
                                 "jsonl"], stdout=write_end, stderr=subprocess.PIPE, env=env)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            first = reader.readline()
        _, err = proc.communicate(timeout=120)
        assert json.loads(first)["path"].endswith(".png")
        assert proc.returncode == 141 and b"Error" not in err and b"Traceback" not in err, err.decode()


@pytest.mark.parametrize("memfd", [True, False], ids=["memfd", "temporary-file"])
def test_native_notices_are_dropped_and_other_native_output_kept(memfd):
    code = ("import os\n"
            + ("" if memfd else "os.__dict__.pop('memfd_create', None)  # as on macOS, Windows, old kernels\n") +
            "from edgeclf.edge_runtime.native_log import quiet_native_log\n"
            "from edgeclf.edge_runtime.backends.litert import LITERT_NOTICES\n"
            "with quiet_native_log(LITERT_NOTICES):\n"
            "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\nWARNING: kept\\n')\n"
            "try:\n"
            "    with quiet_native_log(LITERT_NOTICES):\n"
            "        os.write(2, b'ERROR: also kept\\n')\n"
            "        raise ValueError\n"
            "except ValueError:\n"
            "    os.write(2, b'stderr restored\\n')\n")
    assert run_python(code).stderr == "WARNING: kept\nERROR: also kept\nstderr restored\n"


def test_predict_command_prints_no_runtime_log_noise(exported):
    model = _artefact(exported, "run_int8.tflite")
    out = subprocess.run([sys.executable, "-m", "edgeclf.cli", "predict", str(model), str(_images(exported)[0]),
                          "--format", "jsonl"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    label = json.loads(out.stdout)["label"]
    assert out.stderr == f"1 image(s), 0 failed; {label} 1\n"  # the summary and nothing else


def test_missing_backend_library_names_the_install_command(exported):
    model = _artefact(exported, "run_int8.tflite")
    code = ("import sys\n"
            "sys.modules['ai_edge_litert'] = None; sys.modules['ai_edge_litert.interpreter'] = None\n"
            "sys.modules['tflite_runtime'] = None; sys.modules['tflite_runtime.interpreter'] = None\n"
            "from edgeclf.edge_runtime import Classifier, BackendUnavailableError\n"
            "try:\n"
            f"    Classifier.load({str(model)!r})\n"
            "except BackendUnavailableError as exc:\n"
            "    print(exc)\n")
    out = run_python(code)
    assert "pip install 'edgeclf[runtime-litert]'" in out.stdout and "ai-edge-litert" in out.stdout


@pytest.mark.parametrize("fmt, mode, reduce_range, cpu_needs_it, warned", [
    ("onnx", "int8", False, True, True),  # 8-bit weights on an x86 CPU without VNNI: saturates
    ("onnx", "int8", True, True, False),  # exported for such a CPU
    ("onnx", "int8", False, False, False),  # a VNNI or ARM CPU runs 8-bit weights exactly
    ("onnx", "fp32", None, True, False),
    ("tflite", "int8", None, True, False),  # LiteRT's int8 kernels do not have this problem
])
def test_an_int8_onnx_file_with_8bit_weights_is_flagged_on_a_cpu_without_vnni(monkeypatch, fmt, mode, reduce_range,
                                                                             cpu_needs_it, warned):
    import edgeclf.edge_runtime.classifier as classifier

    monkeypatch.setattr(classifier, "needs_reduce_range", lambda: cpu_needs_it)
    quant = {"mode": mode} if reduce_range is None else {"mode": mode, "reduce_range": reduce_range}
    messages = classifier.deployment_warnings({"format": fmt, "quantization": quant}, Path(f"m_{mode}.{fmt}"))
    assert len(messages) == int(warned)
    if warned:
        assert "--reduce-range on" in messages[0] and f"m_{mode}.{fmt}" in messages[0]


def test_predict_says_when_an_artefact_may_be_less_faithful_here(exported, monkeypatch):
    import edgeclf.edge_runtime.classifier as classifier

    onnx_int8 = _artefact(exported, "run_int8.onnx")
    exported_for_vnni = Classifier.load(onnx_int8).metadata["quantization"]["reduce_range"] is False
    # this machine's CPU decided reduce_range at export; pretend to be the CPU that would mind, or could not
    monkeypatch.setattr(classifier, "needs_reduce_range", lambda: exported_for_vnni)
    args = ["predict", str(onnx_int8), str(_images(exported)[0])]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert ("has 8-bit int8 weights" in result.output) is exported_for_vnni
    monkeypatch.setattr(classifier, "needs_reduce_range", lambda: False)
    assert "has 8-bit int8 weights" not in CliRunner().invoke(main, args).output
