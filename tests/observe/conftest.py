"""Events as the pipeline puts them on the real broker, and evidence frames in the real Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np
import pytest

from inspector.bus.kafka import make_producer
from inspector.config import PlantConfig
from inspector.events import (
    Box,
    CameraStatusEvent,
    Detection,
    Finding,
    Payload,
    Timings,
    VerdictEvent,
    encode,
    verdict_id_for,
)

TWO_LINES: dict[str, Any] = {
    "lines": [
        {
            "id": "line-1",
            "name": "Line One",
            "cameras": [
                {"id": "cam-1", "url": "rtsp://127.0.0.1:8554/cam-1"},
                {"id": "cam-2", "url": "rtsp://127.0.0.1:8554/cam-2"},
            ],
        },
        {
            "id": "line-2",
            "name": "Line Two",
            "cameras": [{"id": "cam-3", "url": "rtsp://127.0.0.1:8554/cam-3"}],
        },
    ],
}

SCRATCH_BOX = Box(x1=200, y1=120, x2=330, y2=200)


def part_jpeg(width: int = 640, height: int = 360) -> bytes:
    """A grey conveyor with a plate on it: plain enough to check drawn boxes by colour."""
    img = np.full((height, width, 3), 90, np.uint8)
    cv2.rectangle(img, (150, 80), (480, 280), (200, 200, 200), -1)
    cv2.line(img, (220, 150), (310, 170), (60, 60, 60), 3)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(buf)


def verdict(
    line: str = "line-1",
    camera: str = "cam-1",
    seq: int = 0,
    kind: str = "PASS",
    cls: str | None = None,
    evidence_key: str | None = None,
    at: float | None = None,
    latency_s: float = 0.12,
    run: str | None = None,
    annotated_key: str | None = None,
    frame_id: str | None = None,
) -> VerdictEvent:
    """A verdict as a worker emits it. Evidence is read from the keys derived from the
    frame id (``<prefix>:frame|evidence:<camera>:<run>:<seq>``), so a test that stores
    evidence passes the ``run`` it stored it under."""
    at = time.time() if at is None else at
    frame_id = frame_id or f"{camera}:{run or uuid.uuid4().hex[:6]}:{seq}"
    findings = []
    detections = [Detection(cls="part", score=0.97, box=Box(x1=150, y1=80, x2=480, y2=280))]
    if cls is not None:
        findings = [
            Finding(cls=cls, score=0.88, box=SCRATCH_BOX, severity="major", rule=f"class:{cls}")
        ]
        detections.append(Detection(cls=cls, score=0.88, box=SCRATCH_BOX))
    rule = {"PASS": "pass", "FAIL": f"class:{cls}", "FAULT": "fault:expired"}[kind]
    return VerdictEvent(
        verdict_id=verdict_id_for(frame_id),
        frame_id=frame_id,
        camera_id=camera,
        line_id=line,
        seq=seq,
        verdict=kind,
        rule=rule,
        findings=findings,
        detections=detections if kind != "FAULT" else [],
        timings=Timings(
            captured_at=at - latency_s, ingested_at=at - latency_s + 0.01, emitted_at=at
        ),
        evidence_key=evidence_key,
        annotated_key=annotated_key,
    )


def camera_status(
    camera: str, line: str, state: str, at: float, transition: int = 1, fps: float = 5.0
) -> CameraStatusEvent:
    return CameraStatusEvent(
        camera_id=camera,
        line_id=line,
        run_id="run-1",
        transition=transition,
        state=state,
        at=at,
        fps=fps,
    )


def publish(
    cfg: PlantConfig,
    topic: str,
    events: Iterable[Payload],
    *,
    timestamp_s: float | None = None,
    key: bytes = b"k",
) -> None:
    """Produce events exactly as a stage does (CloudEvents binary mode); optionally back-dated."""
    p = make_producer(cfg.kafka, client_suffix="test-observe")
    for ev in events:
        value, headers = encode(ev, source="test/observe", time=time.time())
        kwargs: dict[str, Any] = {}
        if timestamp_s is not None:
            kwargs["timestamp"] = int(timestamp_s * 1000)
        p.produce(topic, value=value, key=key, headers=headers, **kwargs)
    assert p.flush(15) == 0


@pytest.fixture
def two_lines(make_config: Any) -> PlantConfig:
    from tests.helpers import create_topics

    cfg: PlantConfig = make_config(**TWO_LINES)
    create_topics(cfg)
    return cfg
