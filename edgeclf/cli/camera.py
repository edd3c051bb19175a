"""``edgeclf camera``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from edgeclf.edge_runtime.errors import ConfigError

from .core import _run, _warn_deployment, _write_all, main


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
