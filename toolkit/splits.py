"""Dividing a dataset into train, val and test (``assign_splits``) and into folds, stratified and seeded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgeclf.edge_runtime.errors import ConfigError

from .data import SPLITS, Dataset, Samples


@dataclass(frozen=True)
class SplitSpec:
    """Fractions for a stratified train/val/test split of data that is not pre-split.

    Args:
        train: Fraction for training.
        val: Fraction for validation.
        test: Fraction for the held-out test split.
    """

    train: float = 0.70
    val: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        fractions = (self.train, self.val, self.test)
        if any(f < 0 for f in fractions) or self.train <= 0 or self.val <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
            raise ConfigError(
                f"Received: split={self.train}/{self.val}/{self.test}. Expected non-negative fractions that sum to 1 "
                "with train > 0 and val > 0."
            )


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Splits indices into parts with the given fractions, class by class.

    Each class is shuffled with ``seed`` and cut at its rounded cumulative fractions, so every part keeps the
    class proportions and the same inputs always give the same parts.

    Returns:
        One sorted index array per fraction.
    """
    rng = np.random.default_rng(seed)
    cum = np.cumsum(fractions) / np.sum(fractions)
    parts: list[list[int]] = [[] for _ in fractions]
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        cuts = np.rint(cum * len(idx)).astype(int)
        start = 0
        for k, stop in enumerate(cuts):
            parts[k].extend(idx[start:stop].tolist())
            start = stop
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """K disjoint, class-stratified index folds covering all samples."""
    if k < 2:
        raise ConfigError(f"Received: folds={k}. Expected at least 2.")
    counts = np.bincount(labels)
    if counts[counts > 0].min() < k:
        raise ConfigError(f"Received: folds={k}, but the smallest class has only {counts[counts > 0].min()} images.")
    return stratified_split(labels, [1.0] * k, seed)


# The share of a pre-split train carved out as val when only val is missing and no split was given: val then only
# picks the checkpoint and reports, the data's own test split measures, and every image kept for training counts.
CARVED_VAL = 0.10


def assign_splits(ds: Dataset, spec: SplitSpec | None, seed: int) -> dict[str, Samples]:
    """Returns train/val/test samples: the dataset's own split where it has one, else a stratified split.

    ``spec`` None chooses from the data: ``SplitSpec()`` for data that is not split, a tenth of train for val
    (``CARVED_VAL``) when the data has its own test split but no val. The same files, fractions and ``seed``
    always give the same split.
    """
    if spec is None:
        spec = SplitSpec(1 - CARVED_VAL, CARVED_VAL, 0.0) if "test" in ds.splits else SplitSpec()
    if "all" in ds.splits:
        parts = stratified_split(ds.splits["all"].labels, (spec.train, spec.val, spec.test), seed)
        return {name: ds.splits["all"].take(idx) for name, idx in zip(SPLITS, parts)}
    out = dict(ds.splits)
    train = out["train"]
    missing = [s for s in ("val", "test") if s not in out]
    if missing:
        fractions = {"val": spec.val, "test": spec.test}
        taken = [fractions[s] for s in missing]
        parts = stratified_split(train.labels, [1.0 - sum(taken), *taken], seed)
        out["train"] = train.take(parts[0])
        for name, idx in zip(missing, parts[1:]):
            out[name] = train.take(idx)
        carved = ", ".join(f"{name} ({fractions[name]:.0%})" for name in missing)
        ds.notes.append(f"No {' or '.join(missing)} folder: carved {carved} out of train (stratified; --split sets "
                        "the shares).")
    return {s: out[s] for s in SPLITS}
