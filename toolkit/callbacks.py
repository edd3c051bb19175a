"""The Keras callbacks of a training run: history, per-epoch seeds, timing, best checkpoint, schedule state.

Each keeps what a killed run needs to resume as the uninterrupted one would.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .io import atomic_path, write_csv, write_json
from .pipeline import EpochClock, is_seed_state, seed_state_at
from .run_dir import RunState

HISTORY_FIELDS = ("fold", "phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")


def history_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def history_logger(keras, path: Path, fold: int, phase: int):
    class HistoryLogger(keras.callbacks.Callback):
        """Upserts one row per (fold, phase, epoch) into history.csv, so a resumed epoch replaces its old row."""

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            row = {"fold": fold, "phase": phase, "epoch": epoch,
                   "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))}
            row.update({k: float(v) for k, v in logs.items() if k in HISTORY_FIELDS})
            rows = [r for r in history_rows(path)
                    if (int(r["fold"]), int(r["phase"]), int(r["epoch"])) != (fold, phase, epoch)]
            rows.append(row)
            rows.sort(key=lambda r: (int(r["fold"]), int(r["phase"]), int(r["epoch"])))
            write_csv(path, rows, HISTORY_FIELDS)

    return HistoryLogger()


def epoch_seeds(keras, clock: EpochClock, first_epoch: int, rngs: Sequence):
    class EpochSeeds(keras.callbacks.Callback):
        """Before each epoch: the pipeline's clock, and the random layers' draws, follow the epoch's number.

        A resumed run restores weights and optimizer but starts a new process, where the shuffle, the augmentation
        and dropout would otherwise draw again from their seeds' start. Setting the clock to the epoch (counted
        over the fold's phases from ``first_epoch``) and each random layer's counter to one drawn from it makes
        every epoch's draws the same whether the run got there in one go or resumed.
        """

        def on_epoch_begin(self, epoch, logs=None):
            clock.epoch = first_epoch + epoch
            for layers in rngs:
                for v in filter(is_seed_state, layers.non_trainable_variables):
                    v.assign(seed_state_at(np.asarray(keras.ops.convert_to_numpy(v.value)), clock.epoch << 20))

    return EpochSeeds()


def epoch_timer(keras, state: RunState, fold: int, phase: int):
    class EpochTimer(keras.callbacks.Callback):
        """Records each epoch's training time (validation left out) in the run state: the report's steady epoch
        time, comparable with a script that does not validate."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started, self.trained = time.perf_counter(), None

        def on_test_begin(self, logs=None):
            if self.trained is None:
                self.trained = time.perf_counter() - self.started

        def on_epoch_end(self, epoch, logs=None):
            trained = self.trained if self.trained is not None else time.perf_counter() - self.started
            state.epoch_s[f"{fold}/{phase}/{epoch}"] = round(trained, 3)
            state.save()

    return EpochTimer()


def save_weights(model, path: Path) -> None:
    """``model.save_weights`` written beside ``path`` and renamed onto it: a kill mid-write leaves the old file."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)


def best_checkpoint(keras, path: Path, monitor: str, mode: str, best: float | None):
    class BestCheckpoint(keras.callbacks.Callback):
        """Saves the weights whenever ``monitor`` beats the fold's best so far (``best``: from earlier phases and
        processes), written beside ``path`` and renamed onto it: a run killed mid-write keeps its previous best,
        where Keras' ModelCheckpoint, writing in place, left a damaged file the end of the run failed to load."""

        def __init__(self):
            super().__init__()
            self.best = best

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            if value is None or np.isnan(value):
                return
            if self.best is None or (value < self.best if mode == "min" else value > self.best):
                self.best = float(value)
                save_weights(self.model, path)

    return BestCheckpoint()


def schedule_state(keras, path: Path, schedules: Sequence):
    class ScheduleState(keras.callbacks.Callback):
        """Keeps early stopping's and the plateau schedule's counters across a resume.

        Keras' BackupAndRestore restores weights, optimizer and epoch, but these callbacks start afresh with each
        ``fit``: a resumed run waited its full patience again. Their counters are saved with each epoch, under the
        epoch a resume would start at, and restored when BackupAndRestore (earlier in the list) resumes at that
        epoch. The two latest are kept, as BackupAndRestore keeps two backups.
        """

        counters = ("wait", "best_epoch", "stopped_epoch", "cooldown_counter")

        def on_train_begin(self, logs=None):
            saved = json.loads(path.read_text()) if path.exists() else {}
            states = saved.get(str(getattr(self.model, "_initial_epoch", None)))  # set by BackupAndRestore
            for cb, state in zip(schedules, states or []):
                for name, value in state.items():
                    setattr(cb, name, value)

        def on_epoch_end(self, epoch, logs=None):
            states = []
            for cb in schedules:
                state = {name: int(getattr(cb, name)) for name in self.counters if hasattr(cb, name)}
                state["best"] = None if cb.best is None else float(cb.best)
                states.append(state)
            saved = json.loads(path.read_text()) if path.exists() else {}
            write_json(path, {**{k: v for k, v in saved.items() if k == str(epoch)}, str(epoch + 1): states})

    return ScheduleState()


def best_so_far(path: Path, fold: int, monitor: str) -> float | None:
    values = [float(r[monitor]) for r in history_rows(path) if int(r["fold"]) == fold and r.get(monitor) not in (None, "")]
    if not values:
        return None
    return min(values) if monitor.endswith("loss") else max(values)
