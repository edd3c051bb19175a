"""Lazy imports of the heavy training dependencies, with the install command when they are missing."""

from __future__ import annotations

import os

from edgeclf.edge_runtime.errors import missing_dependency


def import_tf():
    """Imports TensorFlow (quietly) and returns ``(tf, keras)``.

    Raises:
        BackendUnavailableError: If TensorFlow or Keras is not installed.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import keras
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
