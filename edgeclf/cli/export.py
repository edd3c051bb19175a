"""``edgeclf export`` and ``edgeclf adopt``, with the export table and its advice."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgeclf.edge_runtime.paths import display_width, pad as pad_text

from .core import ClickReporter, _foreign_model_options, _foreign_spec, _run, main


def _min_agreement(_ctx, _param, value):
    if not value:
        return {}
    from edgeclf.toolkit.export import DEFAULT_MIN_AGREEMENT

    try:
        if "=" not in value:
            return {mode: float(value) for mode in DEFAULT_MIN_AGREEMENT}
        return {k.strip(): float(v) for k, v in (item.split("=", 1) for item in value.split(","))}
    except ValueError:
        raise click.BadParameter(f"Received: '{value}'. Expected a fraction such as 0.97, or per mode such as "
                                 "int8=0.97,fp16=0.999.") from None


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "formats", default="tflite,onnx", show_default=True, help="Comma-separated: tflite, onnx.")
@click.option("--quantize", default="fp32,int8", show_default=True,
              help="Comma-separated: fp32, fp16, dynamic (TFLite), int8.")
@click.option("--calib", type=click.Path(exists=True), help="Calibration images [default: the run's val split].")
@click.option("--dataset", type=click.Path(exists=True),
              help="Where the training run's dataset is now, if it moved since training: its val and test splits "
                   "are found there from splits.csv.")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="ONNX int8 calibration method.")
@click.option("--reduce-range", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="ONNX int8: 7-bit weights, needed on x86 CPUs without VNNI (8-bit would saturate there). auto: "
                   "on when this machine lacks VNNI; say on when the target CPU does (e.g. AVX2-only), off for ARM "
                   "or VNNI targets.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Output folder [default: RUN_DIR/export].")
@click.option("--name", help="Artefact name prefix [default: the run directory's name].")
@click.option("--min-agreement", callback=_min_agreement,
              help="Gate: minimum top-1 agreement with Keras, e.g. 0.97 or int8=0.97 [default: 0.999 fp32/fp16, 0.98 "
                   "dynamic/int8].")
@click.option("--calib-images", type=click.IntRange(min=1), default=300, show_default=True,
              help="Most calibration images used (int8).")
@click.option("--verify-images", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Most held-out images the gate runs; more narrow its 95% interval.")
@click.option("--no-verify", is_flag=True, help="Skip the fidelity gate (recorded in the metadata).")
@click.option("--force", is_flag=True, help="Overwrite existing artefacts.")
@_foreign_model_options
@click.pass_context
def export(ctx, model, formats, quantize, calib, dataset, calib_method, reduce_range, out_dir, name, min_agreement,
           calib_images, verify_images, no_verify, force, labels, input_norm, mean, std, output_kind, img_size, resize,
           crop, pad):
    """Export MODEL (a model.keras from `edgeclf train`) to TFLite and ONNX artefacts.

    Each artefact is run through the edge runtime on held-out images and compared with the Keras model; one
    that agrees less than the gate requires is left as NAME_MODE.FORMAT.rejected and the command exits 1.

    A .keras classifier trained elsewhere (no metadata.json beside it) needs --labels and --input-norm, and --calib
    with images: part of them calibrate int8, the others run the gate. It is wrapped in built-in layers to take
    RGB 0-255 pixels and output probabilities, as edgeclf's own models do.

    \b
    Example:
      edgeclf export runs/helmet/model.keras
      edgeclf export runs/helmet/model.keras --format tflite --quantize fp16,int8 --calib data/helmets/val
      edgeclf export runs/helmet/model.keras --dataset /mnt/data/helmets   # the dataset moved since training
      edgeclf export notebook.keras --labels cat,dog --input-norm unit --calib data/pets/val
    """

    def go():
        from edgeclf.toolkit.export import ExportSpec, QuantSpec, export_model

        foreign = _foreign_spec(labels, input_norm, output_kind, img_size, resize, mean, std, crop, pad)
        modes = [m.strip() for m in quantize.split(",") if m.strip()]
        reduce = {"auto": None, "on": True, "off": False}[reduce_range]
        quant = tuple(QuantSpec.int8(calib_method, reduce_range=reduce) if m == "int8" else QuantSpec(m) for m in modes)
        spec = ExportSpec(formats=tuple(f.strip() for f in formats.split(",") if f.strip()), quant=quant,
                          min_agreement=min_agreement, verify=not no_verify, calibration_images=calib_images,
                          verify_images=verify_images)
        results = export_model(model, out_dir, spec=spec, calib=calib, name=name, dataset=dataset, foreign=foreign,
                               force=force, reporter=ClickReporter(ctx.obj["verbose"]))
        _print_export_summary(results, spec)
        if any(not r.passed for r in results):
            sys.exit(1)

    _run(ctx, go, interrupted="Interrupted. Artefacts finished before it are kept; run again with --force to "
                              "export them all anew.")


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The adopted copy [default: NAME_edgeclf.tflite / .onnx beside MODEL].")
@click.option("--check", type=click.Path(exists=True),
              help="Labelled images (any form `train` accepts) to measure its accuracy and check --labels' order on.")
@click.option("--force", is_flag=True, help="Overwrite an existing copy.")
@_foreign_model_options
@click.pass_context
def adopt(ctx, model, out_path, check, force, labels, input_norm, mean, std, output_kind, img_size, resize, crop, pad):
    """Give a .tflite or .onnx classifier made elsewhere (Teachable Machine, Model Maker, PyTorch via ONNX) the
    metadata edgeclf's runtime reads, so predict, camera, bench and info take it.

    Writes a copy; the original is kept. --labels and --input-norm say what the file cannot: its class names in
    output order and how its training scaled pixels; a .tflite with TFLite Support metadata (Model Maker's) gives
    both itself. Channels-first (NCHW) input, grayscale input (fed Pillow's luminance) and logits outputs are read
    from the model; one output unit is a sigmoid scoring the second of two --labels (negative class first). With no
    source model to compare with it is not gated (its metadata says so); --check measures its accuracy on labelled
    images and names a --labels order that fits them better.

    \b
    Example:
      edgeclf adopt model_unquant.tflite --labels labels.txt --input-norm tf --check data/helmets/val
      edgeclf adopt resnet18.onnx --labels cat,dog --input-norm torch --out pets.onnx
      edgeclf adopt model_maker.tflite          # labels and normalisation from its own metadata
      edgeclf adopt clip_detector.onnx --labels real,ai --mean 0.481,0.458,0.408 --std 0.269,0.261,0.276
      edgeclf adopt hardhat_sigmoid.tflite --labels no_helmet,helmet --input-norm unit
      edgeclf predict model_unquant_edgeclf.tflite photos/
    """

    def go():
        from edgeclf.edge_runtime.describe import describe
        from edgeclf.toolkit.export.adopt import adopt as adopt_model

        # None: the file's own TFLite Support metadata (Model Maker's) must give both
        spec = _foreign_spec(labels, input_norm, output_kind, img_size, resize, mean, std, crop, pad)
        result = adopt_model(model, out_path, spec=spec, check=check, force=force,
                             reporter=ClickReporter(ctx.obj["verbose"]))
        click.secho(str(result.path), bold=True)
        for field, text in describe(result.metadata, result.path, result.path.stat().st_size):
            click.echo(f"  {field:<13} {text}")

    _run(ctx, go)


def _print_export_summary(results, spec) -> None:
    click.echo()
    fp32 = {r.format: r.size_bytes for r in results if r.mode == "fp32"}
    if results and len(fp32) < len({r.format for r in results}):
        fp32 = {**_earlier_fp32_sizes(results[0].path.parent), **fp32}
    width = max([34, *(display_width(r.path.name) for r in results)])
    click.echo(f"{pad_text('artefact', width)} {'size':>9} {'vs fp32':>8} {'agree':>8} {'max|dp|':>8} "
               f"{'acc Δpp':>8}  gate")
    for r in results:
        f = r.fidelity
        rel = f"{100 * r.size_bytes / fp32[r.format]:.0f}%" if r.format in fp32 else ""
        agree = f"{100 * f['agreement']:.2f}%" if f.get("verified") else "n/a"
        maxd = f"{f['max_abs_diff']:.4f}" if f.get("verified") else ""
        dacc = f"{f['accuracy_change_pp']:+.2f}" if "accuracy_change_pp" in f else ""
        gate = click.style("pass", fg="green") if r.passed and f.get("verified") else (
            click.style("unverified", fg="yellow") if r.passed else click.style("REJECTED", fg="red"))
        click.echo(f"{pad_text(r.path.name, width)} {r.size_bytes / 1024:>8.0f}K {rel:>8} {agree:>8} {maxd:>8} "
                   f"{dacc:>8}  {gate}")
        if r.reason:
            click.secho(f"  {r.reason}", fg="red")
        lo, hi = f.get("agreement_ci95", (None, None))
        # Only where some images disagreed: with none, the interval's lower end is all the sample size can say.
        if lo is not None and f["agreement"] < 1.0 and lo < spec.threshold(r.mode) <= hi:
            click.secho(f"  the {r.mode} gate of {spec.threshold(r.mode):.4f} lies inside the agreement's 95% interval "
                        f"({lo:.4f}-{hi:.4f}, {f['n']} images): {'passing' if r.passed else 'failing'} it is within "
                        "sampling error; "
                        + ("--verify-images above that gives a firmer answer" if f["n"] >= spec.verify_images else
                           "a larger held-out split (all of it was used) gives a firmer answer"), fg="yellow")
    for line in _rejection_advice(results, spec):
        click.secho(line, fg="yellow")
    if results:
        click.echo(f"Report: {results[0].path.parent / 'export_report.json'}")


def _earlier_fp32_sizes(folder: Path) -> dict[str, int]:
    """Sizes of the fp32 artefacts an earlier export of the same model left in ``folder`` (its export_report.json
    keeps their entries), so an export of other modes alone still shows each file's size against fp32."""
    import json

    try:
        report = json.loads((folder / "export_report.json").read_text(encoding="utf-8"))
        return {a["format"]: a["size_bytes"] for a in report["artifacts"]
                if a.get("mode") == "fp32" and a.get("passed") and (folder / Path(a["path"]).name).is_file()
                and a.get("source_model_sha256") == report.get("source_model_sha256")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _rejection_advice(results, spec) -> list[str]:
    """What a user whose int8 artefact failed its gate can try instead, from what this export measured."""
    method = next((q.calibration_method for q in spec.quant if q.mode == "int8"), None)
    lines = []
    for r in results:
        if r.passed or not r.fidelity.get("verified") or r.mode != "int8":
            continue
        others = [o.path.name for o in results if o.passed and o.fidelity.get("verified") and o.mode == r.mode
                  and o.format != r.format]
        tried = {o.mode for o in results if o.format == r.format}
        hints = [f"{', '.join(others)} passed the same gate"] if others else []
        if r.format == "tflite" and "dynamic" not in tried:
            hints.append("--quantize dynamic (int8 weights, float activations) keeps most of the size gain and "
                         "usually agrees closely")
        if r.format == "onnx" and method == "minmax":
            hints.append("--calib-method percentile or entropy clips the outliers that minmax ranges keep")
        if hints:
            lines.append(f"  instead of {r.path.name}: " + "; ".join(hints))
    return lines
