"""Calibration and verification images, decoded with the runtime's preprocessing code."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from edgeclf.edge_runtime.errors import DataError
from edgeclf.edge_runtime.preprocess import IMAGE_TYPES, PreprocessSpec

from ..data import Dataset, Samples, decode_samples, discover


@dataclass
class ImageSet:
    """Decoded images (uint8, N x H x W x 3) with labels when known, and where they came from."""

    pixels: np.ndarray
    labels: np.ndarray | None
    origin: str

    def __len__(self) -> int:
        return len(self.pixels)

    def batches(self, batch_size: int = 16) -> Callable[[], Iterable[np.ndarray]]:
        """A re-iterable source of pixel batches (the ``CalibrationSource`` both converters adapt)."""
        return lambda: (self.pixels[i : i + batch_size] for i in range(0, len(self.pixels), batch_size))

    def head(self, n: int) -> "ImageSet":
        return ImageSet(self.pixels[:n], None if self.labels is None else self.labels[:n], self.origin)

    def _take(self, index: np.ndarray, origin: str) -> "ImageSet":
        return ImageSet(self.pixels[index], None if self.labels is None else self.labels[index], origin)

    def split(self, n: int, seed: int = 0) -> tuple["ImageSet", "ImageSet"]:
        """``n`` images drawn at random (seeded) for calibration, and the others: disjoint, each in folder order."""
        order = np.random.default_rng(seed).permutation(len(self))
        first, rest = np.sort(order[:n]), np.sort(order[n:])
        return (self._take(first, f"{len(first)} of {self.origin}"),
                self._take(rest, f"the other {len(rest)} of {self.origin}, not used for calibration"))


def run_split_samples(run_meta: dict, run_dir: Path, split: str) -> tuple[Dataset, Samples] | None:
    """The dataset and samples of one split of a training run (from its ``splits.csv``), or None if unavailable."""
    listing = run_dir / "splits.csv"
    data_path = run_meta.get("dataset", {}).get("path")
    if not listing.exists() or not data_path or not Path(data_path).exists():
        return None
    with open(listing, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    if not rows:
        return None
    ds = discover(data_path)
    # splits.csv names a file by its path relative to the dataset and an array image by its index.
    by_name = {(str(int(source)) if ds.array is not None else ds.describe(source)): source
               for samples in ds.splits.values() for source in samples.sources}
    class_index = {c: i for i, c in enumerate(run_meta["class_names"])}
    sources, labels = [], []
    for r in rows:
        key = r["path"]
        if key in by_name and r["label"] in class_index:
            sources.append(by_name[key])
            labels.append(class_index[r["label"]])
    if not sources:
        return None
    return ds, Samples(sources, np.asarray(labels, dtype=np.int32))


def relocate_dataset(run_meta: dict, dataset: str | os.PathLike) -> dict:
    """``run_meta`` with its dataset at ``dataset``: where a run's dataset is now, when it moved since training.

    Raises:
        DataError: If ``dataset`` does not exist.
    """
    if not Path(dataset).exists():
        raise DataError(f"Dataset not found: {dataset}. Expected the training run's dataset at its new location.")
    return {**run_meta, "dataset": {**run_meta.get("dataset", {}), "path": str(dataset)}}


def relocate_hint(run_dir: Path) -> str:
    """The ``--dataset`` suggestion for a message, where it can help: only a run that still has its splits.csv."""
    return "--dataset DIR where the run's dataset is now, or " if (run_dir / "splits.csv").exists() else ""


def run_split_problem(run_meta: dict, run_dir: Path, split: str) -> str:
    """Why ``run_split_samples`` found nothing, in words for an error message."""
    data_path = run_meta.get("dataset", {}).get("path")
    if not (run_dir / "splits.csv").exists():
        return f"{run_dir} has no splits.csv"
    if not data_path:
        return f"{run_dir / 'metadata.json'} names no dataset"
    if not Path(data_path).exists():
        return f"its dataset is no longer at {data_path}"
    return f"none of the {split} images listed in {run_dir / 'splits.csv'} is in {data_path} any more"


def run_split(run_meta: dict, run_dir: Path, split: str, spec: PreprocessSpec, limit: int, seed: int = 0) -> ImageSet | None:
    """Images of one split of the training run (from its ``splits.csv``), or None if unavailable."""
    found = run_split_samples(run_meta, run_dir, split)
    if found is None:
        return None
    ds, samples = found
    samples = samples.subsample(limit, seed)
    decoded = decode_samples(ds, samples, spec)
    return ImageSet(decoded.pixels, decoded.labels, f"{split} split of the training run ({len(decoded)} images)")


def folder_images(path: str | os.PathLike, class_names: list[str], spec: PreprocessSpec, limit: int,
                  seed: int = 0, warn: Callable[[str], None] | None = None) -> ImageSet:
    """Images from ``--calib``: a folder of images, or a dataset in any form training accepts.

    Labels are kept when the dataset's classes are the model's; ``warn`` hears when a labelled dataset's are not
    (accuracy is then not measured).

    Raises:
        DataError: If no readable image is found.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"Calibration data not found: {root}.")
    try:
        ds = discover(root)
        every = ds.all_samples()
        relabelled = ds.relabelled(every, class_names)
        known = relabelled is not None
        samples = relabelled if known else every
        if not known and warn is not None:
            warn(f"The classes of {root} ({', '.join(ds.class_names)}) are not the model's "
                 f"({', '.join(class_names)}): its images are used unlabelled, and accuracy is not measured.")
    except DataError:
        from edgeclf.edge_runtime.sources import walk_images

        files = sorted(walk_images(root)) if root.is_dir() else []
        ds = Dataset(root, "folders", ["unlabelled"], {})
        samples, known = Samples(files, np.zeros(len(files), dtype=np.int32)), False
    samples = samples.subsample(limit, seed)
    decoded = decode_samples(ds, samples, spec)
    if not len(decoded):
        raise DataError(f"No readable images in {root} (expected files of these types: {IMAGE_TYPES}).")
    return ImageSet(decoded.pixels, decoded.labels if known else None, f"{root} ({len(decoded)} images)")
