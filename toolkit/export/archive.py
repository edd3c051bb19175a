"""The inference-only SavedModel every converter starts from (Keras ExportArchive, explicit signature)."""

from __future__ import annotations

import functools
from pathlib import Path

from .._deps import import_tf

INPUT_NAME = "pixels"
ENDPOINT = "serve"


def write_saved_model(model, directory: str | Path) -> None:
    """Writes ``model``'s inference function (``training=False``, dynamic batch) as a SavedModel.

    ExportArchive with an explicit input signature is the conversion path that works for Keras 3 models;
    ``TFLiteConverter.from_keras_model`` and ``tf2onnx.convert.from_keras`` have open failure modes with them.
    """
    tf, keras = import_tf()
    h, w, c = model.input_shape[1:]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(ENDPOINT, functools.partial(model.__call__, training=False),
                         input_signature=[tf.TensorSpec((None, h, w, c), tf.float32, name=INPUT_NAME)])
    archive.write_out(str(directory), verbose=False)


def concrete_function(model):
    """The same endpoint as a concrete tf.function (what tf2onnx converts)."""
    tf, keras = import_tf()
    h, w, c = model.input_shape[1:]
    archive = keras.export.ExportArchive()
    archive.track(model)
    signature = [tf.TensorSpec((None, h, w, c), tf.float32, name=INPUT_NAME)]
    archive.add_endpoint(ENDPOINT, functools.partial(model.__call__, training=False), input_signature=signature)
    return archive._get_concrete_fn(ENDPOINT), signature
