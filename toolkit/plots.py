"""PNG plots for run reports: training curves, confusion matrix, ROC and precision-recall curves."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ._deps import import_pyplot
from .io import atomic_path
from .metrics import precision_recall_curve, roc_curve


def _save(fig, path: Path) -> Path:
    plt = import_pyplot()
    with atomic_path(path, suffix=".png") as tmp, warnings.catch_warnings():
        # A class name with a character no installed font has (an emoji) is drawn as a box; the names are spelled
        # out in the report and metrics beside the plot, so that is not worth a warning per plot on the terminal.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_history(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """Loss and accuracy per epoch (train and validation), phases and folds drawn one after another."""
    plt = import_pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((int(r["fold"]), int(r["phase"])), []).append(r)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for (fold, phase), rs in sorted(groups.items()):
            rs = sorted(rs, key=lambda r: int(r["epoch"]))
            x = [int(r["epoch"]) + 1 for r in rs]
            tag = f"fold {fold} " if len(groups) > 2 or fold else ""
            tag += f"phase {phase}"
            ax.plot(x, [float(r[metric]) for r in rs], "-", label=f"train {tag}")
            if rs[0].get(f"val_{metric}") not in (None, ""):
                ax.plot(x, [float(r[f"val_{metric}"]) for r in rs], "--", label=f"val {tag}")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, Path(path))


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, title: str) -> Path:
    """Confusion matrix with counts, rows true and columns predicted."""
    plt = import_pyplot()
    cm = np.asarray(cm)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * k, 1.0 + 0.5 * k))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > threshold else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, Path(path))


def plot_roc_pr(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str], path: str | os.PathLike) -> Path:
    """ROC and precision-recall curves: the positive class for two classes, one-vs-rest per class otherwise."""
    plt = import_pyplot()
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4))
    classes = [1] if len(class_names) == 2 else range(len(class_names))
    for c in classes:
        y = np.asarray(y_true) == c
        if y.all() or not y.any():
            continue
        fpr, tpr, _ = roc_curve(y, probs[:, c])
        precision, recall = precision_recall_curve(y, probs[:, c])
        ax_roc.plot(fpr, tpr, label=class_names[c])
        ax_pr.step(np.r_[0.0, recall], np.r_[1.0, precision], where="post", label=class_names[c])
    ax_roc.plot([0, 1], [0, 1], ":", color="grey")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    for ax in (ax_roc, ax_pr):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[1]:  # a split holding a single class has no curve to label
            ax.legend(fontsize=7)
    return _save(fig, Path(path))
