"""The yardstick for ``edgeclf train``: the plain Keras script a careful practitioner writes for Fashion-MNIST.

No edgeclf imports: it reads the IDX files itself, trains on every training image of the chosen classes (no
validation carve-out) and reports accuracy on the official test images of those classes, in inference mode.
``train_vs_baseline.py`` runs it beside ``edgeclf train`` on the same data (record: ``train_vs_baseline.md``).

Network: six Conv(3x3)-BN-ReLU layers 32/32/64/64/128/128 with 2x2 max-pooling after each pair, global average
pooling, dropout 0.3, softmax. Inputs scaled to 0-1. Training: RandomFlip("horizontal") + RandomTranslation(0.1,
0.1) in the tf.data pipeline, Adam 2e-3 halved every 4 epochs, batch 128.

    python benchmarks/lab/keras_baseline.py --classes pullover,coat --epochs 15 --seed 0 --json out.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import time
from pathlib import Path

import numpy as np

SOURCE = "/usr/share/datasets/fashion-mnist"
CLASSES = ("tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        _, _, ndim = struct.unpack(">HBB", fh.read(4))
        shape = struct.unpack(">" + "I" * ndim, fh.read(4 * ndim))
        return np.frombuffer(fh.read(), dtype=np.uint8).reshape(shape)


def load(source: Path, classes: list[str], split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
    wanted = [CLASSES.index(c) for c in classes]
    keep = np.isin(y, wanted)
    remap = {c: i for i, c in enumerate(wanted)}
    return x[keep][..., None], np.array([remap[int(v)] for v in y[keep]], dtype=np.int32)


def build(num_classes: int):
    import keras
    from keras import layers

    inputs = keras.Input((28, 28, 1))
    x = layers.Rescaling(1 / 255)(inputs)
    for filters in (32, 64, 128):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", default=",".join(CLASSES), help="comma-separated Fashion-MNIST classes")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", type=Path, default=Path(SOURCE))
    parser.add_argument("--json", type=Path, help="write test accuracy and timings here")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    classes = args.classes.split(",")
    x_train, y_train = load(args.source, classes, "train")
    x_test, y_test = load(args.source, classes, "test")

    augment = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=args.seed),
                                keras.layers.RandomTranslation(0.1, 0.1, seed=args.seed + 1)])
    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
             .shuffle(len(x_train), seed=args.seed, reshuffle_each_iteration=True)
             .batch(128)
             .map(lambda x, y: (augment(tf.cast(x, tf.float32), training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
             .prefetch(tf.data.AUTOTUNE))
    model = build(len(classes))
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])

    class EpochTimes(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    timer = EpochTimes()
    started = time.perf_counter()
    model.fit(train, epochs=args.epochs, verbose=2,
              callbacks=[keras.callbacks.LearningRateScheduler(lambda epoch: 2e-3 * 0.5 ** (epoch // 4)), timer])
    fit_s = time.perf_counter() - started
    probs = model.predict(x_test.astype("float32"), batch_size=256, verbose=0)
    accuracy = float(np.mean(probs.argmax(axis=1) == y_test))
    print(f"test accuracy {accuracy:.4f} ({len(y_test)} images), fit {fit_s:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "test_accuracy": accuracy, "n_train": int(len(y_train)), "n_test": int(len(y_test)), "fit_s": fit_s,
            "epoch_s": timer.times, "steady_epoch_s": float(np.median(timer.times[1:] or timer.times)),
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
