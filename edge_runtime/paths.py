"""File names as text that can always be printed and written: some file systems hold names that are not UTF-8."""

from __future__ import annotations

import os
import re
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


# Bidirectional formatting characters: an override (U+202E) makes a terminal show "gpj.exe" for "exe.jpg".
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """``text`` safe to show on a terminal: control characters (ESC, CR, BEL...) and bidirectional formatting
    characters appear as ``\\x1b`` / ``\\u202e`` escapes, so a class name or file name cannot move the cursor,
    clear the screen, set the clipboard (OSC 52) or the window title, or reorder what is shown."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif ch in _BIDI or ch in ("\u2028", "\u2029"):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


# scheme://user:password@host or scheme://token@host, anywhere in a text (a source, an error, a relayed log line).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s/?#]+)@")
# Secrets passed as query parameters (?password=..., &token=...), common in camera and storage URLs.
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:password|passwd|pwd|pass|token|access_token|api_key|apikey|key|secret|"
                           r"auth|signature|sig|x-amz-signature|x-amz-credential|x-goog-signature)=)[^&#\s]*")


def mask_credentials(text: str) -> str:
    """``text`` with the credentials of every URL in it masked: ``rtsp://admin:secret@cam/s`` becomes
    ``rtsp://admin:***@cam/s``, ``https://TOKEN@host/`` becomes ``https://***@host/``, and secret query
    parameters (``password=``, ``token=``, ``sig=``...) keep their name only."""
    if "://" not in text and "=" not in text:
        return text

    def userinfo(m: re.Match) -> str:
        user, sep, _ = m.group(2).partition(":")
        return f"{m.group(1)}{user}:***@" if sep else f"{m.group(1)}***@"

    return _SECRET_QUERY.sub(lambda m: m.group(1) + "***", _USERINFO.sub(userinfo, text))


def safe_text(text: str) -> str:
    """``text`` as edgeclf shows anything from outside: credentials masked, control characters escaped."""
    return printable(mask_credentials(text))
