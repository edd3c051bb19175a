"""Training input pipelines over decoded uint8 pixels (in memory or memory-mapped).

With Keras' TensorFlow backend batches come from ``tf.data``; with the JAX backend (``KERAS_BACKEND=jax``, where
TensorFlow need not be installed) from a ``keras.utils.PyDataset`` of worker threads. Both gather batches by index,
so a memory-mapped array is read batch by batch and never loaded whole, and both run augmentation (training only)
overlapped with the model step.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache

import numpy as np

from ._deps import import_keras, import_tf

# Worker threads of the PyDataset pipeline; a batch is one sorted gather from the pixel array plus augmentation.
MAX_WORKERS = 8


class EpochClock:
    """The epoch a training run is in, as its training loop sets it before each epoch (see ``make_dataset``).

    The pipeline reads the epoch here instead of counting the epochs it is iterated over: a resumed run starts at
    the epoch where the killed one stopped, and must shuffle and augment it as the uninterrupted run did.
    """

    def __init__(self, epoch: int = 0):
        self.epoch = epoch


def is_seed_state(variable) -> bool:
    """Whether a Keras variable is a random layer's ``SeedGenerator`` state: ``[seed, counter]``, whose ``next()``
    draws from the pair and counts up the counter."""
    return variable.path.endswith("seed_generator_state")


def seed_state_at(state: np.ndarray, counter: int) -> np.ndarray:
    """``state`` (a ``[seed, counter]`` pair) with its counter set to ``counter`` (modulo 2**32, uint32 under JAX)."""
    return np.array([state[0], counter % 2**32], dtype=state.dtype)


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which ``n`` images are visited in ``epoch``: a permutation drawn from ``(seed, epoch)``."""
    return np.random.default_rng((seed, epoch)).permutation(n)


def make_dataset(pixels: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool, seed: int, augmenter=None,
                 clock: EpochClock | None = None, drop_remainder: bool = False, sharding=None):
    """Batches of (float32 0-255 pixels, int32 labels) for the active Keras backend, prefetched.

    Each epoch's order is ``epoch_order(seed, clock.epoch)`` when ``shuffle``, whichever the backend, and batch
    ``i`` of epoch ``e`` is augmented from the random layers' seeds and the counter ``e * batches + i`` alone
    (``augment_batch``): the same seed gives the same batches however many threads prepare them, so both
    pipelines gather and augment several batches at once even under TensorFlow op determinism, and a resumed run
    augments its epochs as the uninterrupted run did.

    Args:
        clock: The epoch, set by the caller before each epoch; required with ``shuffle`` or ``augmenter``.
        drop_remainder: Leave out the images of each epoch's last, short batch (``batches_per_epoch``): a training
            step on a handful of images is a noisy step, and its BatchNorm statistics are those of the handful. The
            order changes every epoch, so every image is still trained on.
        sharding: ``distribute.Sharding`` under ``--distribute`` on JAX: this process's share of every batch, and
            the multiple of images each batch is padded to (zero-weight images; batches are then
            ``(x, y, weights)``). TensorFlow's MirroredStrategy splits tf.data batches itself.
    """
    if (shuffle or augmenter is not None) and clock is None:
        raise ValueError("make_dataset(shuffle=True) or with an augmenter needs the clock that says which epoch it "
                         "is in.")
    if import_keras().backend.backend() != "tensorflow":
        return array_batches(pixels, labels, batch_size, shuffle=shuffle, seed=seed, augmenter=augmenter,
                             workers=min(MAX_WORKERS, os.cpu_count() or 1), clock=clock, drop_remainder=drop_remainder,
                             sharding=sharding)
    tf, _ = import_tf()
    n = len(labels)
    h, w = pixels.shape[1:3]
    labels = np.asarray(labels, dtype=np.int32)
    batches = batches_per_epoch(n, batch_size, drop_remainder)

    def gather(idx):
        idx = np.sort(idx)  # sequential reads of a memory map; order within a batch does not matter
        return np.ascontiguousarray(pixels[idx]), labels[idx]

    # The epoch's order and number, read once an epoch when Keras starts iterating it (after its callbacks'
    # on_epoch_begin). Declared stateless although it reads the clock: op determinism, finding any stateful op in
    # a pipeline, makes every map of it sequential and turns its prefetching off, so the model step would wait for
    # each batch. The declaration is safe: it runs once, before any batch of the epoch, and takes the dataset's
    # element as input so that no optimisation can fold it into a constant.
    def epoch_plan(element):
        def plan(_):
            epoch = clock.epoch if clock is not None else 0
            return (epoch_order(seed, epoch, n) if shuffle else np.arange(n, dtype=np.int64)), np.int64(epoch)

        order, epoch = tf.numpy_function(plan, [element], [tf.int64, tf.int64], stateful=False)
        return tf.ensure_shape(order, (n,)), tf.ensure_shape(epoch, ())

    def epoch_batches(order, epoch):
        ds = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=batches * batch_size < n)
        return ds.enumerate().map(lambda i, idx: (epoch * batches + i, idx))

    # flat_map hides the number of batches, which Keras needs to end an epoch without a warning.
    ds = tf.data.Dataset.range(1).map(epoch_plan).flat_map(epoch_batches)
    ds = ds.apply(tf.data.experimental.assert_cardinality(batches))

    def load(counter, idx):
        # Not stateful: the pixels are only read, so op determinism lets tf.data run it in parallel.
        x, y = tf.numpy_function(gather, [idx], [tf.uint8, tf.int32], stateful=False)
        x.set_shape((None, h, w, 3))
        y.set_shape((None,))
        x = tf.cast(x, tf.float32)
        return (x if augment is None else augment(x, counter)), y

    augment = None if augmenter is None else augment_batch(augmenter, (h, w, pixels.shape[3]))
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def batches_per_epoch(n: int, batch_size: int, drop_remainder: bool) -> int:
    """Batches in an epoch of ``n`` images: with ``drop_remainder``, whole batches only (one, of all ``n``, when
    there are fewer than ``batch_size``)."""
    if drop_remainder and n > batch_size:
        return n // batch_size
    return -(-n // batch_size)


def array_batches(pixels: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool, seed: int,
                 augmenter=None, workers: int = 1, clock: EpochClock | None = None, drop_remainder: bool = False,
                 sharding=None):
    """A ``keras.utils.PyDataset`` of (float32 0-255 pixels, int32 labels) batches for any Keras backend.

    Each epoch visits every image once, in a new order drawn from ``(seed, epoch)`` when ``shuffle`` (Keras calls
    ``on_epoch_begin`` before every epoch; call it yourself when iterating by hand); batch ``i`` is one sorted
    gather from ``pixels``. ``workers`` > 1 prepares the next batches of the epoch on that many threads. The epoch
    is ``clock.epoch`` at ``on_epoch_begin`` when a clock is given, else the count of ``on_epoch_begin`` calls.
    """
    return _array_batches_class()(pixels, labels, batch_size, shuffle, seed, augmenter, workers, clock,
                                  drop_remainder, sharding)


@lru_cache(maxsize=1)
def _array_batches_class():
    keras = import_keras()

    class _ArrayBatches(keras.utils.PyDataset):
        def __init__(self, pixels, labels, batch_size, shuffle, seed, augmenter, workers, clock, drop_remainder,
                     sharding):
            # Keras' own worker threads (its enqueuer, used when workers > 1) start on a new epoch's batches before
            # Keras calls on_epoch_begin, and hand out first in an epoch the batches they had ready when the last
            # one ended: batches came in an earlier epoch's order (at the very first from epoch -1, which the
            # augmentation counter cannot hold), some images twice in an epoch and some not at all. Given one
            # worker, Keras asks for the batches one by one after on_epoch_begin, and this class prepares the
            # following ones on its own threads.
            super().__init__(workers=1, use_multiprocessing=False)
            self.pixels, self.labels = pixels, np.asarray(labels, dtype=np.int32)
            self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
            self.clock = clock
            self.batches = batches_per_epoch(len(self.labels), batch_size, drop_remainder)
            self.epoch = -1  # Keras calls on_epoch_begin before each epoch, the first included
            self.order = self._order(0)  # what a look before the first on_epoch_begin (tf.data's) is given
            self.augment = None if augmenter is None else _compiled_augmenter(augmenter, pixels[:1], batch_size)
            self.pool = ThreadPoolExecutor(workers, thread_name_prefix="edgeclf-batches") if workers > 1 else None
            self.ahead = 2 * workers  # batches prepared ahead of the one asked for
            self.pending: dict[tuple[int, int], Future] = {}
            self.sharding = sharding

        def __len__(self):
            return self.batches

        def _order(self, epoch):
            n = len(self.labels)
            return epoch_order(self.seed, epoch, n) if self.shuffle else np.arange(n)

        def on_epoch_begin(self):
            self.epoch = self.epoch + 1 if self.clock is None else self.clock.epoch
            self.order = self._order(self.epoch)
            # A batch is a function of (epoch, index): those prepared for this epoch (after the batch Keras looks
            # at before training) are kept, the others (an epoch Keras broke off) cancelled.
            for key in [key for key in self.pending if key[0] != self.epoch]:
                self.pending.pop(key).cancel()

        def __getitem__(self, i):
            epoch = max(self.epoch, 0)
            if self.pool is None:
                return self._batch(epoch, self.order, i)
            for j in range(i, min(i + self.ahead + 1, len(self))):  # bounded, whatever order batches are asked in
                if (epoch, j) not in self.pending and (j == i or len(self.pending) <= self.ahead):
                    self.pending[epoch, j] = self.pool.submit(self._batch, epoch, self.order, j)
            return self.pending.pop((epoch, i)).result()

        def _batch(self, epoch, order, i):
            # Sorted: sequential reads of a memory map; order within a batch does not matter.
            idx = np.sort(order[i * self.batch_size:(i + 1) * self.batch_size])
            share, weights = slice(None), None
            if self.sharding is not None:  # --distribute on JAX
                if self.sharding.pad_to > 1:
                    # Padded to a multiple of the devices with zero-weight copies of the batch's last image: exact,
                    # they count for nothing in the loss and metrics.
                    short = -len(idx) % self.sharding.pad_to
                    weights = np.concatenate([np.ones(len(idx), np.float32), np.zeros(short, np.float32)])
                    idx = np.concatenate([idx, np.repeat(idx[-1:], short)])
                # Contiguous shares in process order: Keras concatenates them so, giving the one-process batch back
                # image for image (dropout masks fall on the same images).
                n = len(idx) // self.sharding.count
                share = slice(self.sharding.index * n, (self.sharding.index + 1) * n)
            if self.augment is None:
                idx = idx[share]
                x = np.asarray(self.pixels[idx], dtype=np.float32)
            else:
                # The whole batch is augmented and this process keeps its share: the random draws are per position
                # in the batch, so a share augmented alone would differ from the one-process run.
                x = self.augment(np.asarray(self.pixels[idx], dtype=np.float32), epoch * len(self) + i)[share]
                idx = idx[share]
            if weights is None:
                return x, self.labels[idx]
            return x, self.labels[idx], weights[share]

    return _ArrayBatches


def _compiled_augmenter(augmenter, example: np.ndarray, batch_size: int):
    """``augment(x, counter)``: the random layers of ``augmenter`` as one compiled function, random by ``counter``.

    Called layer by layer, each operation of every augmentation is a separate dispatch (and under JAX a separate
    compilation per batch shape) from several worker threads at once. Compiled once through ``stateless_call``, a
    batch's augmentation is a single call, and its randomness comes from the layers' seeds and the batch's
    ``counter`` (epoch and batch index) rather than from generators the threads advance in whatever order they
    run: the same seed gives the same augmented batches however many workers there are.

    Compiling is slow (RandAugment, which computes every one of its transforms and keeps the drawn ones: about 40 s
    on a CPU), so it happens once per run: a short last batch is padded to ``batch_size`` rather than compiled for
    its own shape, and augmenters that differ only in their seeds (one per fold) share the compiled function, the
    seeds being among its inputs.
    """
    if import_keras().backend.backend() != "jax":
        run_tf = augment_batch(augmenter, example.shape[1:])
        return lambda x, counter: np.asarray(run_tf(x, counter))
    import jax

    base, seeds = _seed_states(augmenter, example.shape[1:])
    key = json.dumps([{k: v for k, v in layer.get_config().items() if k not in ("seed", "name")}
                      for layer in augmenter.layers], sort_keys=True, default=str)
    run = _JAX_AUGMENTERS.get(key)
    if run is None:
        @jax.jit
        def run(states, x):
            return augmenter.stateless_call([], states, x, training=True)[0]

        _JAX_AUGMENTERS[key] = run

    def augment(x, counter):
        states = [seed_state_at(b, counter) if seed else b for b, seed in zip(base, seeds)]
        n = len(x)
        if n == batch_size:
            return run(states, x)
        padded = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), x.dtype)])
        return np.asarray(run(states, padded))[:n]

    return augment


# Compiled JAX augmentation by the layers' configuration less seeds and names (see _compiled_augmenter).
_JAX_AUGMENTERS: dict[str, object] = {}


def _seed_states(augmenter, shape: tuple) -> tuple[list[np.ndarray], list[bool]]:
    """The values of ``augmenter``'s non-trainable variables, built for images of ``shape``, and which of them are
    seed states (whose counter the batch's counter replaces)."""
    augmenter.build((None, *shape))  # creates the layers' seed generators (a call would run it eagerly)
    variables = augmenter.non_trainable_variables
    return [np.asarray(v.value) for v in variables], [is_seed_state(v) for v in variables]


def augment_batch(augmenter, shape: tuple):
    """TensorFlow: ``augment(x, counter)``, the random layers of ``augmenter`` as stateless TensorFlow ops whose
    randomness comes from the layers' seeds and ``counter`` alone (see ``_compiled_augmenter``).

    Called through ``stateless_call``, the layers' seed generators are read, never advanced: a ``tf.data`` map
    of it holds no stateful op, so TensorFlow op determinism leaves it parallel instead of rewriting it into a
    sequential one, and the batches are the same whatever order the map's threads run in.
    """
    tf, _ = import_tf()
    base, seeds = _seed_states(augmenter, shape)

    def augment(x, counter):
        states = [tf.stack([tf.constant(b[0], b.dtype), tf.cast(counter, b.dtype)]) if seed else tf.constant(b)
                  for b, seed in zip(base, seeds)]
        return augmenter.stateless_call([], states, x, training=True)[0]

    return augment


def predict_probs(model, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Model probabilities for (N, H, W, 3) uint8 pixels, batch by batch."""
    import keras

    # Under JAX a plain call runs the model operation by operation (seconds a batch for a large backbone);
    # predict_on_batch runs it compiled. TensorFlow's eager call is what export's gate has always compared against.
    if keras.backend.backend() == "tensorflow":
        def run(x):
            return model(x, training=False)
    else:
        run = model.predict_on_batch
    out = [np.asarray(run(np.asarray(pixels[i : i + batch_size], dtype=np.float32)))
           for i in range(0, len(pixels), batch_size)]
    k = model.output_shape[-1]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, k), np.float32)
