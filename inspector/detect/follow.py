"""Hot swap: a worker whose model is ``models:/<name>@<alias>`` follows the alias.

A follower thread listens on ``model-events`` (and re-reads the alias every
``learn.follow.recheck_s``, so a missed event still converges). When the alias names
another version it downloads it, loads it *beside* the running model, and checks it:

- its entry file's sha256 is the registered one (checked by the registry's fetch);
- it loads at all (a corrupt file is refused, never half-loaded);
- same input contract: the same input size as the running model;
- expected classes: every class the running model or the plant's rules know;
- a smoke run on reference frames (the last frames this worker judged, or a grey frame
  before the first) gives well-formed detections.

A candidate that passes is *staged*; the worker swaps between two batches (the batch
in flight finishes on the old model, the next starts on the new one), so no frame is
lost or judged twice and every verdict names the model that judged it. One that fails
is refused with a ``refused`` model event and ``inspector_model_swaps_total{outcome=
"refused"}``; the worker keeps its model. A registry that cannot be reached changes
nothing but a warning and ``outcome="unavailable"``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from confluent_kafka import OFFSET_END, Message, TopicPartition

from inspector.bus.kafka import Shutdown, ensure_topics, instance_id, make_consumer
from inspector.config import PlantConfig
from inspector.events import EventError, ModelEvent, decode
from inspector.inference.model import Detector, ModelError
from inspector.registry import ModelVersion, Registry, RegistryError, RegistryUnavailable
from inspector.registry.announce import model_event, publish
from inspector.telemetry.metrics import MODEL_SWAPS, MODEL_VERSION

log = logging.getLogger(__name__)

Loader = Callable[[Path, ModelVersion], Detector]


class CandidateRefused(Exception):
    """A new version failed its check; the message says which and why."""


def check_candidate(
    current: Detector, candidate: Detector, rule_classes: set[str], frames: list[np.ndarray]
) -> None:
    """Raise CandidateRefused unless ``candidate`` can take over from ``current``."""
    cur, new = current.info, candidate.info
    if new.imgsz != cur.imgsz:
        raise CandidateRefused(
            f"input size {new.imgsz} differs from the running model's {cur.imgsz}"
        )
    missing = (set(cur.names.values()) | rule_classes) - set(new.names.values())
    if missing:
        raise CandidateRefused(f"classes missing: {sorted(missing)}")
    try:
        results = candidate.detect(frames)
    except Exception as exc:
        raise CandidateRefused(f"smoke run failed: {type(exc).__name__}: {exc}") from None
    if len(results) != len(frames):
        raise CandidateRefused(f"smoke run gave {len(results)} results for {len(frames)} frames")
    known = set(new.names.values())
    for img, dets in zip(frames, results, strict=True):
        h, w = img.shape[:2]
        for d in dets:
            b = d.box
            ok = (
                d.cls in known
                and all(np.isfinite(v) for v in (b.x1, b.y1, b.x2, b.y2))
                and -1 <= b.x1 <= b.x2 <= w + 1
                and -1 <= b.y1 <= b.y2 <= h + 1
            )
            if not ok:
                raise CandidateRefused(f"smoke run gave a malformed detection: {d}")


class ReferenceFrames:
    """The last few frames this worker judged (what the line looks like now)."""

    def __init__(self, keep: int) -> None:
        self._frames: deque[np.ndarray] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, images: list[np.ndarray]) -> None:
        with self._lock:
            self._frames.extend(images[-(self._frames.maxlen or 1) :])

    def get(self) -> list[np.ndarray]:
        with self._lock:
            frames = list(self._frames)
        return frames or [np.full((480, 640, 3), 114, dtype=np.uint8)]


class ModelFollower:
    """Runs beside the worker's stream loop; hands checked versions to ``stage``."""

    def __init__(
        self,
        cfg: PlantConfig,
        registry: Registry,
        alias: str,
        running: ModelVersion,
        current: Callable[[], Detector],
        load: Loader,
        stage: Callable[[Detector, ModelVersion], None],
        shutdown: Shutdown,
        references: ReferenceFrames,
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.alias = alias
        self.running = running
        self.current = current
        self.load = load
        self.stage = stage
        self.shutdown = shutdown
        self.references = references
        self.rule_classes = {c for ln in cfg.lines for c in ln.rules.classes}
        self.refused: set[tuple[str, str]] = set()  # (version, sha256) already refused
        self.worker = instance_id()
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="model-follower", daemon=True)
        self.checks = 0
        MODEL_VERSION.labels(running.name, running.version).set(1)

    def start(self) -> ModelFollower:
        self.thread.start()
        return self

    def join(self, timeout: float) -> None:
        self.wake.set()
        self.thread.join(timeout)

    # ------------------------------------------------------------------ thread

    def _consumer(self) -> object:
        topic = self.cfg.topics.model_events
        ensure_topics(self.cfg.kafka, self.cfg.topics, [topic])
        consumer = make_consumer(
            self.cfg.kafka, f"model-follow-{uuid.uuid4().hex[:12]}", client_suffix="follow"
        )
        md = consumer.list_topics(topic, timeout=10)
        parts = md.topics[topic].partitions if topic in md.topics else {0: None}
        consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in parts])
        return consumer

    def _run(self) -> None:
        try:
            consumer = self._consumer()
        except Exception as exc:  # the loop's own readiness reports a broker that is down
            log.warning(
                "model follower cannot read model-events; re-checking the registry only",
                extra={"error": str(exc)},
            )
            consumer = None
        next_check = time.monotonic() + self.cfg.learn.follow.recheck_s
        try:
            while not self.shutdown.requested:
                if consumer is not None:
                    msg = consumer.poll(0.5)  # type: ignore[attr-defined]
                    if msg is not None and self._is_move(msg):
                        self.check()
                else:
                    self.wake.wait(0.5)
                if time.monotonic() >= next_check:
                    self.check()
                    next_check = time.monotonic() + self.cfg.learn.follow.recheck_s
        finally:
            if consumer is not None:
                consumer.close()  # type: ignore[attr-defined]

    def _is_move(self, msg: Message) -> bool:
        if msg.error() is not None:
            return False
        try:
            ev = decode(msg.value(), msg.headers(), ModelEvent)
        except EventError:
            return False
        return (
            ev.kind in ("promoted", "rolled_back")
            and ev.model_name == self.running.name
            and ev.alias == self.alias
        )

    # ------------------------------------------------------------------ check

    def check(self) -> str:
        """Read the alias; load, check and stage a new version. → the outcome."""
        self.checks += 1
        try:
            mv = self.registry.by_alias(self.alias)
        except RegistryError as exc:
            MODEL_SWAPS.labels("unavailable").inc()
            log.warning(
                "registry not readable; keeping the running model",
                extra={"error": str(exc), "version": self.running.version},
            )
            return "unavailable"
        if mv.version == self.running.version and mv.sha256 == self.running.sha256:
            return "current"
        if (mv.version, mv.sha256) in self.refused:
            return "refused-before"
        try:
            path = self.registry.fetch(mv)
            candidate = self.load(path, mv)
            check_candidate(self.current(), candidate, self.rule_classes, self.references.get())
        except RegistryUnavailable as exc:
            MODEL_SWAPS.labels("unavailable").inc()
            log.warning(
                "registry not readable; keeping the running model",
                extra={"error": str(exc), "version": self.running.version},
            )
            return "unavailable"
        except (RegistryError, ModelError, CandidateRefused, OSError) as exc:
            return self._refuse(mv, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a loader bug must not take the worker down either
            return self._refuse(mv, f"{type(exc).__name__}: {exc}")
        previous = self.running
        self.stage(candidate, mv)
        self.running = mv
        MODEL_VERSION.labels(previous.name, previous.version).set(0)
        MODEL_VERSION.labels(mv.name, mv.version).set(1)
        MODEL_SWAPS.labels("swapped").inc()
        log.info(
            "model version staged; the worker swaps before its next batch",
            extra={"from": previous.version, "to": mv.version, "alias": self.alias},
        )
        self._announce("swapped", mv, previous_version=previous.version)
        return "swapped"

    def _refuse(self, mv: ModelVersion, reason: str) -> str:
        self.refused.add((mv.version, mv.sha256))
        MODEL_SWAPS.labels("refused").inc()
        log.error(
            "model version refused; keeping the running model",
            extra={"version": mv.version, "running": self.running.version, "reason": reason[:500]},
        )
        self._announce("refused", mv, previous_version=self.running.version, reason=reason)
        return "refused"

    def _announce(self, kind: str, mv: ModelVersion, **kw: str) -> None:
        ev = model_event(
            kind,  # type: ignore[arg-type]
            mv.name,
            mv.version,
            alias=self.alias,
            sha256=mv.sha256,
            worker=self.worker,
            **kw,
        )
        try:
            publish(self.cfg, [ev])
        except Exception as exc:  # the swap itself does not depend on the announcement
            log.warning("model event not published", extra={"kind": kind, "error": str(exc)})


def registry_info(det: Detector, mv: ModelVersion) -> Detector:
    """Name the detector after its registry version (verdicts carry it)."""
    det.info = replace(det.info, name=mv.name, version=mv.version, sha256=mv.sha256)
    return det
