"""The device side on committed exported models (``tests/data/runtime/``, made by ``make_runtime_fixtures.py``).

These tests need only ``pip install 'edgeclf[runtime]'`` and pytest: CI runs them first in such an environment,
which also proves the extra is complete. They never import TensorFlow or Keras.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import class_image, write_class_folders
from edgeclf.cli import main
from edgeclf.edge_runtime import Classifier

FIXTURES = Path(__file__).resolve().parent / "data" / "runtime"
MODELS = sorted(FIXTURES.glob("bars_*.*"))
CLASSES = ("bar_h", "bar_v")


def test_the_fixtures_are_there():
    assert {p.name for p in MODELS} == {"bars_fp32.tflite", "bars_int8.tflite", "bars_fp32.onnx", "bars_int8.onnx"}


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_each_artefact_classifies_the_images_it_was_trained_for(model):
    clf = Classifier.load(model, threads=1)
    assert clf.class_names == CLASSES and (clf.preprocess.height, clf.preprocess.width) == (16, 16)
    rng = np.random.default_rng(11)
    images = [class_image(label, rng) for label in (0, 1) * 10]
    results = clf.classify(images)
    accuracy = np.mean([r.best.index == label for r, label in zip(results, (0, 1) * 10)])
    assert accuracy >= 0.9, accuracy
    for r in results:
        assert r.probabilities.shape == (2,) and abs(float(r.probabilities.sum()) - 1) < 0.02


def test_predict_writes_one_record_per_image_and_reports_a_bad_file(tmp_path):
    folder = write_class_folders(tmp_path / "imgs", {"bar_h": 3, "bar_v": 3})
    (folder / "bar_h" / "broken.png").write_bytes(b"not a png")
    model = FIXTURES / "bars_int8.tflite"
    result = CliRunner().invoke(main, ["predict", str(model), str(folder), "--format", "jsonl"])
    assert result.exit_code == 1  # one image failed
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 7
    assert sum("error" in r for r in records) == 1
    good = [r for r in records if "error" not in r]
    assert sum(r["label"] == Path(r["path"]).parent.name for r in good) >= 5


def test_info_describes_the_file_from_its_own_metadata():
    result = CliRunner().invoke(main, ["info", str(FIXTURES / "bars_int8.onnx")])
    assert result.exit_code == 0, result.output
    assert "classes       2: bar_h, bar_v" in result.output and "gate          passed" in result.output


def test_camera_reads_a_video_file_and_reports_class_changes(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"png "), 10, (64, 64))
    rng = np.random.default_rng(0)
    for label in [0] * 8 + [1] * 8:
        writer.write(cv2.resize(class_image(label, rng)[:, :, ::-1], (64, 64), interpolation=cv2.INTER_NEAREST))
    writer.release()
    result = CliRunner().invoke(main, ["camera", "--model", str(FIXTURES / "bars_fp32.tflite"), "--source",
                                       str(path), "--headless"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"time"')]
    assert [e["label"] for e in events] == ["bar_h", "bar_v"]


def test_the_command_runs_without_tensorflow(tmp_path):
    image = tmp_path / "img.png"
    Image.fromarray(class_image(1, np.random.default_rng(0))).save(image)
    code = ("import sys\n"
            "sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
            "from edgeclf.cli import main\n"
            f"main(['predict', {str(FIXTURES / 'bars_int8.tflite')!r}, {str(image)!r}, '--format', 'jsonl'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["label"] in CLASSES


def test_predict_reads_a_manifest_of_paths_relative_to_it(tmp_path):
    folder = write_class_folders(tmp_path / "imgs", {"bar_h": 2, "bar_v": 2})
    manifest = tmp_path / "list.csv"
    names = sorted(p.relative_to(tmp_path).as_posix() for p in folder.rglob("*.png"))
    manifest.write_text("label,path\n" + "".join(f"x,{n}\n" for n in names) + "x,missing.png\n")
    result = CliRunner().invoke(main, ["predict", str(FIXTURES / "bars_int8.tflite"), "--manifest", str(manifest),
                                       "--format", "jsonl"])
    assert result.exit_code == 1  # the missing file is a failed record, the others are classified
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == [str(tmp_path / n) for n in names] + [str(tmp_path / "missing.png")]
    assert sum("error" in r for r in records) == 1
