"""Training-time augmentation. It runs in the tf.data input pipeline only, never inside the saved model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgeclf.edge_runtime.errors import ConfigError

FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")


@dataclass(frozen=True)
class AugmentSpec:
    """Random transforms applied to training batches.

    Args:
        flip: One of ``FLIPS``.
        rotation: Maximum rotation as a fraction of a full turn (0.05 = +/-18 degrees).
        shift: Maximum translation as a fraction of height/width.
        zoom: Maximum zoom in/out as a fraction.
        contrast: Maximum contrast change as a fraction.
        shear: Maximum shear as a fraction (Keras ImageDataGenerator's ``shear_range`` in spirit), 0 for none.
        randaugment: Use Keras' RandAugment instead of the transforms above.
    """

    flip: str = "horizontal"
    rotation: float = 0.05
    shift: float = 0.1
    zoom: float = 0.1
    contrast: float = 0.1
    randaugment: bool = False
    shear: float = 0.0

    def __post_init__(self) -> None:
        if self.flip not in FLIPS:
            raise ConfigError(f"Received: flip='{self.flip}'. Supported: {', '.join(FLIPS)}.")
        for name in ("rotation", "shift", "zoom", "contrast", "shear"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"Received: {name}={value}. Expected a fraction between 0 and 1.")

    @classmethod
    def none(cls) -> "AugmentSpec":
        """No augmentation at all."""
        return cls(flip="none", rotation=0.0, shift=0.0, zoom=0.0, contrast=0.0)

    @property
    def enabled(self) -> bool:
        return self.randaugment or self != AugmentSpec.none()

    def to_dict(self) -> dict:
        return asdict(self)


# Inputs this small (Fashion-MNIST's 28 px, CIFAR's 32) are the whole object: rotating, zooming and changing the
# contrast of them distorts more than it varies.
SMALL_INPUT = 64


def augment_for(height: int, width: int) -> tuple[AugmentSpec, str]:
    """The default augmentation for an input of ``height`` x ``width`` pixels, and why, for the run's report.

    Small inputs (at most ``SMALL_INPUT`` px a side) get a horizontal flip and shifts of up to 10 % only: on
    Fashion-MNIST at 28 px the full set (with rotation, zoom and contrast) trained clearly worse models
    (``benchmarks/results/train_vs_baseline.md``). Larger inputs get the full set, as photos of scenes vary in
    angle, distance and light.
    """
    if max(height, width) <= SMALL_INPUT:
        return (AugmentSpec(flip="horizontal", rotation=0.0, shift=0.1, zoom=0.0, contrast=0.0),
                f"flip and shift only, chosen for a {height}x{width} input (at most {SMALL_INPUT} px a side)")
    return AugmentSpec(), f"flip, rotation, shift, zoom and contrast, chosen for a {height}x{width} input"


def build_augmenter(spec: AugmentSpec, seed: int):
    """A ``keras.Sequential`` of random layers for ``spec`` (float 0-255 images in, same range out), or None."""
    if not spec.enabled:
        return None
    import keras
    from keras import layers

    if spec.randaugment:
        stack = [layers.RandAugment(value_range=(0, 255), seed=seed)]
    else:
        stack = []
        if spec.flip != "none":
            stack.append(layers.RandomFlip(spec.flip, seed=seed))
        if spec.rotation:
            stack.append(layers.RandomRotation(spec.rotation, fill_mode="reflect", seed=seed + 1))
        if spec.shift:
            stack.append(layers.RandomTranslation(spec.shift, spec.shift, fill_mode="reflect", seed=seed + 2))
        if spec.zoom:
            stack.append(layers.RandomZoom(spec.zoom, fill_mode="reflect", seed=seed + 3))
        if spec.contrast:
            stack.append(layers.RandomContrast(spec.contrast, value_range=(0, 255), seed=seed + 4))
        if spec.shear:
            stack.append(layers.RandomShear(spec.shear, spec.shear, fill_mode="reflect", seed=seed + 5))
    return keras.Sequential(stack, name="augment")
