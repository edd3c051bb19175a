"""``edgeclf bench``: statistics, model collection, isolated rows, figures that match the export gate, report files."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgeclf.benchmarks.bench import BenchRow, BenchSpec, collect_models, run_bench
from edgeclf.benchmarks.bench_report import COLUMNS, format_table, summarise, summary_lines, write_report
from edgeclf.benchmarks.stats import LatencyStats, percentile, timed_runs
from edgeclf.cli import main
from edgeclf.edge_runtime import ConfigError
from edgeclf.edge_runtime.artifact import read_tflite_metadata, write_tflite_metadata

FAST = dict(threads=(1,), runs=5, min_seconds=0.0, warmup=1, timeout_s=300)


def test_percentiles_on_known_samples():
    samples = list(range(1, 101))  # 1..100
    assert percentile(samples, 50) == pytest.approx(50.5)
    assert percentile(samples, 90) == pytest.approx(90.1)
    assert percentile(samples, 99) == pytest.approx(99.01)
    assert percentile(samples, 0) == 1 and percentile(samples, 100) == 100
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ConfigError, match="at least one"):
        percentile([], 50)
    with pytest.raises(ConfigError, match="between 0 and 100"):
        percentile(samples, 101)


def test_latency_stats_from_seconds():
    s = LatencyStats.from_seconds([0.004, 0.001, 0.003, 0.002])
    assert (s.n, s.min_ms, s.max_ms) == (4, pytest.approx(1.0), pytest.approx(4.0))
    assert s.mean_ms == pytest.approx(2.5) and s.p50_ms == pytest.approx(2.5)
    assert s.std_ms == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s.p90_ms == pytest.approx(3.7) and s.p99_ms == pytest.approx(3.97)
    assert s.images_per_second(8) == pytest.approx(8 / 0.0025)
    assert LatencyStats.from_seconds([0.002]).std_ms == 0.0
    with pytest.raises(ConfigError, match="no latency samples"):
        LatencyStats.from_seconds([])


def test_timed_runs_respects_minimum_runs_time_and_cap():
    calls = []
    assert len(timed_runs(lambda: calls.append(1), min_runs=7, min_seconds=0.0, max_runs=100)) == 7
    assert len(timed_runs(lambda: None, min_runs=3, min_seconds=60.0, max_runs=50)) == 50  # capped, not 60 s
    with pytest.raises(ConfigError):
        timed_runs(lambda: None, min_runs=5, min_seconds=0, max_runs=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"threads": (0,)}, "threads=0"),
    ({"batches": ()}, "batch="),
    ({"runs": 0}, "runs=0"),
    ({"max_images": 0}, "max_images=0"),
    ({"min_seconds": -1.0}, "min_seconds >= 0"),
    ({"timeout_s": 0.0}, "timeout_s=0.0"),
])
def test_bench_spec_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BenchSpec(**kwargs)


def test_quick_spec_keeps_user_overrides():
    spec = BenchSpec.quick(runs=7, threads=(1, 2))
    assert (spec.runs, spec.threads, spec.max_images, spec.warmup) == (7, (1, 2), 200, 3)


def test_collect_models_orders_reference_first_and_skips_rejected(exported, tmp_path):
    run, _ = exported
    (tmp_path / "old_int8.tflite.rejected").write_bytes(b"x")
    models = collect_models([run])
    assert [m.kind for m in models][:1] == ["keras"] and models[0].name == "run/model.keras"
    assert [(m.kind, m.mode) for m in models[1:]] == [("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "dynamic"),
                                                      ("tflite", "int8"), ("onnx", "fp32"), ("onnx", "int8")]
    assert all(m.error is None and m.class_names == ("bar_h", "bar_v") for m in models)
    with pytest.raises(ConfigError, match="No .keras, .tflite or .onnx"):
        collect_models([tmp_path])
    with pytest.raises(ConfigError, match="Supported: .keras"):
        collect_models([tmp_path / "old_int8.tflite.rejected"])
    with pytest.raises(ConfigError, match="Model not found"):
        collect_models([tmp_path / "missing.tflite"])


@pytest.fixture(scope="module")
def bench_result(exported, tmp_path_factory):
    """The exported run benchmarked with two broken artefacts beside it: garbage bytes, and a file whose metadata
    claims an input size the model does not have (it loads, then fails in its worker)."""
    run, results = exported
    extra = tmp_path_factory.mktemp("broken")
    (extra / "garbage_int8.tflite").write_bytes(b"not a flatbuffer")
    good = (run / "export" / "run_fp32.tflite").read_bytes()
    meta = read_tflite_metadata(good)
    meta["preprocess"] = {**meta["preprocess"], "height": 20, "width": 20}
    (extra / "inconsistent_fp32.tflite").write_bytes(write_tflite_metadata(good, meta))
    spec = BenchSpec(batches=(1, 4), **FAST)
    result = run_bench([run, extra / "garbage_int8.tflite", extra / "inconsistent_fp32.tflite"], spec=spec)
    return run, results, result


def test_failing_rows_are_isolated_and_explained(bench_result):
    _, _, result = bench_result
    by_model = {}
    for r in result.rows:
        by_model.setdefault(r.model, []).append(r)
    assert len(result.rows) == 9 * 2  # 9 models x 1 thread count x 2 batch sizes
    for name in ("garbage_int8.tflite", "inconsistent_fp32.tflite"):
        assert all(r.status == "failed" and r.reason and r.p50_ms is None for r in by_model[name])
    assert "input (20, 20)" in by_model["inconsistent_fp32.tflite"][0].reason  # the worker's own error message
    ok = [r for r in result.rows if r.model not in ("garbage_int8.tflite", "inconsistent_fp32.tflite")]
    assert len(ok) == 14 and all(r.status == "ok" and r.reason is None for r in ok)
    table = format_table(result.rows)
    assert table.count("FAILED") == 4 and "garbage_int8.tflite" in table


def test_rows_carry_consistent_latency_memory_and_cold_start(bench_result):
    _, _, result = bench_result
    for r in result.rows:
        if r.status != "ok":
            continue
        assert r.runs >= 5 and 0 < r.p50_ms <= r.p90_ms <= r.p99_ms
        assert r.images_per_s == pytest.approx(r.batch * 1000 / r.mean_ms)
        assert r.peak_rss_mib > 10 and r.init_s > 0 and r.first_inference_ms > 0
        assert r.cold_start_s > r.init_s  # process start and imports come on top of loading the model
        assert len(result.samples_ms[f"{r.model} t{r.threads} b{r.batch}"]) == r.runs
    keras = next(r for r in result.rows if r.format == "keras")
    tflite = next(r for r in result.rows if r.format == "tflite" and r.status == "ok")
    assert keras.peak_rss_mib > 2 * tflite.peak_rss_mib  # TensorFlow vs the LiteRT runtime alone


def test_accuracy_and_agreement_equal_the_export_gate(bench_result):
    """Bench, with no --data, uses the run's test split - the images the export gate used - through the same
    runtime code, so its figures must be the gate's exactly."""
    run, exports, result = bench_result
    assert result.n_images == 18 and "test split" in result.data
    # 18 images tell little, and bench says how little: 18 of 18 is 82.4-100 % at 95 % confidence.
    assert [w for w in result.warnings if w.startswith("Accuracy and agreement come from 18 image(s) only: even "
                                                       "100 % agreement on them is, at 95 % confidence, as little "
                                                       "as 82.4 %")], result.warnings
    rows = {r.model: r for r in result.rows if r.batch == 1}
    keras = rows["run/model.keras"]
    assert keras.agreement == 1.0 and keras.accuracy_change_pp == 0.0
    for e in exports:
        row, fid = rows[e.path.name], e.fidelity
        assert row.accuracy == pytest.approx(fid["accuracy"], abs=1e-12), e.path.name
        assert row.agreement == pytest.approx(fid["agreement"], abs=1e-12), e.path.name
        assert keras.accuracy == pytest.approx(fid["accuracy_keras"], abs=1e-12)
        assert row.size_bytes == e.size_bytes
        assert row.roc_auc is not None  # two classes


def test_report_files_are_written_and_well_formed(bench_result, tmp_path):
    _, _, result = bench_result
    written = write_report(result, tmp_path / "bench")
    out = tmp_path / "bench"
    data = json.loads((out / "results.json").read_text())
    assert len(data["rows"]) == len(result.rows) and data["machine"]["cpu"]
    assert data["class_names"] == ["bar_h", "bar_v"] and data["n_images"] == 18
    with open(out / "results.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == COLUMNS
        csv_rows = list(reader)
    assert len(csv_rows) == len(result.rows)
    assert {r["status"] for r in csv_rows} == {"ok", "failed"}
    md = (out / "report.md").read_text()
    assert md.count("| ok |") == 14 and md.count("| failed: ") == 4
    assert [c["batch"] for c in data["summary"]] == [1, 4]  # one finding per batch size (one thread count)
    assert all(f"batch {b}: fastest is " in md for b in (1, 4))
    pngs = [p for p in written if p.suffix == ".png"]
    assert {"accuracy_vs_latency.png", "latency.png"} <= {p.name for p in pngs}
    assert sum(p.name.startswith("confusion_") for p in pngs) == 7  # one per model that was evaluated
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    with pytest.raises(ConfigError, match="--force"):
        write_report(result, out)
    write_report(result, out, force=True)


def _row(model, fmt, quant, p50, *, threads=2, size=1000, folder="run/export", status="ok", agreement=1.0):
    return BenchRow(model=model, path=f"/{folder}/{model}", format=fmt, quantization=quant, threads=threads, batch=1,
                    status=status, size_bytes=size, p50_ms=p50 if status == "ok" else None, agreement=agreement)


def test_summary_names_the_fastest_and_int8_against_fp32_of_the_same_export():
    rows = [_row("run/model.keras", "keras", "keras", 20.0, folder="run"),
            _row("a_fp32.tflite", "tflite", "fp32", 5.0, size=8000),
            _row("a_int8.tflite", "tflite", "int8", 5.5, size=2400, agreement=0.99),  # slower than its fp32
            _row("a_fp32.onnx", "onnx", "fp32", 5.0),
            _row("a_int8.onnx", "onnx", "int8", 4.9),  # within the noise band
            _row("b_fp32.onnx", "onnx", "fp32", 6.0, folder="other/export"),  # another export: paired on its own
            _row("b_int8.onnx", "onnx", "int8", 2.0, folder="other/export", agreement=0.985),
            _row("c_fp32.tflite", "tflite", "fp32", 9.0, folder="third"),  # two fp32 in one folder: no pair
            _row("d_fp32.tflite", "tflite", "fp32", 9.5, folder="third"),
            _row("c_int8.tflite", "tflite", "int8", 3.0, folder="third", status="failed"),
            _row("a_int8.tflite", "tflite", "int8", 1.0, threads=1)]  # alone at 1 thread: nothing to compare
    [config] = summarise(rows)
    assert (config["threads"], config["batch"]) == (2, 1)
    assert config["fastest"] == {"model": "b_int8.onnx", "p50_ms": 2.0, "agreement": 0.985, "vs_keras": 10.0}
    pairs = {(p["format"], p["int8"]): p for p in config["int8_vs_fp32"]}
    assert set(pairs) == {("tflite", "a_int8.tflite"), ("onnx", "a_int8.onnx"), ("onnx", "b_int8.onnx")}
    assert pairs[("tflite", "a_int8.tflite")]["speedup"] == pytest.approx(5.0 / 5.5)
    assert pairs[("tflite", "a_int8.tflite")]["size_ratio"] == pytest.approx(0.3)
    assert pairs[("onnx", "b_int8.onnx")]["fp32"] == "b_fp32.onnx" and pairs[("onnx", "b_int8.onnx")]["speedup"] == 3
    lines = summary_lines([config])
    assert lines[0] == ("2 thread(s), batch 1: fastest is b_int8.onnx, p50 2.000 ms, 10.0x the Keras model "
                        "(agreement 98.50 %).")
    assert len(lines) == 4
    assert "0.91x (5.500 vs 5.000 ms), 30 % of the size; slower than fp32 on this CPU" in lines[1]
    assert "1.02x" in lines[2] and "no faster than fp32 on this CPU" in lines[2]
    assert lines[3].endswith("3.00x (2.000 vs 6.000 ms), 100 % of the size.")
    assert summarise([_row("x.tflite", "tflite", "fp32", 1.0)]) == []  # one row: nothing to say


def test_cli_bench_quick_writes_report_and_refuses_to_overwrite(exported, tmp_path):
    run, _ = exported
    target = tmp_path / "run"
    shutil.copytree(run, target)
    args = ["bench", str(target / "model.keras"), str(target / "export" / "run_int8.tflite"), "--quick",
            "--runs", "3", "--min-time", "0", "--threads", "1"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "run_int8.tflite" in res.output and "p50 ms" in res.output
    assert "1 thread(s), batch 1: fastest is " in res.output
    assert (target / "bench" / "report.md").exists()  # default: bench/ beside the first model
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "already exists" in res.output and "--force" in res.output
    from edgeclf.edge_runtime.backends import default_threads

    cores = default_threads()  # more threads than cores times contention, and the command says so
    res = CliRunner().invoke(main, ["bench", str(target / "export" / "run_int8.tflite"), "--quick", "--runs", "3",
                                    "--min-time", "0", "--threads", str(cores + 1), "--out", str(tmp_path / "over")])
    assert res.exit_code == 0, res.output
    assert f"{cores + 1} thread(s) on {cores} available core(s)" in res.output


def test_bench_passes_on_the_runtime_warnings_of_its_artefacts(exported, tmp_path, monkeypatch):
    """An int8 ONNX file with 8-bit weights on an x86 CPU without VNNI: predict warns, and so must bench."""
    import edgeclf.benchmarks.bench as bench
    import edgeclf.edge_runtime.classifier as classifier
    from edgeclf.edge_runtime.artifact import METADATA_KEY, read_metadata
    from edgeclf.toolkit.export.onnx import write_metadata

    run, _ = exported
    target = tmp_path / "run"
    shutil.copytree(run, target)
    onnx_int8 = target / "export" / "run_int8.onnx"
    meta = read_metadata(onnx_int8)
    meta["quantization"]["reduce_range"] = False  # as exported on (or for) a CPU with VNNI
    write_metadata(onnx_int8, json.dumps(meta), METADATA_KEY)
    monkeypatch.setattr(classifier, "needs_reduce_range", lambda: True)
    res = CliRunner().invoke(main, ["bench", str(onnx_int8), "--quick", "--runs", "3", "--min-time", "0",
                                    "--threads", "1", "--out", str(tmp_path / "bench")])
    assert res.exit_code == 0, res.output
    assert "run_int8.onnx has 8-bit int8 weights" in res.output
    assert "run_int8.onnx has 8-bit int8 weights" in (tmp_path / "bench" / "report.md").read_text()
    (warning,) = [w for w in json.loads((tmp_path / "bench" / "results.json").read_text())["warnings"]
                  if "8-bit" in w]
    assert "--reduce-range on" in warning
    monkeypatch.setattr(classifier, "needs_reduce_range", lambda: False)  # a VNNI or ARM CPU: nothing to say
    monkeypatch.setattr(bench, "FEW_EVALUATION_IMAGES", 18)  # nor about the run's 18 test images
    res = CliRunner().invoke(main, ["bench", str(onnx_int8), "--quick", "--runs", "3", "--min-time", "0",
                                    "--threads", "1", "--out", str(tmp_path / "bench2")])
    assert res.exit_code == 0 and "8-bit int8 weights" not in res.output
    assert json.loads((tmp_path / "bench2" / "results.json").read_text())["warnings"] == []


def test_cli_bench_needs_data_without_a_run(exported, tmp_path):
    run, _ = exported
    shutil.copy(run / "export" / "run_int8.tflite", tmp_path)  # away from the run it was exported from
    res = CliRunner().invoke(main, ["bench", str(tmp_path / "run_int8.tflite"), "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "--data" in res.output


def test_artefacts_alone_are_evaluated_on_the_run_they_came_from_while_its_model_is_unchanged(exported, tmp_path):
    run, _ = exported
    target = tmp_path / "run"
    shutil.copytree(run, target)
    args = ["bench", str(target / "export" / "run_int8.tflite"), "--quick", "--runs", "3", "--min-time", "0",
            "--threads", "1", "--out", str(tmp_path / "b")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["data"].startswith(f"test split of {target}") and "exported from" in results["data"]
    assert results["n_images"] == 18 and results["rows"][0]["accuracy"] is not None
    with open(target / "model.keras", "ab") as fh:  # no longer the bytes the artefact was exported from
        fh.write(b"\0")
    res = CliRunner().invoke(main, [*args, "--force"])
    assert res.exit_code == 2 and "--data" in res.output


def test_a_run_whose_dataset_moved_is_benchmarked_on_its_own_test_split_with_dataset(run_copy, tmp_path):
    meta_path = run_copy / "metadata.json"
    meta = json.loads(meta_path.read_text())
    moved = tmp_path / "moved-data"
    shutil.copytree(meta["dataset"]["path"], moved)
    meta["dataset"]["path"] = str(run_copy / "gone")
    meta_path.write_text(json.dumps(meta))
    spec = BenchSpec(max_images=10, **FAST)
    with pytest.raises(ConfigError, match=r"no usable test split \(its dataset is no longer at .*gone\)\. Pass "
                                          r"--dataset DIR where the run's dataset is now, or --data DIR"):
        run_bench([run_copy / "model.keras"], spec=spec)
    with pytest.raises(ConfigError, match="both --data and --dataset"):
        run_bench([run_copy / "model.keras"], data=moved, spec=spec, dataset=moved)
    result = run_bench([run_copy / "model.keras"], spec=spec, dataset=moved)
    assert result.rows[0].status == "ok" and result.data.startswith(f"test split of {run_copy} ({moved})")
    assert result.n_images == min(10, meta["dataset"]["split_sizes"]["test"])


def test_a_folder_benchmark_names_the_artefacts_it_left_out_for_failing_their_gate(exported, run_copy):
    (run_copy / "export").mkdir()
    shutil.copy(exported[0] / "export" / "run_fp32.tflite", run_copy / "export")
    (run_copy / "export" / "run_int8.tflite.rejected").write_bytes(b"x")
    result = run_bench([run_copy, run_copy / "export"], spec=BenchSpec(max_images=10, **FAST))
    assert [r.model for r in result.rows] == ["run/model.keras", "run_fp32.tflite"]
    assert ("Left out run_int8.tflite.rejected: failed the export gate (`edgeclf info FILE` says why)."
            in result.warnings)
    assert not [w for w in run_bench([run_copy / "model.keras"], spec=BenchSpec(max_images=10, **FAST)).warnings
                if w.startswith("Left out")]  # named files only: nothing was left out


def test_table_columns_line_up_for_names_in_wide_characters():
    """Chinese file names (and emoji) take two terminal columns a character: padded by len() the table is ragged."""
    from edgeclf.edge_runtime.paths import display_width

    table = format_table([_row("安全帽_int8.tflite", "tflite", "int8", 1.0),
                          _row("helmet_int8.tflite", "tflite", "int8", 2.0)])
    assert display_width("安全帽") == 6 and display_width("boot 👟") == 7 and display_width("e\u0301") == 1
    assert len({display_width(line) for line in table.splitlines()}) == 1, table  # every row as wide as the header


def test_accuracy_vs_latency_names_every_model_in_a_legend_not_over_the_points(bench_result, tmp_path, monkeypatch):
    # Artefacts of one model share an accuracy: names printed beside the points were printed over each other.
    from edgeclf.toolkit import plots

    _, _, result = bench_result
    figures = []
    save = plots._save

    def keep(fig, path):
        if path.name == "accuracy_vs_latency.png":
            ax = fig.axes[0]
            figures.append(([t.get_text() for t in ax.texts], [t.get_text() for t in ax.get_legend().get_texts()]))
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    write_report(result, tmp_path / "bench")
    (texts, legend), = figures
    models = {r.model for r in result.rows if r.status == "ok" and r.accuracy is not None}
    assert not texts
    assert len(legend) == len(models) and all(any(t.startswith(m + " (") for t in legend) for m in models)


def test_a_benchmark_record_keeps_its_history_table(tmp_path):
    """Each run replaces the current record and adds a row to the benchmark's one history table."""
    from edgeclf.benchmarks.machine import write_record

    for i, speedup in enumerate((1.25, 2.5)):
        write_record(tmp_path, "speed", {"speedup": speedup}, [f"# speed {speedup}"],
                     history={"date": f"2026-01-0{i + 1}", "commit": f"c{i}", "speed-up": f"{speedup}x",
                              "record": {"speedup": speedup}})
    assert json.loads((tmp_path / "speed.json").read_text()) == {"speedup": 2.5}
    rows = json.loads((tmp_path / "speed_history.json").read_text())
    assert [r["record"]["speedup"] for r in rows] == [1.25, 2.5]
    page = (tmp_path / "speed.md").read_text().splitlines()
    assert page[0] == "# speed 2.5"
    assert page[-4:] == ["| date | commit | speed-up |", "|---|---|---|", "| 2026-01-01 | c0 | 1.25x |",
                         "| 2026-01-02 | c1 | 2.5x |"]
