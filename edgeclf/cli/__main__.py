"""``python -m edgeclf.cli``."""

from . import run

run()
