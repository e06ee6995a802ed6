"""Sampled frames → JPEG → Redis claim-check or inline record → Kafka; camera status events.

Nothing here may block a camera: the frame producer holds at most
``ingest.producer_buffer_frames`` unacknowledged frames (counted drops beyond), and a
frame that cannot be stored or would be refused by the broker is a counted drop with
its reason, never an exception that stops the publisher.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from opentelemetry.trace import Span, SpanKind

from inspector.bus.store import FrameStore, StoreUnavailable
from inspector.config import PlantConfig
from inspector.events import CameraStatusEvent, FrameMeta, ce_source, encode, encode_frame
from inspector.ingest.privacy import PrivacyFilter, RedactionFailed
from inspector.ingest.reader import CameraReader, CapturedFrame
from inspector.ingest.state import STATES, Transition
from inspector.telemetry import tracing
from inspector.telemetry.metrics import (
    CAMERA_RECONNECTS,
    CAMERA_STALLS,
    CAMERA_STATE,
    CAMERA_UP,
    CAPTURE_TO_PUBLISH,
    FRAMES_INGESTED,
)

log = logging.getLogger(__name__)

# Room for the record's own framing, key and batch header on top of value + headers.
RECORD_OVERHEAD = 512
MIN_QUALITY = 30
QUALITY_STEP = 10


def encode_jpeg(image: npt.NDArray[np.uint8], quality: int) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg",
        image,
        [
            cv2.IMWRITE_JPEG_QUALITY,
            quality,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
        ],
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf)


def encode_to_fit(
    image: npt.NDArray[np.uint8], quality: int, fits: Callable[[bytes], bool]
) -> tuple[bytes, int] | None:
    """Encode at ``quality``, stepping it down until ``fits``; None if even MIN_QUALITY does not."""
    q = quality
    while True:
        jpeg = encode_jpeg(image, q)
        if fits(jpeg):
            return jpeg, q
        if q <= MIN_QUALITY:
            return None
        q = max(MIN_QUALITY, q - QUALITY_STEP)


def record_size(value: bytes, headers: list[tuple[str, Any]], key: bytes) -> int:
    hdr = sum(len(k) + (len(v) if v is not None else 0) for k, v in headers)
    return len(value) + hdr + len(key) + RECORD_OVERHEAD


WARN_EVERY_S = 10.0


class FramePublisher:
    """Shared by every camera's publisher thread (the producer and Redis client are)."""

    def __init__(
        self,
        cfg: PlantConfig,
        producer: Producer,
        store: FrameStore | None,
        run_id: str,
        part_for: Callable[[str, float], str | None] | None = None,
        privacy: dict[str, PrivacyFilter] | None = None,
    ) -> None:
        self.cfg = cfg
        self.privacy = privacy or {}
        self.producer = producer
        self.store = store
        self.run_id = run_id
        self.part_for = part_for
        self.topic = cfg.topics.frames
        self.source = ce_source("ingest", cfg.plant)
        self.max_inflight = cfg.ingest.producer_buffer_frames
        self.inflight = 0
        self._lock = threading.Lock()
        self._warned: dict[tuple[str, str], float] = {}
        if cfg.frames.transport == "claim_check" and store is None:
            raise ValueError("claim_check transport needs a FrameStore")

    def _reserve(self) -> bool:
        with self._lock:
            if self.inflight >= self.max_inflight:
                return False
            self.inflight += 1
            return True

    def _release(self) -> None:
        with self._lock:
            self.inflight -= 1

    def publish(self, reader: CameraReader, frame: CapturedFrame) -> bool:
        """Encode, store and produce one frame; False (and a counted drop) if it could not.

        The frame's trace starts here: an ``ingest.publish`` span (with an SDK) from
        now until the broker acknowledged the record, or until the frame was dropped.
        """
        span = tracing.start(
            "ingest.publish",
            None,
            {
                "inspector.camera_id": frame.camera_id,
                "inspector.line_id": frame.line_id,
                "inspector.frame_id": f"{frame.camera_id}:{self.run_id}:{frame.seq}",
                "inspector.seq": frame.seq,
            },
            kind=SpanKind.PRODUCER,
        )
        if not self._reserve():
            self._drop(reader, span, "broker_backlog")
            return False
        try:
            return self._publish(reader, frame, span)
        except Exception as exc:
            self._release()
            tracing.fail(span, str(exc)[:200])
            span.end()
            raise

    @staticmethod
    def _drop(reader: CameraReader, span: Span, reason: str) -> None:
        reader.drop(reason)
        span.set_attribute("inspector.drop_reason", reason)
        tracing.fail(span, f"dropped: {reason}")
        span.end()

    def _publish(self, reader: CameraReader, frame: CapturedFrame, span: Span) -> bool:
        frames = self.cfg.frames
        camera = frame.camera_id
        privacy = self.privacy.get(camera)
        if privacy is not None:
            # Masks go on before the JPEG exists: nothing after this line sees the pixels.
            try:
                privacy.apply(frame.image)
            except RedactionFailed as exc:
                self._release()
                self._drop(reader, span, "redaction_failed")
                log.warning(
                    "frame dropped: redaction model failed",
                    extra={"camera": camera, "error": str(exc)},
                )
                return False
        key = camera.encode()
        frame_id = f"{camera}:{self.run_id}:{frame.seq}"
        h, w = frame.image.shape[:2]
        part_id = self.part_for(camera, frame.captured_at) if self.part_for else None
        meta_args: dict[str, Any] = dict(
            frame_id=frame_id,
            camera_id=camera,
            line_id=frame.line_id,
            run_id=self.run_id,
            seq=frame.seq,
            captured_at=frame.captured_at,
            width=w,
            height=h,
            part_id=part_id,
            # The frame's traceparent is the publish span's own context (a plain W3C
            # root without an SDK), so the worker's spans are its children.
            traceparent=tracing.traceparent_of(span, None),
        )
        if frames.transport == "inline":
            limit = self.cfg.kafka.message_max_bytes

            def fits(jpeg: bytes) -> bool:
                meta = FrameMeta(
                    **meta_args, ingested_at=time.time(), storage="inline", size_bytes=len(jpeg)
                )
                value, headers = encode_frame(meta, jpeg, source=self.source)
                return record_size(value, headers, key) <= limit

            encoded = encode_to_fit(frame.image, frames.jpeg_quality, fits)
            if encoded is None:
                self._release()
                self._drop(reader, span, "oversized")
                log.warning(
                    "frame too large for an inline record even at the lowest quality",
                    extra={"camera": camera, "limit": limit},
                )
                return False
            jpeg = encoded[0]
            meta = FrameMeta(
                **meta_args, ingested_at=time.time(), storage="inline", size_bytes=len(jpeg)
            )
            value, headers = encode_frame(meta, jpeg, source=self.source)
        else:
            assert self.store is not None
            jpeg = encode_jpeg(frame.image, frames.jpeg_quality)
            try:
                claim_key = self.store.put(frame_id, jpeg)
            except StoreUnavailable as exc:
                self._release()
                self._drop(reader, span, "redis_unavailable")
                log.warning("frame not stored", extra={"camera": camera, "error": str(exc)})
                return False
            meta = FrameMeta(
                **meta_args,
                ingested_at=time.time(),
                storage="redis",
                claim_key=claim_key,
                size_bytes=len(jpeg),
            )
            value, headers = encode_frame(meta, None, source=self.source)
        span.set_attribute("inspector.storage", meta.storage)
        span.set_attribute("inspector.size_bytes", meta.size_bytes)
        on_delivery = functools.partial(self._delivered, reader, frame, span)
        try:
            self.producer.produce(
                self.topic, value=value, key=key, headers=headers, on_delivery=on_delivery
            )
        except BufferError:
            self._release()
            self._drop(reader, span, "producer_queue_full")
            return False
        except KafkaException as exc:
            self._release()
            self._drop(reader, span, "produce_error")
            log.warning("frame not produced", extra={"camera": camera, "error": str(exc)})
            return False
        return True

    def _delivered(
        self,
        reader: CameraReader,
        frame: CapturedFrame,
        span: Span,
        err: KafkaError | None,
        msg: Message,
    ) -> None:
        self._release()
        if err is not None:
            self._drop(reader, span, self._refused(frame, err, msg))
            return
        if span.is_recording():
            span.set_attribute("messaging.destination.name", self.topic)
            span.set_attribute("messaging.destination.partition.id", str(msg.partition()))
            span.set_attribute("messaging.kafka.offset", msg.offset() or 0)
        span.end()
        reader.stats.frames_ingested += 1
        FRAMES_INGESTED.labels(frame.line_id, frame.camera_id).inc()
        CAPTURE_TO_PUBLISH.labels(frame.camera_id).observe(time.time() - frame.captured_at)

    def _refused(self, frame: CapturedFrame, err: KafkaError, msg: Message) -> str:
        """The drop reason for a frame the broker did not take, logged when it is news."""
        code = err.code()
        if code == KafkaError._MSG_TIMED_OUT:
            return "delivery_timeout"  # the broker was away longer than max_age_s
        size = len(msg.value() or b"")
        if code == KafkaError.MSG_SIZE_TOO_LARGE:
            reason = "oversized"
            what = (
                f"frame refused by the broker: {size} bytes is over the frames topic's "
                "max.message.bytes (raise it on the topic, or lower frames.jpeg_quality / "
                "kafka.message_max_bytes, or use the claim_check transport)"
            )
        else:
            reason, what = "delivery_failed", f"frame refused by the broker: {err.str()}"
        now = time.monotonic()
        if now - self._warned.get((frame.camera_id, reason), -1e9) >= WARN_EVERY_S:
            self._warned[(frame.camera_id, reason)] = now  # a stream of refusals: one line
            log.warning(  # every WARN_EVERY_S per camera; the drop counter counts them all
                what,
                extra={
                    "camera": frame.camera_id,
                    "topic": self.topic,
                    "bytes": size,
                    "error": err.name(),
                },
            )
        return reason


class StatusPublisher:
    """Every camera transition → a CameraStatusEvent, the state metrics, and a log line."""

    def __init__(self, cfg: PlantConfig, producer: Producer, run_id: str) -> None:
        self.producer = producer
        self.topic = cfg.topics.camera_status
        self.run_id = run_id
        self.source = ce_source("ingest", cfg.plant)
        self.published: list[CameraStatusEvent] = []  # last few, for the CLI and tests
        self._lock = threading.Lock()

    def __call__(self, reader: CameraReader, t: Transition) -> None:
        cam, line = reader.camera.id, reader.line_id
        for s in STATES:
            CAMERA_STATE.labels(cam, s).set(1 if s == t.state else 0)
        CAMERA_UP.labels(line, cam).set(1 if t.state == "streaming" else 0)
        if t.state == "stalled":
            CAMERA_STALLS.labels(cam).inc()
        if t.state == "connecting" and t.previous == "backing_off":
            CAMERA_RECONNECTS.labels(cam).inc()
        event = CameraStatusEvent(
            camera_id=cam,
            line_id=line,
            run_id=self.run_id,
            transition=t.number,
            state=t.state,
            previous=t.previous,
            reason=t.reason[:500],
            at=t.at,
            frames_ingested=reader.stats.frames_ingested,
            frames_dropped=reader.stats.frames_dropped,
            reconnects=t.reconnects,
            stalls=t.stalls,
            fps=round(reader.stats.fps, 2),
        )
        level = logging.WARNING if t.state in ("stalled", "backing_off") else logging.INFO
        log.log(
            level,
            f"camera {cam}: {t.previous or '-'} → {t.state}",
            extra={"camera": cam, "line": line, "state": t.state, "reason": t.reason},
        )
        with self._lock:
            self.published.append(event)
            del self.published[:-200]
        value, headers = encode(event, source=self.source, time=t.at)
        try:
            self.producer.produce(self.topic, value=value, key=cam.encode(), headers=headers)
        except (BufferError, KafkaException) as exc:
            log.warning("camera status not produced", extra={"camera": cam, "error": str(exc)})
