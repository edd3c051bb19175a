"""Precise BatchNorm: a trained model's BatchNorm statistics recomputed over its training images.

During training a BatchNorm layer keeps an exponential moving average of its batch statistics, and inference
(validation, test, every exported artefact) normalises with that average. It is only right when the average has
forgotten its start (mean 0, variance 1) and follows the final weights: after a short run, on a small dataset, or
when the last batch of an epoch holds one image, it is not, and a model whose ranking is perfect decides at chance.
"Precise BN" (Wu and Johnson, *Rethinking "Batch" in BatchNorm*, 2021; fvcore's ``update_bn_stats``) replaces the
average with the population statistics of the final model: the training images, un-augmented, preprocessed as at
inference, fed in training-mode batches of the training batch size, and each layer's mean and variance pooled over
them (the variance including the spread of the batch means, so it is the population's).
"""

from __future__ import annotations

import logging

import numpy as np

from edgeclf.models.factory import nested_layers

logger = logging.getLogger(__name__)

# Enough images for the statistics to settle well below the noise of one batch; more only costs time.
MAX_IMAGES = 8192


def batchnorm_layers(model) -> list:
    """Every trainable BatchNormalization layer of ``model`` and the models nested in it."""
    from keras import layers

    return [layer for layer in nested_layers(model)
            if isinstance(layer, layers.BatchNormalization) and layer.trainable]


def recompute_batchnorm(model, pixels: np.ndarray, batch_size: int, seed: int = 0,
                        max_images: int = MAX_IMAGES) -> int:
    """Sets the moving mean and variance of every trainable BatchNorm layer of ``model`` to its population values.

    Only the BatchNorm statistics change: the batches run in training mode (each layer normalises with the batch's
    own statistics, as training did) with every Dropout layer's rate at 0, and every other weight is left as it is.
    Batches are of ``batch_size`` images (all of them, when fewer), a remainder smaller than that left out.

    Args:
        model: A Keras model taking float32 0-255 pixels.
        pixels: (N, H, W, 3) uint8 training images, decoded as for inference and not augmented.
        batch_size: The batch size the model trained at.
        seed: Chooses the images (when there are more than ``max_images``) and how they are grouped in batches.
        max_images: At most this many images are used.

    Returns:
        The number of images used (0 when the model has no trainable BatchNorm layer).
    """
    from keras import layers, ops

    bns = batchnorm_layers(model)
    n = len(pixels)
    if not bns or not n:
        return 0
    size = min(batch_size, n)
    count = min(n, max_images) // size * size
    # Batches of randomly mixed images, as training drew them: in training mode every layer normalises with its
    # batch's statistics, and a batch of one class (a dataset stored class by class) would hand the deeper layers
    # inputs unlike any they saw.
    idx = np.random.default_rng(seed).permutation(n)[:count]
    dropouts = [layer for layer in nested_layers(model) if isinstance(layer, layers.Dropout)]
    saved = [(bn.momentum, ops.convert_to_numpy(bn.moving_mean), ops.convert_to_numpy(bn.moving_variance))
             for bn in bns]
    rates = [d.rate for d in dropouts]
    sums = [[0.0, 0.0] for _ in bns]  # per layer: sum of batch means, sum of (batch variance + batch mean ** 2)
    try:
        for bn in bns:
            bn.momentum = 0.0  # each call leaves exactly that batch's statistics in the moving variables
        for d in dropouts:
            d.rate = 0.0
        batches = 0
        for start in range(0, count, size):
            x = np.asarray(pixels[np.sort(idx[start:start + size])], dtype=np.float32)  # sorted: memory-map reads
            model(x, training=True)
            for acc, bn in zip(sums, bns):
                mean = np.asarray(ops.convert_to_numpy(bn.moving_mean), dtype=np.float64)
                var = np.asarray(ops.convert_to_numpy(bn.moving_variance), dtype=np.float64)
                acc[0] = acc[0] + mean
                acc[1] = acc[1] + var + mean**2
            batches += 1
    except BaseException:
        for bn, (_, mean, var) in zip(bns, saved):
            bn.moving_mean.assign(mean)
            bn.moving_variance.assign(var)
        raise
    finally:
        for bn, (momentum, _, _) in zip(bns, saved):
            bn.momentum = momentum
        for d, rate in zip(dropouts, rates):
            d.rate = rate
    for acc, bn in zip(sums, bns):
        mean = acc[0] / batches
        bn.moving_mean.assign(mean.astype(np.float32))
        bn.moving_variance.assign(np.maximum(acc[1] / batches - mean**2, 0.0).astype(np.float32))
    logger.info("Recomputed the statistics of %d BatchNorm layers over %d training images", len(bns), count)
    return count
