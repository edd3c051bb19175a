"""tf.data input pipelines over decoded uint8 pixels (in memory or memory-mapped)."""

from __future__ import annotations

import numpy as np

from ._deps import import_tf


def make_dataset(pixels: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool, seed: int, augmenter=None,
                 parallel: bool = True):
    """Batches of (float32 0-255 pixels, int32 labels), prefetched.

    Batches are gathered from ``pixels`` by index, so a memory-mapped array is read batch by batch and never
    loaded whole. Augmentation (training only) runs here, overlapped with the model step by the prefetch.

    Args:
        parallel: Gather and augment several batches at once. Pass False under TensorFlow op determinism: it runs
            these stateful maps one at a time anyway, by rewriting each parallel map into a sequential one, and
            the rewrite logs "NodeDef mentions attribute use_unbounded_threadpool" errors at every epoch.
    """
    tf, _ = import_tf()
    n = len(labels)
    h, w = pixels.shape[1:3]
    labels = np.asarray(labels, dtype=np.int32)

    def gather(idx):
        idx = np.sort(idx)  # sequential reads of a memory map; order within a batch does not matter
        return np.ascontiguousarray(pixels[idx]), labels[idx]

    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def load(idx):
        x, y = tf.numpy_function(gather, [idx], [tf.uint8, tf.int32])
        x.set_shape((None, h, w, 3))
        y.set_shape((None,))
        return tf.cast(x, tf.float32), y

    calls = tf.data.AUTOTUNE if parallel else None
    ds = ds.map(load, num_parallel_calls=calls)
    if augmenter is not None:
        ds = ds.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=calls)
    return ds.prefetch(tf.data.AUTOTUNE)


def predict_probs(model, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Model probabilities for (N, H, W, 3) uint8 pixels, batch by batch."""
    out = [np.asarray(model(np.asarray(pixels[i : i + batch_size], dtype=np.float32), training=False))
           for i in range(0, len(pixels), batch_size)]
    k = model.output_shape[-1]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, k), np.float32)
