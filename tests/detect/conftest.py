"""Fixtures for the detect stage: sim frames published like ingest does, a worker thread."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from inspector.bus.kafka import make_producer
from inspector.bus.store import FrameStore, connect
from inspector.config import PlantConfig
from inspector.detect.worker import DetectWorker, build_worker
from inspector.events import FrameMeta, encode_frame
from inspector.inference.model import Detector, load_detector
from inspector.sim import ConveyorScene, SceneConfig
from tests.helpers import create_topics

W, H = 640, 360


@pytest.fixture(scope="session")
def detector() -> Detector:
    from inspector.config import ModelSettings

    return load_detector(ModelSettings(device="cpu"))


def demo_plant() -> dict[str, Any]:
    """The shipped demo plant: tests judge frames with the same model settings and line
    rules as `make demo`, so its operating point is what the tests exercise."""
    from pathlib import Path

    from inspector.config import load_config

    demo = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    return load_config(demo, env={}).model_dump(mode="json")


def frame_mode_rules() -> dict[str, Any]:
    """The demo line's rules at defects-v1's own operating point in ``frame`` mode
    (min_confidence 0.12 for every failing class, from its card): these tests run the
    worker in frame mode; the demo runs parts mode with defects-v2 at 0.25, which
    tests/detect/test_regions.py and `inspector evaluate` exercise."""
    rules: dict[str, Any] = demo_plant()["lines"][0]["rules"]
    for rule in rules["classes"].values():
        if rule.get("fail", True):
            rule["min_confidence"] = 0.12
    return rules


def detect_config(make_config: Callable[..., PlantConfig], **over: Any) -> PlantConfig:
    base: dict[str, Any] = {
        "lines": [
            {
                "id": "line-1",
                "cameras": [
                    {"id": "cam-1", "url": "rtsp://127.0.0.1:1/cam-1", "width": W, "height": H},
                    {"id": "cam-2", "url": "rtsp://127.0.0.1:1/cam-2", "width": W, "height": H},
                ],
                "rules": frame_mode_rules(),
            }
        ],
        # Frames are published before the worker joins its group (a few seconds), so
        # shedding and staleness limits sit well above that; the fault test sets its own.
        "worker": {"max_batch": 8, "max_wait_ms": 5, "shed_after_ms": 60_000},
        "models": demo_plant()["models"],
        "frames": {"max_age_s": 120},
    }
    base.update(over)
    cfg = make_config(**base)
    create_topics(cfg)
    return cfg


class FramePublisher:
    """Publishes frames the way ingest does: JPEG in Redis, FrameMeta on Kafka."""

    def __init__(self, cfg: PlantConfig) -> None:
        self.cfg = cfg
        self.store = FrameStore(connect(cfg.redis), cfg.redis.key_prefix, cfg.frames.claim_ttl_s)
        self.producer = make_producer(cfg.kafka, client_suffix="test-ingest")
        self.run_id = uuid.uuid4().hex[:8]
        self.seq: dict[str, int] = {}

    def publish(
        self,
        camera: str,
        image: np.ndarray | None = None,
        *,
        jpeg: bytes | None = None,
        line: str = "line-1",
        store: bool = True,
        inline: bool = False,
        partition: int | None = None,
        **meta_over: Any,
    ) -> FrameMeta:
        if jpeg is None:
            assert image is not None
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
            assert ok
            jpeg = buf.tobytes()
        seq = self.seq.get(camera, 0)
        self.seq[camera] = seq + 1
        frame_id = f"{camera}:{self.run_id}:{seq}"
        now = time.time()
        h, w = image.shape[:2] if image is not None else (H, W)
        key = self.store.key(frame_id)
        if store and not inline:
            self.store.put(frame_id, jpeg)
        fields: dict[str, Any] = dict(
            frame_id=frame_id,
            camera_id=camera,
            line_id=line,
            run_id=self.run_id,
            seq=seq,
            captured_at=now,
            ingested_at=now,
            width=w,
            height=h,
            storage="inline" if inline else "redis",
            claim_key=None if inline else key,
            size_bytes=len(jpeg),
            traceparent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
        )
        fields.update(meta_over)
        meta = FrameMeta(**fields)
        value, headers = encode_frame(meta, jpeg if inline else None, source="test/ingest")
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        self.producer.produce(
            self.cfg.topics.frames, value=value, key=camera.encode(), headers=headers, **extra
        )
        return meta

    def flush(self) -> None:
        assert self.producer.flush(15) == 0


@pytest.fixture(scope="session")
def sim_frames() -> list[np.ndarray]:
    """60 frames of a defect-rich simulated line at the test resolution."""
    scene = ConveyorScene(
        SceneConfig(seed=101, width=W, height=H, defect_rate=0.7, clip_seconds=20)
    )
    return [scene.render(i)[0] for i in range(0, 300, 5)]


class WorkerThread:
    def __init__(self, cfg: PlantConfig, detector: Detector) -> None:
        self.worker: DetectWorker
        self.worker, self.loop = build_worker(cfg, detector=detector)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as exc:
            self.error = exc

    def start(self) -> WorkerThread:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.loop.shutdown.request()
        self.thread.join(20)


@pytest.fixture
def start_worker(detector: Detector) -> Iterator[Callable[[PlantConfig], WorkerThread]]:
    started: list[WorkerThread] = []

    def factory(cfg: PlantConfig) -> WorkerThread:
        w = WorkerThread(cfg, detector).start()
        started.append(w)
        return w

    yield factory
    for w in started:
        w.stop()
