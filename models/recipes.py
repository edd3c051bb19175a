"""Recipes: the five reference systems users built by hand, as named, overridable training configurations.

A recipe is data - backbone, input size, head, normalisation, training settings - plus the builder its backbone
needs (``helmet_cnn`` and ``aiart_cnn`` are registered backbones). Where the original had a flaw its authors
named, the recipe reproduces the original and a ``-fixed`` variant applies the fix; ``edgeclf recipes`` shows both.

    edgeclf recipes
    edgeclf train data/helmets --recipe helmet-vgg16-fixed --epochs 5 --out runs/helmet

Recipes are registered as builders so that importing this module does not import the trainer (which imports
``edgeclf.models``); ``get_recipe`` builds the spec on demand.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable

from edgeclf.edge_runtime.registry import Registry

from .factory import HeadSpec, ModelSpec

if TYPE_CHECKING:  # toolkit.train imports models at run time; the annotation only needs the name
    from edgeclf.toolkit.train import TrainSpec


@dataclass(frozen=True)
class Recipe:
    """A named training configuration.

    Args:
        name: Registry name.
        description: One line for ``edgeclf recipes``.
        backbone: Registered backbone.
        img_size: Square input size.
        weights: ``imagenet`` or ``none``.
        head: Classification head.
        normalisation: Input normalisation override (None: the backbone's own).
        train: Training settings (built by the recipe's builder).
        per_category: Train one binary model per sub-folder of the data (``content-resnet50``).
        original: What the original system did.
        reported: The figure the original reported.
        fix: For a ``-fixed`` variant, what it changes and why.
        assumptions: Choices the original left unstated that the recipe had to make.
    """

    name: str
    description: str
    backbone: str
    img_size: int
    head: HeadSpec
    train: TrainSpec
    weights: str = "imagenet"
    normalisation: str | None = None
    per_category: bool = False
    original: str = ""
    reported: str = ""
    fix: str = ""
    assumptions: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # Validates backbone, size, weights and normalisation now, with a throwaway class count.
        ModelSpec(self.backbone, 2, self.img_size, self.weights, self.head, self.normalisation)


RECIPES: Registry[Callable[[], Recipe]] = Registry("recipe")


def register_recipe(name: str):
    """Decorator registering a builder ``() -> Recipe`` under ``name``."""
    return RECIPES.register(name)


def get_recipe(name: str) -> Recipe:
    """Builds the named recipe.

    Raises:
        ConfigError: For an unknown name (with the valid names and a close match).
    """
    return RECIPES.get(name)()


def list_recipes(pattern: str = "*") -> list[str]:
    """Registered recipe names matching a shell-style pattern."""
    return RECIPES.names(pattern)


def _train(**kwargs):
    from edgeclf.toolkit.augment import AugmentSpec
    from edgeclf.toolkit.splits import SplitSpec
    from edgeclf.toolkit.train import TrainSpec

    if isinstance(kwargs.get("augment"), dict):
        kwargs["augment"] = AugmentSpec(**kwargs["augment"])
    if isinstance(kwargs.get("split"), tuple):
        kwargs["split"] = SplitSpec(*kwargs["split"])
    return TrainSpec(**kwargs)


# ImageDataGenerator-style augmentation of the originals: rotation 30 degrees, shifts, shear and zoom 0.2.
_IDG = {"flip": "horizontal", "rotation": 30 / 360, "shift": 0.2, "zoom": 0.2, "contrast": 0.0, "shear": 0.2}


@register_recipe("helmet-cnn")
def _helmet_cnn() -> Recipe:
    return Recipe(
        "helmet-cnn", "Worker with / without helmet: small CNN from scratch, 200 px", "helmet_cnn", 200,
        HeadSpec("flatten", (4,), dropouts=(0.0,)), _train(learning_rate=1e-3, epochs=20), weights="none",
        original="200x200 RGB, Conv32-Pool4-Conv64-Pool2-Conv128-Flatten-Dense4-sigmoid, Adam 1e-3",
        reported="val acc 0.989",
        assumptions=("pixels scaled to 0-1", "Dense4 is a ReLU hidden layer; the sigmoid output is a 2-class softmax "
                     "(the same function)", "20 epochs with early stopping (the original's count is not stated)"),
    )


@register_recipe("helmet-vgg16")
def _helmet_vgg16() -> Recipe:
    return Recipe(
        "helmet-vgg16", "Helmet, as published: frozen VGG16, Flatten head, pixels 0-1, 20 epochs", "vgg16", 224,
        HeadSpec("flatten", (256, 128), dropouts=(0.5, 0.0)),
        _train(learning_rate=1e-4, batch_size=128, epochs=20, fine_tune_layers=0, early_stopping=False,
               reduce_lr=False, augment=_IDG),
        normalisation="unit",
        original="VGG16 frozen, Flatten-Dense256-Dropout0.5-Dense128-sigmoid, Adam 1e-4, batch 128, 20 epochs, "
                 "rotation 30, shifts/shear/zoom 0.2",
        reported="test acc 1.0 (authors suspected split leakage)",
        assumptions=("pixels scaled to 0-1 in front of VGG16 (the flaw the authors named)",
                     "the best epoch's weights are kept (edgeclf always checkpoints on the validation loss)"),
    )


@register_recipe("helmet-vgg16-fixed")
def _helmet_vgg16_fixed() -> Recipe:
    base = _helmet_vgg16()
    return replace(
        base, name="helmet-vgg16-fixed",
        description="Helmet, with the authors' fixes: GAP head, VGG preprocessing, early stopping, LR schedule, dedup",
        head=HeadSpec("gap", (256, 128), dropouts=(0.5, 0.0)), normalisation=None,
        train=replace(base.train, early_stopping=True, reduce_lr=True, lr_schedule="plateau", dedup=True),
        fix="GlobalAveragePooling instead of Flatten (about 25x fewer head parameters), VGG's own preprocessing "
            "(BGR mean subtraction) instead of 0-1 pixels, EarlyStopping and ReduceLROnPlateau, and duplicates of "
            "training images removed from val/test (the suspected leakage)",
    )


@register_recipe("nsfw-mobilenetv2")
def _nsfw() -> Recipe:
    return Recipe(
        "nsfw-mobilenetv2", "Neutral vs porn: MobileNetV2 transfer learning, 70/20/10 split", "mobilenet_v2", 224,
        HeadSpec("gap", (), dropout=0.2), _train(split=(0.7, 0.2, 0.1), epochs=10),
        original="neutral vs porn, MobileNetV2 transfer learning, 70/20/10 split", reported="test acc 0.953",
        assumptions=("GAP + dropout 0.2 head, two phases (frozen, then the top 20 layers)",),
    )


@register_recipe("spam-vgg19")
def _spam() -> Recipe:
    return Recipe(
        "spam-vgg19", "Image spam, as published: VGG19, GAP-Dense head, pixels 0-1, RandAugment, 256 px", "vgg19",
        256, HeadSpec("gap", (256,), dropouts=(0.0,)),
        _train(learning_rate=1e-3, batch_size=128, epochs=30, fine_tune_layers=0, augment={"randaugment": True}),
        normalisation="unit",
        original="VGG19 base, GlobalAveragePooling-dense-softmax, 256x256, pixels 0-1, RandAugment, Adam 1e-3, "
                 "batch 128, early stopping (stopped at 26 epochs)",
        reported="val acc 0.98",
        assumptions=("pixels scaled to 0-1 in front of VGG19 (the flaw)", "hidden dense of 256 units",
                     "VGG19 frozen"),
    )


@register_recipe("spam-vgg19-fixed")
def _spam_fixed() -> Recipe:
    base = _spam()
    return replace(base, name="spam-vgg19-fixed",
                   description="Image spam with VGG19's own preprocessing and duplicates removed from val/test",
                   normalisation=None, train=replace(base.train, dedup=True),
                   fix="VGG's own preprocessing (BGR mean subtraction) instead of 0-1 pixels; spam images are often "
                       "near-copies of each other, so duplicates of training images are removed from val/test")


@register_recipe("content-resnet50")
def _content() -> Recipe:
    return Recipe(
        "content-resnet50", "Adult / violence / cartoon: one binary ResNet50 model per category sub-folder",
        "resnet50", 224, HeadSpec("gap", (), dropout=0.2),
        _train(learning_rate=1e-3, epochs=10, fine_tune_layers=0, augment=_IDG), per_category=True,
        original="adult / violence / cartoon, one ResNet50 per category, top layer only trained, "
                 "ImageDataGenerator augmentation, Adam",
        reported="93 / 97 / 94 %",
        assumptions=("DATA holds one dataset per category (DATA/adult/{adult,neutral}/...); each trains into "
                     "OUT/<category>", "ImageDataGenerator settings as the helmet notebook's"),
    )


@register_recipe("aiart-cnn")
def _aiart() -> Recipe:
    return Recipe(
        "aiart-cnn", "Real vs AI-generated art: small CNN, 4-fold CV on val accuracy, best fold tested", "aiart_cnn",
        128, HeadSpec("flatten", (128,), dropouts=(0.5,)),
        _train(folds=4, monitor="val_accuracy", epochs=20, learning_rate=1e-3), weights="none",
        original="Conv32/64 3x3 + MaxPool, Flatten, Dense, Dropout 0.5, sigmoid; Adam; 4-fold CV with EarlyStopping "
                 "and ModelCheckpoint on val accuracy; best fold tested",
        reported="test acc 0.77, P/R/F1 0.77",
        assumptions=("128 px input and a 128-unit Dense (not stated)", "pixels scaled to 0-1"),
    )


@register_recipe("fmnist-wide-cnn")
def _fmnist_wide_cnn() -> Recipe:
    return Recipe(
        "fmnist-wide-cnn", "Small images (28-32 px, e.g. Fashion-MNIST) from scratch: wide CNN, 25 epochs, cosine",
        "wide_cnn", 28, HeadSpec("gap", (), dropout=0.2),
        # The 15-epoch simple_cnn run ends with its training accuracy (augmented) at its validation accuracy: it is
        # short of capacity and time, not of regularisation, so this recipe adds filters and epochs, not augmentation.
        # No early stopping: a cosine schedule's last epochs, at the smallest rates, are usually its best. Val is a
        # tenth of train (pre-split data keeps its own test set) so that more images are trained on.
        _train(epochs=25, early_stopping=False, lr_schedule="cosine", split=(0.8, 0.1, 0.1),
               augment={"flip": "horizontal", "rotation": 0.0, "shift": 0.1, "zoom": 0.0, "contrast": 0.0}),
        weights="none",
        original="edgeclf's own recipe (no published original): simple_cnn's Conv-BN-ReLU blocks with 32/128/256 "
                 "filters, flip and 10 % shifts, batch 128, Adam 2e-3 with a one-epoch warm-up and cosine decay",
        reported="Fashion-MNIST-10 test accuracy 0.9440 in 25 epochs on 2 CPU cores (91 min; "
                 "benchmarks/results/fashion_mnist_fmnist-wide-cnn.md)",
        assumptions=("images of about 28-32 px (larger ones train much slower: the first block runs at full size)",),
    )
