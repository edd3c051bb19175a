"""Lazy imports of the heavy training dependencies, with the install command when they are missing."""

from __future__ import annotations

import os
import sys

from edgeclf.edge_runtime.errors import BackendUnavailableError, ConfigError, missing_dependency
from edgeclf.edge_runtime.native_log import quiet_native_log

# Printed by TensorFlow's C++ side on import and on the first device probe, before TF_CPP_MIN_LOG_LEVEL applies
# (absl logging is not initialised yet). The CUDA lines only appear on machines without a usable GPU, where
# training already says it runs on the CPU.
TF_NOTICES = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine, GPU will not be used",
)
# cuInit failing is noise where there is no NVIDIA device at all, and the diagnosis where there is one.
NO_GPU_NOTICES = ("failed call to cuInit",)


def import_tf():
    """Imports TensorFlow (quietly) and returns ``(tf, keras)``, Keras on its TensorFlow backend.

    Raises:
        BackendUnavailableError: If TensorFlow or Keras is not installed.
        ConfigError: If Keras runs on another backend (``KERAS_BACKEND``).
    """
    tf, keras = sys.modules.get("tensorflow"), sys.modules.get("keras")
    if tf is None or keras is None:  # not imported yet: import quietly
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            no_gpu = not os.path.exists("/dev/nvidiactl")
            with quiet_native_log(TF_NOTICES + (NO_GPU_NOTICES if no_gpu else ())):
                import tensorflow as tf
                import keras

                tf.config.list_physical_devices()  # the device probe prints its CUDA lines here, not mid-command
        except ImportError as exc:
            raise missing_dependency(exc.name or "tensorflow", "train", exc) from None
    if keras.backend.backend() != "tensorflow":  # export converts through TensorFlow graphs
        raise ConfigError(f"This command needs Keras' TensorFlow backend; KERAS_BACKEND is "
                          f"'{keras.backend.backend()}'. Unset KERAS_BACKEND (a model trained on JAX exports as it is).")
    return tf, keras


# Keras backends edgeclf trains on. TensorFlow (the default) feeds batches through tf.data; JAX through a PyDataset,
# without TensorFlow installed at all (export still needs TensorFlow; a .keras file is the same on every backend).
TRAIN_BACKENDS = ("tensorflow", "jax")
JAX_DETERMINISM_FLAG = "--xla_gpu_deterministic_ops=true"


def import_keras(deterministic: bool = False):
    """Imports Keras for training and returns it, on the backend ``KERAS_BACKEND`` names (TensorFlow by default).

    Args:
        deterministic: Under JAX, add ``--xla_gpu_deterministic_ops=true`` to ``XLA_FLAGS`` before JAX is imported
            (TensorFlow's op determinism is switched on by the trainer instead).

    Raises:
        BackendUnavailableError: If Keras or the backend's library is not installed.
        ConfigError: For a backend edgeclf does not train on, or determinism asked of a JAX already imported
            without the flag on a machine with a GPU.
    """
    keras = sys.modules.get("keras")
    if keras is None:
        requested = os.environ.get("KERAS_BACKEND", "tensorflow")
        if requested == "tensorflow":
            try:
                return import_tf()[1]
            except ConfigError:  # no KERAS_BACKEND, but ~/.keras/keras.json names another backend
                requested = sys.modules["keras"].backend.backend()
        if requested not in TRAIN_BACKENDS:
            raise _untrained_backend(requested)
        if requested == "jax" and deterministic and "jax" not in sys.modules:
            flags = os.environ.get("XLA_FLAGS", "")
            if "xla_gpu_deterministic_ops" not in flags:
                os.environ["XLA_FLAGS"] = f"{flags} {JAX_DETERMINISM_FLAG}".strip()
        try:
            import keras
        except ImportError as exc:
            if (exc.name or "").startswith("jax"):
                raise BackendUnavailableError(
                    f"KERAS_BACKEND=jax but JAX is not installed ({exc}). Install it with: pip install 'jax[cuda13]' "
                    "(NVIDIA GPU) or pip install jax (CPU); or unset KERAS_BACKEND to train on TensorFlow.") from None
            raise missing_dependency(exc.name or "keras", "train", exc) from None
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return import_tf()[1]
    if backend not in TRAIN_BACKENDS:
        raise _untrained_backend(backend)
    if (backend == "jax" and deterministic and JAX_DETERMINISM_FLAG not in os.environ.get("XLA_FLAGS", "")
            and gpu_names(keras)):
        raise ConfigError("JAX was imported before determinism could be asked of it. Set XLA_FLAGS="
                          f"{JAX_DETERMINISM_FLAG} before importing it, or train with --no-deterministic.")
    return keras


def _untrained_backend(name: str) -> ConfigError:
    return ConfigError(f"Received: KERAS_BACKEND='{name}'. edgeclf trains on: {', '.join(TRAIN_BACKENDS)}.")


def gpu_names(keras) -> list[str]:
    """The GPUs the Keras backend will train on, by model name ("NVIDIA H100 80GB HBM3"); empty on a CPU."""
    if keras.backend.backend() == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform == "gpu"]
    tf, _ = import_tf()
    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
    return names


def import_pyplot():
    """Imports matplotlib with the non-interactive Agg backend and returns ``pyplot``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise missing_dependency("matplotlib", "train", exc) from None
    return plt
