"""Training on Keras' JAX backend (no TensorFlow needed) and the PyDataset pipeline it uses."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_class_folders

# Runs the edgeclf CLI with TensorFlow (and tf2onnx) impossible to import, as on a machine without them.
NO_TF_CLI = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} blocked by the test", name=name)
BLOCKED = set(sys.argv[1].split(","))
sys.meta_path.insert(0, Block())
from edgeclf.cli import main
sys.argv = ["edgeclf"] + sys.argv[2:]
main()
"""


def run_cli(args: list[str], backend: str, blocked: str = "tensorflow,tf2onnx", timeout: int = 300):
    env = {**os.environ, "KERAS_BACKEND": backend}
    return subprocess.run([sys.executable, "-c", NO_TF_CLI, blocked, *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_array_batches_visit_every_image_once_per_epoch_in_a_reproducible_new_order():
    from edgeclf.toolkit.pipeline import array_batches

    n = 23
    pixels = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    labels = np.arange(n)

    def epochs(workers, count=2):
        ds = array_batches(pixels, labels, 5, shuffle=True, seed=7, workers=workers)
        assert len(ds) == 5
        out = []
        for _ in range(count):
            ds.on_epoch_begin()
            batches = [ds[i] for i in range(len(ds))]
            for x, y in batches:
                assert x.dtype == np.float32 and y.dtype == np.int32
                np.testing.assert_array_equal(x[:, 0, 0, 0], y)  # each image stays with its label
                assert list(y) == sorted(y)  # one sorted gather per batch
            out.append(np.concatenate([y for _, y in batches]))
        return out

    first, second = epochs(1)
    assert sorted(first) == list(range(n)) and sorted(second) == list(range(n))
    assert not np.array_equal(first, second)
    again = epochs(4)
    np.testing.assert_array_equal(again[0], first)
    np.testing.assert_array_equal(again[1], second)

    plain = array_batches(pixels, labels, 5, shuffle=False, seed=7)
    plain.on_epoch_begin()
    np.testing.assert_array_equal(np.concatenate([plain[i][1] for i in range(len(plain))]), labels)


def test_batches_prepared_before_the_epoch_begins_are_used_not_thrown_away():
    """Keras looks at the first batch before training; the batches prepared ahead of it then are the epoch's
    own, and used (they were cancelled, and those already started augmented for nothing)."""
    from edgeclf.toolkit.pipeline import EpochClock, array_batches

    pixels = np.zeros((40, 4, 4, 3), np.uint8)
    ds = array_batches(pixels, np.arange(40), 5, shuffle=True, seed=7, workers=2, clock=EpochClock(0))
    made = []
    batch = ds._batch
    ds._batch = lambda epoch, order, i: made.append((epoch, i)) or batch(epoch, order, i)
    ds[0]  # Keras' look before on_epoch_begin
    for future in list(ds.pending.values()):  # every batch prepared ahead is done
        future.result()
    ahead = sorted(made)
    assert ahead == [(0, i) for i in range(len(ahead))] and len(ahead) > 1
    ds.on_epoch_begin()
    got = [ds[i][1] for i in range(len(ds))]
    assert sorted(np.concatenate(got)) == list(range(40))
    assert sorted(made) == sorted([(0, 0)] + [(0, i) for i in range(len(ds))])  # only the looked-at batch twice


def test_unsupported_keras_backend_is_refused_with_the_supported_ones(tiny_folders, tmp_path):
    out = run_cli(["train", str(tiny_folders), "--backbone", "simple_cnn", "--out", str(tmp_path / "run")],
                  backend="torch", blocked="torch")
    assert out.returncode == 2, out.stderr
    assert "KERAS_BACKEND='torch'" in out.stderr and "tensorflow, jax" in out.stderr
    assert "Traceback" not in out.stderr


def test_jax_backend_without_jax_names_the_install(tiny_folders, tmp_path):
    out = run_cli(["train", str(tiny_folders), "--backbone", "simple_cnn", "--out", str(tmp_path / "run")],
                  backend="jax", blocked="jax,jaxlib,tensorflow")
    assert out.returncode != 0
    assert "pip install 'jax[cuda13]'" in out.stderr and "unset KERAS_BACKEND" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory) -> Path:
    """A simple_cnn run trained by `edgeclf train` on the JAX backend with TensorFlow unimportable."""
    pytest.importorskip("jax")
    root = tmp_path_factory.mktemp("jax")
    data = write_class_folders(root / "data", {"bar_h": 40, "bar_v": 40})
    run = root / "run"
    out = run_cli(["train", str(data), "--backbone", "simple_cnn", "--weights", "none", "--img-size", "16",
                   "--epochs", "3", "--batch-size", "16", "--out", str(run)], backend="jax")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(Keras backend jax)" in out.stderr + out.stdout
    return run


def test_jax_run_is_complete_and_says_its_backend(jax_run):
    meta = json.loads((jax_run / "metadata.json").read_text())
    assert meta["hardware"]["keras_backend"] == "jax"
    assert meta["train"]["deterministic"] is True
    for name in ("model.keras", "metrics.json", "splits.csv", "history.csv", "report.md"):
        assert (jax_run / name).is_file(), name
    assert "Keras backend jax" in (jax_run / "report.md").read_text()
    history = list(csv.DictReader((jax_run / "history.csv").open()))
    assert len(history) == 3 and all(np.isfinite(float(r["loss"])) for r in history)


def test_jax_trained_model_scores_the_same_on_tensorflow(jax_run, tmp_path):
    """The .keras file is backend-neutral: TensorFlow's evaluation of the test split matches the JAX run's."""
    from edgeclf.toolkit.evaluate import evaluate

    test, data = tmp_path / "test", Path(json.loads((jax_run / "metadata.json").read_text())["dataset"]["path"])
    for row in csv.DictReader((jax_run / "splits.csv").open()):
        if row["split"] == "test":
            (test / row["label"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(data / row["path"], test / row["label"] / Path(row["path"]).name)
    result = evaluate(jax_run / "model.keras", test)
    recorded = json.loads((jax_run / "metrics.json").read_text())["splits"]["test"]
    assert result.metrics["n"] == recorded["n"] == 12
    assert result.metrics["accuracy"] == pytest.approx(recorded["accuracy"], abs=1 / 12 + 1e-9)
    assert result.metrics["roc_auc"] == pytest.approx(recorded["roc_auc"], abs=0.02)


def test_export_refuses_the_jax_backend_and_takes_the_jax_model_on_tensorflow(jax_run, tmp_path):
    out = run_cli(["export", str(jax_run / "model.keras"), "--format", "tflite", "--quantize", "fp32",
                   "--out", str(tmp_path / "refused")], backend="jax", blocked="")
    assert out.returncode == 2 and "needs Keras' TensorFlow backend" in out.stderr, out.stderr[-2000:]
    assert "SavedModel" not in out.stderr + out.stdout  # refused before any work
    assert not (tmp_path / "refused").exists()

    from edgeclf.toolkit.export import ExportSpec, QuantSpec, export_model

    results = export_model(jax_run / "model.keras", tmp_path / "export",
                           spec=ExportSpec(formats=("tflite",), quant=(QuantSpec.float32(),)))
    assert [r.passed for r in results] == [True]
    assert results[0].fidelity["agreement"] == 1.0


def test_keras_gets_each_epochs_own_order_however_late_on_epoch_begin_runs():
    """Keras' worker threads (its enqueuer) started on a new epoch's batches before calling on_epoch_begin, so they
    came in the previous epoch's order (and at the first epoch from epoch -1, which crashed the JAX augmentation
    counter: "Python integer -2 out of bounds for uint32"). A slow on_epoch_begin made every batch late."""
    pytest.importorskip("jax")
    code = """
import time
import keras
import numpy as np
from edgeclf.toolkit.pipeline import array_batches
n = 23
pixels = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
ds = array_batches(pixels, np.arange(n), 5, shuffle=True, seed=7, workers=4)
by_hand = array_batches(pixels, np.arange(n), 5, shuffle=True, seed=7, workers=1)
begin = ds.on_epoch_begin
def late():
    time.sleep(0.3)
    begin()
ds.on_epoch_begin = late
model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Identity()])
for epoch in range(2):
    got = model.predict(ds, verbose=0)[:, 0, 0, 0].astype(int)  # the images in the order Keras was given them
    by_hand.on_epoch_begin()
    want = np.concatenate([by_hand[i][1] for i in range(len(by_hand))])
    assert sorted(want) == list(range(n)) and got.tolist() == want.tolist(), (epoch, got, want)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                         env={**os.environ, "KERAS_BACKEND": "jax"})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_jax_augmentation_is_the_same_for_any_number_of_worker_threads_and_compiled_once_per_run():
    """Same seed, same batches however many workers; and one compilation (RandAugment's takes ~40 s on a CPU)
    serves every fold's augmenter (they differ in seed only) and the short last batch (40 images in batches of 16)."""
    pytest.importorskip("jax")
    code = """
import numpy as np
from edgeclf.toolkit import pipeline
from edgeclf.toolkit.augment import AugmentSpec, build_augmenter
from edgeclf.toolkit.pipeline import array_batches
px = np.random.default_rng(0).integers(0, 255, (40, 12, 12, 3)).astype(np.uint8)
def epoch(workers, seed=7):
    ds = array_batches(px, np.arange(40) % 2, 16, shuffle=True, seed=3, augmenter=build_augmenter(AugmentSpec(), seed),
                       workers=workers)
    ds.on_epoch_begin()
    return [np.asarray(ds[i][0]) for i in range(len(ds))]
a, b, other_fold = epoch(1), epoch(4), epoch(1, seed=8)
assert [len(x) for x in a] == [16, 16, 8]
assert all(np.array_equal(x, y) for x, y in zip(a, b))
assert not any(np.array_equal(x, y) for x, y in zip(a, other_fold))
[compiled] = pipeline._JAX_AUGMENTERS.values()
assert compiled._cache_size() == 1, compiled._cache_size()
raw = px.astype(np.float32)
assert not any(np.array_equal(np.sort(x.ravel()), np.sort(raw[:len(x)].ravel())) for x in a)
assert not np.array_equal(a[0][:8], a[1][:8])
assert all(0 <= x.min() and x.max() <= 255 for x in a)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                         env={**os.environ, "KERAS_BACKEND": "jax"})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_a_backend_named_in_keras_json_is_used_for_training(tmp_path):
    """No KERAS_BACKEND, but ~/.keras/keras.json (here KERAS_HOME) names JAX: training takes JAX, export refuses."""
    pytest.importorskip("jax")
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    code = """
from edgeclf.edge_runtime.errors import ConfigError
from edgeclf.toolkit._deps import import_keras, import_tf
print(import_keras().backend.backend())
try:
    import_tf()
except ConfigError as exc:
    print("refused:", exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                         env={**env, "KERAS_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "jax" and lines[1].startswith("refused: This command needs Keras' TensorFlow backend")


@pytest.mark.slow  # three JAX runs; the resume logic itself is covered on TensorFlow in the default suite
def test_a_resumed_jax_run_ends_as_an_uninterrupted_one_does():
    """The resume test of test_train.py on JAX, whose pipeline (a PyDataset) and random state differ from
    TensorFlow's: the epoch comes from the training loop's clock, not from counting on_epoch_begin calls."""
    pytest.importorskip("jax")
    test = Path(__file__).parent / "test_train.py"
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          f"{test}::test_a_resumed_run_ends_as_an_uninterrupted_one_does[second-fold]"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "KERAS_BACKEND": "jax"})
    assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout[-3000:]
