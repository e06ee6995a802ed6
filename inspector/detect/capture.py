"""Data capture for labelling: the frames that would make the next model better.

Strategies (each rate-limited per hour across all workers with one Redis counter per
strategy and hour, ``<prefix>:learn:capture:<strategy>:<YYYYmmddHH>``):

- ``near_threshold``: a detection whose score is within ``near_threshold_margin`` of its
  class rule's ``min_confidence`` (the model's least certain calls);
- ``drift``: frames of a camera while one of its statistics is in drift;
- ``random``: a ``random_rate`` share of the rest (what the line usually looks like).

Each captured frame is two files in ``learn.capture.dir``: ``<name>.jpg`` (the frame
as published, already masked where the camera has privacy masks) and ``<name>.json``
with the predictions as pre-annotations (boxes in the image's pixels) and why it was
taken. ``inspector dataset export`` turns the folder into YOLO or COCO for CVAT or
Label Studio. Files are written to a temporary name and renamed, so an exporter never
reads half a frame.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from inspector.config import CaptureSettings
from inspector.detect.rules import Judgement
from inspector.events import Detection, FrameMeta, ModelRef
from inspector.telemetry.metrics import CAPTURED

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def capture_key(prefix: str, strategy: str, at: float) -> str:
    return f"{prefix}:learn:capture:{strategy}:{time.strftime('%Y%m%d%H', time.gmtime(at))}"


def file_stem(frame_id: str) -> str:
    digest = hashlib.sha256(frame_id.encode()).hexdigest()[:8]
    return f"{_SAFE.sub('_', frame_id)[:150]}-{digest}"


class Capture:
    def __init__(
        self,
        settings: CaptureSettings,
        client: redis.Redis,
        prefix: str,
        min_confidence: dict[str, dict[str, float]],
        rng: random.Random | None = None,
    ) -> None:
        self.s = settings
        self.client = client
        self.prefix = prefix
        self.min_confidence = min_confidence  # line → class → rule threshold
        self.dir = Path(settings.dir)
        self.rng = rng or random.Random()
        self.limits = {
            "near_threshold": settings.near_threshold_per_hour,
            "drift": settings.drift_per_hour,
            "random": settings.random_per_hour,
        }

    def strategy(self, meta: FrameMeta, dets: list[Detection], drifting: bool) -> str | None:
        rules = self.min_confidence.get(meta.line_id, {})
        margin = self.s.near_threshold_margin
        if any(d.cls in rules and abs(d.score - rules[d.cls]) <= margin for d in dets):
            return "near_threshold"
        if drifting:
            return "drift"
        if self.s.random_rate > 0 and self.rng.random() < self.s.random_rate:
            return "random"
        return None

    def _allowed(self, strategy: str, now: float) -> bool:
        limit = self.limits[strategy]
        if limit <= 0:
            return False
        key = capture_key(self.prefix, strategy, now)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 7200)
            n = int(pipe.execute()[0])
        except redis.RedisError as exc:  # capture is best effort; judging goes on
            log.warning("capture skipped: Redis unavailable", extra={"error": str(exc)})
            return False
        return n <= limit

    def consider(
        self,
        meta: FrameMeta,
        jpeg: bytes | None,
        dets: list[Detection],
        judgement: Judgement,
        model: ModelRef,
        *,
        classes: list[str] | None = None,
        drifting: bool = False,
    ) -> str | None:
        """Capture the frame if a strategy wants it and its hourly budget allows; →
        the strategy, or None."""
        if jpeg is None:
            return None
        strategy = self.strategy(meta, dets, drifting)
        now = time.time()
        if strategy is None or not self._allowed(strategy, now):
            return None
        record: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "frame_id": meta.frame_id,
            "camera_id": meta.camera_id,
            "line_id": meta.line_id,
            "captured_at": meta.captured_at,
            "width": meta.width,
            "height": meta.height,
            "strategy": strategy,
            "verdict": judgement.verdict,
            "rule": judgement.rule,
            "model": model.model_dump(mode="json"),
            "classes": classes or sorted({d.cls for d in dets}),
            "predictions": [
                {
                    "cls": d.cls,
                    "score": round(d.score, 4),
                    "x1": d.box.x1,
                    "y1": d.box.y1,
                    "x2": d.box.x2,
                    "y2": d.box.y2,
                }
                for d in dets
            ],
        }
        stem = file_stem(meta.frame_id)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            _write(self.dir / f"{stem}.jpg", jpeg)
            _write(self.dir / f"{stem}.json", orjson.dumps(record, option=orjson.OPT_INDENT_2))
        except OSError as exc:
            log.warning("capture not written", extra={"error": str(exc), "dir": str(self.dir)})
            return None
        CAPTURED.labels(strategy).inc()
        return strategy


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
