"""Retention: how long inspector keeps images, and the sweep that enforces it.

Every image inspector stores expires by itself:

- claim-check frames ``<prefix>:frame:*`` after ``frames.claim_ttl_s``, or
  ``frames.evidence_ttl_s`` once kept as evidence of a FAIL;
- evidence ``<prefix>:evidence:*`` and annotated copies ``<prefix>:annotated:*`` after
  ``frames.evidence_ttl_s``;
- frames on the frames topic after ``topics.frames_retention_s`` (Kafka retention).

``inspector retention`` (:func:`sweep_redis`, :func:`enforce_topic_retention`) catches
what escaped that: an image key without a TTL (restored from a backup, written by an
older tool, PERSISTed by hand) or with a TTL longer than the evidence TTL gets the
evidence TTL, and a frames topic created before (or by someone else) gets its
retention set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from inspector.bus.kafka import ServiceUnavailable, client_config
from inspector.bus.store import StoreUnavailable
from inspector.config import PlantConfig

IMAGE_KINDS = ("frame", "evidence", "annotated")


@dataclass
class SweepResult:
    scanned: int = 0
    capped: dict[str, int] = field(default_factory=dict)  # kind → keys given the max TTL


def sweep_redis(client: redis.Redis, prefix: str, max_ttl_s: int) -> SweepResult:
    """Give every image key without a TTL, or with one above ``max_ttl_s``, ``max_ttl_s``."""
    out = SweepResult()
    try:
        for kind in IMAGE_KINDS:
            for key in client.scan_iter(match=f"{prefix}:{kind}:*", count=1000):
                out.scanned += 1
                ttl = int(client.ttl(key))
                if (ttl == -1 or ttl > max_ttl_s) and client.expire(key, max_ttl_s):
                    out.capped[kind] = out.capped.get(kind, 0) + 1
    except redis.RedisError as exc:
        raise StoreUnavailable(f"Redis retention sweep failed: {exc}") from None
    return out


def enforce_topic_retention(cfg: PlantConfig, timeout_s: float = 15.0) -> dict[str, str]:
    """Set the frames topic's retention configs on the broker; return what was set."""
    topics = cfg.topics
    wanted = topics.retention_configs(topics.frames)
    admin = AdminClient(client_config(cfg.kafka, "admin"))
    res = ConfigResource(
        ResourceType.TOPIC,
        topics.frames,
        incremental_configs=[
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
            for k, v in wanted.items()
        ],
    )
    try:
        for fut in admin.incremental_alter_configs([res], request_timeout=timeout_s).values():
            fut.result()
    except KafkaException as exc:
        raise ServiceUnavailable(
            f"cannot set retention on {topics.frames}: {exc.args[0]} "
            "(does the topic exist, and may this client alter its configs?)"
        ) from None
    return wanted
