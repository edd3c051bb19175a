"""``toolkit.train`` end to end on tiny generated images: outputs, bad files, resume, folds, phases."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_class_folders
from edgeclf.edge_runtime import ConfigError, PreprocessSpec, load_image
from edgeclf.models import HeadSpec
from edgeclf.toolkit.augment import AugmentSpec
from edgeclf.toolkit.progress import Reporter
from edgeclf.toolkit.train import TrainSpec, train

FAST = dict(batch_size=16, patience=20, augment=AugmentSpec.none())


def _history(run):
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": 0}, "epochs=0. Expected at least 1"),
    ({"folds": 0}, "folds=0"),
    ({"fine_tune_layers": -1}, "fine_tune_layers=-1. Expected 0 or more"),
    ({"learning_rate": 0.0}, "learning rate <= 0"),
    ({"leakage_threshold": 129}, "leakage_threshold=129. Expected at most 128 of 256 bits"),
    ({"seed": -1}, "seed=-1"),
    ({"seed": 2**32}, "seed=4294967296"),
    ({"monitor": "loss"}, "Supported: val_loss, val_accuracy"),
])
def test_train_spec_rejects_values_that_cannot_work(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainSpec(**kwargs)


def test_cli_train_seed_out_of_range_is_a_usage_error(tiny_folders, tmp_path):
    from click.testing import CliRunner

    from edgeclf.cli import main

    result = CliRunner().invoke(main, ["train", str(tiny_folders), "--backbone", "simple_cnn", "--seed", "-1",
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "seed=-1" in result.output and "unexpected" not in result.output


def test_train_writes_a_complete_run_directory(tiny_folders, tmp_path):
    import keras

    (tiny_folders / "bar_v" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    run = tmp_path / "run"
    result = train(tiny_folders, run, backbone="simple_cnn", img_size=16, weights="none",
                   spec=TrainSpec(epochs=8, learning_rate=3e-3, **FAST))
    for name in ("model.keras", "metadata.json", "history.csv", "metrics.json", "report.md", "splits.csv",
                 "training_curves.png", "confusion_test.png", "roc_pr_test.png"):
        assert (run / name).stat().st_size > 0, name
    assert not (run / "cache").exists() and not (run / "checkpoints").exists()
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["class_names"] == ["bar_h", "bar_v"]
    assert meta["preprocess"]["height"] == 16 and meta["input"]["value_range"] == [0.0, 255.0]
    sizes = meta["dataset"]["split_sizes"]
    assert sum(sizes.values()) == 80 and sizes["val"] == sizes["test"] == 12  # 81 files, one broken
    assert meta["dataset"]["skipped"] == [{"path": "bar_v/broken.png",
                                           "reason": "truncated or corrupt image data: Truncated File Read"}]
    assert "bar_v/broken.png" in (run / "report.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())["splits"]
    assert set(metrics) == {"train", "val", "test"}
    assert metrics["test"]["accuracy"] >= 0.8  # the bars are easy to learn
    assert len(metrics["test"]["thresholds"]) == 9
    assert result.metrics["test"]["accuracy"] == metrics["test"]["accuracy"]
    assert [int(r["epoch"]) for r in _history(run)] == list(range(8))
    # The saved model is inference-only: no augmentation layers, loads in safe mode, matches the metrics.
    model = keras.models.load_model(run / "model.keras", safe_mode=True)
    assert not any("Random" in type(l).__name__ for l in model._flatten_layers())
    with open(run / "splits.csv", newline="") as fh:
        test_rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    x = np.stack([load_image(tiny_folders / r["path"], PreprocessSpec(16, 16)) for r in test_rows]).astype("float32")
    y = np.array([meta["class_names"].index(r["label"]) for r in test_rows])
    acc = float((np.asarray(model(x)).argmax(1) == y).mean())
    assert acc == pytest.approx(metrics["test"]["accuracy"])


def test_existing_run_is_not_overwritten_without_force(tiny_folders, tmp_path):
    run = tmp_path / "run"
    spec = TrainSpec(epochs=1, **FAST)
    train(tiny_folders, run, backbone="simple_cnn", img_size=16, weights="none", spec=spec)
    stamp = (run / "model.keras").stat().st_mtime_ns
    with pytest.raises(ConfigError, match="already holds a finished run"):
        train(tiny_folders, run, backbone="simple_cnn", img_size=16, weights="none", spec=spec)
    assert (run / "model.keras").stat().st_mtime_ns == stamp
    (run / "notes.txt").write_text("mine")
    train(tiny_folders, run, backbone="simple_cnn", img_size=16, weights="none", spec=spec, force=True)
    assert (run / "model.keras").stat().st_mtime_ns != stamp
    assert (run / "notes.txt").read_text() == "mine"  # --force removes only what edgeclf wrote


def test_non_run_directory_is_refused(tiny_folders, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("x")
    with pytest.raises(ConfigError, match="holds no edgeclf run"):
        train(tiny_folders, tmp_path / "busy", backbone="simple_cnn", img_size=16, weights="none",
              spec=TrainSpec(epochs=1, **FAST))


def test_killed_run_resumes_from_its_checkpoint(tiny_folders, tmp_path):
    import keras

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    run = tmp_path / "run"
    spec = TrainSpec(epochs=5, **FAST)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_folders, run, backbone="simple_cnn", img_size=16, weights="none", spec=spec, callbacks=[Kill()])
    assert json.loads((run / "run_state.json").read_text())["status"] == "running"
    assert [int(r["epoch"]) for r in _history(run)] == [0, 1, 2]
    assert (run / "cache" / "index.json").exists()
    # Killed while writing its latest backup (SIGKILL, a power cut): the resume falls back on the one before.
    latest = run / "checkpoints" / "backup_fold0_phase1" / "latest.weights.h5"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    with pytest.raises(ConfigError, match="other settings \\(train.epochs: 5 -> 6\\)"):
        train(tiny_folders, run, backbone="simple_cnn", img_size=16, weights="none", spec=TrainSpec(epochs=6, **FAST))
    result = train(tiny_folders, run, backbone="simple_cnn", img_size=16, weights="none", spec=spec)
    assert result.resumed
    assert [int(r["epoch"]) for r in _history(run)] == [0, 1, 2, 3, 4]
    assert json.loads((run / "run_state.json").read_text())["status"] == "done"


def test_weights_that_cannot_be_had_fail_before_the_dataset_is_decoded(tiny_folders, tmp_path, monkeypatch):
    from edgeclf.models import ModelSpec, create_model
    from edgeclf.toolkit import train as train_module

    wrong = tmp_path / "whole.weights.h5"
    create_model(ModelSpec("simple_cnn", 2, 16, "none")).save_weights(wrong)  # a whole model, not a backbone

    def decode(*args, **kwargs):
        raise AssertionError("decoded the dataset before finding that the weights do not fit")

    monkeypatch.setattr(train_module, "_decode_all", decode)
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="Could not load backbone weights"):
        train(tiny_folders, run, backbone="simple_cnn", img_size=16, weights=str(wrong), spec=TrainSpec(epochs=1, **FAST))
    assert not run.exists()  # nothing written either


def test_an_imagenet_download_that_fails_offline_fails_before_the_dataset_is_decoded(tiny_folders, tmp_path,
                                                                                     monkeypatch):
    from keras.src.utils import file_utils

    from edgeclf.toolkit import train as train_module

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: [Errno -2] Name or service not known")

    def decode(*args, **kwargs):
        raise AssertionError("decoded the dataset before finding that the ImageNet weights cannot be had")

    monkeypatch.setattr(file_utils, "get_file", offline)
    monkeypatch.setattr(train_module, "_decode_all", decode)
    with pytest.raises(ConfigError, match="Could not get the ImageNet weights"):
        train(tiny_folders, tmp_path / "run", backbone="mobilenet_v2", img_size=32, weights="imagenet",
              spec=TrainSpec(epochs=1, **FAST))
    assert not (tmp_path / "run").exists()


def test_a_run_stopped_before_training_starts_again_with_new_settings(tiny_folders, tmp_path):
    run = tmp_path / "run"

    class StopAtFirstFit(Reporter):
        def stage(self, message):
            if message.startswith("Fold 0 phase 1"):
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_folders, run, backbone="simple_cnn", img_size=16, weights="none",
              spec=TrainSpec(epochs=1, **FAST), reporter=StopAtFirstFit())
    assert json.loads((run / "run_state.json").read_text())["status"] == "running"
    (run / "notes.txt").write_text("mine")
    messages = []

    class Recorder(Reporter):
        def stage(self, message):
            messages.append(message)

    result = train(tiny_folders, run, backbone="simple_cnn", img_size=16, weights="none",
                   spec=TrainSpec(epochs=2, **FAST), reporter=Recorder())  # no --force: nothing was trained
    assert not result.resumed and (run / "model.keras").exists() and (run / "notes.txt").read_text() == "mine"
    assert json.loads((run / "run_state.json").read_text())["config"]["train"]["epochs"] == 2
    assert any("trained nothing" in m and "train.epochs" in m for m in messages)
    assert "Reusing decoded images from the cache" in messages


def _weights(run):
    import keras

    return [np.asarray(w) for w in keras.models.load_model(run / "model.keras").get_weights()]


@pytest.mark.parametrize("folds, pretrained, kill_at", [(2, False, (1, 1)), (1, True, (0, 1))],
                         ids=["second-fold", "first-of-two-phases"])  # each resumes in the middle of a fit
def test_a_resumed_run_ends_as_an_uninterrupted_one_does(tiny_folders, tmp_path, folds, pretrained, kill_at):
    """Data order, augmentation, dropout, initial weights and the early-stopping / learning-rate schedule carry on
    from where the killed run stopped, so the same seed gives the same model whether or not the run was killed."""
    import keras

    from edgeclf.models import ModelSpec, create_model, get_backbone_model

    class Kill(keras.callbacks.Callback):
        fits = 0  # model.fit calls so far: one per fold and phase

        def on_train_begin(self, logs=None):
            Kill.fits += 1

        def on_epoch_end(self, epoch, logs=None):
            if (Kill.fits - 1, epoch) == kill_at:
                raise KeyboardInterrupt

    weights = "none"
    if pretrained:
        weights = str(tmp_path / "bb.weights.h5")
        get_backbone_model(create_model(ModelSpec("simple_cnn", 2, 16, "none"))).save_weights(weights)
    # Augmentation and dropout on; patience 2 (1 for the plateau), so the callbacks' own states matter.
    spec = TrainSpec(epochs=4, fine_tune_epochs=3, fine_tune_layers=3, batch_size=16, patience=2, folds=folds,
                     learning_rate=3e-3, augment=AugmentSpec())
    kwargs = dict(backbone="simple_cnn", img_size=16, weights=weights, head=HeadSpec(dense=(8,), dropout=0.3),
                  spec=spec)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train(tiny_folders, whole, **kwargs)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_folders, killed, callbacks=[Kill()], **kwargs)
    assert train(tiny_folders, killed, **kwargs).resumed
    assert _history(killed) == _history(whole)
    for a, b in zip(_weights(killed), _weights(whole)):
        np.testing.assert_array_equal(a, b)


def test_a_run_killed_while_saving_its_best_weights_keeps_the_previous_best(tmp_path):
    import keras

    from edgeclf.toolkit.callbacks import best_checkpoint as _best_checkpoint

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "fold0_best.weights.h5"
    best = _best_checkpoint(keras, path, "val_loss", "min", None)
    best.set_model(model)
    best.on_epoch_end(0, {"val_loss": 1.0})
    saved = [w.copy() for w in model.get_weights()]
    best.on_epoch_end(1, {"val_loss": 1.5})  # not better: not saved
    model.set_weights([w + 1 for w in saved])

    def killed_mid_write(filepath, **kwargs):
        Path(filepath).write_bytes(b"\x89HDF\r\n half a file")
        raise KeyboardInterrupt

    model.save_weights = killed_mid_write
    with pytest.raises(KeyboardInterrupt):
        best.on_epoch_end(2, {"val_loss": 0.5})
    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    fresh.load_weights(path)
    for a, b in zip(fresh.get_weights(), saved):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no partial file left


def test_k_fold_reports_every_fold_and_keeps_the_best(tiny_folders, tmp_path):
    run = tmp_path / "run"
    result = train(tiny_folders, run, backbone="simple_cnn", img_size=16, weights="none",
                   spec=TrainSpec(epochs=2, folds=3, monitor="val_accuracy", **FAST))
    doc = json.loads((run / "metrics.json").read_text())
    assert [f["fold"] for f in doc["folds"]] == [0, 1, 2]
    assert sum(f["n_val"] for f in doc["folds"]) == 68  # train + val of 80 images (test keeps 12)
    accs = [f["val_accuracy"] for f in doc["folds"]]
    assert doc["fold_summary"]["best_fold"] == int(np.argmax(accs))
    assert doc["fold_summary"]["val_accuracy_mean"] == pytest.approx(np.mean(accs))
    assert {int(r["fold"]) for r in _history(run)} == {0, 1, 2}
    assert "Cross-validation" in (run / "report.md").read_text()
    assert len(result.folds) == 3
    # The run records the kept fold's own train/val images, not the 70/15 split the folds were drawn from: export
    # calibrates on splits.csv's val rows, which the saved model must not have trained on.
    best = doc["folds"][doc["fold_summary"]["best_fold"]]
    rows = list(csv.DictReader((run / "splits.csv").open()))
    per_split = {s: {r["path"] for r in rows if r["split"] == s} for s in ("train", "val", "test")}
    assert (len(per_split["train"]), len(per_split["val"]), len(per_split["test"])) == (best["n_train"], best["n_val"], 12)
    assert not per_split["train"] & per_split["val"]
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["dataset"]["split_sizes"] == {"train": best["n_train"], "val": best["n_val"], "test": 12}
    assert sum(meta["dataset"]["class_counts"]["val"].values()) == best["n_val"]
    assert doc["splits"]["val"]["n"] == best["n_val"]
    assert doc["splits"]["val"]["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)


def test_pretrained_backbone_trains_in_two_phases(tiny_folders, tmp_path):
    from edgeclf.models import ModelSpec, create_model, get_backbone_model

    weights = tmp_path / "bb.weights.h5"
    get_backbone_model(create_model(ModelSpec("simple_cnn", 2, 16, "none"))).save_weights(weights)
    run = tmp_path / "run"
    train(tiny_folders, run, backbone="simple_cnn", img_size=16, weights=str(weights), head=HeadSpec(dense=(8,)),
          spec=TrainSpec(epochs=2, fine_tune_epochs=2, fine_tune_layers=3, **FAST))
    rows = _history(run)
    assert [(int(r["phase"]), int(r["epoch"])) for r in rows] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    phase1_lr = float(rows[0]["learning_rate"])
    assert float(rows[2]["learning_rate"]) == pytest.approx(phase1_lr / 10)


def test_mixed_precision_run_saves_a_float32_model(tiny_folders, tmp_path):
    import keras

    run = tmp_path / "run"
    result = train(tiny_folders, run, backbone="simple_cnn", img_size=16, weights="none",
                   spec=TrainSpec(epochs=1, mixed_precision="on", **FAST))
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    model = keras.models.load_model(result.model_path, safe_mode=True)
    assert {l.dtype_policy.name for l in model._flatten_layers() if hasattr(l, "dtype_policy")} == {"float32"}
    assert json.loads((run / "metadata.json").read_text())["hardware"]["mixed_precision"] is True


def test_imbalanced_classes_get_class_weights(tmp_path):
    data = write_class_folders(tmp_path / "data", {"common": 60, "rare": 15})
    run = tmp_path / "run"
    train(data, run, backbone="simple_cnn", img_size=16, weights="none", spec=TrainSpec(epochs=1, **FAST))
    meta = json.loads((run / "metadata.json").read_text())["dataset"]
    assert meta["imbalance_ratio"] == pytest.approx(4.0, rel=0.1)
    assert meta["class_weights"]["1"] > 2 * meta["class_weights"]["0"]


def test_a_class_missing_from_the_test_split_is_reported(tmp_path):
    data = write_class_folders(tmp_path / "data", {"common": 30, "rare": 2})  # 70/15/15 leaves rare none to test
    run = tmp_path / "run"
    train(data, run, backbone="simple_cnn", img_size=16, weights="none", spec=TrainSpec(epochs=1, **FAST))
    meta = json.loads((run / "metadata.json").read_text())["dataset"]
    assert meta["class_counts"]["test"]["rare"] == 0
    note = "The test split has no images of rare: its test metrics leave it out. Add images of that class."
    assert note in meta["notes"] and note in (run / "report.md").read_text()
    assert not any("train split" in n or "val split" in n for n in meta["notes"])


def test_dedup_removes_leaked_test_images(tmp_path):
    data = write_class_folders(tmp_path / "data", {"bar_h": 30, "bar_v": 30})
    # Every image duplicated: whatever the split, copies land in val/test beside originals in train.
    for p in list(data.rglob("*.png")):
        p.with_name("copy_" + p.name).write_bytes(p.read_bytes())
    run = tmp_path / "run"
    result = train(data, run, backbone="simple_cnn", img_size=16, weights="none",
                   spec=TrainSpec(epochs=1, dedup=True, **FAST))
    assert result.leakage["exact_pairs"] > 0
    meta = json.loads((run / "metadata.json").read_text())["dataset"]
    removed = meta["removed_by_dedup"]
    assert len(removed.get("test", [])) == result.leakage["leaked_images"]["test"] > 0
    assert meta["split_sizes"]["test"] == 18 - len(removed["test"])


def test_k_fold_checks_each_folds_val_against_its_own_train(tmp_path):
    """Copies inside the old train split pass the run-wide check (same split) but land on both sides of a fold."""
    data = write_class_folders(tmp_path / "data", {"bar_h": 30, "bar_v": 30})
    for p in list(data.rglob("*.png")):
        p.with_name("copy_" + p.name).write_bytes(p.read_bytes())
    found = {}
    for dedup in (False, True):
        run = tmp_path / f"run_{dedup}"
        result = train(data, run, backbone="simple_cnn", img_size=16, weights="none",
                       spec=TrainSpec(epochs=1, folds=2, dedup=dedup, **FAST))
        folds = result.leakage["folds"]
        assert [f["fold"] for f in folds] == [0, 1]
        assert sum(f["leaked_val_images"] for f in folds) > 0
        assert all(e["exact"] and e["distance"] == 0 for f in folds for e in f["examples"])
        doc = json.loads((run / "metrics.json").read_text())
        removed = [f["removed"] for f in folds]
        assert removed == ([f["leaked_val_images"] for f in folds] if dedup else [0, 0])
        # every fold splits the same pool; --dedup takes exactly the counted copies out of each fold's val
        assert len({f["n_train"] + f["n_val"] + r for f, r in zip(doc["folds"], removed)}) == 1
        report = (run / "report.md").read_text()
        assert "K-fold (train and val pooled" in report and ("(removed " in report) is dedup
        rows = list(csv.DictReader((run / "splits.csv").open()))  # the kept fold's own train and val
        train_names = {Path(r["path"]).name.removeprefix("copy_") for r in rows if r["split"] == "train"}
        val_names = [Path(r["path"]).name.removeprefix("copy_") for r in rows if r["split"] == "val"]
        found[dedup] = sum(n in train_names for n in val_names)
    assert found[False] > 0 and found[True] == 0
    from click.testing import CliRunner

    from edgeclf.cli import main

    result = CliRunner().invoke(main, ["train", str(data), "--backbone", "simple_cnn", "--weights", "none",
                                       "--img-size", "16", "--epochs", "1", "--folds", "2", "--batch-size", "16",
                                       "--out", str(tmp_path / "cli_run")])
    assert result.exit_code == 0, result.output
    assert re.search(r"K-fold leakage: \d+ val image\(s\) across the folds duplicate their fold's train \(see "
                     r"report.md; --dedup removes them\)", result.output)


def test_atomic_writes_leave_normal_permissions_and_no_temporary_files(tmp_path):
    import os

    from edgeclf.toolkit.io import atomic_path, write_json

    write_json(tmp_path / "a.json", {"x": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_same_seed_gives_the_same_model(tiny_folders, tmp_path, capfd):
    import keras

    spec = TrainSpec(epochs=2, seed=7, augment=AugmentSpec(), batch_size=16)
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        train(tiny_folders, run, backbone="simple_cnn", img_size=16, weights="none", spec=spec)
    a, b = (keras.models.load_model(r / "model.keras", safe_mode=True) for r in runs)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert (runs[0] / "history.csv").read_text() == (runs[1] / "history.csv").read_text()
    # Op determinism rewrites every parallel map of a pipeline holding a stateful op into a sequential one (and
    # logs an error line for each at every epoch); the input pipeline holds none, so it stays parallel.
    assert "use_unbounded_threadpool" not in capfd.readouterr().err


def test_an_epochs_augmented_batches_do_not_depend_on_the_epochs_before_it():
    """Under op determinism the tf.data pipeline gathers and augments batches in parallel: each batch is drawn from
    the augmenter's seeds, the epoch and the batch's index alone, so a pipeline that starts at epoch 2 (a resumed
    run) gives the batches of one that went through epochs 0 and 1 first, and each epoch augments anew."""
    import tensorflow as tf

    from edgeclf.toolkit.augment import build_augmenter
    from edgeclf.toolkit.pipeline import EpochClock, make_dataset

    tf.config.experimental.enable_op_determinism()
    pixels = np.random.default_rng(0).integers(0, 256, (40, 12, 12, 3), dtype=np.uint8)
    labels = np.arange(40) % 2

    def epochs(first, last):
        clock = EpochClock(first)
        ds = make_dataset(pixels, labels, 8, shuffle=True, seed=5, augmenter=build_augmenter(AugmentSpec(), 5),
                          clock=clock)
        assert int(ds.cardinality()) == 5  # known to Keras, which otherwise warns that the input ran out of data
        out = {}
        for clock.epoch in range(first, last + 1):
            out[clock.epoch] = [(x.numpy(), y.numpy()) for x, y in ds]
        return out

    straight, resumed = epochs(0, 2), epochs(2, 2)
    for (xa, ya), (xb, yb) in zip(straight[2], resumed[2], strict=True):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)
    assert not np.array_equal(straight[0][0][0], straight[1][0][0])  # a new draw (and order) every epoch
    assert sorted(np.concatenate([y for _, y in straight[1]]).tolist()) == sorted(labels.tolist())


def _bright_dark(root: Path, n: int = 24, size: int = 40) -> Path:
    """``n`` noisy bright and ``n`` noisy dark images: a task any classifier must get right."""
    rng = np.random.default_rng(3)
    for name, low in (("bright", 150), ("dark", 0)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(low, low + 106, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


def test_a_trivially_separable_tiny_set_is_learnt_in_a_few_epochs(tmp_path):
    # 48 images split 70/15/15: 33 train images at the default batch of 32. The decision, not just the ranking,
    # must be right in inference mode: BatchNorm's statistics may not come from a 1-image last batch or from a
    # moving average that has not forgotten its start.
    data = _bright_dark(tmp_path / "data")
    result = train(data, tmp_path / "run", backbone="simple_cnn", img_size=32, weights="none",
                   spec=TrainSpec(epochs=5))
    for name, m in result.metrics.items():
        assert m["roc_auc"] == 1.0, name
        assert m["accuracy"] >= 0.95, (name, m["accuracy"])


def test_augmentation_is_chosen_from_the_input_size_and_reported(tiny_folders, tmp_path):
    from edgeclf.toolkit.augment import augment_for

    small, why = augment_for(28, 28)
    assert (small.flip, small.shift, small.rotation, small.zoom, small.contrast) == ("horizontal", 0.1, 0, 0, 0)
    assert "28x28" in why
    large, _ = augment_for(160, 288)
    assert large == AugmentSpec()
    run = tmp_path / "run"
    train(tiny_folders, run, backbone="simple_cnn", img_size=16, weights="none",
          spec=TrainSpec(epochs=1, batch_size=16))
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["train"]["augment"] == small.to_dict()
    assert "Augmentation: flip and shift only, chosen for a 16x16 input" in (run / "report.md").read_text()
