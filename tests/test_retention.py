"""Retention on the real broker and redis-server: images older than their age are gone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType
from typer.testing import CliRunner

from inspector.bus.kafka import client_config
from inspector.bus.retention import sweep_redis
from inspector.bus.store import FrameStore, connect
from inspector.cli import app
from inspector.config import PlantConfig
from tests.helpers import create_topics, wait_for

pytestmark = pytest.mark.integration


def topic_configs(cfg: PlantConfig, topic: str) -> dict[str, str]:
    admin = AdminClient(client_config(cfg.kafka, "test"))
    [fut] = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    return {k: v.value for k, v in fut.result(timeout=15).items()}


def test_claim_checks_expire_at_their_age(make_config: Callable[..., PlantConfig]) -> None:
    cfg = make_config(frames={"claim_ttl_s": 5})
    client = connect(cfg.redis)
    store = FrameStore(client, cfg.redis.key_prefix, cfg.frames.claim_ttl_s)
    key = store.put("cam-1:r:1", b"\xff\xd8\xffjpeg")
    assert 0 < int(client.ttl(key)) <= 5
    wait_for(lambda: not client.exists(key), 15, "the claim-check to expire")


def test_sweep_caps_image_keys_that_escaped_their_ttl(
    make_config: Callable[..., PlantConfig],
) -> None:
    cfg = make_config()
    client = connect(cfg.redis)
    p = cfg.redis.key_prefix
    client.set(f"{p}:frame:cam-1:r:1", b"no ttl")  # e.g. restored from a backup
    client.set(f"{p}:evidence:cam-1:r:2", b"too long", ex=10 * 86400)
    client.set(f"{p}:annotated:cam-1:r:2", b"fine", ex=60)
    client.set(f"{p}:verdict:v1", b"{}")  # not an image: left alone
    res = sweep_redis(client, p, max_ttl_s=3600)
    assert res.scanned == 3 and res.capped == {"frame": 1, "evidence": 1}
    assert 3590 < int(client.ttl(f"{p}:frame:cam-1:r:1")) <= 3600
    assert int(client.ttl(f"{p}:annotated:cam-1:r:2")) <= 60
    assert int(client.ttl(f"{p}:verdict:v1")) == -1
    # a sweep with a short age: everything older is gone
    sweep_redis(client, p, max_ttl_s=1)
    wait_for(
        lambda: not client.keys(f"{p}:frame:*") and not client.keys(f"{p}:evidence:*"),
        10,
        "image keys to expire",
    )


def test_frames_topic_is_created_with_its_retention(
    make_config: Callable[..., PlantConfig],
) -> None:
    cfg = make_config(topics={"frames_retention_s": 7200})
    create_topics(cfg)
    frames = topic_configs(cfg, cfg.topics.frames)
    assert frames["retention.ms"] == "7200000" and frames["segment.ms"] == "3600000"
    verdicts = topic_configs(cfg, cfg.topics.verdicts)
    assert verdicts["retention.ms"] != "7200000"  # only the topic that holds images


def test_retention_command_fixes_a_topic_created_elsewhere_and_sweeps_redis(
    make_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    cfg = make_config(topics={"frames_retention_s": 600})
    admin = AdminClient(client_config(cfg.kafka, "test"))
    for fut in admin.create_topics([NewTopic(cfg.topics.frames, 1, 1)]).values():
        fut.result(timeout=15)

    def known() -> bool:
        t = admin.list_topics(timeout=5).topics.get(cfg.topics.frames)
        return t is not None and t.error is None and len(t.partitions) == 1

    wait_for(known, 15, "the topic in the metadata")
    assert topic_configs(cfg, cfg.topics.frames)["retention.ms"] != "600000"
    client = connect(cfg.redis)
    client.set(f"{cfg.redis.key_prefix}:frame:cam-1:r:1", b"no ttl")
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))

    res = CliRunner().invoke(app, ["retention", "--config", str(path)])
    assert res.exit_code == 0, res.output
    assert "redis: 1 image keys" in res.output and "frame 1" in res.output
    conf = topic_configs(cfg, cfg.topics.frames)
    assert conf["retention.ms"] == "600000" and conf["segment.ms"] == "600000"
    assert int(client.ttl(f"{cfg.redis.key_prefix}:frame:cam-1:r:1")) > 0
