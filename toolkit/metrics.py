"""Classification metrics from labels and predicted probabilities (NumPy only, sklearn's definitions)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgeclf.edge_runtime.classifier import check_threshold
from edgeclf.edge_runtime.errors import ConfigError

BINARY_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default); sound near 0 and 1, unlike the normal approximation.

    Raises:
        ValueError: If ``n`` is not positive or ``successes`` is outside 0..n.
    """
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"Received: successes={successes}, n={n}. Expected n > 0 and 0 <= successes <= n.")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts; rows are true classes, columns predicted."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    precision = _safe_div(tp, cm.sum(axis=0))
    recall = _safe_div(tp, cm.sum(axis=1))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return precision, recall, f1


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(sorted_x)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float | None:
    """Binary ROC-AUC (Mann-Whitney U, ties count half); None when only one class is present."""
    y = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _ranks(np.asarray(score, np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rates, true-positive rates and thresholds, one point per distinct score (plus the origin)."""
    y = np.asarray(y_true).astype(bool)
    order = np.argsort(-np.asarray(score, np.float64), kind="mergesort")
    s, y = np.asarray(score, np.float64)[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps, fps = np.cumsum(y)[last], np.cumsum(~y)[last]
    fpr = np.r_[0.0, _safe_div(fps, max(int((~y).sum()), 0))]
    tpr = np.r_[0.0, _safe_div(tps, max(int(y.sum()), 0))]
    return fpr, tpr, np.r_[np.inf, s[last]]


def precision_recall_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at each distinct score threshold, highest threshold first."""
    y = np.asarray(y_true).astype(bool)
    order = np.argsort(-np.asarray(score, np.float64), kind="mergesort")
    s, y = np.asarray(score, np.float64)[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[last].astype(np.float64)
    precision = tps / (last + 1)
    recall = _safe_div(tps, max(int(y.sum()), 0))
    return precision, recall


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the precision-recall curve as sum((R_n - R_{n-1}) * P_n); None without positives."""
    if not np.asarray(y_true).astype(bool).any():
        return None
    precision, recall = precision_recall_curve(y_true, score)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _macro(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def threshold_table(y_true: np.ndarray, positive_score: np.ndarray, thresholds: Sequence[float] = BINARY_THRESHOLDS) -> list[dict]:
    """For a binary problem: accuracy, precision, recall and F1 of the positive class (index 1) at each threshold."""
    y = np.asarray(y_true).astype(bool)
    rows = []
    for t in thresholds:
        pred = np.asarray(positive_score) >= t
        tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        rows.append({
            "threshold": float(t),
            "accuracy": float((pred == y).mean()) if len(y) else 0.0,
            "precision": p,
            "recall": r,
            "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "predicted_positive": int(pred.sum()),
        })
    return rows


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                           threshold: float | None = None) -> dict:
    """Everything edgeclf reports for one split.

    Args:
        y_true: (N,) true class indices.
        probs: (N, C) predicted probabilities.
        class_names: C names in index order.
        threshold: Two classes only: predict class 1 where its probability reaches this (as ``predict
            --threshold`` decides), instead of the most probable class. Recorded in the result.

    Returns:
        A JSON-ready dict: n, accuracy, macro and weighted precision/recall/F1, per-class figures, ROC-AUC and
        PR-AUC (binary: of class 1; multiclass: macro one-vs-rest), the confusion matrix and, for two classes,
        a threshold table.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if probs.ndim != 2 or probs.shape != (len(y_true), k):
        raise ConfigError(f"Received probabilities of shape {probs.shape}. Expected ({len(y_true)}, {k}).")
    check_threshold(threshold, [("these probabilities", class_names)])
    y_pred = probs.argmax(axis=1) if threshold is None else (probs[:, 1] >= threshold).astype(np.int64)
    cm = confusion_matrix(y_true, y_pred, k)
    precision, recall, f1 = precision_recall_f1(cm)
    support = cm.sum(axis=1)
    weights = support / support.sum() if support.sum() else np.zeros(k)
    # Macro averages over the classes that occur, as true or as predicted labels (scikit-learn's default): a class
    # the model predicts but the images never hold counts with F1 0 instead of leaving the average flattered.
    present = (support > 0) | (cm.sum(axis=0) > 0)
    if k == 2:
        auc, ap = roc_auc(y_true == 1, probs[:, 1]), average_precision(y_true == 1, probs[:, 1])
    else:
        auc = _macro([roc_auc(y_true == c, probs[:, c]) for c in range(k)])
        ap = _macro([average_precision(y_true == c, probs[:, c]) for c in range(k)])
    out = {
        "n": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
        "precision_macro": float(precision[present].mean()) if present.any() else 0.0,
        "recall_macro": float(recall[present].mean()) if present.any() else 0.0,
        "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
        "f1_weighted": float((f1 * weights).sum()),
        "roc_auc": auc,
        "pr_auc": ap,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
    }
    if threshold is not None:
        out["threshold"] = float(threshold)
    if k == 2:
        out["thresholds"] = threshold_table(y_true, probs[:, 1])
    return out
