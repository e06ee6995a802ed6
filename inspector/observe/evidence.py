"""Evidence of a verdict: find it, fetch its frame from Redis, draw what was found.

Finding a verdict by id: first the Redis verdict index
(``<key_prefix>:verdict:<verdict_id>`` → the VerdictEvent JSON, written with the
evidence TTL by whoever keeps evidence — see ``index_verdict``), then, when the index
has no entry, a scan of the verdicts topic. The scan is exact but reads the whole
topic, so a worker that keeps evidence should also index it.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import redis

from inspector.bus.crypto import Sealer
from inspector.bus.store import StoreUnavailable, store_key, valid_store_id
from inspector.config import PlantConfig
from inspector.events import EventError, VerdictEvent, dumps, parse_json
from inspector.observe.feed import TopicReader

# BGR colours: what a finding's severity looks like; other detections stay quiet
SEVERITY_COLOUR = {"critical": (40, 40, 230), "major": (0, 140, 255), "minor": (0, 215, 255)}
DETECTION_COLOUR = (170, 200, 120)


class EvidenceExpired(Exception):
    """The verdict is known but its frame is gone from Redis (TTL passed)."""


class EvidenceUnreadable(Exception):
    """What is stored for a verdict is not a usable JPEG (or its frame id is invalid)."""


class VerdictNotFound(Exception):
    """No verdict with this id in the index or on the topic."""


def verdict_index_key(key_prefix: str, verdict_id: str) -> str:
    return store_key(key_prefix, "verdict", verdict_id)


def index_verdict(client: redis.Redis, key_prefix: str, verdict: VerdictEvent, ttl_s: int) -> str:
    """Store the verdict JSON under its index key (for ``evidence`` and MES links)."""
    key = verdict_index_key(key_prefix, verdict.verdict_id)
    try:
        client.set(key, dumps(verdict), ex=ttl_s)
    except redis.RedisError as exc:
        raise StoreUnavailable(f"Redis write failed for {key}: {exc}") from None
    return key


def lookup_index(client: redis.Redis, key_prefix: str, verdict_id: str) -> VerdictEvent | None:
    if not valid_store_id(verdict_id):
        return None  # no such verdict: ids are UUIDs, never anything that reaches Redis
    try:
        raw = client.get(verdict_index_key(key_prefix, verdict_id))
    except redis.RedisError as exc:
        raise StoreUnavailable(f"Redis read failed: {exc}") from None
    if raw is None:
        return None
    try:
        assert isinstance(raw, bytes)
        return parse_json(raw, VerdictEvent)
    except EventError:
        return None  # a corrupt index entry is not authoritative; the topic is


def scan_topic(cfg: PlantConfig, verdict_id: str, timeout_s: float = 60.0) -> VerdictEvent | None:
    with TopicReader(cfg, ["verdicts"], client_suffix="evidence").open() as reader:
        for rec in reader.read_to_end(timeout_s):
            ev = rec.event
            if isinstance(ev, VerdictEvent) and ev.verdict_id == verdict_id:
                return ev
    return None


def find_verdict(
    cfg: PlantConfig, client: redis.Redis, verdict_id: str, timeout_s: float = 60.0
) -> VerdictEvent:
    found = lookup_index(client, cfg.redis.key_prefix, verdict_id) or scan_topic(
        cfg, verdict_id, timeout_s
    )
    if found is None:
        raise VerdictNotFound(f"no verdict {verdict_id} on {cfg.topics.verdicts}")
    return found


def _label(img: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.45, img.shape[1] / 1800)
    thick = max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, font, scale, thick)
    top = y - h - base - 4 if y - h - base - 4 >= 0 else y  # inside the box at the top edge
    cv2.rectangle(img, (x, top), (x + w + 6, top + h + base + 4), colour, -1)
    cv2.putText(img, text, (x + 3, top + h + 2), font, scale, (20, 20, 20), thick, cv2.LINE_AA)


def annotate(jpeg: bytes, verdict: VerdictEvent, quality: int = 90) -> bytes:
    """The frame with every finding boxed and labelled (class, score, severity).

    Detections that decided nothing (e.g. the part itself) get a thin outline so the
    reviewer sees what the model saw.
    """
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise EvidenceUnreadable(
            f"the evidence of verdict {verdict.verdict_id} is not a decodable image"
        )
    line_w = max(2, img.shape[1] // 400)
    judged = {(f.cls, f.box.x1, f.box.y1) for f in verdict.findings if f.box}
    for d in verdict.detections:
        if (d.cls, d.box.x1, d.box.y1) in judged:
            continue
        b = d.box
        cv2.rectangle(img, (int(b.x1), int(b.y1)), (int(b.x2), int(b.y2)), DETECTION_COLOUR, 1)
    for f in verdict.findings:
        if f.box is None:
            continue  # a missing required feature has no place to draw
        b = f.box
        colour = SEVERITY_COLOUR[f.severity]
        p1, p2 = (int(b.x1), int(b.y1)), (int(b.x2), int(b.y2))
        cv2.rectangle(img, p1, p2, colour, line_w)
        _label(img, f"{f.cls} {f.score:.2f} {f.severity}", p1[0], p1[1], colour)
    banner = f"{verdict.verdict} {verdict.camera_id} #{verdict.seq}  {verdict.rule}"
    missing = [f.cls for f in verdict.findings if f.box is None]
    if missing:
        banner += "  missing: " + ", ".join(missing)
    _label(img, banner, 0, img.shape[0] - 1, (235, 235, 235))
    ok, out = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("could not encode the annotated evidence")
    return bytes(out)


def evidence_keys(key_prefix: str, frame_id: str) -> tuple[str, list[str]]:
    """(annotated key, frame keys to try) of a frame, built from its id inside our own
    prefix: the keys a verdict event names are never read (an event could name any key
    in the Redis, e.g. another application's). Frame keys: the kept claim-check
    (claim_check transport), then the evidence copy (inline transport)."""
    if not valid_store_id(frame_id):
        raise EvidenceUnreadable(f"frame id {frame_id[:80]!r} is not a valid frame id")
    return store_key(key_prefix, "annotated", frame_id), [
        store_key(key_prefix, "frame", frame_id),
        store_key(key_prefix, "evidence", frame_id),
    ]


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def evidence_jpeg(
    client: redis.Redis,
    verdict: VerdictEvent,
    key_prefix: str,
    *,
    annotated: bool = True,
    sealer: Sealer | None = None,
) -> bytes:
    """The evidence JPEG with boxes: the worker's annotated copy when it kept one, else the
    frame annotated here. Raises EvidenceExpired when the frame is gone, crypto.BlobError
    when it is encrypted with a key not configured (retired) or does not authenticate,
    EvidenceUnreadable when what is stored is not a JPEG."""
    sealer = sealer or Sealer(None)
    if not (verdict.evidence_key or verdict.annotated_key):
        raise EvidenceExpired(
            f"verdict {verdict.verdict_id} ({verdict.verdict}) has no evidence frame: "
            "only FAIL verdicts keep one"
        )
    annotated_key, frame_keys = evidence_keys(key_prefix, verdict.frame_id)
    keys = ([annotated_key] if annotated else []) + frame_keys
    try:
        values = client.mget(keys)
    except redis.RedisError as exc:
        raise StoreUnavailable(f"Redis read failed: {exc}") from None
    found = [(k, v) for k, v in zip(keys, values, strict=True) if isinstance(v, bytes)]
    if not found:
        age_h = (time.time() - verdict.timings.captured_at) / 3600
        raise EvidenceExpired(
            f"evidence expired: the frame of verdict {verdict.verdict_id} "
            f"(captured {age_h:.1f} h ago) is no longer in Redis ({frame_keys[0]})"
        )
    key, blob = found[0]
    data = sealer.open(key, blob)
    if not _is_jpeg(data):
        raise EvidenceUnreadable(
            f"the evidence of verdict {verdict.verdict_id} in Redis ({key}) is not a JPEG"
        )
    if key == annotated_key or not annotated:
        return data
    return annotate(data, verdict)
