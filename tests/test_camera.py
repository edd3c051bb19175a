"""``edgeclf camera`` headless on a video file the test writes with OpenCV."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import class_image
from edgeclf.cli import main
from edgeclf.edge_runtime import display as display_probe
from edgeclf.edge_runtime.camera import CameraSpec, _Track, watch, why_no_window
from edgeclf.edge_runtime.classifier import Classifier
from edgeclf.edge_runtime.errors import ConfigError, DataError

cv2 = pytest.importorskip("cv2")


def _write_video(path, labels, size=64):
    """A lossless (PNG-coded) video whose frames show the generated class patterns, upscaled."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"png "), 10, (size, size))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for label in labels:
        rgb = class_image(label, rng, 16)
        frame = cv2.resize(rgb[:, :, ::-1], (size, size), interpolation=cv2.INTER_NEAREST)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def video(tmp_path):
    return _write_video(tmp_path / "clip.avi", [0] * 10 + [1] * 10 + [0, 1] * 3)


@pytest.fixture
def classifier(exported):
    _, results = exported
    return Classifier.load(next(r.path for r in results if r.path.name == "run_fp32.tflite"), threads=1)


def test_debounce_reports_a_change_after_k_frames():
    t = _Track()
    # a a a | b (reset by a) | b b b: the change to b fires on its third frame in a row, index 7
    assert [t.update(x, 3) for x in "aaababbbb"] == [False, False, True, False, False, False, False, True, False]
    assert t.current == "b"


def test_headless_video_gives_debounced_events_alerts_and_snapshots(classifier, video, tmp_path):
    events = []
    spec = CameraSpec(source=str(video), min_frames=3, alerts=("bar_v",), snapshot_dir=tmp_path / "snaps",
                      headless=True)
    summary = watch([classifier], spec, events.append)
    assert summary.stopped_by == "end of file" and summary.frames_read == 26 and summary.frames_classified == 26
    # The alternating tail never holds for 3 frames, so only two changes are reported.
    assert [(e["label"], e["frame"], e["alert"]) for e in events] == [("bar_h", 2, False), ("bar_v", 12, True)]
    assert summary.alerts == 1 and os.path.exists(events[1]["snapshot"])
    assert cv2.imread(events[1]["snapshot"]).shape == (64, 64, 3)


def test_snapshot_names_are_file_safe_for_folder_qualified_model_names(classifier, video, tmp_path):
    classifier.name = "export/run_fp32.tflite#2"  # as distinct_names makes it for clashing models
    events = []
    spec = CameraSpec(source=str(video), min_frames=3, alerts=("bar_v",), snapshot_dir=tmp_path / "snaps",
                      headless=True)
    watch([classifier], spec, events.append)
    snap = Path(events[1]["snapshot"])
    assert snap.parent == tmp_path / "snaps"
    assert re.fullmatch(r"export_run_fp32\.tflite_2_bar_v_\d{8}-\d{6}_f12\.jpg", snap.name), snap.name
    assert events[1]["model"] == "export/run_fp32.tflite#2"


def test_a_second_run_never_overwrites_the_first_runs_snapshots(classifier, video, tmp_path):
    # Frame numbers restart at 0 each run: the same alert at the same frame must not replace yesterday's evidence.
    spec = CameraSpec(source=str(video), min_frames=3, alerts=("bar_v",), snapshot_dir=tmp_path / "snaps",
                      headless=True)
    first, second = [], []
    watch([classifier], spec, first.append)
    watch([classifier], spec, second.append)
    a, b = first[1]["snapshot"], second[1]["snapshot"]
    assert a != b and os.path.exists(a) and os.path.exists(b)
    assert sorted(p.name for p in (tmp_path / "snaps").iterdir()) == sorted([Path(a).name, Path(b).name])


def test_every_n_classifies_a_subset(classifier, video):
    summary = watch([classifier], CameraSpec(source=str(video), every_n=4, min_frames=1, headless=True), lambda e: None)
    assert summary.frames_read == 26 and summary.frames_classified == 7


def test_unopenable_source_and_bad_options(classifier, tmp_path):
    with pytest.raises(DataError, match="Video file not found"):
        watch([classifier], CameraSpec(source=str(tmp_path / "none.mp4"), headless=True), lambda e: None)
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(DataError, match="Cannot open video source"):
        watch([classifier], CameraSpec(source=str(tmp_path / "notes.mp4"), headless=True), lambda e: None)
    (tmp_path / "taken").write_text("a file where the snapshot folder should go")
    with pytest.raises(ConfigError, match="Cannot create --snapshot-dir"):
        watch([classifier], CameraSpec(source=str(tmp_path / "notes.mp4"), snapshot_dir=tmp_path / "taken" / "snaps",
                                       headless=True), lambda e: None)
    with pytest.raises(ConfigError):
        CameraSpec(source="0", every_n=0)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        CameraSpec(source="0", threshold=50)


def test_an_alert_label_no_model_predicts_is_refused_before_the_source_opens(classifier, video):
    # "no-helmet" for "no_helmet" would otherwise watch for days and never fire.
    spec = CameraSpec(source=str(video), alerts=("bar_v", "bar-v"), headless=True)
    with pytest.raises(ConfigError, match=r"--alert bar-v, which no model predicts.*bar_h, bar_v"):
        watch([classifier], spec, lambda e: None)


def test_threshold_decides_two_class_models_and_events_carry_the_video_position(classifier, video):
    events = []
    watch([classifier], CameraSpec(source=str(video), min_frames=3, headless=True), events.append)
    # The clip is written at 10 frames per second: frame 12 is 1.2 s into it.
    assert [(e["label"], e["frame"], e["video_time_s"]) for e in events] == [("bar_h", 2, 0.2), ("bar_v", 12, 1.2)]
    events = []
    watch([classifier], CameraSpec(source=str(video), min_frames=3, threshold=0.0, headless=True), events.append)
    assert [(e["label"], e["frame"]) for e in events] == [("bar_v", 2)]  # P(bar_v) >= 0 on every frame


def test_lost_live_source_backs_off_and_gives_up(classifier, monkeypatch, video, caplog):
    """A live stream that drops is reopened with growing waits, saying why the last attempt failed; after
    max_reconnects it ends cleanly."""
    import edgeclf.edge_runtime.camera as cam

    class Dropping:
        def __init__(self):
            self.reads = 0

        def isOpened(self):
            return True

        def read(self):
            self.reads += 1
            return (True, np.zeros((32, 32, 3), np.uint8)) if self.reads <= 2 else (False, None)

        def release(self):
            pass

    stream = Dropping()  # after two frames it never comes back
    opened = []
    monkeypatch.setattr(cam, "_open", lambda cv2, source: opened.append(source) or (
        (stream, None) if len(opened) == 1 else (None, f"Connection refused {len(opened)}")))
    waits = []
    summary = watch([classifier], CameraSpec(source="rtsp://camera/stream", headless=True, max_reconnects=4,
                                             max_backoff=2.0), lambda e: None, sleep=waits.append)
    assert waits == [0.5, 1.0, 2.0, 2.0]
    assert len(opened) == 1 + 4 and summary.reconnects == 4 and summary.frames_read == 2
    lost = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Lost")]
    assert lost == ["Lost rtsp://camera/stream; reconnecting in 0.5 s"] + [
        f"Lost rtsp://camera/stream; reconnecting in {w} s (the last attempt: Connection refused {n})"
        for w, n in (("1.0", 2), ("2.0", 3), ("2.0", 4))]
    assert "after 4 reconnection attempts" in summary.stopped_by


def test_flapping_live_source_keeps_reconnecting(classifier, monkeypatch):
    """Consecutive failures reset when frames arrive again: a camera that flaps is never given up on."""
    import threading

    import edgeclf.edge_runtime.camera as cam

    stop = threading.Event()
    opened = []

    class Flapping:  # one good frame, then the connection drops
        def __init__(self):
            self.reads = 0

        def isOpened(self):
            return True

        def read(self):
            self.reads += 1
            ok = self.reads == 1 and not stop.is_set()
            return (True, np.zeros((32, 32, 3), np.uint8)) if ok else (False, None)

        def release(self):
            pass

    def reopen(cv2, source):
        opened.append(source)
        if len(opened) == 21:
            stop.set()  # after 20 drops, each followed by a reconnection
        return Flapping(), None

    monkeypatch.setattr(cam, "_open", reopen)
    waits = []
    summary = watch([classifier], CameraSpec(source="0", headless=True, max_reconnects=1), lambda e: None, stop,
                    sleep=waits.append)
    assert summary.stopped_by == "stop requested" and summary.frames_read == 20 and summary.reconnects == 20
    assert set(waits) == {0.5}  # back-off restarts after every successful frame


def test_a_live_source_faster_than_the_classifier_gives_it_the_newest_frame(classifier, monkeypatch):
    """Frames a slow classifier cannot take are skipped, not queued: events stay current instead of lagging."""
    import edgeclf.edge_runtime.camera as cam

    class Fast:  # 400 frames at about 1 ms each, frame i carrying i in two colour channels; then the stream ends
        def __init__(self):
            self.reads = 0

        def isOpened(self):
            return True

        def read(self):
            if self.reads >= 400:
                return False, None
            self.reads += 1
            time.sleep(0.001)
            return True, np.full((32, 32, 3), (self.reads % 256, self.reads // 256, 0), np.uint8)  # BGR

        def release(self):
            pass

    stream = Fast()
    monkeypatch.setattr(cam, "_open", lambda cv2, source: (stream, None))
    classify = classifier.classify_pixels
    seen = []

    def slow(pixels):  # 20 ms per frame: 20 times slower than the source
        seen.append((stream.reads, int(pixels[0, 0, 0, 2]) + 256 * int(pixels[0, 0, 0, 1])))  # now RGB
        time.sleep(0.02)
        return classify(pixels)

    monkeypatch.setattr(classifier, "classify_pixels", slow)
    summary = watch([classifier], CameraSpec(source="rtsp://camera/stream", headless=True, max_reconnects=0),
                    lambda e: None)
    assert summary.frames_read == 400 and "after 0 reconnection attempts" in summary.stopped_by
    assert summary.frames_classified + summary.frames_skipped == 400
    assert summary.frames_classified < 100  # read one by one, all 400 would have been classified, ever later
    # Each classified frame was the newest the reader had: a frame or two behind the source (the bound leaves a
    # margin for a loaded machine). A real camera keeps producing while the model works; read one by one, the frames
    # waiting in its buffers would be ever older, which this pull-based fake cannot show - hence the counts above.
    assert max(reads - value for reads, value in seen[1:]) < 100


def test_cli_camera_headless_events_file(exported, video, tmp_path):
    _, results = exported
    model = next(r.path for r in results if r.path.name == "run_int8.tflite")
    events = tmp_path / "events.jsonl"
    result = CliRunner().invoke(main, ["camera", "--model", str(model), "--source", str(video), "--headless",
                                       "--events", str(events), "--alert", "bar_v"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["label"] for e in lines] == ["bar_h", "bar_v"] and lines[1]["alert"] is True
    assert json.loads(result.stderr.strip().splitlines()[-1])["summary"]["stopped_by"] == "end of file"
    typo = CliRunner().invoke(main, ["camera", "--model", str(model), "--source", str(video), "--headless",
                                     "--alert", "no_such_label", "--events", str(tmp_path / "typo.jsonl")])
    assert typo.exit_code == 2 and "no model predicts" in typo.output, typo.output
    missing = CliRunner().invoke(main, ["camera", "--model", str(model), "--source", str(tmp_path / "gone.mp4"),
                                        "--headless", "--events", str(tmp_path / "gone.jsonl")])
    assert missing.exit_code == 2 and "Video file not found" in missing.output
    assert not (tmp_path / "typo.jsonl").exists() and not (tmp_path / "gone.jsonl").exists()  # refused: no empty file
    nowhere = CliRunner().invoke(main, ["camera", "--model", str(model), "--source", str(video), "--headless",
                                        "--events", str(tmp_path / "no_dir" / "events.jsonl")])
    assert nowhere.exit_code == 2 and "is not a writable folder" in nowhere.output, nowhere.output
    again = CliRunner().invoke(main, ["camera", "--model", str(model), "--source", str(video), "--headless",
                                      "--events", str(events)])
    assert again.exit_code == 0 and len(events.read_text().splitlines()) == 4  # appended to, never replaced


def test_sigterm_ends_the_run_cleanly_with_a_summary(exported, tmp_path):
    _, results = exported
    model = next(r.path for r in results if r.path.name == "run_fp32.tflite")
    long_video = _write_video(tmp_path / "long.avi", [0] * 10 + [1] * 5000)
    proc = subprocess.Popen([sys.executable, "-m", "edgeclf.cli", "camera", "--model", str(model), "--source",
                             str(long_video), "--headless"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = json.loads(proc.stdout.readline())  # running: the first event is out
    assert first["label"] == "bar_h"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(err.strip().splitlines()[-1])["summary"]
    assert summary["stopped_by"] == "stop requested" and 0 < summary["frames_classified"] < 5010


def _xvfb_green_pixels(fbdir) -> int:
    """Saturated-green pixels (the overlay's text colour) on the virtual screen, read from Xvfb's XWD framebuffer."""
    import struct

    data = (fbdir / "Xvfb_screen0").read_bytes()
    header = struct.unpack(">25I", data[:100])
    size, width, height, bpl, ncolors = header[0], header[4], header[5], header[12], header[19]
    px = np.frombuffer(data, np.uint8, count=height * bpl, offset=size + 12 * ncolors).reshape(height, bpl)
    bgrx = px[:, : 4 * width].reshape(height, width, 4)  # 24-bit depth, 32 bits per pixel, LSB first
    return int(((bgrx[..., 1] > 200) & (bgrx[..., 0] < 80) & (bgrx[..., 2] < 80)).sum())


@contextlib.contextmanager
def _xvfb(*args):
    """A real X server (Xvfb) on a free display number, started with ``args``; skips where Xvfb is not installed."""
    import shutil

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb not installed (apt-get install xvfb)")
    # -displayfd: the server picks a free display number itself and writes it back, so two test processes
    # (pytest -n 2) never race for the same one.
    read_end, write_end = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp", *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(write_end,))
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        ready, _, _ = select.select([pipe], [], [], 10)
        number = pipe.readline().strip() if ready else ""
    if not number.isdigit():
        server.kill()
        pytest.skip("Xvfb did not start")
    try:
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def virtual_display(tmp_path):
    """A real X server whose framebuffer the test can read."""
    fbdir = tmp_path / "fb"
    fbdir.mkdir()
    with _xvfb("-screen", "0", "320x240x24", "-fbdir", str(fbdir)) as display:
        yield display, fbdir


def test_window_shows_frames_with_the_overlay_on_a_real_display(exported, tmp_path, virtual_display):
    """Without --headless on a display: frames appear in a window with the label drawn on them; SIGTERM ends it.

    The window is OpenCV's Qt 5.15 HighGUI. On a bare X server (no window manager) Qt now and then never paints a
    new window at all: it is mapped, receives its Expose event, imshow/waitKey go on, and the screen stays black
    (seen on about 1 launch in 20 of a plain ``cv2.imshow`` loop on a fresh Xvfb, and about 1 in 6 here). So the
    camera is launched up to four times; the test fails if the overlay never appears, and says what it saw.
    """
    display, fbdir = virtual_display
    _, results = exported
    model = next(r.path for r in results if r.path.name == "run_fp32.tflite")
    clip = _write_video(tmp_path / "long.avi", [0] * 10 + [1] * 5000, size=160)
    env = {**os.environ, "DISPLAY": display}
    env.pop("QT_QPA_PLATFORM", None)  # about the real X display, whatever the caller's Qt setting
    attempts = []
    for attempt in range(4):
        assert _xvfb_green_pixels(fbdir) == 0  # nothing left on the screen by an earlier attempt
        events, stderr = tmp_path / f"events{attempt}.jsonl", tmp_path / f"stderr{attempt}.txt"
        with stderr.open("w") as err_file:
            proc = subprocess.Popen([sys.executable, "-m", "edgeclf.cli", "camera", "--model", str(model),
                                     "--source", str(clip), "--events", str(events)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=err_file)
        started, seen = time.monotonic(), {}
        try:
            # An attempt ends when both are seen, or 10 s after the first event with no overlay (a stuck window).
            while (time.monotonic() < min(started + 60, started + seen.get("event", 60) + 10) and proc.poll() is None
                   and len(seen) < 2):
                if _xvfb_green_pixels(fbdir) > 50:
                    seen.setdefault("overlay", round(time.monotonic() - started, 1))
                if events.exists() and events.read_text().strip():
                    seen.setdefault("event", round(time.monotonic() - started, 1))
                time.sleep(0.1)
            if "overlay" in seen:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
                break
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
        state = "still running" if proc.returncode in (None, -signal.SIGKILL) else f"exited with {proc.returncode}"
        attempts.append(f"attempt {attempt + 1}: after {time.monotonic() - started:.0f} s the camera ({state}) had "
                        f"shown {seen or 'nothing'}; stderr ends: {stderr.read_text()[-300:]!r}")
        time.sleep(0.5)  # the killed client's window goes away
    else:
        pytest.fail("no overlay text on the screen in 4 launches:\n" + "\n".join(attempts))
    err = stderr.read_text()
    assert proc.returncode == 0, err
    summary = json.loads(err.strip().splitlines()[-1])["summary"]
    assert summary["window"] is True and summary["stopped_by"] == "stop requested"
    assert 0 < summary["frames_shown"] == summary["frames_classified"]
    assert json.loads(events.read_text().splitlines()[0])["label"] == "bar_h"


def test_headless_summary_says_no_window(classifier, video):
    summary = watch([classifier], CameraSpec(source=str(video), headless=True), lambda e: None)
    assert summary.window is False and summary.frames_shown == 0 and summary.to_dict()["window"] is False


def _bundled_qt() -> bool:
    gui = next((line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")), "")
    return "QT" in gui.upper() and (Path(cv2.__file__).parent / "qt" / "plugins" / "platforms").is_dir()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X displays and pip's Qt HighGUI are Linux's")
def test_why_no_window_names_displays_and_qt_platforms_that_cannot_show_one(monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert "no display" in why_no_window()
    if not _bundled_qt():
        pytest.skip("this OpenCV is not pip's Qt build")
    monkeypatch.setenv("DISPLAY", ":4242")  # nothing listens there
    assert why_no_window() == "no X server answers at DISPLAY=:4242"
    monkeypatch.setenv("DISPLAY", "localhost:4242.0")  # SSH-forwarding form: TCP port 10242
    assert why_no_window() == "no X server answers at DISPLAY=localhost:4242.0"
    # Something listening on X's socket for display 4243 that never answers the handshake (a hung server).
    monkeypatch.setattr(display_probe, "_X_HANDSHAKE_TIMEOUT_S", 0.5)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind("\0/tmp/.X11-unix/X4243")
    listener.listen()
    try:
        monkeypatch.setenv("DISPLAY", ":4243")
        assert why_no_window() == "the X server at DISPLAY=:4243 accepts connections but does not answer"
        monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
        assert why_no_window().startswith("QT_QPA_PLATFORM=offscreen cannot show a window here")
        monkeypatch.delenv("QT_QPA_PLATFORM")
        monkeypatch.delenv("DISPLAY")
        monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
        assert "xcb needs DISPLAY" in why_no_window()
    finally:
        listener.close()
    monkeypatch.setenv("DISPLAY", "nonsense")
    assert why_no_window() == "DISPLAY=nonsense is not an X display name ([host]:number[.screen], e.g. :0)"


def _xauthority(path, number: int, cookie: bytes) -> None:
    """An Xauthority file with one MIT-MAGIC-COOKIE-1 entry for display ``number`` on any host (Xau's format)."""
    def field(data: bytes) -> bytes:
        return len(data).to_bytes(2, "big") + data

    path.write_bytes(b"\xff\xff" + field(b"") + field(str(number).encode()) + field(b"MIT-MAGIC-COOKIE-1")
                     + field(cookie))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X displays and pip's Qt HighGUI are Linux's")
def test_an_x_server_that_refuses_this_client_means_no_window_not_an_abort(exported, video, tmp_path,
                                                                           monkeypatch):
    """The usual state of a container handed the host's DISPLAY: the X server wants a cookie this client lacks, and
    OpenCV's Qt aborts the process (SIGABRT) at the first imshow. The camera must say why and run headless."""
    if not _bundled_qt():
        pytest.skip("this OpenCV is not pip's Qt build")
    for name in ("WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    cookies, no_cookie = tmp_path / "Xauthority", tmp_path / "empty"
    no_cookie.touch()
    with _xvfb("-auth", str(cookies), "-screen", "0", "64x64x24") as display:
        _xauthority(cookies, int(display[1:]), os.urandom(16))  # read by the server at its first connection
        monkeypatch.setenv("DISPLAY", display)
        monkeypatch.setenv("XAUTHORITY", str(cookies))
        assert why_no_window() is None
        monkeypatch.setenv("QT_QPA_PLATFORM", "wayland;xcb")  # a fallback list: xcb is there
        assert why_no_window() is None
        monkeypatch.delenv("QT_QPA_PLATFORM")
        monkeypatch.setenv("DISPLAY", display + ".1")
        assert why_no_window() == f"the X server at DISPLAY={display}.1 has no such screen"
        monkeypatch.setenv("DISPLAY", display)
        monkeypatch.setenv("XAUTHORITY", str(no_cookie))
        assert why_no_window().startswith(f"the X server at DISPLAY={display} refused this client (authorisation")

        _, results = exported
        model = next(r.path for r in results if r.path.name == "run_fp32.tflite")
        proc = subprocess.run([sys.executable, "-m", "edgeclf.cli", "camera", "--model", str(model), "--source",
                               str(video)], env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [json.loads(line)["label"] for line in proc.stdout.splitlines()][:2] == ["bar_h", "bar_v"]
    summary = json.loads(proc.stderr.strip().splitlines()[-1])["summary"]
    assert summary["window"] is False and summary["stopped_by"] == "end of file"
    assert f"WARNING edgeclf.edge_runtime.camera: No window: the X server at DISPLAY={display} refused" in proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X displays and pip's Qt HighGUI are Linux's")
def test_camera_with_a_dead_display_runs_headless_instead_of_aborting(exported, video):
    """Qt aborts the process (SIGABRT) at the first imshow when DISPLAY names no X server - a stale DISPLAY over SSH
    or in a container; the camera must notice first, run headless and finish with its summary."""
    _, results = exported
    model = next(r.path for r in results if r.path.name == "run_fp32.tflite")
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    for display, qt in ((":4242", None), (":4242", "offscreen")):
        run_env = {**env, "DISPLAY": display, **({"QT_QPA_PLATFORM": qt} if qt else {})}
        proc = subprocess.run([sys.executable, "-m", "edgeclf.cli", "camera", "--model", str(model), "--source",
                               str(video)], env=run_env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert [json.loads(line)["label"] for line in proc.stdout.splitlines()][:2] == ["bar_h", "bar_v"]
        summary = json.loads(proc.stderr.strip().splitlines()[-1])["summary"]
        assert summary["window"] is False and summary["stopped_by"] == "end of file"
        reason = "no X server answers at DISPLAY=:4242" if qt is None else "QT_QPA_PLATFORM=offscreen cannot"
        assert f"WARNING edgeclf.edge_runtime.camera: No window: {reason}" in proc.stderr


def test_a_source_that_will_not_open_says_why_in_one_line(video):
    """OpenCV's stderr lines (one or more per backend tried) become the cause in the error, not printed; a file
    that opens comes back with no cause."""
    from conftest import run_python

    out = run_python(f"""
import json
from edgeclf.edge_runtime.camera import _cv2, _open
cv2 = _cv2()
causes = [_open(cv2, source)[1] for source in ("http://127.0.0.1:9/x.mjpg", "rtsp://127.0.0.1:9/x")]
cap, cause = _open(cv2, {str(video)!r})
print(json.dumps({{"causes": causes, "opened": bool(cap is not None and cap.read()[0]), "cause": cause}}))
""")
    seen = json.loads(out.stdout)
    assert seen["opened"] and seen["cause"] is None
    assert [c.split(" failed: ")[-1] for c in seen["causes"]] == ["Connection refused"] * 2, seen["causes"]
    assert all(c.startswith("Connection to tcp://127.0.0.1:9") for c in seen["causes"])
    assert "WARN" not in out.stderr and "tcp @" not in out.stderr, out.stderr  # condensed, not printed


def test_a_camera_index_that_will_not_open_is_explained_from_dev(tmp_path, monkeypatch):
    import edgeclf.edge_runtime.camera as cam

    monkeypatch.setattr(cam.sys, "platform", "linux")
    assert cam._open_failure("0", [], tmp_path) == f"{tmp_path}/video0 does not exist: this machine has no " \
                                                    "/dev/video* camera device"
    for n in (10, 2, 3):
        (tmp_path / f"video{n}").write_bytes(b"")
    (tmp_path / "video-meta").write_bytes(b"")
    assert cam._open_failure("1", [], tmp_path).endswith(
        f"the cameras here are {tmp_path}/video2, {tmp_path}/video3, {tmp_path}/video10")
    assert cam._open_failure("2", ["[ WARN:0@0.01] global cap_v4l.cpp:914 open VIDEOIO(V4L2:/dev/video2)"],
                             tmp_path) is None  # there but not openable for a reason /dev does not show
    monkeypatch.setattr(cam.os, "access", lambda path, mode: False)
    assert cam._open_failure("2", [], tmp_path).startswith(f"no permission to open {tmp_path}/video2 (add the user")
    ffmpeg = "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d1c0a2b440] moov atom not found"
    assert cam._open_failure("clip.mp4", ["[ WARN:0@0.01] global cap.cpp:435 open", ffmpeg], tmp_path) == \
        "moov atom not found"
