"""Frames kept beyond Redis' TTL, so past traffic can be judged again (``inspector replay``).

``inspector archive`` is its own consumer group on the frames topic. For each frame it
copies the JPEG (from the claim-check in Redis, or the inline record) into an object
store: a local folder by default, any fsspec URL (``s3://bucket/prefix`` with s3fs) for
a plant. Claim-check keys are unchanged; the archive is addressed by frame:
``<root>/<YYYYmmdd>/<camera>/<frame file>.jpg`` (capture day in UTC). A frame whose
claim already expired is counted, not guessed. Retention: files older than
``max_age_s`` go, then the oldest until the archive is under ``max_bytes``; swept every
``sweep_every_s`` while the archiver runs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from inspector.bus.kafka import ensure_topics, make_producer, stage_consumer
from inspector.bus.loop import RetryLater, StreamLoop
from inspector.bus.store import FrameStore, StoreUnavailable, connect
from inspector.config import ArchiveSettings, PlantConfig
from inspector.detect.capture import file_stem
from inspector.events import FrameMeta, decode_frame

log = logging.getLogger(__name__)


def frame_path(root: str, camera_id: str, frame_id: str, captured_at: float) -> str:
    day = time.strftime("%Y%m%d", time.gmtime(captured_at))
    return f"{root.rstrip('/')}/{day}/{file_stem(camera_id)}/{file_stem(frame_id)}.jpg"


class FrameArchive:
    """The object store: put, get, and retention."""

    def __init__(self, settings: ArchiveSettings) -> None:
        import fsspec  # type: ignore[import-untyped]

        self.settings = settings
        self.fs, self.root = fsspec.core.url_to_fs(settings.url)
        self.root = str(self.root)

    def path(self, camera_id: str, frame_id: str, captured_at: float) -> str:
        return frame_path(self.root, camera_id, frame_id, captured_at)

    def put(self, meta: FrameMeta, jpeg: bytes) -> str:
        path = self.path(meta.camera_id, meta.frame_id, meta.captured_at)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.part"
        self.fs.pipe_file(tmp, jpeg)
        self.fs.mv(tmp, path)
        return path

    def get(self, camera_id: str, frame_id: str, captured_at: float) -> bytes | None:
        path = self.path(camera_id, frame_id, captured_at)
        try:
            return bytes(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    def sweep(self, now: float | None = None) -> dict[str, int]:
        """Apply retention; → counts of removed files by reason and what is left."""
        now = time.time() if now is None else now
        try:
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            return {"age": 0, "size": 0, "files": 0, "bytes": 0}
        files = []
        for path, info in found.items():
            if not path.endswith(".jpg"):
                continue
            mtime = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
            if hasattr(mtime, "timestamp"):
                mtime = mtime.timestamp()
            files.append((float(mtime), path, int(info.get("size") or 0)))
        files.sort()
        removed = Counter[str]()
        cutoff = now - self.settings.max_age_s
        keep = []
        for mtime, path, size in files:
            if mtime < cutoff:
                self.fs.rm_file(path)
                removed["age"] += 1
            else:
                keep.append((mtime, path, size))
        total = sum(s for _m, _p, s in keep)
        while keep and total > self.settings.max_bytes:
            _m, path, size = keep.pop(0)
            self.fs.rm_file(path)
            total -= size
            removed["size"] += 1
        return {"age": removed["age"], "size": removed["size"], "files": len(keep), "bytes": total}


@dataclass
class ArchiveStats:
    archived: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


class Archiver:
    """The archive consumer's handler."""

    def __init__(self, cfg: PlantConfig, archive: FrameArchive, store: FrameStore) -> None:
        self.cfg = cfg
        self.archive = archive
        self.store = store
        self.stats = ArchiveStats()
        self.next_sweep = time.monotonic() + cfg.learn.archive.sweep_every_s

    def handle(self, batch: list[tuple[Message, tuple[FrameMeta, bytes | None]]]) -> None:
        claims = [
            meta.claim_key for _m, (meta, inline) in batch if inline is None and meta.claim_key
        ]
        try:
            blobs = dict(zip(claims, self.store.get_many(claims), strict=True)) if claims else {}
        except StoreUnavailable as exc:
            raise RetryLater(str(exc)) from None
        for _msg, (meta, inline) in batch:
            jpeg = inline
            if jpeg is None and meta.claim_key:
                blob = blobs.get(meta.claim_key)
                if blob is None:
                    self.stats.skipped["claim_expired"] += 1
                    continue
                try:
                    jpeg = self.store.open(meta.claim_key, blob)
                except Exception:
                    self.stats.skipped["undecryptable"] += 1
                    continue
            if jpeg is None:
                self.stats.skipped["no_image"] += 1
                continue
            try:
                self.archive.put(meta, jpeg)
            except OSError as exc:  # a full disk or a store that is down: retry the batch
                raise RetryLater(f"frame archive unavailable: {exc}") from None
            self.stats.archived += 1

    def maybe_sweep(self) -> None:
        if time.monotonic() < self.next_sweep:
            return
        self.next_sweep = time.monotonic() + self.cfg.learn.archive.sweep_every_s
        try:
            res = self.archive.sweep()
        except OSError as exc:
            log.warning("archive retention sweep failed", extra={"error": str(exc)})
            return
        log.info("archive retention", extra=res)


def build_archiver(
    cfg: PlantConfig, *, shutdown: Any = None
) -> tuple[Archiver, StreamLoop[tuple[FrameMeta, bytes | None]]]:
    from inspector.bus.crypto import store_sealer

    ensure_topics(cfg.kafka, cfg.topics, [cfg.topics.frames])
    client = connect(cfg.redis)
    store = FrameStore(client, cfg.redis.key_prefix, cfg.frames.claim_ttl_s, store_sealer(cfg))
    archiver = Archiver(cfg, FrameArchive(cfg.learn.archive), store)
    loop: StreamLoop[tuple[FrameMeta, bytes | None]] = StreamLoop(
        consumer=stage_consumer(cfg.kafka, cfg.learn.archive.group_id, "archive"),
        producer=make_producer(cfg.kafka, client_suffix="archive"),
        topics=[cfg.topics.frames],
        dlq_topic=cfg.topics.dlq,
        stage="archive",
        decode=lambda m: decode_frame(m.value(), m.headers()),
        handle=archiver.handle,
        max_batch=32,
        max_message_bytes=cfg.kafka.message_max_bytes,
        shutdown=shutdown,
        on_idle=archiver.maybe_sweep,
        after_commit=archiver.maybe_sweep,
    )
    return archiver, loop
