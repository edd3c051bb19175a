"""Whether ``edgeclf camera`` can show a window here, and if not, why - without letting OpenCV's Qt find out.

pip's OpenCV bundles a Qt that aborts the whole process at the first ``imshow`` when it cannot reach a display, so
the display is probed first, as Qt would use it: the Qt platform, then the X server's socket and its handshake.
"""

from __future__ import annotations

import ctypes
import os
import re
import socket
import sys
import threading
from pathlib import Path


def why_no_window() -> str | None:
    """Why no window can be shown here, or None when one can.

    A window needs a display, OpenCV built with a GUI backend and, for the Qt that pip's opencv-python bundles, a
    Qt platform plugin that reaches the display: asked for a platform it lacks (``QT_QPA_PLATFORM=offscreen`` or
    ``wayland``, or X's ``xcb`` with no ``DISPLAY``), that Qt aborts the whole process at the first ``imshow``.
    """
    linux = sys.platform.startswith("linux")
    if linux and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    from .camera import _cv2  # here: camera imports this module

    cv2 = _cv2()
    gui = next((line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")), "")
    if "NONE" in gui.upper():
        return "this OpenCV has no GUI backend (opencv-python-headless?)"
    bundled = Path(cv2.__file__).parent / "qt" / "plugins" / "platforms"
    if linux and "QT" in gui.upper() and bundled.is_dir():
        return _qt_platform_problem(sorted(p.name[4:].split(".so")[0] for p in bundled.glob("libq*.so*")))
    return None


# The display each on-screen Qt platform plugin draws on; offscreen, minimal and vnc show nothing on this machine.
_QT_DISPLAYS = {"xcb": "DISPLAY", "wayland": "WAYLAND_DISPLAY", "wayland-egl": "WAYLAND_DISPLAY", "eglfs": None,
                "linuxfb": None}


def _qt_platform_problem(available: list[str]) -> str | None:
    """None when one of the Qt platforms asked for (``QT_QPA_PLATFORM``, a ``;`` list; default xcb) is among the
    bundled plugins ``available`` and draws on a display that is there; otherwise why not."""
    asked = os.environ.get("QT_QPA_PLATFORM", "")
    wanted = [entry.split(":")[0].strip() for entry in asked.split(";") if entry.strip()] or ["xcb"]
    for name in wanted:
        if name not in available or name not in _QT_DISPLAYS:
            continue
        display = os.environ.get(_QT_DISPLAYS[name]) if _QT_DISPLAYS[name] else "-"
        if name == "xcb" and display and (problem := _x_display_problem(display)):
            return problem
        if display:
            return None
    setting = f"QT_QPA_PLATFORM={asked}" if asked else "the default Qt platform xcb"
    return (f"{setting} cannot show a window here (OpenCV's Qt has the platform plugins {', '.join(available)}; xcb "
            "needs DISPLAY)")


def _x_display_problem(display: str) -> str | None:
    """Why an X client cannot open ``display`` (``[host]:N[.S]``), or None when it can.

    First whether anything listens where the client would connect (X's Unix socket for a local display, abstract then
    the file; TCP port 6000+N for a host, SSH's ``localhost:10``), then the connection and handshake Qt's xcb plugin
    makes, with the same libxcb: a server that refuses this client (no cookie in ``XAUTHORITY``, ``xhost`` closed -
    the usual state of a container handed the host's ``DISPLAY``) makes that Qt abort the whole process.
    """
    match = re.fullmatch(r"(?P<host>[^:/]*):(?P<number>\d+)(?:\.\d+)?", display)
    if match and not _x_listener(match["host"], int(match["number"])):  # other forms (tcp/host:N) left to libxcb
        return f"no X server answers at DISPLAY={display}"
    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return "libxcb.so.1, which OpenCV's Qt needs to reach X, is not installed (apt-get install libxcb1)"
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    xcb.xcb_get_setup.restype = ctypes.c_void_p
    xcb.xcb_get_setup.argtypes = [ctypes.c_void_p]
    xcb.xcb_setup_roots_length.argtypes = [ctypes.c_void_p]
    errors: list[int] = []

    def handshake() -> None:
        screen = ctypes.c_int(0)
        connection = xcb.xcb_connect(os.fsencode(display), ctypes.byref(screen))
        error = xcb.xcb_connection_has_error(connection)
        if not error and screen.value >= xcb.xcb_setup_roots_length(xcb.xcb_get_setup(connection)):
            error = _XCB_CONN_CLOSED_INVALID_SCREEN  # libxcb leaves this to the client; Qt aborts on it
        errors.append(error)
        xcb.xcb_disconnect(connection)

    # A listener that never answers (a hung server, a dead SSH forward) would block xcb_connect for good.
    thread = threading.Thread(target=handshake, name="x-handshake", daemon=True)
    thread.start()
    thread.join(_X_HANDSHAKE_TIMEOUT_S)
    if not errors:
        return f"the X server at DISPLAY={display} accepts connections but does not answer"
    if errors[0] == _XCB_CONN_CLOSED_PARSE_ERR:
        return f"DISPLAY={display} is not an X display name ([host]:number[.screen], e.g. :0)"
    if errors[0] == _XCB_CONN_CLOSED_INVALID_SCREEN:
        return f"the X server at DISPLAY={display} has no such screen"
    if errors[0] and match is None:  # not known to be listening
        return (f"cannot open DISPLAY={display}: no X server answers there, or it refused this client (a cookie for "
                "it in XAUTHORITY, or 'xhost +local:' on its side)")
    if errors[0]:
        return (f"the X server at DISPLAY={display} refused this client (authorisation, usually: a cookie for it in "
                "XAUTHORITY, or 'xhost +local:' on its side)")
    return None


_X_HANDSHAKE_TIMEOUT_S = 5.0
_XCB_CONN_CLOSED_PARSE_ERR, _XCB_CONN_CLOSED_INVALID_SCREEN = 5, 6  # xcb_connection_has_error codes (xcb.h)


def _x_listener(host: str, number: int) -> bool:
    """Whether something listens where an X client connects for display ``number`` on ``host`` ('' or unix: local)."""
    if host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{number}"
        for address in ["\0" + path] * sys.platform.startswith("linux") + [path]:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                try:
                    sock.connect(address)
                    return True
                except OSError:
                    continue
        return False
    try:
        socket.create_connection((host, 6000 + number), timeout=1.0).close()
        return True
    except OSError:
        return False
