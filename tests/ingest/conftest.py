"""Simulated RTSP cameras, an in-process ingest and a live Kafka collector for ingest tests."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import Message

from inspector.bus.kafka import make_consumer
from inspector.config import PlantConfig
from inspector.events import CameraStatusEvent, FrameMeta, decode, decode_frame
from inspector.ingest.service import IngestService
from inspector.sim import SceneConfig, SimCameraFleet
from inspector.sim.clip import gst_unavailable_reason

W, H = 640, 360  # small frames keep the shared CPU free


@pytest.fixture(scope="session")
def fleet() -> Iterator[SimCameraFleet]:
    """cam-a and cam-b stream throughout; cam-f is the one fault tests stop and hang."""
    why = gst_unavailable_reason()
    if why:
        pytest.skip(why)
    cams = {
        "cam-a": SceneConfig(seed=11, width=W, height=H),
        "cam-b": SceneConfig(seed=12, width=W, height=H),
        "cam-f": SceneConfig(seed=13, width=W, height=H),
    }
    with SimCameraFleet(cams) as f:
        yield f


def camera(cid: str, url: str, **kw: Any) -> dict[str, Any]:
    return {"id": cid, "url": url, "width": W, "height": H, "sample_fps": 5, **kw}


@pytest.fixture
def ingest_config(make_config: Callable[..., PlantConfig]) -> Callable[..., PlantConfig]:
    def factory(cameras: list[dict[str, Any]], **over: Any) -> PlantConfig:
        over.setdefault("observe", {"ingest_port": 0})
        return make_config(lines=[{"id": "line-1", "cameras": cameras}], **over)

    return factory


@dataclass
class Collected:
    msg: Message
    received: float


@dataclass
class Collector:
    """Reads topics from the beginning in a background thread while the test acts."""

    cfg: PlantConfig
    topics: list[str]
    items: list[Collected] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        c = make_consumer(
            self.cfg.kafka, f"test-collector-{uuid.uuid4().hex[:8]}", client_suffix="collector"
        )
        c.subscribe(self.topics)
        try:
            while not self.stop.is_set():
                m = c.poll(0.1)
                if m is not None and m.error() is None:
                    with self.lock:
                        self.items.append(Collected(m, time.time()))
        finally:
            c.close()

    def messages(self, topic: str) -> list[Message]:
        with self.lock:
            return [i.msg for i in self.items if i.msg.topic() == topic]

    def frames(self, camera_id: str | None = None) -> list[tuple[FrameMeta, bytes | None, Message]]:
        out = []
        for m in self.messages(self.cfg.topics.frames):
            meta, jpeg = decode_frame(m.value(), m.headers())
            if camera_id is None or meta.camera_id == camera_id:
                out.append((meta, jpeg, m))
        return out

    def statuses(self, camera_id: str | None = None) -> list[CameraStatusEvent]:
        evs = [
            decode(m.value(), m.headers(), CameraStatusEvent)
            for m in self.messages(self.cfg.topics.camera_status)
        ]
        return [e for e in evs if camera_id is None or e.camera_id == camera_id]


@contextmanager
def collecting(cfg: PlantConfig) -> Iterator[Collector]:
    from tests.helpers import create_topics

    create_topics(cfg)
    col = Collector(cfg, [cfg.topics.frames, cfg.topics.camera_status])
    th = threading.Thread(target=col.run, daemon=True)
    th.start()
    try:
        yield col
    finally:
        col.stop.set()
        th.join(15)


@contextmanager
def running(cfg: PlantConfig, **kw: Any) -> Iterator[IngestService]:
    """An in-process ingest with its watchdog ticking, stopped (and flushed) on exit."""
    svc = IngestService(cfg, **kw)
    done = threading.Event()

    def supervise() -> None:
        while not done.wait(0.25):
            svc.supervise()

    th = threading.Thread(target=supervise, daemon=True)
    svc.start()
    th.start()
    try:
        yield svc
    finally:
        done.set()
        th.join(5)
        svc.stop()
