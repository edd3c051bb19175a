"""Keeps the runtimes' unconditional native log lines off the user's terminal without losing anything else.

LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." for every interpreter, and TensorFlow prints
absl and device-probe lines at import before any log level applies; neither has an API to turn them off. The
context managers below point file descriptor 2 at a file (in memory where the OS allows) for the duration of a
short call (a model load, an import), then write back every captured line that is not one of the named notices -
or hand the lines to the caller, which turns OpenCV's and FFmpeg's lines about a video source that will not open
into one cause.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence


@contextlib.contextmanager
def captured_native_log() -> Iterator[list[str]]:
    """Captures what native code writes to stderr in the block; the yielded list holds those lines afterwards.

    Nothing captured is written back: the caller passes on what it does not use. Only for short calls (a model
    load, an import, opening a video source): nothing written in the block reaches the terminal before it ends.
    Where stderr is not a real file descriptor (an IDE console, a test runner's capture) or no temporary file can
    be made, nothing is redirected and the list stays empty.
    """
    lines: list[str] = []
    try:
        fd = sys.stderr.fileno()
        capture = _capture_file()  # a device without a writable temp folder just keeps the notices
    except (AttributeError, OSError, ValueError):
        yield lines
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield lines
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            lines += capture.read().decode(errors="replace").splitlines()


def _capture_file():
    """An anonymous file in memory (Linux's ``memfd_create``), else a temporary file: ``tempfile`` and the
    ``shutil`` it imports are 6 ms of every ``edgeclf predict`` start-up, for one line of text."""
    if hasattr(os, "memfd_create"):
        try:
            return open(os.memfd_create("edgeclf-native-log"), "w+b")
        except OSError:  # a kernel without it (before 3.17), or a sandbox that forbids it
            pass
    import tempfile

    return tempfile.TemporaryFile()


def write_back(lines: Sequence[str]) -> None:
    """Writes captured lines to stderr as they would have appeared."""
    if lines:
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()


@contextlib.contextmanager
def quiet_native_log(notices: Sequence[str]) -> Iterator[None]:
    """Drops captured stderr lines that contain any of ``notices``; passes every other line on afterwards
    (see ``captured_native_log``)."""
    lines: list[str] = []
    try:
        with captured_native_log() as lines:
            yield
    finally:  # also when the call raised
        write_back([line for line in lines if not any(notice in line for notice in notices)])
