"""``edgeclf info``: an artefact described from the metadata inside the file, without TensorFlow."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from conftest import run_python
from edgeclf.cli import main
from edgeclf.edge_runtime.artifact import read_metadata, read_tflite_metadata, write_tflite_metadata


def _artefact(exported, name):
    _, results = exported
    return next(r.path for r in results if r.path.name == name)


def _lines(output: str) -> dict[str, str]:
    """``{field: text}`` of one artefact's description."""
    return {line.split()[0]: line.split(None, 1)[1] for line in output.splitlines() if line.startswith("  ")}


def test_info_describes_each_artefact_from_its_own_metadata(exported, tmp_path):
    for name in ("run_int8.tflite", "run_int8.onnx", "run_fp16.tflite"):
        src = _artefact(exported, name)
        path = tmp_path / name  # without its sidecar .json: what reaches a device
        shutil.copyfile(src, path)
        meta = read_metadata(path)
        result = CliRunner().invoke(main, ["info", str(path)])
        assert result.exit_code == 0, result.output
        lines = _lines(result.output)
        assert lines["classes"] == "2: bar_h, bar_v"
        assert lines["input"].startswith(f"16x16 RGB NHWC {meta['input']['dtype']}")
        fid = meta["fidelity"]
        assert lines["gate"].startswith(f"passed (min agreement {100 * meta['gate']['min_agreement']:.2f} %): top-1 "
                                        f"agreement with Keras {100 * fid['agreement']:.2f} %")
        assert f"max |dp| {fid['max_abs_diff']:.4f}" in lines["gate"]
        assert meta["source_model_sha256"][:16] in lines["source"] and "backbone simple_cnn" in lines["source"]
        if name == "run_int8.tflite":
            assert lines["quantization"] == "full integer (int8 weights and activations)"
            assert "uint8, scale 1 zero point 0" in lines["input"]
        elif name == "run_int8.onnx":
            bits = "7-bit weights (reduce_range)" if meta["quantization"]["reduce_range"] else "8-bit weights"
            assert f"{bits}, set by this CPU" in lines["quantization"] and "per-channel" in lines["quantization"]
        else:
            assert lines["quantization"] == "float16 weights" and "scale" not in lines["input"]  # float tensors


def test_info_json_round_trips_the_metadata(exported):
    path = _artefact(exported, "run_int8.onnx")
    result = CliRunner().invoke(main, ["info", "--json", str(path), str(_artefact(exported, "run_fp32.tflite"))])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert len(records) == 2 and records[0]["metadata"] == read_metadata(path)


def test_info_shows_a_rejected_artefact_and_why(exported, tmp_path):
    data = _artefact(exported, "run_fp32.tflite").read_bytes()
    meta = read_tflite_metadata(data)
    meta["gate"].update(passed=False, reason="top-1 agreement 0.4000 is below the fp32 gate of 0.9990 on 10 images")
    path = tmp_path / "run_fp32.tflite.rejected"
    path.write_bytes(write_tflite_metadata(data, meta))
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 0, result.output
    gate = _lines(result.output)["gate"]
    assert gate.startswith("REJECTED (min agreement 99.90 %)") and "reason: top-1 agreement 0.4000" in gate


def test_info_reports_bad_files_and_still_shows_the_others(exported, tmp_path):
    (tmp_path / "garbage.onnx").write_bytes(b"not a protobuf")
    good = _artefact(exported, "run_int8.tflite")
    result = CliRunner().invoke(main, ["info", str(tmp_path / "missing.tflite"), str(tmp_path / "garbage.onnx"),
                                       str(good), str(tmp_path / "notes.txt")])
    assert result.exit_code == 2  # bad input, as for every command
    assert "Model not found" in result.output and "garbage.onnx is not a readable onnx file" in result.output
    assert "Expected a .tflite or .onnx file (or one that export left as .rejected)" in result.output
    assert str(good) in result.output and "full integer" in result.output
    result = CliRunner().invoke(main, ["info", str(tmp_path / "garbage.onnx")])
    assert result.exit_code == 2 and "Traceback" not in result.output and result.output.count("\n") == 1


def test_info_on_a_run_or_export_folder_describes_every_artefact_in_it(exported, tmp_path):
    run, results = exported
    names = sorted(r.path.name for r in results)
    for folder in (run, run / "export"):
        result = CliRunner().invoke(main, ["info", "--json", str(folder)])
        assert result.exit_code == 0, result.output
        described = sorted(json.loads(line)["path"].rsplit("/", 1)[-1] for line in result.output.splitlines())
        assert set(names) <= set(described)  # other tests may have added artefacts to this shared run
        assert all(n.endswith((".tflite", ".onnx", ".rejected", ".keras")) for n in described)  # no .json
        assert ("model.keras" in described) is (folder == run)
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["info", str(tmp_path / "empty"), str(results[0].path)])
    assert result.exit_code == 2 and "No .keras, .tflite or .onnx models in" in result.output
    assert str(results[0].path) in result.output  # the others are still shown


def test_info_describes_a_trained_model_keras_from_its_run(trained_run):
    path = trained_run / "model.keras"
    meta = json.loads((trained_run / "metadata.json").read_text())
    test = json.loads((trained_run / "metrics.json").read_text())["splits"]["test"]
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 0, result.output
    lines = _lines(result.output)
    assert lines["model"] == f"keras, {path.stat().st_size / 1024:.0f} KiB"
    assert lines["classes"] == "2: bar_h, bar_v"
    assert lines["input"] == "16x16 RGB NHWC float32; pixels 0-255, bilinear resize"
    assert lines["backbone"] == "simple_cnn, initial weights none"
    t, hw = meta["train"], meta["hardware"]
    assert lines["training"].startswith(f"up to {t['epochs']} epochs (early stopping on val_loss); batch "
                                        f"{t['batch_size']}, learning rate {t['learning_rate']}, seed 42; "
                                        f"{hw['keras_backend']} on {', '.join(hw['gpus']) or 'CPU'}")
    assert lines["test"] == (f"accuracy {100 * test['accuracy']:.2f} %, F1 macro {test['f1_macro']:.4f}"
                             + (f", ROC-AUC {test['roc_auc']:.4f}" if test.get("roc_auc") is not None else "")
                             + f" ({test['n']} images)")
    assert "warning" not in lines
    records = CliRunner().invoke(main, ["info", "--json", str(path)]).output.splitlines()
    assert len(records) == 1 and json.loads(records[0])["metadata"] == meta


def test_a_pretrained_run_is_described_with_both_phases(tmp_path):
    from edgeclf.edge_runtime.describe import describe_run_model

    meta = {"class_names": ["a", "b"], "backbone": "mobilenet_v2", "model": {"weights": "imagenet"},
            "preprocess": {"height": 224, "width": 224}, "model_sha256": "ab" * 32,
            "train": {"epochs": 10, "fine_tune_layers": 20, "fine_tune_epochs": 5, "early_stopping": False,
                      "batch_size": 32, "learning_rate": 0.001, "seed": 7, "folds": 5},
            "hardware": {"keras_backend": "jax", "gpus": ["NVIDIA H100"], "mixed_precision": True}}
    lines = dict(describe_run_model(meta, tmp_path / "model.keras", sha256="ab" * 32))
    assert lines["backbone"] == "mobilenet_v2, initial weights imagenet"
    assert lines["training"] == ("10 epochs with the backbone frozen, then 5 with its top 20 layers unfrozen; batch "
                                 "32, learning rate 0.001, seed 7, 5 folds; jax on NVIDIA H100, mixed precision")
    assert "warning" not in lines and "test" not in lines and "dataset" not in lines


def test_info_says_when_model_keras_is_not_the_file_training_wrote(trained_run, tmp_path):
    for name in ("model.keras", "metadata.json"):
        shutil.copyfile(trained_run / name, tmp_path / name)
    with open(tmp_path / "model.keras", "ab") as fh:
        fh.write(b"\0")  # any change: a re-save, a file from another run
    result = CliRunner().invoke(main, ["info", str(tmp_path / "model.keras")])
    assert result.exit_code == 0, result.output
    assert "is not the file training wrote" in _lines(result.output)["warning"]
    assert "test" not in _lines(result.output)  # no metrics.json beside it: no test figures
    (tmp_path / "metadata.json").unlink()
    result = CliRunner().invoke(main, ["info", str(tmp_path / "model.keras")])
    assert result.exit_code == 2 and "has no metadata.json beside it" in result.output
    assert result.output.count("\n") == 1


def test_info_warns_about_8bit_onnx_weights_on_a_cpu_that_saturates_them(exported, tmp_path, monkeypatch):
    import edgeclf.edge_runtime.classifier as classifier
    from edgeclf.edge_runtime.artifact import METADATA_KEY
    from edgeclf.toolkit.export.onnx import write_metadata

    path = tmp_path / "run_int8.onnx"
    shutil.copyfile(_artefact(exported, "run_int8.onnx"), path)
    meta = read_metadata(path)
    meta["quantization"].update(reduce_range=False, reduce_range_from="--reduce-range")
    write_metadata(path, json.dumps(meta), METADATA_KEY)
    for saturates in (True, False):
        monkeypatch.setattr(classifier, "needs_reduce_range", lambda s=saturates: s)
        result = CliRunner().invoke(main, ["info", str(path)])
        assert result.exit_code == 0, result.output
        assert "8-bit weights, set by --reduce-range" in _lines(result.output)["quantization"]
        assert ("has 8-bit int8 weights, and this x86 CPU has no VNNI" in result.output) is saturates


def test_info_in_a_fresh_process_never_imports_tensorflow(exported):
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from edgeclf.cli import main\n"
            f"r = CliRunner().invoke(main, ['info', {str(_artefact(exported, 'run_int8.onnx'))!r}, "
            f"{str(exported[0] / 'model.keras')!r}])\n"
            "assert r.exit_code == 0, r.output\n"
            "print(','.join(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    assert run_python(code).stdout.strip() == ""
