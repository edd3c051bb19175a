"""``edgeclf adopt``: .tflite / .onnx classifiers made elsewhere, run by the runtime exactly as their own pipeline
would feed them (scaling, channel order, layout, logits)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeclf.cli import main
from edgeclf.edge_runtime import PreprocessSpec, load_image
from edgeclf.edge_runtime.artifact import read_metadata
from edgeclf.edge_runtime.classifier import Classifier
from edgeclf.edge_runtime.tensor import TORCH_MEAN_RGB, TORCH_STD_RGB


def _artefact(exported, name):
    _, results = exported
    return next(r.path for r in results if r.path.name == name)


def _data(exported):
    run, _ = exported
    return run.parent / "data"


def _pixels(exported, n=20):
    paths = sorted(_data(exported).rglob("*.png"))[:: max(1, 120 // n)][:n]
    return np.stack([load_image(p, PreprocessSpec(16, 16)) for p in paths])


def _probs(path, pixels):
    return Classifier.load(path, threads=1).backend.run(pixels)


def _fed(path, pixels):
    """The tensor the model itself receives when the runtime classifies ``pixels``."""
    backend = Classifier.load(path, threads=1).backend
    seen, inner_run = [], backend.inner.run
    backend.inner.run = lambda x: (seen.append(x), inner_run(x))[1]
    backend.run(pixels)
    return np.concatenate(seen)


@pytest.mark.parametrize("norm", ["raw", "unit", "tf", "caffe", "torch"])
def test_input_norms_feed_what_the_keras_preprocessing_computes(norm):
    """The runtime's presets and the Keras layers that --input-norm means for a .keras model agree."""
    from edgeclf.edge_runtime.tensor import InputTensor
    from edgeclf.models.factory import normalise
    from edgeclf.toolkit.export.foreign import INPUT_NORMS

    import keras

    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    inp = keras.Input((4, 5, 3))
    expected = keras.Model(inp, normalise(inp, INPUT_NORMS[norm])).predict(pixels.astype(np.float32), verbose=0)
    np.testing.assert_allclose(InputTensor.preset(norm).apply(pixels), expected, rtol=1e-5, atol=1e-4)
    nchw = InputTensor.preset(norm, "NCHW").apply(pixels)
    np.testing.assert_allclose(nchw, expected.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def foreign(exported, tmp_path_factory):
    """What other tools hand over, built from the test run's model so the right answers are known:

    - ``tm_float.tflite``: takes x/127.5-1 (Teachable Machine's float model), outputs probabilities;
    - ``tm_quant.tflite``: the same, full-integer with uint8 input and output calibrated on x/127.5-1 values;
    - ``torch_nchw.onnx``: channels first, ImageNet mean/std on x/255, a fixed batch of 1, outputs logits;
    - ``torch_dynamic.onnx``: the same with its batch, height and width not fixed;
    - ``dynamic_size.tflite``: tm_float's model behind a resize to 16x16 of any input size.
    """
    import keras
    import onnx
    import tensorflow as tf
    from onnx import TensorProto, helper, numpy_helper

    from edgeclf.toolkit.evaluate import load_keras_model
    from edgeclf.toolkit.export import QuantSpec
    from edgeclf.toolkit.export import tflite as tflite_export
    from edgeclf.toolkit.export.archive import write_saved_model

    run, _ = exported
    out = tmp_path_factory.mktemp("foreign")
    inp = keras.Input((16, 16, 3))
    model = keras.Model(inp, load_keras_model(run / "model.keras")(keras.layers.Rescaling(127.5, offset=127.5)(inp)))
    write_saved_model(model, out / "saved_model")
    (out / "tm_float.tflite").write_bytes(tflite_export.convert(out / "saved_model", QuantSpec.float32(), None))
    converter = tf.lite.TFLiteConverter.from_saved_model(str(out / "saved_model"))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    pixels = _pixels(exported, 40).astype(np.float32)
    converter.representative_dataset = lambda: ([p[None] / 127.5 - 1.0] for p in pixels)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    (out / "tm_quant.tflite").write_bytes(converter.convert())
    (out / "labels.txt").write_text("0 bar_h\n1 bar_v\n")

    # a graph that fixes its batch inside: reshaping its output to [1, -1] answers a batch of 8 with one row of 16
    archive = keras.export.ExportArchive()  # (from_concrete_functions loses a loaded model's weights: NaN)
    archive.track(model)
    archive.add_endpoint("serve", lambda x: tf.reshape(model(x, training=False), [1, -1]),
                         input_signature=[tf.TensorSpec((1, 16, 16, 3), tf.float32)])
    archive.write_out(str(out / "reshape_saved_model"), verbose=False)
    (out / "reshape_batch.tflite").write_bytes(
        tf.lite.TFLiteConverter.from_saved_model(str(out / "reshape_saved_model")).convert())
    # an input size that is not fixed: any size in, resized to 16x16 inside the graph (tm_float's model after it)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(tf.image.resize(x, (16, 16)), training=False),
                         input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    archive.write_out(str(out / "dynamic_saved_model"), verbose=False)
    (out / "dynamic_size.tflite").write_bytes(
        tf.lite.TFLiteConverter.from_saved_model(str(out / "dynamic_saved_model")).convert())

    for name, dims in (("torch_nchw.onnx", [1, 3, 16, 16]), ("torch_dynamic.onnx", ["N", 3, "H", "W"]),
                       ("reshape_batch.onnx", ["N", 3, 16, 16])):
        m = onnx.load(str(_artefact(exported, "run_fp32.onnx")))
        del m.metadata_props[:]
        g = m.graph
        source_in, source_out = g.input[0].name, g.output[0].name
        g.initializer.extend([
            numpy_helper.from_array(255.0 * np.asarray(TORCH_STD_RGB, np.float32), "std255"),
            numpy_helper.from_array(255.0 * np.asarray(TORCH_MEAN_RGB, np.float32), "mean255")])
        nodes = [helper.make_node("Transpose", ["x"], ["x_nhwc"], perm=[0, 2, 3, 1]),
                 helper.make_node("Mul", ["x_nhwc", "std255"], ["x_scaled"]),
                 helper.make_node("Add", ["x_scaled", "mean255"], [source_in]),
                 *g.node, helper.make_node("Log", [source_out], ["log_p"])]  # softmax(log p) = p
        if name == "reshape_batch.onnx":
            g.initializer.append(numpy_helper.from_array(np.asarray([1, -1], np.int64), "one_row"))
            nodes.append(helper.make_node("Reshape", ["log_p", "one_row"], ["logits"]))
        else:
            nodes.append(helper.make_node("Identity", ["log_p"], ["logits"]))
        del g.node[:]
        g.node.extend(nodes)
        del g.input[:]
        g.input.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, dims))
        del g.output[:]
        # reshape_batch.onnx declares (N, 2) too, as a file made elsewhere may, and answers (1, 2N)
        g.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dims[0], 2]))
        onnx.checker.check_model(m)
        onnx.save(m, str(out / name))
    return out


def test_a_teachable_machine_style_tflite_is_run_as_its_pipeline_feeds_it(exported, foreign):
    before = CliRunner().invoke(main, ["predict", str(foreign / "tm_float.tflite"), str(_data(exported))])
    assert before.exit_code == 2 and "carries no edgeclf metadata" in before.output and "edgeclf adopt" in before.output
    labels = str(foreign / "labels.txt")
    result = CliRunner().invoke(main, ["adopt", str(foreign / "tm_float.tflite"), "--labels", labels,
                                       "--input-norm", "tf"])
    assert result.exit_code == 0, result.output
    adopted = foreign / "tm_float_edgeclf.tflite"
    meta = read_metadata(adopted)
    assert meta["class_names"] == ["bar_h", "bar_v"] and meta["output"]["kind"] == "probabilities"
    assert meta["input"]["mean"] == [127.5] * 3 and meta["input"]["std"] == [127.5] * 3
    assert meta["adapter"]["adopted"] is True and meta["fidelity"]["verified"] is False
    assert meta["quantization"]["mode"] == "fp32" and (foreign / "tm_float_edgeclf.tflite.json").exists()
    assert "adopted: made outside edgeclf" in result.output and "(pixel - mean) / std" in result.output
    pixels = _pixels(exported)
    np.testing.assert_allclose(_probs(adopted, pixels), _probs(_artefact(exported, "run_fp32.tflite"), pixels),
                               atol=1e-4)
    np.testing.assert_allclose(_fed(adopted, pixels), pixels / 127.5 - 1.0, atol=1e-6)  # what the model got
    listing = CliRunner().invoke(main, ["predict", str(adopted), str(_data(exported)), "--format", "jsonl"])
    assert listing.exit_code == 0, listing.output
    assert len([line for line in listing.output.splitlines() if line.startswith("{")]) == 120


def test_a_quantised_tflite_with_uint8_output_keeps_probabilities(exported, foreign):
    result = CliRunner().invoke(main, ["adopt", str(foreign / "tm_quant.tflite"), "--labels", "bar_h,bar_v",
                                       "--input-norm", "tf", "--check", str(_data(exported))])
    assert result.exit_code == 0, result.output
    meta = read_metadata(foreign / "tm_quant_edgeclf.tflite")
    # uint8 outputs round each probability to 1/256: still probabilities, not logits to softmax again
    assert meta["output"]["kind"] == "probabilities" and meta["quantization"]["mode"] == "int8"
    # uint8 input whose values stand for x/127.5-1 (calibrated on these images): the runtime scales, then quantises
    assert meta["input"]["dtype"] == "uint8" and 0 < meta["input"]["quantization"]["scale"] < 2 / 255 + 1e-6
    pixels = _pixels(exported)
    reference = _probs(_artefact(exported, "run_fp32.tflite"), pixels)
    adopted = _probs(foreign / "tm_quant_edgeclf.tflite", pixels)
    assert (adopted.argmax(1) == reference.argmax(1)).all() and np.abs(adopted - reference).max() < 0.05
    check = meta["fidelity"]["check"]
    assert check["n"] == 120 and check["accuracy"] > 0.9


def test_a_pytorch_style_onnx_nchw_logits_batch_of_one(exported, foreign, tmp_path):
    out = tmp_path / "pets.onnx"
    result = CliRunner().invoke(main, ["adopt", str(foreign / "torch_nchw.onnx"), "--labels", "bar_h,bar_v",
                                       "--input-norm", "torch", "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = read_metadata(out)
    assert meta["input"]["layout"] == "NCHW" and meta["input"]["shape"] == [3, 16, 16]
    assert meta["output"]["kind"] == "logits" and "recorded as logits" in result.output
    pixels = _pixels(exported)  # 20 images through a model that takes one at a time
    np.testing.assert_allclose(_probs(out, pixels), _probs(_artefact(exported, "run_fp32.onnx"), pixels), atol=1e-4)
    mean, std = 255 * np.asarray(TORCH_MEAN_RGB), 255 * np.asarray(TORCH_STD_RGB)
    np.testing.assert_allclose(_fed(out, pixels), ((pixels - mean) / std).transpose(0, 3, 1, 2), atol=1e-4)
    # bench and info take it as they take an export
    bench = CliRunner().invoke(main, ["bench", str(out), "--data", str(_data(exported)), "--quick", "--runs", "3",
                                      "--min-time", "0", "--threads", "1", "--out", str(tmp_path / "bench")])
    assert bench.exit_code == 0, bench.output
    (row,) = json.loads((tmp_path / "bench" / "results.json").read_text())["rows"]
    assert row["status"] == "ok" and row["accuracy"] > 0.9
    info = CliRunner().invoke(main, ["info", str(out)])
    assert "logits, float32; the runtime applies a softmax" in info.output and "model input NCHW RGB" in info.output


def test_a_tflite_input_whose_size_is_not_fixed_runs_at_img_size(exported, foreign, tmp_path):
    src, pixels = foreign / "dynamic_size.tflite", _pixels(exported)
    r = CliRunner().invoke(main, ["adopt", str(src), "--labels", "bar_h,bar_v", "--input-norm", "tf", "--out",
                                  str(tmp_path / "x.tflite")])
    assert r.exit_code == 2 and "input size is not fixed" in r.output and "Pass --img-size" in r.output
    fixed = tmp_path / "fixed.tflite"
    assert CliRunner().invoke(main, ["adopt", str(foreign / "tm_float.tflite"), "--labels", "bar_h,bar_v",
                                     "--input-norm", "tf", "--out", str(fixed)]).exit_code == 0
    for size, (h, w) in (("16", (16, 16)), ("24", (24, 24)), ("16x24", (16, 24))):
        out = tmp_path / f"dynamic{size}.tflite"
        r = CliRunner().invoke(main, ["adopt", str(src), "--labels", "bar_h,bar_v", "--input-norm", "tf",
                                      "--img-size", size, "--out", str(out)])
        assert r.exit_code == 0, r.output
        meta = read_metadata(out)
        assert meta["input"]["shape"] == [h, w, 3] and (meta["preprocess"]["height"], meta["preprocess"]["width"]) == (h, w)
        clf = Classifier.load(out, threads=1)
        assert clf.backend.input_shape == (h, w, 3)  # the runtime resized the model's input
        if size == "16":  # resizing 16x16 to 16x16 inside the graph changes nothing: tm_float's answers
            np.testing.assert_allclose(_probs(out, pixels), _probs(fixed, pixels), atol=1e-5)
        else:  # what predict runs: the image resized to 24x24 (16x24), then by the graph to 16x16
            images = sorted(_data(exported).rglob("*.png"))[:8]
            assert [c.best.label for c in clf.classify(images)] == [p.parent.name for p in images]


def _retyped_onnx(src, dst, input_type, output_type=None):
    """edgeclf's float32 ONNX export as other tools leave such files: no edgeclf metadata, the input taken as
    ``input_type`` (cast to float32 inside), the output optionally given as ``output_type``."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    del model.metadata_props[:]
    graph = model.graph
    name = graph.input[0].name
    graph.input[0].type.tensor_type.elem_type = input_type
    for node in graph.node:
        node.input[:] = [f"{name}_f32" if i == name else i for i in node.input]
    graph.node.insert(0, helper.make_node("Cast", [name], [f"{name}_f32"], to=TensorProto.FLOAT))
    if output_type is not None:
        out = graph.output[0].name
        for node in graph.node:
            node.output[:] = [f"{out}_f32" if o == out else o for o in node.output]
        graph.node.append(helper.make_node("Cast", [f"{out}_f32"], [out], to=output_type))
        graph.output[0].type.tensor_type.elem_type = output_type
    onnx.save(model, str(dst))
    return dst


def test_onnx_files_taking_uint8_or_float16_input(exported, tmp_path):
    """uint8 input (raw pixels, the graph scales them) and float16 input and output (a model converted to half
    precision with its inputs): adopted, run with the dtype they take, and answering as the float32 file does."""
    from onnx import TensorProto

    source, pixels = _artefact(exported, "run_fp32.onnx"), _pixels(exported)
    expected = _probs(source, pixels)
    for input_type, output_type, dtype, atol in ((TensorProto.UINT8, None, "uint8", 1e-6),
                                                  (TensorProto.FLOAT16, TensorProto.FLOAT16, "float16", 2e-3)):
        src = _retyped_onnx(source, tmp_path / f"{dtype}.onnx", input_type, output_type)
        out = tmp_path / f"{dtype}_edgeclf.onnx"
        result = CliRunner().invoke(main, ["adopt", str(src), "--labels", "bar_h,bar_v", "--input-norm", "raw",
                                           "--out", str(out)])
        assert result.exit_code == 0, result.output
        meta = read_metadata(out)
        assert meta["input"]["dtype"] == dtype and meta["output"]["dtype"] == ("float16" if output_type else "float32")
        assert Classifier.load(out, threads=1).backend.input_dtype == dtype
        np.testing.assert_allclose(_probs(out, pixels), expected, atol=atol)
    # uint8 pixels are what the graph scales itself: a normalisation before it cannot be what its training did
    r = CliRunner().invoke(main, ["adopt", str(tmp_path / "uint8.onnx"), "--labels", "bar_h,bar_v", "--input-norm",
                                  "tf", "--out", str(tmp_path / "scaled.onnx")])
    assert r.exit_code == 2 and "takes uint8 input" in r.output and "Pass --input-norm raw" in r.output
    assert not (tmp_path / "scaled.onnx").exists()
    r = CliRunner().invoke(main, ["adopt", str(_retyped_onnx(source, tmp_path / "int64.onnx", TensorProto.INT64)),
                                  "--labels", "bar_h,bar_v", "--input-norm", "raw", "--out", str(tmp_path / "i.onnx")])
    assert r.exit_code == 2 and "takes int64 input. Expected one of float32, float16, float64, uint8" in r.output
    r = CliRunner().invoke(main, ["adopt", str(_retyped_onnx(source, tmp_path / "u8out.onnx", TensorProto.FLOAT,
                                                             TensorProto.UINT8)),
                                  "--labels", "bar_h,bar_v", "--input-norm", "raw", "--out", str(tmp_path / "o.onnx")])
    assert r.exit_code == 2 and "gives uint8 output. Expected one of float32, float16, float64" in r.output


def test_mean_and_std_given_as_numbers(exported, foreign, tmp_path):
    """A pipeline no preset names (CLIP's statistics, say): --mean/--std on 0-1 pixels, as torchvision gives them."""
    src, out = foreign / "torch_nchw.onnx", tmp_path / "custom.onnx"
    mean, std = "0.485,0.456,0.406", "0.229,0.224,0.225"  # ImageNet's: must feed exactly what --input-norm torch does
    result = CliRunner().invoke(main, ["adopt", str(src), "--labels", "bar_h,bar_v", "--mean", mean, "--std", std,
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = read_metadata(out)
    assert meta["adapter"]["input_norm"].startswith("custom: mean [0.485, 0.456, 0.406]")
    pixels = _pixels(exported)
    expected = ((pixels - 255 * np.asarray(TORCH_MEAN_RGB)) / (255 * np.asarray(TORCH_STD_RGB))).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(_fed(out, pixels), expected, atol=1e-4)
    np.testing.assert_allclose(_probs(out, pixels), _probs(_artefact(exported, "run_fp32.onnx"), pixels), atol=1e-4)
    for args, message in (
            (["--mean", "124,116,104", "--std", "58,57,57"], "on a 0-255 scale, divide them by 255"),
            (["--mean", "0.5"], "only one of --mean and --std"),
            (["--mean", "0.5", "--std", "0.5", "--input-norm", "tf"], "Give one or the other"),
            (["--mean", "0.5,0.5", "--std", "0.5"], "with 2 values. Expected 3 (R,G,B) or 1"),
            (["--mean", "half", "--std", "0.5"], "Expected numbers separated by commas")):
        r = CliRunner().invoke(main, ["adopt", str(src), "--labels", "bar_h,bar_v", *args, "--out",
                                      str(tmp_path / "bad.onnx")])
        assert r.exit_code == 2 and message in r.output, (args, r.output)
    assert not (tmp_path / "bad.onnx").exists()


def test_an_onnx_input_whose_size_is_not_fixed_needs_img_size(exported, foreign, tmp_path):
    src = foreign / "torch_dynamic.onnx"
    args = ["adopt", str(src), "--labels", "bar_h,bar_v", "--input-norm", "torch", "--out", str(tmp_path / "d.onnx")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "input size is not fixed" in result.output and "--img-size" in result.output
    result = CliRunner().invoke(main, [*args, "--img-size", "16"])
    assert result.exit_code == 0, result.output
    pixels = _pixels(exported)
    np.testing.assert_allclose(_probs(tmp_path / "d.onnx", pixels), _probs(_artefact(exported, "run_fp32.onnx"),
                                                                          pixels), atol=1e-4)


def test_an_onnx_input_open_in_height_and_width_is_fixed_at_a_non_square_img_size(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # NCHW of any size -> mean colour -> red vs blue
    weights = numpy_helper.from_array(np.array([[4.0, -4.0], [0.0, 0.0], [-4.0, 4.0]], np.float32), "w")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=0),
         helper.make_node("MatMul", ["mean", "w"], ["logits"]), helper.make_node("Softmax", ["logits"], ["p"], axis=1)],
        "mean_colour", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 2])], [weights, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    src, out = tmp_path / "mean_colour.onnx", tmp_path / "adopted.onnx"
    onnx.save(model, str(src))
    r = CliRunner().invoke(main, ["adopt", str(src), "--labels", "red,blue", "--input-norm", "unit",
                                  "--img-size", "16x24", "--out", str(out)])
    assert r.exit_code == 0, r.output
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims] == ["N", 3, 16, 24]
    meta = read_metadata(out)
    assert meta["input"]["shape"] == [3, 16, 24] and (meta["preprocess"]["height"], meta["preprocess"]["width"]) == (16, 24)
    clf = Classifier.load(out, threads=1)
    red, blue = np.zeros((30, 50, 3), np.uint8), np.zeros((30, 50, 3), np.uint8)
    red[..., 0], blue[..., 2] = 200, 200
    assert [c.best.label for c in clf.classify([red, blue])] == ["red", "blue"]
    # --crop: a red centre in a blue frame is blue as a whole, red as its middle half
    framed = blue.copy()
    framed[10:20, 15:35] = (200, 0, 0)
    assert clf.classify([framed])[0].best.label == "blue"
    cropped = tmp_path / "cropped.onnx"
    r = CliRunner().invoke(main, ["adopt", str(src), "--labels", "red,blue", "--input-norm", "unit",
                                  "--img-size", "16x24", "--crop", "0.5", "--out", str(cropped)])
    assert r.exit_code == 0, r.output
    assert read_metadata(cropped)["preprocess"]["crop"] == 0.5
    assert Classifier.load(cropped, threads=1).classify([framed])[0].best.label == "red"
    # --pad: a wide red strip letterboxed with blue is mostly blue; stretched, all red
    strip = np.zeros((10, 100, 3), np.uint8)
    strip[..., 0] = 200
    assert clf.classify([strip])[0].best.label == "red"
    padded = tmp_path / "padded.onnx"
    r = CliRunner().invoke(main, ["adopt", str(src), "--labels", "red,blue", "--input-norm", "unit",
                                  "--img-size", "16x24", "--pad", "0,0,255", "--out", str(padded)])
    assert r.exit_code == 0, r.output
    assert read_metadata(padded)["preprocess"]["pad"] == [0, 0, 255]
    assert Classifier.load(padded, threads=1).classify([strip])[0].best.label == "blue"


def test_check_names_a_label_order_that_fits_better(exported, foreign, tmp_path):
    result = CliRunner().invoke(main, ["adopt", str(foreign / "tm_float.tflite"), "--labels", "bar_v,bar_h",
                                       "--input-norm", "tf", "--check", str(_data(exported)),
                                       "--out", str(tmp_path / "swapped.tflite")])
    assert result.exit_code == 0, result.output
    assert "The model is right on only" in result.output and "In the order bar_h,bar_v" in result.output
    check = read_metadata(tmp_path / "swapped.tflite")["fidelity"]["check"]
    assert check["accuracy"] < 0.1 and "label_order_problem" in check


@pytest.mark.parametrize("name, norm", [("reshape_batch.tflite", "tf"), ("reshape_batch.onnx", "torch")])
def test_a_graph_that_fixes_its_batch_inside_gets_one_image_at_a_time(exported, foreign, tmp_path, name, norm):
    out = tmp_path / name
    result = CliRunner().invoke(main, ["adopt", str(foreign / name), "--labels", "bar_h,bar_v", "--input-norm", norm,
                                       "--model-output", "logits" if norm == "torch" else "probabilities",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    pixels = _pixels(exported)
    reference = _probs(_artefact(exported, "run_fp32.tflite"), pixels)
    clf = Classifier.load(out, threads=1)
    np.testing.assert_allclose(clf.backend.run(pixels[:8]), reference[:8], atol=1e-4)  # batch of 8: 8 rows
    results = [r for _, r in clf.stream(sorted(_data(exported).rglob("*.png"))[:20], batch_size=8)]
    assert len(results) == 20 and all(r.best.label in ("bar_h", "bar_v") for r in results)


SUPPORT_FIXTURE = Path(__file__).parent / "data" / "support_metadata.tflite"  # see make_support_metadata_fixture.py


def test_a_model_maker_style_file_gives_its_own_labels_and_normalisation(tmp_path):
    import importlib.util

    maker = importlib.util.spec_from_file_location("maker", SUPPORT_FIXTURE.parent / "make_support_metadata_fixture.py")
    fixture = importlib.util.module_from_spec(maker)
    maker.loader.exec_module(fixture)
    LABELS, MEAN, STD = fixture.LABELS, fixture.MEAN, fixture.STD
    out = tmp_path / "mm.tflite"
    result = CliRunner().invoke(main, ["adopt", str(SUPPORT_FIXTURE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = read_metadata(out)
    assert meta["class_names"] == list(LABELS) and meta["output"]["kind"] == "probabilities"
    np.testing.assert_allclose(meta["input"]["mean"], MEAN, rtol=1e-6)
    np.testing.assert_allclose(meta["input"]["std"], STD, rtol=1e-6)
    assert "from its TFLite Support metadata" in meta["adapter"]["input_norm"]
    pixels = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_allclose(_fed(out, pixels), (pixels - np.asarray(MEAN)) / np.asarray(STD), atol=1e-5)
    # the copy is still a complete TFLite Support model: its packed labels file and its metadata are kept
    import zipfile

    from edgeclf.edge_runtime.support_metadata import read_support_metadata

    with zipfile.ZipFile(out) as packed:
        assert packed.read("labels.txt").decode().split() == list(LABELS)
    assert read_support_metadata(out.read_bytes()).labels == LABELS
    # options, when given, win; where they contradict the file, adopt says so
    result = CliRunner().invoke(main, ["adopt", str(SUPPORT_FIXTURE), "--labels", "a,b,c", "--input-norm", "tf",
                                       "--out", str(tmp_path / "given.tflite")])
    assert result.exit_code == 0, result.output
    assert "own metadata names its classes cat, dog, hamster; using --labels a, b, c" in result.output
    assert "own metadata normalises its input with mean" in result.output
    assert read_metadata(tmp_path / "given.tflite")["input"]["mean"] == [127.5] * 3
    # ... and the copy's TFLite Support metadata says what its edgeclf metadata says, for MediaPipe to read
    given = read_support_metadata((tmp_path / "given.tflite").read_bytes())
    assert given.labels == ("a", "b", "c") and given.mean == (127.5,) * 3 and given.std == (127.5,) * 3
    with zipfile.ZipFile(tmp_path / "given.tflite") as packed:
        assert packed.namelist() == ["labels.txt"]


def test_a_file_without_support_metadata_needs_the_options(foreign, tmp_path):
    result = CliRunner().invoke(main, ["adopt", str(foreign / "tm_float.tflite"), "--out", str(tmp_path / "x.tflite")])
    assert result.exit_code == 2 and "carries no TFLite Support metadata" in result.output
    assert "Pass --labels" in result.output and not (tmp_path / "x.tflite").exists()
    result = CliRunner().invoke(main, ["adopt", str(foreign / "torch_nchw.onnx"), "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "is an ONNX file, which does not say what its classes are" in result.output


def _nan_model(path):
    """A (N, 3, 4, 4) -> (N, 3) ONNX model that answers NaN: sqrt of a negative mean, what lost weights look like."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Sub", ["flat", "big"], ["negative"]), helper.make_node("Sqrt", ["negative"], ["y"])],
        "nan", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.asarray(1000.0, np.float32), "big")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_adopt_refusals(exported, foreign, tmp_path):
    def run(*args):
        return CliRunner().invoke(main, ["adopt", *map(str, args)])

    tm = foreign / "tm_float.tflite"
    r = run(tm, "--labels", "a,b,c", "--input-norm", "tf", "--out", tmp_path / "x.tflite")
    assert r.exit_code == 2 and "Received 3 labels (a, b, c) for a model with 2 output units" in r.output
    r = run(_artefact(exported, "run_int8.tflite"), "--labels", "a,b", "--input-norm", "raw", "--out",
            tmp_path / "y.tflite")
    assert r.exit_code == 2 and "already carries edgeclf metadata" in r.output
    r = run(foreign / "torch_nchw.onnx", "--labels", "a,b", "--input-norm", "torch", "--model-output",
            "probabilities", "--out", tmp_path / "z.onnx")
    assert r.exit_code == 2 and "Pass --model-output logits" in r.output and not (tmp_path / "z.onnx").exists()
    r = run(tm, "--labels", "a,b")
    assert r.exit_code == 2 and "--input-norm" in r.output
    r = run(tm, "--labels", "a,b", "--input-norm", "tf", "--out", tm)
    assert r.exit_code == 2 and "the model itself" in r.output
    r = run(tm, "--labels", "a,b", "--input-norm", "tf", "--out", tmp_path / "x.onnx")
    assert r.exit_code == 2 and "Expected a .tflite file name" in r.output
    r = run(_nan_model(tmp_path / "nan.onnx"), "--labels", "a,b,c", "--input-norm", "unit", "--out",
            tmp_path / "nan_out.onnx")
    assert r.exit_code == 2 and "outputs NaN on probe images" in r.output and not (tmp_path / "nan_out.onnx").exists()
    (tmp_path / "nan.onnx").unlink()
    shutil.copyfile(tm, tmp_path / "again.tflite")
    assert run(tmp_path / "again.tflite", "--labels", "a,b", "--input-norm", "tf").exit_code == 0
    r = run(tmp_path / "again.tflite", "--labels", "a,b", "--input-norm", "tf")
    assert r.exit_code == 2 and "already exists. Pass --force" in r.output
    assert run(tmp_path / "again.tflite", "--labels", "a,b", "--input-norm", "tf", "--force").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.tflite", "again_edgeclf.tflite",
                                                          "again_edgeclf.tflite.json"]  # no temporary files left


@pytest.fixture(scope="module")
def binary_gray(tmp_path_factory):
    """Two files as notebooks make them: a grayscale model ending in one logit (Dense(1), no activation), and a
    colour model ending in one sigmoid unit. Returns (folder, {name: keras model})."""
    import keras

    from edgeclf.toolkit.export import QuantSpec
    from edgeclf.toolkit.export import tflite as tflite_export
    from edgeclf.toolkit.export.archive import write_saved_model

    out = tmp_path_factory.mktemp("binary")
    keras.utils.set_random_seed(3)
    models = {}
    for name, channels, activation, gain, bias in (("gray_logit", 1, None, 20.0, 2.0),
                                                   ("rgb_sigmoid", 3, "sigmoid", 3.0, 0.0)):
        inp = keras.Input((16, 16, channels))
        x = keras.layers.Rescaling(1 / 255)(inp)
        x = keras.layers.Conv2D(4, 3, activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        dense = keras.layers.Dense(1, activation=activation)
        model = keras.Model(inp, dense(x))
        kernel, _ = dense.get_weights()
        dense.set_weights([kernel * gain, np.asarray([bias], np.float32)])  # the logit model's spread beyond [0, 1]
        write_saved_model(model, out / f"{name}_saved")
        (out / f"{name}.tflite").write_bytes(tflite_export.convert(out / f"{name}_saved", QuantSpec.float32(), None))
        models[name] = model
    return out, models


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _adopt_raw(src, labels: str, out):
    """`edgeclf adopt SRC --labels LABELS --input-norm raw --out OUT`, asserted to succeed; its output."""
    r = CliRunner().invoke(main, ["adopt", str(src), "--labels", labels, "--input-norm", "raw", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return r.output


def test_a_grayscale_model_with_one_logit_gets_luminance_and_a_sigmoid(binary_gray, tmp_path):
    folder, models = binary_gray
    out = tmp_path / "gray.tflite"
    assert "sigmoid" in _adopt_raw(folder / "gray_logit.tflite", "no_helmet,helmet", out)  # a logit, found by probing
    meta = read_metadata(out)
    assert meta["input"]["shape"] == [16, 16, 1] and meta["input"]["channels"] == 1
    assert meta["output"]["kind"] == "logits" and meta["output"]["units"] == 1
    assert meta["adapter"]["grayscale"] is True and meta["class_names"] == ["no_helmet", "helmet"]

    pixels = np.random.default_rng(1).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    luma = pixels.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32)[:, None]
    np.testing.assert_allclose(_fed(out, pixels), luma, rtol=1e-6)
    p = _sigmoid(models["gray_logit"].predict(luma, verbose=0)[:, 0])
    np.testing.assert_allclose(_probs(out, pixels), np.stack([1 - p, p], 1), atol=1e-5)

    info = CliRunner().invoke(main, ["info", str(out)])
    assert "grayscale" in info.output and "one sigmoid unit scoring the second class" in info.output
    assert "the runtime applies a sigmoid" in info.output


def test_a_model_ending_in_one_sigmoid_unit_scores_the_second_label(binary_gray, tmp_path):
    folder, models = binary_gray
    out = tmp_path / "sigmoid.tflite"
    _adopt_raw(folder / "rgb_sigmoid.tflite", "real,ai_generated", out)
    assert read_metadata(out)["output"] == {**read_metadata(out)["output"], "kind": "probabilities", "units": 1}
    pixels = np.random.default_rng(2).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    p = models["rgb_sigmoid"].predict(pixels.astype(np.float32), verbose=0)[:, 0]
    assert 0.01 < p.min() and p.max() < 0.99 and p.std() > 1e-3  # varied answers, not one saturated value
    threshold = float(np.median(p))  # both labels appear
    np.testing.assert_allclose(_probs(out, pixels), np.stack([1 - p, p], 1), atol=1e-5)

    images = tmp_path / "imgs"
    images.mkdir()
    from PIL import Image

    for i, px in enumerate(pixels):
        Image.fromarray(px).save(images / f"{i}.png")
    pred = CliRunner().invoke(main, ["predict", str(out), str(images), "--threshold", str(threshold), "--format",
                                     "jsonl"])
    assert pred.exit_code == 0, pred.output
    records = sorted((json.loads(line) for line in pred.output.splitlines() if line.startswith("{")),
                     key=lambda rec: rec["path"])
    assert [rec["label"] for rec in records] == ["ai_generated" if v >= threshold else "real" for v in p]
    assert {rec["label"] for rec in records} == {"real", "ai_generated"}


def test_grayscale_and_one_unit_refusals(binary_gray, tmp_path):
    folder, _ = binary_gray

    def run(*args):
        return CliRunner().invoke(main, ["adopt", *map(str, args)])

    r = run(folder / "gray_logit.tflite", "--labels", "a,b", "--input-norm", "torch", "--out", tmp_path / "t.tflite")
    assert r.exit_code == 2 and "normalises three colour channels" in r.output
    r = run(folder / "gray_logit.tflite", "--labels", "a,b", "--mean", "0.5,0.4,0.3", "--std", "0.2,0.2,0.2",
            "--out", tmp_path / "m.tflite")
    assert r.exit_code == 2 and "Expected one value each" in r.output
    r = run(folder / "rgb_sigmoid.tflite", "--labels", "a,b,c", "--input-norm", "raw", "--out", tmp_path / "u.tflite")
    assert r.exit_code == 2 and "Expected 2 labels, negative class first" in r.output
    assert not any(tmp_path.iterdir())


def test_grayscale_input_tensor_layouts():
    from edgeclf.edge_runtime.errors import ConfigError
    from edgeclf.edge_runtime.tensor import InputTensor

    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    luma = pixels.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32)[:, None]
    tf_gray = InputTensor.preset("tf", "NCHW", channels=1)
    np.testing.assert_allclose(tf_gray.apply(pixels), (luma / 127.5 - 1).transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-6)
    assert tf_gray.shape(4, 5) == (1, 4, 5) and not tf_gray.identity
    assert InputTensor.from_metadata(tf_gray.to_metadata()) == tf_gray
    with pytest.raises(ConfigError, match="same value for every channel"):
        InputTensor(mean=(1.0, 2.0, 3.0), channels=1)
    with pytest.raises(ConfigError, match="channels=2"):
        InputTensor(channels=2)
