"""Drift through a running worker: a camera whose light drops raises a brightness drift
event on the drift topic, with the statistic that moved; its unchanged neighbour none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pytest

from inspector.config import PlantConfig
from inspector.events import DriftEvent, decode
from inspector.sim import ConveyorScene, SceneConfig
from tests.detect.conftest import FramePublisher, H, W, detect_config
from tests.helpers import read, wait_for

pytestmark = pytest.mark.integration


def test_a_dimmed_camera_raises_brightness_drift_and_its_neighbour_nothing(
    make_config: Callable[..., PlantConfig], start_worker: Any
) -> None:
    # the shipped window: with 100 frames, box size and detections per frame of the
    # unchanged simulated line already crossed the thresholds (measured, seeds 11-13)
    cfg = detect_config(make_config, learn={"drift": {"window": 200, "check_every": 50}})
    scenes = {
        cam: ConveyorScene(
            SceneConfig(seed=seed, width=W, height=H, defect_rate=0.3, clip_seconds=60)
        )
        for cam, seed in (("cam-1", 11), ("cam-2", 12))
    }
    pub = FramePublisher(cfg)
    for i in range(400):
        for cam, scene in scenes.items():
            img: np.ndarray = scene.render(i * 3)[0]
            if cam == "cam-1" and i >= 200:  # a lamp fails after the reference window
                img = cv2.convertScaleAbs(img, alpha=0.6, beta=0)
            pub.publish(cam, img)
    pub.flush()
    w = start_worker(cfg)
    wait_for(lambda: w.loop.stats.records >= 800, 180, "all 800 frames judged")
    msgs = read(cfg, [cfg.topics.drift], timeout_s=10, quiet_s=2)
    events = [decode(m.value(), m.headers(), DriftEvent) for m in msgs]
    raised = [(e.camera_id, e.statistic) for e in events if e.state == "raised"]
    assert ("cam-1", "brightness") in raised, raised
    assert not [r for r in raised if r[0] == "cam-2"], raised
    b = next(e for e in events if e.camera_id == "cam-1" and e.statistic == "brightness")
    assert b.current_mean is not None and b.reference_mean is not None
    assert b.current_mean < 0.75 * b.reference_mean
    assert b.psi >= 0.25 and b.ks_pvalue is not None and b.ks_pvalue <= 0.001
    assert b.model.sha256 == w.worker.model_ref.sha256 and b.window == 200
