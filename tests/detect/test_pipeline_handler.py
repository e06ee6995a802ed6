"""The worker's pipeline (worker.pipeline) without a broker: a real Redis, the real model,
a recording producer and fake Kafka records.

The loop calls ``lookahead(next)`` before ``handle(current)``; these tests drive the
handler the same way and check what the pipeline must keep: one verdict per frame, in
the order of the batches, produced only in the batch's own ``handle`` (never while the
next one is prepared), identical to the serial handler's, and a prepared result thrown
away (redone inline) whenever it cannot be used as it is.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import orjson
import pytest

from inspector.bus.kafka import DeliveryTracker
from inspector.bus.store import FrameStore, connect
from inspector.config import PlantConfig, parse_config
from inspector.detect.worker import DetectWorker, decode_frame_message
from inspector.events import FrameMeta, encode_frame
from inspector.inference.model import Detector
from tests.conftest import base_config_dict, deep_merge
from tests.detect.conftest import demo_plant, frame_mode_rules

W, H = 640, 360


class Msg:
    """Just what the worker reads of a confluent_kafka Message."""

    def __init__(self, partition: int, offset: int, value: bytes, headers: Any) -> None:
        self._p, self._o, self._v, self._h = partition, offset, value, headers

    def topic(self) -> str:
        return "frames"

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def headers(self) -> Any:
        return self._h

    def key(self) -> bytes:
        return b"cam-1"


class Producer:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def produce(self, topic: str, value: bytes, **_: Any) -> None:
        self.records.append((topic, orjson.loads(value)))

    def verdicts(self) -> list[dict[str, Any]]:
        return [v for t, v in self.records if t.endswith("verdicts")]


class CountingDetector:
    """The real model; counts calls and their threads, fails the calls it is told to."""

    def __init__(self, inner: Detector, fail_calls: set[int] | None = None) -> None:
        self.inner, self.info = inner, inner.info
        self.calls = 0
        self.fail_calls = fail_calls or set()
        self.threads: list[str] = []
        self.lock = threading.Lock()

    def detect(self, images: list[np.ndarray]) -> Any:
        with self.lock:
            self.calls += 1
            n = self.calls
            self.threads.append(threading.current_thread().name)
        if n in self.fail_calls:
            raise RuntimeError(f"model call {n} failed")
        return self.inner.detect(images)


class Loop:
    def __init__(self) -> None:
        self.tracker = DeliveryTracker()


def config(redis_url: str) -> PlantConfig:
    uid = uuid.uuid4().hex[:10]
    over = {
        "lines": [
            {
                "id": "line-1",
                "cameras": [
                    {"id": "cam-1", "url": "rtsp://127.0.0.1:1/cam-1", "width": W, "height": H}
                ],
                "rules": frame_mode_rules(),
            }
        ],
        "models": demo_plant()["models"],
        "worker": {"shed_after_ms": 60_000},
        "frames": {"max_age_s": 120},
    }
    # nothing here talks to Kafka: the bootstrap address is never dialled
    return parse_config(
        deep_merge(base_config_dict("127.0.0.1:1", redis_url, uid), over), "t", env={}
    )


def make_batches(cfg: PlantConfig, frames: list[np.ndarray], sizes: list[int]) -> list[list[Msg]]:
    store = FrameStore(connect(cfg.redis), cfg.redis.key_prefix, cfg.frames.claim_ttl_s)
    batches, offset, run = [], 0, uuid.uuid4().hex[:8]
    for size in sizes:
        batch = []
        for _ in range(size):
            frame = frames[offset % len(frames)]
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
            assert ok
            fid = f"cam-1:{run}:{offset}"
            store.put(fid, buf.tobytes())
            now = time.time()
            meta = FrameMeta(
                frame_id=fid, camera_id="cam-1", line_id="line-1", run_id=run, seq=offset,
                captured_at=now, ingested_at=now, width=W, height=H, storage="redis",
                claim_key=store.key(fid), size_bytes=len(buf),
            )  # fmt: skip
            value, headers = encode_frame(meta, None, source="test/ingest")
            batch.append(Msg(0, offset, value, headers))
            offset += 1
        batches.append(batch)
    return batches


def new_worker(cfg: PlantConfig, det: Any) -> tuple[DetectWorker, Producer]:
    store = FrameStore(connect(cfg.redis), cfg.redis.key_prefix, cfg.frames.claim_ttl_s)
    worker = DetectWorker(cfg, det, store)
    worker.loop = Loop()  # type: ignore[assignment]
    producer = Producer()
    worker.producer = producer
    return worker, producer


def decoded(msgs: list[Msg]) -> list[Any]:
    return [(m, decode_frame_message(m)) for m in msgs]  # type: ignore[arg-type]


def judged(v: dict[str, Any]) -> tuple[Any, ...]:
    return (v["frame_id"], v["verdict"], v.get("rule"), orjson.dumps(v.get("detections", [])))


def run_pipelined(
    worker: DetectWorker, batches: list[list[Msg]], before: Callable[[int], None]
) -> None:
    """What StreamLoop does with a lookahead: the next batch is handed over before the
    current one is handled."""
    for i, batch in enumerate(batches):
        if i + 1 < len(batches):
            worker.lookahead(batches[i + 1])  # type: ignore[arg-type]
        before(i)
        worker.handle(decoded(batch))


@pytest.fixture
def cfg(redis_url: str) -> PlantConfig:
    return config(redis_url)


def test_pipelined_verdicts_match_serial_in_order_and_only_in_their_turn(
    cfg: PlantConfig, detector: Detector, sim_frames: list[np.ndarray]
) -> None:
    batches = make_batches(cfg, sim_frames, [8, 8, 3, 8])
    det = CountingDetector(detector)
    worker, producer = new_worker(cfg, det)
    produced_before: list[int] = []

    def before(i: int) -> None:
        for _, fut in list(worker._ahead):  # the next batch is fully prepared by now
            fut.exception(60)
        produced_before.append(len(producer.verdicts()))

    run_pipelined(worker, batches, before)
    # batch i's verdicts appear in handle(i), not while batch i+1 was being prepared
    assert produced_before == [0, 8, 16, 19]
    frame_order = [orjson.loads(m.value())["frame_id"] for b in batches for m in b]
    assert [v["frame_id"] for v in producer.verdicts()] == frame_order  # one each, in order
    assert worker.ahead_used == 3 and worker.ahead_dropped == 0
    # the serial handler (another key namespace, so nothing is decided yet) agrees
    serial_cfg = cfg.model_copy(
        update={"redis": cfg.redis.model_copy(update={"key_prefix": uuid.uuid4().hex[:8]})}
    )
    serial, serial_out = new_worker(serial_cfg, detector)
    for b in batches:
        serial.handle(decoded(b))
    assert [judged(v) for v in producer.verdicts()] == [judged(v) for v in serial_out.verdicts()]
    assert {v["verdict"] for v in producer.verdicts()} <= {"PASS", "FAIL"}


def test_a_failed_preparation_is_redone_inline_and_a_real_failure_still_raises(
    cfg: PlantConfig, detector: Detector, sim_frames: list[np.ndarray]
) -> None:
    batches = make_batches(cfg, sim_frames, [4, 4, 4])
    # model call 1: batch 0, inline; call 2: batch 1 prepared ahead, fails; batch 2 is
    # prepared after it on the same thread and used; batch 1 is redone inline
    det = CountingDetector(detector, fail_calls={2})
    worker, producer = new_worker(cfg, det)
    worker.handle(decoded(batches[0]))
    worker.lookahead(batches[1])  # type: ignore[arg-type]
    worker.lookahead(batches[2])  # type: ignore[arg-type]
    worker.handle(decoded(batches[1]))
    worker.handle(decoded(batches[2]))
    assert det.calls == 4
    assert len(producer.verdicts()) == 12
    assert {v["verdict"] for v in producer.verdicts()} <= {"PASS", "FAIL"}  # never FAULT
    assert worker.ahead_dropped == 1 and worker.ahead_used == 1
    # a model that keeps failing: preparation fails, the inline redo raises to the loop
    # (which isolates the batch), and nothing was produced for it
    bad = make_batches(cfg, sim_frames, [2, 2])
    det.fail_calls = set(range(det.calls + 1, det.calls + 100))
    before = len(producer.records)
    worker.lookahead(bad[0])  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="model call"):
        worker.handle(decoded(bad[0]))
    assert len(producer.records) == before


def test_a_prepared_batch_is_never_used_for_other_records(
    cfg: PlantConfig, detector: Detector, sim_frames: list[np.ndarray]
) -> None:
    (batch,) = make_batches(cfg, sim_frames, [4])
    det = CountingDetector(detector)
    worker, producer = new_worker(cfg, det)
    worker.lookahead(batch)  # type: ignore[arg-type]
    # the loop isolates the batch record by record (poison), or retries a part of it
    for m in batch:
        worker.handle(decoded([m]))
    assert worker.ahead_used == 0 and worker.ahead_dropped == 1
    assert [v["frame_id"] for v in producer.verdicts()] == [
        orjson.loads(m.value())["frame_id"] for m in batch
    ]


def test_a_hot_swap_between_preparing_and_handling_redoes_the_batch_on_the_new_model(
    cfg: PlantConfig, detector: Detector, sim_frames: list[np.ndarray]
) -> None:
    first, second = make_batches(cfg, sim_frames, [4, 4])
    old, new = CountingDetector(detector), CountingDetector(detector)
    new.info = dataclasses.replace(detector.info, version="swapped")
    worker, producer = new_worker(cfg, old)
    worker.lookahead(first)  # type: ignore[arg-type]
    worker.stage_model(new, None)  # the follower stages while the batch is prepared
    worker.lookahead(second)  # type: ignore[arg-type]  # not prepared: a swap is staged
    worker.handle(decoded(first))
    worker.handle(decoded(second))
    versions = [v["model"]["version"] for v in producer.verdicts()]
    assert versions == ["swapped"] * 8  # nothing the old model inferred is judged after
    assert new.calls >= 1 and worker.ahead_used == 0


def test_the_pipeline_setting_is_strict_and_on_by_default() -> None:
    from pydantic import ValidationError

    from inspector.config import WorkerSettings

    assert WorkerSettings().pipeline is True
    assert WorkerSettings.model_fields["pipeline"].title
    assert WorkerSettings(pipeline=False).pipeline is False
    with pytest.raises(ValidationError):
        WorkerSettings(pipeline="sometimes")
    with pytest.raises(ValidationError):
        WorkerSettings(pipelined=True)  # type: ignore[call-arg]
