"""Metrics against values computed by hand (sklearn's definitions)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeclf.toolkit.metrics import (average_precision, classification_metrics, confusion_matrix, roc_auc,
                                     roc_curve, threshold_table)


def test_roc_auc_and_average_precision_known_values():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(y, s) == pytest.approx(0.75)
    assert average_precision(y, s) == pytest.approx(0.8333333)


def test_roc_auc_counts_ties_half_and_handles_one_class():
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(np.array([1, 1]), np.array([0.2, 0.9])) is None
    assert average_precision(np.array([0, 0]), np.array([0.2, 0.9])) is None


def test_roc_curve_ends_at_one():
    fpr, tpr, _ = roc_curve(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.6, 0.3]))
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_classification_metrics_multiclass():
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.8 + 0.2 / 3
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m["n"] == 6 and m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8),
                                   "support": 2}
    # a: P=R=1/2 -> F1 1/2; b: 0.8; c: P=1, R=1/2 -> F1 2/3
    assert m["f1_macro"] == pytest.approx(np.mean([0.5, 0.8, 2 / 3]))
    assert "thresholds" not in m and 0 <= m["roc_auc"] <= 1


def test_macro_averages_count_classes_predicted_but_absent_and_skip_classes_never_seen():
    y = np.array([0, 0, 1, 1])  # no image of c; the model calls one b image c; d is neither true nor predicted
    probs = np.eye(4)[[0, 0, 1, 2]]
    m = classification_metrics(y, probs, ["a", "b", "c", "d"])
    # a: F1 1; b: P 1, R 1/2 -> 2/3; c: predicted once, never true -> 0 (as scikit-learn); d: left out
    assert m["f1_macro"] == pytest.approx(np.mean([1.0, 2 / 3, 0.0]))
    assert m["recall_macro"] == pytest.approx(np.mean([1.0, 0.5, 0.0]))


def test_classification_metrics_binary_has_threshold_table():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    m = classification_metrics(y, np.stack([1 - p1, p1], axis=1), ["neg", "pos"])
    assert m["roc_auc"] == pytest.approx(0.75) and m["pr_auc"] == pytest.approx(0.8333333)
    row = {r["threshold"]: r for r in m["thresholds"]}[0.3]
    assert row["predicted_positive"] == 3 and row["recall"] == 1.0 and row["precision"] == pytest.approx(2 / 3)


def test_classification_metrics_decide_at_a_threshold():
    from edgeclf.edge_runtime import ConfigError

    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.2, 0.6, 0.65, 0.9])
    probs = np.stack([1 - p1, p1], axis=1)
    assert classification_metrics(y, probs, ["neg", "pos"])["confusion_matrix"] == [[1, 1], [0, 2]]
    m = classification_metrics(y, probs, ["neg", "pos"], threshold=0.62)
    assert m["confusion_matrix"] == [[2, 0], [0, 2]] and m["accuracy"] == 1.0 and m["threshold"] == 0.62
    assert m["roc_auc"] == 1.0  # ranking figures do not depend on the threshold
    with pytest.raises(ConfigError, match="3 classes. A threshold applies to two-class models only"):
        classification_metrics(np.array([0]), np.full((1, 3), 1 / 3), ["a", "b", "c"], threshold=0.5)


def test_threshold_table_extremes():
    rows = threshold_table(np.array([1, 0]), np.array([0.95, 0.05]), thresholds=(0.0, 1.0))
    assert rows[0]["recall"] == 1.0 and rows[0]["precision"] == 0.5
    assert rows[1]["predicted_positive"] == 0 and rows[1]["f1"] == 0.0


def test_shape_mismatch_is_an_error():
    from edgeclf.edge_runtime import ConfigError

    with pytest.raises(ConfigError, match="Expected \\(2, 3\\)"):
        classification_metrics(np.array([0, 1]), np.zeros((2, 2)), ["a", "b", "c"])


def test_wilson_interval_known_values():
    from edgeclf.toolkit.metrics import wilson_interval

    assert wilson_interval(50, 100) == pytest.approx((0.40383, 0.59617), abs=1e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27754), abs=1e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.72246, 1.0), abs=1e-5)
    lo, hi = wilson_interval(9798, 10000)
    assert lo < 0.9798 < hi and hi - lo < 0.006
    with pytest.raises(ValueError, match="n > 0"):
        wilson_interval(1, 0)


def test_threshold_section_chooses_on_val_and_reports_test():
    from edgeclf.toolkit.report import threshold_section

    # On val the best F1 is at 0.5; on test it would be at 0.9 - the report must not pick that one.
    y_val, p_val = np.array([0, 0, 1, 1, 1]), np.array([0.45, 0.2, 0.6, 0.55, 0.95])
    y_test, p_test = np.array([0, 0, 1, 1]), np.array([0.6, 0.3, 0.95, 0.92])
    val, test = {"thresholds": threshold_table(y_val, p_val)}, {"thresholds": threshold_table(y_test, p_test)}
    lines = threshold_section(val, test, "no_helmet")
    assert lines[0] == "### Thresholds on P(no_helmet): choose on val, confirm on test"
    marked = [line for line in lines if line.startswith("| **")]
    assert len(marked) == 1 and marked[0].startswith("| **0.5** |")
    assert lines[-1].startswith("Best val F1 (1.0000) at threshold 0.5: on test, accuracy 0.7500")
    assert "--threshold 0.5" in lines[-1]
    fallback = threshold_section(None, test, "no_helmet")
    assert fallback[0] == "### Test, thresholds on P(no_helmet)" and len(fallback) == 4 + len(test["thresholds"])


def test_a_class_name_no_font_can_draw_is_plotted_without_warnings(tmp_path, recwarn):
    import warnings

    from edgeclf.toolkit.plots import plot_confusion

    warnings.simplefilter("always")
    path = plot_confusion(np.array([[3, 1], [0, 4]]), ["boot \U0001F45F", "bag"], tmp_path / "cm.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [w for w in recwarn if "Glyph" in str(w.message)]
