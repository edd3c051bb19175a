"""``edgeclf train --distribute data-parallel``: one device, two (forced host devices) and two processes on
localhost train the same model, within float tolerance.

Each run is a subprocess on Keras' JAX backend: the device count is fixed when JAX loads
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``), and a multi-process job needs a process per member.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_class_folders
from edgeclf.edge_runtime.errors import ConfigError
from edgeclf.toolkit.distribute import global_batch, setup

pytest.importorskip("jax")
TIMEOUT_S = 400
ARGS = ["--backbone", "simple_cnn", "--weights", "none", "--img-size", "16", "--epochs", "2", "--batch-size", "16",
        "--no-augment", "--distribute", "data-parallel", "--force"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train(data: Path, out: Path, env: dict) -> subprocess.Popen:
    full = {**os.environ, "KERAS_BACKEND": "jax", **env}
    return subprocess.Popen([sys.executable, "-m", "edgeclf.cli", "train", str(data), "--out", str(out), *ARGS],
                            env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _history(run: Path) -> np.ndarray:
    with open(run / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return np.array([[float(r[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy")] for r in rows])


def _weights(run: Path) -> list[np.ndarray]:
    from edgeclf.toolkit.evaluate import load_keras_model

    return [np.asarray(w) for w in load_keras_model(run / "model.keras").get_weights()]


def test_one_device_two_devices_and_two_processes_train_the_same_model(tmp_path):
    data = write_class_folders(tmp_path / "data", {"bar_h": 40, "bar_v": 40})
    port0, port1 = _free_port(), _free_port()
    jobs = {
        "one": _train(data, tmp_path / "one", {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}),
        "two": _train(data, tmp_path / "two", {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}),
    }
    jobs.update({f"proc{i}": _train(data, tmp_path / f"proc{i}", {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"localhost:{port0},localhost:{port1}",
        "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": str(i)}) for i in (0, 1)})
    for name, job in jobs.items():
        output, _ = job.communicate(timeout=TIMEOUT_S)
        assert job.returncode == 0, f"{name}: {output[-2000:]}"
    import json

    recorded = {n: json.loads((tmp_path / n / "metadata.json").read_text())["hardware"]["distribution"]
                for n in ("one", "two", "proc0")}
    assert [(d["devices"], d["processes"]) for d in recorded.values()] == [(1, 1), (2, 1), (2, 2)]
    reference = _history(tmp_path / "one")
    for name in ("two", "proc0", "proc1"):
        np.testing.assert_allclose(_history(tmp_path / name), reference, rtol=1e-4, atol=1e-5, err_msg=name)
    ref_weights = _weights(tmp_path / "one")
    for name in ("two", "proc0"):  # the saved model: same layers, same shapes, same values
        got = _weights(tmp_path / name)
        assert [w.shape for w in got] == [w.shape for w in ref_weights]
        for a, b in zip(got, ref_weights):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4, err_msg=name)


def test_the_batch_is_a_multiple_of_the_device_count():
    assert global_batch(64, 4) == (64, None)
    batch, note = global_batch(30, 4)
    assert batch == 28 and "not a multiple of the 4 devices" in note
    assert global_batch(3, 8)[0] == 8  # at least one image per device


def test_a_tensorflow_multi_worker_job_is_refused_with_the_upstream_issue(monkeypatch):
    class FakeKeras:
        class backend:
            @staticmethod
            def backend():
                return "tensorflow"

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:1"]}}')
    with pytest.raises(ConfigError, match="keras-team/keras#20585"):
        setup(FakeKeras, "data-parallel")


def test_a_multi_process_job_without_its_addresses_is_refused(monkeypatch):
    class FakeKeras:
        class backend:
            @staticmethod
            def backend():
                return "jax"

    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.delenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", raising=False)
    with pytest.raises(ConfigError, match="KERAS_DISTRIBUTION_JOB_ADDRESSES"):
        setup(FakeKeras, "data-parallel")
    assert setup(FakeKeras, "none") is None


def test_on_tensorflow_it_trains_under_mirrored_strategy(tmp_path):
    import json

    from click.testing import CliRunner

    from edgeclf.cli import main

    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        pytest.skip("this process runs Keras on another backend")
    data = write_class_folders(tmp_path / "data", {"bar_h": 30, "bar_v": 30})
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "run"), *ARGS])
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "run" / "metadata.json").read_text())["hardware"]["distribution"]
    assert recorded["kind"].endswith("(tf.distribute.MirroredStrategy)") and recorded["devices"] >= 1
