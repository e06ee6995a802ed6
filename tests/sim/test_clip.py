"""Clip encoding through Debian's GStreamer, and the clip cache."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import pytest

from inspector.sim.clip import cached_clip, clip_cache_dir, gst_unavailable_reason
from inspector.sim.scene import ConveyorScene, SceneConfig, decode_frame_index
from inspector.sim.truth import ClipTruth

_NO_GST = gst_unavailable_reason()
needs_gst = pytest.mark.skipif(_NO_GST is not None, reason=f"no Debian GStreamer: {_NO_GST}")


@needs_gst
def test_clip_decodes_frame_by_frame_and_is_cached(tmp_path: Path) -> None:
    cfg = SceneConfig(seed=8, width=640, height=360, clip_seconds=5.0)
    clip = cached_clip(cfg, tmp_path)
    assert clip.n_frames == ConveyorScene(cfg).n_frames
    cap = cv2.VideoCapture(str(clip.video), cv2.CAP_FFMPEG)
    indices = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (360, 640, 3)
        indices.append(decode_frame_index(frame))
    cap.release()
    assert indices == list(range(clip.n_frames))  # no B-frame reordering, nothing lost
    truth = ClipTruth.load(clip.truth)
    assert truth == ConveyorScene(cfg).clip_truth()

    started = time.monotonic()
    again = cached_clip(cfg, tmp_path)
    assert time.monotonic() - started < 0.5
    assert again == clip
    assert len([p for p in tmp_path.iterdir()]) == 1  # no leftover build directories
    other = cached_clip(SceneConfig(seed=9, width=640, height=360, clip_seconds=5.0), tmp_path)
    assert other.video != clip.video


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INSPECTOR_CACHE_DIR", str(tmp_path))
    assert clip_cache_dir() == tmp_path / "sim"
    monkeypatch.delenv("INSPECTOR_CACHE_DIR")
    assert clip_cache_dir() == Path.home() / ".cache" / "inspector" / "sim"
