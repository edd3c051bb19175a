"""``edgeclf predict --engine ray``: the same records as the local engine, made by Ray Data actors, on one machine
or a cluster.

Each actor loads the models once (``Classifier.load`` with an explicit thread count: Ray sets
``OMP_NUM_THREADS=1`` but pins no CPUs) and classifies its batches with ``stream_many``, the local engine's own
decode-and-classify loop, so decoding (``load_image``: EXIF orientation, crop/pad, resize filter) and scores are
the local engine's. A bad image is an error row, never an exception that fails the job. Ray restarts a crashed
actor and re-runs its batch (a bounded number of times, so an image that kills its process every time ends the
job rather than looping).

Rows come back to this process, which writes them as shards (``part-*.parquet`` or ``part-*.jsonl``), each
written whole under a temporary name and then renamed: a killed job leaves complete shards, and ``--resume``
reads their paths and classifies only the images not written yet (filtered before Ray sees the list).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .errors import ConfigError, DataError, ImageDecodeError, missing_dependency
from .paths import mask_credentials
from .records import count_labels, image_record, model_records

FORMATS = ("parquet", "jsonl")
SHARD_PREFIX = "part-"
MAX_RESTARTS = 3  # per actor; a batch is retried as many times
MAX_REMOTE_IMAGE_BYTES = 256 << 20  # an object read from a URI: no unbounded download into an actor's memory
_URI_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "viewfs://", "abfs://", "abfss://", "file://")


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise missing_dependency("ray", "ray", exc) from None
    return ray


@dataclass(frozen=True)
class RaySpec:
    """How to run on Ray.

    Args:
        address: None to start a local Ray instance for this job; ``auto`` or ``ray://HOST:10001`` to join a cluster.
        actors: Model replicas; None: as many as the cluster's CPUs allow at ``threads_per_actor`` each.
        threads_per_actor: Inference and decoding threads of each actor (the CPUs Ray reserves for it).
        batch_size: Images per actor call.
        fmt: ``parquet`` or ``jsonl`` shards.
        shard_rows: Rows per shard written.
    """

    address: str | None = None
    actors: int | None = None
    threads_per_actor: int = 1
    batch_size: int = 32
    fmt: str = "parquet"
    shard_rows: int = 10_000

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise ConfigError(f"Received: format '{self.fmt}'. Supported: {', '.join(FORMATS)}.")
        for name in ("threads_per_actor", "batch_size", "shard_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"Received: {name}={getattr(self, name)}. Expected at least 1.")
        if self.actors is not None and self.actors < 1:
            raise ConfigError(f"Received: actors={self.actors}. Expected at least 1.")


def is_uri(path: str) -> bool:
    return path.lower().startswith(_URI_SCHEMES)


def read_manifest(path: str | os.PathLike) -> list[str]:
    """The image paths or URIs a manifest lists: a CSV with a ``path`` column (else its first column), or text with
    one per line. Relative paths are relative to the manifest's folder.

    Raises:
        DataError: For a missing or unreadable manifest.
    """
    import csv

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"Manifest not found: {path}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read the manifest {path}: {exc}. Expected UTF-8 text.") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if not rows:
            return []
        column = rows[0].index("path") if "path" in rows[0] else 0
        entries = [r[column].strip() for r in rows[1:] if len(r) > column and r[column].strip()]
    else:
        entries = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    base = path.parent
    return [e if is_uri(e) or os.path.isabs(e) else str(base / e) for e in entries]


def _fetch(item: str):
    """A local path as it is; a URI's bytes, read through pyarrow's filesystems (S3, GCS, HDFS, ...)."""
    if not is_uri(item) or item.lower().startswith("file://"):
        return item[len("file://"):] if item.lower().startswith("file://") else item
    from pyarrow import fs as pafs

    try:
        filesystem, inner = pafs.FileSystem.from_uri(item)
        info = filesystem.get_file_info(inner)
        if info.type == pafs.FileType.NotFound:
            return ImageDecodeError(mask_credentials(item), "not found")
        if info.size is not None and info.size > MAX_REMOTE_IMAGE_BYTES:
            return ImageDecodeError(mask_credentials(item), f"{info.size:,} bytes, over the "
                                                            f"{MAX_REMOTE_IMAGE_BYTES:,} read for one image")
        with filesystem.open_input_stream(inner) as fh:
            return fh.read(MAX_REMOTE_IMAGE_BYTES + 1)
    except Exception as exc:  # any filesystem's error is this image's failure, not the job's
        return ImageDecodeError(mask_credentials(item), f"unreadable: {mask_credentials(str(exc))[:200]}")


class Predictor:
    """A Ray Data actor: loads the models once, then turns batches of paths into records (JSON text per row)."""

    def __init__(self, model_paths: Sequence[str], threads: int, threshold: float | None, top_k: int):
        from .classifier import Classifier, distinct_names

        self.classifiers = [Classifier.load(p, threads) for p in model_paths]
        distinct_names(self.classifiers)
        self.threads, self.threshold, self.top_k = threads, threshold, top_k

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from .classifier import stream_many

        paths = [str(p) for p in batch["path"]]
        fetched = [_fetch(p) for p in paths]
        records: dict[int, dict] = {}
        good = [i for i, f in enumerate(fetched) if not isinstance(f, ImageDecodeError)]
        for i, f in enumerate(fetched):
            if isinstance(f, ImageDecodeError):
                records[i] = image_record(mask_credentials(paths[i]), self.classifiers, [f], self.threshold,
                                          self.top_k)
        # stream_many yields in input order, one result list per image; a bad image's list holds its error
        stream = stream_many(self.classifiers, [fetched[i] for i in good], max(1, len(good)), self.threads)
        for i, (_, results) in zip(good, stream):
            records[i] = image_record(mask_credentials(paths[i]), self.classifiers, results, self.threshold,
                                      self.top_k)
        return {"record": np.array([json.dumps(records[i]) for i in range(len(paths))], dtype=object)}


def parquet_schema(classifiers: Sequence, top_k: int):
    """The Parquet schema of the records: ``path``, the model's ``label``/``score``/``scores`` (a struct with one
    field per class) and ``top_k``, or ``models`` (a struct per model name) for several models; ``error``."""
    import pyarrow as pa

    def model_fields(c):
        fields = [("label", pa.string()), ("score", pa.float64()),
                  ("scores", pa.struct([(n, pa.float64()) for n in c.class_names]))]
        if top_k > 1:
            fields.append(("top_k", pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))))
        return fields

    fields = [("path", pa.string())]
    if len(classifiers) == 1:
        fields += model_fields(classifiers[0])
    else:
        fields.append(("models", pa.struct([(c.name, pa.struct(model_fields(c))) for c in classifiers])))
    return pa.schema(fields + [("error", pa.string())])


class ShardWriter:
    """Writes records as shards of ``rows`` each: a temporary name first, renamed when complete."""

    def __init__(self, folder: Path, fmt: str, schema, rows: int):
        self.folder, self.fmt, self.schema, self.rows = folder, fmt, schema, rows
        self.stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        self.pending: list[dict] = []
        self.seq = 0
        self.written = 0

    def add(self, record: dict) -> None:
        self.pending.append(record)
        if len(self.pending) >= self.rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.seq += 1
        name = f"{SHARD_PREFIX}{self.stamp}-{self.seq:05d}.{self.fmt}"
        tmp = self.folder / f".{name}.part"
        if self.fmt == "jsonl":
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.pending), encoding="utf-8")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(self.pending, schema=self.schema), tmp)
        os.replace(tmp, self.folder / name)
        self.written += len(self.pending)
        self.pending = []


def shards(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(f"{SHARD_PREFIX}*") if p.suffix in (".parquet", ".jsonl"))


def written_paths(folder: Path) -> set[str]:
    """The image paths the shards in ``folder`` already hold (``--resume``)."""
    done: set[str] = set()
    for shard in shards(folder):
        if shard.suffix == ".jsonl":
            with open(shard, encoding="utf-8") as fh:
                done.update(json.loads(line)["path"] for line in fh if line.strip())
        else:
            import pyarrow.parquet as pq

            done.update(pq.read_table(shard, columns=["path"]).column("path").to_pylist())
    return done


def check_cpus(spec: RaySpec, cluster_cpus: int) -> int:
    """The number of actors to start: ``spec.actors``, or as many as the cluster's CPUs hold.

    Raises:
        ConfigError: When the actors would need more CPUs than the cluster has: Ray would wait for them forever.
    """
    if cluster_cpus < spec.threads_per_actor:
        raise ConfigError(f"Received: --threads-per-actor {spec.threads_per_actor}, but the Ray cluster has "
                          f"{cluster_cpus} CPU(s). Expected at most {cluster_cpus}.")
    fit = cluster_cpus // spec.threads_per_actor
    actors = spec.actors if spec.actors is not None else fit
    if actors > fit:
        raise ConfigError(f"Received: --actors {actors} with --threads-per-actor {spec.threads_per_actor}: "
                          f"{actors * spec.threads_per_actor} CPUs, but the Ray cluster has {cluster_cpus}, so Ray "
                          f"would wait for CPUs that never come. Expected --actors {fit} or fewer.")
    return actors


@dataclass
class RayRun:
    """What a Ray job did: images classified (this run), failed, skipped (``--resume``), each model's name and
    per-label counts, and timings."""

    names: list | None = None
    done: int = 0
    failed: int = 0
    skipped: int = 0
    counts: list | None = None
    startup_s: float = 0.0
    wall_s: float = 0.0
    actors: int = 0


def run(model_paths: Sequence[str], images: Iterable[str], out: str | os.PathLike, spec: RaySpec, *,
        threshold: float | None = None, top_k: int = 1, resume: bool = False, force: bool = False,
        progress: Callable[[int, int, int], None] | None = None, predictor: type = Predictor) -> RayRun:
    """Classifies ``images`` with the models on Ray and writes the records as shards into ``out``.

    Args:
        model_paths: ``.tflite`` / ``.onnx`` artefacts, loaded here first to check them.
        images: Paths or URIs (a manifest read, folders expanded).
        out: The output folder.
        spec: Cluster and actor settings.
        threshold, top_k: As for the local engine.
        resume: Skip the images whose records ``out`` already holds.
        force: Replace an ``out`` that holds shards; the old shards are removed only once the new ones are written.
        progress: Called with (images done, failed, total) as records arrive.
        predictor: The actor class (a subclass for tests).

    Raises:
        ConfigError: For settings the cluster cannot run, or an ``out`` that holds shards without --resume/--force.
    """
    from .classifier import Classifier, check_threshold, distinct_names

    started = time.monotonic()
    classifiers = [Classifier.load(p, 1) for p in model_paths]  # fail fast, here, on a bad model
    distinct_names(classifiers)
    check_threshold(threshold, [(c.path.name, c.class_names) for c in classifiers])
    out = Path(out)
    if resume and force:
        raise ConfigError("Received --resume and --force. Expected one: --resume continues the job in --out, --force "
                          "replaces it.")
    existing = shards(out) if out.is_dir() else []
    if existing and not (resume or force):
        raise ConfigError(f"{out} already holds {len(existing)} shard(s). Pass --resume to classify only the images "
                          "not written yet, or --force to replace them.")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"Received: --out {out}, a file. Expected a folder for the shards.")
    target = out
    if force and existing:
        target = out.with_name(f".{out.name}.edgeclf-tmp-{os.getpid()}")
        shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.glob(f".{SHARD_PREFIX}*.part"):  # left by a killed job: incomplete by construction
        stale.unlink()
    items = list(dict.fromkeys(images))
    result = RayRun(names=[c.name for c in classifiers], counts=[dict.fromkeys(c.class_names, 0) for c in classifiers])
    if resume:
        done = written_paths(target)
        todo = [p for p in items if mask_credentials(p) not in done]
        result.skipped = len(items) - len(todo)
        items = todo
    writer = ShardWriter(target, spec.fmt, parquet_schema(classifiers, top_k) if spec.fmt == "parquet" else None,
                         spec.shard_rows)
    try:
        ray = import_ray()
        for name in ("ray", "ray.data"):  # its progress notices; the errors still show
            logging.getLogger(name).setLevel(logging.ERROR)
        t0 = time.monotonic()
        own = not ray.is_initialized()
        if own:
            options = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            if spec.address is None:
                options["num_cpus"] = os.cpu_count() or 1
            ray.init(address=spec.address, **options)
        try:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False  # ours counts images, not blocks
            ctx.print_on_execution_start = False
            result.actors = check_cpus(spec, int(ray.cluster_resources().get("CPU", 0)))
            result.startup_s = time.monotonic() - t0
            if items:
                blocks = max(result.actors * 2, math.ceil(len(items) / (spec.batch_size * 4)))
                ds = ray.data.from_items([{"path": p} for p in items], override_num_blocks=min(len(items), blocks))
                with warnings.catch_warnings():
                    # Bounded restarts have no named parameter yet; the extra pins Ray below the release that drops this.
                    warnings.filterwarnings("ignore", message=".*ray_remote_args. is deprecated")
                    ds = ds.map_batches(predictor, fn_constructor_args=(list(model_paths), spec.threads_per_actor,
                                                                        threshold, top_k),
                                        batch_size=spec.batch_size,
                                        compute=ray.data.ActorPoolStrategy(size=result.actors),
                                        num_cpus=spec.threads_per_actor, batch_format="numpy",
                                        max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)
                try:
                    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                        for line in batch["record"]:
                            rec = json.loads(line)
                            writer.add(rec)
                            result.done += 1
                            result.failed += "error" in rec
                            count_labels(result.counts, model_records(rec))
                        if progress is not None:
                            progress(result.done, result.failed, len(items))
                finally:  # every record received is written, however the job ends
                    writer.flush()
        finally:
            if own:
                ray.shutdown()
    except BaseException:
        if target != out:  # --force that did not finish: the old shards stay as they were
            shutil.rmtree(target, ignore_errors=True)
        raise
    if target != out:  # --force: the old shards go only now that the new ones exist
        old = out.with_name(f".{out.name}.edgeclf-replaced-{os.getpid()}")
        os.replace(out, old)
        os.replace(target, out)
        shutil.rmtree(old, ignore_errors=True)
    result.wall_s = time.monotonic() - started
    return result
