"""A Keras classifier trained outside edgeclf, exported and evaluated: --labels, --input-norm, --model-output,
--img-size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import WarningsReporter, write_class_folders
from edgeclf.cli import main
from edgeclf.edge_runtime import Classifier, ConfigError, DataError
from edgeclf.edge_runtime.artifact import read_metadata
from edgeclf.toolkit.export import ExportSpec, ForeignSpec, QuantSpec, export_model, parse_labels
from edgeclf.toolkit.export.foreign import adapt_model

CLASSES = ("bar_h", "bar_v")
FP32_AND_INT8 = ExportSpec(quant=(QuantSpec.float32(), QuantSpec.int8()))


def _notebook_model(units: int, activation: str | None, channels: int = 3, size: int | None = 16):
    import keras

    return keras.Sequential([keras.Input((size, size, channels)), keras.layers.Conv2D(8, 3, activation="relu"),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(units, activation=activation)])


def _inputs(files, norm: str, channels: int = 3) -> np.ndarray:
    """What a notebook's own pipeline feeds its model: Pillow RGB (or "L"), scaled by hand."""
    mode = "RGB" if channels == 3 else "L"
    x = np.stack([np.asarray(Image.open(f).convert(mode), dtype="float32") for f in files])
    x = x if channels == 3 else x[..., None]
    return {"unit": x / 255.0, "tf": x / 127.5 - 1.0, "raw": x}[norm]


@pytest.fixture(scope="session")
def notebook(tmp_path_factory):
    """Labelled images and three Keras models trained on x/255 the way a notebook would, saved without metadata."""
    import keras

    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("foreign")
    data = write_class_folders(root / "data", {"bar_h": 80, "bar_v": 80})
    files = sorted(data.rglob("*.png"))
    x, y = _inputs(files, "unit"), np.array([0 if f.parent.name == "bar_h" else 1 for f in files])
    models = {}
    for name, units, activation, loss in [
        ("softmax", 2, "softmax", "sparse_categorical_crossentropy"),
        ("logits", 2, None, keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
        ("sigmoid", 1, "sigmoid", "binary_crossentropy"),
    ]:
        model = _notebook_model(units, activation)
        model.compile(keras.optimizers.Adam(1e-2), loss)
        model.fit(x, y, epochs=25, batch_size=32, verbose=0)
        models[name] = root / f"{name}.keras"
        model.save(models[name])
    return data, models


def _expected(model_path: Path, files, norm: str = "unit") -> np.ndarray:
    """The notebook model's own probabilities for ``files``: softmax over logits, (1 - p, p) for one sigmoid."""
    import keras

    raw = np.asarray(keras.models.load_model(model_path)(_inputs(files, norm)))
    if raw.shape[1] == 1:
        return np.concatenate([1.0 - raw, raw], axis=1)
    if model_path.stem == "logits":
        e = np.exp(raw - raw.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    return raw


@pytest.mark.parametrize("kind", ["softmax", "logits", "sigmoid"])
def test_a_notebook_model_exports_and_the_runtime_reproduces_its_own_pipeline(notebook, tmp_path, kind):
    data, models = notebook
    results = export_model(models[kind], tmp_path / "out", spec=FP32_AND_INT8, calib=data,
                           foreign=ForeignSpec(CLASSES, "unit"))
    assert sorted(r.path.name for r in results) == [f"{kind}_fp32.onnx", f"{kind}_fp32.tflite", f"{kind}_int8.onnx",
                                                   f"{kind}_int8.tflite"]
    files = sorted(data.rglob("*.png"))[::10]
    expected = _expected(models[kind], files)
    for r in results:
        assert r.passed, r.reason
        # 160 images: 110 calibrate int8, the other 50 run the gate, with labels (accuracy is reported).
        assert r.fidelity["n"] == 50 and "not used for calibration" in r.fidelity["images"]
        assert "accuracy" in r.fidelity
        meta = read_metadata(r.path)
        assert meta["class_names"] == list(CLASSES) and meta["input"]["shape"] == [16, 16, 3]
        assert meta["backbone"] is None
        assert meta["adapter"] == {"source_input_shape": [16, 16, 3], "input_norm": "unit",
                                   "output": "logits" if kind == "logits" else "probabilities",
                                   "output_units": 1 if kind == "sigmoid" else 2, "grayscale": False}
        clf = Classifier.load(r.path, threads=1)
        probs = np.stack([c.probabilities for c in clf.classify([str(f) for f in files])])
        assert np.abs(probs - expected).max() <= (1e-5 if r.mode == "fp32" else 0.05), r.path.name
    report = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert report["calibration"].startswith("110 of ") and report["verification"].startswith("the other 50 of ")


def test_mean_and_std_given_as_numbers_are_the_models_normalisation(notebook, tmp_path):
    """--mean/--std on 0-1 pixels: 0.5 and 0.5 must feed the model x/127.5-1, exactly what its pipeline would."""
    import keras

    data, models = notebook
    args = ["export", str(models["softmax"]), "--labels", "bar_h,bar_v", "--mean", "0.5", "--std", "0.5,0.5,0.5",
            "--calib", str(data), "--format", "tflite,onnx", "--quantize", "fp32", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    files = sorted(data.rglob("*.png"))[::10]
    expected = np.asarray(keras.models.load_model(models["softmax"])(_inputs(files, "tf")))
    for name in ("softmax_fp32.tflite", "softmax_fp32.onnx"):
        path = tmp_path / "out" / name
        adapter = read_metadata(path)["adapter"]
        assert adapter["input_norm"] == "custom" and adapter["mean"] == [0.5] * 3 and adapter["std"] == [0.5] * 3
        probs = np.stack([c.probabilities for c in Classifier.load(path, threads=1).classify([str(f) for f in files])])
        np.testing.assert_allclose(probs, expected, atol=1e-5)
    # evaluate takes the same numbers; bench rebuilds the wrapper from the artefacts' metadata
    result = CliRunner().invoke(main, ["evaluate", str(models["softmax"]), str(data), "--labels", "bar_h,bar_v",
                                       "--mean", "0.5", "--std", "0.5"])
    assert result.exit_code == 0, result.output
    from edgeclf.toolkit.export.foreign import spec_from_artifact

    spec = spec_from_artifact(read_metadata(tmp_path / "out" / "softmax_fp32.onnx"))
    assert (spec.input_norm, spec.mean, spec.std) == ("custom", (0.5,) * 3, (0.5,) * 3)


@pytest.mark.parametrize("norm", ["torch", "caffe"])
def test_per_channel_normalisations_export_to_both_formats(notebook, tmp_path, norm):
    """ImageNet mean/std (and caffe's BGR mean) in front of the model: a Normalization layer's constants used to
    reach tf2onnx as inputs the ONNX file asked to be fed, so --input-norm torch failed for ONNX."""
    import keras

    from edgeclf.edge_runtime.tensor import InputTensor

    data, models = notebook
    results = export_model(models["softmax"], tmp_path / "out", calib=data, foreign=ForeignSpec(CLASSES, norm),
                           spec=ExportSpec(quant=(QuantSpec.float32(),)))
    files = sorted(data.rglob("*.png"))[::10]
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    expected = np.asarray(keras.models.load_model(models["softmax"])(InputTensor.preset(norm).apply(pixels)))
    for r in results:
        assert r.passed, r.reason
        probs = np.stack([c.probabilities for c in Classifier.load(r.path, threads=1).classify([str(f) for f in files])])
        np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_grayscale_and_variable_size_models(notebook, tmp_path):
    data, _ = notebook
    model = _notebook_model(2, "softmax", channels=1, size=None)
    path = tmp_path / "gray.keras"
    model.save(path)
    with pytest.raises(ConfigError, match="input size is not fixed.*--img-size"):
        export_model(path, tmp_path / "out", calib=data, foreign=ForeignSpec(CLASSES, "raw"))
    with pytest.raises(ConfigError, match="one input channel.*raw, unit or tf"):
        export_model(path, tmp_path / "out", calib=data, foreign=ForeignSpec(CLASSES, "caffe", img_size=16))
    results = export_model(path, tmp_path / "out", spec=ExportSpec(formats=("tflite",), quant=(QuantSpec.float32(),)),
                           calib=data, foreign=ForeignSpec(CLASSES, "raw", img_size=16))
    assert results[0].passed and read_metadata(results[0].path)["adapter"]["grayscale"]
    files = sorted(data.rglob("*.png"))[::10]
    # Pillow's "L" rounds luminance to integers; the artefact keeps it exact, so the two differ by < 0.5 grey level.
    expected = np.asarray(model(_inputs(files, "raw", channels=1)))
    probs = np.stack([c.probabilities for c in Classifier.load(results[0].path).classify([str(f) for f in files])])
    assert np.abs(probs - expected).max() < 1e-2


@pytest.mark.parametrize("fit", [{"crop": 1.0}, {"pad": (124, 116, 104)}], ids=["crop", "pad"])
def test_a_variable_size_model_exports_at_a_non_square_img_size_cropped_or_padded(notebook, tmp_path, fit):
    from edgeclf.edge_runtime import PreprocessSpec, load_image
    from edgeclf.toolkit.export.foreign import spec_from_artifact

    data, _ = notebook
    model = _notebook_model(2, "softmax", size=None)
    path = tmp_path / "any_size.keras"
    model.save(path)
    results = export_model(path, tmp_path / "out", spec=ExportSpec(quant=(QuantSpec.float32(),)), calib=data,
                           foreign=ForeignSpec(CLASSES, "unit", img_size=(16, 24), **fit))
    files = [str(f) for f in sorted(data.rglob("*.png"))[::10]]
    # the 16x16 images' centred 16x10.7 boxes resized to 16 high and 24 wide, or the whole images resized to 16x16
    # between two 4-pixel bands of the pad colour, as the metadata tells every runtime
    pixels = np.stack([load_image(f, PreprocessSpec(16, 24, **fit)) for f in files]).astype("float32")
    if "pad" in fit:
        assert np.all(pixels[:, :, :4] == fit["pad"]) and np.all(pixels[:, :, -4:] == fit["pad"])
    expected = np.asarray(model(pixels / 255.0))
    for r in results:
        assert r.passed, r.reason
        meta = read_metadata(r.path)
        assert meta["input"]["shape"] == [16, 24, 3] and meta["adapter"]["source_input_shape"] == [None, None, 3]
        key, value = next(iter(fit.items()))
        assert tuple(np.atleast_1d(meta["preprocess"][key])) == tuple(np.atleast_1d(value))
        assert getattr(spec_from_artifact(meta), key) == value
        probs = np.stack([c.probabilities for c in Classifier.load(r.path, threads=1).classify(files)])
        np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_a_foreign_pipeline_crops_or_pads_not_both():
    with pytest.raises(ConfigError, match="Give one: crop cuts the image"):
        ForeignSpec(CLASSES, "unit", crop=1, pad=0)


def test_img_size_fills_only_the_sides_the_model_leaves_open():
    from edgeclf.toolkit.export.foreign import input_size

    assert input_size(16, 24, None, "x") == (16, 24)
    assert input_size(None, None, (16, 24), "x") == (16, 24)
    assert input_size(None, None, 20, "x") == (20, 20)
    assert input_size(16, None, (16, 24), "x") == (16, 24)
    assert input_size(16, 24, (16, 24), "x") == (16, 24)
    with pytest.raises(ConfigError, match=r"^The input is open\. Pass --img-size .* N for N x N, or HxW"):
        input_size(16, None, None, "The input is open")
    with pytest.raises(ConfigError, match=r"--img-size 24x24 for a model whose input is fixed at 16x24\. Leave"):
        input_size(16, 24, 24, "x")
    with pytest.raises(ConfigError, match=r"--img-size 20x24 for a model whose input is 16xany \(height x width\)"):
        input_size(16, None, (20, 24), "x")


def test_logits_declared_as_probabilities_are_refused(notebook, tmp_path):
    data, models = notebook
    with pytest.raises(ConfigError, match="not probabilities.*--model-output logits"):
        export_model(models["logits"], tmp_path / "out", calib=data,
                     foreign=ForeignSpec(CLASSES, "unit", output="probabilities"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("model, labels, match", [
    (lambda: _notebook_model(3, "softmax"), CLASSES, "2 labels.*3 output units"),
    (lambda: _notebook_model(1, "sigmoid"), ("a", "b", "c"), "one sigmoid unit.*Expected 2 labels, negative class first"),
    (lambda: _notebook_model(3, "sigmoid"), ("a", "b", "c"), "multi-label"),
    (lambda: _notebook_model(2, "relu"), CLASSES, "--model-output probabilities or --model-output logits"),
])
def test_models_that_cannot_be_adapted_say_why(model, labels, match):
    with pytest.raises(ConfigError, match=match):
        adapt_model(model(), ForeignSpec(labels, "unit"))


def test_channels_first_input_is_named():
    import keras

    model = keras.Sequential([keras.Input((3, 16, 16)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")])
    with pytest.raises(ConfigError, match="channels-first"):
        adapt_model(model, ForeignSpec(CLASSES, "unit"))


def test_foreign_spec_and_labels(tmp_path):
    with pytest.raises(ConfigError, match="at least two"):
        ForeignSpec(("only",), "unit")
    with pytest.raises(ConfigError, match="bar_h more than once"):
        ForeignSpec(("bar_h", "bar_h"), "unit")
    with pytest.raises(ConfigError, match="Supported: raw, unit, tf, caffe, torch"):
        ForeignSpec(CLASSES, "imagenet")
    listing = tmp_path / "labels.txt"
    listing.write_text("\ufeffno_helmet\n\nhelmet \n", encoding="utf-8")
    assert parse_labels(str(listing)) == ("no_helmet", "helmet")
    assert parse_labels("cat, dog") == ("cat", "dog")
    numbered = tmp_path / "tm_labels.txt"  # Teachable Machine's labels.txt
    numbered.write_text("0 Hard hat\n1 No hard hat\n", encoding="utf-8")
    assert parse_labels(str(numbered)) == ("Hard hat", "No hard hat")
    listing.write_text("1 first\n0 second\n", encoding="utf-8")  # numbers out of order are part of the names
    assert parse_labels(str(listing)) == ("1 first", "0 second")
    with pytest.raises(DataError, match="Labels file not found: .*missing.txt"):
        parse_labels(str(tmp_path / "missing.txt"))
    (tmp_path / "cp1252.txt").write_bytes("caf\xe9\nth\xe9\n".encode("cp1252"))
    with pytest.raises(DataError, match="not UTF-8 text.*Save it as UTF-8"):
        parse_labels(str(tmp_path / "cp1252.txt"))


def test_run_models_and_foreign_options_do_not_mix(run_copy, notebook, tmp_path):
    data, models = notebook
    with pytest.raises(ConfigError, match="metadata.json beside it.*Leave them out"):
        export_model(run_copy / "model.keras", foreign=ForeignSpec(CLASSES, "unit"))
    with pytest.raises(ConfigError, match="--dataset.*--calib DIR instead"):
        export_model(models["softmax"], tmp_path / "out", dataset=data, foreign=ForeignSpec(CLASSES, "unit"))
    with pytest.raises(ConfigError, match="int8 quantisation needs calibration images.*trained outside edgeclf"):
        export_model(models["softmax"], tmp_path / "out", foreign=ForeignSpec(CLASSES, "unit"))


def test_cli_for_a_model_trained_elsewhere(notebook, tmp_path):
    data, models = notebook
    runner = CliRunner()
    missing = runner.invoke(main, ["export", str(models["softmax"]), "--out", str(tmp_path / "a")])
    assert missing.exit_code == 2 and "not from `edgeclf train`" in missing.output and "--labels" in missing.output
    half = runner.invoke(main, ["export", str(models["softmax"]), "--labels", "bar_h,bar_v"])
    assert half.exit_code == 2 and "both --labels and --input-norm" in half.output
    stray = runner.invoke(main, ["export", str(models["softmax"]), "--img-size", "16"])
    assert stray.exit_code == 2 and "go with --labels and --input-norm" in stray.output
    ok = runner.invoke(main, ["export", str(models["sigmoid"]), "--labels", "bar_h,bar_v", "--input-norm", "unit",
                              "--calib", str(data), "--format", "tflite", "--quantize", "fp32",
                              "--out", str(tmp_path / "b")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "b" / "sigmoid_fp32.tflite").exists() and "pass" in ok.output


def test_bench_takes_a_model_trained_elsewhere_as_the_reference_through_its_artefacts(notebook, tmp_path):
    from edgeclf.benchmarks.bench import BenchSpec, run_bench

    data, models = notebook
    out = tmp_path / "out"
    export_model(models["logits"], out, spec=ExportSpec(formats=("tflite",), quant=(QuantSpec.float32(),)),
                 calib=data, foreign=ForeignSpec(CLASSES, "unit"))
    spec = BenchSpec(threads=(1,), runs=5, min_seconds=0.0, warmup=1, timeout_s=300, max_images=40)
    result = run_bench([models["logits"], out / "logits_fp32.tflite"], data=data, spec=spec)
    rows = {r.model: r for r in result.rows}
    assert rows["logits.keras"].status == "ok", rows["logits.keras"].reason
    assert rows["logits.keras"].accuracy == rows["logits_fp32.tflite"].accuracy
    assert rows["logits_fp32.tflite"].agreement == 1.0
    # Alone, nothing says what its classes or inputs are: a failed row that says what to add.
    alone = run_bench([models["logits"], out / "logits_fp32.tflite", models["softmax"]], data=data, spec=spec)
    failed = next(r for r in alone.rows if r.model == "softmax.keras")
    assert failed.status == "failed" and "together with its exported artefacts" in failed.reason


def test_a_legacy_hdf5_model_is_refused_with_the_way_to_resave_it(tmp_path):
    legacy = tmp_path / "notebook.h5"
    legacy.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(ConfigError, match=r"legacy HDF5 model.*save\('notebook.keras'\)"):
        export_model(legacy, tmp_path / "out", foreign=ForeignSpec(CLASSES, "unit"))
    assert not (tmp_path / "out").exists()


def test_labels_in_the_wrong_order_are_caught_on_labelled_images(notebook, tmp_path):
    data, models = notebook
    reporter = WarningsReporter()
    export_model(models["softmax"], tmp_path / "out", calib=data,
                 spec=ExportSpec(formats=("tflite",), quant=(QuantSpec.float32(),)), foreign=ForeignSpec(("bar_v", "bar_h"), "unit"), reporter=reporter)
    assert any("below chance" in m and "In the order bar_h,bar_v it is right on" in m for m in reporter.messages), \
        reporter.messages


def test_label_order_problem_names_the_order_that_fits():
    from edgeclf.toolkit.export.foreign import label_order_problem

    labels = np.array([0, 0, 1, 1, 2, 2])
    rotated = np.eye(3)[[1, 1, 2, 2, 0, 0]]  # output 1 is class 0, output 2 class 1, output 0 class 2
    message = label_order_problem(rotated, labels, ["a", "b", "c"])
    assert "right on only 0.0 % of 6" in message and "In the order c,a,b it is right on 100.0 %" in message
    assert label_order_problem(np.eye(3)[labels], labels, ["a", "b", "c"]) is None
    # Alphabetical instead of output order often leaves some classes in place: above chance, yet a swap fits.
    labels = np.repeat(np.arange(4), 10)
    two_swapped = np.eye(4)[np.array([0, 1, 3, 2])[labels]]
    message = label_order_problem(two_swapped, labels, ["a", "b", "c", "d"])
    assert "right on 50.0 % of 40 labelled images with --labels as given" in message
    assert "In the order a,b,d,c it is right on 100.0 %" in message
    # A model that is merely weak, with its labels in order, is not blamed on them.
    noisy = np.eye(4)[np.where(np.arange(40) % 3 == 0, (labels + 1) % 4, labels)]
    assert label_order_problem(noisy, labels, ["a", "b", "c", "d"]) is None


def test_a_calibration_dataset_with_other_classes_is_used_unlabelled_and_said_so(notebook, tmp_path):
    _, models = notebook
    other = write_class_folders(tmp_path / "other", {"cat": 30, "dog": 30})
    reporter = WarningsReporter()
    results = export_model(models["softmax"], tmp_path / "out", calib=other, reporter=reporter,
                           spec=ExportSpec(formats=("tflite",), quant=(QuantSpec.float32(),)),
                           foreign=ForeignSpec(CLASSES, "unit"))
    assert "accuracy" not in results[0].fidelity
    assert any("(cat, dog) are not the model's (bar_h, bar_v)" in m for m in reporter.messages), reporter.messages


def test_cli_choices_are_the_library_s():
    """The CLI spells its choices out (importing the export code would slow every command's start); they must not
    drift from what the library accepts."""
    from edgeclf.edge_runtime.preprocess import RESIZE_METHODS
    from edgeclf.toolkit.export.foreign import INPUT_NORMS, OUTPUTS

    for command in ("export", "evaluate"):
        params = {p.name: p for p in main.commands[command].params}
        assert list(params["input_norm"].type.choices) == list(INPUT_NORMS)
        assert list(params["output_kind"].type.choices) == list(OUTPUTS)
        assert list(params["resize"].type.choices) == list(RESIZE_METHODS)


@pytest.mark.parametrize("kind", ["softmax", "logits", "sigmoid"])
def test_evaluate_scores_a_notebook_model_as_its_own_pipeline_does(notebook, tmp_path, kind):
    from edgeclf.toolkit.evaluate import evaluate

    data, models = notebook
    files = sorted(data.rglob("*.png"))
    labels = np.array([CLASSES.index(f.parent.name) for f in files])
    expected = float((_expected(models[kind], files).argmax(1) == labels).mean())
    result = evaluate(models[kind], data, foreign=ForeignSpec(CLASSES, "unit"), out_dir=tmp_path / "ev")
    assert result.metrics["n"] == len(files) == 160
    assert result.metrics["accuracy"] == pytest.approx(expected, abs=1e-9)
    assert result.metrics["accuracy"] > 0.9  # the notebook models learned the bars: a wrong wrapper would not score
    doc = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert doc["adapter"]["input_norm"] == "unit" and doc["adapter"]["class_names"] == list(CLASSES)
    assert doc["adapter"]["output"] == ("logits" if kind == "logits" else "probabilities")
    assert (tmp_path / "ev" / "confusion_all.png").exists()


def test_evaluate_of_a_notebook_model_checks_its_labels_and_outputs(notebook, run_copy, tmp_path):
    from edgeclf.toolkit.evaluate import evaluate

    data, models = notebook
    reporter = WarningsReporter()
    swapped = evaluate(models["softmax"], data, foreign=ForeignSpec(("bar_v", "bar_h"), "unit"), reporter=reporter)
    assert swapped.metrics["accuracy"] < 0.5
    assert any("below chance" in m and "In the order bar_h,bar_v" in m for m in reporter.messages), reporter.messages
    with pytest.raises(ConfigError, match="not probabilities.*--model-output logits"):
        evaluate(models["logits"], data, foreign=ForeignSpec(CLASSES, "unit", output="probabilities"))
    with pytest.raises(ConfigError, match="metadata.json beside it.*Leave them out"):
        evaluate(run_copy / "model.keras", data, foreign=ForeignSpec(CLASSES, "unit"))
    with pytest.raises(DataError, match=r"Classes \['cat'\] of .* are not classes of the model"):
        evaluate(models["softmax"], write_class_folders(tmp_path / "cats", {"cat": 3}),
                 foreign=ForeignSpec(CLASSES, "unit"))


def test_cli_evaluate_for_a_model_trained_elsewhere(notebook, tmp_path):
    data, models = notebook
    runner = CliRunner()
    missing = runner.invoke(main, ["evaluate", str(models["softmax"]), str(data)])
    assert missing.exit_code == 2 and "not from `edgeclf train`" in missing.output and "--labels" in missing.output
    half = runner.invoke(main, ["evaluate", str(models["softmax"]), str(data), "--input-norm", "unit"])
    assert half.exit_code == 2 and "both --labels and --input-norm" in half.output
    ok = runner.invoke(main, ["evaluate", str(models["sigmoid"]), str(data), "--labels", "bar_h,bar_v",
                              "--input-norm", "unit", "--threshold", "0.5", "--out", str(tmp_path / "ev")])
    assert ok.exit_code == 0, ok.output
    assert "n=160 accuracy=" in ok.output and "(bar_v where P(bar_v) >= 0.5)" in ok.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]["threshold"] == 0.5
