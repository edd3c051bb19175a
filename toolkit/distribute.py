"""``edgeclf train --distribute data-parallel``: one model replicated on every device, each batch split among them.

On Keras' JAX backend this is ``keras.distribution.DataParallel`` over every local accelerator (or the host devices
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` makes), and over several hosts when the launcher sets
Keras' variables (``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``KERAS_DISTRIBUTION_NUM_PROCESSES``,
``KERAS_DISTRIBUTION_PROCESS_ID``): ``keras.distribution.initialize`` joins them before anything runs on JAX. Each
process feeds its own share of every global batch (``Sharding``); Keras assembles the global batch from them.

On TensorFlow, ``tf.distribute.MirroredStrategy`` over the local GPUs. Multi-worker training with Keras 3 is broken
upstream (keras-team/keras#20585), so a TensorFlow job with ``TF_CONFIG`` set is refused.

The distribution covers fitting only: the model is created under it (its variables replicated on every device) and
evaluated, recomputed and saved as one model, so the saved file is the same as a one-device run's.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from edgeclf.edge_runtime.errors import ConfigError

DISTRIBUTE = ("none", "data-parallel")
_KERAS_ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID")


@dataclass(frozen=True)
class Sharding:
    """This process's share of every batch: the ``index``-th of ``count`` equal contiguous parts (one process: all
    of it); ``pad_to``:
    batches are padded with zero-weight images to a multiple of it (the device count), so that no device gets
    a short or empty slice of a validation batch."""

    index: int = 0
    count: int = 1
    pad_to: int = 1


@dataclass(frozen=True)
class Distribution:
    """What ``setup`` chose: the devices, the processes and this one's index, and how to enter it for fitting."""

    kind: str
    devices: int
    processes: int
    process_index: int
    backend: str
    strategy: object = None

    @property
    def sharding(self) -> Sharding:
        return Sharding(self.process_index, self.processes, self.devices)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "devices": self.devices, "processes": self.processes, "backend": self.backend}

    @contextlib.contextmanager
    def fitting(self, keras):
        """Models created and fitted inside use every device."""
        if self.backend == "jax":
            previous = keras.distribution.distribution()
            devices = keras.distribution.list_devices()
            # auto_shard_dataset works on tf.data only; the JAX pipeline hands each process its share itself
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices,
                                                                                auto_shard_dataset=False))
            try:
                yield
            finally:
                keras.distribution.set_distribution(previous)
        else:
            with self.strategy.scope():
                yield


def _multi_process_env() -> int:
    value = os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES")
    if value is None:
        return 1
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"Received: KERAS_DISTRIBUTION_NUM_PROCESSES={value!r}. Expected a whole number.") from None
    if n < 1:
        raise ConfigError(f"Received: KERAS_DISTRIBUTION_NUM_PROCESSES={n}. Expected at least 1.")
    return n


def setup(keras, mode: str) -> Distribution | None:
    """Joins the other processes (multi-host JAX) and finds the devices; None for ``mode`` ``none``.

    Call it before anything runs on the backend: ``jax.distributed.initialize`` must come first.

    Raises:
        ConfigError: For an unknown mode, a TensorFlow multi-worker job, or a multi-process job without its
            coordinator's address.
    """
    if mode not in DISTRIBUTE:
        raise ConfigError(f"Received: distribute='{mode}'. Supported: {', '.join(DISTRIBUTE)}.")
    if mode == "none":
        return None
    backend = keras.backend.backend()
    if backend == "jax":
        processes = _multi_process_env()
        if processes > 1:
            missing = [v for v in _KERAS_ENV if v not in os.environ]
            if missing:
                raise ConfigError(f"KERAS_DISTRIBUTION_NUM_PROCESSES is {processes} but {', '.join(missing)} "
                                  "is not set. Set all three (docs/scaling.md), as a launcher such as SLURM's "
                                  "srun would.")
        import jax

        if processes > 1 and not jax.distributed.is_initialized():
            keras.distribution.initialize()
        devices = len(keras.distribution.list_devices())
        return Distribution("data-parallel (keras.distribution.DataParallel)", devices, processes,
                            jax.process_index(), backend)
    if backend == "tensorflow":
        if os.environ.get("TF_CONFIG"):
            cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
            raise ConfigError(f"TF_CONFIG names a {sum(len(v) for v in cluster.values())}-worker cluster: multi-worker "
                              "training with Keras 3 on TensorFlow is broken upstream (keras-team/keras#20585). "
                              "Train on one host, or on the JAX backend (KERAS_BACKEND=jax) with "
                              "keras.distribution (docs/scaling.md).")
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        return Distribution("data-parallel (tf.distribute.MirroredStrategy)", strategy.num_replicas_in_sync, 1, 0,
                            backend, strategy)
    raise ConfigError(f"Received --distribute {mode} on the {backend} backend. Supported: jax, tensorflow.")


def global_batch(batch_size: int, devices: int) -> tuple[int, str | None]:
    """The batch size rounded down to a multiple of the device count (at least one image per device), and a note
    when it changed: every device takes an equal slice of each batch."""
    if batch_size % devices == 0:
        return batch_size, None
    fitted = max(devices, batch_size // devices * devices)
    return fitted, (f"batch size {batch_size} is not a multiple of the {devices} devices: {fitted} instead, "
                    f"{fitted // devices} per device")
