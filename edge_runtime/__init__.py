"""Inference side of edgeclf: the preprocessing contract and CPU backends.

Never imports TensorFlow or Keras, directly or indirectly: this package is what ships to the device.
"""

from .classifier import Classification, Classifier, Prediction
from .errors import (
    BackendUnavailableError,
    ConfigError,
    DataError,
    EdgeclfError,
    ExportError,
    ImageDecodeError,
)
from .preprocess import PreprocessSpec, decode_image, load_image, preprocess_frame, resize_pixels

__all__ = [
    "BackendUnavailableError",
    "Classification",
    "Classifier",
    "ExportError",
    "Prediction",
    "ConfigError",
    "DataError",
    "EdgeclfError",
    "ImageDecodeError",
    "PreprocessSpec",
    "decode_image",
    "load_image",
    "preprocess_frame",
    "resize_pixels",
]
