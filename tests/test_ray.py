"""``edgeclf predict --engine ray``: the local engine's records, made by Ray Data actors.

One local Ray instance (4 logical CPUs) serves the whole module; every job runs on the committed int8 fixture.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from conftest import write_class_folders  # noqa: E402
from edgeclf.cli import main  # noqa: E402
from edgeclf.edge_runtime.errors import ConfigError  # noqa: E402
from edgeclf.edge_runtime.ray_engine import Predictor, RaySpec, check_cpus, read_manifest, run  # noqa: E402

MODEL = Path(__file__).resolve().parent / "data" / "runtime" / "bars_int8.tflite"
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    # the test's actor subclasses travel by value: the workers cannot import this test module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture
def images(tmp_path):
    folder = write_class_folders(tmp_path / "imgs", {"bar_h": 20, "bar_v": 20})
    (folder / "bar_h" / "broken.png").write_bytes(b"not a png")
    return folder


def _timed(fn, *args, **kwargs):
    """Runs ``fn`` under the test timeout: a Ray job that waits for CPUs never comes back by itself."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(TIMEOUT_S)
    assert not thread.is_alive(), f"the Ray job did not finish in {TIMEOUT_S} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def _rows(folder: Path) -> list[dict]:
    rows = []
    for shard in sorted(folder.glob("part-*")):
        if shard.suffix == ".jsonl":
            rows += [json.loads(line) for line in shard.read_text().splitlines()]
        else:
            rows += [{k: v for k, v in r.items() if v is not None} for r in pq.read_table(shard).to_pylist()]
    return rows


def _local(images: Path) -> dict[str, dict]:
    result = CliRunner().invoke(main, ["predict", str(MODEL), str(images), "--format", "jsonl"])
    assert result.exit_code == 1  # the broken file
    return {r["path"]: r for r in map(json.loads, result.stdout.splitlines())}


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_ray_rows_equal_the_local_engine_and_a_bad_file_is_an_error_row(cluster, images, tmp_path, fmt):
    out = tmp_path / "out"
    result = _timed(CliRunner().invoke, main, ["predict", str(MODEL), str(images), "--engine", "ray", "--out",
                                               str(out), "--actors", "2", "--batch-size", "8", "--format", fmt])
    assert result.exit_code == 1, result.output  # one image failed, as locally
    assert "41 image(s), 1 failed; bar_h 20, bar_v 20" in result.output
    rows = _rows(out)
    assert len(rows) == 41 and len({r["path"] for r in rows}) == 41
    assert {r["path"]: r for r in rows} == _local(images)  # same fields, labels and scores
    assert next(r for r in rows if r["path"].endswith("broken.png"))["error"]


def test_a_worker_that_crashes_once_is_restarted_and_its_batch_redone(cluster, images, tmp_path):
    marker = tmp_path / "crashed"

    class CrashOnce(Predictor):
        def __call__(self, batch):
            if not marker.exists():
                marker.write_text("x")
                os._exit(1)  # the process dies mid-batch, as a segfaulting decoder would
            return super().__call__(batch)

    paths = sorted(str(p) for p in images.rglob("*.png"))
    result = _timed(run, [str(MODEL)], paths, tmp_path / "out", RaySpec(actors=2, batch_size=8), predictor=CrashOnce)
    assert marker.exists()
    rows = _rows(tmp_path / "out")
    assert sorted(r["path"] for r in rows) == paths  # every image once: none lost, none twice
    assert result.done == 41 and result.failed == 1


def test_a_job_stopped_part_way_resumes_without_duplicates(cluster, images, tmp_path):
    paths = sorted(str(p) for p in images.rglob("*.png"))
    out = tmp_path / "out"

    def stop(done, failed, total):
        if done >= 8:
            raise KeyboardInterrupt

    spec = RaySpec(actors=1, batch_size=4, shard_rows=4)
    with pytest.raises(KeyboardInterrupt):
        _timed(run, [str(MODEL)], paths, out, spec, progress=stop)
    first = _rows(out)
    assert 8 <= len(first) < 41  # what arrived before the stop is written, in whole shards
    with pytest.raises(ConfigError, match="--resume"):
        run([str(MODEL)], paths, out, spec)
    result = _timed(run, [str(MODEL)], paths, out, spec, resume=True)
    assert result.skipped == len(first) and result.done == 41 - len(first)
    rows = _rows(out)
    assert sorted(r["path"] for r in rows) == paths
    assert not list(out.glob(".*.part"))


def test_force_replaces_the_shards_only_once_the_new_ones_exist(cluster, images, tmp_path):
    paths = sorted(str(p) for p in images.rglob("*.png"))
    out = tmp_path / "out"
    _timed(run, [str(MODEL)], paths[:5], out, RaySpec(actors=1))

    def stop(done, failed, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # a replacement that does not finish leaves the old shards as they were
        _timed(run, [str(MODEL)], paths, out, RaySpec(actors=1, shard_rows=4), force=True, progress=stop)
    assert sorted(r["path"] for r in _rows(out)) == paths[:5]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    _timed(run, [str(MODEL)], paths, out, RaySpec(actors=1), force=True)
    assert sorted(r["path"] for r in _rows(out)) == paths
    assert [p.name for p in tmp_path.iterdir()] == [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")]


def test_the_cpu_guard_refuses_actors_the_cluster_cannot_hold(cluster, images, tmp_path):
    assert check_cpus(RaySpec(), 4) == 4 and check_cpus(RaySpec(threads_per_actor=3), 4) == 1
    with pytest.raises(ConfigError, match="Expected --actors 2 or fewer"):
        check_cpus(RaySpec(actors=3, threads_per_actor=2), 4)
    result = _timed(CliRunner().invoke, main, ["predict", str(MODEL), str(images), "--engine", "ray", "--out",
                                               str(tmp_path / "out"), "--actors", "5"])
    assert result.exit_code == 2 and "Ray cluster has 4" in result.output
    assert not list((tmp_path / "out").glob("part-*"))


def test_a_manifest_and_file_uris_are_read(cluster, images, tmp_path):
    manifest = tmp_path / "list.csv"
    rel = [os.path.relpath(p, tmp_path) for p in sorted(images.rglob("bar_v/*.png"))[:3]]
    uri = "file://" + str(images / "bar_h" / "bar_h_000.png")
    manifest.write_text("path,note\n" + "".join(f"{r},x\n" for r in rel) + f"{uri},y\n")
    listed = read_manifest(manifest)
    assert listed[:3] == [str(tmp_path / r) for r in rel] and listed[3] == uri
    result = _timed(run, [str(MODEL)], listed, tmp_path / "out", RaySpec(actors=1))
    rows = _rows(tmp_path / "out")
    assert result.failed == 0 and len(rows) == 4
    labels = {r["path"]: r["label"] for r in rows}  # rows come in the order actors finish
    assert labels == {**{p: "bar_v" for p in listed[:3]}, uri: "bar_h"}


def test_ray_only_options_are_refused_without_the_ray_engine(images, tmp_path):
    result = CliRunner().invoke(main, ["predict", str(MODEL), str(images), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "without --engine ray" in result.output
    result = CliRunner().invoke(main, ["predict", str(MODEL), str(images), "--engine", "ray"])
    assert result.exit_code == 2 and "without --out" in result.output
