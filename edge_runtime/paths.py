"""File names as text that can always be printed and written: some file systems hold names that are not UTF-8."""

from __future__ import annotations

import os
import unicodedata


def display_path(path: str | os.PathLike) -> str:
    """``path`` as a string that encodes to UTF-8.

    Python decodes a name that is not valid UTF-8 (``caf\\xe9.jpg`` from a Latin-1 archive) with lone surrogates,
    which a UTF-8 terminal, CSV or report cannot encode: the write fails. Such bytes are shown as ``\\xe9``
    escapes instead; every other name is returned unchanged.
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    return text


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal: East Asian wide characters (CJK, most emoji) take two, combining marks
    none. ``len`` counts characters, and a table of Chinese class names padded by it comes out ragged."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def pad(text: str, width: int) -> str:
    """``text`` left-aligned in ``width`` terminal columns (``str.ljust`` by display width)."""
    return text + " " * max(0, width - display_width(text))
