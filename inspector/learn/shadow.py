"""Shadow: a candidate model judges a share of live frames beside production, never acted on.

``inspector shadow`` is its own consumer group on the frames topic. A frame is in the
share when a hash of its id falls below ``learn.shadow.share`` (every shadow instance,
and every rerun, picks the same frames). It is judged with the candidate and the
line's own rules and written to ``shadow-verdicts`` (act never reads that topic). A
frame the shadow cannot judge (claim expired, undecodable) is counted, not guessed.

``inspector shadow report`` joins shadow and production verdicts by frame and says,
per line and per class, how often they agree, which FAILs the candidate adds and
which it misses, each with the production verdict id for ``inspector evidence``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from inspector.bus.kafka import ensure_topics, make_producer, stage_consumer
from inspector.bus.loop import RetryLater, StreamLoop
from inspector.bus.store import FrameStore, StoreUnavailable, connect
from inspector.config import PlantConfig
from inspector.detect.rules import CompiledRules
from inspector.detect.worker import decode_jpeg, scale_detections
from inspector.events import (
    FrameMeta,
    Timings,
    VerdictEvent,
    decode_frame,
    encode,
    verdict_id_for,
)
from inspector.inference.model import Detector, decode_scale

log = logging.getLogger(__name__)

SOURCE = "inspector/shadow"


def in_share(frame_id: str, share: float) -> bool:
    """Deterministic sampling: the same frames for every instance and every rerun."""
    h = int.from_bytes(hashlib.blake2b(frame_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < share


@dataclass
class ShadowStats:
    judged: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # not in share, no image, ...


class ShadowJudge:
    """The shadow's handler: judge sampled frames with ``detector`` and the line rules."""

    def __init__(self, cfg: PlantConfig, detector: Detector, store: FrameStore) -> None:
        self.cfg = cfg
        self.detector = detector
        self.store = store
        self.rules = {ln.id: CompiledRules(ln.rules) for ln in cfg.lines}
        self.share = cfg.learn.shadow.share
        self.stats = ShadowStats()
        self.producer: Any = None
        self.loop: StreamLoop[tuple[FrameMeta, bytes | None]] | None = None

    def image_of(self, meta: FrameMeta, inline: bytes | None) -> tuple[Any, int] | None:
        jpeg = inline
        if jpeg is None and meta.claim_key:
            try:
                blob = self.store.get_many([meta.claim_key])[0]
            except StoreUnavailable as exc:
                raise RetryLater(str(exc)) from None
            if blob is None:
                self.stats.skipped["claim_expired"] += 1
                return None
            try:
                jpeg = self.store.open(meta.claim_key, blob)
            except Exception:
                self.stats.skipped["undecryptable"] += 1
                return None
        if jpeg is None:
            self.stats.skipped["no_image"] += 1
            return None
        scale = decode_scale(meta.width, meta.height, self.detector.info.imgsz)
        img = decode_jpeg(jpeg, scale)
        if img is None:
            self.stats.skipped["undecodable"] += 1
            return None
        return img, scale

    def handle(self, batch: list[tuple[Message, tuple[FrameMeta, bytes | None]]]) -> None:
        assert self.loop is not None
        todo: list[tuple[FrameMeta, Any, int]] = []
        for _msg, (meta, inline) in batch:
            if meta.line_id not in self.rules:
                self.stats.skipped["unknown_line"] += 1
                continue
            if not in_share(meta.frame_id, self.share):
                self.stats.skipped["not_sampled"] += 1
                continue
            got = self.image_of(meta, inline)
            if got is not None:
                todo.append((meta, got[0], got[1]))
        if not todo:
            return
        t0 = time.time()
        results = self.detector.detect([img for _m, img, _s in todo])
        t1 = time.time()
        ref = self.detector.info.ref()
        for (meta, _img, scale), dets in zip(todo, results, strict=True):
            dets = scale_detections(dets, scale)
            jd = self.rules[meta.line_id].judge(dets, meta.width, meta.height)
            v = VerdictEvent(
                verdict_id=verdict_id_for(meta.frame_id),
                frame_id=meta.frame_id,
                camera_id=meta.camera_id,
                line_id=meta.line_id,
                seq=meta.seq,
                part_id=meta.part_id,
                verdict=jd.verdict,
                rule=jd.rule,
                reason=jd.reason,
                findings=jd.findings,
                detections=dets,
                model=ref,
                timings=Timings(
                    captured_at=meta.captured_at,
                    ingested_at=meta.ingested_at,
                    infer_start=round(t0, 6),
                    infer_end=round(t1, 6),
                    emitted_at=round(time.time(), 6),
                ),
            )
            value, headers = encode(v, source=SOURCE, time=v.timings.emitted_at)
            self.producer.produce(
                self.cfg.topics.shadow_verdicts,
                value=value,
                key=meta.camera_id.encode(),
                headers=headers,
                on_delivery=self.loop.tracker,
            )
            self.stats.judged += 1


def build_shadow(
    cfg: PlantConfig, detector: Detector, *, shutdown: Any = None
) -> tuple[ShadowJudge, StreamLoop[tuple[FrameMeta, bytes | None]]]:
    """Composition of ``inspector shadow`` (used by the CLI and the tests)."""
    from inspector.bus.crypto import store_sealer

    ensure_topics(cfg.kafka, cfg.topics, [cfg.topics.frames, cfg.topics.shadow_verdicts])
    client = connect(cfg.redis)
    store = FrameStore(client, cfg.redis.key_prefix, cfg.frames.claim_ttl_s, store_sealer(cfg))
    judge = ShadowJudge(cfg, detector, store)
    producer = make_producer(cfg.kafka, client_suffix="shadow")
    consumer = stage_consumer(cfg.kafka, cfg.learn.shadow.group_id, "shadow")
    loop: StreamLoop[tuple[FrameMeta, bytes | None]] = StreamLoop(
        consumer=consumer,
        producer=producer,
        topics=[cfg.topics.frames],
        dlq_topic=cfg.topics.dlq,
        stage="shadow",
        decode=lambda m: decode_frame(m.value(), m.headers()),
        handle=judge.handle,
        max_batch=cfg.learn.shadow.max_batch,
        max_message_bytes=cfg.kafka.message_max_bytes,
        shutdown=shutdown,
    )
    judge.loop, judge.producer = loop, producer
    return judge, loop


# --------------------------------------------------------------------------- report


@dataclass
class Flip:
    frame_id: str
    line_id: str
    production: str
    shadow: str
    production_verdict_id: str
    classes: list[str]


@dataclass
class GroupStats:
    compared: int = 0
    agreed: int = 0
    new_fails: int = 0
    missed_fails: int = 0

    @property
    def agreement(self) -> float | None:
        return round(self.agreed / self.compared, 4) if self.compared else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "agreement": self.agreement,
            "new_fails": self.new_fails,
            "missed_fails": self.missed_fails,
        }


@dataclass
class AgreementReport:
    model: str | None = None
    compared: int = 0
    without_production: int = 0  # shadow verdicts whose production verdict was not found
    production_faults: int = 0  # frames production could not trust: not compared
    total: GroupStats = field(default_factory=GroupStats)
    by_line: dict[str, GroupStats] = field(default_factory=lambda: defaultdict(GroupStats))
    by_class: dict[str, GroupStats] = field(default_factory=lambda: defaultdict(GroupStats))
    flips: list[Flip] = field(default_factory=list)

    def as_dict(self, max_flips: int = 50) -> dict[str, Any]:
        return {
            "model": self.model,
            "compared": self.total.compared,
            "agreement": self.total.agreement,
            "new_fails": self.total.new_fails,
            "missed_fails": self.total.missed_fails,
            "without_production": self.without_production,
            "production_faults": self.production_faults,
            "by_line": {k: v.as_dict() for k, v in sorted(self.by_line.items())},
            "by_class": {k: v.as_dict() for k, v in sorted(self.by_class.items())},
            "flips": [vars(f) for f in self.flips[:max_flips]],
        }


def agreement(
    production: Iterable[VerdictEvent], shadow: Iterable[VerdictEvent]
) -> AgreementReport:
    """Pure: compare each shadow verdict with production's verdict for the same frame.

    Classes are those either side's findings name (a FAIL's defect classes); a frame
    counts towards each class it mentions."""
    prod = {v.frame_id: v for v in production}
    rep = AgreementReport()
    for s in shadow:
        rep.model = f"{s.model.name}/{s.model.version}" if s.model else rep.model
        p = prod.get(s.frame_id)
        if p is None:
            rep.without_production += 1
            continue
        if p.verdict == "FAULT":
            rep.production_faults += 1
            continue
        classes = sorted({f.cls for f in p.findings} | {f.cls for f in s.findings})
        groups = [rep.total, rep.by_line[s.line_id], *(rep.by_class[c] for c in classes)]
        same = p.verdict == s.verdict
        new_fail = s.verdict == "FAIL" and p.verdict != "FAIL"
        missed = p.verdict == "FAIL" and s.verdict != "FAIL"
        for g in groups:
            g.compared += 1
            g.agreed += same
            g.new_fails += new_fail
            g.missed_fails += missed
        if not same:
            rep.flips.append(
                Flip(s.frame_id, s.line_id, p.verdict, s.verdict, p.verdict_id, classes)
            )
    rep.compared = rep.total.compared
    return rep
