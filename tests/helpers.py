"""Small Kafka helpers for tests: produce raw records, read a topic to a count or a quiet period."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from confluent_kafka import Consumer, Message

from inspector.bus.kafka import ensure_topics, make_consumer, make_producer
from inspector.config import PlantConfig

# Headers as a test writes them: any sequence of (name, value) pairs (Sequence, not
# list, so that a list of (str, bytes) pairs and encode()'s Headers both fit).
Record = tuple[bytes | None, Sequence[tuple[str, str | bytes | None]] | None]


def header_bytes(
    raw: dict[str, str | bytes | None] | Sequence[tuple[str, str | bytes | None]] | None,
) -> dict[str, bytes]:
    """Headers by name, each value bytes: those of a consumed record (``msg.headers()``,
    which librdkafka hands back as a list of (name, bytes) pairs though confluent_kafka's
    type also allows a dict and str/None values) or those encode() made."""
    assert raw is not None, "the record has no headers"
    pairs = raw.items() if isinstance(raw, dict) else raw
    out: dict[str, bytes] = {}
    for k, v in pairs:
        assert isinstance(v, bytes), f"header {k!r} is {v!r}, not bytes"
        out[k] = v
    return out


def value_of(msg: Message) -> bytes:
    """A consumed record's value, which the test expects to be there."""
    value = msg.value()
    assert value is not None, "the record has no value"
    return value


def partition_offset(msg: Message) -> tuple[int, int]:
    """Where a consumed record sits (both are set on a record a consumer returns)."""
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None and offset is not None, "a record without a position"
    return partition, offset


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
    extra: dict[str, Any] = {"message.max.bytes": max_bytes} if max_bytes else {}
    p = make_producer(cfg.kafka, client_suffix="test", **extra)
    for value, headers in records:
        p.produce(topic, value=value, key=key, headers=None if headers is None else list(headers))
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


def wait_for(
    cond: Callable[[], bool],
    timeout_s: float,
    what: str | Callable[[], str],
    step_s: float = 0.05,
) -> None:
    """Wait for ``cond``; ``what`` may be a callable, evaluated at the timeout (the state
    the failure message should show)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step_s)
    said = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout_s}s waiting for {said}")
