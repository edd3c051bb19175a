"""Atomic file writes: a temporary file in the same folder, then a rename, so nothing is left half-written."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
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
    # The process id in the name tells a later run whether the writer is gone (``remove_stale``).
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=".part" + suffix, dir=path.parent)
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


TMP_PREFIX = ".edgeclf-tmp-"
# What edgeclf leaves behind when killed mid-write (kill -9, a power cut): its working folders and atomic_path's
# partial files, each named with the id of the process that made it.
_LEFTOVER = re.compile(r"^\.edgeclf-tmp-(\d+)-|^\..+\.pid(\d+)\.[^.]*\.part")


def work_dir(folder: str | os.PathLike) -> tempfile.TemporaryDirectory:
    """A hidden working folder inside ``folder`` (not the system's temporary folder, where a killed run's leftovers
    would go unnoticed), removed when the block ends and by the next run if this process is killed."""
    return tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=folder)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(folder: str | os.PathLike) -> list[str]:
    """Removes leftovers of edgeclf processes that are no longer running (``work_dir`` folders, ``atomic_path``'s
    partial files) from ``folder``; returns their names. Nothing of another program's naming is touched."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _LEFTOVER.match(entry.name)
        if not m or _running(int(m.group(1) or m.group(2))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return removed


def clean_leftovers(folder: str | os.PathLike, reporter) -> None:
    """``remove_stale`` on ``folder`` (when it exists), saying on ``reporter`` what it removed."""
    stale = remove_stale(folder) if Path(folder).is_dir() else []
    if stale:
        reporter.stage(f"Removed {len(stale)} leftover(s) of an interrupted edgeclf run from {folder}: "
                       + ", ".join(stale[:3]) + (" ..." if len(stale) > 3 else ""))
