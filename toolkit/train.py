"""``edgeclf train``: fine-tune a registered backbone on a folder of images and write a complete run directory.

The run directory holds ``model.keras``, ``metadata.json``, ``history.csv``, ``metrics.json``, ``splits.csv``,
plots and ``report.md``. ``run_state.json`` records progress so that a killed run resumes from its last
checkpoint when the same command is run again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

import edgeclf
from edgeclf.edge_runtime.artifact import sha256_file
from edgeclf.edge_runtime.errors import DataError
from edgeclf.edge_runtime.preprocess import PreprocessSpec
from edgeclf.models import HeadSpec, ModelSpec, check_weights, create_model, format_img_size

from . import plots
from ._deps import gpu_names, import_keras, import_tf
from .augment import augment_for
from .callbacks import history_rows
from .distribute import global_batch
from .distribute import setup as setup_distribution
from .data import (SPLITS, DecodedSplit, balanced_class_weights, class_counts, decode_samples,
                   discover, fingerprint, imbalance_ratio)
from .evaluate import evaluate_splits
from .fit import fit_fold, steps_per_epoch
from .io import atomic_path, clean_leftovers, write_csv, write_json
from .leakage import find_leaks
from .pipeline import make_dataset
from .progress import Reporter
from .report import write_train_report
from .run_dir import REPLACED, RUN_DIRS, RunState, prepare_run_dir, recover_replaced, restore_replaced
from .splits import assign_splits, stratified_folds
# TrainSpec and its defaults live in train_spec; imported from here too, as edgeclf.toolkit.train.TrainSpec.
from .train_spec import (CLASS_WEIGHTS, IMBALANCE_THRESHOLD, LR_SCHEDULES, MIXED_PRECISION, MONITORS,  # noqa: F401
                         TrainSpec, auto_batch_size, auto_learning_rate)

logger = logging.getLogger(__name__)


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
    """Everything ``train`` does once the run directory is ready: decode and check the data, set up the device,
    fit each fold, keep the best, evaluate and write the run's record."""
    decoded, skipped, leakage, removed = _decode_and_check(ds, spec, preprocess, run, reporter)
    spec, chosen = spec.for_data(len(decoded["train"]))
    if chosen:
        reporter.stage(chosen[0].upper() + chosen[1:])
        ds.notes.append(f"Training: {chosen}.")
    use_weights = _check_class_balance(ds, decoded, spec, reporter)
    spec, device = _setup_device(keras, spec, model_spec, ds, reporter)

    k = len(ds.class_names)
    fold_splits = _fold_splits(decoded, spec, ds, leakage, reporter)
    fold_scores = _fit_folds(fold_splits, model_spec, spec, run, state, k if use_weights else None, device.mixed,
                             reporter, callbacks, device.dist, keras)
    best_fold = _best_fold(fold_scores, spec.monitor)
    model = _save_best_model(run, state, best_fold, fold_splits[best_fold][0], model_spec, spec)

    reporter.stage("Evaluating on train, val and test")
    final_splits = {"train": fold_splits[best_fold][0], "val": fold_splits[best_fold][1], "test": decoded["test"]}
    metrics = evaluate_splits(model, final_splits, ds.class_names, run, spec.batch_size)
    history = history_rows(run / "history.csv")
    if history:
        plots.plot_history(history, run / "training_curves.png")
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
    metadata = _run_metadata(data, run, ds, decoded, final_splits, model_spec, preprocess, spec, device,
                             use_weights, skipped, leakage, removed, _epoch_times(state, best_fold), wall)
    write_json(run / "metadata.json", metadata)
    write_train_report(run, metadata, metrics_doc)
    state.status = "done"
    state.save()
    if not spec.keep_cache:  # only needed to resume; VGG checkpoints alone are hundreds of MB
        for name in RUN_DIRS:
            shutil.rmtree(run / name, ignore_errors=True)
    return TrainResult(run, run / "model.keras", ds.class_names, metrics, folds_out, skipped, leakage, wall, resumed)


def _decode_and_check(ds, spec: TrainSpec, preprocess: PreprocessSpec, run: Path, reporter: Reporter):
    """Splits and decodes the data (skipped files reported), checks the splits for leakage (removing copies with
    ``--dedup``), and refuses an empty train or val split. Returns the decoded splits, what was skipped, the
    leakage found and what dedup removed."""
    samples = assign_splits(ds, spec.split, spec.seed)
    decoded = _decode_all(ds, samples, preprocess, run / "cache", reporter)
    skipped = [s for name in SPLITS for s in decoded[name].skipped]
    for name, reason in skipped:
        reporter.warn(f"Skipped {name}: {reason}")
    leakage, removed = _check_split_leakage(ds, decoded, spec, reporter)
    for name in ("train", "val"):
        if not len(decoded[name]):
            raise DataError(f"The {name} split has no readable images. Add images or change --split.")
    return decoded, skipped, leakage, removed


@dataclass(frozen=True)
class _Device:
    """Where the run trains: the Keras backend, GPU names, mixed precision, and the distribution (or None)."""

    backend: str
    gpus: list
    mixed: bool
    dist: object


def _setup_device(keras, spec: TrainSpec, model_spec: ModelSpec, ds, reporter: Reporter) -> tuple[TrainSpec, _Device]:
    """Sets up distribution (the batch size rounded to the devices), seeds and op determinism, and says where the
    run trains; returns the spec with the batch size used."""
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
    where = f"GPU ({gpus[0]})" if gpus else "CPU"
    reporter.stage(f"Training {model_spec.backbone} at {format_img_size(model_spec.img_size)} on {where}"
                   + (" with mixed precision" if mixed else "")
                   + ("" if backend == "tensorflow" else f" (Keras backend {backend})"))
    return spec, _Device(backend, gpus, mixed, dist)


def _run_metadata(data, run: Path, ds, decoded: dict, final_splits: dict, model_spec: ModelSpec,
                  preprocess: PreprocessSpec, spec: TrainSpec, device: _Device, use_weights: bool, skipped: list,
                  leakage: dict, removed, epoch_times: dict, wall: float) -> dict:
    """The run's ``metadata.json``: what export, predict and a reader need to use and reproduce the model."""
    # The record describes the images the saved model trained and was validated on: with K folds, the kept fold's
    # part of train+val (splits.csv is what export calibrates on and what a reader reproduces the run from).
    k = len(ds.class_names)
    kept_counts = {name: class_counts(final_splits[name].labels, k) for name in SPLITS}
    return {
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
            "class_counts": {name: {c: int(n) for c, n in zip(ds.class_names, kept_counts[name])} for name in SPLITS},
            "imbalance_ratio": imbalance_ratio(kept_counts["train"]),
            "class_weights": balanced_class_weights(kept_counts["train"]) if use_weights else None,
            "skipped": [{"path": n, "reason": r} for n, r in skipped],
            "leakage": leakage,
            "removed_by_dedup": removed,
            "notes": ds.notes,
        },
        "hardware": {"gpus": device.gpus, "mixed_precision": device.mixed, "keras_backend": device.backend,
                     "distribution": device.dist.to_dict() if device.dist is not None else None},
        "epoch_train_s": epoch_times,
        "wall_time_s": round(wall, 1),
    }


def _fold_splits(decoded: dict[str, DecodedSplit], spec: TrainSpec, ds, leakage: dict, reporter: Reporter
                 ) -> list[tuple[DecodedSplit, DecodedSplit]]:
    """(train, val) of each fold: the run's own train and val, or K folds of the two pooled (each checked for
    duplicates of its own train, recorded in ``leakage["folds"]``)."""
    if spec.folds == 1:
        return [(decoded["train"], decoded["val"])]
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
    return fold_splits


def _fit_folds(fold_splits, model_spec: ModelSpec, spec: TrainSpec, run: Path, state: RunState,
               weighted_classes: int | None, mixed: bool, reporter: Reporter, callbacks: Sequence, dist, keras
               ) -> list[dict]:
    """Fits every fold not finished yet (a resumed run skips those that are) and returns each fold's val scores.
    ``weighted_classes``: the class count when class weights are used, else None."""
    previous_policy = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for fold, (tr, va) in enumerate(fold_splits):
            if str(fold) in state.folds:
                continue
            cw = balanced_class_weights(class_counts(tr.labels, weighted_classes)) if weighted_classes else None
            model = fit_fold(fold, tr, va, model_spec, spec, run, state, cw, reporter, callbacks, dist)
            scores = model.evaluate(make_dataset(va.pixels, va.labels, spec.batch_size, shuffle=False, seed=0),
                                    verbose=0, return_dict=True)
            state.folds[str(fold)] = {"val_loss": float(scores["loss"]), "val_accuracy": float(scores["accuracy"]),
                                      "n_train": len(tr), "n_val": len(va)}
            state.save()
            keras.backend.clear_session(free_memory=True)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    return [state.folds[str(f)] for f in range(len(fold_splits))]


def _best_fold(fold_scores: list[dict], monitor: str) -> int:
    values = [s[monitor] for s in fold_scores]  # MONITORS are the scores' own keys
    return int(np.argmin(values) if monitor == "val_loss" else np.argmax(values))


def _save_best_model(run: Path, state: RunState, best_fold: int, best_train: DecodedSplit, model_spec: ModelSpec,
                     spec: TrainSpec):
    """Writes ``model.keras`` from the best fold's last finished phase, and returns that model."""
    last_phase = max(int(kp.split("/")[1]) for kp in state.done if kp.startswith(f"{best_fold}/"))
    # Rebuilt after the float32 policy is back: a model trained under mixed precision is saved (and exported)
    # with float32 layers, its float32 master weights loaded from the checkpoint.
    # A from-scratch model keeps the BatchNorm momentum it trained with (its config is saved with it).
    steps = steps_per_epoch(best_train, spec) if model_spec.weights == "none" else None
    model = create_model(ModelSpec.from_dict({**model_spec.to_dict(), "weights": "none"}), steps_per_epoch=steps)
    model.load_weights(run / "checkpoints" / f"fold{best_fold}_phase{last_phase}.weights.h5")
    with atomic_path(run / "model.keras", suffix=".keras") as tmp:
        model.save(tmp)
    return model


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
