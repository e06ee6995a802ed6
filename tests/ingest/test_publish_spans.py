"""ingest.publish spans: one per frame, ended at the broker's ack or at the drop, and
the frame's traceparent is the span's own context (pure logic: a stand-in producer)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from inspector.config import parse_config
from inspector.events import decode_frame
from inspector.ingest.publisher import FramePublisher
from inspector.ingest.reader import CameraStats, CapturedFrame
from inspector.telemetry import tracing
from tests.conftest import base_config_dict


class Reader:
    def __init__(self) -> None:
        self.stats = CameraStats()
        self.drops: list[str] = []

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops.append(reason)


class Producer:
    """Takes records like a producer; the test acknowledges them (or refuses them)."""

    def __init__(self, full: bool = False) -> None:
        self.full = full
        self.records: list[dict[str, Any]] = []

    def produce(self, topic: str, **kw: Any) -> None:
        if self.full:
            raise BufferError("queue full")
        self.records.append({"topic": topic, **kw})


class Acked:
    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self._p, self._o, self._v = partition, offset, value

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    tracing.configure(provider)
    try:
        yield exp
    finally:
        tracing.configure(None)
        provider.shutdown()


def frame(seq: int, noise: bool = False, w: int = 64, h: int = 48) -> CapturedFrame:
    rng = np.random.default_rng(seq)
    img = (
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if noise
        else np.full((h, w, 3), 90, np.uint8)
    )
    return CapturedFrame("cam-1", "line-1", seq, time.time(), time.monotonic(), img)


def publisher(producer: Producer, **frames: Any) -> FramePublisher:
    data = base_config_dict("127.0.0.1:1", "redis://127.0.0.1:1/0", "spans")
    data["frames"] = {"transport": "inline", **frames}
    data["kafka"]["message_max_bytes"] = 65_536
    return FramePublisher(parse_config(data, "test", env={}), producer, None, "run1")  # type: ignore[arg-type]


def test_a_delivered_frame_carries_its_publish_span(exporter: InMemorySpanExporter) -> None:
    producer, reader = Producer(), Reader()
    pub = publisher(producer)
    assert pub.publish(reader, frame(7))  # type: ignore[arg-type]
    assert exporter.get_finished_spans() == ()  # open until the broker acknowledges
    (rec,) = producer.records
    meta, _ = decode_frame(rec["value"], rec["headers"])
    rec["on_delivery"](None, Acked(2, 41, rec["value"]))
    (span,) = exporter.get_finished_spans()
    assert span.name == "ingest.publish" and span.parent is None and span.context is not None
    assert meta.traceparent == f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"
    a = span.attributes or {}
    assert a["inspector.frame_id"] == meta.frame_id == "cam-1:run1:7"
    assert (a["inspector.camera_id"], a["inspector.line_id"], a["inspector.seq"]) == (
        "cam-1",
        "line-1",
        7,
    )
    assert a["inspector.storage"] == "inline" and a["inspector.size_bytes"] == meta.size_bytes
    assert (a["messaging.destination.partition.id"], a["messaging.kafka.offset"]) == ("2", 41)
    assert span.status.status_code is StatusCode.UNSET


def test_a_dropped_frame_ends_its_span_with_the_reason(exporter: InMemorySpanExporter) -> None:
    reader = Reader()
    # 1280x720 of noise does not fit 64 KiB even at the lowest quality
    assert not publisher(Producer()).publish(reader, frame(1, noise=True, w=1280, h=720))  # type: ignore[arg-type]
    assert not publisher(Producer(full=True)).publish(reader, frame(2))  # type: ignore[arg-type]
    assert reader.drops == ["oversized", "producer_queue_full"]
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["ingest.publish"] * 2
    for s, reason in zip(spans, reader.drops, strict=True):
        assert s.status.status_code is StatusCode.ERROR
        assert s.status.description == f"dropped: {reason}"
        assert (s.attributes or {})["inspector.drop_reason"] == reason


def test_without_an_sdk_the_frame_still_starts_a_w3c_trace() -> None:
    assert not tracing.enabled()
    producer = Producer()
    assert publisher(producer).publish(Reader(), frame(3))  # type: ignore[arg-type]
    meta, _ = decode_frame(producer.records[0]["value"], producer.records[0]["headers"])
    tp = tracing.parse_traceparent(meta.traceparent)
    assert tp is not None and tp.sampled
