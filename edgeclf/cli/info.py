"""``edgeclf info``: what artefacts and trained models say about themselves."""

from __future__ import annotations

from pathlib import Path

import click

from edgeclf.edge_runtime.errors import ConfigError, EdgeclfError

from .core import _one_line, _run, main


def _support_json(path: Path) -> dict | None:
    """A .tflite file's TFLite Support metadata as a JSON object (None without it); an unreadable one says why."""
    from dataclasses import asdict

    from edgeclf.edge_runtime.support_metadata import read_support_metadata

    if not path.name.lower().endswith((".tflite", ".tflite.rejected")):
        return None
    try:
        support = read_support_metadata(path.read_bytes())
    except (OSError, EdgeclfError, ValueError, IndexError) as exc:
        return {"error": str(exc)}
    return asdict(support) if support is not None else None


def _describe_keras(path: Path) -> tuple[dict, list[tuple[str, str]]]:
    """A trained model.keras's run metadata and its description, read without loading the model."""
    import json

    from edgeclf.edge_runtime.artifact import check_keras_file, read_run_metadata, sha256_file
    from edgeclf.edge_runtime.describe import describe_run_model

    check_keras_file(path)
    if not path.with_name("metadata.json").is_file():
        raise ConfigError(f"{path} has no metadata.json beside it: it is not a model from `edgeclf train`, so there "
                          "is nothing to describe. Export it with --labels and --input-norm to get artefacts that "
                          "describe themselves.")
    meta = read_run_metadata(path)
    try:
        metrics = json.loads(path.with_name("metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metrics = None  # a run without evaluation, or the file did not travel with the model
    lines = describe_run_model(meta, path, path.stat().st_size, metrics if isinstance(metrics, dict) else None,
                               sha256_file(path))
    return meta, lines


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON line per file: its path, its full edgeclf metadata and "
              "(TFLite) its TFLite Support metadata.")
@click.pass_context
def info(ctx, models, as_json):
    """Show what exported artefacts say about themselves: classes, input contract, quantisation, source model and
    the export's fidelity gate, from the metadata inside each file (no sidecar needed), plus any warning that applies
    on this machine. Reads files export left as *.rejected too. A trained model.keras is described from its run's
    metadata.json and metrics.json. A folder stands for the models in it (and in its export/ folder: a run
    directory).

    \b
    Example:
      edgeclf info runs/helmet/export/helmet_int8.tflite
      edgeclf info runs/helmet
      edgeclf info runs/helmet/export/*.onnx --json > onnx_metadata.jsonl
    """

    def go():
        import json

        from edgeclf.edge_runtime.artifact import REJECTED, files_in_run, read_metadata
        from edgeclf.edge_runtime.describe import describe
        from edgeclf.edge_runtime.paths import display_path, printable

        codes = []
        files = []
        for path in models:
            if not path.is_dir():
                files.append(path)
                continue
            endings = (".keras", *(ext + tail for ext in (".tflite", ".onnx") for tail in ("", REJECTED)))
            inside = files_in_run(path, endings)
            if not inside:
                codes.append(2)
                click.secho(f"Error: No .keras, .tflite or .onnx models in {display_path(path)} (or its export/ "
                            "folder).", fg="red", err=True)
            files += inside
        for path in files:
            try:
                if path.suffix.lower() == ".keras":
                    meta, lines = _describe_keras(path)
                else:
                    meta = read_metadata(path, rejected=True)
                    lines = describe(meta, path, path.stat().st_size)
            except EdgeclfError as exc:  # one bad file is reported, the others are still shown
                codes.append(exc.exit_code)
                click.secho(f"Error: {_one_line(exc)}", fg="red", err=True)
                continue
            if as_json:
                record = {"path": display_path(path), "metadata": meta}
                if path.suffix.lower() != ".keras":
                    record["support_metadata"] = _support_json(path)
                click.echo(json.dumps(record, sort_keys=True))
                continue
            click.secho(printable(display_path(path)), bold=True)
            for field, text in lines:  # metadata is untrusted: escaped, never sent to the terminal raw
                text = printable(text)
                click.echo(f"  {field:<13} " + (click.style(text, fg="yellow") if field == "warning" else text))
        return max(codes, default=0)

    ctx.exit(_run(ctx, go))
