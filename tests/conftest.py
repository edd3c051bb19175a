"""Shared fixtures: tiny generated datasets with a learnable class signal."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image


def class_image(label: int, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """A noisy image whose class shows as a bright horizontal (class 0) or vertical (class 1) bar, or a corner."""
    img = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
    mid = size // 2
    if label == 0:
        img[mid - 2 : mid + 2, :, :] = 230
    elif label == 1:
        img[:, mid - 2 : mid + 2, :] = 230
    else:
        img[: size // 3, : size // 3, :] = 230
    return img


def write_class_folders(root: Path, counts: dict[str, int], size: int = 16, seed: int = 0, fmt: str = "png") -> Path:
    """``root/<class>/<i>.<fmt>`` for each class name in ``counts`` (class index = position)."""
    rng = np.random.default_rng(seed)
    for label, (name, n) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(class_image(label, rng, size)).save(folder / f"{name}_{i:03d}.{fmt}")
    return root


@pytest.fixture
def tiny_folders(tmp_path: Path) -> Path:
    """Two balanced classes, 40 images each, 16x16 PNG."""
    return write_class_folders(tmp_path / "data", {"bar_h": 40, "bar_v": 40})
