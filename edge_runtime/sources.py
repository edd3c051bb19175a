"""Expanding command-line image arguments: files, folders (recursive), globs and ``-`` for stdin."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from .preprocess import IMAGE_TYPES, is_image_file

_GLOB_CHARS = set("*?[")


def is_unmatched_pattern(item) -> bool:
    """Whether ``item`` is a glob that matched no file (``expand_paths`` passes such patterns on to be reported)."""
    return isinstance(item, str) and bool(_GLOB_CHARS & set(item)) and not os.path.exists(item)


def walk_images(folder: str | os.PathLike) -> Iterator[str]:
    """Image files under ``folder``, recursively, folder by folder in name order.

    Hidden files and folders below ``folder`` (names starting with a dot: macOS's ``._photo.jpg`` resource forks,
    ``.thumbnails/``) are left out, as shell globs leave them out; name one explicitly to use it.
    """
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if is_listed_image(name):
                yield os.path.join(root, name)


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


def _lines(stdin: TextIO) -> Iterator[str]:
    """Lines of ``stdin`` decoded as file names are: a name that is not UTF-8 (from ``find``) still opens."""
    raw = getattr(stdin, "buffer", None)
    if raw is None:  # a StringIO from a caller: already text
        yield from stdin
        return
    for line in raw:
        yield os.fsdecode(line)


def expand_paths(args: Iterable[str], stdin: TextIO | None = None) -> Iterator[str]:
    """Yields image paths lazily, in a stable order.

    Folders are walked recursively for image files (``walk_images``: hidden files left out); globs are expanded
    (``**`` included); ``-`` reads one path per line from ``stdin``. A path that does not exist, a glob that matches
    nothing and a folder without images are yielded as they are, so the caller reports each as a failed item instead
    of silently dropping it.
    """
    for arg in args:
        if arg == "-":
            if stdin is not None:
                for line in _lines(stdin):
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
