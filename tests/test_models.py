"""Backbone registry and model builder: every backbone builds, takes 0-255 RGB and loads with safe_mode on."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from edgeclf.edge_runtime import ConfigError
from edgeclf.edge_runtime.registry import Registry
from edgeclf.models import HeadSpec, ModelSpec, create_model, get_backbone, get_backbone_model, list_backbones

HEAVY = {"resnet50", "efficientnet_b0", "vgg19", "mobilenet_v3_large"}
ALL_BACKBONES = ["simple_cnn", "wide_cnn", "helmet_cnn", "aiart_cnn", "vgg16", "vgg19", "resnet50", "mobilenet_v2", "mobilenet_v3_small",
                 "mobilenet_v3_large", "efficientnet_b0"]


def test_registry_lists_every_backbone():
    assert list_backbones() == sorted(ALL_BACKBONES)
    assert list_backbones("mobilenet*") == ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"]


def test_unknown_backbone_suggests_a_close_match():
    with pytest.raises(ConfigError) as e:
        get_backbone("mobilenetv2")
    msg = str(e.value)
    assert "Unknown backbone: 'mobilenetv2'" in msg and "Did you mean 'mobilenet_v2'?" in msg
    assert "simple_cnn" in msg and "efficientnet_b0" in msg


def test_registry_rejects_duplicates():
    reg = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(ConfigError, match="Duplicate thing name: 'a'"):
        reg.register("a", 2)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in ALL_BACKBONES])
def test_backbone_builds_outputs_probabilities_and_round_trips(name, tmp_path):
    import keras

    from edgeclf.models import get_backbone

    size = max(32, get_backbone(name).min_size)
    model = create_model(ModelSpec(name, 3, size, "none"))
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(again(x, training=False)), probs, atol=1e-6)
    assert not any(type(l).__name__ == "Lambda" for l in again.layers)


def test_wide_cnn_widens_only_the_blocks_after_the_first():
    """simple_cnn's layout with 4x the filters where the image is already pooled to a half and a quarter."""
    import keras

    def filters(name):
        model = get_backbone_model(create_model(ModelSpec(name, 10, 28, "none")))
        return [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]

    assert filters("simple_cnn") == [32, 32, 64, 64, 128, 128]
    assert filters("wide_cnn") == [32, 32, 128, 128, 256, 256]
    with pytest.raises(ConfigError, match="no pretrained weights"):
        create_model(ModelSpec("wide_cnn", 10, 28, "imagenet"))


def test_caffe_normalisation_matches_keras_preprocess_input():
    import keras

    model = create_model(ModelSpec("vgg16", 2, 32, "none"))
    normalise = keras.Model(model.input, model.get_layer("normalise").output)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = keras.applications.vgg16.preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(normalise(x)), expected, atol=1e-4)


def test_torch_normalisation_matches_keras_preprocess_input():
    import keras

    from edgeclf.models.factory import normalise

    inp = keras.Input((8, 8, 3))
    x = np.random.default_rng(3).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode="torch")
    np.testing.assert_allclose(np.asarray(keras.Model(inp, normalise(inp, "torch"))(x)), expected, atol=1e-4)


def test_tf_normalisation_matches_mobilenet_v2_preprocess_input():
    import keras

    model = create_model(ModelSpec("mobilenet_v2", 2, 32, "none"))
    normalise = keras.Model(model.input, model.get_layer("normalise").output)
    x = np.random.default_rng(2).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(normalise(x)), keras.applications.mobilenet_v2.preprocess_input(x.copy()),
                               atol=1e-6)


def test_head_options_shape_the_model():
    model = create_model(ModelSpec("simple_cnn", 4, 24, "none", HeadSpec("flatten", (16, 8), 0.5)))
    names = [l.name for l in model.layers]
    assert type(model.get_layer("pool")).__name__ == "Flatten"
    assert model.get_layer("head_dense_0").units == 16 and model.get_layer("head_dense_1").units == 8
    assert "head_dropout_out" in names and model.output_shape == (None, 4)
    assert model.get_layer("probabilities").dtype_policy.name == "float32"


def test_weights_file_is_loaded_into_the_backbone(tmp_path):
    donor = create_model(ModelSpec("simple_cnn", 2, 16, "none"))
    path = tmp_path / "backbone.weights.h5"
    get_backbone_model(donor).save_weights(path)
    model = create_model(ModelSpec("simple_cnn", 2, 16, str(path)))
    for a, b in zip(get_backbone_model(donor).get_weights(), get_backbone_model(model).get_weights()):
        np.testing.assert_array_equal(a, b)


def test_incompatible_weights_file_is_a_clear_error(tmp_path):
    donor = create_model(ModelSpec("simple_cnn", 2, 16, "none"))
    path = tmp_path / "whole.weights.h5"
    donor.save_weights(path)  # the whole model, not the backbone
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ConfigError, match="Could not load backbone weights") as e:
            create_model(ModelSpec("simple_cnn", 2, 16, str(path)))
    msg = str(e.value)
    # One line naming a layer that did not fit, not Keras' list of every object nor its 12 UserWarnings first.
    assert "\n" not in msg and "List of objects" not in msg
    assert re.search(r"Layer 'conv2d\w*' expected 1 variables", msg)
    assert not [w for w in caught if "freshly-initialized" in str(w.message)]


def test_a_weights_file_keras_loads_only_in_part_is_refused(tmp_path, monkeypatch):
    import keras

    donor = create_model(ModelSpec("simple_cnn", 2, 16, "none"))
    path = tmp_path / "backbone.weights.h5"
    get_backbone_model(donor).save_weights(path)
    load = keras.Model.load_weights

    def partly(self, filepath, *args, **kwargs):  # what Keras 3.15 does with a nested container it cannot match
        load(self, filepath, *args, **kwargs)
        warnings.warn("Skipping nested container at 'x': no matching group found in the saved file. Affected "
                      "layers will retain their freshly-initialized weights.", UserWarning, stacklevel=2)

    monkeypatch.setattr(keras.Model, "load_weights", partly)
    with pytest.raises(ConfigError, match="Skipping nested container at 'x'"):
        create_model(ModelSpec("simple_cnn", 2, 16, str(path)))


def test_keras_imagenet_h5_file_loads_into_its_backbone(tmp_path):
    """The file ``weights="imagenet"`` downloads (Keras 2's legacy .h5 layout), copied from a machine online."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    source = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(224, 224, 3))
    path = tmp_path / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    model = create_model(ModelSpec("mobilenet_v2", 2, 32, str(path)))
    loaded = get_backbone_model(model).get_weights()
    assert len(loaded) == len(source.get_weights())
    for a, b in zip(source.get_weights(), loaded):
        np.testing.assert_array_equal(a, b)


def test_failed_imagenet_download_names_both_alternatives(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ConfigError) as e:
        create_model(ModelSpec("mobilenet_v2", 2, 96, "imagenet"))
    assert "--weights none" in str(e.value) and "--weights PATH" in str(e.value)


def test_model_spec_validation(tmp_path):
    with pytest.raises(ConfigError, match="at least 2 classes"):
        ModelSpec("simple_cnn", 1, 16, "none")
    with pytest.raises(ConfigError, match="Expected at least 32"):
        ModelSpec("mobilenet_v2", 2, 16, "none")
    with pytest.raises(ConfigError, match="no pretrained weights"):
        ModelSpec("simple_cnn", 2, 16, "imagenet")
    with pytest.raises(ConfigError, match="existing weights file"):
        ModelSpec("vgg16", 2, 32, str(tmp_path / "missing.h5"))
    assert ModelSpec("resnet50", 2, weights="none").img_size == 224
    with pytest.raises(ConfigError, match="pooling='max'"):
        HeadSpec(pooling="max")


def test_a_non_square_input_is_built_kept_and_checked_per_side():
    spec = ModelSpec("mobilenet_v2", 2, (32, 56), "none")
    assert (spec.img_size, spec.height, spec.width) == ((32, 56), 32, 56)
    assert spec.to_dict()["img_size"] == [32, 56]  # as JSON gives it back: a resumed run compares equal
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert ModelSpec("simple_cnn", 2, [16, 16], "none").img_size == 16  # square is one number, as before
    model = create_model(spec)
    assert tuple(model.input.shape) == (None, 32, 56, 3)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 56, 3)).astype("float32")
    assert np.asarray(model(x, training=False)).shape == (2, 2)
    with pytest.raises(ConfigError, match=r"img_size=32x16px for mobilenet_v2\. Expected at least 32 pixels on each"):
        ModelSpec("mobilenet_v2", 2, (32, 16), "none")
    for bad in (0, (16, 0), (16, 24, 3), 16.0, True, "16"):
        with pytest.raises(ConfigError, match="Expected a positive integer"):
            ModelSpec("simple_cnn", 2, bad, "none")


def test_scratch_backbones_get_fast_batchnorm_statistics_and_keep_them_on_reload(tmp_path):
    """From scratch, Keras' BN momentum 0.999 leaves inference-mode statistics mostly at their initial values."""
    import keras

    from edgeclf.models.factory import SCRATCH_BN_MOMENTUM

    def momenta(model):
        found = set()
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                found.add(layer.momentum)
            if hasattr(layer, "layers"):
                found |= momenta(layer)
        return found

    scratch = create_model(ModelSpec("mobilenet_v2", 2, 32, "none"))
    assert momenta(scratch) == {SCRATCH_BN_MOMENTUM}
    scratch.save(tmp_path / "m.keras")
    assert momenta(keras.models.load_model(tmp_path / "m.keras", safe_mode=True)) == {SCRATCH_BN_MOMENTUM}
    # A backbone starting from given weights keeps the application's own momentum.
    get_backbone_model(scratch).save_weights(tmp_path / "b.weights.h5")
    assert momenta(create_model(ModelSpec("mobilenet_v2", 2, 32, str(tmp_path / "b.weights.h5")))) == {0.999}


def test_scratch_batchnorm_momentum_follows_the_steps_an_epoch():
    """Few steps an epoch need faster statistics, or validation (inference mode) scores a model training never saw."""
    import keras

    from edgeclf.models.factory import SCRATCH_BN_MOMENTUM, scratch_bn_momentum

    assert scratch_bn_momentum(None) == SCRATCH_BN_MOMENTUM
    assert scratch_bn_momentum(5000) == SCRATCH_BN_MOMENTUM  # large datasets: capped
    assert scratch_bn_momentum(18) == pytest.approx(0.05 ** (1 / 18))  # the bundled demo: ~0.847
    assert scratch_bn_momentum(18) ** 18 == pytest.approx(0.05)
    assert scratch_bn_momentum(2) == 0.8  # floor
    model = create_model(ModelSpec("simple_cnn", 2, 16, "none"), steps_per_epoch=18)
    bn = [layer for layer in get_backbone_model(model).layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and all(layer.momentum == pytest.approx(0.05 ** (1 / 18)) for layer in bn)
