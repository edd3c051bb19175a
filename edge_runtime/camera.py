"""Classify a camera, video file or stream frame by frame, and report stable class changes as events."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .classifier import Classifier, check_threshold
from .errors import ConfigError, DataError, missing_dependency
from .display import why_no_window
from .native_log import captured_native_log, write_back
from .paths import safe_text
from .preprocess import preprocess_frame

logger = logging.getLogger(__name__)


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise missing_dependency("opencv-python", "camera", exc) from None
    return cv2


@dataclass(frozen=True)
class CameraSpec:
    """How to watch a source.

    Args:
        source: Camera index (``"0"``), a video file, or a stream URL (``rtsp://``, ``http://``).
        every_n: Classify every n-th frame (of a live source: of the frames taken, each the newest at the time).
        max_fps: Classify at most this many frames per second (None: as fast as frames come).
        min_frames: A new class is reported only after it holds for this many classified frames in a row.
        alerts: Labels whose events are marked ``alert``.
        snapshot_dir: Where the frame that triggered each alert is saved as JPEG.
        headless: No window; None decides from the environment (no display, or OpenCV without GUI support).
        max_backoff: Longest wait between reconnection attempts of a live source, in seconds.
        max_reconnects: Give up after this many failed reconnections in a row (None: never).
        threshold: Two-class models: class 1 wins when its probability reaches this (as ``predict --threshold``).
    """

    source: str
    every_n: int = 1
    max_fps: float | None = None
    min_frames: int = 3
    alerts: tuple[str, ...] = ()
    snapshot_dir: Path | None = None
    headless: bool | None = None
    max_backoff: float = 30.0
    max_reconnects: int | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.every_n < 1 or self.min_frames < 1:
            raise ConfigError(f"Received: every_n={self.every_n}, min_frames={self.min_frames}. Expected at least 1.")
        if self.max_fps is not None and self.max_fps <= 0:
            raise ConfigError(f"Received: max_fps={self.max_fps}. Expected a positive number.")
        check_threshold(self.threshold)

    def check_models(self, classifiers: Sequence[Classifier]) -> None:
        """Refuses alert labels no model predicts (a typo would never fire) and a threshold on a non-binary model.

        Raises:
            ConfigError: Naming the label or model and what the models offer.
        """
        known = list(dict.fromkeys(label for c in classifiers for label in c.class_names))
        unknown = [a for a in self.alerts if a not in known]
        if unknown:
            raise ConfigError(f"Received: --alert {', '.join(unknown)}, which no model predicts. Expected one of the "
                              f"models' classes: {', '.join(known)}.")
        check_threshold(self.threshold, [(c.path.name, c.class_names) for c in classifiers])

    @property
    def shown_source(self) -> str:
        """The source as every message, log line and record shows it: a stream URL's password (and any secret
        query parameter) masked, control characters escaped."""
        return safe_text(self.source)

    @property
    def is_live(self) -> bool:
        """Cameras and network streams reconnect when they drop; files end."""
        return self.source.isdigit() or "://" in self.source


@dataclass
class _Track:
    """Debounces one model's labels: a change counts once it has held for ``min_frames`` frames."""

    current: str | None = None
    candidate: str | None = None
    count: int = 0

    def update(self, label: str, min_frames: int) -> bool:
        if label == self.current:
            self.candidate, self.count = None, 0
            return False
        if label != self.candidate:
            self.candidate, self.count = label, 0
        self.count += 1
        if self.count >= min_frames:
            self.current, self.candidate, self.count = label, None, 0
            return True
        return False


@dataclass
class CameraSummary:
    """What a camera run saw."""

    frames_read: int = 0
    frames_skipped: int = 0  # live sources: frames a newer one replaced before the classifier was free
    frames_classified: int = 0
    events: int = 0
    alerts: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    stopped_by: str = ""
    last_labels: dict = field(default_factory=dict)
    window: bool = False  # whether frames were shown in a window (False when headless)
    frames_shown: int = 0
    truncated: bool = False  # a video file that ended before the frames its header announces

    @property
    def fps(self) -> float:
        return self.frames_classified / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {"frames_read": self.frames_read, "frames_skipped": self.frames_skipped,
                "frames_classified": self.frames_classified, "events": self.events,
                "alerts": self.alerts, "reconnects": self.reconnects, "seconds": round(self.seconds, 3),
                "classified_fps": round(self.fps, 2), "stopped_by": self.stopped_by, "last_labels": self.last_labels,
                "window": self.window, "frames_shown": self.frames_shown, "truncated": self.truncated}


def _file_safe(name: str) -> str:
    """``name`` with all but letters, digits, ``.``, ``-`` and ``_`` replaced by ``_`` (model names may hold ``/``)."""
    return re.sub(r"[^\w.-]", "_", name)


def _save_snapshot(cv2, frame: np.ndarray, folder: Path, stem: str) -> Path | None:
    """Writes ``frame`` as ``folder/stem.jpg`` (temporary file, then rename), never over an existing snapshot.

    Frame numbers start again at 0 in every run, so the wall-clock time in ``stem`` keeps runs apart; a second alert
    within the same second and frame number (several models) gets ``-2``, ``-3``.
    """
    stem = _file_safe(stem)
    snap, n = folder / f"{stem}.jpg", 1
    while snap.exists():
        n += 1
        snap = folder / f"{stem}-{n}.jpg"
    tmp = folder / f".{snap.stem}.part.jpg"
    if not cv2.imwrite(str(tmp), frame):
        return None
    os.replace(tmp, snap)
    return snap


_LOST = object()  # what ``_LatestFrames.take`` returns once its source stops giving frames


class _LatestFrames:
    """Reads a live source on its own thread and keeps only the newest frame.

    A camera or stream delivers frames at its own pace; read one by one behind a slower classifier, they queue up
    in OpenCV's and the network's buffers and every event comes later than the last (or the stream breaks up when
    the buffers overflow). Here the thread reads as fast as frames come, and ``take`` hands out the newest frame
    not yet taken, counting the ones it replaced.
    """

    def __init__(self, cap, first_index: int):
        self._cap = cap
        self._cond = threading.Condition()
        self._frame = None
        self._index = first_index - 1  # source frame number of the newest frame read
        self._lost = False
        self._closing = False
        self.read = 0
        self.replaced = 0
        self._thread = threading.Thread(target=self._run, name="edgeclf-camera-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            ok, frame = self._cap.read()
            with self._cond:
                if self._closing:
                    return
                if not ok:
                    self._lost = True
                    self._cond.notify_all()
                    return
                if self._frame is not None:
                    self.replaced += 1
                self._frame, self._index = frame, self._index + 1
                self.read += 1
                self._cond.notify_all()

    def take(self, timeout: float):
        """``(frame, index)`` of the newest frame not yet taken; ``_LOST`` once the source stops giving frames
        (after any frame still waiting); None if nothing came within ``timeout`` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._lost, timeout)
            if self._frame is not None:
                frame, self._frame = self._frame, None
                return frame, self._index
            return _LOST if self._lost else None

    def close(self, timeout: float = 2.0) -> bool:
        """Stops the thread; False if it is still blocked in a read after ``timeout`` (the capture must then not be
        released under it)."""
        with self._cond:
            self._closing = True
        self._thread.join(timeout)
        return not self._thread.is_alive()


# FFmpeg's log prefix: "[tcp @ 0x5592e2a02f40] Connection to tcp://127.0.0.1:9 failed: Connection refused"
_FFMPEG_LINE = re.compile(r"^\[[\w,.:-]+ @ 0x[0-9a-fA-F]+\]\s*(\S.*)$")


MAX_CAMERA_INDEX = 2**31 - 1  # a C int: OpenCV's VideoCapture(index)


def _open(cv2, source: str):
    """Opens a video source: ``(capture, None)``, or ``(None, cause)`` with why it did not open where that is known.

    OpenCV writes a dozen lines to stderr when a source will not open (one or more per backend it tried). They are
    captured: passed on as they were when the source opens, and otherwise condensed into the cause - what /dev says
    about a camera index on Linux, or FFmpeg's own last word on a file or URL - with every line logged for --verbose.
    """
    if source.isdigit() and int(source) > MAX_CAMERA_INDEX:  # OpenCV fails on it with an overload error
        return None, _open_failure(source, [])
    with captured_native_log() as lines:
        cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
        opened = cap.isOpened()
    if opened:
        write_back([safe_text(line) for line in lines])
        return cap, None
    cap.release()
    lines = [safe_text(line) for line in lines]  # FFmpeg names the URL it failed on, password and all
    for line in lines:
        logger.debug("OpenCV: %s", line)
    return None, _open_failure(source, lines)


def _open_failure(source: str, lines: Sequence[str], dev: Path = Path("/dev")) -> str | None:
    if source.isdigit() and sys.platform.startswith("linux"):
        device = dev / f"video{int(source)}"
        if not device.exists():
            numbers = sorted(int(p.name[5:]) for p in dev.glob("video*") if p.name[5:].isdigit())
            cameras = [str(dev / f"video{n}") for n in numbers]
            return f"{device} does not exist: " + (f"the cameras here are {', '.join(cameras)}" if cameras
                                                    else "this machine has no /dev/video* camera device")
        if not os.access(device, os.R_OK | os.W_OK):
            import grp

            try:
                group = f" (add the user to the '{grp.getgrgid(device.stat().st_gid).gr_name}' group)"
            except (KeyError, OSError):
                group = ""
            return f"no permission to open {device}{group}"
    causes = [m.group(1).strip() for m in map(_FFMPEG_LINE.match, lines) if m]
    return causes[-1] if causes else None


def _check_complete(cv2, cap, summary: CameraSummary) -> None:
    """Marks a video file that ended before the frame count its container announces (an AVI cut in half ends as
    cleanly as a whole one, FFmpeg's only word an "overread" line). Containers whose count is an estimate are
    allowed 2 % (at least 2 frames) of slack."""
    announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if announced > 0 and summary.frames_read + max(2, announced // 50) < announced:
        summary.truncated = True
        summary.stopped_by = (f"end of file after {summary.frames_read} of the {announced} frames its header "
                              "announces: the file is truncated or damaged")


def _overlay(cv2, frame: np.ndarray, lines: Sequence[str], alert: bool) -> np.ndarray:
    out = frame.copy()
    for i, text in enumerate(lines):
        y = 28 + 26 * i
        cv2.putText(out, text, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(out, text, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 255) if alert else (0, 255, 0), 2,
                    cv2.LINE_AA)
    return out


def watch(classifiers: Sequence[Classifier], spec: CameraSpec, emit: Callable[[dict], None],
          stop: threading.Event | None = None, sleep: Callable[[float], None] = time.sleep) -> CameraSummary:
    """Reads frames from ``spec.source``, classifies them and emits one event per stable class change.

    Args:
        classifiers: Models run on every classified frame (each with its own debounced label).
        spec: The source and event settings.
        emit: Receives each event dict: time, frame, model, label, score, alert, and ``video_time_s`` (the frame's
            position in a video file) and ``snapshot`` where they apply.
        stop: Set it (e.g. from a SIGTERM handler) to end the loop cleanly.
        sleep: Injected for tests of reconnection back-off.

    Returns:
        The summary; the loop ends at the end of a file, on ``stop``, on Ctrl-C, or after ``max_reconnects``.

    Raises:
        DataError: If the source cannot be opened at all.
        ConfigError: For an alert label no model predicts, or a threshold on a model that is not two-class.
    """
    spec.check_models(classifiers)
    cv2 = _cv2()
    stop = stop or threading.Event()
    headless = _headless(spec)
    cap = _open_source(cv2, spec)
    summary = CameraSummary(window=not headless)
    tracks = [_Track() for _ in classifiers]
    started = time.perf_counter()
    last_classified = 0.0
    backoff, failures, cause = 0.5, 0, None
    frame_index, taken = -1, 0
    # A file is read frame by frame (every frame counts); a live source through a reader thread that keeps only
    # the newest frame, so a slow classifier sees the current scene rather than a growing backlog.
    reader = _LatestFrames(cap, 0) if spec.is_live else None

    def retire(r: _LatestFrames, capture) -> None:
        if r.close():
            capture.release()  # never under a read still in progress
        summary.frames_read += r.read
        summary.frames_skipped += r.replaced

    try:
        while not stop.is_set():
            if reader is not None:
                got = reader.take(timeout=0.25)
                if got is None:
                    continue  # nothing yet: look at ``stop`` again
            else:
                ok, frame = cap.read()
                got = (frame, frame_index + 1) if ok else _LOST
                summary.frames_read += ok
            if got is _LOST:
                if reader is None:
                    summary.stopped_by = "end of file"
                    _check_complete(cv2, cap, summary)
                    break
                retire(reader, cap)
                reader = None
                failures += 1
                if spec.max_reconnects is not None and failures > spec.max_reconnects:
                    summary.stopped_by = f"source lost after {spec.max_reconnects} reconnection attempts"
                    break
                logger.warning("Lost %s; reconnecting in %.1f s%s", spec.shown_source, backoff,
                               f" (the last attempt: {cause})" if cause else "")
                sleep(backoff)
                backoff = min(backoff * 2, spec.max_backoff)
                reopened, cause = _open(cv2, spec.source)
                cap = reopened or cap
                reader = _LatestFrames(cap, summary.frames_read)
                summary.reconnects += 1
                continue
            frame, frame_index = got
            failures, backoff = 0, 0.5
            taken += 1
            if (taken - 1) % spec.every_n:
                continue
            now = time.perf_counter()
            if spec.max_fps is not None and now - last_classified < 1.0 / spec.max_fps:
                continue
            last_classified = now
            summary.frames_classified += 1
            video_time = None if spec.is_live else cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
            lines, alert_now = _classify_frame(cv2, frame, frame_index, video_time, classifiers, tracks, spec,
                                               summary, emit)
            if not headless and _show(cv2, frame, lines, alert_now, summary, time.perf_counter() - started):
                summary.stopped_by = "window closed"
                break
        else:
            summary.stopped_by = "stop requested"
    except KeyboardInterrupt:
        summary.stopped_by = "Ctrl-C"
    finally:
        if reader is not None:
            retire(reader, cap)
        else:
            cap.release()
        if not headless:
            cv2.destroyAllWindows()
        summary.seconds = time.perf_counter() - started
    return summary


def _headless(spec: CameraSpec) -> bool:
    """``spec.headless``, or when it is None, whether no window can be shown (said as a warning where a display
    was named, since the user may expect a window; else routinely)."""
    if spec.headless is not None:
        return spec.headless
    no_window = why_no_window()
    if no_window:
        named = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        logger.log(logging.WARNING if named else logging.INFO, "No window: %s. Running headless.", no_window)
    return no_window is not None


def _open_source(cv2, spec: CameraSpec):
    """The opened capture, after the checks that need no camera: a plain path exists, the snapshot folder can be
    made."""
    # A plain path (not a camera index, URL, image-sequence pattern or GStreamer pipeline) must exist.
    plain_path = not spec.source.isdigit() and not any(c in spec.source for c in ("://", "%", "!"))
    if plain_path and not os.path.exists(spec.source):
        raise DataError(f"Video file not found: {spec.shown_source}. Expected a camera index (0), an existing video "
                        "file or a stream URL (rtsp://, http://).")
    if spec.snapshot_dir is not None:
        try:
            Path(spec.snapshot_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"Cannot create --snapshot-dir {spec.snapshot_dir}: {exc.strerror or exc}. Choose a "
                              "writable folder.") from None
    cap, cause = _open(cv2, spec.source)
    if cap is None:
        raise DataError(f"Cannot open video source '{spec.shown_source}'" + (f" ({cause})" if cause else "") +
                        ". Expected a camera index (0), a video file or a stream URL (rtsp://, http://) that OpenCV "
                        "can read.")
    return cap


def _classify_frame(cv2, frame: np.ndarray, frame_index: int, video_time: float | None,
                    classifiers: Sequence[Classifier], tracks: Sequence[_Track], spec: CameraSpec,
                    summary: CameraSummary, emit: Callable[[dict], None]) -> tuple[list[str], bool]:
    """Runs every model on the frame and emits an event for each stable class change (with a snapshot for an
    alert when asked); returns the overlay's lines and whether an alert began on this frame."""
    lines, alert_now = [], False
    pixels = {c.preprocess: preprocess_frame(frame, c.preprocess, bgr=True) for c in classifiers}
    for c, track in zip(classifiers, tracks):
        best = c.classify_pixels(pixels[c.preprocess][None])[0].decide(spec.threshold)
        summary.last_labels[c.name] = best.label
        lines.append(f"{c.name if len(classifiers) > 1 else ''} {best.label} {best.score:.2f}".strip())
        if not track.update(best.label, spec.min_frames):
            continue
        is_alert = best.label in spec.alerts
        alert_now |= is_alert
        event = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "frame": frame_index, "model": c.name,
                 "label": best.label, "score": round(best.score, 4), "alert": is_alert}
        if video_time is not None:
            event["video_time_s"] = round(video_time, 3)
        if is_alert and spec.snapshot_dir is not None:
            snap = _save_snapshot(cv2, frame, Path(spec.snapshot_dir),
                                  f"{c.name}_{best.label}_{time.strftime('%Y%m%d-%H%M%S')}_f{frame_index}")
            if snap is not None:
                event["snapshot"] = str(snap)
        summary.events += 1
        summary.alerts += int(is_alert)
        emit(event)
    return lines, alert_now


def _show(cv2, frame: np.ndarray, lines: list[str], alert: bool, summary: CameraSummary, elapsed: float) -> bool:
    """Shows the frame with its overlay and the classification rate; True when the user closed the window
    (q or Esc)."""
    lines = [*lines, f"{summary.frames_classified / elapsed:.1f} FPS" if elapsed else ""]
    cv2.imshow("edgeclf", _overlay(cv2, frame, lines, alert))
    summary.frames_shown += 1
    return cv2.waitKey(1) & 0xFF in (ord("q"), 27)
