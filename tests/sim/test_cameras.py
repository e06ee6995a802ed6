"""Simulated RTSP cameras, read with OpenCV/FFmpeg the way the ingest service reads them."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from inspector.sim.cameras import SimCameraFleet, fleet_configs
from inspector.sim.clip import gst_unavailable_reason
from inspector.sim.scene import decode_frame_index

_NO_GST = gst_unavailable_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_NO_GST is not None, reason=f"no Debian GStreamer: {_NO_GST}"),
]

FPS = 15


@pytest.fixture(autouse=True)
def _ffmpeg_over_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read by OpenCV's FFmpeg backend at open time (process-wide).
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|analyzeduration;500000")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCameraFleet]:
    configs = fleet_configs(2, width=640, height=360, fps=FPS, seed=31, clip_seconds=5.0)
    with SimCameraFleet(configs, cache_dir=tmp_path_factory.mktemp("clips")) as f:
        yield f


def _open(url: str) -> cv2.VideoCapture:
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 3000,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, 1000,
        cv2.CAP_PROP_N_THREADS, 1,
    ]  # fmt: skip
    return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


def _lag(fleet: SimCameraFleet, cam: str, index: int | None) -> int:
    """Frames between the camera's wall-clock timeline and what a reader got (mod clip)."""
    assert index is not None
    n = fleet.clip(cam).n_frames
    return (_expected_index(fleet, cam) - index + 3) % n - 3


def _read_indices(cap: cv2.VideoCapture, seconds: float) -> list[int | None]:
    out: list[int | None] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ok, frame = cap.read()
        assert ok, "stream stopped"
        out.append(decode_frame_index(frame))
    return out


def _expected_index(fleet: SimCameraFleet, cam: str) -> int:
    started = fleet.stream_started_at(cam)
    assert started is not None
    return int((time.time() - started) * FPS) % fleet.clip(cam).n_frames


def test_streams_play_in_real_time_and_loop(fleet: SimCameraFleet) -> None:
    cam = "cam1"
    n = fleet.clip(cam).n_frames
    cap = _open(fleet.url(cam))
    assert cap.isOpened()
    started = time.monotonic()
    indices = _read_indices(cap, n / FPS + 1.5)
    elapsed = time.monotonic() - started
    lag = _lag(fleet, cam, indices[-1])
    cap.release()
    assert None not in indices  # a new client starts on a keyframe: every frame decodes
    ints = [i for i in indices if i is not None]
    steps = [(b - a) % n for a, b in itertools.pairwise(ints)]
    assert set(steps) == {1}, steps  # consecutive, nothing dropped or repeated
    assert any(b < a for a, b in itertools.pairwise(ints))  # wrapped around
    assert abs(len(ints) / elapsed - FPS) < 3  # real time, not as fast as possible
    # The camera timeline is anchored to stream_started_at; the reader lags by its buffering.
    assert -3 <= lag <= 1.5 * FPS, lag


def test_several_clients_share_a_camera(fleet: SimCameraFleet) -> None:
    caps = [_open(fleet.url("cam2")) for _ in range(2)]
    other = _open(fleet.url("cam1"))
    try:
        first = [_read_indices(c, 0.5)[-1] for c in caps]
        frames = [c.read()[1] for c in (*caps, other)]
    finally:
        for c in (*caps, other):
            c.release()
    a, b = first
    assert a is not None and b is not None
    assert abs(a - b) <= FPS
    assert not np.array_equal(frames[0], frames[2])  # a different scene on another camera


def test_hung_camera_times_out_and_recovers(fleet: SimCameraFleet) -> None:
    cap = _open(fleet.url("cam1"))
    assert cap.isOpened()
    _read_indices(cap, 0.3)
    fleet.hang_camera("cam1")
    try:
        started = time.monotonic()
        failed_after = None
        while time.monotonic() - started < 10:
            ok, _ = cap.read()
            if not ok:
                failed_after = time.monotonic() - started
                break
        cap.release()
        assert failed_after is not None, "reads kept succeeding from a hung server"
        assert failed_after < 6, failed_after
        healthy = _open(fleet.url("cam2"))  # other cameras are unaffected
        assert healthy.isOpened()
        assert None not in _read_indices(healthy, 0.5)
        healthy.release()
    finally:
        fleet.resume_camera("cam1")
    cap = _open(fleet.url("cam1"))
    assert cap.isOpened()
    after = _read_indices(cap, 0.5)
    cap.release()
    assert after and None not in after
    assert -3 <= _lag(fleet, "cam1", after[-1]) <= 1.5 * FPS  # on the timeline, no backlog


def test_stop_and_restart_one_camera(fleet: SimCameraFleet) -> None:
    port, old_pid = fleet.port("cam2"), fleet.pid("cam2")
    fleet.stop_camera("cam2")
    assert fleet.pid("cam2") is None and fleet.stream_started_at("cam2") is None
    refused = _open(fleet.url("cam2"))
    assert not refused.isOpened()
    fleet.restart_camera("cam2")
    assert fleet.port("cam2") == port and fleet.pid("cam2") not in (None, old_pid)
    cap = _open(fleet.url("cam2"))
    assert cap.isOpened()
    after = _read_indices(cap, 0.5)
    cap.release()
    assert after and None not in after
    assert -3 <= _lag(fleet, "cam2", after[-1]) <= 1.5 * FPS


def test_close_leaves_no_processes(fleet: SimCameraFleet) -> None:
    cache = fleet.clip("cam1").video.parent.parent  # reuse the module's clips: no rebuild
    configs = fleet_configs(2, width=640, height=360, fps=FPS, seed=31, clip_seconds=5.0)
    own = SimCameraFleet(configs, cache_dir=cache)
    own.start()
    pids = [own.pid(c) for c in own.camera_ids]
    assert None not in pids
    own.hang_camera("cam1")  # even a stopped server must go
    own.close()
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
