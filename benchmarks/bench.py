"""``edgeclf bench``: every artefact beside the full Keras model, in one table.

Each model x thread count x batch size is one row, measured by ``bench_worker`` in a fresh subprocess (latency,
cold start and peak RSS cannot leak between rows, and a crashing row cannot stop the table). Accuracy is measured
once per model, on the same decoded images for every model, and compared with the Keras reference row.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeclf.edge_runtime.artifact import REJECTED, files_in_run
from edgeclf.edge_runtime.backends import default_threads
from edgeclf.edge_runtime.errors import ConfigError, DataError, EdgeclfError
from edgeclf.edge_runtime.preprocess import PreprocessSpec

from edgeclf.toolkit.progress import Reporter

logger = logging.getLogger(__name__)

KINDS = ("keras", "tflite", "onnx")
# Fewer evaluation images than this and bench says how little its accuracy and agreement figures can tell apart.
FEW_EVALUATION_IMAGES = 100
_MODE_ORDER = {"keras": 0, "fp32": 1, "fp16": 2, "dynamic": 3, "int8": 4}


@dataclass(frozen=True)
class BenchSpec:
    """How to benchmark.

    Attributes:
        threads: Thread counts; one row per value.
        batches: Batch sizes; one row per value.
        runs: Minimum timed runs per row.
        min_seconds: Keep timing until this much time has passed as well (a stable median on fast models).
        max_runs: Upper bound on timed runs per row.
        warmup: Untimed runs before timing.
        max_images: Evaluate at most this many images (a stratified-free random subset, seed 0); None for all.
        timeout_s: A row that takes longer is stopped and reported as failed.
    """

    threads: tuple[int, ...] = field(default_factory=lambda: (default_threads(),))
    batches: tuple[int, ...] = (1,)
    runs: int = 100
    min_seconds: float = 2.0
    max_runs: int = 20000
    warmup: int = 10
    max_images: int | None = None
    timeout_s: float = 900.0

    def __post_init__(self) -> None:
        for name, values in (("threads", self.threads), ("batch", self.batches)):
            if not values or any(int(v) < 1 for v in values):
                raise ConfigError(f"Received: {name}={','.join(map(str, values)) or '(none)'}. "
                                  "Expected positive integers such as 1,2,4.")
        if self.runs < 1 or self.max_runs < self.runs or self.warmup < 0 or self.min_seconds < 0:
            raise ConfigError(f"Received: runs={self.runs}, max_runs={self.max_runs}, warmup={self.warmup}, "
                              f"min_seconds={self.min_seconds}. Expected runs >= 1, max_runs >= runs, warmup >= 0, "
                              "min_seconds >= 0.")
        if self.timeout_s <= 0:
            raise ConfigError(f"Received: timeout_s={self.timeout_s}. Expected a positive number of seconds per row.")
        if self.max_images is not None and self.max_images < 1:
            raise ConfigError(f"Received: max_images={self.max_images}. Expected at least 1.")

    @classmethod
    def quick(cls, **overrides) -> "BenchSpec":
        """A short smoke run: few timed runs, 200 evaluation images."""
        base = {"runs": 20, "min_seconds": 0.2, "warmup": 3, "max_images": 200}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


@dataclass(frozen=True)
class BenchModel:
    """A model to benchmark, described from its own metadata (or ``metadata.json`` for Keras)."""

    path: Path
    kind: str
    mode: str
    class_names: tuple[str, ...] = ()
    preprocess: PreprocessSpec | None = None
    error: str | None = None
    name: str = ""
    adapter: dict | None = None  # a Keras model trained elsewhere: the ForeignSpec its artefacts were exported with
    warnings: tuple[str, ...] = ()  # what makes it less faithful on this machine (``deployment_warnings``)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path.is_file() else 0


@dataclass(frozen=True)
class BenchRow:
    """One model at one thread count and batch size. Figures are None when not measured (failed or no labels)."""

    model: str
    path: str
    format: str
    quantization: str
    threads: int
    batch: int
    status: str
    reason: str | None = None
    size_bytes: int = 0
    accuracy: float | None = None
    f1_macro: float | None = None
    roc_auc: float | None = None
    accuracy_change_pp: float | None = None
    agreement: float | None = None
    init_s: float | None = None
    first_inference_ms: float | None = None
    warmup_s: float | None = None
    runs: int | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    images_per_s: float | None = None
    cold_start_s: float | None = None
    peak_rss_mib: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BenchResult:
    """Rows, per-model evaluation, and what the benchmark ran on."""

    rows: list[BenchRow]
    evaluation: dict[str, dict]
    samples_ms: dict[str, list[float]]
    data: str
    n_images: int
    class_names: list[str]
    machine: dict
    spec: BenchSpec
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    warnings: tuple[str, ...] = ()  # the models' deployment warnings on this machine


def _describe_model(path: Path) -> BenchModel:
    from edgeclf.edge_runtime.artifact import read_metadata, read_run_metadata
    from edgeclf.edge_runtime.classifier import deployment_warnings

    kind = {".keras": "keras", ".tflite": "tflite", ".onnx": "onnx"}[path.suffix.lower()]
    try:
        if kind == "keras":
            meta, mode, warnings = read_run_metadata(path), "keras", ()
        else:
            meta = read_metadata(path)
            mode = meta.get("quantization", {}).get("mode", "unknown")
            warnings = deployment_warnings(meta, path)
        return BenchModel(path, kind, mode, tuple(meta["class_names"]), PreprocessSpec.from_dict(meta["preprocess"]),
                          warnings=warnings)
    except EdgeclfError as exc:
        return BenchModel(path, kind, "unknown", error=str(exc))
    except Exception as exc:  # a corrupt file is a failed row, not a failed benchmark
        return BenchModel(path, kind, "unknown", error=f"unreadable: {type(exc).__name__}: {str(exc)[:200]}")


def _describe_foreign(keras_model: BenchModel, artefacts: Sequence[BenchModel]) -> BenchModel:
    """A Keras model trained outside edgeclf, described by an artefact exported from it (same SHA-256), whose
    metadata records the class names, input and adapter that ``edgeclf export --labels ... --input-norm ...`` used."""
    from edgeclf.edge_runtime.artifact import read_metadata
    from edgeclf.toolkit.export.foreign import spec_from_artifact
    from edgeclf.edge_runtime.artifact import sha256_file

    digest = sha256_file(keras_model.path)
    for artefact in artefacts:
        meta = read_metadata(artefact.path)
        if meta.get("source_model_sha256") == digest and meta.get("adapter"):
            foreign = spec_from_artifact(meta)
            return replace(keras_model, mode="keras", class_names=foreign.class_names, preprocess=artefact.preprocess,
                           error=None, adapter=foreign.to_dict())
    return replace(keras_model, error=f"{keras_model.path.with_name('metadata.json')} not found and none of the "
                                      "artefacts benchmarked with it was exported from it: bench a Keras model "
                                      "trained elsewhere together with its exported artefacts (their metadata "
                                      "holds its class names and input).")


def collect_models(paths: Sequence[str | os.PathLike]) -> list[BenchModel]:
    """The models named by ``paths``: files, run directories (model.keras + export/) or export directories.

    Keras models come first (the reference), then artefacts by format and quantisation (fp32 first).

    Raises:
        ConfigError: For a missing path, an unsupported file type, or a folder with no models.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ConfigError(f"Model not found: {p}. Expected a .keras/.tflite/.onnx file or a run/export folder.")
        if p.is_dir():
            inside = files_in_run(p, (".keras", ".tflite", ".onnx"))
            if not inside:
                raise ConfigError(f"No .keras, .tflite or .onnx models in {p} (or {p / 'export'}).")
            found += inside
        elif p.suffix.lower() in (".keras", ".tflite", ".onnx"):
            found.append(p)
        else:
            raise ConfigError(f"Received: {p}. Supported: .keras, .tflite, .onnx files, or a run/export folder.")
    unique = list(dict.fromkeys(f.resolve() for f in found))
    described = {p: _describe_model(p) for p in unique}
    artefacts = [m for m in described.values() if m.kind != "keras" and m.error is None]
    for p, m in described.items():
        if m.kind == "keras" and not p.with_name("metadata.json").exists():
            described[p] = _describe_foreign(m, artefacts)
    # Names label rows, plots and files: the file name, or folder/file where that alone is ambiguous
    # (every run's Keras model is called model.keras).
    counts: dict[str, int] = {}
    for p in unique:
        counts[p.name] = counts.get(p.name, 0) + 1
    models = [replace(described[p], name=f"{p.parent.name}/{p.name}" if counts[p.name] > 1 or
                      p.name == "model.keras" else p.name) for p in unique]
    return sorted(models, key=lambda m: (KINDS.index(m.kind), _MODE_ORDER.get(m.mode, 9), m.name))


@dataclass
class _EvalData:
    labels: np.ndarray | None
    class_names: list[str]
    pixels_by_spec: dict[PreprocessSpec, Path]
    sample_image: dict[PreprocessSpec, Path]
    origin: str
    n: int


def _prepare_data(data: str | os.PathLike | None, models: list[BenchModel], spec: BenchSpec, work: Path,
                  reporter: Reporter, dataset: str | os.PathLike | None = None) -> _EvalData:
    """Decodes the evaluation images once per distinct input contract into ``.npy`` files the workers map."""
    from PIL import Image

    from edgeclf.toolkit.data import decode_samples, discover

    usable = [m for m in models if m.error is None]
    if not usable:
        raise DataError("None of the models could be read; nothing to benchmark.")
    class_names = list(usable[0].class_names)
    specs = list(dict.fromkeys(m.preprocess for m in usable))
    if data is not None:
        ds = discover(data, min_classes=1)
        samples = ds.splits["test"] if "test" in ds.splits else ds.all_samples()
        origin = f"{data}" + (" (test split)" if "test" in ds.splits else "")
        relabelled = ds.relabelled(samples, class_names)
        known = relabelled is not None
        if known:
            samples = relabelled
        else:
            reporter.warn(f"The classes of {data} ({', '.join(ds.class_names)}) are not the model's "
                          f"({', '.join(class_names)}); accuracy is not measured, only agreement.")
    else:
        keras = next((m.path for m in usable if m.kind == "keras" and m.adapter is None), None)  # with a run
        source = None if keras else _source_run_model(usable)
        if keras is None and source is None:
            raise ConfigError("Received no --data and no run directory. Pass --data DIR (labelled images) or a run "
                              "directory whose test split can be used.")
        ds, samples, origin, known = _run_test_split(keras or source, dataset)
        if source is not None:
            origin += (f", the run the artefacts were exported from (add {source} to the models to measure "
                       "agreement with it)")
    samples = samples.subsample(spec.max_images, seed=0)
    pixels_by_spec, sample_image, labels, n = {}, {}, None, None
    for i, pspec in enumerate(specs):
        target = work / f"pixels_{i}.npy"
        out = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8,
                                        shape=(len(samples), pspec.height, pspec.width, 3))
        with reporter.progress(len(samples), f"Decoding {len(samples)} images at {pspec.width}x{pspec.height}") as adv:
            decoded = decode_samples(ds, samples, pspec, out=out, progress=adv)
        if n is None:
            for name, reason in decoded.skipped:
                reporter.warn(f"Skipped {name}: {reason}")
            n, labels = len(decoded), decoded.labels
        elif len(decoded) != n:
            raise DataError(f"Images decoded differently at {pspec.size}: {len(decoded)} vs {n}.")
        if not len(decoded):
            raise DataError(f"No readable images in {origin}.")
        pixels_by_spec[pspec] = target  # workers read its first n (decoded) images; skipped ones leave a tail
        sample_image[pspec] = work / f"sample_{i}.png"
        Image.fromarray(np.asarray(decoded.pixels[0])).save(sample_image[pspec])
        out.flush()
    return _EvalData(labels if known else None, class_names, pixels_by_spec, sample_image, origin, int(n))


def _source_run_model(models: Sequence[BenchModel]) -> Path | None:
    """The ``model.keras`` that artefacts were exported from, where they still sit in (or beside) its run folder.

    An artefact's metadata names its source model and that file's SHA-256; only a file with the same bytes counts,
    so a retrained model in the same folder is never taken for the source.
    """
    from edgeclf.edge_runtime.artifact import read_metadata
    from edgeclf.edge_runtime.artifact import sha256_file

    checked: dict[Path, str] = {}
    for m in models:
        meta = read_metadata(m.path)
        source, digest = meta.get("source_model"), meta.get("source_model_sha256")
        if not source or not digest:
            continue
        for candidate in (m.path.parent.parent / Path(source).name, m.path.parent / Path(source).name):
            if not (candidate.is_file() and candidate.with_name("metadata.json").is_file()):
                continue
            if candidate not in checked:
                checked[candidate] = sha256_file(candidate)
            if checked[candidate] == digest:
                return candidate
    return None


def _run_test_split(keras_path: Path, dataset: str | os.PathLike | None = None):
    """The test split of the training run a ``model.keras`` came from (its ``splits.csv``), found in ``dataset``
    instead of where the run was trained when the dataset has moved."""
    from edgeclf.edge_runtime.artifact import read_run_metadata
    from edgeclf.toolkit.export.images import relocate_dataset, relocate_hint, run_split_problem, run_split_samples

    run_dir = keras_path.parent
    meta = read_run_metadata(keras_path)
    if dataset is not None:
        meta = relocate_dataset(meta, dataset)
    found = run_split_samples(meta, run_dir, "test")
    if found is None:
        moved = relocate_hint(run_dir) if dataset is None else ""
        raise ConfigError(f"{run_dir} has no usable test split ({run_split_problem(meta, run_dir, 'test')}). "
                          f"Pass {moved}--data DIR with labelled images.")
    ds, samples = found
    return ds, samples, f"test split of {run_dir} ({meta['dataset']['path']})", True


def _run_row(model: BenchModel, threads: int, batch: int, spec: BenchSpec, data: _EvalData, work: Path,
             evaluate: bool, tag: str) -> tuple[dict, Path | None]:
    job_path, result_path = work / f"job_{tag}.json", work / f"result_{tag}.json"
    probs_path = work / f"probs_{tag}.npy" if evaluate else None
    job = {"model": str(model.path), "kind": model.kind, "adapter": model.adapter, "threads": threads, "batch": batch,
           "runs": spec.runs, "min_seconds": spec.min_seconds, "max_runs": spec.max_runs, "warmup": spec.warmup,
           "sample_image": str(data.sample_image[model.preprocess]), "pixels": str(data.pixels_by_spec[model.preprocess]),
           "n_images": data.n, "probs_out": str(probs_path) if probs_path else None, "result": str(result_path)}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    job["launched_at"] = time.time()
    job_path.write_text(json.dumps(job), encoding="utf-8")
    cmd = [sys.executable, "-m", "edgeclf.benchmarks.bench_worker", str(job_path)]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, timeout=spec.timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timed out after {spec.timeout_s:.0f} s"}, None
    if result_path.is_file():
        result = json.loads(result_path.read_text(encoding="utf-8"))
    else:  # the worker died before it could write (a crash inside the inference library, or killed for memory)
        tail = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        result = {"status": "failed", "reason": f"worker exited with {proc.returncode}"
                  + (f": {tail[-1][:300]}" if tail else "")}
    ok = result["status"] == "ok" and probs_path is not None and probs_path.is_file()
    return result, probs_path if ok else None


def check_evaluation_images(data: str | os.PathLike | None, dataset: str | os.PathLike | None) -> None:
    """Refuses ``data`` and ``dataset`` together, before any work: they are two answers to one question.

    Raises:
        ConfigError: If both are given.
    """
    if data is not None and dataset is not None:
        raise ConfigError("Received both --data and --dataset. Pass --data DIR to evaluate on other images, or "
                          "--dataset DIR to find the run's own test split where its dataset is now.")


def run_bench(models: Sequence[str | os.PathLike], data: str | os.PathLike | None = None,
              spec: BenchSpec | None = None, reporter: Reporter | None = None,
              dataset: str | os.PathLike | None = None) -> BenchResult:
    """Benchmarks each model at each thread count and batch size.

    Args:
        models: Model files or run/export folders (see ``collect_models``).
        data: Labelled images in any form ``edgeclf train`` accepts (its ``test`` split when pre-split); None uses
            the test split of the run a given ``model.keras`` came from.
        spec: How to benchmark.
        dataset: Where that run's dataset is now, when it has moved since training: its test split is rebuilt
            there from ``splits.csv``. Not with ``data``.
        reporter: Progress sink.

    Returns:
        The rows (failed ones included, with their reason) and per-model evaluation.

    Raises:
        ConfigError, DataError: For unusable models or data (one-line messages).
    """
    from edgeclf.benchmarks.machine import describe
    from edgeclf.toolkit.metrics import classification_metrics, wilson_interval

    spec, reporter = spec or BenchSpec(), reporter or Reporter()
    check_evaluation_images(data, dataset)
    found = collect_models(models)
    warnings = tuple(w for m in found for w in m.warnings)
    rejected = {f.resolve(): f.name for p in map(Path, models) if p.is_dir()
                for f in files_in_run(p, tuple(ext + REJECTED for ext in (".tflite", ".onnx")))}
    if rejected:  # a run folder and its export/ folder both given name each file once
        warnings += (f"Left out {', '.join(rejected.values())}: failed the export gate (`edgeclf info FILE` says "
                     "why).",)
    for w in warnings:
        reporter.warn(w)
    cores = default_threads()
    over = [t for t in spec.threads if t > cores]
    if over:
        reporter.warn(f"{', '.join(map(str, over))} thread(s) on {cores} available core(s): those rows time the "
                      "threads competing for cores, not the model's speed with that many.")
    rows: list[BenchRow] = []
    evaluation: dict[str, dict] = {}
    samples_ms: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="edgeclf-bench-") as tmp:
        work = Path(tmp)
        eval_data = _prepare_data(data, found, spec, work, reporter, dataset)
        probs_by_model: dict[str, np.ndarray] = {}
        grid = [(m, t, b) for m in found for t in spec.threads for b in spec.batches]
        with reporter.progress(len(grid), f"Benchmarking {len(found)} model(s), {len(grid)} row(s)") as advance:
            for i, (m, threads, batch) in enumerate(grid):
                base = {"model": m.name, "path": str(m.path), "format": m.kind, "quantization": m.mode,
                        "threads": threads, "batch": batch, "size_bytes": m.size_bytes}
                if m.error is None and tuple(m.class_names) != tuple(eval_data.class_names):
                    result = {"status": "failed", "reason": f"classes {list(m.class_names)} differ from the first "
                              f"model's {eval_data.class_names}"}
                elif m.error is not None:
                    result = {"status": "failed", "reason": m.error}
                else:
                    result, probs = _run_row(m, threads, batch, spec, eval_data, work,
                                             evaluate=m.name not in probs_by_model, tag=str(i))
                    if probs is not None:
                        probs_by_model[m.name] = np.load(probs)
                if result["status"] == "ok":
                    lat = result["latency"]
                    samples_ms[f"{m.name} t{threads} b{batch}"] = result["latency_samples_ms"]
                    base.update(init_s=result["init_s"], first_inference_ms=result["first_inference_ms"],
                                warmup_s=result["warmup_s"], runs=lat["n"], mean_ms=lat["mean_ms"],
                                std_ms=lat["std_ms"], p50_ms=lat["p50_ms"], p90_ms=lat["p90_ms"],
                                p99_ms=lat["p99_ms"], images_per_s=result["images_per_s"],
                                cold_start_s=result["cold_start_s"], peak_rss_mib=result["peak_rss_mib"])
                rows.append(BenchRow(status=result["status"], reason=result.get("reason"), **base))
                advance(1)
    reference = next((probs_by_model[m.name] for m in found if m.kind == "keras" and m.name in probs_by_model), None)
    ref_acc = None
    for m in found:
        probs = probs_by_model.get(m.name)
        if probs is None:
            continue
        ev: dict = {"n": int(len(probs))}
        if eval_data.labels is not None:
            metrics = classification_metrics(eval_data.labels, probs, eval_data.class_names)
            ev.update(accuracy=metrics["accuracy"], f1_macro=metrics["f1_macro"], roc_auc=metrics["roc_auc"],
                      confusion_matrix=metrics["confusion_matrix"])
            if m.kind == "keras" and ref_acc is None:
                ref_acc = metrics["accuracy"]
        if reference is not None:
            ev["agreement"] = float((probs.argmax(1) == reference.argmax(1)).mean())
            ev["max_abs_diff"] = float(np.abs(probs - reference).max())
        evaluation[m.name] = ev
    if evaluation and eval_data.n < FEW_EVALUATION_IMAGES:
        low = wilson_interval(eval_data.n, eval_data.n)[0]
        few = (f"Accuracy and agreement come from {eval_data.n} image(s) only: even 100 % agreement on them is, "
               f"at 95 % confidence, as little as {100 * low:.1f} % on other images like them. Pass --data with "
               f"{FEW_EVALUATION_IMAGES} or more labelled images to tell the models apart.")
        reporter.warn(few)
        warnings += (few,)
    final = []
    for r in rows:
        ev = evaluation.get(r.model, {})
        change = (100.0 * (ev["accuracy"] - ref_acc)) if ref_acc is not None and "accuracy" in ev else None
        final.append(replace(r, accuracy=ev.get("accuracy"), f1_macro=ev.get("f1_macro"),
                             roc_auc=ev.get("roc_auc") if len(eval_data.class_names) == 2 else None,
                             accuracy_change_pp=change, agreement=ev.get("agreement")))
    return BenchResult(final, evaluation, samples_ms, eval_data.origin, eval_data.n, eval_data.class_names, describe(),
                       spec, warnings=warnings)
