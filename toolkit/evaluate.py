"""Metrics and plots for a model on decoded splits, and ``edgeclf evaluate`` for a saved model."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeclf.edge_runtime.artifact import check_keras_file, read_run_metadata
from edgeclf.edge_runtime.classifier import check_threshold
from edgeclf.edge_runtime.errors import ConfigError, DataError
from edgeclf.edge_runtime.preprocess import PreprocessSpec

from . import plots
from .data import DecodedSplit, decode_samples, discover
from .io import ensure_writable_dir, write_json
from .metrics import classification_metrics
from .pipeline import predict_probs
from .progress import Reporter

if TYPE_CHECKING:  # the export package is imported only for a foreign model
    from .export.foreign import ForeignSpec

logger = logging.getLogger(__name__)


def evaluate_splits(model, splits: dict[str, DecodedSplit], class_names: list[str], out_dir: Path | None,
                    batch_size: int = 64, threshold: float | None = None) -> dict[str, dict]:
    """Computes metrics per split and, with ``out_dir``, writes confusion-matrix and ROC/PR plots for each.

    ``threshold`` (two classes) decides class 1 where its probability reaches it; see ``classification_metrics``.

    Returns:
        ``{split: classification_metrics(...)}`` for every non-empty split.
    """
    return {name: split_metrics(name, split.labels, predict_probs(model, split.pixels, batch_size), class_names,
                                out_dir, threshold)
            for name, split in splits.items() if len(split)}


def split_metrics(name: str, labels: np.ndarray, probs: np.ndarray, class_names: list[str], out_dir: Path | None,
                  threshold: float | None = None) -> dict:
    """``classification_metrics`` of one split's predictions and, with ``out_dir``, its confusion and ROC/PR plots."""
    m = classification_metrics(labels, probs, class_names, threshold)
    if out_dir is not None:
        plots.plot_confusion(np.asarray(m["confusion_matrix"]), class_names, out_dir / f"confusion_{name}.png",
                             f"{name}: accuracy {m['accuracy']:.3f}")
        plots.plot_roc_pr(labels, probs, class_names, out_dir / f"roc_pr_{name}.png")
    return m


def load_keras_model(path: str | os.PathLike):
    """Loads a ``.keras`` file with safe_mode on.

    Raises:
        ConfigError: If the file is missing, not a Keras archive, or needs unsafe deserialisation, or Keras could
            load only part of its weights (see ``models.factory.whole_load``).
    """
    from edgeclf.models.factory import PartialLoadError, whole_load

    from ._deps import import_keras

    path = Path(path)
    check_keras_file(path)
    keras = import_keras()
    try:
        with whole_load():
            return keras.models.load_model(path, safe_mode=True, compile=False)
    except PartialLoadError as exc:
        raise ConfigError(
            f"Keras loaded only part of {path}'s weights ({' '.join(str(exc).split()).rstrip('.')}), so the model "
            "is refused: those layers would be random. The file was probably written by an older Keras that "
            "stored them elsewhere; save the model again with Keras 3.15."
        ) from None
    except Exception as exc:  # Keras raises ValueError/TypeError/OSError/zipfile errors alike
        raise ConfigError(
            f"Cannot load {path} as a Keras model with safe_mode on ({type(exc).__name__}: {str(exc)[:300]}). "
            "Models with Lambda or custom layers are not supported."
        ) from None


@dataclass(frozen=True)
class EvaluateResult:
    """Output of ``evaluate``: metrics on the evaluated images and what was skipped."""

    metrics: dict
    skipped: list
    out_dir: Path | None


def evaluate(model_path: str | os.PathLike, data: str | os.PathLike, *, split: str = "all",
             out_dir: str | os.PathLike | None = None, batch_size: int = 64, force: bool = False,
             threshold: float | None = None, foreign: ForeignSpec | None = None,
             reporter: Reporter | None = None) -> EvaluateResult:
    """Evaluates a saved model on a dataset in any form ``edgeclf train`` accepts.

    Args:
        model_path: A ``model.keras`` with its ``metadata.json``, or with ``foreign`` any ``.keras`` classifier.
        data: The dataset.
        split: ``"all"`` for every image, or ``train``/``val``/``test`` of a pre-split dataset.
        out_dir: Where to write ``metrics.json`` and plots; nothing is written without it.
        force: Replace an earlier evaluation's files in ``out_dir``.
        threshold: Two-class models: decide class 1 where its probability reaches this, as
            ``edgeclf predict --threshold`` does (the run's report.md suggests one chosen on val).
        foreign: A ``ForeignSpec`` for a Keras model trained outside edgeclf (no ``metadata.json``): its class
            names and input contract. The model is wrapped exactly as ``edgeclf export`` wraps it, so the figures
            are those of the model its artefacts are gated against.
        batch_size: Inference batch size.
        reporter: Progress sink.

    Raises:
        DataError: If the dataset's classes are not the model's.
    """
    reporter = reporter or Reporter()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and (out / "metrics.json").exists() and not force:
        raise ConfigError(f"{out / 'metrics.json'} already exists. Pass --force to overwrite it, or choose another "
                          "--out.")
    if out is not None:
        ensure_writable_dir(out)
    if foreign is None:
        meta = read_run_metadata(model_path)
        class_names = meta["class_names"]
    else:
        from .export.foreign import adapt_model, check_outputs, refuse_run_model

        check_keras_file(Path(model_path))
        refuse_run_model(Path(model_path))
        class_names = list(foreign.class_names)
    check_threshold(threshold, [(str(model_path), class_names)])
    model = load_keras_model(model_path)
    if foreign is not None:
        model, meta = adapt_model(model, foreign)
    ds = discover(data, min_classes=1)
    if split == "all":
        samples = ds.all_samples()
    elif split in ds.splits:
        samples = ds.splits[split]
    else:
        raise ConfigError(f"Received: split='{split}'. {data} has: all, {', '.join(ds.splits)}.")
    samples = ds.relabelled(samples, class_names)
    if samples is None:
        unknown = sorted(set(ds.class_names) - set(class_names))
        raise DataError(f"Classes {unknown} of {data} are not classes of the model ({', '.join(class_names)}).")
    spec = PreprocessSpec.from_dict(meta["preprocess"])
    with reporter.progress(len(samples), "Decoding images") as advance:
        decoded = decode_samples(ds, samples, spec, progress=advance)
    for name, reason in decoded.skipped:
        reporter.warn(f"Skipped {name}: {reason}")
    if not len(decoded):
        raise DataError(f"No readable images to evaluate in {data}.")
    probs = predict_probs(model, decoded.pixels, batch_size)
    if foreign is not None:
        check_outputs(probs, decoded.labels, class_names, reporter.warn)
    metrics = split_metrics(split, decoded.labels, probs, class_names, out, threshold)
    if out is not None:
        write_json(out / "metrics.json", {
            "model": str(model_path), "data": str(data), "split": split, "metrics": metrics,
            "skipped": [{"path": n, "reason": r} for n, r in decoded.skipped],
            **({"adapter": {**meta["adapter"], "class_names": class_names, "preprocess": meta["preprocess"]}}
               if foreign is not None else {}),
        })
    return EvaluateResult(metrics, decoded.skipped, out)
