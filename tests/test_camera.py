"""``edgeclf camera`` headless on a video file the test writes with OpenCV."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import class_image
from edgeclf.cli import main
from edgeclf.edge_runtime.camera import CameraSpec, _Track, watch
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


def test_every_n_classifies_a_subset(classifier, video):
    summary = watch([classifier], CameraSpec(source=str(video), every_n=4, min_frames=1, headless=True), lambda e: None)
    assert summary.frames_read == 26 and summary.frames_classified == 7


def test_unopenable_source_and_bad_options(classifier, tmp_path):
    with pytest.raises(DataError, match="Cannot open video source"):
        watch([classifier], CameraSpec(source=str(tmp_path / "none.mp4"), headless=True), lambda e: None)
    with pytest.raises(ConfigError):
        CameraSpec(source="0", every_n=0)


def test_lost_live_source_backs_off_and_gives_up(classifier, monkeypatch, video):
    """A live stream that drops is reopened with growing waits; after max_reconnects it ends cleanly."""
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
    monkeypatch.setattr(cam, "_open", lambda cv2, source: opened.append(source) or stream)
    waits = []
    summary = watch([classifier], CameraSpec(source="rtsp://camera/stream", headless=True, max_reconnects=4,
                                             max_backoff=2.0), lambda e: None, sleep=waits.append)
    assert waits == [0.5, 1.0, 2.0, 2.0]
    assert len(opened) == 1 + 4 and summary.reconnects == 4 and summary.frames_read == 2
    assert "after 4 reconnection attempts" in summary.stopped_by


def test_flapping_live_source_keeps_reconnecting(classifier, monkeypatch):
    """Consecutive failures reset when frames arrive again: a camera that flaps is never given up on."""
    import threading

    import edgeclf.edge_runtime.camera as cam

    stop = threading.Event()

    class Flapping:
        reads = 0

        def isOpened(self):
            return True

        def read(self):
            Flapping.reads += 1
            if Flapping.reads >= 40:
                stop.set()
            return (True, np.zeros((32, 32, 3), np.uint8)) if Flapping.reads % 2 else (False, None)

        def release(self):
            pass

    monkeypatch.setattr(cam, "_open", lambda cv2, source: Flapping())
    waits = []
    summary = watch([classifier], CameraSpec(source="0", headless=True, max_reconnects=1), lambda e: None, stop,
                    sleep=waits.append)
    # 40 reads alternate good/dropped: 20 frames, 20 drops, each followed by a reconnection.
    assert summary.stopped_by == "stop requested" and summary.frames_read == 20 and summary.reconnects == 20
    assert set(waits) == {0.5}  # back-off restarts after every successful frame


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
