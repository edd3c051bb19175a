"""Keeps the runtimes' unconditional native log lines off the user's terminal without losing anything else.

LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." for every interpreter, and TensorFlow prints
absl and device-probe lines at import before any log level applies; neither has an API to turn them off. The
context manager below points file descriptor 2 at a temporary file for the duration of a short call (a model
load, an import), then writes back every captured line that is not one of the named notices.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence


@contextlib.contextmanager
def quiet_native_log(notices: Sequence[str]) -> Iterator[None]:
    """Drops captured stderr lines that contain any of ``notices``; passes every other line on afterwards.

    Only for short calls: whatever native code writes in the block reaches the terminal when the block ends.
    Where stderr is not a real file descriptor (an IDE console, a test runner's capture) or no temporary file can
    be made, nothing is redirected.
    """
    try:
        fd = sys.stderr.fileno()
        capture = tempfile.TemporaryFile()  # a device without a writable temp folder just keeps the notices
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines()
            kept = [line for line in lines if not any(notice in line for notice in notices)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
