"""Builds a complete classifier (normalisation + backbone + head) from a ``ModelSpec``."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field

from edgeclf.edge_runtime.errors import ConfigError
from edgeclf.edge_runtime.tensor import CAFFE_MEAN_BGR, TORCH_MEAN_RGB, TORCH_STD_RGB

from .backbones import NORMALISATIONS, get_backbone

logger = logging.getLogger(__name__)

POOLINGS = ("gap", "flatten")
BACKBONE_LAYER = "backbone"


def check_img_size(value) -> int | tuple[int, int]:
    """An input size as the specs keep it: an int for a square input, ``(height, width)`` for any other.

    Args:
        value: An int (square side), or a ``(height, width)`` pair (a list, as JSON gives it back, too).

    Raises:
        ConfigError: For anything but one or two positive integers.
    """
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(pair) not in (1, 2) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ConfigError(f"Received: img_size={value!r}. Expected a positive integer (a square input) or a "
                          "(height, width) pair of them.")
    return pair[0] if len(set(pair)) == 1 else pair


def img_hw(img_size: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of an input size ``check_img_size`` returned."""
    return (img_size, img_size) if isinstance(img_size, int) else (img_size[0], img_size[1])


def format_img_size(img_size: int | tuple[int, int]) -> str:
    """``224px`` for a square input, ``160x288px`` (height x width) for another."""
    return f"{img_size}px" if isinstance(img_size, int) else f"{img_size[0]}x{img_size[1]}px"


@dataclass(frozen=True)
class HeadSpec:
    """The classification head on top of the backbone.

    Args:
        pooling: ``"gap"`` (GlobalAveragePooling2D) or ``"flatten"``.
        dense: Units of the hidden Dense(ReLU) layers, in order; empty for a linear head.
        dropout: Dropout rate before each Dense layer (hidden and output), 0 to disable.
        dropouts: Instead of ``dropout``: one rate per hidden Dense layer, applied right after it (0 for none),
            to reproduce heads such as Flatten -> Dense256 -> Dropout0.5 -> Dense128 -> output.
    """

    pooling: str = "gap"
    dense: tuple[int, ...] = ()
    dropout: float = 0.2
    dropouts: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"Received: pooling='{self.pooling}'. Supported: {', '.join(POOLINGS)}.")
        object.__setattr__(self, "dense", tuple(int(u) for u in self.dense))
        if any(u < 1 for u in self.dense):
            raise ConfigError(f"Received: dense={self.dense}. Expected positive layer widths.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"Received: dropout={self.dropout}. Expected 0 <= dropout < 1.")
        if self.dropouts is not None:
            object.__setattr__(self, "dropouts", tuple(float(r) for r in self.dropouts))
            if len(self.dropouts) != len(self.dense) or any(not 0.0 <= r < 1.0 for r in self.dropouts):
                raise ConfigError(f"Received: dropouts={self.dropouts} for dense={self.dense}. Expected one rate "
                                  "0 <= rate < 1 per hidden Dense layer.")

    def plan(self) -> list[tuple[str, float, str]]:
        """The layers between pooling and the output, in order: ``("dropout", rate, name)`` or
        ``("dense", units, name)``. ``create_model`` builds them and the run report describes them."""
        layers = []
        for i, units in enumerate(self.dense):
            if self.dropouts is None and self.dropout:
                layers.append(("dropout", self.dropout, f"head_dropout_{i}"))
            layers.append(("dense", units, f"head_dense_{i}"))
            if self.dropouts is not None and self.dropouts[i]:
                layers.append(("dropout", self.dropouts[i], f"head_dropout_{i}"))
        if self.dropouts is None and self.dropout:
            layers.append(("dropout", self.dropout, "head_dropout_out"))
        return layers

    def describe(self, num_classes: int) -> str:
        """The head as its layers, e.g. ``GlobalAveragePooling -> Dropout 0.2 -> Dense 256 ReLU -> Dense 2 softmax``."""
        parts = ["GlobalAveragePooling" if self.pooling == "gap" else "Flatten"]
        parts += [f"Dropout {v:g}" if kind == "dropout" else f"Dense {v} ReLU" for kind, v, _ in self.plan()]
        return " -> ".join(parts + [f"Dense {num_classes} softmax"])


@dataclass(frozen=True)
class ModelSpec:
    """What model to build.

    Args:
        backbone: A registered backbone name.
        num_classes: Number of classes, at least 2. The model outputs one probability per class (softmax).
        img_size: Input side of a square input, or ``(height, width)``; None uses the backbone's (square) default.
        weights: ``"imagenet"``, ``"none"`` or a path to a ``.weights.h5`` file for the backbone.
        head: The head configuration.
        normalisation: Overrides the backbone's own input normalisation (``unit``, ``tf``, ``caffe``,
            ``in_model``); None keeps it. Recipes use it to reproduce originals that scaled pixels to 0-1 in front
            of a backbone that expects something else.
    """

    backbone: str
    num_classes: int
    img_size: int | tuple[int, int] | None = None
    weights: str = "imagenet"
    head: HeadSpec = field(default_factory=HeadSpec)
    normalisation: str | None = None

    def __post_init__(self) -> None:
        bb = get_backbone(self.backbone)
        if self.num_classes < 2:
            raise ConfigError(f"Received: num_classes={self.num_classes}. A classifier needs at least 2 classes.")
        size = bb.default_size if self.img_size is None else check_img_size(self.img_size)
        object.__setattr__(self, "img_size", size)
        if min(img_hw(size)) < bb.min_size:
            raise ConfigError(f"Received: img_size={format_img_size(size)} for {bb.name}. Expected at least "
                              f"{bb.min_size} pixels on each side.")
        if self.weights not in ("imagenet", "none") and not os.path.isfile(self.weights):
            raise ConfigError(
                f"Received: weights='{self.weights}'. Expected 'imagenet', 'none' or the path of an existing "
                "weights file (.weights.h5)."
            )
        if self.normalisation is not None and self.normalisation not in NORMALISATIONS:
            raise ConfigError(f"Received: normalisation='{self.normalisation}'. Supported: {', '.join(NORMALISATIONS)}.")
        if self.normalisation not in (None, "in_model") and bb.normalisation == "in_model":
            raise ConfigError(f"Received: normalisation='{self.normalisation}' for {bb.name}, which normalises inside "
                              "the application itself; it cannot be replaced.")
        if self.weights == "imagenet" and not bb.pretrained:
            raise ConfigError(
                f"Received: weights='imagenet' for {bb.name}, which has no pretrained weights. Use --weights none."
            )

    @property
    def height(self) -> int:
        return img_hw(self.img_size)[0]

    @property
    def width(self) -> int:
        return img_hw(self.img_size)[1]

    @property
    def pretrained(self) -> bool:
        """Whether the backbone starts from trained weights (and so is trained in two phases)."""
        return self.weights != "none"

    def to_dict(self) -> dict:
        d = asdict(self)
        if not isinstance(self.img_size, int):
            d["img_size"] = list(self.img_size)
        d["head"]["dense"] = list(self.head.dense)
        if self.head.dropouts is not None:
            d["head"]["dropouts"] = list(self.head.dropouts)
        return d

    @property
    def input_normalisation(self) -> str:
        """The normalisation baked into the graph: the override, else the backbone's."""
        return self.normalisation or get_backbone(self.backbone).normalisation

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        d = dict(d)
        d["head"] = HeadSpec(**d.get("head", {}))
        return cls(**d)


def normalise_per_channel(x, mean, std, name: str, bgr: bool = False):
    """``(x[c] - mean[c]) / std[c]`` per channel of a float32 0-255 tensor (channels reversed first with ``bgr``),
    as one fixed 1x1 convolution: exact, and it converts and quantises like any layer. (A ``Normalization`` layer
    does not: tf2onnx leaves its mean and variance as inputs the ONNX model asks to be fed.)
    """
    import numpy as np
    from keras import layers

    channels = len(mean)
    layer = layers.Conv2D(channels, 1, name=name, trainable=False)
    y = layer(x)
    kernel = np.zeros((1, 1, channels, channels), dtype="float32")
    for out_channel in range(channels):
        kernel[0, 0, channels - 1 - out_channel if bgr else out_channel, out_channel] = 1.0 / std[out_channel]
    layer.set_weights([kernel, -np.asarray(mean, dtype="float32") / np.asarray(std, dtype="float32")])
    return y


def normalise(x, kind: str, name: str = "normalise"):
    """Applies one of ``NORMALISATIONS`` to a float32 RGB 0-255 tensor as built-in layers (``in_model``: none).

    Built-in layers only, so a model that contains them still loads with safe_mode on and converts and quantises
    like any other layer, unlike a Lambda around ``preprocess_input``.
    """
    from keras import layers

    if kind == "unit":
        return layers.Rescaling(1.0 / 255.0, name=name)(x)
    if kind == "tf":
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)(x)
    if kind == "caffe":  # RGB -> BGR, minus the ImageNet mean
        return normalise_per_channel(x, CAFFE_MEAN_BGR, (1.0, 1.0, 1.0), name, bgr=True)
    if kind == "torch":  # x / 255, minus the ImageNet mean, over its standard deviation
        return normalise_per_channel(x, [255.0 * m for m in TORCH_MEAN_RGB], [255.0 * s for s in TORCH_STD_RGB], name)
    if kind == "in_model":
        return x
    raise ConfigError(f"Received: normalisation='{kind}'. Supported: {', '.join(NORMALISATIONS)}.")


def _build_backbone(spec: ModelSpec, input_shape, steps_per_epoch: int | None = None):
    bb = get_backbone(spec.backbone)
    weights = "imagenet" if spec.weights == "imagenet" else None
    try:
        base = bb.build(input_shape, weights)
    except ConfigError:
        raise
    except Exception as exc:  # Keras raises plain Exception/OSError/ValueError for failed downloads
        if weights == "imagenet":
            raise ConfigError(
                f"Could not get the ImageNet weights for {bb.name} ({type(exc).__name__}: {exc}). "
                "Keras downloads them, which needs internet access. Use --weights none to train from scratch, "
                "or --weights PATH with that file downloaded on another machine (or a .weights.h5 file saved "
                "from this backbone)."
            ) from exc
        raise
    if spec.weights not in ("imagenet", "none"):
        _load_weights_file(base, spec.weights, bb.name)
    if spec.weights == "none":
        _scratch_batchnorm(base, scratch_bn_momentum(steps_per_epoch))
    base.name = BACKBONE_LAYER
    return base


def check_weights(spec: ModelSpec) -> None:
    """Builds the backbone with its weights once and throws it away, so that weights that cannot be had (an ImageNet
    download that fails offline, a file that does not fit) fail before anything slow, such as decoding a dataset.

    Raises:
        ConfigError: As ``create_model`` would for the same spec.
    """
    if spec.weights == "none":
        return
    import keras

    _build_backbone(spec, (spec.height, spec.width, 3))
    keras.backend.clear_session()


def _load_weights_file(base, path: str, name: str) -> None:
    """Loads a weights file into the backbone, all of it or not at all.

    Takes a ``.weights.h5`` file saved from the same backbone, or Keras' own ImageNet file for it (the legacy
    ``.h5`` that ``weights="imagenet"`` downloads, fetched on a machine with internet).

    Raises:
        ConfigError: In one line, when the file does not fit the backbone, or when Keras loaded only part of it
            (it warns that the rest "will retain their freshly-initialized weights": never trained on silently).
    """
    try:
        with whole_load():
            base.load_weights(path)
    except Exception as exc:
        detail = " ".join((str(exc) or type(exc).__name__).split("List of objects that could not be loaded")[0].split())
        raise ConfigError(
            f"Could not load backbone weights from '{path}' into {name}: {detail.rstrip('. ')}. Expected a "
            ".weights.h5 file saved from the same backbone, or Keras' ImageNet .h5 file for it."
        ) from exc


class PartialLoadError(ValueError):
    """Keras loaded a file only in part: some layers kept their freshly initialised (random) weights."""


@contextlib.contextmanager
def whole_load():
    """Wraps a Keras weights or model load that must load every weight or fail.

    Keras 3.15 only warns ("Skipping nested container ... Affected layers will retain their freshly-initialized
    weights") when a file written by an older Keras lacks the weights of layers nested in containers, and goes on
    with those layers random. Inside this block that warning raises ``PartialLoadError`` (with Keras' message)
    when the block ends; every other warning is passed on as Keras raised it.
    """
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:  # also when the load raised: its other warnings still reach the caller's filters
        for w in caught:
            if not _partial_load(w):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    partial = next((w for w in caught if _partial_load(w)), None)
    if partial is not None:
        raise PartialLoadError(str(partial.message))


def _partial_load(w) -> bool:
    return issubclass(w.category, UserWarning) and "freshly-initialized weights" in str(w.message)


SCRATCH_BN_MOMENTUM = 0.99


def scratch_bn_momentum(steps_per_epoch: int | None) -> float:
    """BatchNorm momentum for a backbone trained from scratch at ``steps_per_epoch`` steps an epoch.

    The moving statistics must forget their initial values (mean 0, variance 1) within about one epoch, or
    validation - which runs in inference mode - scores a model the training loop never saw: the bundled two-class
    demo (560 images, batch 32, 18 steps) validated at 50 % for most of its epochs at 0.99, and early stopping and
    the learning-rate schedule acted on that. So ``momentum ** steps_per_epoch <= 0.05``, at most 0.99 (large
    datasets) and at least 0.8 (statistics of very few batches are noisy).
    """
    if not steps_per_epoch:
        return SCRATCH_BN_MOMENTUM
    return float(min(SCRATCH_BN_MOMENTUM, max(0.8, 0.05 ** (1.0 / steps_per_epoch))))


def nested_layers(model):
    """Every layer of ``model`` and of the models nested in it, depth first."""
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from nested_layers(layer)


def _scratch_batchnorm(base, momentum: float) -> None:
    """Faster-moving BatchNorm statistics for a backbone trained from scratch.

    Keras' MobileNetV2 and MobileNetV3 use momentum 0.999 (the others 0.99) — right for fine-tuning ImageNet
    statistics over a long schedule, wrong from scratch: after one epoch of ~800 steps the moving averages are still
    45 % their initial values (0.999**800), so inference-mode outputs (validation, export) are garbage while training
    accuracy looks fine. 0.99 converges in a few hundred steps; fewer steps an epoch need a lower momentum
    (``scratch_bn_momentum``).
    """
    from keras import layers

    for layer in nested_layers(base):
        if isinstance(layer, layers.BatchNormalization) and layer.momentum > momentum:
            layer.momentum = momentum


def create_model(spec: ModelSpec, steps_per_epoch: int | None = None):
    """Builds the classifier described by ``spec``.

    The model takes float32 RGB pixels 0-255 of shape (batch, height, width, 3) and outputs float32
    per-class probabilities. The backbone is the nested model named ``"backbone"``.

    Args:
        spec: What to build.
        steps_per_epoch: Training steps an epoch, when known: a backbone trained from scratch gets BatchNorm
            momentum to match (``scratch_bn_momentum``).

    Returns:
        A ``keras.Model``.

    Raises:
        ConfigError: For an unusable weights choice (failed download, incompatible file).
    """
    import keras
    from keras import layers

    bb = get_backbone(spec.backbone)
    shape = (spec.height, spec.width, 3)
    inputs = keras.Input(shape, name="pixels", dtype="float32")
    x = normalise(inputs, spec.input_normalisation)
    base = _build_backbone(spec, shape, steps_per_epoch)
    x = base(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x) if spec.head.pooling == "gap" else layers.Flatten(name="pool")(x)
    for kind, value, name in spec.head.plan():
        x = (layers.Dropout(value, name=name) if kind == "dropout" else
             layers.Dense(value, activation="relu", name=name))(x)
    # float32 output even under mixed precision: softmax in float16 is numerically poor.
    outputs = layers.Dense(spec.num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"edgeclf_{bb.name}")


def get_backbone_model(model):
    """The nested backbone model inside a model built by ``create_model``."""
    return model.get_layer(BACKBONE_LAYER)
