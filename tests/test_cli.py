"""The command line: help, errors as one line with exit codes, train/evaluate, and no TensorFlow in the runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import run_python, write_class_folders
from edgeclf.cli import main
from edgeclf.edge_runtime import Classifier, ConfigError

BIN = Path(sys.executable).parent


def test_help_lists_commands_with_an_example():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for cmd in ("train", "evaluate", "backbones"):
        assert cmd in result.output
    assert "Example" in result.output
    train_help = CliRunner().invoke(main, ["train", "--help"])
    assert "--fine-tune-layers" in train_help.output and "edgeclf train data/" in train_help.output


def test_every_help_example_names_a_real_command_and_real_options():
    import shlex

    helps = {"": CliRunner().invoke(main, ["--help"]).output}
    helps.update({name: CliRunner().invoke(main, [name, "--help"]).output for name in main.commands})
    checked = 0
    for where, text in helps.items():
        for line in text.splitlines():
            example = line.split(" | ")[-1].split(" > ")[0].strip()  # `find ... | edgeclf predict ... > out.csv`
            if not example.startswith("edgeclf "):
                continue
            words = shlex.split(example, comments=True)
            command = main.commands.get(words[1])
            assert command is not None, f"{where or 'edgeclf'} --help: unknown command in {line!r}"
            options = {o for p in command.params for o in p.opts + p.secondary_opts}
            for word in words[2:]:
                if word.startswith("-") and word != "-":
                    assert word.split("=")[0] in options, f"{words[1]} has no option {word} ({line.strip()!r})"
            checked += 1
    assert checked >= 2 * len(main.commands)  # every command shows at least one example besides edgeclf --help


def test_unknown_backbone_is_a_usage_error_with_a_suggestion(tiny_folders, tmp_path):
    result = CliRunner().invoke(main, ["train", str(tiny_folders), "--backbone", "resnet_50", "--out",
                                       str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "Error: Unknown backbone: 'resnet_50'. Did you mean 'resnet50'?" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "bench"])
def test_an_output_folder_that_cannot_be_created_is_a_usage_error_before_the_work(command, run_copy, trained_run,
                                                                                 tmp_path):
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "sub"  # mkdir fails: a parent is a file (a permission test would pass as root)
    model, data = str(run_copy / "model.keras"), str(trained_run.parent / "data")
    args = {"train": [data, "--backbone", "simple_cnn", "--img-size", "16", "--epochs", "1"],
            "evaluate": [model, data], "export": [model], "bench": [model, "--quick"]}[command]
    result = CliRunner().invoke(main, [command, *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"Error: Cannot write to {out}: Not a directory. Choose a writable --out." in result.output


@pytest.mark.parametrize("size", ["0", "16x0", "16x", "16x24x3", "sixteen"])
def test_a_bad_image_size_is_rejected_not_replaced_by_the_default(tiny_folders, tmp_path, size):
    result = CliRunner().invoke(main, ["train", str(tiny_folders), "--backbone", "simple_cnn", "--img-size", size,
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert f"Received: '{size}'. Expected N for an N x N input, or HxW in pixels, height first" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("crop", ["0", "1.5", "half"])
def test_a_bad_crop_is_a_usage_error(tiny_folders, tmp_path, crop):
    result = CliRunner().invoke(main, ["train", str(tiny_folders), "--crop", crop, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert f"Received: '{crop}'. Expected a fraction in (0, 1] such as 1 or 0.875, or none." in result.output


@pytest.mark.parametrize("pad", ["256", "1,2", "grey", "-1"])
def test_a_bad_pad_is_a_usage_error(tiny_folders, tmp_path, pad):
    result = CliRunner().invoke(main, ["train", str(tiny_folders), "--pad", pad, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert f"Received: '{pad}'. Expected a grey level 0-255 such as 0 or 114, three R,G,B values" in result.output


def test_crop_and_pad_together_are_a_usage_error(tiny_folders, tmp_path):
    result = CliRunner().invoke(main, ["train", str(tiny_folders), "--backbone", "simple_cnn", "--crop", "1",
                                       "--pad", "0", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "Received: crop=1 and pad=(0, 0, 0). Give one" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("fit, recorded, described", [
    (["--crop", "1"], ("crop", 1.0), "centre crop to the input's aspect ratio"),
    (["--pad", "114"], ("pad", [114, 114, 114]), "letterbox: aspect ratio kept, padded with RGB (114, 114, 114)"),
], ids=["crop", "pad"])
def test_a_non_square_cropped_or_padded_input_runs_from_training_to_predict(tiny_folders, tmp_path, fit, recorded,
                                                                            described):
    from edgeclf.edge_runtime import PreprocessSpec, load_image

    run = tmp_path / "wide"
    trained = CliRunner().invoke(main, ["train", str(tiny_folders), "--backbone", "simple_cnn", "--img-size", "16x24",
                                        *fit, "--epochs", "1", "--no-augment", "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    assert "Training simple_cnn at 16x24px" in trained.output
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["input"]["shape"] == [16, 24, 3] and meta["model"]["img_size"] == [16, 24]
    assert (meta["preprocess"]["height"], meta["preprocess"]["width"], meta["preprocess"][recorded[0]]) == (16, 24,
                                                                                                          recorded[1])
    assert f"input [16, 24, 3] RGB 0-255 ({described})" in (run / "report.md").read_text()
    exported = CliRunner().invoke(main, ["export", str(run / "model.keras"), "--quantize", "fp32"])
    assert exported.exit_code == 0, exported.output
    expected_spec = PreprocessSpec.from_dict(meta["preprocess"])
    assert expected_spec != PreprocessSpec(16, 24)
    for name in ("wide_fp32.tflite", "wide_fp32.onnx"):
        clf = Classifier.load(run / "export" / name, threads=1)
        assert clf.backend.input_shape == (16, 24, 3) and clf.preprocess.size == (16, 24)
        image = str(next(tiny_folders.rglob("*.png")))  # the runtime crops or pads as training did
        np.testing.assert_array_equal(clf.prepare(image), load_image(image, expected_spec))
    info = CliRunner().invoke(main, ["info", str(run / "export" / "wide_fp32.onnx")])
    assert f"input         16x24 RGB NHWC float32; pixels 0-255, {described}, bilinear" in info.output, info.output
    predicted = CliRunner().invoke(main, ["predict", str(run / "export" / "wide_fp32.tflite"), str(tiny_folders),
                                          "--format", "jsonl"])
    assert predicted.exit_code == 0, predicted.output
    records = [json.loads(line) for line in predicted.output.splitlines() if line.startswith("{")]
    assert len(records) == 80 and all(r["label"] in ("bar_h", "bar_v") for r in records)


def test_bad_split_option_is_rejected(tiny_folders, tmp_path):
    result = CliRunner().invoke(main, ["train", str(tiny_folders), "--split", "0.8,0.2", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "three fractions" in result.output


def test_train_then_evaluate_through_the_cli(tiny_folders, tmp_path):
    run = tmp_path / "run"
    # No --weights: simple_cnn has no pretrained weights, so the default is none rather than an error.
    result = CliRunner().invoke(main, ["train", str(tiny_folders), "--backbone", "simple_cnn",
                                       "--img-size", "16", "--epochs", "2", "--batch-size", "16", "--no-augment",
                                       "--dense", "8", "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "Trained" in result.output and "report.md" in result.output
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["model"]["head"]["dense"] == [8] and meta["train"]["augment"]["flip"] == "none"
    assert meta["model"]["weights"] == "none"
    assert ("head: GlobalAveragePooling -> Dropout 0.2 -> Dense 8 ReLU -> Dropout 0.2 -> Dense 2 softmax"
            in (run / "report.md").read_text())
    again = CliRunner().invoke(main, ["train", str(tiny_folders), "--backbone", "simple_cnn", "--weights", "none",
                                      "--img-size", "16", "--epochs", "2", "--out", str(run)])
    assert again.exit_code == 2 and "--force" in again.output
    ev = CliRunner().invoke(main, ["evaluate", str(run / "model.keras"), str(tiny_folders), "--out", str(tmp_path / "ev")])
    assert ev.exit_code == 0, ev.output
    assert "n=80 accuracy=" in ev.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]["n"] == 80
    kept = CliRunner().invoke(main, ["evaluate", str(run / "model.keras"), str(tiny_folders), "--out",
                                     str(tmp_path / "ev")])
    assert kept.exit_code == 2 and "--force" in kept.output
    # --threshold decides as predict --threshold does: at 0 every image is the second class (40 of 80 right).
    at0 = CliRunner().invoke(main, ["evaluate", str(run / "model.keras"), str(tiny_folders), "--threshold", "0",
                                    "--out", str(tmp_path / "ev0")])
    assert at0.exit_code == 0, at0.output
    assert "n=80 accuracy=0.5000 " in at0.output and "(bar_v where P(bar_v) >= 0)" in at0.output
    m = json.loads((tmp_path / "ev0" / "metrics.json").read_text())["metrics"]
    assert m["threshold"] == 0.0 and m["confusion_matrix"] == [[0, 40], [0, 40]]


def test_evaluate_lists_only_the_classes_in_the_images_or_predicted(tmp_path):
    data = write_class_folders(tmp_path / "data", {"bar_h": 30, "bar_v": 30, "corner": 30})
    run = tmp_path / "run"
    trained = CliRunner().invoke(main, ["train", str(data), "--backbone", "simple_cnn", "--img-size", "16",
                                        "--epochs", "1", "--no-augment", "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    two = write_class_folders(tmp_path / "two", {"bar_h": 10, "bar_v": 10}, seed=3)
    ev = CliRunner().invoke(main, ["evaluate", str(run / "model.keras"), str(two), "--out", str(tmp_path / "ev")])
    assert ev.exit_code == 0, ev.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    predicted_corner = sum(row[2] for row in m["confusion_matrix"])
    lines = ev.output.splitlines()
    assert any(line.split()[:1] == ["bar_h"] and "support=10" in line for line in lines)
    corner = [line for line in lines if line.split()[:1] == ["corner"]]
    if predicted_corner:  # a one-epoch model may call some bars corners: then it says so instead of zeros
        assert corner == [f"  {'corner':<20} not in these images, yet predicted for {predicted_corner}"]
    else:
        assert not corner and "neither in these images nor predicted: corner" in ev.output
    counted = 3 if predicted_corner else 2  # a class predicted but absent counts in the macro averages, with F1 0
    assert f"macro averages over the {counted} class(es) in these images or predicted for them" in ev.output
    f1 = [v["f1"] for v in m["per_class"].values()]
    assert m["f1_macro"] == pytest.approx(sum(f1[:counted]) / counted)
    # One class is a fair evaluation set (only no_helmet images from a new site); training still needs two.
    one = tmp_path / "one"
    (one / "bar_v").mkdir(parents=True)
    for f in sorted((two / "bar_v").iterdir()):
        f.rename(one / "bar_v" / f.name)
    single = CliRunner().invoke(main, ["evaluate", str(run / "model.keras"), str(one)])
    assert single.exit_code == 0, single.output
    assert "n=10 " in single.output and "support=10" in single.output
    refused = CliRunner().invoke(main, ["train", str(one), "--backbone", "simple_cnn", "--out", str(tmp_path / "r1")])
    assert refused.exit_code == 2 and "at least 2" in refused.output


def test_evaluate_without_metadata_explains_what_is_missing(tmp_path, tiny_folders):
    (tmp_path / "model.keras").write_bytes(b"zip?")
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "model.keras"), str(tiny_folders)])
    assert result.exit_code == 2 and "metadata.json" in result.output


def test_installed_command_runs_in_a_real_process():
    out = subprocess.run([str(BIN / "edgeclf"), "backbones", "mobilenet*"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["mobilenet_v2", "mobilenet_v3_large",
                                                                     "mobilenet_v3_small"]
    assert out.stdout.splitlines()[0].startswith("mobilenet_v2          224px (min 32)  MobileNetV2")


def test_runtime_and_cli_never_import_tensorflow():
    code = ("import sys, edgeclf.edge_runtime, edgeclf.cli, edgeclf.models; "
            "from edgeclf.edge_runtime import load_image; "
            "print(','.join(m for m in ('tensorflow', 'keras', 'edgeclf.toolkit') if m in sys.modules))")
    out = run_python(code)
    assert out.stdout.strip() == ""


def test_importing_tensorflow_keeps_its_start_up_notices_off_the_terminal():
    out = run_python("from edgeclf.toolkit._deps import import_tf; import_tf()")
    for notice in ("absl::InitializeLog", "oneDNN custom operations", "cuda drivers", "cuInit"):
        assert notice not in out.stderr, out.stderr


def test_train_without_tensorflow_says_how_to_install_it(tiny_folders, tmp_path):
    code = ("import sys; sys.modules['tensorflow'] = None; from edgeclf.cli import main; "
            f"main(['train', {str(tiny_folders)!r}, '--backbone', 'simple_cnn', '--weights', 'none', "
            f"'--out', {str(tmp_path / 'r')!r}])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "pip install 'edgeclf[train]'" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()


def test_sigterm_ends_a_command_as_ctrl_c_does_with_its_message():
    """`docker stop` or a scheduler sends SIGTERM: the command stops as on Ctrl-C (its files cleaned up, its message
    saying what is kept) with exit code 143, instead of dying where it stands."""
    import os
    import signal
    import time

    import click

    from edgeclf.cli import _run

    cleaned = []

    @click.command()
    @click.pass_context
    def job(ctx):
        def go():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)
            finally:
                cleaned.append(True)

        _run(ctx, go, interrupted="Interrupted. Run it again to resume.")

    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(job, obj={})
    assert result.exit_code == 143 and "Interrupted. Run it again to resume." in result.output
    assert cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before  # restored afterwards


def test_a_library_error_over_several_lines_is_printed_on_one():
    import click

    from edgeclf.cli import _run

    @click.command()
    @click.argument("kind")
    @click.pass_context
    def job(ctx, kind):
        def go():
            if kind == "edgeclf":
                raise ConfigError("A total of 2 objects could not be loaded.\n\nLayer 'conv2d' expected 1 variables.")
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL :\n  bad node\n")

        _run(ctx, go)

    mine = CliRunner().invoke(job, ["edgeclf"], obj={})
    assert mine.exit_code == 2
    assert mine.output == ("Error: A total of 2 objects could not be loaded. Layer 'conv2d' expected 1 "
                           "variables.\n")
    other = CliRunner().invoke(job, ["other"], obj={})
    assert other.exit_code == 1 and other.output.count("\n") == 1
    assert "RuntimeError: [ONNXRuntimeError] : 1 : FAIL : bad node (run with --verbose" in other.output
