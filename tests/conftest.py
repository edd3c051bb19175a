"""Shared fixtures: tiny generated datasets with a learnable class signal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image

from edgeclf.toolkit.progress import Reporter


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


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A simple_cnn run on 120 generated 16x16 images (shared: training takes seconds, not milliseconds)."""
    from edgeclf.toolkit.augment import AugmentSpec
    from edgeclf.toolkit.train import TrainSpec, train

    root = tmp_path_factory.mktemp("export")
    data = write_class_folders(root / "data", {"bar_h": 60, "bar_v": 60})
    run = root / "run"
    train(data, run, backbone="simple_cnn", img_size=16, weights="none",
          spec=TrainSpec(epochs=6, batch_size=16, learning_rate=3e-3, augment=AugmentSpec.none()))
    return run


def _all_modes():
    from edgeclf.toolkit.export import QuantSpec

    return (QuantSpec.float32(), QuantSpec.float16(), QuantSpec.dynamic(), QuantSpec.int8())


ALL_MODES = _all_modes()


@pytest.fixture(scope="session")
def exported(trained_run):
    """Every format and mode exported from ``trained_run`` (passing the gate)."""
    from edgeclf.toolkit.export import ExportSpec, export_model

    results = export_model(trained_run / "model.keras", spec=ExportSpec(quant=ALL_MODES))
    return trained_run, results


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of ``trained_run`` without its exports, for tests that change it."""
    import shutil

    dest = tmp_path / "run"
    shutil.copytree(trained_run, dest, ignore=shutil.ignore_patterns("export"))
    return dest


class WarningsReporter(Reporter):
    """A ``Reporter`` that keeps the warnings it is given (``messages``) instead of printing them."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def warn(self, message: str) -> None:
        self.messages.append(message)


def run_python(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter (clean ``sys.modules``) and asserts it exited 0."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out
