"""Helpers for the act tests: verdicts, an act service in a thread, a topic collector."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from inspector.act.service import ActService
from inspector.bus.kafka import Shutdown, make_consumer, make_producer
from inspector.config import PlantConfig
from inspector.events import (
    Box,
    Finding,
    Payload,
    Severity,
    Timings,
    Verdict,
    VerdictEvent,
    decode,
    encode,
)

P = TypeVar("P", bound=Payload)

# Lines and rules every act test uses: filters may only name classes the rules know.
LINES: list[dict[str, Any]] = [
    {
        "id": "line-1",
        "cameras": [
            {"id": "cam-1", "url": "rtsp://127.0.0.1:8554/cam-1"},
            {"id": "cam-2", "url": "rtsp://127.0.0.1:8554/cam-2"},
        ],
        "rules": {
            "classes": {
                "scratch": {"severity": "minor"},
                "dent": {"severity": "major"},
                "crack": {"severity": "critical"},
            }
        },
    },
    {
        "id": "line-2",
        "cameras": [{"id": "cam-3", "url": "rtsp://127.0.0.1:8554/cam-3"}],
        "rules": {"classes": {"crack": {"severity": "critical"}}},
    },
]
SEVERITY: dict[str, Severity] = {"scratch": "minor", "dent": "major", "crack": "critical"}
LINE_OF = {"cam-1": "line-1", "cam-2": "line-1", "cam-3": "line-2"}


def verdict(
    seq: int,
    kind: Verdict = "FAIL",
    *,
    cam: str = "cam-1",
    cls: str = "dent",
    part: str | None = None,
    t: float | None = None,
    rule: str | None = None,
) -> VerdictEvent:
    """A verdict; a FAULT is a product FAULT (fault:uniform_image) unless rule says else."""
    frame_id = f"{cam}:run1:{seq}"
    at = time.time() if t is None else t
    findings = (
        [
            Finding(
                cls=cls,
                score=0.9,
                box=Box(x1=10, y1=10, x2=50, y2=40),
                severity=SEVERITY[cls],
                rule=f"class:{cls}",
            )
        ]
        if kind == "FAIL"
        else []
    )
    return VerdictEvent(
        verdict_id=f"v-{cam}-{seq}",
        frame_id=frame_id,
        camera_id=cam,
        line_id=LINE_OF[cam],
        seq=seq,
        part_id=part,
        verdict=kind,
        rule=rule or {"FAIL": f"class:{cls}", "PASS": "pass", "FAULT": "fault:uniform_image"}[kind],
        findings=findings,
        timings=Timings(captured_at=at, ingested_at=at, emitted_at=at),
        evidence_key=f"evidence:{frame_id}" if kind == "FAIL" else None,
    )


def send(cfg: PlantConfig, verdicts: list[VerdictEvent]) -> None:
    """Verdicts keyed by line, as the detection workers publish them."""
    producer = make_producer(cfg.kafka, client_suffix="test-verdicts")
    for v in verdicts:
        value, headers = encode(v, source="inspector/test", time=v.timings.emitted_at)
        producer.produce(cfg.topics.verdicts, value=value, key=v.line_id.encode(), headers=headers)
    assert producer.flush(15) == 0


class Trickle:
    """Sends verdicts one by one in the background, as a live line would."""

    def __init__(self, cfg: PlantConfig, verdicts: list[VerdictEvent], every_s: float) -> None:
        self.cfg = cfg
        self.verdicts = verdicts
        self.every_s = every_s
        self.sent = 0
        self.thread = threading.Thread(target=self._run, name="trickle", daemon=True)

    def _run(self) -> None:
        producer = make_producer(self.cfg.kafka, client_suffix="test-trickle")
        for v in self.verdicts:
            value, headers = encode(v, source="inspector/test", time=v.timings.emitted_at)
            producer.produce(
                self.cfg.topics.verdicts, value=value, key=v.line_id.encode(), headers=headers
            )
            producer.flush(5)
            self.sent += 1
            time.sleep(self.every_s)  # pacing the source, not waiting for a condition

    def __enter__(self) -> Trickle:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(60)

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()


def write_config(cfg: PlantConfig, path: Path) -> Path:
    data = cfg.model_dump(mode="json", exclude_none=True)
    for wf, orig in zip(data["workflows"], cfg.workflows, strict=True):
        if orig.kind == "mes_ticket":
            wf["secrets"] = [s.get_secret_value() for s in orig.secrets]
    path.write_text(yaml.safe_dump(data))
    return path


class RunningAct:
    """An act service on a thread; stop() is the graceful SIGTERM path."""

    def __init__(self, cfg: PlantConfig, metrics_port: int = 0) -> None:
        self.shutdown = Shutdown()
        self.service = ActService(cfg, self.shutdown, metrics_port=metrics_port)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="act-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> RunningAct:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> str:
        """The service's state, for a timeout's message: thread, error, loop, Redis."""
        try:
            redis_ok: object = self.service.client.ping()
        except Exception as exc:
            redis_ok = f"{type(exc).__name__}: {exc}"
        return (
            f"thread alive={self.thread.is_alive()} error={self.error!r} "
            f"loop={self.service.loop.describe()} redis={redis_ok}"
        )

    def stop(self) -> None:
        self.shutdown.request()
        self.thread.join(30)
        assert not self.thread.is_alive(), "act did not stop within 30 s"
        if self.error is not None:
            raise self.error


class Collector:
    """Reads topics from the beginning by assignment: no group join, so no join delay."""

    def __init__(self, cfg: PlantConfig, topics: list[str]) -> None:
        self.consumer = make_consumer(
            cfg.kafka, f"collector-{uuid.uuid4().hex[:8]}", client_suffix="collector"
        )
        self.consumer.assign(
            [
                TopicPartition(t, p, OFFSET_BEGINNING)
                for t in topics
                for p in range(cfg.topics.partitions)
            ]
        )
        self.messages: dict[str, list[Message]] = {t: [] for t in topics}

    def pump(self, timeout_s: float = 0.05) -> int:
        got = 0
        for m in self.consumer.consume(500, timeout_s):
            if m.error() is None:
                self.messages[m.topic() or ""].append(m)
                got += 1
        return got

    def payloads(self, topic: str, kind: type[P]) -> list[P]:
        return [decode(m.value(), m.headers(), kind) for m in self.messages[topic]]

    def wait(self, cond: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.pump()
            if cond():
                return
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")

    def drain(self, quiet_s: float = 1.0) -> None:
        """Read until nothing new arrives for quiet_s: used only to show that nothing *more*
        came after a condition that proves processing finished."""
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            if self.pump(0.1):
                last = time.monotonic()

    def close(self) -> None:
        self.consumer.close()
