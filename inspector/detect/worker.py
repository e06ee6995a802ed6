"""``inspector worker``: frames topic → model → line rules → verdicts (+ defects).

One member of the ``worker.group_id`` consumer group; scale out by starting more
(up to the frames topic's partition count). Per micro-batch:

1. fetch claim-check JPEGs from Redis in one round trip;
2. decode and vet every frame — anything untrustworthy is FAULT, never PASS;
3. run the model once over the batch (frames of every camera together);
4. apply each frame's line rules, emit one verdict per frame (and a defect event per
   FAIL), keep FAIL frames as evidence;
5. the loop commits offsets only after all of it was acknowledged (or inside a Kafka
   transaction with ``exactly_once``).

Verdict ids derive from the frame id, so a redelivery after a crash yields the
identical verdict and downstream consumers recognise it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import orjson
import redis
from confluent_kafka import KafkaException, Message

from inspector.bus.crypto import BlobError, store_sealer
from inspector.bus.kafka import instance_id, make_producer, stage_consumer
from inspector.bus.loop import RetryLater, StreamLoop
from inspector.bus.store import FrameStore, StoreUnavailable, connect, store_error
from inspector.config import (
    CameraSettings,
    InspectionSettings,
    LineSettings,
    PlantConfig,
    anomaly_bank_dir,
)
from inspector.detect.anomaly import AnomalyError, PartScorer
from inspector.detect.capture import Capture
from inspector.detect.drift import DriftChange, DriftMonitor, FrameStats, frame_stats
from inspector.detect.follow import ModelFollower, ReferenceFrames, registry_info
from inspector.detect.regions import RegionDetector
from inspector.detect.rules import (
    EDGE_MARGIN_PX,
    CompiledRules,
    Judgement,
    anomaly_report,
    apply_anomaly,
    image_is_uniform,
    part_decision,
)
from inspector.events import (
    AnomalyReport,
    DefectEvent,
    Detection,
    DriftEvent,
    FrameMeta,
    ModelRef,
    Timings,
    VerdictEvent,
    ce_headers,
    decode_frame,
    deterministic_id,
    encode,
    verdict_id_for,
)
from inspector.inference.model import (
    Detector,
    ModelError,
    decode_scale,
    input_scale,
    load_detector,
)
from inspector.telemetry import tracing
from inspector.telemetry.metrics import (
    BATCH_SIZE,
    CAPTURE_TO_VERDICT,
    DEFECTS,
    DRIFT_ACTIVE,
    DRIFT_EVENTS,
    DRIFT_PSI,
    FRAMES_DROPPED,
    INFERENCE_SECONDS,
    VERDICTS,
)
from inspector.telemetry.tracing import with_traceparent

log = logging.getLogger(__name__)
SOURCE = "inspector/detect"
INFER_CHUNK = 8  # images per model call while the next ones are decoded
PART_STATE_TTL_S = 3600  # a part is long gone from the line after an hour
# A batch prepared ahead (worker.pipeline) is judged at most this long after its
# inference ended; older (its turn was held back by a retry) it is prepared again.
AHEAD_MAX_AGE_S = 0.5


@dataclass
class FrameJob:
    msg: Message
    meta: FrameMeta
    jpeg: bytes | None  # inline bytes, or fetched from the claim-check
    image: np.ndarray | None = None
    scale: int = 1  # the JPEG was decoded at 1/scale (DCT scaling)
    # parts / tiles lines: the full-resolution frame reduced as the locator sees it,
    # made once and shared by vetting, the locator and drift
    reduced: np.ndarray | None = None
    fault: tuple[str, str] | None = None  # (rule, reason)
    detections: list[Detection] | None = None
    raw: list[Detection] | None = None  # the model's detections in the decoded image's pixels
    span: Any = None  # detect.judge, from judging to producing the verdict


@dataclass
class Prepared:
    """A batch fetched, vetted, decoded and inferred, not yet judged or emitted.

    Nothing here touched Kafka or wrote to Redis: it can be made ahead of its turn (the
    pipeline) and thrown away without a trace when it cannot be used as it is.
    """

    jobs: list[FrameJob]
    decided: dict[str, bytes]
    t0: float
    t1: float
    inferred: int
    detector: Detector


def batch_key(msgs: list[Message]) -> tuple[tuple[str, int, int], ...]:
    return tuple((m.topic() or "", m.partition() or 0, m.offset() or 0) for m in msgs)


_REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


# Start-of-frame markers (baseline, extended, progressive, lossless, arithmetic); C4
# (DHT), C8 (JPG) and CC (DAC) share the range but are not frame headers.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the JPEG's frame header, without decoding; None if absent.

    The decoder allocates what the header declares: a 1 kB JPEG claiming 20000x20000
    costs 2.3 GB and seconds to decode. Reading the header first lets the worker refuse
    it (FAULT) before a byte of pixels is allocated.
    """
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # standalone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2:
            return None
        if marker in _SOF:
            if i + 9 > n:
                return None
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        i += 2 + length
    return None


def decode_jpeg(data: bytes, scale: int = 1) -> np.ndarray | None:
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, _REDUCED[scale])
    return img if img is not None and img.size else None


def clock_skew(m: FrameMeta, now: float, max_skew_s: float) -> str | None:
    """Why the frame's timestamps cannot be trusted, or None.

    A camera or ingest host whose clock runs ahead stamps frames in the future: their
    age comes out negative, so neither the staleness nor the shedding check would ever
    catch them. Such a frame is FAULT, never judged as if fresh.
    """
    if m.captured_at - now > max_skew_s:
        return (
            f"frame captured {m.captured_at - now:.3f}s in the future of the worker's clock "
            f"(max skew {max_skew_s:g}s)"
        )
    if m.ingested_at < 0:
        return f"frame published at a negative time ({m.ingested_at:g})"
    if m.captured_at - m.ingested_at > max_skew_s:
        return (
            f"frame published {m.captured_at - m.ingested_at:.3f}s before it was captured "
            f"(max skew {max_skew_s:g}s)"
        )
    if m.ingested_at - now > max_skew_s:
        return (
            f"frame published {m.ingested_at - now:.3f}s in the future of the worker's clock "
            f"(max skew {max_skew_s:g}s)"
        )
    return None


def scale_detections(dets: list[Detection], scale: int) -> list[Detection]:
    if scale == 1:
        return dets
    return [
        d.model_copy(
            update={
                "box": d.box.model_copy(
                    update={
                        "x1": round(d.box.x1 * scale, 2),
                        "y1": round(d.box.y1 * scale, 2),
                        "x2": round(d.box.x2 * scale, 2),
                        "y2": round(d.box.y2 * scale, 2),
                    }
                )
            }
        )
        for d in dets
    ]


def annotate(image: np.ndarray, judgement: Judgement, dets: list[Detection]) -> np.ndarray:
    """Evidence for humans: every detection thin, failing findings thick and red."""
    out = image.copy()
    for d in dets:
        b = d.box
        cv2.rectangle(out, (int(b.x1), int(b.y1)), (int(b.x2), int(b.y2)), (200, 200, 200), 1)
    for f in judgement.findings:
        if f.box is None:
            continue
        b = f.box
        p1, p2 = (int(b.x1), int(b.y1)), (int(b.x2), int(b.y2))
        cv2.rectangle(out, p1, p2, (0, 0, 255), 3)
        label = f"{f.cls} {f.score:.2f}"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 2)
        y = max(p1[1] - 6, th + 4)
        cv2.rectangle(out, (p1[0], y - th - 4), (p1[0] + tw + 4, y + 2), (0, 0, 255), -1)
        cv2.putText(
            out,
            label,
            (p1[0] + 2, y - 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.6,
            (255, 255, 255),
            2,
            cv2.LINE_AA,
        )
    return out


class DetectWorker:
    """Holds the model, the rules and the Redis store; processes batches for StreamLoop."""

    def __init__(self, cfg: PlantConfig, detector: Detector, store: FrameStore) -> None:
        self.cfg = cfg
        self.detector = detector
        self.store = store
        self.model_ref = detector.info.ref()
        self.rules = {ln.id: CompiledRules(ln.rules) for ln in cfg.lines}
        # Inspection modes (detect/regions.py): a line in parts or tiles mode runs the
        # worker's frame model wrapped with its region model, on full-resolution frames.
        self.inspection = {ln.id: ln.inspection for ln in cfg.lines}
        self.region_models = load_region_models(cfg)
        self._line_dets: dict[str, Detector] = {}
        self.anomaly = load_anomaly_scorers(cfg)
        self.cameras: dict[str, tuple[LineSettings, CameraSettings]] = {
            c.id: (ln, c) for ln in cfg.lines for c in ln.cameras
        }
        self.loop: StreamLoop[tuple[FrameMeta, bytes | None]] | None = None
        self.infer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        # The pipeline (worker.pipeline): the next batch is prepared on this thread while
        # the loop emits, flushes and commits the current one.
        self.prepare_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")
        self._ahead: list[tuple[tuple[tuple[str, int, int], ...], Future[Prepared]]] = []
        self.ahead_used = 0  # batches whose prepared result was used (tests, bench)
        self.ahead_dropped = 0  # prepared results thrown away (failed, stale model, mismatch)
        self._pending_latency: list[VerdictEvent] = []  # emitted, not yet committed
        self.producer: Any = None
        self.processed = 0
        # Hot swap (detect/follow.py): a checked version waits here for the next batch.
        self.references = ReferenceFrames(cfg.learn.follow.smoke_frames)
        self._staged: tuple[Detector, Any] | None = None
        self._swap_lock = threading.Lock()
        self.registry: Any = None  # set by build_worker for a models:/ model
        self.registry_version: Any = None
        self.follow_alias: str | None = None
        # Drift (detect/drift.py): statistics per camera and model version.
        dcfg = cfg.learn.drift
        self.drift = DriftMonitor(dcfg) if dcfg.enabled else None
        self._drift_out: list[DriftEvent] = []
        # Data capture for labelling (detect/capture.py), off unless configured.
        self.capture = (
            Capture(
                cfg.learn.capture,
                store.client,
                cfg.redis.key_prefix,
                {
                    ln.id: {c: r.min_confidence for c, r in ln.rules.classes.items()}
                    for ln in cfg.lines
                },
            )
            if cfg.learn.capture.enabled
            else None
        )

    def line_detector(self, line_id: str, frame: Detector | None = None) -> Detector:
        """The Detector a line's frames go through: the frame model, or (parts, tiles)
        the frame model wrapped with the line's region model. Rebuilt after a swap."""
        frame = frame or self.detector
        st = self.inspection.get(line_id)
        if st is None or st.mode == "frame":
            return frame
        det = self._line_dets.get(line_id)
        if not isinstance(det, RegionDetector) or det.frame is not frame:
            det = RegionDetector(frame, self.region_models[region_key(st)], st)
            self._line_dets[line_id] = det
        return det

    def ref_for(self, line_id: str) -> ModelRef:
        """The model a line's verdicts name (the region model joins it in parts, tiles)."""
        st = self.inspection.get(line_id)
        if st is None or st.mode == "frame":
            return self.model_ref
        return self.line_detector(line_id).info.ref()

    # ---------------------------------------------------------------- hot swap

    def stage_model(self, detector: Detector, version: Any) -> None:
        """Called by the follower thread; the loop thread swaps before its next batch."""
        with self._swap_lock:
            self._staged = (detector, version)

    def swap_if_staged(self) -> bool:
        with self._swap_lock:
            staged, self._staged = self._staged, None
        if staged is None:
            return False
        old = self.model_ref
        self.detector, self.registry_version = staged
        self.model_ref = self.detector.info.ref()
        log.info(
            "model swapped",
            extra={
                "from": f"{old.name}/{old.version}",
                "to": f"{self.model_ref.name}/{self.model_ref.version}",
            },
        )
        return True

    # ---------------------------------------------------------------- vetting

    def vet(self, job: FrameJob, now: float) -> None:
        """Decide FAULT before inference: a frame we cannot trust is never PASS."""
        m = job.meta
        known = self.cameras.get(m.camera_id)
        if known is None:
            job.fault = (
                "fault:unknown_camera",
                f"camera {m.camera_id!r} is not in the plant config",
            )
            return
        line, cam = known
        if line.id != m.line_id:
            job.fault = (
                "fault:wrong_line",
                f"camera {m.camera_id} belongs to {line.id}, not {m.line_id}",
            )
            return
        if job.jpeg is None:
            job.fault = ("fault:claim_expired", f"claim-check {m.claim_key} expired or missing")
            return
        skew = clock_skew(m, now, self.cfg.worker.max_clock_skew_ms / 1000.0)
        if skew is not None:
            job.fault = ("fault:clock_skew", skew)
            return
        age = now - m.captured_at
        if age > self.cfg.frames.max_age_s:
            job.fault = (
                "fault:stale",
                f"frame is {age:.1f}s old (max {self.cfg.frames.max_age_s}s)",
            )
            return
        if (m.width, m.height) != (cam.width, cam.height):
            job.fault = (
                "fault:wrong_size",
                f"frame {m.width}x{m.height}, camera configured {cam.width}x{cam.height}",
            )
            return

    def vet_image(self, job: FrameJob, detector: Detector | None = None) -> None:
        """Decode and check the pixels (the part of vetting that costs CPU)."""
        m = job.meta
        assert job.jpeg is not None
        line, _ = self.cameras[m.camera_id]
        size = jpeg_size(job.jpeg)
        if size is None:
            job.fault = (
                "fault:undecodable",
                f"JPEG of {len(job.jpeg)} bytes has no frame header (SOI ... SOF)",
            )
            return
        if size != (m.width, m.height):  # checked before decoding: no pixel bombs
            job.fault = (
                "fault:wrong_size",
                f"JPEG header says {size[0]}x{size[1]}, message says {m.width}x{m.height}",
            )
            return
        scale = input_scale(self.line_detector(line.id, detector), m.width, m.height)
        img = decode_jpeg(job.jpeg, scale)
        if img is None:
            job.fault = ("fault:undecodable", f"JPEG of {len(job.jpeg)} bytes does not decode")
            return
        h, w = img.shape[:2]
        if (w * scale, h * scale) != (m.width, m.height):
            job.fault = (
                "fault:wrong_size",
                f"JPEG is {w * scale}x{h * scale}, message says {m.width}x{m.height}",
            )
            return
        ld = self.line_detector(line.id, detector)
        if isinstance(ld, RegionDetector):
            job.reduced = ld.reduce(img)[0]
        src = img if job.reduced is None else job.reduced
        small = cv2.resize(src, (64, 36), interpolation=cv2.INTER_AREA)
        if image_is_uniform(
            np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), np.uint8), line.rules.min_image_std
        ):
            job.fault = ("fault:uniform_image", "image is near-uniform (black, grey or blown out)")
            return
        job.image, job.scale = img, scale

    # ---------------------------------------------------------------- batch

    def fetch(self, jobs: list[FrameJob]) -> dict[str, bytes]:
        """One Redis round trip: claim-check JPEGs, and verdicts already decided.

        A frame redelivered after a crash or a rebalance finds its verdict here and is
        re-emitted byte for byte instead of being judged a second time.
        """
        need = [j for j in jobs if j.jpeg is None and j.meta.claim_key and j.fault is None]
        vkeys = [self.verdict_key(j.meta.frame_id) for j in jobs]
        data = self.store.get_many([j.meta.claim_key or "" for j in need] + vkeys)
        for j, d in zip(need, data[: len(need)], strict=True):
            if d is None:
                continue  # vet() turns the missing claim into fault:claim_expired
            try:
                j.jpeg = self.store.open(j.meta.claim_key or "", d)
            except BlobError as exc:  # a retired key or a tampered blob: FAULT, not a crash
                j.fault = ("fault:undecryptable", str(exc)[:500])
        return {k: v for k, v in zip(vkeys, data[len(need) :], strict=True) if v is not None}

    def verdict_key(self, frame_id: str) -> str:
        return self.store.key(verdict_id_for(frame_id), "verdict")

    def shed(self, jobs: list[FrameJob], now: float, count: bool = True) -> None:
        """Overload policy for a live line: a frame that waited longer than shed_after_ms
        is not judged (FAULT fault:shed, counted) so the fresh ones still are."""
        limit = self.cfg.worker.shed_after_ms / 1000.0
        for j in jobs:
            age = now - j.meta.captured_at
            if limit < age <= self.cfg.frames.max_age_s:
                j.fault = (
                    "fault:shed",
                    f"worker overloaded: frame {age:.2f}s old, shed after {limit:.2f}s",
                )
                if count:
                    FRAMES_DROPPED.labels(j.meta.camera_id, "shed").inc()

    def prepare(
        self, batch: list[tuple[Message, tuple[FrameMeta, bytes | None]]], detector: Detector
    ) -> Prepared:
        """Fetch, vet, decode and infer: reads Redis, never writes it, produces nothing."""
        jobs = [FrameJob(msg=m, meta=meta, jpeg=jpeg) for m, (meta, jpeg) in batch]
        self.shed(jobs, time.time(), count=False)
        decided = self.fetch(jobs)
        todo = [j for j in jobs if self.verdict_key(j.meta.frame_id) not in decided]
        now = time.time()
        for j in todo:
            if j.fault is None:
                self.vet(j, now)
        t0 = time.time()
        n = self.infer([j for j in todo if j.fault is None], detector)
        return Prepared(jobs, decided, t0, time.time(), n, detector)

    def lookahead(self, msgs: list[Message]) -> None:
        """Called by the loop with the next batch as soon as it is polled (before the
        current one runs): prepare it on the prepare thread, one batch after another,
        while the current batch is judged, emitted and committed."""
        batch = []
        for m in msgs:
            try:
                batch.append((m, decode_frame_message(m)))
            except Exception:  # the loop dead-letters it in its turn; this batch runs inline
                return
        if batch and self._staged is None:  # a staged model swaps first: run that batch inline
            fut = self.prepare_pool.submit(self.prepare, batch, self.detector)
            self._ahead.append((batch_key(msgs), fut))
            while len(self._ahead) > 2:  # the loop holds at most the current and the next
                self._drop(self._ahead.pop(0)[1])

    def _drop(self, fut: Future[Prepared]) -> None:
        self.ahead_dropped += 1
        if fut.cancel():
            return
        # let it finish: two batches never infer at once
        with contextlib.suppress(Exception):
            fut.result()

    def _take_ahead(self, batch: list[tuple[Message, Any]]) -> Prepared | None:
        """The prepared result for exactly this batch, made on the current model less
        than AHEAD_MAX_AGE_S ago, or None: the batch is then prepared inline, as without
        the pipeline (a failure there is raised as it always was). A result is never
        used for another set of records (a held batch, one record of an isolated
        batch): results for batches before it or sharing records with it are dropped,
        those for batches after it are kept for their turn."""
        key = batch_key([m for m, _ in batch])
        found = next((i for i, (k, _) in enumerate(self._ahead) if k == key), None)
        if found is None:
            records = set(key)
            keep = []
            for k, fut in self._ahead:
                if records.isdisjoint(k):
                    keep.append((k, fut))
                else:
                    self._drop(fut)
            self._ahead = keep
            return None
        for _, fut in self._ahead[:found]:
            self._drop(fut)
        fut = self._ahead[found][1]
        self._ahead = self._ahead[found + 1 :]
        try:
            prep = fut.result()
        except Exception:  # redone inline: a real failure is raised from there
            self.ahead_dropped += 1
            return None
        if prep.detector is not self.detector or time.time() - prep.t1 > AHEAD_MAX_AGE_S:
            # a hot swap came between, or a retry held it back: its vetting is stale
            self.ahead_dropped += 1
            return None
        self.ahead_used += 1
        return prep

    def drop_ahead(self) -> None:
        """Forget every prepared batch (a transient failure, a rebalance: the loop will
        hand the records again, and they are prepared afresh)."""
        while self._ahead:
            self._drop(self._ahead.pop(0)[1])

    def handle(self, batch: list[tuple[Message, tuple[FrameMeta, bytes | None]]]) -> None:
        self.swap_if_staged()  # between batches: the one in flight finished on the old model
        prep = self._take_ahead(batch)
        if prep is None:
            try:
                prep = self.prepare(batch, self.detector)
            except StoreUnavailable as exc:
                raise RetryLater(str(exc)) from None
        jobs = prep.jobs
        for j in jobs:
            if j.fault is not None and j.fault[0] == "fault:shed":
                FRAMES_DROPPED.labels(j.meta.camera_id, "shed").inc()
        if prep.inferred:
            INFERENCE_SECONDS.labels(self.model_ref.name).observe(prep.t1 - prep.t0)
            BATCH_SIZE.observe(prep.inferred)
        if self.drift is not None:
            for j in jobs:
                if j.raw is not None and j.image is not None:
                    self.watch_drift(j, j.raw)
        self.emit(jobs, prep.decided, prep.t0, prep.t1)
        self.emit_drift()

    def infer(self, jobs: list[FrameJob], detector: Detector | None = None) -> int:
        """Decode chunk k+1 while the model runs on chunk k (ONNX Runtime releases the GIL).

        Chunks are a full default batch: on this CPU build batch 8 runs 1.4x faster per
        image than batch 1 (bench part 1), more than overlapping the decode wins back.
        """
        pending: list[tuple[list[FrameJob], Future[tuple[list[list[Detection]], int, int]]]] = []
        traced = tracing.enabled()  # once per batch: no SDK, no per-frame tracing work
        det = detector or self.detector
        for start in range(0, len(jobs), INFER_CHUNK):
            chunk = jobs[start : start + INFER_CHUNK]
            for j in chunk:
                if not traced:
                    self.vet_image(j, det)
                    continue
                span = tracing.start("detect.decode", j.meta.traceparent, self.span_attrs(j))
                self.vet_image(j, det)
                if j.fault is not None:
                    span.set_attribute("inspector.fault", j.fault[0])
                    tracing.fail(span, j.fault[0])
                span.end()
            by_det: dict[int, tuple[Detector, list[FrameJob]]] = {}
            for j in chunk:
                if j.image is not None:
                    ld = self.line_detector(j.meta.line_id, det)
                    by_det.setdefault(id(ld), (ld, []))[1].append(j)
            for ld, ready in by_det.values():
                images = [j.image for j in ready if j.image is not None]
                reduced = [j.reduced for j in ready if j.reduced is not None]
                pending.append((ready, self.infer_pool.submit(self._detect, images, ld, reduced)))
                if ld is det:
                    self.references.add(images[-1:])  # what the line looks like now
        done = 0
        for ready, fut in pending:
            dets, started, ended = fut.result()
            for j, d in zip(ready, dets, strict=True):
                j.detections = scale_detections(d, j.scale)
                j.raw = d  # drift is watched when the batch is judged, in its turn
                if traced:
                    # One model call judged the whole chunk: each frame's detect.infer
                    # span carries that call's timing and the chunk's size.
                    attrs = self.span_attrs(j)
                    attrs["inspector.batch_size"] = len(ready)
                    attrs["inspector.detections"] = len(d)
                    attrs["inspector.model"] = det.info.ref().name
                    tracing.start(
                        "detect.infer", j.meta.traceparent, attrs, start_time=started
                    ).end(end_time=ended)
            done += len(ready)
        return done

    def watch_drift(self, j: FrameJob, dets: list[Detection]) -> None:
        """Add the frame's statistics (detections in the decoded image's pixels) to its
        camera's windows; a statistic crossing into or out of drift becomes an event."""
        assert self.drift is not None and j.image is not None
        m, ref = j.meta, self.model_ref
        changes = self.drift.add(m.camera_id, ref.version, self.drift_stats(j, dets))
        cam = self.drift.cameras[(m.camera_id, ref.version)]
        if cam.since_check == 0 and cam.last_psi:
            for stat, value in cam.last_psi.items():
                DRIFT_PSI.labels(m.camera_id, stat).set(value)
        for c in changes:
            self._drift_out.append(self.drift_event(m, c))

    def drift_stats(self, j: FrameJob, dets: list[Detection]) -> FrameStats:
        """The frame's statistics at the scale frame mode decodes it: a parts / tiles
        line's full-resolution frame is reduced first (INTER_AREA, ~1 ms), so its
        brightness, contrast and sharpness read like any other line's and cost the same
        (on the full frame they took ~40 % of the worker's time)."""
        assert j.image is not None
        h, w = j.image.shape[:2]
        if j.reduced is not None:
            return frame_stats(j.reduced, dets, boxes_in=(w, h))
        s = decode_scale(w, h, self.detector.info.imgsz) if j.scale == 1 else 1
        if s == 1:
            return frame_stats(j.image, dets)
        small = cv2.resize(j.image, (w // s, h // s), interpolation=cv2.INTER_AREA)
        return frame_stats(np.asarray(small, np.uint8), dets, boxes_in=(w, h))

    def drift_event(self, m: FrameMeta, c: DriftChange) -> DriftEvent:
        DRIFT_ACTIVE.labels(m.camera_id, c.statistic).set(1 if c.state == "raised" else 0)
        DRIFT_EVENTS.labels(m.camera_id, c.statistic, c.state).inc()
        log.warning(
            "drift " + c.state,
            extra={
                "camera": m.camera_id,
                "statistic": c.statistic,
                "psi": c.psi,
                "ks_pvalue": c.ks_pvalue,
                "reference_mean": c.reference_mean,
                "current_mean": c.current_mean,
                "model_version": self.model_ref.version,
            },
        )
        return DriftEvent(
            state=c.state,
            camera_id=m.camera_id,
            line_id=m.line_id,
            model=self.model_ref,
            statistic=c.statistic,
            psi=c.psi,
            ks_statistic=c.ks_statistic,
            ks_pvalue=c.ks_pvalue,
            reference_mean=c.reference_mean,
            current_mean=c.current_mean,
            window=self.cfg.learn.drift.window,
            at=time.time(),
        )

    def capture_judged(self, judged: list[tuple[FrameJob, Judgement]]) -> None:
        assert self.capture is not None
        info = self.detector.info
        names = [info.names[k] for k in sorted(info.names)]
        for j, jd in judged:
            if j.detections is None:
                continue  # a FAULT before inference: nothing to pre-annotate
            cam = (
                self.drift.cameras.get((j.meta.camera_id, self.model_ref.version))
                if self.drift is not None
                else None
            )
            self.capture.consider(
                j.meta,
                j.jpeg,
                j.detections,
                jd,
                self.model_ref,
                classes=names,
                drifting=bool(cam and cam.active),
            )

    def emit_drift(self) -> None:
        assert self.loop is not None
        out, self._drift_out = self._drift_out, []
        for ev in out:
            value, headers = encode(ev, source=SOURCE, time=ev.at)
            self.producer.produce(
                self.cfg.topics.drift,
                value=value,
                key=ev.camera_id.encode(),
                headers=headers,
                on_delivery=self.loop.tracker,
            )

    def _detect(
        self, images: list[np.ndarray], detector: Detector, reduced: list[np.ndarray] | None = None
    ) -> tuple[list[list[Detection]], int, int]:
        """The model call, with its start and end (ns since the epoch) for the spans."""
        started = time.time_ns()
        if isinstance(detector, RegionDetector) and reduced and len(reduced) == len(images):
            dets = detector.detect(images, reduced)
        else:
            dets = detector.detect(images)
        return dets, started, time.time_ns()

    @staticmethod
    def span_attrs(j: FrameJob) -> tracing.Attributes:
        return {"inspector.camera_id": j.meta.camera_id, "inspector.frame_id": j.meta.frame_id}

    def judgement(self, j: FrameJob) -> Judgement:
        m = j.meta
        if j.fault is not None or j.detections is None:
            rule, reason = j.fault or ("fault:unknown", "no detections")
            return Judgement("FAULT", rule, reason)
        judgement = self.rules[m.line_id].judge(j.detections, m.width, m.height)
        scorer = self.anomaly.get(m.line_id)
        if scorer is None:
            return judgement
        arule = self.rules[m.line_id].rules.anomaly
        return apply_anomaly(judgement, self.anomaly_report(j, scorer), arule)

    def anomaly_report(self, j: FrameJob, scorer: PartScorer) -> AnomalyReport | None:
        """Score the frame's part boxes (fully in view) on the full-resolution frame."""
        m = j.meta
        compiled = self.rules[m.line_id]
        rule = compiled.rules.anomaly
        parts = sorted(
            (
                d
                for d in j.detections or []
                if d.cls == rule.part_class
                and d.score >= rule.min_confidence
                and compiled.in_scope(d)
            ),
            key=lambda d: -d.score,
        )[: rule.max_parts]
        if not parts:
            return anomaly_report([], scorer.threshold, rule.action)
        img = j.image if j.scale == 1 else (decode_jpeg(j.jpeg, 1) if j.jpeg else None)
        if img is None:
            return None
        boxes = [(d.box.x1, d.box.y1, d.box.x2, d.box.y2) for d in parts]
        scored, skipped = scorer.score_boxes(img, boxes, round(EDGE_MARGIN_PX))
        return anomaly_report(
            [(parts[i].box, s) for i, s in scored], scorer.threshold, rule.action, skipped
        )

    def part_tally(self, judged: list[tuple[FrameJob, Judgement]]) -> dict[str, int]:
        """Failing frames per part so far (frames tagged with a part id by a trigger).

        A set of frame ids, so a redelivered frame is never counted twice.
        """
        pipe = self.store.client.pipeline(transaction=False)
        order = []
        for j, jd in judged:
            if j.meta.part_id is None or jd.verdict == "FAULT":
                continue
            key = self.store.key(f"{j.meta.line_id}:{j.meta.part_id}", "part-fails")
            if jd.verdict == "FAIL":
                pipe.sadd(key, j.meta.frame_id)
                pipe.expire(key, PART_STATE_TTL_S)
            order.append((j.meta.frame_id, len(pipe)))
            pipe.scard(key)
        if not order:
            return {}
        try:
            res = pipe.execute()
        except redis.RedisError as exc:
            raise store_error("the part tally", exc) from None
        return {fid: int(res[i]) for fid, i in order}

    def judge(
        self,
        j: FrameJob,
        judgement: Judgement,
        part_fails: int | None,
        t0: float,
        t1: float,
        pipe: Any,
    ) -> VerdictEvent:
        m = j.meta
        dets: list[Detection] = (j.detections or []) if judgement.verdict != "FAULT" else []
        part_verdict = None
        if part_fails is not None:
            rules = self.rules[m.line_id].rules
            part_verdict = "FAIL" if part_decision(part_fails, rules) else "PASS"
        evidence_key = annotated_key = None
        if judgement.verdict == "FAIL":
            evidence_key, annotated_key = self.keep_evidence(
                j, judgement, dets, pipe, self.cfg.frames.evidence_ttl_s
            )
        elif m.storage == "redis":
            evidence_key = m.claim_key
        inferred = j.detections is not None
        return VerdictEvent(
            verdict_id=verdict_id_for(m.frame_id),
            frame_id=m.frame_id,
            camera_id=m.camera_id,
            line_id=m.line_id,
            seq=m.seq,
            part_id=m.part_id,
            part_failed_frames=part_fails,
            part_verdict=part_verdict,
            verdict=judgement.verdict,
            rule=judgement.rule,
            reason=judgement.reason,
            findings=judgement.findings,
            detections=dets,
            model=self.ref_for(m.line_id),
            timings=Timings(
                captured_at=m.captured_at,
                ingested_at=m.ingested_at,
                infer_start=round(t0, 6) if inferred else None,
                infer_end=round(t1, 6) if inferred else None,
                emitted_at=round(time.time(), 6),
            ),
            evidence_key=evidence_key,
            annotated_key=annotated_key,
            anomaly=judgement.anomaly,
        )

    def emit(self, jobs: list[FrameJob], decided: dict[str, bytes], t0: float, t1: float) -> None:
        if tracing.enabled():  # else j.span stays None: the verdict gets a plain W3C child
            for j in jobs:
                j.span = tracing.start("detect.judge", j.meta.traceparent, self.span_attrs(j))
        try:
            self._emit(jobs, decided, t0, t1)
        except BaseException as exc:  # the batch is redone; its spans say why this try failed
            for j in jobs:
                if j.span is not None:
                    tracing.fail(j.span, str(exc)[:200])
                    j.span.end()
                    j.span = None
            raise

    def _emit(self, jobs: list[FrameJob], decided: dict[str, bytes], t0: float, t1: float) -> None:
        assert self.loop is not None
        pipe = self.store.client.pipeline(transaction=False)
        fresh: list[tuple[FrameJob, bytes, int]] = []
        judged = [
            (j, self.judgement(j)) for j in jobs if self.verdict_key(j.meta.frame_id) not in decided
        ]
        tally = self.part_tally(judged)
        for j, jd in judged:
            v = self.judge(j, jd, tally.get(j.meta.frame_id), t0, t1, pipe)
            value = verdict_json(v)
            fs = self.cfg.frames
            ttl = fs.evidence_ttl_s if v.verdict == "FAIL" else fs.claim_ttl_s
            # SET NX GET: the first verdict stored for a frame is the canonical one, even
            # when a zombie worker judges the same frame concurrently.
            fresh.append((j, value, len(pipe)))
            pipe.set(self.verdict_key(j.meta.frame_id), value, ex=ttl, nx=True, get=True)
        try:
            results = pipe.execute() if len(pipe) else []
        except redis.RedisError as exc:  # the batch is redone, ids are deterministic
            raise store_error("the verdict write", exc) from None
        if self.capture is not None:
            self.capture_judged(judged)
        canonical: dict[str, bytes] = dict(decided)
        for j, value, idx in fresh:
            old = results[idx]
            canonical[self.verdict_key(j.meta.frame_id)] = old if isinstance(old, bytes) else value
        emitted = []
        for j in jobs:
            value = canonical[self.verdict_key(j.meta.frame_id)]
            v = VerdictEvent.model_validate(orjson.loads(value))
            self.produce_verdict(j.meta, v, value, j.span)
            emitted.append(v)
            span, j.span = j.span, None
            if span is not None:
                if span.is_recording():
                    span.set_attribute("inspector.verdict", v.verdict)
                    span.set_attribute("inspector.rule", v.rule)
                    span.set_attribute("inspector.verdict_id", v.verdict_id)
                    span.set_attribute("inspector.line_id", v.line_id)
                    key = self.verdict_key(j.meta.frame_id)
                    span.set_attribute("inspector.redelivered", key in decided)
                span.end()
        self.after_emit(emitted)

    def produce_verdict(
        self, m: FrameMeta, v: VerdictEvent, value: bytes, span: Any = None
    ) -> None:
        assert self.loop is not None
        tracker = self.loop.tracker
        topics = self.cfg.topics
        # The verdict continues the frame's trace: it carries the detect.judge span's
        # context (a plain W3C child of the frame's traceparent without an SDK).
        tp = tracing.traceparent_of(span, m.traceparent)
        headers = with_traceparent(ce_headers(v, source=SOURCE, time=v.timings.emitted_at), tp)
        key = m.camera_id.encode()
        self.producer.produce(
            topics.verdicts, value=value, key=key, headers=headers, on_delivery=tracker
        )
        if v.verdict == "FAIL":
            d = DefectEvent(
                defect_id=deterministic_id("defect", v.verdict_id),
                verdict_id=v.verdict_id,
                frame_id=v.frame_id,
                camera_id=v.camera_id,
                line_id=v.line_id,
                seq=v.seq,
                part_id=v.part_id,
                findings=v.findings,
                captured_at=v.timings.captured_at,
                evidence_key=v.evidence_key,
                annotated_key=v.annotated_key,
            )
            dv, dh = encode(d, source=SOURCE, time=v.timings.emitted_at)
            dh = with_traceparent(dh, tp)
            self.producer.produce(
                topics.defects, value=dv, key=key, headers=dh, on_delivery=tracker
            )

    def keep_evidence(
        self, j: FrameJob, judgement: Judgement, dets: list[Detection], pipe: Any, ttl: int
    ) -> tuple[str | None, str | None]:
        m = j.meta
        if m.storage == "redis" and m.claim_key:
            pipe.expire(m.claim_key, ttl)
            evidence_key: str | None = m.claim_key
        else:
            evidence_key = self.store.key(m.frame_id, "evidence")
            assert j.jpeg is not None
            pipe.set(evidence_key, self.store.seal(evidence_key, j.jpeg), ex=ttl)
        annotated_key = None
        if self.cfg.worker.annotate_evidence and j.jpeg is not None:
            # a parts / tiles line decoded the frame at full size already: a copy (the
            # annotation draws on it) instead of a second decode
            full = (
                j.image.copy() if j.image is not None and j.scale == 1 else decode_jpeg(j.jpeg, 1)
            )
            if full is not None:
                ok, buf = cv2.imencode(
                    ".jpg", annotate(full, judgement, dets), [cv2.IMWRITE_JPEG_QUALITY, 85]
                )
                if ok:
                    annotated_key = self.store.key(m.frame_id, "annotated")
                    pipe.set(annotated_key, self.store.seal(annotated_key, buf.tobytes()), ex=ttl)
        return evidence_key, annotated_key

    def after_emit(self, emitted: list[VerdictEvent]) -> None:
        # Latency is observed once the loop flushed; here we record what was emitted.
        self._pending_latency = emitted
        for v in emitted:
            VERDICTS.labels(v.line_id, v.verdict).inc()
            for f in v.findings:
                DEFECTS.labels(v.line_id, f.cls).inc()
        self.processed += len(emitted)

    def observe_latency(self) -> None:
        now = time.time()
        for v in self._pending_latency:
            # max(0): a skewed frame (FAULT) must not drag the histogram's sum negative.
            CAPTURE_TO_VERDICT.labels(v.line_id).observe(max(0.0, now - v.timings.captured_at))
        self._pending_latency = []


def load_anomaly_scorers(cfg: PlantConfig) -> dict[str, PartScorer]:
    """One scorer per line whose rules turn the anomaly channel on (banks shared)."""
    out: dict[str, PartScorer] = {}
    cache: dict[tuple[str, float | None], PartScorer] = {}
    for ln in cfg.lines:
        a = ln.rules.anomaly
        if not a.enabled:
            continue
        key = (a.bank, a.threshold)
        if key not in cache:
            try:
                cache[key] = PartScorer(anomaly_bank_dir(a.bank), a.threshold)
            except AnomalyError as exc:
                raise ModelError(f"line {ln.id}: anomaly bank {a.bank}: {exc}") from None
        out[ln.id] = cache[key]
    return out


def decode_frame_message(msg: Message) -> tuple[FrameMeta, bytes | None]:
    return decode_frame(msg.value(), msg.headers())


def region_key(st: InspectionSettings) -> str:
    return f"{st.region_model}@{st.crop_size}"


def load_region_models(cfg: PlantConfig) -> dict[str, Detector]:
    """One region model per distinct (model, crop size) among the lines in parts or tiles
    mode, loaded with the worker model's backend, device, threads, conf and iou."""
    out: dict[str, Detector] = {}
    for ln in cfg.lines:
        st = ln.inspection
        if st.mode != "frame" and region_key(st) not in out:
            out[region_key(st)] = load_detector(
                cfg.model.model_copy(update={"path": st.region_model, "imgsz": st.crop_size})
            )
    return out


def transactional_id(cfg: PlantConfig) -> str:
    # Stable per instance (pod name on Kubernetes) so a restarted worker fences its zombie.
    return f"{cfg.worker.group_id}-{instance_id()}"


def build_worker(
    cfg: PlantConfig, *, detector: Detector | None = None, shutdown: Any = None
) -> tuple[DetectWorker, StreamLoop[tuple[FrameMeta, bytes | None]]]:
    """Composition root of the detect stage (used by the CLI, the demo and the tests)."""
    client = connect(cfg.redis)
    store = FrameStore(client, cfg.redis.key_prefix, cfg.frames.claim_ttl_s, store_sealer(cfg))
    registry, version, alias = None, None, None
    if detector is None and cfg.model.path.startswith("models:/"):
        registry, version, alias, detector = load_from_registry(cfg)
    det = detector or load_detector(cfg.model)
    worker = DetectWorker(cfg, det, store)
    worker.registry, worker.registry_version, worker.follow_alias = registry, version, alias
    eos = cfg.worker.exactly_once
    producer = make_producer(
        cfg.kafka,
        client_suffix="detect",
        linger_ms=1.0,
        transactional_id=transactional_id(cfg) if eos else None,
    )
    consumer = stage_consumer(cfg.kafka, cfg.worker.group_id, "detect")
    loop: StreamLoop[tuple[FrameMeta, bytes | None]] = StreamLoop(
        consumer=consumer,
        producer=producer,
        topics=[cfg.topics.frames],
        dlq_topic=cfg.topics.dlq,
        stage="detect",
        decode=decode_frame_message,
        handle=worker.handle,
        max_batch=cfg.worker.max_batch,
        max_wait_s=cfg.worker.max_wait_ms / 1000.0,
        max_message_bytes=cfg.kafka.message_max_bytes,
        transactional=eos,
        shutdown=shutdown,
        after_commit=worker.observe_latency,
        lookahead=worker.lookahead if cfg.worker.pipeline else None,
    )
    worker.loop = loop
    worker.producer = producer
    return worker, loop


def load_from_registry(cfg: PlantConfig) -> tuple[Any, Any, str | None, Detector]:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` → the registry, the
    version, the alias to follow (None when pinned) and the loaded detector. Raises
    RegistryError (unreachable, unknown version, sha256 mismatch) or ModelError."""
    from inspector.registry import Registry, parse_model_uri

    _, alias, _ = parse_model_uri(cfg.model.path)
    registry = Registry(cfg.learn)
    registry.check()
    version = registry.resolve(cfg.model.path)
    det = load_registry_version(cfg, registry.fetch(version), version)
    return registry, version, alias, det


def load_registry_version(cfg: PlantConfig, path: Any, version: Any) -> Detector:
    return registry_info(load_detector(cfg.model.model_copy(update={"path": str(path)})), version)


def start_follower(cfg: PlantConfig, worker: DetectWorker, shutdown: Any) -> ModelFollower | None:
    """Follow the worker's alias (hot swap); None for a model that is not followed."""
    if worker.registry is None or worker.follow_alias is None:
        return None
    return ModelFollower(
        cfg,
        worker.registry,
        worker.follow_alias,
        worker.registry_version,
        current=lambda: worker.detector,
        load=lambda path, mv: load_registry_version(cfg, path, mv),
        stage=worker.stage_model,
        shutdown=shutdown,
        references=worker.references,
    ).start()


def verdict_json(v: VerdictEvent) -> bytes:
    return orjson.dumps(v.model_dump(mode="json", exclude_none=True))


def run_worker(cfg: PlantConfig, *, metrics_port: int | None = None, shutdown: Any = None) -> int:
    """Run one worker until SIGTERM/SIGINT; return the process exit code."""
    from inspector.bus.crypto import KeyringError
    from inspector.bus.kafka import ServiceUnavailable, Shutdown, check_broker
    from inspector.telemetry.health import Heartbeat, serve_health

    shutdown = shutdown or Shutdown().install()
    from inspector.registry import RegistryError

    try:
        check_broker(cfg.kafka)
        worker, loop = build_worker(cfg, shutdown=shutdown)
    except (ServiceUnavailable, KeyringError, RegistryError, ModelError) as exc:
        log.error(str(exc))
        return 1
    follower = start_follower(cfg, worker, shutdown)
    beat = Heartbeat()
    port = cfg.observe.worker_port if metrics_port is None else metrics_port

    def ready_redis() -> bool:
        return bool(worker.store.client.ping())

    health = serve_health(
        cfg.observe.metrics_host,
        port,
        beat,
        {
            "kafka": lambda: bool(loop.assigned) or loop.stats.last_progress > 0,
            "redis": ready_redis,
            "model": lambda: worker.detector is not None,
        },
    )
    loop.on_idle = beat.beat

    def after_commit() -> None:
        beat.beat()
        worker.observe_latency()

    loop.after_commit = after_commit
    log.info(
        "worker started",
        extra={
            "group": cfg.worker.group_id,
            "model": worker.model_ref.name,
            "metrics_port": health.port if health else None,
        },
    )
    try:
        stats = loop.run()
    except KafkaException as exc:
        # Fenced by a newer instance with our transactional id, or another fatal client
        # error: exit non-zero so the supervisor restarts us with a fresh producer.
        log.error("worker stopped by a fatal Kafka error", extra={"error": str(exc)})
        return 3
    finally:
        if follower is not None:
            follower.join(5)
        if health:
            health.close()
    log.info(
        "worker stopped", extra={"records": stats.records, "dead_lettered": stats.dead_lettered}
    )
    return 0
