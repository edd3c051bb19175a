"""Atomic file writes: a temporary file in the same folder, then a rename, so nothing is left half-written."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

# mkstemp creates 0600 files; finished files get the permissions a plain open() would give them.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def ensure_writable_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Creates ``path`` if needed and checks a file can be written in it, before any long work starts.

    Raises:
        ConfigError: Naming the folder, why it cannot be written, and the option to change.
    """
    from edgeclf.edge_runtime.errors import ConfigError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".edgeclf-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"Cannot write to {path}: {exc.strerror or exc}. Choose a writable {option}.") from None
    return path


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it onto ``path`` if the block succeeds.

    Args:
        path: The final destination.
        suffix: Suffix the temporary name must end with (Keras insists on ``.keras``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` atomically, as UTF-8.

    A character UTF-8 cannot hold (a lone surrogate from a file name that is not UTF-8) is written as a backslash
    escape rather than failing the write at the end of a long run.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace")


def write_json(path: str | os.PathLike, obj) -> None:
    """Writes ``obj`` as indented JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | os.PathLike, rows: Sequence[dict], fields: Sequence[str]) -> None:
    """Writes dict rows as CSV atomically (missing keys left empty; unencodable characters escaped, as
    ``write_text`` does)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
