"""Fitting one model: its phases (frozen backbone, then fine-tuning), learning-rate schedules, checkpoints that
let a killed run resume, and BatchNorm statistics recomputed at the end of each phase."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from edgeclf.models import ModelSpec, create_model, get_backbone_model

from ._deps import import_keras
from .augment import build_augmenter
from .callbacks import (best_checkpoint, best_so_far, epoch_seeds, epoch_timer, history_logger, save_weights,
                        schedule_state)
from .data import DecodedSplit
from .distribute import Distribution
from .pipeline import EpochClock, batches_per_epoch, make_dataset
from .precise_bn import recompute_batchnorm
from .progress import Reporter
from .run_dir import RunState
from .train_spec import TrainSpec


def set_trainable(model, phase: int, fine_tune_layers: int, pretrained: bool) -> None:
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


def steps_per_epoch(split: DecodedSplit, spec: TrainSpec) -> int:
    return batches_per_epoch(len(split), spec.batch_size, drop_remainder=True)


def _learning_rate(keras, spec: TrainSpec, lr: float, epochs: int, train_split: DecodedSplit):
    """The optimizer's learning rate for one phase: ``lr``, or a schedule of steps for ``lr_schedule="cosine"``.

    A schedule counts the optimizer's own steps, which a resumed run restores with the optimizer, so it resumes
    where it stopped.
    """
    if not spec.reduce_lr or spec.lr_schedule != "cosine":
        return lr
    total = steps_per_epoch(train_split, spec) * epochs
    warmup = min(steps_per_epoch(train_split, spec), total // 10)
    return keras.optimizers.schedules.CosineDecay(0.0 if warmup else lr, max(total - warmup, 1), alpha=0.0,
                                                  warmup_target=lr if warmup else None, warmup_steps=warmup)


def fit_fold(fold: int, train_split: DecodedSplit, val_split: DecodedSplit, model_spec: ModelSpec, spec: TrainSpec,
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
    model = create_model(model_spec, steps_per_epoch=steps_per_epoch(train_split, spec))
    augmenter = build_augmenter(spec.augment, spec.seed + fold)
    clock = EpochClock()
    shard = dist.sharding if dist is not None and dist.backend == "jax" else None
    train_ds = make_dataset(train_split.pixels, train_split.labels, spec.batch_size, shuffle=True,
                            seed=spec.seed + fold, augmenter=augmenter, clock=clock,
                            drop_remainder=True, sharding=None if shard is None else replace(shard, pad_to=1))
    val_ds = make_dataset(val_split.pixels, val_split.labels, spec.batch_size, shuffle=False, seed=spec.seed,
                          sharding=shard)
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
        set_trainable(model, phase, spec.fine_tune_layers, model_spec.pretrained)
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
            epoch_seeds(keras, clock, first_epoch, [model]),
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
