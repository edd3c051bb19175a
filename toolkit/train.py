"""``edgeclf train``: fine-tune a registered backbone on a folder of images and write a complete run directory.

The run directory holds ``model.keras``, ``metadata.json``, ``history.csv``, ``metrics.json``, ``splits.csv``,
plots and ``report.md``. ``run_state.json`` records progress so that a killed run resumes from its last
checkpoint when the same command is run again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

import edgeclf
from edgeclf.edge_runtime.artifact import sha256_file
from edgeclf.edge_runtime.errors import ConfigError, DataError
from edgeclf.edge_runtime.preprocess import PreprocessSpec
from edgeclf.models import HeadSpec, ModelSpec, check_weights, create_model, format_img_size, get_backbone_model

from . import plots
from ._deps import gpu_names, import_keras, import_tf
from .augment import AugmentSpec, augment_for, build_augmenter
from .callbacks import (best_checkpoint, best_so_far, epoch_seeds, epoch_timer, history_logger, history_rows,
                        save_weights, schedule_state)
from .distribute import DISTRIBUTE, Distribution, global_batch
from .distribute import setup as setup_distribution
from .data import (SPLITS, DecodedSplit, SplitSpec, assign_splits, balanced_class_weights, class_counts,
                   decode_samples, discover, fingerprint, imbalance_ratio, stratified_folds)
from .evaluate import evaluate_splits
from .io import atomic_path, clean_leftovers, write_csv, write_json
from .leakage import DEFAULT_THRESHOLD, HASH_BITS, find_leaks
from .pipeline import EpochClock, batches_per_epoch, make_dataset
from .precise_bn import recompute_batchnorm
from .progress import Reporter
from .report import write_train_report
from .run_dir import REPLACED, RUN_DIRS, RunState, prepare_run_dir, recover_replaced, restore_replaced

logger = logging.getLogger(__name__)

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
        split: Fractions for data that is not pre-split.
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
    split: SplitSpec = field(default_factory=SplitSpec)
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


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    model_path: Path
    class_names: list[str]
    metrics: dict
    folds: list[dict]
    skipped: list[tuple[str, str]]
    leakage: dict
    wall_time_s: float
    resumed: bool


# --------------------------------------------------------------------------------------------------- decoding

def _decode_all(ds, splits, spec: PreprocessSpec, cache: Path, reporter: Reporter) -> dict[str, DecodedSplit]:
    """Decodes every split into memory-mapped uint8 arrays under ``cache`` (reused when resuming)."""
    cache.mkdir(parents=True, exist_ok=True)
    index_path = cache / "index.json"
    listing = {name: [str(s) for s in samples.sources] for name, samples in splits.items()}
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = None
    if index is not None and index.get("listing") == listing and index.get("preprocess") == spec.to_dict():
        out = {}
        for name, samples in splits.items():
            entry = index["splits"][name]
            kept = entry["kept"]
            pixels = np.load(cache / f"{name}.npy", mmap_mode="r")[: len(kept)]
            out[name] = DecodedSplit(pixels, samples.labels[kept], [samples.sources[i] for i in kept],
                                     [tuple(s) for s in entry["skipped"]])
        reporter.stage("Reusing decoded images from the cache")
        return out
    out, entries = {}, {}
    total = sum(len(s) for s in splits.values())
    with reporter.progress(total, "Decoding images") as advance:
        for name, samples in splits.items():
            buf = np.lib.format.open_memmap(cache / f"{name}.npy", mode="w+", dtype=np.uint8,
                                            shape=(max(len(samples), 1), spec.height, spec.width, 3))
            decoded = decode_samples(ds, samples, spec, out=buf, progress=advance)
            buf.flush()
            entries[name] = {"kept": decoded.indices, "skipped": [list(s) for s in decoded.skipped]}
            out[name] = decoded
    write_json(index_path, {"listing": listing, "preprocess": spec.to_dict(), "splits": entries})
    return out


# --------------------------------------------------------------------------------------------------- training

def _set_trainable(model, phase: int, fine_tune_layers: int, pretrained: bool) -> None:
    from keras import layers

    base = get_backbone_model(model)
    if not pretrained:
        base.trainable = True
        return
    if phase == 1:
        base.trainable = False
        return
    base.trainable = True
    cutoff = max(len(base.layers) - fine_tune_layers, 0)
    for i, layer in enumerate(base.layers):
        # BatchNorm stays frozen, i.e. in inference mode: its statistics came from far more data than ours.
        layer.trainable = i >= cutoff and not isinstance(layer, layers.BatchNormalization)


def _steps_per_epoch(split: DecodedSplit, spec: TrainSpec) -> int:
    return batches_per_epoch(len(split), spec.batch_size, drop_remainder=True)


def _fold_leakage(fold: int, tr: DecodedSplit, va: DecodedSplit, spec: TrainSpec, ds
                  ) -> tuple[DecodedSplit, DecodedSplit, dict]:
    """A K-fold split's train and val (with ``--dedup``, its val without duplicates of its train) and what was found.

    The run-wide check compares the 70/15/15 splits; once train and val are pooled for K-fold, copies inside the
    old train (or val) can land on both sides of a fold, and that fold's val score then counts memorised images.
    """
    found = find_leaks({"train": tr.pixels, "val": va.pixels}, spec.leakage_threshold)
    leaked = found.leaked("val")
    exact = sum(p.exact for p in found.pairs)
    entry = {"fold": fold, "exact_pairs": exact, "near_pairs": len(found.pairs) - exact,
             "leaked_val_images": int(len(leaked)), "removed": 0,
             "examples": [{"path": ds.describe(va.sources[p.index]), "other_path": ds.describe(tr.sources[p.other_index]),
                           "distance": p.distance, "exact": p.exact} for p in found.pairs[:5]]}
    if spec.dedup and len(leaked):
        drop = set(leaked.tolist())
        va = va.take([i for i in range(len(va)) if i not in drop])
        entry["removed"] = len(drop)
        if not len(va):
            raise DataError(f"Fold {fold}'s val has no images left once --dedup removed the duplicates of its train "
                            "images. Use fewer --folds, or remove the duplicates from the dataset.")
    return tr, va, entry


def _warn_fold_leakage(folds: list[dict], dedup: bool, reporter) -> None:
    leaked = [f for f in folds if f["leaked_val_images"]]
    if leaked:
        reporter.warn("K-fold leakage: val images that duplicate an image of their own fold's train: "
                      + ", ".join(f"fold {f['fold']} {f['leaked_val_images']}" for f in leaked) + "."
                      + (" Removed from those folds' val (--dedup)." if dedup else " Pass --dedup to remove them."))


def _learning_rate(keras, spec: TrainSpec, lr: float, epochs: int, train_split: DecodedSplit):
    """The optimizer's learning rate for one phase: ``lr``, or a schedule of steps for ``lr_schedule="cosine"``.

    A schedule counts the optimizer's own steps, which a resumed run restores with the optimizer, so it resumes
    where it stopped.
    """
    if not spec.reduce_lr or spec.lr_schedule != "cosine":
        return lr
    total = _steps_per_epoch(train_split, spec) * epochs
    warmup = min(_steps_per_epoch(train_split, spec), total // 10)
    return keras.optimizers.schedules.CosineDecay(0.0 if warmup else lr, max(total - warmup, 1), alpha=0.0,
                                                  warmup_target=lr if warmup else None, warmup_steps=warmup)


def _fit_fold(fold: int, train_split: DecodedSplit, val_split: DecodedSplit, model_spec: ModelSpec, spec: TrainSpec,
              run: Path, state: RunState, class_weight: dict | None, reporter: Reporter, extra_callbacks: Sequence,
              dist: Distribution | None = None):
    """Trains one model (one or two phases) and returns it with its best weights loaded."""
    keras = import_keras()
    with dist.fitting(keras) if dist is not None else contextlib.nullcontext():
        return _fit_fold_phases(fold, train_split, val_split, model_spec, spec, run, state, class_weight, reporter,
                                extra_callbacks, dist)


def _fit_fold_phases(fold, train_split, val_split, model_spec, spec, run, state, class_weight, reporter,
                     extra_callbacks, dist):
    keras = import_keras()
    ckpt = run / "checkpoints"
    ckpt.mkdir(exist_ok=True)
    best_path = ckpt / f"fold{fold}_best.weights.h5"
    # Seeded per fold: a run resumed at fold 2 creates its model as the uninterrupted run did.
    keras.utils.set_random_seed(spec.seed + fold)
    model = create_model(model_spec, steps_per_epoch=_steps_per_epoch(train_split, spec))
    augmenter = build_augmenter(spec.augment, spec.seed + fold)
    parallel = not spec.deterministic
    clock = EpochClock()
    shard = dist.sharding if dist is not None and dist.backend == "jax" else None
    train_ds = make_dataset(train_split.pixels, train_split.labels, spec.batch_size, shuffle=True,
                            seed=spec.seed + fold, augmenter=augmenter, parallel=parallel, clock=clock,
                            drop_remainder=True, sharding=None if shard is None else replace(shard, pad_to=1))
    val_ds = make_dataset(val_split.pixels, val_split.labels, spec.batch_size, shuffle=False, seed=spec.seed,
                          parallel=parallel, sharding=shard)
    phases = [(1, spec.epochs, spec.learning_rate)]
    if model_spec.pretrained and spec.fine_tune_layers and spec.fine_tune_epochs:
        phases.append((2, spec.fine_tune_epochs, spec.fine_tune_lr))
    mode = "min" if spec.monitor.endswith("loss") else "max"
    for phase, epochs, lr in phases:
        first_epoch = sum(n for p, n, _ in phases if p < phase)  # the phase's first, counted over the fold's phases
        key = f"{fold}/{phase}"
        done_path = ckpt / f"fold{fold}_phase{phase}.weights.h5"
        backup = ckpt / f"backup_fold{fold}_phase{phase}"
        if key in state.done and done_path.exists():
            model.load_weights(done_path)
            reporter.stage(f"Fold {fold} phase {phase} already finished: loaded its weights")
            continue
        _set_trainable(model, phase, spec.fine_tune_layers, model_spec.pretrained)
        model.compile(optimizer=keras.optimizers.Adam(_learning_rate(keras, spec, lr, epochs, train_split)),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        what = "frozen backbone" if model_spec.pretrained and phase == 1 else (
            f"top {spec.fine_tune_layers} backbone layers unfrozen" if phase == 2 else "all layers")
        reporter.stage(f"Fold {fold} phase {phase}: {epochs} epoch{'s' * (epochs != 1)} at lr {lr:g}, {what}")
        schedules = [
            *([keras.callbacks.EarlyStopping(monitor=spec.monitor, mode=mode, patience=spec.patience)]
              if spec.early_stopping else []),
            *([keras.callbacks.ReduceLROnPlateau(monitor=spec.monitor, mode=mode, factor=0.3,
                                                 patience=max(1, spec.patience // 2), min_lr=lr / 100)]
              if spec.reduce_lr and spec.lr_schedule == "plateau" else []),
        ]
        callbacks = [
            epoch_seeds(keras, clock, first_epoch, [model] if augmenter is None else [model, augmenter]),
            best_checkpoint(keras, best_path, spec.monitor, mode, best_so_far(run / "history.csv", fold, spec.monitor)),
            *schedules,
            history_logger(keras, run / "history.csv", fold, phase),
            epoch_timer(keras, state, fold, phase),
            # Two backups: a run killed while writing the latest (SIGKILL, a power cut) resumes from the one before.
            keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True),
            schedule_state(keras, backup / "schedules.json", schedules),
            *extra_callbacks,
        ]
        # BackupAndRestore resumes by setting the model's first epoch, which Keras keeps for every later fit:
        # phase 2 of a run resumed in phase 1 began at phase 1's resumed epoch, its earlier epochs skipped.
        model._initial_epoch = None
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, class_weight=class_weight, callbacks=callbacks,
                  shuffle=False,  # the dataset shuffles itself
                  verbose=reporter.keras_verbose)
        if best_path.exists():
            model.load_weights(best_path)
        if not model_spec.pretrained:  # a pretrained backbone's BatchNorm stays frozen at its own statistics
            reporter.stage("Recomputing BatchNorm statistics over the training images")
            recompute_batchnorm(model, train_split.pixels, spec.batch_size, seed=spec.seed + fold)
        save_weights(model, done_path)
        state.done[key] = {"epochs": epochs}
        state.save()
    return model


def train(
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    backbone: str,
    img_size: int | tuple[int, int] | None = None,
    weights: str = "imagenet",
    head: HeadSpec | None = None,
    normalisation: str | None = None,
    spec: TrainSpec | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
    callbacks: Sequence = (),
    crop: float | None = None,
    pad: tuple[int, int, int] | None = None,
    confine: bool = False,
) -> TrainResult:
    """Trains a classifier and writes a complete run directory.

    Args:
        data: A dataset in any form ``toolkit.data.discover`` accepts.
        out_dir: The run directory. An unfinished run there with the same settings is resumed.
        backbone: A registered backbone name.
        img_size: Input side of a square input, or ``(height, width)``; None uses the backbone's default.
        weights: ``imagenet``, ``none`` or a backbone ``.weights.h5`` path.
        head: Classification head; defaults to GlobalAveragePooling + dropout.
        normalisation: Override of the backbone's input normalisation (see ``ModelSpec``); None keeps it.
        spec: Training settings.
        force: Replace a finished run, or an unfinished one with other settings.
        reporter: Progress sink (the CLI draws bars).
        callbacks: Extra Keras callbacks for every phase.
        crop: Centre crop before resizing (``PreprocessSpec.crop``): None resizes the whole image; 1 crops to the
            input's aspect ratio. Recorded in the run, so evaluation, export and every runtime crop the same.
        pad: Instead of ``crop``, letterbox (``PreprocessSpec.pad``): the whole image resized to fit inside the
            input, its aspect ratio kept, the rest filled with this RGB colour. Recorded in the run likewise.
        confine: Refuse a CSV manifest row naming an image outside the manifest's folder (``discover``).

    Returns:
        The TrainResult.

    Raises:
        ConfigError: For invalid settings or an occupied run directory.
        DataError: For a dataset that cannot be used.
    """
    started = time.perf_counter()
    spec = spec or TrainSpec()
    keras = import_keras(spec.deterministic)  # now, not after decoding the dataset: a missing backend fails first
    head = head or HeadSpec()
    reporter = reporter or Reporter()
    run = Path(out_dir)
    ds = discover(data, confine=confine)
    model_spec = ModelSpec(backbone, len(ds.class_names), img_size, weights, head, normalisation)
    preprocess = PreprocessSpec(model_spec.height, model_spec.width, crop=crop, pad=pad)
    if spec.augment is None:  # chosen from the data, and said so in the report
        augment, why = augment_for(model_spec.height, model_spec.width)
        spec = replace(spec, augment=augment)
        ds.notes.append(f"Augmentation: {why}.")
    config = {"data": str(Path(data).resolve()), "model": model_spec.to_dict(), "train": spec.to_dict(),
              "preprocess": preprocess.to_dict()}
    check_weights(model_spec)  # before the run directory is touched and the dataset decoded
    if recover_replaced(run):
        reporter.warn(f"Restored the finished run in {run} that an interrupted --force run was replacing.")
    clean_leftovers(run, reporter)
    state, resumed, restarted = prepare_run_dir(run, config, force)
    if resumed:
        reporter.stage(f"Resuming the unfinished run in {run}")
    elif restarted:
        reporter.stage(f"Starting again in {run}: its unfinished run trained nothing ({restarted})")
    for note in ds.notes:
        reporter.stage(note)

    try:
        result = _train_in_run(data, run, ds, model_spec, preprocess, spec, state, resumed, reporter, callbacks,
                               keras, started)
    except BaseException:
        if restore_replaced(run):
            reporter.warn(f"The new run did not finish: the run it was replacing (--force) is back in {run}.")
        raise
    shutil.rmtree(run / REPLACED, ignore_errors=True)  # the new run is complete: the old one can go
    return result


def _check_split_leakage(ds, decoded: dict[str, DecodedSplit], spec: TrainSpec, reporter: Reporter
                         ) -> tuple[dict, dict[str, list[str]]]:
    """Finds val/test images that duplicate an earlier split's (and with ``--dedup`` removes them from ``decoded``).

    Returns:
        The leakage summary for the metadata and report, and the removed images' paths per split.
    """
    reporter.stage("Checking for duplicate images across splits")
    leaks = find_leaks({name: decoded[name].pixels for name in SPLITS}, spec.leakage_threshold)
    leakage = leaks.summary()
    leakage["examples"] = [
        {"split": p.split, "path": ds.describe(decoded[p.split].sources[p.index]), "other_split": p.other_split,
         "other_path": ds.describe(decoded[p.other_split].sources[p.other_index]), "distance": p.distance,
         "exact": p.exact}
        for p in leaks.pairs[:20]
    ]
    if leaks.pairs:
        msg = (f"Split leakage: {leakage['exact_pairs']} exact and {leakage['near_pairs']} near-duplicate images in "
               f"val/test match an earlier split (val {leakage['leaked_images']['val']}, test "
               f"{leakage['leaked_images']['test']}).")
        reporter.warn(msg + (" Removing them (--dedup)." if spec.dedup else " Pass --dedup to remove them."))
    removed = {}
    if spec.dedup:
        for name in ("val", "test"):
            drop = set(leaks.leaked(name).tolist())
            if drop:
                keep = [i for i in range(len(decoded[name])) if i not in drop]
                removed[name] = [ds.describe(decoded[name].sources[i]) for i in sorted(drop)]
                decoded[name] = decoded[name].take(keep)
    leakage["removed"] = {k: len(v) for k, v in removed.items()}
    return leakage, removed


def _check_class_balance(ds, decoded: dict[str, DecodedSplit], spec: TrainSpec, reporter: Reporter) -> bool:
    """Says how many images each class has per split, names a class missing from a split, and returns whether
    class weights are used (``class_weights``: on, or auto with an imbalance over ``IMBALANCE_THRESHOLD``)."""
    k = len(ds.class_names)
    counts = {name: class_counts(decoded[name].labels, k) for name in SPLITS}
    ratio = imbalance_ratio(counts["train"])
    use_weights = spec.class_weights == "on" or (spec.class_weights == "auto" and ratio > IMBALANCE_THRESHOLD)
    reporter.stage("Images per class (train/val/test): " + ", ".join(
        f"{c} {counts['train'][i]}/{counts['val'][i]}/{counts['test'][i]}" for i, c in enumerate(ds.class_names))
        + f"; imbalance {ratio:.2f}" + (", class weights on" if use_weights else ""))
    for name in SPLITS:
        absent = [c for i, c in enumerate(ds.class_names) if not counts[name][i]]
        if absent and len(decoded[name]):
            note = (f"The {name} split has no images of {', '.join(absent)}: "
                    + ("the model cannot learn " + ("it" if len(absent) == 1 else "them") if name == "train" else
                       f"its {name} metrics leave {'it' if len(absent) == 1 else 'them'} out")
                    + f". Add images of {'that class' if len(absent) == 1 else 'those classes'}.")
            reporter.warn(note)
            ds.notes.append(note)
    return use_weights


def _train_in_run(data, run: Path, ds, model_spec: ModelSpec, preprocess: PreprocessSpec, spec: TrainSpec,
                  state: RunState, resumed: bool, reporter: Reporter, callbacks: Sequence, keras,
                  started: float) -> TrainResult:
    """Everything ``train`` does once the run directory is ready: decode, check for leakage, fit each fold, save,
    evaluate and report."""
    samples = assign_splits(ds, spec.split, spec.seed)
    decoded = _decode_all(ds, samples, preprocess, run / "cache", reporter)
    skipped = [s for name in SPLITS for s in decoded[name].skipped]
    for name, reason in skipped:
        reporter.warn(f"Skipped {name}: {reason}")

    leakage, removed = _check_split_leakage(ds, decoded, spec, reporter)
    k = len(ds.class_names)
    for name in ("train", "val"):
        if not len(decoded[name]):
            raise DataError(f"The {name} split has no readable images. Add images or change --split.")
    spec, chosen = spec.for_data(len(decoded["train"]))
    if chosen:
        reporter.stage(chosen[0].upper() + chosen[1:])
        ds.notes.append(f"Training: {chosen}.")
    use_weights = _check_class_balance(ds, decoded, spec, reporter)

    backend = keras.backend.backend()
    dist = setup_distribution(keras, spec.distribute)
    if dist is not None:
        batch, note = global_batch(spec.batch_size, dist.devices)
        spec = replace(spec, batch_size=batch)
        reporter.stage(f"Distributed: {dist.kind}, {dist.devices} device(s) in {dist.processes} process(es)"
                       + (f"; {note}" if note else ""))
        if note:
            ds.notes.append(f"Training: {note}.")
    keras.utils.set_random_seed(spec.seed)
    if spec.deterministic and backend == "tensorflow":  # JAX's flag was set by import_keras, before JAX loaded
        import_tf()[0].config.experimental.enable_op_determinism()
    gpus = gpu_names(keras)
    mixed = spec.mixed_precision == "on" or (spec.mixed_precision == "auto" and bool(gpus))
    device = f"GPU ({gpus[0]})" if gpus else "CPU"
    reporter.stage(f"Training {model_spec.backbone} at {format_img_size(model_spec.img_size)} on {device}"
                   + (" with mixed precision" if mixed else "")
                   + ("" if backend == "tensorflow" else f" (Keras backend {backend})"))

    if spec.folds > 1:
        pool = DecodedSplit(np.concatenate([decoded["train"].pixels, decoded["val"].pixels]),
                            np.concatenate([decoded["train"].labels, decoded["val"].labels]),
                            decoded["train"].sources + decoded["val"].sources)
        fold_idx = stratified_folds(pool.labels, spec.folds, spec.seed)
        reporter.stage("Checking each fold's val images for duplicates of its train images")
        fold_splits, leakage["folds"] = [], []
        for fold, val_idx in enumerate(fold_idx):
            train_idx = np.setdiff1d(np.arange(len(pool)), val_idx)
            tr, va, found = _fold_leakage(fold, pool.take(train_idx), pool.take(val_idx), spec, ds)
            fold_splits.append((tr, va))
            leakage["folds"].append(found)
        _warn_fold_leakage(leakage["folds"], spec.dedup, reporter)
    else:
        fold_splits = [(decoded["train"], decoded["val"])]

    previous_policy = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for fold, (tr, va) in enumerate(fold_splits):
            if str(fold) in state.folds:
                continue
            cw = balanced_class_weights(class_counts(tr.labels, k)) if use_weights else None
            model = _fit_fold(fold, tr, va, model_spec, spec, run, state, cw, reporter, callbacks, dist)
            scores = model.evaluate(make_dataset(va.pixels, va.labels, spec.batch_size, shuffle=False, seed=0,
                                                 parallel=not spec.deterministic),
                                    verbose=0, return_dict=True)
            state.folds[str(fold)] = {"val_loss": float(scores["loss"]), "val_accuracy": float(scores["accuracy"]),
                                      "n_train": len(tr), "n_val": len(va)}
            state.save()
            keras.backend.clear_session(free_memory=True)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    key = "val_loss" if spec.monitor == "val_loss" else "val_accuracy"
    fold_scores = [state.folds[str(f)] for f in range(len(fold_splits))]
    values = [s[key] for s in fold_scores]
    best_fold = int(np.argmin(values) if key == "val_loss" else np.argmax(values))
    last_phase = max(int(kp.split("/")[1]) for kp in state.done if kp.startswith(f"{best_fold}/"))
    # Rebuilt after the float32 policy is back: a model trained under mixed precision is saved (and exported)
    # with float32 layers, its float32 master weights loaded from the checkpoint.
    # A from-scratch model keeps the BatchNorm momentum it trained with (its config is saved with it).
    steps = _steps_per_epoch(fold_splits[best_fold][0], spec) if model_spec.weights == "none" else None
    model = create_model(ModelSpec.from_dict({**model_spec.to_dict(), "weights": "none"}), steps_per_epoch=steps)
    model.load_weights(run / "checkpoints" / f"fold{best_fold}_phase{last_phase}.weights.h5")
    with atomic_path(run / "model.keras", suffix=".keras") as tmp:
        model.save(tmp)

    reporter.stage("Evaluating on train, val and test")
    final_splits = {"train": fold_splits[best_fold][0], "val": fold_splits[best_fold][1], "test": decoded["test"]}
    metrics = evaluate_splits(model, final_splits, ds.class_names, run, spec.batch_size)
    history = history_rows(run / "history.csv")
    if history:
        plots.plot_history(history, run / "training_curves.png")

    # The record describes the images the saved model trained and was validated on: with K folds, the kept fold's
    # part of train+val (splits.csv is what export calibrates on and what a reader reproduces the run from).
    kept_counts = {name: class_counts(final_splits[name].labels, k) for name in SPLITS}
    class_count_table = {name: {c: int(n) for c, n in zip(ds.class_names, kept_counts[name])} for name in SPLITS}
    folds_out = [{"fold": f, **s} for f, s in enumerate(fold_scores)]
    fold_summary = None
    if spec.folds > 1:
        accs = np.array([s["val_accuracy"] for s in fold_scores])
        fold_summary = {"val_accuracy_mean": float(accs.mean()), "val_accuracy_std": float(accs.std(ddof=0)),
                        "best_fold": best_fold}
    metrics_doc = {"splits": metrics, "folds": folds_out, "fold_summary": fold_summary}
    write_json(run / "metrics.json", metrics_doc)
    _write_splits_csv(run / "splits.csv", ds, final_splits)
    wall = time.perf_counter() - started
    metadata = {
        "edgeclf_version": edgeclf.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "class_names": ds.class_names,
        "num_classes": k,
        "backbone": model_spec.backbone,
        "input": {"shape": [model_spec.height, model_spec.width, 3], "dtype": "float32", "layout": "NHWC",
                  "color": "RGB", "value_range": list(preprocess.value_range)},
        "preprocess": preprocess.to_dict(),
        "model": model_spec.to_dict(),
        "model_sha256": sha256_file(run / "model.keras"),
        "train": spec.to_dict(),
        "dataset": {
            "path": str(Path(data).resolve()), "form": ds.form,
            "fingerprint": fingerprint(((n, decoded[n]) for n in SPLITS), ds.class_names),
            "split_sizes": {n: len(final_splits[n]) for n in SPLITS},
            "class_counts": class_count_table,
            "imbalance_ratio": imbalance_ratio(kept_counts["train"]),
            "class_weights": balanced_class_weights(kept_counts["train"]) if use_weights else None,
            "skipped": [{"path": n, "reason": r} for n, r in skipped],
            "leakage": leakage,
            "removed_by_dedup": removed,
            "notes": ds.notes,
        },
        "hardware": {"gpus": gpus, "mixed_precision": mixed, "keras_backend": backend,
                     "distribution": dist.to_dict() if dist is not None else None},
        "epoch_train_s": _epoch_times(state, best_fold),
        "wall_time_s": round(wall, 1),
    }
    write_json(run / "metadata.json", metadata)
    write_train_report(run, metadata, metrics_doc)
    state.status = "done"
    state.save()
    if not spec.keep_cache:  # only needed to resume; VGG checkpoints alone are hundreds of MB
        for name in RUN_DIRS:
            shutil.rmtree(run / name, ignore_errors=True)
    return TrainResult(run, run / "model.keras", ds.class_names, metrics, folds_out, skipped, leakage, wall, resumed)


def _epoch_times(state: RunState, fold: int) -> dict:
    """The kept fold's training seconds per epoch, in order, and their median after the first (which compiles)."""
    keys = sorted((tuple(int(p) for p in key.split("/")), s) for key, s in state.epoch_s.items())
    times = [s for (f, _, _), s in keys if f == fold]
    steady = times[1:] or times
    return {"epochs": times, "steady_median": float(np.median(steady)) if steady else None}


def _write_splits_csv(path: Path, ds, decoded: dict) -> None:
    """Which image went to which split (the export step calibrates on val from here)."""
    rows = []
    for name in SPLITS:
        for source, label in zip(decoded[name].sources, decoded[name].labels):
            rows.append({"path": ds.describe(source) if ds.array is None else int(source),
                         "label": ds.class_names[int(label)], "split": name})
    write_csv(path, rows, ("path", "label", "split"))


def train_per_category(data: str | os.PathLike, out_dir: str | os.PathLike, **kwargs) -> list[TrainResult]:
    """Trains one model per category: every sub-folder of ``data`` is a dataset, trained into ``out_dir/<name>``.

    This is how per-category content models (adult / violence / cartoon, each against neutral) are built; the
    runtime combines them with several ``--model`` options.

    Raises:
        DataError: If ``data`` has no sub-folders.
    """
    root = Path(data)
    categories = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    if not categories:
        raise DataError(f"{root} has no category folders. A per-category recipe expects DATA/<category>/<class>/... "
                        "with one dataset per category.")
    return [train(category, Path(out_dir) / category.name, **kwargs) for category in categories]
