"""Backbone registry: what each backbone is, its default input size and the normalisation it expects.

Nothing here imports Keras at import time, so ``edgeclf`` can list backbones with only the runtime installed.
Each backbone's normalisation is baked into the model graph with built-in layers only (no ``Lambda``), so every
model and every exported artefact takes RGB pixels 0-255 and loads with Keras ``safe_mode`` on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgeclf.edge_runtime.errors import ConfigError
from edgeclf.edge_runtime.registry import Registry

# Normalisations, named after ``keras.applications.imagenet_utils.preprocess_input`` modes.
#   unit:  x / 255                        (simple_cnn)
#   tf:    x / 127.5 - 1                  (MobileNetV2)
#   caffe: RGB -> BGR, minus ImageNet mean (VGG16/19, ResNet50)
#   torch: x / 255, minus ImageNet mean, over its standard deviation (DenseNet; many PyTorch-trained ports)
#   in_model: the Keras application normalises inside itself (MobileNetV3, EfficientNet)
NORMALISATIONS = ("unit", "tf", "caffe", "torch", "in_model")


@dataclass(frozen=True)
class Backbone:
    """A feature extractor the model builder can put under a classification head.

    Args:
        name: Registry name, e.g. ``"mobilenet_v2"``.
        default_size: Square input size used when ``--img-size`` is not given.
        normalisation: One of ``NORMALISATIONS``.
        build: ``build(input_shape, weights) -> keras.Model`` without its top; ``weights`` is ``"imagenet"`` or None.
        pretrained: Whether ImageNet weights exist.
        min_size: Smallest input side the architecture accepts.
        description: One line for ``edgeclf backbones``.
    """

    name: str
    default_size: int
    normalisation: str
    build: Callable
    pretrained: bool = True
    min_size: int = 32
    description: str = ""

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS:
            raise ConfigError(
                f"Received: normalisation='{self.normalisation}'. Supported: {', '.join(NORMALISATIONS)}."
            )


BACKBONES: Registry[Backbone] = Registry("backbone")


def register_backbone(backbone: Backbone) -> Backbone:
    """Adds a backbone to the registry (raises on a duplicate name)."""
    return BACKBONES.register(backbone.name, backbone)


def get_backbone(name: str) -> Backbone:
    """Returns the named backbone, or raises ConfigError listing the valid names and a close match."""
    return BACKBONES.get(name)


def list_backbones(pattern: str = "*") -> list[str]:
    """Names of registered backbones matching a shell-style pattern (``"mobilenet*"``)."""
    return BACKBONES.names(pattern)


def _refuse_pretrained(name: str, weights) -> None:
    if weights is not None:
        raise ConfigError(f"Received: weights='imagenet' for {name}. It has no pretrained weights: use --weights none.")


def _conv_bn_cnn(name: str, widths: tuple[int, ...]):
    """Blocks of two Conv(3x3)-BN-ReLU layers, ``widths`` filters a block, each block but a too-small one
    followed by MaxPool(2)."""

    def build(input_shape, weights):
        import keras
        from keras import layers

        _refuse_pretrained(name, weights)
        inputs = keras.Input(input_shape)
        x = inputs
        for filters in widths:
            for _ in range(2):
                x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
                x = layers.BatchNormalization()(x)
                x = layers.ReLU()(x)
            if min(x.shape[1], x.shape[2]) >= 2:
                x = layers.MaxPooling2D(2)(x)
        return keras.Model(inputs, x, name=name)

    return build


def _plain_cnn(name: str, blocks: tuple[tuple[int, int], ...]):
    """Conv(3x3, ReLU, valid) + MaxPool(pool) blocks as in the original notebooks; pool 0 means no pooling."""

    def build(input_shape, weights):
        import keras
        from keras import layers

        _refuse_pretrained(name, weights)
        inputs = keras.Input(input_shape)
        x = inputs
        for filters, pool in blocks:
            x = layers.Conv2D(filters, 3, activation="relu")(x)
            if pool:
                x = layers.MaxPooling2D(pool)(x)
        return keras.Model(inputs, x, name=name)

    return build


def _application(factory_name: str, **extra):
    def build(input_shape, weights):
        import keras

        factory = getattr(keras.applications, factory_name)
        return factory(include_top=False, weights=weights, input_shape=input_shape, **extra)

    return build


for _backbone in (
    Backbone("simple_cnn", 64, "unit", _conv_bn_cnn("simple_cnn", (32, 64, 128)), pretrained=False, min_size=8,
             description="3 Conv-BN-ReLU blocks (32/64/128 filters) for training from scratch"),
    # Wider where the image is small: at 14 and 7 px the cost of a filter is a quarter and a sixteenth of its cost at
    # 28 px, so 4x the filters there cost about twice simple_cnn's time for 3.7x its parameters.
    Backbone("wide_cnn", 32, "unit", _conv_bn_cnn("wide_cnn", (32, 128, 256)), pretrained=False, min_size=8,
             description="3 Conv-BN-ReLU blocks (32/128/256 filters) for small images from scratch"),
    Backbone("helmet_cnn", 200, "unit", _plain_cnn("helmet_cnn", ((32, 4), (64, 2), (128, 0))), pretrained=False,
             min_size=34, description="Conv32-Pool4-Conv64-Pool2-Conv128 (the helmet notebook's CNN)"),
    Backbone("aiart_cnn", 128, "unit", _plain_cnn("aiart_cnn", ((32, 2), (64, 2))), pretrained=False, min_size=16,
             description="Conv32-Pool2-Conv64-Pool2 (the real-vs-AI-art notebook's CNN)"),
    Backbone("vgg16", 224, "caffe", _application("VGG16"), description="VGG16 (138M params with top; 14.7M base)"),
    Backbone("vgg19", 224, "caffe", _application("VGG19"), description="VGG19 (20M param base)"),
    Backbone("resnet50", 224, "caffe", _application("ResNet50"), description="ResNet50 (23.6M param base)"),
    Backbone("mobilenet_v2", 224, "tf", _application("MobileNetV2"), description="MobileNetV2 1.0 (2.3M param base)"),
    Backbone("mobilenet_v3_small", 224, "in_model",
             _application("MobileNetV3Small", include_preprocessing=True),
             description="MobileNetV3-Small (0.9M param base)"),
    Backbone("mobilenet_v3_large", 224, "in_model",
             _application("MobileNetV3Large", include_preprocessing=True),
             description="MobileNetV3-Large (3.0M param base)"),
    Backbone("efficientnet_b0", 224, "in_model", _application("EfficientNetB0"),
             description="EfficientNet-B0 (4.0M param base)"),
):
    register_backbone(_backbone)
