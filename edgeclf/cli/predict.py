"""``edgeclf predict``: records as a table, JSON lines or CSV."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from edgeclf.edge_runtime.errors import ConfigError

from .core import _interrupted_code, _run, _warn_deployment, _write_all, main, state


@main.command()
@click.argument("paths", nargs=-1)
@click.option("--model", "models", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="An exported .tflite/.onnx model; repeat to run several over the same images.")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "csv", "parquet"]), default=None,
              help="Output format [default: table on a terminal, jsonl when piped; with --engine ray, parquet "
                   "(or jsonl) shards in --out].")
@click.option("--top-k", type=int, default=1, show_default=True, help="Classes listed per image (table/jsonl).")
@click.option("--threshold", type=click.FloatRange(0, 1),
              help="Two-class models: the second class (as the model lists them) wins when its probability reaches "
                   "this; the run's report.md suggests one chosen on the validation split.")
@click.option("--batch-size", type=int, default=None,
              help="Images per inference call [default: 1; 32 per actor call with --engine ray]. Larger batches "
                   "take less CPU per image (fewer calls), which also leaves more for decoding, but raise peak "
                   "memory and hold each result until its batch is full.")
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads [default: all cores].")
@click.option("--workers", type=click.IntRange(min=1), help="Decoding threads [default: all cores].")
@click.option("--manifest", "manifests", multiple=True, type=click.Path(dir_okay=False),
              help="A CSV (its 'path' column) or text file (one per line) of image paths or URIs to classify, "
                   "relative to its folder; repeatable.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process. ray: Ray Data actors, on this machine or a cluster (pip install "
                   "'edgeclf[ray]'); writes shards into --out.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="--engine ray: the folder for the record shards (part-*.parquet or part-*.jsonl).")
@click.option("--address", help="--engine ray: a running cluster ('auto', or ray://HOST:10001) [default: a local "
                                "Ray started for this job].")
@click.option("--actors", type=click.IntRange(min=1),
              help="--engine ray: model replicas [default: as many as the cluster's CPUs allow].")
@click.option("--threads-per-actor", type=click.IntRange(min=1), default=1, show_default=True,
              help="--engine ray: inference and decoding threads per actor (the CPUs Ray reserves for each).")
@click.option("--resume", is_flag=True, help="--engine ray: classify only the images --out does not hold yet.")
@click.option("--force", is_flag=True, help="--engine ray: replace the shards in --out (once the new ones exist).")
@click.pass_context
def predict(ctx, paths, models, fmt, top_k, threshold, batch_size, threads, workers, manifests, engine, out_dir,
            address, actors, threads_per_actor, resume, force):
    """Classify images with exported models; never imports TensorFlow.

    PATHS are files, folders (searched recursively), globs, or - to read paths from stdin. Without --model, the
    first PATH is the model. Exit code 1 if any image failed, 2 for usage errors.

    \b
    Example:
      edgeclf predict helmet_int8.tflite photos/
      find /uploads -name '*.jpg' | edgeclf predict --model adult.tflite --model violence.tflite - --format jsonl
      edgeclf predict helmet_int8.tflite --manifest stills.csv --engine ray --out predictions/ --resume
    """
    if engine == "ray":
        ctx.exit(_run(ctx, lambda: _predict_ray(models, paths, manifests, fmt, top_k, threshold, batch_size,
                                                 out_dir, address, actors, threads_per_actor, resume, force),
                      interrupted="Interrupted; every shard written is complete: run again with --resume to go on."))
    ray_only = {"--out": out_dir, "--address": address, "--actors": actors, "--resume": resume, "--force": force,
                "--threads-per-actor": threads_per_actor if threads_per_actor != 1 else None}
    given = [k for k, v in ray_only.items() if v]
    if given or fmt == "parquet":
        what = ", ".join(given + (["--format parquet"] if fmt == "parquet" else []))
        raise click.UsageError(f"Received {what} without --engine ray. Locally, records go to stdout: add "
                               "--engine ray to write shards into --out.")
    batch_size = 1 if batch_size is None else batch_size
    paths = tuple(paths) + tuple(p for m in manifests for p in _manifest(m))

    def go():
        from edgeclf.edge_runtime.classifier import Classifier, check_threshold, distinct_names, stream_many
        from edgeclf.edge_runtime.errors import ImageDecodeError
        from edgeclf.edge_runtime.paths import display_path, printable
        from edgeclf.edge_runtime.sources import expand_paths

        model_paths, image_args = _models_and_images(models, paths, top_k)
        if not image_args:
            raise ConfigError("Received no images. Pass files, folders, globs, or - to read paths from stdin.")
        classifiers = [Classifier.load(p, threads) for p in model_paths]
        _warn_deployment(classifiers)
        distinct_names(classifiers)
        check_threshold(threshold, [(c.path.name, c.class_names) for c in classifiers])
        out_fmt = fmt or ("table" if sys.stdout.isatty() else "jsonl")
        writer = _PredictionWriter(out_fmt, classifiers, top_k, threshold,
                                   live=sys.stdout.isatty() or "-" in image_args)
        stream = stream_many(classifiers, expand_paths(image_args, sys.stdin, idle=True), batch_size, workers)
        done = failed = 0
        # A running count on the terminal while records go to a pipe or file; never mixed into a table.
        show_progress = sys.stderr.isatty() and not sys.stdout.isatty()
        try:
            try:
                for item, results in stream:
                    done += 1
                    if isinstance(results[0], ImageDecodeError):
                        failed += 1
                    writer.write(display_path(item), results)  # expand_paths yields file names as str
                    if show_progress and done % 50 == 0:
                        click.echo(f"\rClassified {done} images, {failed} failed", err=True, nl=False)
            finally:  # every record made goes out, however the run ends; a reader gone by then is exit 141
                writer.flush()
        except KeyboardInterrupt as exc:
            stream.close()  # waits for the decodes in flight; nothing half-written follows
            lead = "\n" if show_progress else ""  # end the running count's line first
            click.secho(f"{lead}Interrupted after {done} image(s), {failed} failed; every record written is complete.",
                        fg="yellow", err=True)
            sys.exit(_interrupted_code(exc))
        if show_progress:
            click.echo("", err=True)
        summary = _summary(done, failed, [c.name for c in classifiers], writer.counts)
        click.secho(printable(summary), fg="red" if failed else "green", err=True)
        state.finished = True  # every record and the summary are out; see ``run``
        if failed:
            sys.exit(1)

    _run(ctx, go)


def _models_and_images(models, paths, top_k: int) -> tuple[list[str], list[str]]:
    """The model files and the image arguments: without --model, the first PATH is the model.

    Raises:
        ConfigError: For no model, a model file among the images, or --top-k below 1.
    """
    model_paths, image_args = list(models), list(paths)
    if not model_paths:
        if not image_args:
            raise ConfigError("Received no model. Pass MODEL PATH... or --model MODEL PATH...")
        model_paths, image_args = [image_args[0]], image_args[1:]
    stray = next((a for a in image_args if Path(a).suffix.lower() in (".tflite", ".onnx", ".keras")), None)
    if stray is not None:  # a second model given the single-model way would only fail as "not an image"
        raise ConfigError(f"Received the model file '{stray}' among the images. To run several models on each "
                          "image, give every one with --model: --model A.tflite --model B.onnx PATH...")
    if top_k < 1:
        raise ConfigError(f"Received: top_k={top_k}. Expected at least 1.")
    return model_paths, image_args


def _summary(done: int, failed: int, names: list[str], counts: list[dict]) -> str:
    """``801 image(s), 1 failed; ankle_boot 373, sneaker 427``, each model's tally named when there are several."""
    summary = f"{done} image(s), {failed} failed"
    if done > failed:
        tallies = [", ".join(f"{label} {n}" for label, n in c.items() if n) for c in counts]
        summary += "; " + "; ".join(f"{n}: {t}" if len(names) > 1 else t for n, t in zip(names, tallies))
    return summary


def _manifest(path: str) -> list[str]:
    from edgeclf.edge_runtime.ray_engine import read_manifest

    return read_manifest(path)


def _predict_ray(models, paths, manifests, fmt, top_k, threshold, batch_size, out_dir, address, actors,
                 threads_per_actor, resume, force) -> int:
    from edgeclf.edge_runtime.paths import display_path, printable
    from edgeclf.edge_runtime.ray_engine import RaySpec, read_manifest, run
    from edgeclf.edge_runtime.sources import expand_paths

    model_paths, image_args = _models_and_images(models, paths, top_k)
    if out_dir is None:
        raise ConfigError("Received --engine ray without --out. Expected a folder for the record shards, e.g. "
                          "--out predictions/.")
    if fmt not in (None, "parquet", "jsonl"):
        raise ConfigError(f"Received: --format {fmt} with --engine ray. Supported: parquet, jsonl.")
    images = [p for m in manifests for p in read_manifest(m)]
    images += [str(p) for p in expand_paths(image_args, sys.stdin)]
    if not images:
        raise ConfigError("Received no images. Pass files, folders, globs, - (paths on stdin) or --manifest.")
    spec = RaySpec(address=address, actors=actors, threads_per_actor=threads_per_actor,
                   batch_size=batch_size or 32, fmt=fmt or "parquet")
    show = sys.stderr.isatty()

    def progress(done, failed, total):
        if show:
            click.echo(f"\rClassified {done}/{total} images, {failed} failed", err=True, nl=False)

    click.secho(f"» Ray: {len(images)} image(s) into {display_path(out_dir)}", err=True)
    result = run(model_paths, images, out_dir, spec, threshold=threshold, top_k=top_k, resume=resume, force=force,
                 progress=progress)
    if show:
        click.echo("", err=True)
    summary = _summary(result.done, result.failed, result.names, result.counts)
    if result.skipped:
        summary += f"; {result.skipped} already in {display_path(out_dir)} (--resume)"
    summary += (f" ({result.actors} actor(s) x {spec.threads_per_actor} thread(s), Ray start-up "
                f"{result.startup_s:.1f} s, {result.wall_s:.1f} s in all)")
    click.secho(printable(summary), fg="red" if result.failed else "green", err=True)
    return 1 if result.failed else 0


class _PredictionWriter:
    """Writes one record per image as a table row, a JSON line or a CSV row.

    ``live``: every record goes out as it is made (a terminal, or paths read from stdin, where whoever feeds them
    may wait for each record). Otherwise JSON lines and CSV rows are gathered and written at least every
    ``FLUSH_EVERY_S`` seconds, or every 64 KiB, in one call: not a system call and a wake-up of the reader per
    record (1.5 % of ``predict``'s wall time over a folder of 1080p JPEGs), whatever ``PYTHONUNBUFFERED`` says.
    ``flush`` writes what is gathered; the command calls it however the run ends.
    """

    FLUSH_EVERY_S = 1.0

    def __init__(self, fmt, classifiers, top_k, threshold, live=True):
        self.fmt, self.classifiers, self.top_k, self.threshold = fmt, classifiers, top_k, threshold
        self.live, self.pending, self.pending_chars, self.flushed = live, [], 0, time.monotonic()
        self.multi = len(classifiers) > 1
        self.counts = [dict.fromkeys(c.class_names, 0) for c in classifiers]  # decided labels, per model
        if fmt == "csv":
            import csv as _csv
            from types import SimpleNamespace

            self.csv = _csv.writer(SimpleNamespace(write=self.write_text))
            header = ["path"]
            for c in classifiers:
                prefix = f"{c.name}." if self.multi else ""
                header += [f"{prefix}label", f"{prefix}score"] + [f"{prefix}p_{n}" for n in c.class_names]
            self.csv.writerow(header + ["error"])
            if live:
                self.flush()

    def write_text(self, text: str) -> None:
        self.pending.append(text)
        self.pending_chars += len(text)

    def flush(self) -> None:
        if self.pending:  # table rows went out with click.echo, which flushes each
            text, self.pending, self.pending_chars = "".join(self.pending), [], 0
            _write_all(text)
        self.flushed = time.monotonic()

    def write(self, path, results):
        import json as _json

        from edgeclf.edge_runtime.records import count_labels, image_record, model_records

        rec = image_record(path, self.classifiers, results, self.threshold, self.top_k)
        error = rec.get("error")
        records = model_records(rec)
        count_labels(self.counts, records)
        if self.fmt == "jsonl":
            self.write_text(_json.dumps(rec) + "\n")
        elif self.fmt == "csv":
            row = [path]
            for c, r in zip(self.classifiers, records or [None] * len(self.classifiers)):
                row += ([r["label"], r["score"]] + [r["scores"][n] for n in c.class_names]) if r else \
                       [""] * (2 + len(c.class_names))
            self.csv.writerow(row + [error or ""])
        else:  # for people: click.echo drops the colours where stdout is not a terminal, and flushes every row
            # Class names come from the model file and paths from anywhere: escaped, never sent to the terminal raw.
            from edgeclf.edge_runtime.paths import printable

            if error:
                click.echo(f"{printable(path)}  " + click.style(f"ERROR {printable(error)}", fg="red"))
                return
            cells = []
            for c, r in zip(self.classifiers, records):
                label = ", ".join(f"{t['label']} {t['score']:.3f}" for t in r.get("top_k", [r]))
                cells.append(f"{c.name}: {label}" if self.multi else label)
            click.echo(printable(f"{path}  " + "  |  ".join(cells)))
            return
        if self.live or self.pending_chars >= 65536 or time.monotonic() - self.flushed >= self.FLUSH_EVERY_S:
            self.flush()
