"""``toolkit.precise_bn``: BatchNorm statistics recomputed over the training images are the population's."""

from __future__ import annotations

import numpy as np


def _model():
    import keras
    from keras import layers

    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = layers.BatchNormalization(name="bn", momentum=0.99)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.5, name="drop")(x)
    return keras.Model(inputs, layers.Dense(2, activation="softmax")(x))


def test_statistics_are_those_of_every_training_image_and_nothing_else_changes():
    from edgeclf.toolkit.precise_bn import recompute_batchnorm

    keras_model = _model()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(70, 6, 6, 3), dtype=np.uint8)
    before = [w.copy() for w in keras_model.get_weights()]
    used = recompute_batchnorm(keras_model, pixels, batch_size=16)
    # 70 images in batches of 16: four whole batches, the 6 left over never define the statistics.
    assert used == 64
    bn = keras_model.get_layer("bn")
    kernel = keras_model.get_layer("conv").get_weights()[0]
    conv = np.asarray(keras_model.get_layer("conv")(pixels.astype(np.float32)))
    assert np.allclose(kernel, before[0])
    # The population statistics of the 64 images used (a seeded choice), over every pixel of every image.
    chosen = np.random.default_rng(0).permutation(70)[:64]
    feats = conv[chosen].reshape(-1, 4).astype(np.float64)
    assert np.allclose(np.asarray(bn.moving_mean), feats.mean(axis=0), rtol=1e-4, atol=1e-3)
    assert np.allclose(np.asarray(bn.moving_variance), feats.var(axis=0), rtol=1e-4, atol=1e-2)
    assert bn.momentum == 0.99 and keras_model.get_layer("drop").rate == 0.5
    for a, b, var in zip(keras_model.get_weights(), before, keras_model.weights):
        if "moving" not in var.path:
            assert np.array_equal(a, b), var.path


def test_a_model_without_batchnorm_is_left_alone():
    import keras
    from keras import layers

    from edgeclf.toolkit.precise_bn import recompute_batchnorm

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, layers.Dense(2)(layers.Flatten()(inputs)))
    assert recompute_batchnorm(model, np.zeros((8, 4, 4, 3), np.uint8), 4) == 0
