"""The ``edgeclf`` command line. It parses options, builds specs and calls the library; nothing else.

Commands that need TensorFlow import it when they run, so ``edgeclf --help`` works with only the runtime
installed.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import click

from . import __version__
from edgeclf.edge_runtime.errors import ConfigError, EdgeclfError
from edgeclf.edge_runtime.paths import display_width, pad as pad_text

logger = logging.getLogger("edgeclf")


class ClickReporter:
    """Draws progress bars and stage lines on stderr (bars only on a terminal)."""

    def __init__(self, verbose: bool):
        self.verbose = verbose
        self.tty = sys.stderr.isatty()
        self.keras_verbose = 1 if sys.stdout.isatty() else 2

    def stage(self, message: str) -> None:
        click.secho(f"» {message}", fg="cyan", err=True)

    def warn(self, message: str) -> None:
        click.secho(f"! {message}", fg="yellow", err=True)

    @contextmanager
    def progress(self, total: int, label: str):
        if not self.tty:
            click.echo(f"» {label} ({total})", err=True)
            yield lambda n=1: None
            return
        with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True, show_eta=True) as bar:
            yield bar.update


class Terminated(KeyboardInterrupt):
    """SIGTERM (``docker stop``, a scheduler's pre-emption, ``timeout``), raised where Ctrl-C would be."""


def _raise_terminated(signum, frame):
    raise Terminated()


def _interrupted_code(exc: KeyboardInterrupt) -> int:
    """The exit code of a command stopped by Ctrl-C (130) or SIGTERM (143), as the shell reports a signal."""
    return 143 if isinstance(exc, Terminated) else 130


@contextmanager
def _sigterm_interrupts():
    """SIGTERM ends a command as Ctrl-C does - partial files removed, the command's own message, what is kept -
    instead of killing the process where it stands. Only the main thread can take signals."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(ctx: click.Context, fn, *args, interrupted: str = "Interrupted.", **kwargs):
    """Calls library code, turning edgeclf errors into one line and an exit code (traceback with --verbose).

    ``interrupted`` is what Ctrl-C (exit code 130) or SIGTERM (143) prints: what is kept and how to go on differs
    by command.
    """
    verbose = ctx.find_root().obj.get("verbose", False) if ctx.find_root().obj else False
    try:
        with _sigterm_interrupts():
            return fn(*args, **kwargs)
    except EdgeclfError as exc:
        if verbose:
            logger.exception("edgeclf error")
        click.secho(f"Error: {_one_line(exc)}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        click.secho(interrupted, fg="yellow", err=True)
        sys.exit(_interrupted_code(exc))
    except BrokenPipeError:
        # The reader went away (`edgeclf predict ... | head`): stop quietly, as tools killed by SIGPIPE do.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        except (OSError, ValueError):  # stdout is not a real file (captured)
            pass
        sys.exit(141)
    except Exception as exc:  # last resort: one line unless --verbose
        if verbose:  # the traceback through the masking log formatter, not Python's raw one
            logger.exception("unexpected error")
            sys.exit(1)
        click.secho(f"Error: unexpected {type(exc).__name__}: {_one_line(exc)} "
                    "(run with --verbose for the traceback)", fg="red", err=True)
        sys.exit(1)


def _one_line(exc: BaseException) -> str:
    """An error's message on one line (libraries' messages, Keras' or onnxruntime's, can run over several), with
    URL credentials masked and control characters escaped: messages quote sources, file names and metadata."""
    from edgeclf.edge_runtime.paths import safe_text

    return safe_text(" ".join(str(exc).split()))


def _csv_ints(_ctx, _param, value):
    if value is None or value == "":
        return () if value == "" else None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"Received: '{value}'. Expected comma-separated integers such as 256,128.") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgeclf")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs and full tracebacks.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """edgeclf: train Keras image classifiers and ship them to CPUs and edge devices.

    \b
    Example (train, export int8 TFLite + ONNX gated on agreement, classify, benchmark):
      edgeclf train data/helmets --backbone mobilenet_v2 --out runs/helmet
      edgeclf export runs/helmet/model.keras
      edgeclf predict runs/helmet/export/helmet_int8.tflite photos/
      edgeclf bench runs/helmet
    """
    ctx.obj = {"verbose": verbose}
    handler = logging.StreamHandler()
    handler.setFormatter(_SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])


class _SafeFormatter(logging.Formatter):
    """Log lines, tracebacks included, with URL credentials masked and control characters escaped: messages and
    exceptions quote stream URLs, file names and model metadata, none of which may reach the terminal raw."""

    def format(self, record: logging.LogRecord) -> str:
        from edgeclf.edge_runtime.paths import safe_text

        return "\n".join(safe_text(line) for line in super().format(record).split("\n"))


def _split(_ctx, _param, value):
    if value is None:
        return None
    try:
        parts = [float(v) for v in value.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3:
        raise click.BadParameter(f"Received: '{value}'. Expected three fractions train,val,test such as 0.7,0.15,0.15.")
    return parts


def _img_size(_ctx, _param, value):
    """--img-size N (an N x N input) or HxW, height first: an int, or a (height, width) tuple (the specs'
    ``check_img_size`` keeps a square pair as one number)."""
    if value is None:
        return None
    try:
        numbers = [int(v) for v in value.lower().split("x")]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or min(numbers, default=0) < 1:
        raise click.BadParameter(f"Received: '{value}'. Expected N for an N x N input, or HxW in pixels, height "
                                 "first, such as 160x288.")
    return numbers[0] if len(numbers) == 1 else tuple(numbers)


def _crop(_ctx, _param, value):
    """--crop FRACTION or none: a PreprocessSpec.crop value."""
    if value is None or value.lower() == "none":
        return None
    try:
        crop = float(value)
    except ValueError:
        crop = None
    if crop is None or not 0 < crop <= 1:
        raise click.BadParameter(f"Received: '{value}'. Expected a fraction in (0, 1] such as 1 or 0.875, or none.")
    return crop


def _pad(_ctx, _param, value):
    """--pad COLOUR or none: a PreprocessSpec.pad value (one grey level, or R,G,B)."""
    if value is None or value.lower() == "none":
        return None
    from edgeclf.edge_runtime.preprocess import check_pad

    try:
        return check_pad(tuple(int(v) for v in value.split(",")))
    except (ValueError, ConfigError):  # not integers, or not one or three of 0-255
        raise click.BadParameter(f"Received: '{value}'. Expected a grey level 0-255 such as 0 or 114, three R,G,B "
                                 "values such as 124,116,104, or none.") from None


_PAD_HELP = ("the whole image is resized to fit inside the input, aspect ratio kept, and the rest filled with this "
             "colour (a grey level 0-255 or R,G,B)")
_CROP_HELP = ("as a fraction of the largest centred box of the input's aspect ratio: 1 keeps the aspect ratio (a "
              "wider image loses its sides), 0.875 is torchvision's Resize(256) + CenterCrop(224)")


# Options default to None so that only what the user typed overrides a recipe (or the built-in defaults, shown in
# brackets). A None never clobbers a recipe's setting.
@main.command()
@click.argument("data", type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Run directory to write (resumed if unfinished).")
@click.option("--recipe", help="A named recipe (see `edgeclf recipes`); the options below override its settings.")
@click.option("--backbone", help="Backbone name (see `edgeclf backbones`) [default: mobilenet_v2].")
@click.option("--img-size", callback=_img_size, metavar="N|HxW",
              help="Input size in pixels: N for N x N, or HxW (height first), e.g. 160x288 for 16:9 camera frames "
                   "[default: the recipe's or backbone's].")
@click.option("--crop", callback=_crop, metavar="F|none",
              help="Centre crop before resizing, " + _CROP_HELP + " [default: none: the whole image, stretched to the "
                   "input].")
@click.option("--pad", callback=_pad, metavar="COLOUR|none",
              help="Letterbox instead of --crop: " + _PAD_HELP + ", e.g. 114 [default: none].")
@click.option("--weights", help="imagenet, none, or a backbone .weights.h5 path [default: imagenet; none for "
                   "backbones without pretrained weights, e.g. simple_cnn].")
@click.option("--epochs", type=int, help="Epochs (first phase) [default: 10].")
@click.option("--batch-size", type=int,
              help="[default: from the training images: 32 below 2,000, 64 below 8,000, else 128]")
@click.option("--lr", "learning_rate", type=float,
              help="Adam learning rate [default: 0.001 at batch 32, scaled with the square root of the batch size].")
@click.option("--fine-tune-layers", type=int,
              help="Top backbone layers unfrozen in phase 2 (pretrained only; 0 skips phase 2) [default: 20].")
@click.option("--fine-tune-epochs", type=int, help="Epochs of phase 2 [default: 5].")
@click.option("--fine-tune-lr", "fine_tune_learning_rate", type=float, help="Phase 2 learning rate [default: lr/10].")
@click.option("--patience", type=int, help="Early-stopping patience in epochs [default: 5].")
@click.option("--early-stopping/--no-early-stopping", default=None, help="[default: on]")
@click.option("--reduce-lr/--no-reduce-lr", default=None,
              help="Reduce the learning rate during training, as --lr-schedule says [default: on].")
@click.option("--lr-schedule", type=click.Choice(["plateau", "cosine"]),
              help="plateau: x0.3 after patience/2 epochs without improvement; cosine: one warm-up epoch, then "
                   "cosine decay to 0 over the phase [default: cosine].")
@click.option("--monitor", type=click.Choice(["val_loss", "val_accuracy"]), help="[default: val_loss]")
@click.option("--folds", type=int, help="K for stratified K-fold cross-validation [default: 1].")
@click.option("--seed", type=int, help="[default: 42]")
@click.option("--split", "split", callback=_split,
              help="train,val,test fractions for data that is not pre-split [default: 0.7,0.15,0.15].")
@click.option("--pooling", type=click.Choice(["gap", "flatten"]), help="[default: gap]")
@click.option("--dense", callback=_csv_ints, help="Hidden Dense widths of the head, e.g. 256,128 [default: none].")
@click.option("--dropout", type=float, help="Dropout before each head Dense layer [default: 0.2].")
@click.option("--augment/--no-augment", default=None,
              help="Augmentation chosen from the input size: flip and shift up to 64 px a side, also rotation, zoom "
                   "and contrast above [default: on].")
@click.option("--randaugment", is_flag=True, default=None, help="Use RandAugment instead of the default augmentation.")
@click.option("--class-weights", type=click.Choice(["auto", "on", "off"]),
              help="auto: on when the largest class is >1.5x the smallest [default: auto].")
@click.option("--mixed-precision", type=click.Choice(["auto", "on", "off"]), help="auto: on when a GPU is present.")
@click.option("--deterministic/--no-deterministic", default=None,
              help="TensorFlow op determinism, or XLA's deterministic GPU ops under JAX (reproducible with --seed; "
                   "slower on GPU) [default: on].")
@click.option("--dedup", is_flag=True, default=None, help="Remove val/test images that duplicate an earlier split's image.")
@click.option("--leakage-threshold", type=int, help="pHash distance (of 256 bits) counted as a near-duplicate [default: 16].")
@click.option("--keep-cache", is_flag=True, default=None, help="Keep the decoded-image cache in the run directory.")
@click.option("--confine", is_flag=True,
              help="Refuse CSV manifest rows that name images outside the manifest's folder (for a manifest from a "
                   "source you do not trust); without it they are used and counted in the report.")
@click.option("--force", is_flag=True, help="Replace an existing run in --out.")
@click.pass_context
def train(ctx, data, out_dir, recipe, backbone, img_size, crop, pad, weights, pooling, dense, dropout, augment,
          randaugment, split, confine, force, **options):
    """Train a classifier on DATA and write a run directory.

    DATA is a folder of class folders (root/<class>/*.jpg), pre-split folders (root/{train,val,test}/<class>/),
    a CSV manifest (path,label[,split]) or images.npy with labels.csv. With a per-category recipe
    (content-resnet50), DATA holds one such dataset per category and each trains into OUT/<category>.

    Keras trains on TensorFlow; with KERAS_BACKEND=jax it trains on JAX (experimental; TensorFlow need not be
    installed, e.g. on a GPU box with JAX's CUDA wheels). The model.keras is the same either way, and
    `edgeclf export` (which needs TensorFlow) takes it from either.

    \b
    Example:
      edgeclf train data/helmets --backbone mobilenet_v2 --epochs 10 --out runs/helmet
      edgeclf train data/fmnist --backbone simple_cnn --weights none --img-size 28 --out runs/fm
      edgeclf train data/helmets --recipe helmet-vgg16-fixed --epochs 5 --out runs/helmet-vgg
      edgeclf train data/site-cam --backbone mobilenet_v3_small --img-size 160x288 --crop 1 --out runs/cam
      KERAS_BACKEND=jax edgeclf train data/helmets --backbone mobilenet_v2 --out runs/helmet-jax
    """

    def go():
        from dataclasses import replace

        from edgeclf.models import HeadSpec, get_backbone, get_recipe
        from edgeclf.toolkit.augment import AugmentSpec
        from edgeclf.toolkit.data import SplitSpec
        from edgeclf.toolkit.train import TrainSpec, train as run_train, train_per_category

        r = get_recipe(recipe) if recipe else None
        spec = r.train if r else TrainSpec()
        given = {k: v for k, v in options.items() if v is not None}
        if randaugment:
            given["augment"] = AugmentSpec(randaugment=True)
        elif augment is not None:  # --augment: the default for the input size (toolkit.augment.augment_for)
            spec = replace(spec, augment=None if augment else AugmentSpec.none())
        if split is not None:
            given["split"] = SplitSpec(*split)
        spec = replace(spec, **given)
        head = r.head if r else HeadSpec()
        head_given = {k: v for k, v in (("pooling", pooling), ("dense", dense), ("dropout", dropout)) if v is not None}
        if head_given:
            # A uniform --dropout (or new --dense widths) replaces the recipe's per-layer rates.
            head = replace(head, **head_given, dropouts=None if "dropout" in head_given or "dense" in head_given
                           else head.dropouts)
        name = backbone or (r.backbone if r else "mobilenet_v2")
        size = r.img_size if img_size is None and r and not backbone else img_size
        kwargs = dict(backbone=name, img_size=size, crop=crop, pad=pad, head=head,
                      weights=weights or (r.weights if r else "imagenet" if get_backbone(name).pretrained else "none"),
                      normalisation=r.normalisation if r and not backbone else None, spec=spec, force=force,
                      confine=confine, reporter=ClickReporter(ctx.obj["verbose"]))
        if r is not None and r.per_category:
            for result in train_per_category(data, out_dir, **kwargs):
                _print_train_summary(result)
        else:
            _print_train_summary(run_train(data, out_dir, **kwargs))

    _run(ctx, go, interrupted="Interrupted. Run the same command again to resume from the last finished epoch.")


def _print_train_summary(result) -> None:
    click.echo()
    click.secho(f"Trained {result.model_path}", bold=True)
    header = f"{'split':<6} {'n':>6} {'accuracy':>9} {'F1 macro':>9} {'ROC-AUC':>8}"
    click.echo(header)
    for name, m in result.metrics.items():
        auc = f"{m['roc_auc']:.4f}" if m["roc_auc"] is not None else "n/a"
        colour = "green" if m["accuracy"] >= 0.9 else ("yellow" if m["accuracy"] >= 0.7 else "red")
        click.echo(f"{name:<6} {m['n']:>6} " + click.style(f"{m['accuracy']:>9.4f}", fg=colour)
                   + f" {m['f1_macro']:>9.4f} {auc:>8}")
    if len(result.folds) > 1:
        accs = [f["val_accuracy"] for f in result.folds]
        mean = sum(accs) / len(accs)
        std = (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5
        click.echo(f"{len(accs)}-fold val accuracy {mean:.4f} ± {std:.4f}")
    if result.skipped:
        click.secho(f"{len(result.skipped)} file(s) skipped (see report.md)", fg="yellow")
    leaked = result.leakage["leaked_images"]
    if leaked["val"] or leaked["test"]:
        click.secho(f"Leakage: {leaked['val']} val and {leaked['test']} test images duplicate an earlier split"
                    + (" (removed)" if result.leakage.get("removed") else " (see report.md; --dedup removes them)"),
                    fg="yellow")
    fold_leaks = sum(f["leaked_val_images"] for f in result.leakage.get("folds", []))
    if fold_leaks:
        click.secho(f"K-fold leakage: {fold_leaks} val image(s) across the folds duplicate their fold's train"
                    + (" (removed)" if any(f["removed"] for f in result.leakage["folds"]) else
                       " (see report.md; --dedup removes them)"), fg="yellow")
    click.echo(f"Wall time {result.wall_time_s:.0f} s{' (resumed)' if result.resumed else ''}. "
               f"Report: {result.run_dir / 'report.md'}")


# Spelled out rather than imported from edgeclf.toolkit.export.foreign, which would slow every command's start; a test
# checks they equal INPUT_NORMS, OUTPUTS and RESIZE_METHODS.
_FOREIGN_OPTIONS = (
    click.option("--labels", help="Model trained elsewhere: its class names in output order, comma-separated or "
                                  "a file with one per line."),
    click.option("--input-norm", type=click.Choice(["raw", "unit", "tf", "caffe", "torch"]),
                 help="Model trained elsewhere: how its training scaled RGB 0-255 pixels. raw: as they are; "
                      "unit: x/255; tf: x/127.5-1; caffe: BGR minus ImageNet mean; torch: x/255, ImageNet mean/std."),
    click.option("--mean", help="Model trained elsewhere, instead of --input-norm: the per-channel mean its training "
                                "normalised pixels scaled to 0-1 with, as torchvision gives it, e.g. 0.481,0.458,0.408 "
                                "(CLIP)."),
    click.option("--std", help="With --mean: the per-channel standard deviation, e.g. 0.269,0.261,0.276."),
    click.option("--model-output", "output_kind", type=click.Choice(["auto", "probabilities", "logits"]),
                 default="auto", show_default=True,
                 help="Model trained elsewhere: what it outputs; auto reads it from the model (a Keras model's last "
                      "layer; an adopted file's outputs on probe images)."),
    click.option("--img-size", callback=_img_size, metavar="N|HxW",
                 help="Model trained elsewhere whose input size is not fixed: the size it was trained at, N for "
                      "N x N or HxW (height first)."),
    click.option("--resize", type=click.Choice(["bilinear", "nearest", "bicubic", "area", "lanczos"]),
                 help="Model trained elsewhere: the resampling filter its training used [default: bilinear]."),
    click.option("--crop", callback=_crop, metavar="F|none",
                 help="Model trained elsewhere: its pipeline's centre crop, " + _CROP_HELP + " [default: none]."),
    click.option("--pad", callback=_pad, metavar="COLOUR|none",
                 help="Model trained elsewhere whose pipeline letterboxed (padded to the input's aspect ratio): "
                      + _PAD_HELP + ", e.g. 124,116,104 (the ImageNet mean) for timm's crop_mode='border' at "
                      "crop_pct 1 [default: none]."),
)


def _foreign_model_options(command):
    """--labels, --input-norm, --model-output, --img-size, --resize, --crop and --pad: a model trained outside
    edgeclf."""
    for option in reversed(_FOREIGN_OPTIONS):
        command = option(command)
    return command


def _foreign_spec(labels, input_norm, output_kind, img_size, resize, mean=None, std=None, crop=None, pad=None):
    """The ForeignSpec the options describe, or None for an edgeclf run's model (and then none may be given).

    ``mean``/``std`` (adopt's --mean/--std, comma-separated) stand for --input-norm with their own numbers.
    """
    if mean is not None or std is not None:
        if input_norm is not None:
            raise ConfigError(f"Received: --mean/--std and --input-norm {input_norm}. Give one or the other.")
        input_norm = "custom"
    if labels is not None or input_norm is not None:
        if labels is None or input_norm is None:
            raise ConfigError("A model trained elsewhere needs both --labels and --input-norm (or --mean and --std).")
        from edgeclf.toolkit.export import ForeignSpec, parse_labels

        def numbers(option, value):
            try:
                return None if value is None else tuple(float(v) for v in value.split(","))
            except ValueError:
                raise ConfigError(f"Received: {option} {value}. Expected numbers separated by commas, e.g. "
                                  "0.485,0.456,0.406.") from None

        return ForeignSpec(parse_labels(labels), input_norm, output_kind, img_size, resize or "bilinear",
                           mean=numbers("--mean", mean), std=numbers("--std", std), crop=crop, pad=pad)
    if output_kind != "auto" or img_size is not None or resize is not None or crop is not None or pad is not None:
        raise ConfigError("--model-output, --img-size, --resize, --crop and --pad describe a model trained elsewhere "
                          "and go with --labels and --input-norm; an edgeclf run's metadata.json sets them.")
    return None


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("data", type=click.Path(exists=True))
@click.option("--split", default="all", show_default=True, help="all, or train/val/test of a pre-split dataset.")
@click.option("--out", "out_dir", type=click.Path(), help="Write metrics.json and plots here.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1),
              help="Two-class models: the second class wins when its probability reaches this, as in "
                   "predict --threshold (the run's report.md suggests one chosen on val) [default: most probable].")
@click.option("--force", is_flag=True, help="Overwrite an earlier evaluation in --out.")
@_foreign_model_options
@click.pass_context
def evaluate(ctx, model, data, split, out_dir, batch_size, threshold, force, labels, input_norm, mean, std, output_kind,
             img_size, resize, crop, pad):
    """Evaluate a trained model.keras on DATA (any form `train` accepts).

    A .keras classifier trained elsewhere (no metadata.json beside it) needs --labels and --input-norm, as for
    `export`, and is evaluated wrapped as `export` wraps it.

    \b
    Example:
      edgeclf evaluate runs/helmet/model.keras data/helmets_holdout --out runs/helmet/holdout
      edgeclf evaluate runs/helmet/model.keras data/helmets_holdout --threshold 0.7
      edgeclf evaluate notebook.keras data/pets/test --labels cat,dog --input-norm unit
    """

    def go():
        from edgeclf.toolkit.evaluate import evaluate as run_eval

        foreign = _foreign_spec(labels, input_norm, output_kind, img_size, resize, mean, std, crop, pad)
        result = run_eval(model, data, split=split, out_dir=out_dir, batch_size=batch_size, force=force,
                          threshold=threshold, foreign=foreign, reporter=ClickReporter(ctx.obj["verbose"]))
        m = result.metrics
        auc = f"{m['roc_auc']:.4f}" if m["roc_auc"] is not None else "n/a"
        second = list(m["per_class"])[1]
        decided = f" ({second} where P({second}) >= {threshold:g})" if threshold is not None else ""
        click.echo(f"n={m['n']} accuracy={m['accuracy']:.4f} f1_macro={m['f1_macro']:.4f} roc_auc={auc}{decided}")
        predicted = [sum(col) for col in zip(*m["confusion_matrix"])]
        absent = []
        width = max([20, *(display_width(name) for name in m["per_class"])])
        for (name, v), n_pred in zip(m["per_class"].items(), predicted):
            if v["support"]:
                click.echo(f"  {pad_text(name, width)} precision={v['precision']:.4f} recall={v['recall']:.4f} "
                           f"f1={v['f1']:.4f} support={v['support']}")
            elif n_pred:
                click.echo(f"  {pad_text(name, width)} not in these images, yet predicted for {n_pred}")
            else:
                absent.append(name)
        if any(not v["support"] for v in m["per_class"].values()):
            # As classification_metrics averages: over the classes that are true or predicted labels here.
            counted = sum(1 for v, n_pred in zip(m["per_class"].values(), predicted) if v["support"] or n_pred)
            click.echo(f"  (macro averages over the {counted} class(es) in these images or predicted for them)")
        if absent:
            click.echo(f"  ({len(absent)} other class(es) neither in these images nor predicted: {', '.join(absent)})")
        if result.skipped:
            click.secho(f"{len(result.skipped)} file(s) skipped", fg="yellow")
        if result.out_dir:
            click.echo(f"Wrote {result.out_dir / 'metrics.json'}")

    _run(ctx, go)


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


def _warn_deployment(classifiers) -> None:
    """Says on stderr what makes a loaded artefact less faithful on this machine than its export gate measured."""
    for c in classifiers:
        for message in c.warnings:
            click.secho(f"! {message}", fg="yellow", err=True)


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
@click.argument("paths", nargs=-1)
@click.option("--model", "models", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="An exported .tflite/.onnx model; repeat to run several over the same images.")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "csv"]), default=None,
              help="Output format [default: table on a terminal, jsonl when piped].")
@click.option("--top-k", type=int, default=1, show_default=True, help="Classes listed per image (table/jsonl).")
@click.option("--threshold", type=click.FloatRange(0, 1),
              help="Two-class models: the second class (as the model lists them) wins when its probability reaches "
                   "this; the run's report.md suggests one chosen on the validation split.")
@click.option("--batch-size", type=int, default=1, show_default=True,
              help="Images per inference call. Larger batches take less CPU per image (fewer calls), which also "
                   "leaves more for decoding, but raise peak memory and hold each result until its batch is full.")
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads [default: all cores].")
@click.option("--workers", type=click.IntRange(min=1), help="Decoding threads [default: all cores].")
@click.pass_context
def predict(ctx, paths, models, fmt, top_k, threshold, batch_size, threads, workers):
    """Classify images with exported models; never imports TensorFlow.

    PATHS are files, folders (searched recursively), globs, or - to read paths from stdin. Without --model, the
    first PATH is the model. Exit code 1 if any image failed, 2 for usage errors.

    \b
    Example:
      edgeclf predict helmet_int8.tflite photos/
      find /uploads -name '*.jpg' | edgeclf predict --model adult.tflite --model violence.tflite - --format jsonl
    """

    def go():
        from edgeclf.edge_runtime.classifier import Classifier, check_threshold, distinct_names, stream_many
        from edgeclf.edge_runtime.errors import ImageDecodeError
        from edgeclf.edge_runtime.paths import display_path, printable
        from edgeclf.edge_runtime.sources import expand_paths

        model_paths, image_args = list(models), list(paths)
        if not model_paths:
            if not image_args:
                raise ConfigError("Received no model. Pass MODEL PATH... or --model MODEL PATH...")
            model_paths, image_args = [image_args[0]], image_args[1:]
        if not image_args:
            raise ConfigError("Received no images. Pass files, folders, globs, or - to read paths from stdin.")
        stray = next((a for a in image_args if Path(a).suffix.lower() in (".tflite", ".onnx", ".keras")), None)
        if stray is not None:  # a second model given the single-model way would only fail as "not an image"
            raise ConfigError(f"Received the model file '{stray}' among the images. To run several models on each "
                              "image, give every one with --model: --model A.tflite --model B.onnx PATH...")
        if top_k < 1:
            raise ConfigError(f"Received: top_k={top_k}. Expected at least 1.")
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
        summary = f"{done} image(s), {failed} failed"
        if done > failed:
            tallies = [", ".join(f"{label} {n}" for label, n in counts.items() if n) for counts in writer.counts]
            summary += "; " + "; ".join(f"{c.name}: {t}" if len(classifiers) > 1 else t
                                        for c, t in zip(classifiers, tallies))
        click.secho(printable(summary), fg="red" if failed else "green", err=True)
        global _finished
        _finished = True  # every record and the summary are out; see ``run``
        if failed:
            sys.exit(1)

    _run(ctx, go)


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

    def _model_record(self, c, result):
        best = result.decide(self.threshold)
        rec = {"label": best.label, "score": round(best.score, 6), "scores": {k: round(v, 6) for k, v in
                                                                           result.scores().items()}}
        if self.top_k > 1:
            rec["top_k"] = [{"label": p.label, "score": round(p.score, 6)} for p in result.top(self.top_k)]
        return rec

    def write(self, path, results):
        import json as _json

        from edgeclf.edge_runtime.errors import ImageDecodeError

        error = results[0].reason if isinstance(results[0], ImageDecodeError) else None
        records = None if error else [self._model_record(c, r) for c, r in zip(self.classifiers, results)]
        for counts, rec in zip(self.counts, records or []):
            counts[rec["label"]] += 1
        if self.fmt == "jsonl":
            rec = {"path": path}
            if error:
                rec["error"] = error
            elif self.multi:
                rec["models"] = {c.name: r for c, r in zip(self.classifiers, records)}
            else:
                rec.update(records[0])
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


def _write_all(text: str) -> None:
    """``sys.stdout.write(text)`` straight to the file descriptor, all of it.

    With ``PYTHONUNBUFFERED`` (set in many container images) Python's text layer ignores a short write - a pipe
    whose reader is gone, a write cut short by a signal - and the rest of the text would vanish without an error;
    and a stdout that another program sharing the pipe made non-blocking (``O_NONBLOCK``: Node's child processes,
    some CI log collectors) fails with ``BlockingIOError`` as soon as the pipe is full. Here the rest is written
    again until all is out, waiting (``select``) while the pipe is full rather than failing or spinning.
    """
    out = sys.stdout
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file: captured (CliRunner, pytest)
        out.write(text)
        return
    out.flush()
    data = memoryview(text.encode(out.encoding, out.errors))
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            import select

            select.select([], [fd], [])


@main.command()
@click.option("--model", "models", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="An exported .tflite/.onnx model; repeat for several.")
@click.option("--source", default="0", show_default=True, help="Camera index, video file, or stream URL (rtsp://...).")
@click.option("--headless", is_flag=True, default=None, help="No window [default: automatic when there is no display].")
@click.option("--events", "events_path", type=click.Path(dir_okay=False),
              help="Append events as JSON lines to this file [default: stdout].")
@click.option("--min-frames", type=int, default=3, show_default=True,
              help="A class change is reported once it holds for this many classified frames.")
@click.option("--alert", "alerts", multiple=True, help="Label to mark as an alert, e.g. no_helmet; repeatable.")
@click.option("--snapshot-dir", type=click.Path(file_okay=False),
              help="Save the frame that triggered each alert as MODEL_LABEL_DATE-TIME_fFRAME.jpg (never over an "
                   "earlier snapshot).")
@click.option("--every-n", type=int, default=1, show_default=True,
              help="Classify every n-th frame (of a camera or stream: of the newest frames taken).")
@click.option("--max-fps", type=float, help="Classify at most this many frames per second.")
@click.option("--max-reconnects", type=click.IntRange(min=0), help="Give up after this many failed reconnections [default: never].")
@click.option("--threshold", type=click.FloatRange(0, 1),
              help="Two-class models: the second class (as the model lists them) wins when its probability reaches "
                   "this, as in predict --threshold.")
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads [default: all cores].")
@click.pass_context
def camera(ctx, models, source, headless, events_path, min_frames, alerts, snapshot_dir, every_n, max_fps,
           max_reconnects, threshold, threads):
    """Classify a camera, video file or stream and report stable class changes as events.

    With a display, a window shows the label, score and FPS (q or Esc closes it). Headless (by --headless, or
    by itself where no window can be shown, with a warning where DISPLAY was set), events go out as JSON lines.
    Ctrl-C, SIGTERM or the end of a file end the run with a summary on stderr. A camera or stream is classified
    on its newest frame whenever the model is free (frames it could not take are counted as skipped); a video
    file frame by frame.

    \b
    Example:
      edgeclf camera --model helmet_int8.tflite --alert no_helmet --snapshot-dir alerts/
      edgeclf camera --model helmet_int8.tflite --source rtsp://cam1/stream --headless --events events.jsonl
    """

    def go():
        import json as _json
        import signal
        import threading

        from edgeclf.edge_runtime.camera import CameraSpec, watch
        from edgeclf.edge_runtime.classifier import Classifier, distinct_names

        classifiers = [Classifier.load(p, threads) for p in models]
        _warn_deployment(classifiers)
        distinct_names(classifiers)
        spec = CameraSpec(source=source, every_n=every_n, max_fps=max_fps, min_frames=min_frames, alerts=tuple(alerts),
                          snapshot_dir=snapshot_dir, headless=headless, max_reconnects=max_reconnects,
                          threshold=threshold)
        folder = Path(events_path).parent if events_path else None
        if folder is not None and not (folder.is_dir() and os.access(folder, os.W_OK)):
            raise ConfigError(f"Cannot write --events {events_path}: {folder} is not a writable folder. Create it or "
                              "choose another path.")
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        sink = None  # opened at the first event, so a run refused before it starts leaves no empty file
        try:
            def emit(event):
                nonlocal sink
                line = _json.dumps(event)
                if events_path is None:
                    _write_all(line + "\n")  # at once, whole, and waiting on a full non-blocking pipe
                    return
                if sink is None:
                    sink = open(events_path, "a", encoding="utf-8")
                sink.write(line + "\n")
                sink.flush()

            summary = watch(classifiers, spec, emit, stop)
        finally:
            signal.signal(signal.SIGTERM, previous)
            if sink is not None:
                sink.close()
        click.echo(_json.dumps({"summary": summary.to_dict()}), err=True)
        if summary.truncated:
            click.secho(f"Error: the video {summary.stopped_by}.", fg="red", err=True)
            sys.exit(1)

    _run(ctx, go)


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


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON line per file: its path and its full metadata.")
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
                click.echo(json.dumps({"path": display_path(path), "metadata": meta}, sort_keys=True))
                continue
            click.secho(printable(display_path(path)), bold=True)
            for field, text in lines:  # metadata is untrusted: escaped, never sent to the terminal raw
                text = printable(text)
                click.echo(f"  {field:<13} " + (click.style(text, fg="yellow") if field == "warning" else text))
        return max(codes, default=0)

    ctx.exit(_run(ctx, go))


@main.command()
@click.argument("pattern", default="*")
@click.option("--details", is_flag=True, help="Also show what the original did, its reported figure and the fixes.")
def recipes(pattern, details):
    """List the training recipes (optionally matching PATTERN, e.g. 'helmet*').

    \b
    Example:
      edgeclf recipes --details
      edgeclf train data/helmets --recipe helmet-vgg16-fixed --out runs/helmet
    """
    from edgeclf.models import get_recipe, list_recipes

    for name in list_recipes(pattern):
        r = get_recipe(name)
        click.echo(f"{name:<20} {r.backbone:<13} {r.img_size:>4}px  {r.description}")
        if details:
            click.echo(f"    original: {r.original}; reported {r.reported}")
            if r.fix:
                click.echo(f"    fix: {r.fix}")
            for a in r.assumptions:
                click.echo(f"    assumed: {a}")


@main.command()
@click.argument("pattern", default="*")
def backbones(pattern):
    """List the registered backbones (optionally matching PATTERN, e.g. 'mobilenet*'): the default input size,
    the smallest side --img-size may give, and what it is."""
    from edgeclf.models import get_backbone, list_backbones

    for name in list_backbones(pattern):
        bb = get_backbone(name)
        click.echo(f"{name:<20} {bb.default_size:>4}px (min {bb.min_size:>2})  {bb.description}")


# Set by a command that has written and flushed everything it had to and holds nothing that needs cleaning up.
_finished = False


def run() -> None:
    """The ``edgeclf`` console command: ``main``, then, after a command that has finished all its work
    (``predict``), an exit that skips tearing the interpreter down.

    Python's own exit unloads modules and frees LiteRT's interpreter: 15 ms of a 0.17 s one-image ``predict``
    (9 %) that a script calling it once per file pays every time, and nothing is left for it to do. Anything
    other than that command's normal end - an error, Ctrl-C, a reader gone from the pipe - exits as usual.
    ``main`` itself (``CliRunner``, an embedding program) never exits this way.
    """
    global _finished
    _finished = False
    try:
        main()
    except SystemExit as exc:
        if not _finished or not (exc.code is None or isinstance(exc.code, int)):
            raise
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):  # a reader gone after all: Python's own exit reports it
            raise exc from None
        os._exit(exc.code or 0)


if __name__ == "__main__":  # pragma: no cover
    run()
