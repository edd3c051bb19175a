"""``report.md`` for a run directory: data, leakage, training and metrics in one readable page."""

from __future__ import annotations

from pathlib import Path

from edgeclf.edge_runtime.preprocess import describe_fit
from edgeclf.models.factory import HeadSpec

from .io import write_text


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def metrics_table(splits: dict[str, dict]) -> list[str]:
    """Markdown rows: one line per split with the headline metrics."""
    lines = ["| split | n | accuracy | precision (macro) | recall (macro) | F1 (macro) | ROC-AUC | PR-AUC |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in splits.items():
        lines.append(f"| {name} | {m['n']} | {_fmt(m['accuracy'])} | {_fmt(m['precision_macro'])} | "
                     f"{_fmt(m['recall_macro'])} | {_fmt(m['f1_macro'])} | {_fmt(m['roc_auc'])} | {_fmt(m['pr_auc'])} |")
    return lines


def write_train_report(run: Path, meta: dict, metrics_doc: dict) -> Path:
    """Writes ``run/report.md`` and returns its path."""
    ds = meta["dataset"]
    names = meta["class_names"]
    lines = [
        f"# edgeclf run: {meta['backbone']} on {Path(ds['path']).name}",
        "",
        f"- edgeclf {meta['edgeclf_version']}, {meta['created']}, wall time {meta['wall_time_s']} s",
        f"- backbone `{meta['backbone']}`, input {meta['input']['shape']} RGB 0-255"
        + (f" ({fit})" if (fit := describe_fit(meta["preprocess"].get("crop"), meta["preprocess"].get("pad"))) else "")
        + f", weights `{meta['model']['weights']}`, "
        f"head: {HeadSpec(**meta['model']['head']).describe(len(names))}",
        f"- hardware: {'GPU ' + ', '.join(meta['hardware']['gpus']) if meta['hardware']['gpus'] else 'CPU'}"
        f"{', mixed precision' if meta['hardware']['mixed_precision'] else ''}"
        f", Keras backend {meta['hardware'].get('keras_backend', 'tensorflow')}",
        f"- dataset form `{ds['form']}`, fingerprint `{ds['fingerprint'][:16]}`",
        "",
        "## Data",
        "",
        "| class | " + " | ".join(ds["class_counts"]) + " |",
        "|---|" + "---:|" * len(ds["class_counts"]),
    ]
    for c in names:
        lines.append(f"| {c} | " + " | ".join(str(ds["class_counts"][s][c]) for s in ds["class_counts"]) + " |")
    lines += ["", f"Imbalance ratio (largest / smallest train class): {ds['imbalance_ratio']:.2f}. "
              + (f"Class weights applied: {ds['class_weights']}." if ds["class_weights"] else "No class weights.")]
    for note in ds["notes"]:
        lines.append(f"\n- {note}")
    lines += ["", f"### Skipped files ({len(ds['skipped'])})", ""]
    if ds["skipped"]:
        lines += ["| file | reason |", "|---|---|"] + [f"| {s['path']} | {s['reason']} |" for s in ds["skipped"]]
    else:
        lines.append("None: every image decoded.")
    lk = ds["leakage"]
    lines += ["", "### Split leakage", "",
              f"Exact duplicates (identical decoded pixels) and near-duplicates ({lk['hash']}, {lk['hash_bits']} bits, "
              f"distance <= {lk['threshold_bits']}) of an earlier split's image: {lk['exact_pairs']} exact, "
              f"{lk['near_pairs']} near; val images affected {lk['leaked_images']['val']}, test images "
              f"{lk['leaked_images']['test']}. Exact duplicates inside a split: {lk['within_split_exact_duplicates']}."]
    if lk.get("removed"):
        lines.append(f"Removed by --dedup: {lk['removed']}.")
    if lk.get("folds"):
        lines += ["", "K-fold (train and val pooled, then split into folds): val images that duplicate an image of "
                  "their own fold's train: " + ", ".join(
                      f"fold {f['fold']} {f['leaked_val_images']}" + (f" (removed {f['removed']})" if f["removed"] else "")
                      for f in lk["folds"]) + "."]
    if lk["examples"]:
        lines += ["", "| image | split | duplicate of | split | distance |", "|---|---|---|---|---:|"]
        lines += [f"| {e['path']} | {e['split']} | {e['other_path']} | {e['other_split']} | "
                  f"{'exact' if e['exact'] else e['distance']} |" for e in lk["examples"]]
    lines += ["", "## Metrics", ""] + metrics_table(metrics_doc["splits"])
    if metrics_doc.get("fold_summary"):
        fs = metrics_doc["fold_summary"]
        lines += ["", "### Cross-validation", "", "| fold | n train | n val | val accuracy | val loss |",
                  "|---:|---:|---:|---:|---:|"]
        lines += [f"| {f['fold']} | {f['n_train']} | {f['n_val']} | {f['val_accuracy']:.4f} | {f['val_loss']:.4f} |"
                  for f in metrics_doc["folds"]]
        lines.append(f"\nVal accuracy {fs['val_accuracy_mean']:.4f} ± {fs['val_accuracy_std']:.4f}; "
                     f"best fold {fs['best_fold']} is the saved model; the data table, the train and val metrics and "
                     "splits.csv are its own train and val images.")
    test = metrics_doc["splits"].get("test")
    if test:
        lines += ["", "### Test, per class", "", "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {c} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |"
                  for c, v in test["per_class"].items()]
        if "thresholds" in test:
            lines += [""] + threshold_section(metrics_doc["splits"].get("val"), test, names[1])
    lines += ["", "## Plots", ""]
    for png, title in (("training_curves.png", "Training curves"), ("confusion_test.png", "Confusion matrix (test)"),
                       ("roc_pr_test.png", "ROC and precision-recall (test)"),
                       ("confusion_val.png", "Confusion matrix (val)")):
        if (run / png).exists():
            lines += [f"### {title}", "", f"![{title}]({png})", ""]
    path = run / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def threshold_section(val: dict | None, test: dict, positive: str) -> list[str]:
    """Markdown for choosing a binary threshold: chosen on the val split, its figures confirmed on test.

    Picking the best row of a test-only table tunes the threshold on the test images; with val figures beside them
    the choice is made on val and test stays an honest estimate. Ties go to the threshold nearest 0.5.
    """
    rows = test["thresholds"]
    if not val or "thresholds" not in val:
        lines = [f"### Test, thresholds on P({positive})", "", "| threshold | accuracy | precision | recall | F1 |",
                 "|---:|---:|---:|---:|---:|"]
        return lines + [f"| {t['threshold']:.1f} | {t['accuracy']:.4f} | {t['precision']:.4f} | {t['recall']:.4f} | "
                        f"{t['f1']:.4f} |" for t in rows]
    on_val = val["thresholds"]
    best = max(range(len(on_val)), key=lambda i: (on_val[i]["f1"], -abs(on_val[i]["threshold"] - 0.5)))
    lines = [f"### Thresholds on P({positive}): choose on val, confirm on test", "",
             "| threshold | val precision | val recall | val F1 | test accuracy | test precision | test recall "
             "| test F1 |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, (v, t) in enumerate(zip(on_val, rows)):
        mark = "**" if i == best else ""
        lines.append(f"| {mark}{t['threshold']:.1f}{mark} | {v['precision']:.4f} | {v['recall']:.4f} | "
                     f"{v['f1']:.4f} | {t['accuracy']:.4f} | {t['precision']:.4f} | {t['recall']:.4f} | "
                     f"{t['f1']:.4f} |")
    b, tb = on_val[best], rows[best]
    lines += ["", f"Best val F1 ({b['f1']:.4f}) at threshold {b['threshold']:.1f}: on test, accuracy "
              f"{tb['accuracy']:.4f}, F1 {tb['f1']:.4f}. Use it with "
              f"`edgeclf predict --threshold {b['threshold']:.1f}`."]
    return lines
