"""Drift statistics on simulated line frames: a lighting change and a camera knocked
out of focus raise the alarm within the window; the unchanged line raises none."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from inspector.config import DriftSettings
from inspector.detect.drift import DriftMonitor, frame_stats, psi
from inspector.events import Detection
from inspector.sim import ConveyorScene, SceneConfig

W, H = 320, 180  # as the worker decodes a 1280x720 frame for a 320 model (1/4 scale)


@pytest.fixture(scope="module")
def line_frames() -> list[np.ndarray]:
    """900 frames of one camera's line: 60 s at 15 fps of moving parts and defects."""
    scene = ConveyorScene(
        SceneConfig(seed=4242, width=W, height=H, defect_rate=0.3, clip_seconds=60)
    )
    return [scene.render(i)[0] for i in range(900)]


def detections_of(img: np.ndarray) -> list[Detection]:
    return []  # the image statistics are what these scenarios move


def run(
    frames: list[np.ndarray], change: Callable[[np.ndarray], np.ndarray] | None, at: int
) -> tuple[list[tuple[int, str]], DriftMonitor]:
    mon = DriftMonitor(DriftSettings(window=200, check_every=25))
    raised: list[tuple[int, str]] = []
    for i, img in enumerate(frames):
        if change is not None and i >= at:
            img = change(img)
        for c in mon.add("cam-1", "1", frame_stats(img, detections_of(img))):
            if c.state == "raised":
                raised.append((i, c.statistic))
    return raised, mon


def test_an_unchanged_line_raises_nothing(line_frames: list[np.ndarray]) -> None:
    raised, mon = run(line_frames, None, 0)
    assert raised == [], raised
    cam = mon.cameras[("cam-1", "1")]
    assert not cam.active and cam.last_psi, cam.last_psi


def test_a_lighting_change_raises_brightness_within_the_window(
    line_frames: list[np.ndarray],
) -> None:
    def dim(img: np.ndarray) -> np.ndarray:  # a lamp fails: 40 % less light
        return cv2.convertScaleAbs(img, alpha=0.6, beta=0)

    raised, _ = run(line_frames, dim, 500)
    first = {s: i for i, s in reversed(raised)}
    assert "brightness" in first, raised
    assert 500 <= first["brightness"] <= 500 + 200, first


def test_a_camera_out_of_focus_raises_sharpness_within_the_window(
    line_frames: list[np.ndarray],
) -> None:
    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (0, 0), 2.5)

    raised, _ = run(line_frames, blur, 500)
    first = {s: i for i, s in reversed(raised)}
    assert "sharpness" in first, raised
    assert 500 <= first["sharpness"] <= 500 + 200, first
    assert "brightness" not in first, "a blur is not a lighting change"


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 2000), rng.normal(0, 1, 2000)
    assert psi(a, b) < 0.05
    assert psi(a, rng.normal(1.5, 1, 2000)) > 1.0
    assert psi(np.zeros(100), np.zeros(100)) < 0.01
    assert psi(np.zeros(100), np.ones(100)) > 1.0


def test_a_new_model_version_starts_a_new_reference() -> None:
    mon = DriftMonitor(DriftSettings(window=20, check_every=5))
    img = np.full((H, W, 3), 100, np.uint8)
    for _ in range(30):
        mon.add("cam-1", "1", frame_stats(img, []))
    assert len(mon.cameras[("cam-1", "1")].reference) == 20
    mon.add("cam-1", "2", frame_stats(img, []))
    assert list(mon.cameras) == [("cam-1", "2")]
    assert len(mon.cameras[("cam-1", "2")].reference) == 1


def test_a_full_resolution_frame_is_measured_on_its_reduced_copy() -> None:
    """A parts line decodes its frames at full size; its drift statistics are taken on
    the reduced copy the locator sees (as a frame line's 1/4 decode), while box areas
    stay shares of the full frame its detections are measured in."""
    from inspector.events import Box

    full = ConveyorScene(SceneConfig(seed=77, defect_rate=0.5, clip_seconds=4)).render(10)[0]
    small = np.asarray(cv2.resize(full, (320, 180), interpolation=cv2.INTER_AREA), np.uint8)
    det = [Detection(cls="part", score=0.9, box=Box(x1=100, y1=100, x2=420, y2=420))]
    on_full = frame_stats(full, det).numeric
    on_small = frame_stats(small, det, boxes_in=(1280, 720)).numeric
    assert on_small["box_area"] == on_full["box_area"] == pytest.approx(320 * 320 / (1280 * 720))
    assert abs(on_small["brightness"] - on_full["brightness"]) < 1.0
    assert frame_stats(small, det).numeric["box_area"] > 1.0  # the wrong frame of reference
