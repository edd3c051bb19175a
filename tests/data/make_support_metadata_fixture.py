"""Makes ``support_metadata.tflite``: a tiny image classifier carrying TFLite Support metadata, as MediaPipe
Model Maker and the TFLite Support metadata writers write it (per-channel input normalisation, a labels file
packed into the model). ``tests/test_adopt.py`` checks that ``edgeclf adopt`` reads both from it.

Two steps, because the metadata writers live in ``tflite-support``, which edgeclf does not depend on:

    .venv/bin/python tests/data/make_support_metadata_fixture.py model          # edgeclf's venv (TensorFlow)
    python3 -m venv /tmp/tfls && /tmp/tfls/bin/pip install tflite-support==0.4.4  # needs libusb-1.0-0
    /tmp/tfls/bin/python tests/data/make_support_metadata_fixture.py metadata
"""

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLAIN = HERE / "support_metadata_plain.tflite"
OUT = HERE / "support_metadata.tflite"
LABELS = ("cat", "dog", "hamster")
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


def model() -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                          keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(len(LABELS), activation="softmax")])
    # Through a SavedModel written by Keras' ExportArchive: from_concrete_functions loses Keras 3 weights (NaN).
    archive = keras.export.ExportArchive()
    archive.track(m)
    archive.add_endpoint("serve", lambda x: m(x, training=False),
                         input_signature=[tf.TensorSpec((1, 8, 8, 3), tf.float32)])
    with tempfile.TemporaryDirectory() as tmp:
        archive.write_out(tmp, verbose=False)
        PLAIN.write_bytes(tf.lite.TFLiteConverter.from_saved_model(tmp).convert())


def metadata() -> None:
    from tflite_support.metadata_writers import image_classifier, writer_utils

    with tempfile.TemporaryDirectory() as tmp:
        labels = Path(tmp) / "labels.txt"
        labels.write_text("\n".join(LABELS) + "\n")
        writer = image_classifier.MetadataWriter.create_for_inference(
            writer_utils.load_file(str(PLAIN)), MEAN, STD, [str(labels)])
        writer_utils.save_file(writer.populate(), str(OUT))
    PLAIN.unlink()


if __name__ == "__main__":
    {"model": model, "metadata": metadata}[sys.argv[1]]()
