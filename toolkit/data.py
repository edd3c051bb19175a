"""Datasets: finding the images and labels, and decoding them with the runtime's own code (``splits`` divides
them into train, val and test).

Accepted forms (``discover``):

- class folders: ``root/<class>/*.jpg`` (any of ``IMAGE_EXTENSIONS``; hidden files and folders are left out)
- pre-split folders: ``root/{train,val,test}/<class>/...`` (``validation``/``valid`` also name the val split;
  a missing val or test split is carved out of train)
- a CSV manifest: ``path,label[,split]`` with paths relative to the CSV's folder
- a NumPy image array: ``images.npy`` with ``labels.csv`` beside it (or a folder holding both)

Decoding goes through ``edgeclf.edge_runtime.preprocess.load_image`` / ``preprocess_frame`` - the functions the
runtime calls - so training and serving see identical pixels.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from edgeclf.edge_runtime.errors import DataError, ImageDecodeError
from edgeclf.edge_runtime.paths import display_path
from edgeclf.edge_runtime.preprocess import IMAGE_TYPES, PreprocessSpec, load_image, preprocess_frame
from edgeclf.edge_runtime.sources import is_listed_image, is_loop, walk_images

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                  "test": "test", "testing": "test"}


@dataclass
class Samples:
    """An ordered list of labelled images.

    ``sources`` are file paths, or row indices into ``Dataset.array`` for the NumPy form.
    """

    sources: list
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.sources)

    def take(self, idx: Sequence[int]) -> "Samples":
        return Samples([self.sources[i] for i in idx], self.labels[np.asarray(idx, dtype=np.int64)])

    def __add__(self, other: "Samples") -> "Samples":
        return Samples(self.sources + other.sources, np.concatenate([self.labels, other.labels]))

    def subsample(self, limit: int | None, seed: int) -> "Samples":
        """At most ``limit`` samples, drawn at random (seeded) and kept in their original order."""
        if limit is None or len(self) <= limit:
            return self
        return self.take(np.sort(np.random.default_rng(seed).choice(len(self), size=limit, replace=False)))


@dataclass
class Dataset:
    """Labelled images found at ``root``.

    Attributes:
        root: The path given by the user.
        form: ``"folders"``, ``"presplit"``, ``"csv"`` or ``"npy"``.
        class_names: Class names in index order (sorted).
        splits: ``{"all": ...}`` for data that is not pre-split, else some of ``train``/``val``/``test``.
        array: The image array for the ``npy`` form.
        notes: Things the user should know about how the data was read.
    """

    root: Path
    form: str
    class_names: list[str]
    splits: dict[str, Samples]
    array: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def all_samples(self) -> Samples:
        """Every sample of every split, in split order."""
        parts = list(self.splits.values())
        return sum(parts[1:], parts[0])

    def relabelled(self, samples: Samples, class_names: Sequence[str]) -> Samples | None:
        """``samples`` with labels re-indexed to ``class_names`` (a model's), or None if a class is not among them."""
        if not set(self.class_names) <= set(class_names):
            return None
        remap = np.array([list(class_names).index(c) for c in self.class_names], dtype=np.int32)
        return Samples(samples.sources, remap[samples.labels])

    def describe(self, source) -> str:
        """A readable name for one sample: a path relative to the root (non-UTF-8 bytes escaped, see
        ``display_path``), or ``images.npy[i]``. splits.csv stores it, and the export step matches on it."""
        if isinstance(source, (int, np.integer)):
            return f"{self.root.name}[{int(source)}]"
        try:
            return display_path(os.path.relpath(source, self.root if self.root.is_dir() else self.root.parent))
        except ValueError:
            return display_path(source)


def _list_images(folder: Path) -> list[str]:
    return sorted(walk_images(folder))


def _class_dirs(folder: Path, notes: list[str] | None = None) -> list[Path]:
    """The class (or split) folders in ``folder``: visible folders and links to folders, but not a link back to
    ``folder`` or a folder that holds it (``ln -s . self`` would be a class holding copies of all the others)."""
    top = os.path.realpath(folder)
    dirs, loops = [], []
    for p in sorted(folder.iterdir()):
        if p.is_dir() and not p.name.startswith("."):
            (loops if is_loop(p, top) else dirs).append(p)
    if loops and notes is not None:
        notes.append(f"Left out {', '.join(p.name for p in loops)} in {folder}: a link back to the folder itself or "
                     "one that holds it, not a class.")
    return dirs


def _labels_from_names(names: Sequence[str], class_names: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    if class_names is None:
        uniq = set(names)
        if all(n.lstrip("-").isdigit() for n in uniq):
            class_names = sorted(uniq, key=int)
        else:
            class_names = sorted(uniq)
    index = {n: i for i, n in enumerate(class_names)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise DataError(f"Labels {unknown[:5]} are not among the training classes {class_names}.")
    return class_names, np.array([index[n] for n in names], dtype=np.int32)


def _discover_folders(root: Path, min_classes: int = 2) -> Dataset:
    split_dirs = {}
    notes: list[str] = []
    for child in _class_dirs(root, notes):
        alias = _SPLIT_ALIASES.get(child.name.lower())
        if alias:
            if alias in split_dirs:
                raise DataError(f"{root} has two folders for the {alias} split: {split_dirs[alias].name}, {child.name}.")
            split_dirs[alias] = child
    if split_dirs:
        if "train" not in split_dirs:
            raise DataError(f"{root} looks pre-split ({', '.join(sorted(split_dirs))}) but has no train/ folder.")
        class_names = [d.name for d in _class_dirs(split_dirs["train"], notes)]
        if len(class_names) < min_classes:
            raise DataError(f"{split_dirs['train']} must hold one folder per class (at least {min_classes}); "
                            f"found {class_names}.")
        splits = {}
        for name, folder in split_dirs.items():
            paths, names = [], []
            for class_dir in _class_dirs(folder, notes if folder != split_dirs["train"] else None):
                files = _list_images(class_dir)
                paths += files
                names += [class_dir.name] * len(files)
            extra = sorted(set(names) - set(class_names))
            if extra:
                raise DataError(f"{folder} has class folder(s) {', '.join(extra)} that {split_dirs['train']} lacks. "
                                "Add them to train/, or remove them here.")
            _, labels = _labels_from_names(names, class_names)
            splits[name] = Samples(paths, labels)
        return Dataset(root, "presplit", class_names, splits, notes=notes)
    class_dirs = _class_dirs(root)  # its loops were noted above
    paths, names = [], []
    for class_dir in class_dirs:
        files = _list_images(class_dir)
        paths += files
        names += [class_dir.name] * len(files)
    class_names = [d.name for d in class_dirs if d.name in set(names)]
    empty = [d.name for d in class_dirs if d.name not in set(names)]
    if empty and len(class_names) >= min_classes:
        notes.append(f"Class folder{'s' * (len(empty) > 1)} {', '.join(empty)} in {root} hold{'s' * (len(empty) == 1)} "
                     f"no images and {'is' if len(empty) == 1 else 'are'} left out: the model has {len(class_names)} "
                     f"classes ({', '.join(class_names)}). Add images to "
                     f"{'it' if len(empty) == 1 else 'them'} to train {'that class' if len(empty) == 1 else 'them'}.")
    if len(class_names) < min_classes:
        loose = sum(1 for f in root.iterdir() if f.is_file() and is_listed_image(f.name))
        hint = (f" {root} holds {loose} image(s) itself, outside any class folder: the folder that holds them names "
                f"their class, so pass a folder that contains '{root.name}/' (its parent reads every class folder "
                "beside it too)." if loose else "")
        raise DataError(
            f"Found {len(class_names)} class folder(s) with images in {root}. Expected one folder per class "
            f"(at least {min_classes}), e.g. root/helmet/*.jpg and root/no_helmet/*.jpg, or "
            f"root/{{train,val,test}}/<class>/; images are files of these types: {IMAGE_TYPES}.{hint}"
        )
    _, labels = _labels_from_names(names, class_names)
    return Dataset(root, "folders", class_names, {"all": Samples(paths, labels)}, notes=notes)


def _read_csv(path: Path, reader: Callable) -> list:
    """All rows of a UTF-8 CSV file through ``reader`` (``csv.reader`` or ``csv.DictReader``).

    Raises:
        DataError: If the file is unreadable, not UTF-8 (saying how to fix that) or malformed.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return list(reader(fh))
    except UnicodeDecodeError:
        data = path.read_bytes()  # the error's offset is into a buffered chunk; find the byte in the whole file
        try:
            data.decode("utf-8")
            where = ""
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            where = f":{line}: byte 0x{data[exc.start]:02x} is"
        raise DataError(f"{path}{where} not UTF-8 text. Save the file as UTF-8 (in Excel: CSV UTF-8).") from None
    except (OSError, csv.Error) as exc:
        raise DataError(f"Cannot read {path}: {exc}") from None


def _read_csv_rows(path: Path) -> list[dict]:
    return _read_csv(path, csv.DictReader)


def _discover_csv(path: Path, confine: bool = False) -> Dataset:
    rows = _read_csv_rows(path)
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DataError(f"{path} must have a header with 'path' and 'label' columns (and optionally 'split').")
    base = path.parent
    inside = os.path.realpath(base).rstrip(os.sep) + os.sep
    outside: list[tuple[int, str]] = []
    has_split = "split" in rows[0]
    grouped: dict[str, tuple[list, list]] = {}
    for line, row in enumerate(rows, start=2):
        split = "all"
        if has_split:
            split = _SPLIT_ALIASES.get((row["split"] or "").strip().lower())
            if split is None:
                raise DataError(f"{path}:{line}: split '{row['split']}' is not one of train, val, test.")
        raw_path, label = (row["path"] or "").strip(), (row["label"] or "").strip()  # None: the row is short
        if not raw_path or not label:
            raise DataError(f"{path}:{line}: {'empty path' if not raw_path else 'empty label'}. "
                            "Expected a path and a label on every row.")
        p = Path(raw_path)
        full = str(p if p.is_absolute() else base / p)
        if not os.path.realpath(full).startswith(inside):
            outside.append((line, raw_path))
            if confine:
                raise DataError(f"{path}:{line}: '{display_path(raw_path)}' is outside the manifest's folder "
                                f"{base}. --confine refuses such rows; remove it, or leave out --confine if the "
                                "manifest is trusted.")
        grouped.setdefault(split, ([], []))
        grouped[split][0].append(full)
        grouped[split][1].append(label)
    all_names = [n for _, names in grouped.values() for n in names]
    class_names, _ = _labels_from_names(all_names)
    splits = {s: Samples(paths, _labels_from_names(names, class_names)[1]) for s, (paths, names) in grouped.items()}
    if has_split and "train" not in splits:
        raise DataError(f"{path} has a split column but no train rows.")
    notes = []
    if outside:
        first = ", ".join(f"line {n}: {display_path(p)}" for n, p in outside[:3])
        notes.append(f"{len(outside)} row(s) of {path.name} name images outside its folder {base} ({first}"
                     f"{', ...' if len(outside) > 3 else ''}); pass --confine to refuse such rows in a manifest "
                     "from a source you do not trust.")
    return Dataset(path, "csv", class_names, splits, notes=notes)


def _normalise_array(array: np.ndarray, name: str, notes: list[str]) -> np.ndarray:
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise DataError(f"{name} has shape {array.shape}. Expected (N, H, W), (N, H, W, 1), (N, H, W, 3) or (N, H, W, 4).")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        hi = float(np.nanmax(array)) if array.size else 0.0
        if hi <= 1.0:
            notes.append(f"{name} holds floats in [0, 1]; read as pixels x 255.")
            return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
        notes.append(f"{name} holds floats up to {hi:g}; read as 0-255 pixels (clipped).")
        return np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        hi = int(array.max()) if array.size else 0
        if hi > 255:
            raise DataError(f"{name} holds integers up to {hi}. Expected 8-bit pixels (0-255).")
        return array.astype(np.uint8)
    raise DataError(f"{name} has dtype {array.dtype}. Expected uint8 or float pixels.")


def _discover_npy(npy: Path, labels_csv: Path) -> Dataset:
    try:
        array = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read {npy} as a NumPy array: {exc}") from None
    if not labels_csv.is_file():
        raise DataError(f"{npy} needs its labels in {labels_csv} (one label per image, in order).")
    rows = [(n, r) for n, r in enumerate(_read_csv(labels_csv, csv.reader), start=1) if r]
    col, first = 0, 0
    if rows and "label" in [c.strip().lower() for c in rows[0][1]]:
        col, first = [c.strip().lower() for c in rows[0][1]].index("label"), 1
    elif rows and len(rows[0][1]) != 1:
        raise DataError(f"{labels_csv} has several columns and no 'label' header. Add a header naming the label column.")
    names = []
    for line, row in rows[first:]:
        name = row[col].strip() if col < len(row) else ""
        if not name:
            raise DataError(f"{labels_csv}:{line}: empty label. Expected one label per image, in order.")
        names.append(name)
    if len(names) != len(array):
        raise DataError(f"{npy} holds {len(array)} images but {labels_csv} has {len(names)} labels.")
    class_names, labels = _labels_from_names(names)
    notes: list[str] = []
    array = _normalise_array(np.asarray(array), npy.name, notes)
    return Dataset(npy, "npy", class_names, {"all": Samples(list(range(len(array))), labels)}, array=array, notes=notes)


def discover(path: str | os.PathLike, min_classes: int = 2, confine: bool = False) -> Dataset:
    """Finds the images and labels at ``path`` in any accepted form.

    ``min_classes`` is 2 for training data; evaluation data may hold a single class (a folder of only
    ``no_helmet`` images from a new site is a fair test of a two-class model). A CSV manifest's rows may name
    images anywhere (absolute paths into a data lake are legitimate); those outside the manifest's folder are
    counted in the dataset's notes, and ``confine`` refuses them (for a manifest from a source not trusted).

    Raises:
        DataError: If the path does not exist or holds no usable dataset; the message says what is expected.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"Dataset not found: {root}. Expected a folder of class folders, a CSV manifest or images.npy.")
    if root.is_file():
        if root.suffix.lower() == ".csv":
            ds = _discover_csv(root, confine)
        elif root.suffix.lower() == ".npy":
            ds = _discover_npy(root, root.with_name("labels.csv"))
        else:
            raise DataError(f"Received: {root}. Expected a folder, a .csv manifest or an images .npy file.")
    elif (root / "images.npy").is_file():
        ds = _discover_npy(root / "images.npy", root / "labels.csv")
    else:
        ds = _discover_folders(root, min_classes)
    if len(ds.class_names) < min_classes:
        raise DataError(f"{root} has {len(ds.class_names)} class(es): {ds.class_names}. "
                        + ("A classifier needs at least 2." if min_classes == 2 else f"Expected at least {min_classes}."))
    if sum(len(s) for s in ds.splits.values()) == 0:
        raise DataError(f"No images found in {root}. Expected files of these types: {IMAGE_TYPES}.")
    return ds


@dataclass
class DecodedSplit:
    """Decoded pixels of one split, with what could not be decoded.

    Attributes:
        pixels: (N, H, W, 3) uint8 array (possibly a memory map).
        labels: (N,) int32 class indices.
        sources: The sources of the decoded images, in order.
        skipped: ``(source description, reason)`` for every image that was skipped.
        indices: Position of each decoded image in the samples it was decoded from.
    """

    pixels: np.ndarray
    labels: np.ndarray
    sources: list
    skipped: list[tuple[str, str]] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: Sequence[int]) -> "DecodedSplit":
        idx = np.asarray(idx, dtype=np.int64)
        return DecodedSplit(self.pixels[idx], self.labels[idx], [self.sources[i] for i in idx], list(self.skipped))


def decode_samples(
    ds: Dataset,
    samples: Samples,
    spec: PreprocessSpec,
    *,
    out: np.ndarray | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> DecodedSplit:
    """Decodes and resizes samples exactly as the runtime does; bad images are skipped and listed.

    Args:
        ds: The dataset the samples belong to.
        samples: What to decode.
        spec: The preprocessing contract.
        out: Optional preallocated (len(samples), H, W, 3) uint8 array (e.g. a memory map) to fill.
        workers: Decoding threads (Pillow releases the GIL); defaults to the CPU count.
        progress: Called with the number of images done after each one.

    Returns:
        The decoded split; ``pixels`` is a prefix view of ``out`` when it was given.
    """
    n = len(samples)
    if out is None:
        out = np.empty((n, spec.height, spec.width, 3), dtype=np.uint8)

    def decode_one(source):
        try:
            if ds.array is not None:
                frame = ds.array[source]
                frame = np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame
                if frame.shape[2] == 4:
                    frame = _composite(frame, spec.background)
                return preprocess_frame(np.ascontiguousarray(frame), spec), None
            return load_image(source, spec), None
        except ImageDecodeError as exc:
            return None, exc.reason

    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for i, (pixels, reason) in enumerate(pool.map(decode_one, samples.sources, chunksize=16)):
            if pixels is None:
                skipped.append((ds.describe(samples.sources[i]), reason))
            else:
                out[len(kept)] = pixels
                kept.append(i)
            if progress is not None:
                progress(1)
    return DecodedSplit(out[: len(kept)], samples.labels[kept], [samples.sources[i] for i in kept], skipped, kept)


def _composite(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + np.asarray(background, np.float32) * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Images per class index."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def imbalance_ratio(counts: np.ndarray) -> float:
    """Largest class count over smallest non-empty class count (1.0 is perfectly balanced)."""
    nonzero = counts[counts > 0]
    return float(nonzero.max() / nonzero.min()) if len(nonzero) else 1.0


def balanced_class_weights(counts: np.ndarray) -> dict[int, float]:
    """``n_samples / (n_classes * count_c)`` per class, the usual 'balanced' weighting."""
    total, k = counts.sum(), np.count_nonzero(counts)
    return {i: float(total / (k * c)) for i, c in enumerate(counts) if c > 0}


def fingerprint(decoded: Iterable[tuple[str, DecodedSplit]], class_names: Sequence[str]) -> str:
    """SHA-256 over the class names and every split's decoded pixels and labels: equal data, equal fingerprint."""
    h = hashlib.sha256("\n".join(class_names).encode())
    for name, split in decoded:
        h.update(name.encode())
        h.update(np.ascontiguousarray(split.labels, dtype=np.int32).tobytes())
        for start in range(0, len(split), 1024):
            h.update(np.ascontiguousarray(split.pixels[start : start + 1024]).tobytes())
    return h.hexdigest()
