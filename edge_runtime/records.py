"""The record ``predict`` writes per image, whichever engine made it (this process, or Ray actors): one place, so
JSON lines, CSV, Parquet and the local and distributed engines carry the same fields and values."""

from __future__ import annotations

from typing import Sequence

from .errors import ImageDecodeError


def model_record(result, threshold: float | None, top_k: int) -> dict:
    """``label``, ``score``, ``scores`` per class (and ``top_k`` when more than one is asked for) of one model."""
    best = result.decide(threshold)
    rec = {"label": best.label, "score": round(best.score, 6),
           "scores": {k: round(v, 6) for k, v in result.scores().items()}}
    if top_k > 1:
        rec["top_k"] = [{"label": p.label, "score": round(p.score, 6)} for p in result.top(top_k)]
    return rec


def image_record(path: str, classifiers: Sequence, results: Sequence, threshold: float | None, top_k: int) -> dict:
    """One image's record: ``path`` and ``error`` for an image that failed; else one model's fields, or, for several
    models, ``models`` keyed by each classifier's ``name``."""
    rec: dict = {"path": path}
    if isinstance(results[0], ImageDecodeError):
        rec["error"] = results[0].reason
    elif len(classifiers) > 1:
        rec["models"] = {c.name: model_record(r, threshold, top_k) for c, r in zip(classifiers, results)}
    else:
        rec.update(model_record(results[0], threshold, top_k))
    return rec


def model_records(rec: dict) -> list[dict]:
    """Each model's part of an image record, in model order; none for an image that failed."""
    if "error" in rec:
        return []
    return list(rec["models"].values()) if "models" in rec else [rec]


def count_labels(counts: Sequence[dict], records: Sequence[dict]) -> None:
    """Adds one to each model's tally (``counts``, per model: label -> images) of the label it decided."""
    for tally, r in zip(counts, records):
        tally[r["label"]] = tally.get(r["label"], 0) + 1
