"""The inference-only SavedModel every converter starts from (Keras ExportArchive, explicit signature)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from edgeclf.models.factory import nested_layers

from .._deps import import_tf

logger = logging.getLogger(__name__)

INPUT_NAME = "pixels"
ENDPOINT = "serve"


def write_saved_model(model, directory: str | Path, static_reshapes: bool = True) -> None:
    """Writes ``model``'s inference function (``training=False``, dynamic batch) as a SavedModel.

    ExportArchive with an explicit input signature is the conversion path that works for Keras 3 models;
    ``TFLiteConverter.from_keras_model`` and ``tf2onnx.convert.from_keras`` have open failure modes with them.

    Args:
        model: The Keras model.
        directory: Where to write it.
        static_reshapes: Trace ``Reshape`` and ``Flatten`` layers as reshapes to a constant shape (see
            ``without_dynamic_reshapes``); False traces the model as it is.
    """
    archive, _ = _archive(without_dynamic_reshapes(model) if static_reshapes else model)
    archive.write_out(str(directory), verbose=False)


def concrete_function(model):
    """The same endpoint as a concrete tf.function (what tf2onnx converts), with constant-shape reshapes."""
    archive, signature = _archive(without_dynamic_reshapes(model))
    return archive._get_concrete_fn(ENDPOINT), signature


def _archive(model):
    """An ExportArchive with the inference endpoint, and its input signature."""
    tf, keras = import_tf()
    h, w, c = model.input_shape[1:]
    archive = keras.export.ExportArchive()
    archive.track(model)
    signature = [tf.TensorSpec((None, h, w, c), tf.float32, name=INPUT_NAME)]
    archive.add_endpoint(ENDPOINT, functools.partial(model.__call__, training=False), input_signature=signature)
    return archive, signature


def without_dynamic_reshapes(model):
    """``model`` with its ``Reshape`` and channels-last ``Flatten`` layers reshaping to ``(-1, *shape)``.

    Keras traces both layers with the batch size read from the input at run time (``Shape``, ``StridedSlice`` and
    ``Pack`` ops before the ``Reshape``): EfficientNet has one in each squeeze-excite block, a Flatten head one more.
    XNNPACK cannot run ``SHAPE``, so LiteRT splits such a model into a delegated partition per block (17 for
    EfficientNet-B0), and delegates that need static shapes (GPU, NNAPI, the Edge TPU compiler) stop at the first
    one. With ``-1`` for the batch the new shape is a constant and the model is one partition. Every other layer is
    the model's own (same weights); the outputs are the same numbers.

    Returns:
        A clone of ``model`` with those layers wrapped, or ``model`` itself when it has none, or when it cannot be
        cloned (a subclassed model).
    """
    _, keras = import_tf()
    wrap = {id(layer) for layer in nested_layers(model) if _reshapes(layer, keras)}
    if not wrap:
        return model

    def clone(layer):
        return _constant_reshape_class()(layer, name=f"{layer.name}_constant") if id(layer) in wrap else layer

    try:
        return keras.models.clone_model(model, clone_function=clone, recursive=True)
    except Exception as exc:  # a subclassed model or container clone_model cannot rebuild: trace it as it is
        logger.info("Kept the model's batch-dependent reshapes: cloning it failed (%s)", exc)
        return model


def _reshapes(layer, keras) -> bool:
    if isinstance(layer, keras.layers.Flatten):
        return getattr(layer, "data_format", None) != "channels_first"  # that one transposes first
    return isinstance(layer, keras.layers.Reshape)


@functools.cache
def _constant_reshape_class():
    """The layer class, made on first use: this module is imported where Keras may not be installed."""
    _, keras = import_tf()

    class ConstantReshape(keras.layers.Layer):
        """A ``Reshape`` or ``Flatten`` layer that reshapes to ``(-1, *its output shape)`` whenever the input's
        shape fixes that output shape (each call on its own, so a layer shared between inputs stays right), and
        calls the layer itself otherwise. Built only to trace a model for export, never saved."""

        def __init__(self, layer, **kwargs):
            super().__init__(**kwargs)
            self.layer = layer

        def call(self, inputs):
            shape = tuple(self.layer.compute_output_shape((None, *inputs.shape[1:])))[1:]
            if not shape or not all(isinstance(d, int) for d in shape):
                return self.layer(inputs)
            return keras.ops.reshape(inputs, (-1, *shape))

        def compute_output_shape(self, input_shape):
            return self.layer.compute_output_shape(input_shape)

    return ConstantReshape
