"""MediaPipe Tasks' ImageClassifier reads edgeclf's TFLite artefacts: class names from the TFLite Support metadata,
the same top-1 and scores as edgeclf's runtime.

Runs where ``mediapipe`` is importable, and is skipped elsewhere: MediaPipe brings ``opencv-contrib-python``, which
must not share an environment with edgeclf's ``opencv-python``. ``benchmarks/lab/mediapipe_conformance.py`` makes
such an environment (``.venv-mediapipe``); there:

    .venv-mediapipe/bin/pip install pytest && .venv-mediapipe/bin/python -m pytest -q tests/test_mediapipe.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

mp = pytest.importorskip("mediapipe")

from conftest import class_image  # noqa: E402
from edgeclf.edge_runtime.artifact import read_metadata, write_tflite_metadata  # noqa: E402

HERE = Path(__file__).resolve().parent
FIXTURES = sorted((HERE / "data" / "runtime").glob("bars_*.tflite"))


def _lab():
    spec = importlib.util.spec_from_file_location("mediapipe_conformance",
                                                  HERE.parent / "benchmarks" / "lab" / "mediapipe_conformance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_mediapipe_names_and_scores_the_classes_as_edgeclf_does(fixture, tmp_path):
    model = tmp_path / fixture.name
    model.write_bytes(write_tflite_metadata(fixture.read_bytes(), read_metadata(fixture)))
    rng = np.random.default_rng(3)
    images = [class_image(label, rng) for label in (0, 1) * 8]
    mp_images = [mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(a)) for a in images]
    result = _lab().compare(model, images, mp_images)
    assert result["names_match"] and result["top1_agreement"] == 1.0, result
    # the same LiteRT kernels on the same pixels; a uint8 output differs by at most one step of its scale
    assert result["max_abs_diff"] <= (1 / 256 + 1e-6 if "int8" in fixture.name else 1e-5), result
