"""Expanding command-line image arguments: files, folders (recursive), globs and ``-`` for stdin."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from .preprocess import IMAGE_TYPES, is_image_file

_GLOB_CHARS = set("*?[")


class _InputIdle:
    def __repr__(self) -> str:
        return "INPUT_IDLE"


INPUT_IDLE = _InputIdle()
"""Yielded among images by a source that has nothing more ready (``expand_paths(..., idle=True)`` before it waits
on stdin; any generator may yield it): ``stream_many`` then classifies and yields everything it holds instead of
waiting for more input to fill its read-ahead, so whoever feeds images one at a time gets each result back."""


def is_unmatched_pattern(item) -> bool:
    """Whether ``item`` is a glob that matched no file (``expand_paths`` passes such patterns on to be reported)."""
    return isinstance(item, str) and bool(_GLOB_CHARS & set(item)) and not os.path.exists(item)


def walk_images(folder: str | os.PathLike) -> Iterator[str]:
    """Image files under ``folder``, recursively, folder by folder in name order.

    Hidden files and folders below ``folder`` (names starting with a dot: macOS's ``._photo.jpg`` resource forks,
    ``.thumbnails/``) are left out, as shell globs leave them out; name one explicitly to use it. Linked folders
    are followed (data kept on another disk), except a link back into the walk (``ln -s . self``, ``ln -s .. up``),
    which would list the same images again: a folder already visited, or one that holds ``folder`` itself
    (``is_loop``).
    """
    top = os.path.realpath(folder)
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not is_loop(os.path.join(root, d), top, seen))
        for name in sorted(files):
            if is_listed_image(name):
                yield os.path.join(root, name)


def is_loop(path: str | os.PathLike, top: str, seen: set[str] = frozenset()) -> bool:
    """Whether the folder ``path`` inside a walk from ``top`` (a real path) leads back into it: a folder in
    ``seen``, ``top`` itself or a folder that holds it."""
    real = os.path.realpath(path)
    return real in seen or real == top or top.startswith(real.rstrip(os.sep) + os.sep)


def is_listed_image(name: str) -> bool:
    """Whether a file found in a folder is one of its images: an image type and not hidden (see ``walk_images``)."""
    return not name.startswith(".") and is_image_file(name)


def empty_folder_reason(folder: str | os.PathLike) -> str | None:
    """Why a folder given as an image source yields nothing, or None when it holds images."""
    if next(walk_images(folder), None) is not None:
        return None
    others = sorted({os.path.splitext(name)[1].lower() or name for root, dirs, files in os.walk(folder)
                     for name in files if not name.startswith(".")})
    held = f"; it holds only {', '.join(others[:5])}{' ...' if len(others) > 5 else ''} files" if others else ""
    return f"no image files in this folder or below{held}. Readable types: {IMAGE_TYPES}"


def _lines(stdin: TextIO, idle: bool = False) -> Iterator[str | _InputIdle]:
    """Lines of ``stdin`` decoded as file names are: a name that is not UTF-8 (from ``find``) still opens.

    ``idle``: read the file descriptor itself and yield ``INPUT_IDLE`` each time no whole line is ready, before
    waiting for one (POSIX pipes and terminals; other inputs are read as they are, without it).
    """
    raw = getattr(stdin, "buffer", None)
    if raw is None:  # a StringIO from a caller: already text
        yield from stdin
        return
    fd = None
    if idle:
        try:
            import select

            fd = raw.fileno()
            select.select([fd], [], [], 0)  # raises where select cannot watch it (a file on Windows)
        except (OSError, ValueError, AttributeError):
            fd = None
    if fd is None:
        for line in raw:
            yield os.fsdecode(line)
        return
    pending = b""
    while True:
        if not select.select([fd], [], [], 0)[0]:
            yield INPUT_IDLE
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            yield os.fsdecode(line + b"\n")
    if pending:
        yield os.fsdecode(pending)


def expand_paths(args: Iterable[str], stdin: TextIO | None = None, *, idle: bool = False
                 ) -> Iterator[str | _InputIdle]:
    """Yields image paths lazily, in a stable order.

    Folders are walked recursively for image files (``walk_images``: hidden files left out); globs are expanded
    (``**`` included); ``-`` reads one path per line from ``stdin``. A path that does not exist, a glob that matches
    nothing and a folder without images are yielded as they are, so the caller reports each as a failed item instead
    of silently dropping it. ``idle``: also yield ``INPUT_IDLE`` whenever stdin has no whole line ready (for
    ``stream_many``).
    """
    for arg in args:
        if arg == "-":
            if stdin is not None:
                for line in _lines(stdin, idle):
                    if line is INPUT_IDLE:
                        yield line
                        continue
                    line = line.strip()
                    if line:
                        yield line
            continue
        path = Path(arg)
        if path.is_dir():
            any_image = False
            for image in walk_images(path):
                any_image = True
                yield image
            if not any_image:
                yield arg  # reported with empty_folder_reason, not silently dropped
        elif not path.exists() and _GLOB_CHARS & set(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                yield arg  # reported as matching nothing (see is_unmatched_pattern)
            for m in matches:
                if os.path.isfile(m):
                    yield m
        else:
            yield arg
