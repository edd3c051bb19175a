"""How decoded pixels become a model's input tensor, and its output probabilities.

edgeclf's own exports bake normalisation into the graph and end in a softmax, so for them this is the identity and
costs nothing. Models adopted from elsewhere (``edgeclf adopt``: a Teachable Machine or Model Maker ``.tflite``, a
PyTorch model exported to ONNX) expect their training pipeline's scaling, channel order and layout, and may output
logits or one sigmoid unit, or take one (grayscale) channel; the artefact's metadata records which (``input``:
layout, color, mean, std, channels; ``output``: kind, units), and ``adapt_backend`` applies it at the backend
boundary, so every caller of ``Backend.run`` gets the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

# keras.applications' "caffe" mode: RGB -> BGR, then the ImageNet mean per BGR channel.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# keras.applications' "torch" mode (pixels / 255, then ImageNet mean and standard deviation per RGB channel).
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)

# How a training pipeline scaled RGB 0-255 pixels, as the CLI's --input-norm names it: (channel order, mean, std),
# model input = (pixel - mean) / std per channel, in that channel order.
INPUT_NORMS = {
    "raw": ("RGB", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "unit": ("RGB", (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
    "tf": ("RGB", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    "torch": ("RGB", tuple(255.0 * m for m in TORCH_MEAN_RGB), tuple(255.0 * s for s in TORCH_STD_RGB)),
    "caffe": ("BGR", CAFFE_MEAN_BGR, (1.0, 1.0, 1.0)),
}
# Luminance weights of Pillow's convert("L") (ITU-R 601-2): what a model trained on grayscale images was fed.
LUMA_RGB = (0.299, 0.587, 0.114)
LAYOUTS = ("NHWC", "NCHW")
COLORS = ("RGB", "BGR")
OUTPUT_KINDS = ("probabilities", "logits")
_ZERO, _ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def _triple(name: str, value) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or not all(np.isfinite(out)):
        raise ConfigError(f"Received: {name}={value!r}. Expected three numbers, one per colour channel.")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class InputTensor:
    """What a model's input tensor holds, given decoded RGB 0-255 pixels.

    Args:
        layout: ``NHWC`` or ``NCHW`` (channels first, as PyTorch exports).
        color: Channel order, ``RGB`` or ``BGR``.
        mean: Subtracted from each channel (in ``color`` order) of the 0-255 pixels.
        std: Then divided into each channel.
        channels: 3, or 1 for a model trained on grayscale images: it gets the luminance Pillow's convert("L")
            computes (``LUMA_RGB``), then ``(luma - mean[0]) / std[0]``.
    """

    layout: str = "NHWC"
    color: str = "RGB"
    mean: tuple[float, float, float] = _ZERO
    std: tuple[float, float, float] = _ONE
    channels: int = 3

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"Received: layout='{self.layout}'. Supported: {', '.join(LAYOUTS)}.")
        if self.color not in COLORS:
            raise ConfigError(f"Received: color='{self.color}'. Supported: {', '.join(COLORS)}.")
        object.__setattr__(self, "mean", _triple("mean", self.mean))
        object.__setattr__(self, "std", _triple("std", self.std))
        if any(s == 0 for s in self.std):
            raise ConfigError(f"Received: std={self.std}. Expected no zero.")
        if self.channels not in (1, 3):
            raise ConfigError(f"Received: channels={self.channels}. Supported: 1 (grayscale), 3.")
        if self.channels == 1 and (len(set(self.mean)) > 1 or len(set(self.std)) > 1):
            raise ConfigError(f"Received: mean {list(self.mean)} and std {list(self.std)} per colour channel for a "
                              "one-channel (grayscale) input. Expected the same value for every channel.")

    @classmethod
    def preset(cls, input_norm: str, layout: str = "NHWC", channels: int = 3) -> "InputTensor":
        """The tensor a pipeline named by ``--input-norm`` (one of ``INPUT_NORMS``) feeds the model."""
        if input_norm not in INPUT_NORMS:
            raise ConfigError(f"Received: input_norm='{input_norm}'. Supported: {', '.join(INPUT_NORMS)}.")
        color, mean, std = INPUT_NORMS[input_norm]
        return cls(layout, color, mean, std, channels)

    @classmethod
    def from_metadata(cls, meta_input: dict) -> "InputTensor":
        """From an artefact's ``input`` metadata; edgeclf's own exports leave out ``mean``/``std`` (the identity).

        The pixels it starts from are 0-255: ``PreprocessSpec`` refuses metadata that says otherwise.
        """
        return cls(meta_input.get("layout", "NHWC"), meta_input.get("color", "RGB"),
                   meta_input.get("mean", _ZERO), meta_input.get("std", _ONE), int(meta_input.get("channels", 3)))

    def to_metadata(self) -> dict:
        return {"layout": self.layout, "color": self.color, "mean": list(self.mean), "std": list(self.std),
                "channels": self.channels}

    @property
    def identity(self) -> bool:
        """Raw RGB pixels in NHWC: what edgeclf's own artefacts take."""
        return (self.layout == "NHWC" and self.color == "RGB" and self.mean == _ZERO and self.std == _ONE
                and self.channels == 3)

    def shape(self, height: int, width: int) -> tuple[int, int, int]:
        """The model's input shape without the batch dimension."""
        return (height, width, self.channels) if self.layout == "NHWC" else (self.channels, height, width)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) RGB pixels 0-255 -> the model's float32 input."""
        if self.identity:
            return pixels
        x = pixels.astype(np.float32)
        if self.channels == 1:
            x = (x @ np.asarray(LUMA_RGB, np.float32)[:, None] - self.mean[0]) / self.std[0]
        else:
            if self.color == "BGR":
                x = x[..., ::-1]
            x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, stable for large logits."""
    z = np.asarray(logits, np.float32)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def to_probabilities(outputs: np.ndarray, logits: bool) -> np.ndarray:
    """A model's (N, units) outputs as (N, classes) probabilities.

    One unit is a sigmoid scoring the second of two classes (Keras' ``Dense(1, activation="sigmoid")`` binary
    classifier): ``(1 - p, p)``, after a sigmoid when it outputs a logit. More units are per-class probabilities, or
    logits that a softmax turns into them.
    """
    y = np.asarray(outputs, np.float32)
    if y.shape[1] == 1:
        p = 0.5 * (1.0 + np.tanh(0.5 * y)) if logits else y  # the sigmoid, without overflow for large logits
        return np.concatenate([1.0 - p, p], axis=1)
    return softmax(y) if logits else y


class AdaptedBackend:
    """A backend whose model takes another tensor than RGB 0-255 NHWC pixels, or outputs logits or one sigmoid unit.

    ``run`` takes (N, H, W, 3) pixels 0-255 like every backend and returns one probability per class.
    """

    def __init__(self, backend, tensor: InputTensor, logits: bool, height: int, width: int):
        self.inner, self.tensor, self.logits = backend, tensor, logits
        self.metadata = backend.metadata
        self.input_dtype = backend.input_dtype
        self.model_input_shape = tuple(backend.input_shape)
        # what Classifier checks against the preprocessing contract: the pixels this backend takes
        self.input_shape = (height, width, 3) if self.model_input_shape == tensor.shape(height, width) else (
            self.model_input_shape)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        return to_probabilities(self.inner.run(self.tensor.apply(pixels)), self.logits)


def adapt_backend(backend, metadata: dict):
    """``backend`` itself for an artefact that takes raw RGB NHWC pixels and outputs one probability per class
    (every edgeclf export), else an ``AdaptedBackend`` applying the artefact's recorded input tensor and output.

    Raises:
        ConfigError: For an input or output contract the runtime does not know.
    """
    tensor = InputTensor.from_metadata(metadata.get("input") or {})
    output = metadata.get("output") or {}
    kind = output.get("kind", "probabilities")
    if kind not in OUTPUT_KINDS:
        raise ConfigError(f"Received: output kind '{kind}'. Supported: {', '.join(OUTPUT_KINDS)}.")
    if tensor.identity and kind == "probabilities" and output.get("units") != 1:
        return backend
    pre = metadata["preprocess"]
    return AdaptedBackend(backend, tensor, kind == "logits", int(pre["height"]), int(pre["width"]))
