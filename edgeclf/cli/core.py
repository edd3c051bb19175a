"""What every command shares: the ``main`` group, error handling, progress, option parsers and writers."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

import click

from edgeclf.edge_runtime.errors import ConfigError, EdgeclfError

from edgeclf import __version__

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


def _warn_deployment(classifiers) -> None:
    """Says on stderr what makes a loaded artefact less faithful on this machine than its export gate measured."""
    for c in classifiers:
        for message in c.warnings:
            click.secho(f"! {message}", fg="yellow", err=True)


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


class _State:
    """Set by a command that has written and flushed everything it had to and holds nothing that needs cleaning
    up (``predict``): ``run`` may then exit without Python's teardown."""

    finished = False


state = _State()
