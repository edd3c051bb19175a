"""``edgeclf bench``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgeclf.edge_runtime.errors import ConfigError

from .core import ClickReporter, _csv_ints, _run, main


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--data", type=click.Path(exists=True),
              help="Labelled images, any form `train` accepts (its test split if pre-split) [default: the test split "
                   "of the run a given model.keras, or else the artefacts, came from].")
@click.option("--dataset", type=click.Path(exists=True),
              help="Where the run's dataset is now, if it moved since training: its test split is found there from "
                   "splits.csv.")
@click.option("--threads", callback=_csv_ints, help="Comma-separated thread counts, e.g. 1,2,4 [default: all cores].")
@click.option("--batch", "batches", callback=_csv_ints, default="1", show_default=True,
              help="Comma-separated batch sizes, e.g. 1,8.")
@click.option("--runs", type=int, help="Minimum timed runs per row [default: 100; 20 with --quick].")
@click.option("--min-time", type=float, help="Keep timing each row at least this many seconds [default: 2; 0.2 quick].")
@click.option("--warmup", type=int, help="Untimed runs before timing [default: 10; 3 with --quick].")
@click.option("--max-images", type=int, help="Evaluate at most this many images [default: all; 200 with --quick].")
@click.option("--quick", is_flag=True, help="A short smoke run.")
@click.option("--timeout", type=float, default=900, show_default=True, help="Seconds before a row is stopped as failed.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Report folder [default: bench/ inside the first model's folder].")
@click.option("--force", is_flag=True, help="Overwrite an existing report.")
@click.pass_context
def bench(ctx, models, data, dataset, threads, batches, runs, min_time, warmup, max_images, quick, timeout, out_dir,
          force):
    """Benchmark a Keras model and its artefacts side by side: accuracy, agreement, latency, cold start, memory.

    MODELS are .keras/.tflite/.onnx files or run/export folders (everything in them). Every model x thread count x
    batch size is measured in its own fresh process; a failing row is reported and the rest carry on (exit 1).

    \b
    Example:
      edgeclf bench runs/helmet                               # model.keras + export/*, on the run's test split
      edgeclf bench runs/helmet/export/*.tflite runs/helmet/model.keras --data data/holdout --threads 1,2,4
      edgeclf bench runs/helmet --dataset /mnt/data/helmets   # the dataset moved since training
    """

    def go():
        from edgeclf.benchmarks.bench import BenchSpec, check_evaluation_images, run_bench
        from edgeclf.benchmarks.bench_report import format_table, summarise, summary_lines, write_report
        from edgeclf.toolkit.io import ensure_writable_dir

        options = {"threads": threads or None, "batches": batches or None, "runs": runs, "min_seconds": min_time,
                   "warmup": warmup, "max_images": max_images, "timeout_s": timeout}
        options = {k: v for k, v in options.items() if v is not None}
        if "runs" in options:
            options["max_runs"] = max(options["runs"], BenchSpec.max_runs)
        spec = BenchSpec.quick(**options) if quick else BenchSpec(**options)
        check_evaluation_images(data, dataset)  # before the report folder is made
        first = Path(models[0])
        out = Path(out_dir) if out_dir else (first if first.is_dir() else first.parent) / "bench"
        if not force and (out / "results.json").exists():  # fail before the work, not after
            raise ConfigError(f"{out / 'results.json'} already exists. Pass --force to overwrite it, or --out another "
                              "folder.")
        ensure_writable_dir(out)
        result = run_bench(models, data, spec, ClickReporter(ctx.obj["verbose"]), dataset=dataset)
        write_report(result, out, force=force)
        click.echo()
        click.echo(format_table(result.rows))
        summary = summary_lines(summarise(result.rows))
        if summary:
            click.echo("\n" + "\n".join(summary))
        click.echo(f"\nReport: {out / 'report.md'}")
        if any(r.status != "ok" for r in result.rows):
            sys.exit(1)

    _run(ctx, go)
