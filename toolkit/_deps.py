"""Lazy imports of the heavy training dependencies, with the install command when they are missing."""

from __future__ import annotations

import os
import sys

from edgeclf.edge_runtime.errors import missing_dependency
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
    """Imports TensorFlow (quietly) and returns ``(tf, keras)``.

    Raises:
        BackendUnavailableError: If TensorFlow or Keras is not installed.
    """
    tf, keras = sys.modules.get("tensorflow"), sys.modules.get("keras")
    if tf is not None and keras is not None:  # imported already: nothing to quieten
        return tf, keras
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        no_gpu = not os.path.exists("/dev/nvidiactl")
        with quiet_native_log(TF_NOTICES + (NO_GPU_NOTICES if no_gpu else ())):
            import tensorflow as tf
            import keras

            tf.config.list_physical_devices()  # the device probe prints its CUDA lines here, not mid-command
    except ImportError as exc:
        raise missing_dependency(exc.name or "tensorflow", "train", exc) from None
    return tf, keras


def import_pyplot():
    """Imports matplotlib with the non-interactive Agg backend and returns ``pyplot``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise missing_dependency("matplotlib", "train", exc) from None
    return plt
