"""Data capture for labelling through a running worker, and the export CVAT / Label
Studio import: rate-limited per hour, pre-annotated, and readable by our own importer."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inspector.bus.store import connect
from inspector.config import PlantConfig
from inspector.dataset.exporters import export_capture
from inspector.dataset.importers import import_dataset
from inspector.detect.capture import capture_key
from tests.detect.conftest import FramePublisher, detect_config
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def test_near_threshold_frames_are_captured_within_the_hourly_budget_and_export(
    make_config: Callable[..., PlantConfig],
    start_worker: Any,
    sim_frames: list[np.ndarray],
    tmp_path: Path,
) -> None:
    cap = tmp_path / "capture"
    cfg = detect_config(
        make_config,
        learn={
            "drift": {"enabled": False},
            "capture": {
                "enabled": True,
                "dir": str(cap),
                "near_threshold_margin": 1.0,  # every detection of a rule's class is "near"
                "near_threshold_per_hour": 5,
                "random_rate": 0.0,
            },
        },
    )
    pub = FramePublisher(cfg)
    for i, img in enumerate(sim_frames[:30]):
        pub.publish("cam-1" if i % 2 else "cam-2", img)
    pub.flush()
    w = start_worker(cfg)
    wait_for(lambda: w.loop.stats.records >= 30, 90, "30 frames judged")

    records = [json.loads(p.read_text()) for p in sorted(cap.glob("*.json"))]
    assert len(records) == 5, "the hourly budget of the strategy"
    assert len(list(cap.glob("*.jpg"))) == 5 and not list(cap.glob(".*.tmp"))
    asked = int(
        connect(cfg.redis).get(capture_key(cfg.redis.key_prefix, "near_threshold", time.time()))
        or 0
    )
    assert asked > 5, "more frames qualified than the budget let through"
    for r in records:
        assert r["strategy"] == "near_threshold" and r["predictions"]
        assert r["model"]["sha256"] == w.worker.model_ref.sha256
        assert "scratch" in r["classes"]  # the model's full class list, for labellers

    yolo = export_capture(cap, "yolo", tmp_path / "yolo")
    assert yolo["images"] == 5 and yolo["boxes"] == sum(len(r["predictions"]) for r in records)
    # what we export, our own strict importer accepts (boxes inside images, known classes)
    back = import_dataset(tmp_path / "yolo", "yolo", tmp_path / "yolo-back", val_fraction=0.0)
    assert sum(back.images.values()) == 5
    coco = export_capture(cap, "coco", tmp_path / "coco")
    back = import_dataset(tmp_path / "coco", "coco", tmp_path / "coco-back", val_fraction=0.0)
    assert sum(back.images.values()) == 5 and coco["boxes"] == yolo["boxes"]
    assert sum(n for per in back.boxes.values() for n in per.values()) == coco["boxes"]
