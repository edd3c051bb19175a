"""How ``edgeclf train`` trains: ``TrainSpec`` and the defaults chosen from the data (batch size, learning rate)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from edgeclf.edge_runtime.errors import ConfigError

from .augment import AugmentSpec
from .splits import SplitSpec
from .distribute import DISTRIBUTE
from .leakage import DEFAULT_THRESHOLD, HASH_BITS

MONITORS = ("val_loss", "val_accuracy")
LR_SCHEDULES = ("plateau", "cosine")
CLASS_WEIGHTS = ("auto", "on", "off")
MIXED_PRECISION = ("auto", "on", "off")
IMBALANCE_THRESHOLD = 1.5  # class weights switch on above this max/min class-count ratio ("auto")


@dataclass(frozen=True)
class TrainSpec:
    """How to train.

    Args:
        epochs: Epochs of the first phase (the only phase when training from scratch).
        batch_size: Images per batch; None chooses it from the number of training images (``auto_batch_size``).
        learning_rate: Adam learning rate of the first phase; None scales it with the batch size
            (``auto_learning_rate``).
        fine_tune_layers: Top backbone layers unfrozen in the second phase (pretrained backbones); 0 skips it.
        fine_tune_epochs: Epochs of the second phase.
        fine_tune_learning_rate: Learning rate of the second phase; None means ``learning_rate / 10``.
        patience: Epochs without improvement of ``monitor`` before early stopping (the learning rate is reduced
            after half as many).
        monitor: ``val_loss`` or ``val_accuracy``; also chooses the best checkpoint and the best fold.
        folds: 1 for a single train/val/test split; K >= 2 for stratified K-fold cross-validation of train+val.
        class_weights: ``auto`` (on when the largest class is more than 1.5x the smallest), ``on`` or ``off``.
        augment: Training-time augmentation; None chooses it from the input size (``augment.augment_for``).
        mixed_precision: ``auto`` (on with a GPU), ``on`` or ``off``.
        deterministic: Enable TensorFlow op determinism (same seed, same result; slower on GPUs).
        seed: Seed for the split, initialisation, shuffling and augmentation.
        split: Fractions of the split; None chooses them from the data: 70/15/15 for data that is not split, a
            tenth of train for val when the data has its own test split but no val (``splits.assign_splits``).
        dedup: Remove val/test images that duplicate an earlier split's image.
        leakage_threshold: Hamming distance (of 256 hash bits) counted as a near-duplicate.
        keep_cache: Keep the decoded-pixel cache and the resume checkpoints after a successful run.
        early_stopping: Stop a phase after ``patience`` epochs without improvement.
        reduce_lr: Reduce the learning rate during a phase, as ``lr_schedule`` says; False keeps it constant.
        lr_schedule: ``plateau``: multiplied by 0.3 after ``patience // 2`` epochs without improvement of ``monitor``;
            ``cosine``: a one-epoch linear warm-up (at most a tenth of the phase) then cosine decay to 0 over the
            phase's steps, whatever validation says.
        distribute: ``none``, or ``data-parallel``: every local device (and every process of a multi-host JAX job)
            trains one replicated model on its slice of each batch (``distribute.setup``); the batch size is
            rounded down to a multiple of the device count.
    """

    epochs: int = 10
    batch_size: int | None = None
    learning_rate: float | None = None
    fine_tune_layers: int = 20
    fine_tune_epochs: int = 5
    fine_tune_learning_rate: float | None = None
    patience: int = 5
    monitor: str = "val_loss"
    folds: int = 1
    class_weights: str = "auto"
    augment: AugmentSpec | None = None
    mixed_precision: str = "auto"
    deterministic: bool = True
    seed: int = 42
    split: SplitSpec | None = None
    dedup: bool = False
    leakage_threshold: int = DEFAULT_THRESHOLD
    keep_cache: bool = False
    early_stopping: bool = True
    reduce_lr: bool = True
    lr_schedule: str = "cosine"
    distribute: str = "none"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "folds", "patience"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"Received: {name}={getattr(self, name)}. Expected at least 1.")
        for name in ("fine_tune_layers", "fine_tune_epochs", "leakage_threshold"):
            if getattr(self, name) < 0:
                raise ConfigError(f"Received: {name}={getattr(self, name)}. Expected 0 or more.")
        if self.leakage_threshold > HASH_BITS // 2:
            raise ConfigError(f"Received: leakage_threshold={self.leakage_threshold}. Expected at most "
                              f"{HASH_BITS // 2} of {HASH_BITS} bits: unrelated images already differ in about half.")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"Received: seed={self.seed}. Expected an integer from 0 to 2**32 - 1.")
        if (self.learning_rate is not None and not self.learning_rate > 0) or (
                self.fine_tune_learning_rate is not None and not self.fine_tune_learning_rate > 0):
            raise ConfigError("Received a learning rate <= 0. Expected a positive learning rate.")
        for name, allowed in (("monitor", MONITORS), ("class_weights", CLASS_WEIGHTS),
                              ("mixed_precision", MIXED_PRECISION), ("lr_schedule", LR_SCHEDULES),
                              ("distribute", DISTRIBUTE)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"Received: {name}='{getattr(self, name)}'. Supported: {', '.join(allowed)}.")

    def for_data(self, n_train: int) -> tuple["TrainSpec", str | None]:
        """This spec with ``batch_size`` and ``learning_rate`` chosen for ``n_train`` training images where they are
        None, and what was chosen (for the run's report), or None when both were set."""
        if self.batch_size is not None and self.learning_rate is not None:
            return self, None
        batch = self.batch_size or auto_batch_size(n_train)
        lr = self.learning_rate or auto_learning_rate(batch)
        chosen = [f"batch size {batch}" if self.batch_size is None else "",
                  f"learning rate {lr:g}" if self.learning_rate is None else ""]
        return (replace(self, batch_size=batch, learning_rate=lr),
                f"{' and '.join(c for c in chosen if c)}, chosen for {n_train:,} training images")

    @property
    def fine_tune_lr(self) -> float:
        return self.fine_tune_learning_rate if self.fine_tune_learning_rate is not None else self.learning_rate / 10

    def to_dict(self) -> dict:
        return asdict(self)


def auto_batch_size(n_train: int) -> int:
    """32 images a batch below 2,000 training images, 64 below 8,000, 128 from there: small datasets keep enough
    steps an epoch to learn from, large ones train faster on a CPU for the same accuracy."""
    return 32 if n_train < 2000 else 64 if n_train < 8000 else 128


def auto_learning_rate(batch_size: int) -> float:
    """Adam's 1e-3 at batch 32, scaled with the square root of the batch size (2e-3 at 128)."""
    return float(f"{1e-3 * math.sqrt(batch_size / 32):.3g}")
