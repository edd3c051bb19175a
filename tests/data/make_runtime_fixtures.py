"""Makes the tiny exported models in ``tests/data/runtime/`` that the runtime-only tests run on.

The runtime (``predict``, ``info``, ``camera``, ``Classifier``) is tested in an environment with only
``edgeclf[runtime]`` installed, where no model can be trained or exported: these files stand in for what
``edgeclf export`` writes. A small CNN (``aiart_cnn``, 16 px) trained on the generated bar images of
``tests/conftest.py`` (class ``bar_h``: a horizontal bar, ``bar_v``: a vertical one), exported to int8 and fp32
TFLite and ONNX through the fidelity gate. Needs the ``train`` extra; run from the repository root:

    .venv/bin/python tests/data/make_runtime_fixtures.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # conftest's image generator

from conftest import write_class_folders  # noqa: E402
from edgeclf.models import HeadSpec  # noqa: E402
from edgeclf.toolkit.augment import AugmentSpec  # noqa: E402
from edgeclf.toolkit.export import ExportSpec, QuantSpec, export_model  # noqa: E402
from edgeclf.toolkit.train import TrainSpec, train  # noqa: E402


def main() -> None:
    out = HERE / "runtime"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_class_folders(Path(tmp) / "data", {"bar_h": 60, "bar_v": 60})
        run = Path(tmp) / "bars"
        train(data, run, backbone="aiart_cnn", img_size=16, weights="none", head=HeadSpec(dropout=0.0),
              spec=TrainSpec(epochs=8, batch_size=16, learning_rate=3e-3, augment=AugmentSpec.none()))
        results = export_model(run / "model.keras", spec=ExportSpec(quant=(QuantSpec.float32(), QuantSpec.int8())))
        for r in results:
            shutil.copyfile(r.path, out / r.path.name)
            print(r.path.name, r.size_bytes, "bytes", "passed" if r.passed else "REJECTED")


if __name__ == "__main__":
    main()
