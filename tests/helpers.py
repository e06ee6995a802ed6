"""Small Kafka helpers for tests: produce raw records, read a topic to a count or a quiet period."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, Message

from inspector.bus.kafka import ensure_topics, make_consumer, make_producer
from inspector.config import PlantConfig

Record = tuple[bytes | None, list[tuple[str, bytes]] | None]


def create_topics(cfg: PlantConfig) -> None:
    ensure_topics(cfg.kafka, cfg.topics)


def produce(
    cfg: PlantConfig,
    topic: str,
    records: Iterable[Record],
    key: bytes | None = b"k",
    max_bytes: int | None = None,
) -> None:
    """Produce raw records; max_bytes lets a test play a producer with a larger limit."""
    extra = {"message.max.bytes": max_bytes} if max_bytes else {}
    p = make_producer(cfg.kafka, client_suffix="test", **extra)
    for value, headers in records:
        p.produce(topic, value=value, key=key, headers=headers)
    assert p.flush(15) == 0


def reader(cfg: PlantConfig, topics: list[str]) -> Consumer:
    c = make_consumer(cfg.kafka, f"test-reader-{uuid.uuid4().hex[:8]}", client_suffix="reader")
    c.subscribe(topics)
    return c


def read(
    cfg: PlantConfig,
    topics: list[str],
    *,
    count: int | None = None,
    timeout_s: float = 30.0,
    quiet_s: float = 3.0,
    until: Callable[[list[Message]], bool] | None = None,
) -> list[Message]:
    """Read until `count` messages, `until(msgs)` is true, or nothing new for `quiet_s`
    (after at least one message or the timeout)."""
    c = reader(cfg, topics)
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                out.append(m)
                last_new = time.monotonic()
                if count is not None and len(out) >= count:
                    break
                if until is not None and until(out):
                    break
            elif count is None and until is None and out and time.monotonic() - last_new > quiet_s:
                break
    finally:
        c.close()
    return out


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
