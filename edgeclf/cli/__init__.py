"""The ``edgeclf`` command line. It parses options, builds specs and calls the library; nothing else.

One module per command family; ``core`` holds what they share. Commands that need TensorFlow import it when they
run, so ``edgeclf --help`` works with only the runtime installed.
"""

from __future__ import annotations

import os
import sys

from . import bench, camera, export, info, predict, train  # noqa: F401  (each registers its commands on main)
from .core import _run, _write_all, main, state  # noqa: F401
from .export import _print_export_summary, _rejection_advice  # noqa: F401
from .predict import _PredictionWriter  # noqa: F401


def run() -> None:
    """The ``edgeclf`` console command: ``main``, then, after a command that has finished all its work
    (``predict``), an exit that skips tearing the interpreter down.

    Python's own exit unloads modules and frees LiteRT's interpreter: 15 ms of a 0.17 s one-image ``predict``
    (9 %) that a script calling it once per file pays every time, and nothing is left for it to do. Anything
    other than that command's normal end - an error, Ctrl-C, a reader gone from the pipe - exits as usual.
    ``main`` itself (``CliRunner``, an embedding program) never exits this way.
    """
    state.finished = False
    try:
        main()
    except SystemExit as exc:
        if not state.finished or not (exc.code is None or isinstance(exc.code, int)):
            raise
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):  # a reader gone after all: Python's own exit reports it
            raise exc from None
        os._exit(exc.code or 0)

