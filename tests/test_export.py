"""``edgeclf export``: artefacts per format and mode, embedded metadata, parity with Keras, the fidelity gate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import WarningsReporter, run_python, write_class_folders
from edgeclf.cli import main
from edgeclf.edge_runtime import ConfigError, DataError, PreprocessSpec, load_image
from edgeclf.edge_runtime.artifact import read_metadata
from edgeclf.edge_runtime.backends import open_backend
from edgeclf.toolkit.export import ExportError, ExportSpec, QuantSpec, export_model
from edgeclf.toolkit.progress import Reporter

TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "dynamic": 0.1, "int8": 0.1}  # max |delta probability|


def test_every_format_and_mode_is_written_and_passes_the_gate(exported):
    run, results = exported
    names = sorted(r.path.name for r in results)
    assert names == ["run_dynamic.tflite", "run_fp16.tflite", "run_fp32.onnx", "run_fp32.tflite", "run_int8.onnx",
                     "run_int8.tflite"]
    for r in results:
        assert r.passed, r.reason
        assert r.fidelity["verified"] and r.fidelity["n"] == 18  # the run's test split
        assert r.fidelity["agreement"] >= (0.999 if r.mode in ("fp32", "fp16") else 0.98)
        assert (run / "export" / f"{r.path.name}.json").exists()
    sizes = {(r.format, r.mode): r.size_bytes for r in results}
    assert sizes[("tflite", "int8")] < 0.35 * sizes[("tflite", "fp32")]
    assert sizes[("onnx", "int8")] < 0.35 * sizes[("onnx", "fp32")]
    report = json.loads((run / "export" / "export_report.json").read_text())
    assert len(report["artifacts"]) == 6 and report["calibration"].startswith("val split")


def test_artefacts_describe_themselves(exported):
    run, results = exported
    source = json.loads((run / "metadata.json").read_text())
    for r in results:
        meta = read_metadata(r.path)
        assert meta["class_names"] == source["class_names"] == ["bar_h", "bar_v"]
        assert meta["input"]["shape"] == [16, 16, 3] and meta["input"]["color"] == "RGB"
        assert meta["preprocess"] == source["preprocess"]
        assert meta["quantization"]["mode"] == r.mode and meta["backbone"] == "simple_cnn"
        assert len(meta["source_model_sha256"]) == 64
        assert meta["fidelity"]["agreement"] == r.fidelity["agreement"]
        assert json.loads((run / "export" / f"{r.path.name}.json").read_text()) == meta
        assert meta["schema_version"] == 1  # typed and versioned (ArtifactMetadata)
    int8 = read_metadata(run / "export" / "run_int8.tflite")
    assert int8["input"]["dtype"] == "uint8" and int8["input"]["quantization"] == {"scale": 1.0, "zero_point": 0}
    onnx8 = read_metadata(run / "export" / "run_int8.onnx")["quantization"]
    assert onnx8["format"] == "QDQ" and onnx8["per_channel"] and onnx8["pre_processed"] and onnx8["opset"] >= 17


@pytest.mark.parametrize("batch", [1, 7])
def test_runtime_outputs_match_keras_at_each_batch_size(exported, batch):
    import keras

    run, results = exported
    model = keras.models.load_model(run / "model.keras", safe_mode=True)
    files = sorted((run.parent / "data").rglob("*.png"))[:batch]
    pixels = np.stack([load_image(f, PreprocessSpec(16, 16)) for f in files])
    reference = np.asarray(model(pixels.astype("float32")))
    for r in results:
        probs = open_backend(r.path, threads=1).run(pixels)
        assert probs.shape == (batch, 2)
        assert np.abs(probs - reference).max() <= TOLERANCE[r.mode], (r.path.name, np.abs(probs - reference).max())


def test_existing_artefacts_are_not_overwritten_without_force(exported):
    run, _ = exported
    stamp = (run / "export" / "run_int8.tflite").stat().st_mtime_ns
    with pytest.raises(ConfigError, match="already exist.*--force"):
        export_model(run / "model.keras", spec=ExportSpec(quant=(QuantSpec.int8(),)))
    assert (run / "export" / "run_int8.tflite").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("given", ["folder", "npy file"])
def test_a_model_trained_on_numpy_data_calibrates_and_verifies_on_its_own_splits(tmp_path, given):
    from conftest import class_image
    from edgeclf.toolkit.augment import AugmentSpec
    from edgeclf.toolkit.train import TrainSpec, train

    rng = np.random.default_rng(3)
    labels = [i % 2 for i in range(360)]  # a test split of at least MIN_HELD_OUT (50) images
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "images.npy", np.stack([class_image(i, rng) for i in labels]))
    (tmp_path / "npy" / "labels.csv").write_text("label\n" + "\n".join(["bar_h", "bar_v"][i] for i in labels) + "\n")
    data = tmp_path / "npy" if given == "folder" else tmp_path / "npy" / "images.npy"
    train(data, tmp_path / "run", backbone="simple_cnn", img_size=16, weights="none",
          spec=TrainSpec(epochs=1, batch_size=16, augment=AugmentSpec.none()))
    results = export_model(tmp_path / "run" / "model.keras", spec=ExportSpec(formats=("tflite",),
                                                                             quant=(QuantSpec.int8(),)))
    report = json.loads((tmp_path / "run" / "export" / "export_report.json").read_text())
    sizes = json.loads((tmp_path / "run" / "metadata.json").read_text())["dataset"]["split_sizes"]
    assert report["calibration"] == f"val split of the training run ({sizes['val']} images)"
    assert report["verification"] == f"test split of the training run ({sizes['test']} images)"
    assert results[0].fidelity["n"] == sizes["test"] > 0


def test_int8_without_calibration_data_is_refused(run_copy):
    meta_path = run_copy / "metadata.json"
    meta = json.loads(meta_path.read_text())
    data_now = meta["dataset"]["path"]  # where the data really is; the run is told it was elsewhere
    meta["dataset"]["path"] = str(run_copy / "moved-away")
    meta_path.write_text(json.dumps(meta))
    int8 = ExportSpec(formats=("tflite",), quant=(QuantSpec.int8(),))
    # The message says which part of the run is missing, not "splits.csv missing, or the dataset moved".
    with pytest.raises(ConfigError, match=r"needs calibration images.*\(its dataset is no longer at .*moved-away\)"
                                          r".*--dataset DIR.*--calib"):
        export_model(run_copy / "model.keras", spec=int8)
    with pytest.raises(DataError, match="Dataset not found"):
        export_model(run_copy / "model.keras", spec=int8, dataset=run_copy / "nowhere")
    # Told where the dataset is now, the run's own val and test splits are found there again.
    export_model(run_copy / "model.keras", spec=int8, dataset=data_now, out_dir=run_copy / "moved-export")
    report = json.loads((run_copy / "moved-export" / "export_report.json").read_text())
    assert report["calibration"].startswith("val split of the training run")
    assert "split of the training run" in report["verification"]  # this tiny run has under 50 test images
    (run_copy / "splits.csv").unlink()
    with pytest.raises(ConfigError, match=r"needs calibration images.*\(.* has no splits.csv\)\. Pass --calib"):
        export_model(run_copy / "model.keras", spec=int8)
    assert not list((run_copy / "export").glob("*.tflite*"))


def test_calibration_folder_of_unlabelled_images(run_copy, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    write_class_folders(tmp_path / "tmpdata", {"a": 15, "b": 15}, seed=7)
    for i, f in enumerate(sorted((tmp_path / "tmpdata").rglob("*.png"))):
        shutil.copyfile(f, calib / f"img_{i}.png")  # flat folder, no classes
    results = export_model(run_copy / "model.keras", spec=ExportSpec(formats=("tflite",), quant=(QuantSpec.int8(),)),
                           calib=calib, out_dir=tmp_path / "out")
    assert results[0].passed
    report = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert report["calibration"].startswith(str(calib))


def test_calibration_warnings_say_what_matters(run_copy, tmp_path, monkeypatch):
    """A calibration folder whose classes are not the model's is only worth a word when the gate runs on it (the
    run's own test split measures accuracy otherwise); too few calibration images are always worth one."""
    from edgeclf.toolkit.export import exporter

    monkeypatch.setattr(exporter, "MIN_HELD_OUT", 10)  # the tiny run's 18 test images are the gate's
    other = write_class_folders(tmp_path / "other", {"cat": 20, "dog": 20})
    int8 = ExportSpec(formats=("tflite",), quant=(QuantSpec.int8(),))
    reporter = WarningsReporter()
    results = export_model(run_copy / "model.keras", tmp_path / "out", calib=other, reporter=reporter, spec=int8)
    assert "accuracy" in results[0].fidelity
    assert not any("not the model's" in m for m in reporter.messages), reporter.messages
    assert [m for m in reporter.messages if m.startswith("int8 ranges are fitted to 40 calibration images, from "
                                                         f"{other} (40 images)")], reporter.messages
    reporter = WarningsReporter()  # fewer were asked for: no warning
    export_model(run_copy / "model.keras", tmp_path / "out2", calib=other, reporter=reporter,
                 spec=ExportSpec(formats=("tflite",), quant=(QuantSpec.int8(),), calibration_images=40))
    assert not any("int8 ranges" in m for m in reporter.messages), reporter.messages


def test_export_command_prints_no_converter_or_library_noise(run_copy, tmp_path):
    out = subprocess.run([sys.executable, "-m", "edgeclf.cli", "export", str(run_copy / "model.keras"),
                          "--quantize", "int8", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    for noise in ("fully_quantize", "FutureWarning", "absl::InitializeLog", "oneDNN", "XNNPACK delegate"):
        assert noise not in out.stderr, out.stderr
    assert "run_int8.tflite" in out.stdout and "run_int8.onnx" in out.stdout


def test_a_deliberately_broken_calibration_is_rejected_by_the_gate(run_copy, monkeypatch):
    """Calibration fed on the wrong scale (a preprocessing mismatch, here pixels x 1000) stretches every int8 range
    so far that real images all quantise to the same levels: both converters' int8 artefacts must fail the gate.

    (This tiny model shrugs off milder mistakes - black, white or 0-3 frames, pixels x 40 - at 100 % agreement.)"""
    from edgeclf.toolkit.export.images import ImageSet

    real_batches = ImageSet.batches

    def wrong_scale(self, batch_size=16):
        source = real_batches(self, batch_size)
        return lambda: (b.astype(np.float32) * 1000.0 for b in source())

    monkeypatch.setattr(ImageSet, "batches", wrong_scale)
    results = export_model(run_copy / "model.keras", spec=ExportSpec(quant=(QuantSpec.int8(),)))
    assert [r.path.name for r in results] == ["run_int8.tflite.rejected", "run_int8.onnx.rejected"]
    for r in results:
        assert not r.passed and "below the int8 gate of 0.9800" in r.reason
        assert r.fidelity["agreement"] < 0.9
    assert not list((run_copy / "export").glob("*.tflite")) and not list((run_copy / "export").glob("*.onnx"))


def _swap_classes_in_the_gate(monkeypatch) -> None:
    """Makes the gate's backend reverse the class order: what a bad conversion looks like to the gate."""
    from edgeclf.toolkit.export import exporter

    real_open = exporter.open_backend

    class Swapped:
        def __init__(self, path):
            self.inner = real_open(path)

        def run(self, pixels):
            return self.inner.run(pixels)[:, ::-1]

    monkeypatch.setattr(exporter, "open_backend", lambda path: Swapped(path))


def test_a_broken_artefact_is_rejected_by_the_gate(run_copy, monkeypatch):
    _swap_classes_in_the_gate(monkeypatch)
    results = export_model(run_copy / "model.keras", spec=ExportSpec(formats=("tflite",), quant=(QuantSpec.float32(),)))
    r = results[0]
    assert not r.passed and r.path.name == "run_fp32.tflite.rejected"
    assert "below the fp32 gate of 0.9990" in r.reason and "95% interval" in r.reason
    assert not (run_copy / "export" / "run_fp32.tflite").exists()
    meta = json.loads((run_copy / "export" / "run_fp32.tflite.json").read_text())
    assert meta["gate"]["passed"] is False and meta["fidelity"]["agreement"] < 0.5


def test_an_export_of_other_modes_alone_still_compares_sizes_with_the_earlier_fp32(run_copy):
    model = str(run_copy / "model.keras")
    runner = CliRunner()
    assert runner.invoke(main, ["export", model, "--format", "tflite", "--quantize", "fp32", "--no-verify"]).exit_code == 0
    result = runner.invoke(main, ["export", model, "--format", "tflite", "--quantize", "fp16", "--no-verify"])
    assert result.exit_code == 0, result.output
    export = run_copy / "export"
    ratio = (export / "run_fp16.tflite").stat().st_size / (export / "run_fp32.tflite").stat().st_size
    row = next(line.split() for line in result.output.splitlines() if line.startswith("run_fp16.tflite"))
    assert row[2] == f"{100 * ratio:.0f}%"
    (export / "run_fp32.tflite").unlink()  # gone: nothing to compare with
    result = runner.invoke(main, ["export", model, "--format", "tflite", "--quantize", "fp16", "--no-verify", "--force"])
    row = next(line.split() for line in result.output.splitlines() if line.startswith("run_fp16.tflite"))
    assert row[2] == "n/a"  # the agreement column: the size ratio is left empty


def test_a_rejected_int8_artefact_comes_with_what_else_this_export_measured():
    from edgeclf.cli import _rejection_advice
    from edgeclf.toolkit.export.exporter import ExportResult

    def result(fmt, mode, passed, verified=True):
        name = f"m_{mode}.{fmt}" + ("" if passed else ".rejected")
        return ExportResult(fmt, mode, Path(name), passed, 1, {"verified": verified, "n": 120})

    minmax = ExportSpec(quant=(QuantSpec.float32(), QuantSpec.int8()))
    advice = _rejection_advice([result("tflite", "int8", False), result("onnx", "int8", True)], minmax)
    assert advice == ["  instead of m_int8.tflite.rejected: m_int8.onnx passed the same gate; --quantize dynamic "
                      "(int8 weights, float activations) keeps most of the size gain and usually agrees closely"]
    assert _rejection_advice([result("tflite", "int8", False), result("tflite", "dynamic", True)], minmax) == []
    onnx = _rejection_advice([result("onnx", "int8", False), result("tflite", "int8", False)], minmax)
    assert onnx[0] == ("  instead of m_int8.onnx.rejected: --calib-method percentile or entropy clips the outliers "
                       "that minmax ranges keep")
    entropy = ExportSpec(quant=(QuantSpec.int8("entropy"),))
    assert _rejection_advice([result("onnx", "int8", False)], entropy) == []
    assert _rejection_advice([result("tflite", "fp32", False), result("onnx", "int8", True)], minmax) == []


def test_modes_a_format_lacks_are_named_not_silently_dropped(run_copy):
    class Recorder(Reporter):
        def __init__(self):
            self.warnings = []

        def warn(self, message):
            self.warnings.append(message)

    both, onnx_only = Recorder(), Recorder()
    spec = ExportSpec(quant=(QuantSpec.float32(), QuantSpec.float16()), verify=False)
    assert [(f.value, q.mode) for f, q in spec.skipped()] == [("onnx", "fp16")]
    results = export_model(run_copy / "model.keras", spec=spec, reporter=both)
    assert sorted(r.path.name for r in results) == ["run_fp16.tflite", "run_fp32.onnx", "run_fp32.tflite"]
    assert both.warnings == ["onnx has no fp16 mode: written for tflite only."]
    export_model(run_copy / "model.keras", force=True, reporter=onnx_only,
                 spec=ExportSpec(formats=("onnx",), quant=(QuantSpec.float32(), QuantSpec.dynamic()), verify=False))
    assert onnx_only.warnings == ["onnx has no dynamic mode: skipped."]
    with pytest.raises(ConfigError, match="leaves nothing to export"):
        ExportSpec(formats=("onnx",), quant=(QuantSpec.float16(), QuantSpec.dynamic()))


def test_no_verify_is_recorded(run_copy):
    results = export_model(run_copy / "model.keras",
                           spec=ExportSpec(formats=("onnx",), quant=(QuantSpec.float32(),), verify=False))
    meta = read_metadata(results[0].path)
    assert meta["fidelity"] == {"verified": False, "reason": "--no-verify: the fidelity gate was skipped"}
    assert meta["gate"]["verified"] is False


def test_a_relative_model_keras_inside_its_run_folder_names_artefacts_after_the_folder(run_copy, monkeypatch):
    monkeypatch.chdir(run_copy)  # `cd runs/helmet && edgeclf export model.keras`
    results = export_model(Path("model.keras"),
                           spec=ExportSpec(formats=("onnx",), quant=(QuantSpec.float32(),), verify=False))
    assert [r.path for r in results] == [Path("export") / "run_fp32.onnx"]
    assert (run_copy / "export" / "run_fp32.onnx").exists()


def test_a_later_export_into_the_same_folder_keeps_the_earlier_report_entries(run_copy):
    def export(fmt, name, **kw):
        return export_model(run_copy / "model.keras", name=name, **kw,
                            spec=ExportSpec(formats=(fmt,), quant=(QuantSpec.float32(),), verify=False))

    def entries():
        report = json.loads((run_copy / "export" / "export_report.json").read_text())
        return {Path(a["path"]).name: a for a in report["artifacts"]}, report

    export("onnx", "first")
    export("tflite", "second")
    artifacts, report = entries()
    assert set(artifacts) == {"first_fp32.onnx", "second_fp32.tflite"}
    assert report["spec"]["formats"] == ["tflite"]  # the top level describes the latest export
    assert artifacts["first_fp32.onnx"]["spec"]["formats"] == ["onnx"]  # each entry keeps its own export's settings
    assert artifacts["first_fp32.onnx"]["source_model_sha256"] == read_metadata(
        run_copy / "export" / "first_fp32.onnx")["source_model_sha256"]
    export("onnx", "first", force=True)  # rewritten: one entry, not two
    assert sorted(entries()[0]) == ["first_fp32.onnx", "second_fp32.tflite"]
    (run_copy / "export" / "second_fp32.tflite").unlink()  # gone from the folder: gone from the report
    export("onnx", "first", force=True)
    assert sorted(entries()[0]) == ["first_fp32.onnx"]


def test_cli_export_exit_codes(run_copy, tmp_path):
    ok = CliRunner().invoke(main, ["export", str(run_copy / "model.keras"), "--format", "tflite", "--quantize", "int8"])
    assert ok.exit_code == 0, ok.output
    assert "run_int8.tflite" in ok.output and "pass" in ok.output
    again = CliRunner().invoke(main, ["export", str(run_copy / "model.keras"), "--format", "tflite",
                                      "--quantize", "int8"])
    assert again.exit_code == 2 and "--force" in again.output
    bad = CliRunner().invoke(main, ["export", str(run_copy / "model.keras"), "--format", "tfl"])
    assert bad.exit_code == 2 and "format='tfl'. Supported: tflite, onnx" in bad.output
    nothing = CliRunner().invoke(main, ["export", str(run_copy / "model.keras"), "--format", "onnx",
                                        "--quantize", "fp16,dynamic", "--out", str(tmp_path / "none")])
    assert nothing.exit_code == 2 and "leaves nothing to export" in nothing.output
    assert "(onnx: fp32, int8)" in nothing.output and not (tmp_path / "none").exists()  # no empty report written
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.keras").write_bytes(b"not a zip")
    shutil.copyfile(run_copy / "metadata.json", tmp_path / "broken" / "metadata.json")
    corrupt = CliRunner().invoke(main, ["export", str(tmp_path / "broken" / "model.keras")])
    assert corrupt.exit_code == 2 and "Cannot load" in corrupt.output and "Traceback" not in corrupt.output
    for name in ("a/b", "../escape", " padded"):
        named = CliRunner().invoke(main, ["export", str(run_copy / "model.keras"), "--format", "tflite", "--quantize",
                                          "fp32", "--name", name, "--out", str(tmp_path / "named")])
        assert named.exit_code == 2 and "without folders" in named.output, named.output
    assert not (tmp_path / "named").exists() and not list(tmp_path.glob("escape*"))
    artefact = CliRunner().invoke(main, ["export", str(run_copy / "export" / "run_int8.tflite")])
    assert artefact.exit_code == 2 and "Expected a .keras model file" in artefact.output  # not "metadata.json missing"


@pytest.mark.parametrize("n, hint", [(1000, "--verify-images above that"), (120, "all of it was used")])
def test_a_gate_inside_the_agreement_interval_is_flagged_with_advice_that_can_help(capsys, n, hint):
    from edgeclf.cli import _print_export_summary
    from edgeclf.toolkit.export import ExportResult

    fidelity = {"verified": True, "agreement": 0.99, "agreement_ci95": (0.95, 0.998), "max_abs_diff": 0.1, "n": n}
    result = ExportResult("tflite", "int8", Path("m_int8.tflite"), True, 1000, fidelity)
    _print_export_summary([result], ExportSpec(verify_images=1000))
    out = capsys.readouterr().out
    assert "the int8 gate of 0.9800 lies inside the agreement's 95% interval" in out and hint in out


def test_runtime_reads_and_runs_artefacts_without_tensorflow(exported):
    run, results = exported
    paths = [str(r.path) for r in results]
    code = ("import sys, json, numpy as np\n"
            "from edgeclf.edge_runtime.artifact import read_metadata\n"
            "from edgeclf.edge_runtime.backends import open_backend\n"
            f"for p in {paths!r}:\n"
            "    meta = read_metadata(p)\n"
            "    probs = open_backend(p).run(np.zeros((2, *meta['input']['shape']), np.uint8))\n"
            "    assert probs.shape == (2, 2), probs.shape\n"
            "print(','.join(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    out = run_python(code)
    assert out.stdout.strip() == ""


def test_lambda_model_is_refused_with_safe_mode_on(run_copy):
    import keras

    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(lambda x: x / 255.0)(inputs)))
    keras.Model(inputs, outputs).save(run_copy / "model.keras")
    result = CliRunner().invoke(main, ["export", str(run_copy / "model.keras")])
    assert result.exit_code == 2
    assert "safe_mode" in result.output and "Lambda" in result.output and "Traceback" not in result.output


def test_a_model_keras_loads_only_in_part_is_refused(run_copy, monkeypatch):
    import keras

    load = keras.models.load_model

    def partly(*args, **kwargs):  # what Keras 3.15 does with a file whose nested containers it cannot match
        model = load(*args, **kwargs)
        warnings.warn("Skipping nested container at 'layers/x/container': no matching group found in the saved "
                      "file. Affected layers will retain their freshly-initialized weights.", UserWarning, stacklevel=2)
        warnings.warn("an unrelated warning", UserWarning, stacklevel=2)
        return model

    monkeypatch.setattr(keras.models, "load_model", partly)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, ["export", str(run_copy / "model.keras"), "--format", "tflite",
                                           "--quantize", "fp32"])
    assert result.exit_code == 2, result.output
    assert "Keras loaded only part of" in result.output and "Skipping nested container at 'layers/x" in result.output
    assert "Traceback" not in result.output and not (run_copy / "export" / "run_fp32.tflite").exists()
    assert [str(w.message) for w in caught if "unrelated" in str(w.message)] == ["an unrelated warning"]


def test_calibration_folder_without_images_is_a_data_error(run_copy, tmp_path):
    from edgeclf.edge_runtime import DataError

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="No readable images"):
        export_model(run_copy / "model.keras", calib=tmp_path / "empty",
                     spec=ExportSpec(formats=("tflite",), quant=(QuantSpec.int8(),)))


def test_unwritable_output_folder(run_copy, tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ConfigError, match="Cannot write to"):
        export_model(run_copy / "model.keras", tmp_path / "a_file" / "out")


def test_onnx_percentile_calibration(run_copy):
    results = export_model(run_copy / "model.keras",
                           spec=ExportSpec(formats=("onnx",), quant=(QuantSpec.int8("percentile"),)))
    assert results[0].passed
    assert read_metadata(results[0].path)["quantization"]["calibration_method"] == "percentile"


def _int8_weight_extremes(path) -> int:
    import onnx
    from onnx import numpy_helper

    weights = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8]
    assert weights, "no int8 weights in the QDQ model"
    return max(int(np.abs(w.astype(np.int32)).max()) for w in weights)


def test_onnx_reduce_range_follows_the_option_not_only_this_cpu(run_copy):
    """7-bit weights for x86 targets without VNNI: decided by --reduce-range, or by this CPU when it is auto."""
    from edgeclf.edge_runtime.backends import needs_reduce_range

    extremes = {}
    for reduce, cli in ((True, "on"), (False, "off")):
        out = run_copy / f"export_{cli}"
        result = CliRunner().invoke(main, ["export", str(run_copy / "model.keras"), "--format", "onnx", "--quantize",
                                           "int8", "--reduce-range", cli, "--out", str(out), "--no-verify"])
        assert result.exit_code == 0, result.output
        quant = read_metadata(out / "run_int8.onnx")["quantization"]
        assert quant["reduce_range"] is reduce and quant["reduce_range_from"] == "--reduce-range"
        extremes[cli] = _int8_weight_extremes(out / "run_int8.onnx")
    assert extremes["on"] <= 64 < extremes["off"] <= 127  # 7-bit weights against the full int8 range
    auto = export_model(run_copy / "model.keras", run_copy / "export_auto",
                        spec=ExportSpec(formats=("onnx",), quant=(QuantSpec.int8(),), verify=False))
    quant = read_metadata(auto[0].path)["quantization"]
    assert quant["reduce_range"] is needs_reduce_range() and quant["reduce_range_from"] == "this CPU"


@pytest.mark.parametrize("cpu_saturates", [True, False])
def test_gate_says_when_it_measured_8bit_weights_where_they_saturate(run_copy, monkeypatch, cpu_saturates):
    """--reduce-range off (for a VNNI or ARM target) verified on an x86 CPU without VNNI: the figures understate the
    artefact, so a pass is flagged and a rejection says why it may not hold on the target."""
    import edgeclf.edge_runtime.classifier as classifier

    monkeypatch.setattr(classifier, "needs_reduce_range", lambda: cpu_saturates)
    args = ["export", str(run_copy / "model.keras"), "--format", "onnx", "--quantize", "int8", "--reduce-range", "off"]
    result = CliRunner().invoke(main, [*args, "--out", str(run_copy / "passed")])
    assert result.exit_code == 0, result.output
    assert ("gate figures measured on an x86 CPU without VNNI" in result.output) is cpu_saturates
    meta = read_metadata(run_copy / "passed" / "run_int8.onnx")
    assert meta["fidelity"].get("measured_where_it_saturates", False) is cpu_saturates

    _swap_classes_in_the_gate(monkeypatch)
    (r,) = export_model(run_copy / "model.keras", run_copy / "rejected", spec=ExportSpec(
        formats=("onnx",), quant=(QuantSpec.int8(reduce_range=False),)))
    assert not r.passed and "below the int8 gate" in r.reason
    assert ("on a VNNI or ARM CPU it can agree better" in r.reason and "--no-verify" in r.reason) is cpu_saturates


def test_ops_without_a_builtin_kernel_are_refused_at_export(tmp_path):
    import tensorflow as tf

    from edgeclf.toolkit.export.tflite import convert

    class Decompose(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 4, 4], tf.float32)])
        def serve(self, x):
            return tf.linalg.svd(x)[0]  # tf.Svd has no TFLite builtin kernel: only Flex could run it

    module = Decompose()
    tf.saved_model.save(module, str(tmp_path / "saved_model"), signatures={"serving_default": module.serve})
    with pytest.raises(ExportError, match=r"cannot run \(Svd\).*--format onnx") as info:
        convert(tmp_path / "saved_model", QuantSpec.float32(), None)
    assert "\n" not in str(info.value)


def test_onnx_has_the_pixels_input_only_when_the_model_captures_constants(tmp_path):
    """EfficientNet's Normalization layer keeps its mean and variance as tensors its call captures: tf2onnx's
    from_function made them ONNX inputs, and onnxruntime refused to run the model without them."""
    import keras
    import onnxruntime as ort

    from edgeclf.toolkit.export.onnx import convert_fp32

    x = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 3)).astype("float32")
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(x)
    inp = keras.Input((8, 8, 3))
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(norm(inp)))
    model = keras.Model(inp, out)
    convert_fp32(model, tmp_path / "m.onnx", 17)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    assert isinstance(session.get_inputs()[0].shape[0], str)  # the batch dimension stays dynamic
    np.testing.assert_allclose(session.run(None, {"pixels": x})[0], np.asarray(model(x)), atol=1e-5)


def test_efficientnet_converts_to_an_onnx_model_onnxruntime_runs(tmp_path):
    """The backbone that hit it: every EfficientNet export ended in 'Required inputs ... are missing'."""
    import onnxruntime as ort

    from edgeclf.models import ModelSpec, create_model
    from edgeclf.toolkit.export.onnx import convert_fp32

    model = create_model(ModelSpec("efficientnet_b0", 2, 32, "none"))
    convert_fp32(model, tmp_path / "e.onnx", 17)
    session = ort.InferenceSession(str(tmp_path / "e.onnx"))
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(session.run(None, {"pixels": x})[0], np.asarray(model(x, training=False)), atol=1e-4)


def test_unsupported_ops_are_named_from_the_converter_message():
    from edgeclf.toolkit.export.tflite import unsupported_ops

    message = ("error: 'tf.Svd' op is neither a custom op nor a flex op\n"
               "error: 'tf.Svd' op is neither a custom op nor a flex op\n"
               "Some ops are not supported by the native TFLite runtime\nFlex ops: FlexBitcast, FlexSvd\n"
               "Custom ops: Svd\n")
    assert unsupported_ops(message) == ["Svd", "FlexBitcast", "FlexSvd"]
    assert unsupported_ops("Could not translate MLIR to FlatBuffer: shape mismatch") == []


def test_cli_says_when_the_gate_lies_inside_the_agreements_interval(run_copy, monkeypatch):
    from edgeclf.toolkit.export import exporter

    real_open = exporter.open_backend

    class OneFlipped:
        """Reverses the class order of the first image only: exactly one disagreement with Keras."""

        def __init__(self, path):
            self.inner, self.first = real_open(path), True

        def run(self, pixels):
            out = self.inner.run(pixels).copy()
            if self.first:
                out[0] = out[0][::-1]
                self.first = False
            return out

    monkeypatch.setattr(exporter, "open_backend", lambda path: OneFlipped(path))
    result = CliRunner().invoke(main, ["export", str(run_copy / "model.keras"), "--format", "tflite", "--quantize",
                                       "fp32", "--min-agreement", "fp32=0.8", "--verify-images", "10",
                                       "--calib-images", "12"])
    assert result.exit_code == 0, result.output
    fid = read_metadata(run_copy / "export" / "run_fp32.tflite")["fidelity"]
    assert fid["n"] == 10 and fid["agreement"] == 0.9  # the tiny run verifies on its (12) calibration images
    lo, hi = fid["agreement_ci95"]
    assert lo == pytest.approx(0.5958, abs=1e-4) and hi == pytest.approx(0.9821, abs=1e-4)
    note = "gate of 0.8000 lies inside the agreement's 95% interval (0.5958-0.9821, 10 images): passing"
    assert note in result.output
    report = json.loads((run_copy / "export" / "export_report.json").read_text())
    assert report["spec"]["calibration_images"] == 12 and report["spec"]["verify_images"] == 10
    assert report["calibration"].endswith("(12 images)")


def _ops(content: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()  # applies the XNNPACK delegate: each partition it takes is one DELEGATE node
    return [op["op_name"] for op in interpreter._get_ops_details()]


@pytest.mark.slow  # EfficientNet-B0 converted twice: a minute on 2 cores
def test_reshape_and_flatten_layers_export_without_batch_dependent_ops(tmp_path):
    """Keras traces Reshape (one per EfficientNet squeeze-excite block) and Flatten with the batch size read at run
    time: SHAPE ops XNNPACK cannot run split the TFLite model into one delegated partition per block. The export
    reshapes to a constant shape instead: one partition, the same numbers, any batch size."""
    import onnx
    import onnxruntime as ort
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from edgeclf.models import HeadSpec, ModelSpec, create_model
    from edgeclf.toolkit.export.archive import write_saved_model
    from edgeclf.toolkit.export.onnx import convert_fp32

    model = create_model(ModelSpec("efficientnet_b0", 2, 32, "none", head=HeadSpec(pooling="flatten")))
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))
    contents = {}
    for static in (False, True):
        write_saved_model(model, tmp_path / f"saved_{static}", static_reshapes=static)
        contents[static] = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / f"saved_{static}")).convert()
    before, after = _ops(contents[False]), _ops(contents[True])
    assert before.count("SHAPE") == 17 and before.count("DELEGATE") == 18  # 16 blocks + the Flatten head
    assert "SHAPE" not in after and after.count("DELEGATE") == 1
    interpreter = Interpreter(model_content=contents[True])
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), expected,
                               atol=1e-5)

    convert_fp32(model, tmp_path / "m.onnx", 17)
    assert "Shape" not in {node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    np.testing.assert_allclose(session.run(None, {"pixels": x})[0], expected, atol=1e-5)


def test_constant_reshapes_keep_a_shared_layer_right_and_leave_subclassed_models_alone():
    import keras

    from edgeclf.toolkit.export.archive import without_dynamic_reshapes

    shared = keras.layers.Reshape((-1, 3))  # one layer called on two inputs: (2, 2, 3) -> (4, 3), (18,) -> (6, 3)
    a, b = keras.Input((2, 2, 3)), keras.Input((18,))
    model = keras.Model([a, b], [shared(a), shared(b)])
    rng = np.random.default_rng(0)
    xa, xb = rng.random((2, 2, 2, 3), "float32"), rng.random((2, 18), "float32")
    clone = without_dynamic_reshapes(model)
    assert clone is not model
    for got, want in zip(clone([xa, xb]), model([xa, xb])):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.flat = keras.layers.Flatten()
            self.dense = keras.layers.Dense(2, activation="softmax")

        def call(self, x):
            return self.dense(self.flat(x))

    model = Subclassed()
    model(np.zeros((1, 4, 4, 3), "float32"))
    assert without_dynamic_reshapes(model) is model
