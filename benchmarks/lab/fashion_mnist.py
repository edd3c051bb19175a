"""Turns Fashion-MNIST's IDX files into class folders of PNG images that ``edgeclf train`` reads.

The data comes from Debian's package: ``apt-get install dataset-fashion-mnist`` (files under
/usr/share/datasets/fashion-mnist). Fashion-MNIST is (c) 2017 Zalando SE, MIT licence.

Examples:
    # all 70,000 images, pre-split as train/ and test/ (val is carved out of train by edgeclf)
    python benchmarks/lab/fashion_mnist.py --out data/fashion-mnist
    # the two-class subset bundled in the repository
    python benchmarks/lab/fashion_mnist.py --out benchmarks/data/fashion-mnist-2class \
        --classes sneaker,ankle_boot --per-class 400 --flat
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_SOURCE = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ("tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads a (gzipped) IDX file into a NumPy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        zero, dtype_code, ndim = struct.unpack(">HBB", fh.read(4))
        if zero != 0 or dtype_code != 0x08:
            raise ValueError(f"{path} is not an unsigned-byte IDX file")
        shape = struct.unpack(">" + "I" * ndim, fh.read(4 * ndim))
        return np.frombuffer(fh.read(), dtype=np.uint8).reshape(shape)


def load(source: str | os.PathLike = DEFAULT_SOURCE) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "test": (images, labels)}`` from the IDX files in ``source``."""
    src = Path(source)
    if not (src / "train-images-idx3-ubyte.gz").exists():
        raise SystemExit(f"Fashion-MNIST not found in {src}. Install it with: apt-get install dataset-fashion-mnist")
    return {
        "train": (read_idx(src / "train-images-idx3-ubyte.gz"), read_idx(src / "train-labels-idx1-ubyte.gz")),
        "test": (read_idx(src / "t10k-images-idx3-ubyte.gz"), read_idx(src / "t10k-labels-idx1-ubyte.gz")),
    }


def write_folders(out: Path, data: dict, classes: list[str], per_class: int | None, flat: bool, seed: int) -> int:
    """Writes PNGs as ``out/<split>/<class>/<split>_<index>.png`` (or ``out/<class>/...`` with ``flat``)."""
    rng = np.random.default_rng(seed)
    written = 0
    splits = ["train"] if flat else ["train", "test"]
    for split in splits:
        images, labels = data[split]
        for name in classes:
            idx = np.flatnonzero(labels == CLASS_NAMES.index(name))
            if per_class is not None:
                idx = np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
            folder = out / name if flat else out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in idx:
                Image.fromarray(images[i], "L").save(folder / f"{split}_{i:05d}.png", optimize=True)
                written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="Output folder (must not exist, or be empty).")
    parser.add_argument("--source", default=DEFAULT_SOURCE, help=f"IDX folder [{DEFAULT_SOURCE}]")
    parser.add_argument("--classes", default=",".join(CLASS_NAMES), help="Comma-separated subset of classes.")
    parser.add_argument("--per-class", type=int, help="Random subset of this many images per class and split.")
    parser.add_argument("--flat", action="store_true", help="Training images only, as out/<class>/ (not pre-split).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    unknown = sorted(set(classes) - set(CLASS_NAMES))
    if unknown:
        parser.error(f"unknown classes {unknown}; choose from {', '.join(CLASS_NAMES)}")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty")
    n = write_folders(args.out, load(args.source), classes, args.per_class, args.flat, args.seed)
    print(f"Wrote {n} images to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
