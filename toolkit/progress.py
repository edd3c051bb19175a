"""How library code reports progress without printing: the CLI passes a Reporter that draws bars."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator

logger = logging.getLogger("edgeclf")


class Reporter:
    """Receives stage messages and progress updates. The default only logs; the CLI subclasses it.

    Attributes:
        keras_verbose: ``verbose`` value passed to ``model.fit`` (0 silent, 1 bar, 2 one line per epoch).
    """

    keras_verbose = 0

    def stage(self, message: str) -> None:
        """A new step of the job has started."""
        logger.info(message)

    def warn(self, message: str) -> None:
        """Something the user should look at, such as skipped files or leakage."""
        logger.warning(message)

    @contextmanager
    def progress(self, total: int, label: str) -> Iterator[Callable[[int], None]]:
        """Yields ``advance(n)`` for a task of ``total`` steps."""
        logger.info("%s (%d)", label, total)
        yield lambda n=1: None
