"""A training run's directory: its state file, resuming, and ``--force`` replacing a finished run safely."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from edgeclf.edge_runtime.errors import ConfigError

from .io import ensure_writable_dir, write_json

# Everything a run writes; --force removes these and nothing else.
RUN_FILES = ("model.keras", "metadata.json", "history.csv", "metrics.json", "splits.csv", "report.md",
             "run_state.json", "training_curves.png", "confusion_train.png", "confusion_val.png", "confusion_test.png",
             "roc_pr_train.png", "roc_pr_val.png", "roc_pr_test.png")
RUN_DIRS = ("checkpoints", "cache")
REPLACED = ".edgeclf-replaced"  # the run --force replaces, kept until the new run has finished


class RunState:
    """``run_state.json``: the settings of the run and which fold/phase steps are finished."""

    def __init__(self, path: Path, config: dict):
        self.path = path
        self.config = config
        self.status = "running"
        self.done: dict[str, dict] = {}
        self.folds: dict[str, dict] = {}
        self.epoch_s: dict[str, float] = {}  # "fold/phase/epoch": seconds of training, validation left out

    @classmethod
    def load(cls, path: Path) -> "RunState | None":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        state = cls(path, raw.get("config", {}))
        state.status, state.done, state.folds = raw.get("status"), raw.get("done", {}), raw.get("folds", {})
        state.epoch_s = raw.get("epoch_s", {})
        return state

    def save(self) -> None:
        write_json(self.path, {"status": self.status, "config": self.config, "done": self.done, "folds": self.folds,
                               "epoch_s": self.epoch_s})


def config_diff(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """Dotted keys whose values differ between two nested settings dicts, with both values."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


def prepare_run_dir(out: Path, config: dict, force: bool) -> tuple[RunState, bool, str | None]:
    """Creates, resumes or (with force) clears the run directory.

    An unfinished run that trained nothing (it stopped before its first epoch ended: an ImageNet download that
    failed offline, a weights file that did not fit) has nothing to resume, so a command with other settings
    starts again in its place without ``--force``; its decoded-image cache stays and is reused when it fits.

    Returns:
        The state, whether it resumes, and what was started again (the changed settings), or None.
    """
    state_path = out / "run_state.json"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file. Expected a directory for the run.")
    restarted = None
    if out.is_dir() and any(out.iterdir()):
        previous = RunState.load(state_path)
        if force:
            set_aside(out)
        elif previous is None:
            raise ConfigError(f"{out} is not empty and holds no edgeclf run. Choose another --out, or pass --force.")
        elif previous.status == "done":
            raise ConfigError(f"{out} already holds a finished run. Choose another --out, or pass --force to replace it.")
        elif previous.config != config:
            changed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in config_diff(previous.config, config))
            if not trained_anything(out, previous):
                clear_run(out, keep=("cache",))
                restarted = changed
            else:
                raise ConfigError(
                    f"{out} holds an unfinished run with other settings ({changed}). Run the same command to resume "
                    "it, or pass --force to start again."
                )
        else:
            return previous, True, None
    ensure_writable_dir(out)
    state = RunState(state_path, config)
    state.save()
    return state, False, restarted


def set_aside(out: Path) -> None:
    """Moves what a run wrote into ``out/.edgeclf-replaced``: ``--force`` keeps the old run until the new one has
    finished (then ``train`` deletes it), and puts it back if the new one fails."""
    aside = out / REPLACED
    aside.mkdir(exist_ok=True)
    for name in (*RUN_FILES, *RUN_DIRS):
        if (out / name).exists():
            os.replace(out / name, aside / name)


def restore_replaced(out: Path) -> bool:
    """Puts back a run ``set_aside`` moved, removing what the new run wrote; False when there is none."""
    aside = out / REPLACED
    if not aside.is_dir():
        return False
    clear_run(out)
    for entry in aside.iterdir():
        os.replace(entry, out / entry.name)
    aside.rmdir()
    return True


def recover_replaced(out: Path) -> bool:
    """After a ``--force`` run that was killed (``kill -9``, a power cut) before it finished: puts the run it was
    replacing back. A new run that finished and was killed only before deleting the old one keeps its place."""
    aside = out / REPLACED
    if not aside.is_dir():
        return False
    state = RunState.load(out / "run_state.json")
    if state is not None and state.status == "done":
        shutil.rmtree(aside, ignore_errors=True)
        return False
    return restore_replaced(out)


def clear_run(out: Path, keep: Sequence[str] = ()) -> None:
    """Removes what a run wrote (``RUN_FILES``, ``RUN_DIRS`` but ``keep``) and nothing else."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        if name not in keep:
            shutil.rmtree(out / name, ignore_errors=True)


def trained_anything(out: Path, state: RunState) -> bool:
    """Whether an unfinished run finished a phase or a fold, or saved a checkpoint (one is saved every epoch)."""
    checkpoints = out / "checkpoints"
    return bool(state.done or state.folds) or (checkpoints.is_dir() and any(
        p.is_file() for p in checkpoints.rglob("*")))
