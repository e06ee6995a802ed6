"""Composition root of ``inspector bridge``: line commands → targets, on the stage loop.

One consumer group (``bridge.group_id``) on the line-commands topic, run by
``bus.loop.StreamLoop`` like every stage: decode (a record that does not decode is
dead-lettered), ``LineBridge.handle`` per batch, action events acknowledged before the
outcomes are recorded in Redis (``act:bridge:<target>:<command id>``), then the loop
commits. A batch whose command must be retried raises ``RetryLater``: the loop holds
it, pauses the partitions and backs off (``bridge.retry``), so commands stay in order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
import redis
from confluent_kafka import Message

from inspector.act.bridge import Effects, LineBridge, Target
from inspector.act.state import Keys, parse_record, redis_errors
from inspector.bus.kafka import Shutdown, ensure_topics, make_producer, stage_consumer
from inspector.bus.loop import LoopStats, RetryLater, StreamLoop
from inspector.bus.store import connect
from inspector.config import BridgeTarget, MqttTarget, OpcUaTarget, PlantConfig
from inspector.events import LineCommand, decode, encode
from inspector.telemetry.health import HealthServer, Heartbeat, serve_health
from inspector.telemetry.metrics import ACTIONS

log = logging.getLogger(__name__)

SOURCE = "inspector/bridge"


class RedisLedger:
    """Settled outcomes in act's Redis, one key per target and command id."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.ttl_s = ttl_s

    def settled(self, target: str, command_id: str) -> dict[str, Any] | None:
        with redis_errors("reading a line command's outcome"):
            raw = self.client.get(self.keys.bridged(target, command_id))
        return parse_record(raw) if raw is not None else None

    def settle(self, records: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        if not records:
            return
        with redis_errors("recording line command outcomes"):
            pipe = self.client.pipeline(transaction=False)
            for target, command_id, rec in records:
                pipe.set(self.keys.bridged(target, command_id), orjson.dumps(rec), ex=self.ttl_s)
            pipe.execute()


def make_target(settings: BridgeTarget, cfg: PlantConfig | None = None) -> Target:
    """The target a ``bridge.targets`` entry describes (one branch per kind)."""
    if isinstance(settings, OpcUaTarget):
        from inspector.act.opcua import OpcUaLineTarget

        return OpcUaLineTarget(settings)
    if isinstance(settings, MqttTarget):
        from inspector.act.mqtt import MqttLineTarget

        assert cfg is not None, "an MQTT target needs the plant's name and lines"
        return MqttLineTarget(settings, cfg.plant, [ln.id for ln in cfg.lines])
    raise ValueError(f"unknown target kind {settings.kind!r}")  # pragma: no cover


def make_targets(cfg: PlantConfig) -> list[Target]:
    return [make_target(t, cfg) for t in cfg.bridge.targets]


def check_targets(cfg: PlantConfig) -> list[str]:
    """Every configured target against the live system (``config check --online``):
    one line per problem, empty when all is well."""
    problems: list[str] = []
    for target in make_targets(cfg):
        try:
            problems += [f"bridge.targets {target.name}: {p}" for p in target.check()]
        finally:
            target.close()
    return problems


class BridgeService:
    """The stream loop over line commands + a health endpoint, sharing one shutdown."""

    def __init__(
        self,
        cfg: PlantConfig,
        shutdown: Shutdown,
        *,
        targets: Sequence[Target] | None = None,
        metrics_port: int | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        self.cfg = cfg
        self.shutdown = shutdown
        b = cfg.bridge
        self.metrics_port = b.port if metrics_port is None else metrics_port
        self.client = client or connect(cfg.redis, check=False)
        self.targets = list(make_targets(cfg) if targets is None else targets)
        ledger = RedisLedger(self.client, cfg.redis.key_prefix, cfg.act.dedup_ttl_s)
        self.bridge = LineBridge(self.targets, ledger, b.retry)
        self.ledger = ledger
        self.producer = make_producer(cfg.kafka, client_suffix="bridge")
        self.consumer = stage_consumer(cfg.kafka, b.group_id, "bridge")
        self.heartbeat = Heartbeat()
        self.loop: StreamLoop[LineCommand] = StreamLoop(
            consumer=self.consumer,
            producer=self.producer,
            topics=[cfg.topics.line_commands],
            dlq_topic=cfg.topics.dlq,
            stage="bridge",
            decode=self._decode,
            handle=self._handle,
            max_batch=b.max_batch,
            max_message_bytes=cfg.kafka.message_max_bytes,
            shutdown=shutdown,
            retry_initial_s=b.retry.initial_backoff_s,
            retry_max_s=b.retry.max_backoff_s,
            on_idle=self.heartbeat.beat,
            after_commit=self.bridge.committed,
        )
        self.health: HealthServer | None = None

    def _decode(self, msg: Message) -> LineCommand:
        return decode(msg.value(), msg.headers(), LineCommand)

    def _handle(self, batch: list[tuple[Message, LineCommand]]) -> None:
        self.heartbeat.beat()
        fx = self.bridge.handle(batch)
        self.apply(fx)
        if fx.retry_reason is not None:
            raise RetryLater(fx.retry_reason)

    def apply(self, fx: Effects) -> None:
        """Action events and dead letters out and acknowledged, then outcomes recorded."""
        for ev in fx.events:
            value, headers = encode(ev, source=SOURCE, time=ev.at)
            self.producer.produce(
                self.cfg.topics.actions,
                value=value,
                key=ev.line_id.encode(),
                headers=headers,
                on_delivery=self.loop.tracker,
            )
        for msg, reason, detail in fx.dead:
            self.loop.dead_letter(msg, reason, detail)
        self.loop.tracker.flush(self.producer)  # DeliveryFailed → the loop retries the batch
        self.ledger.settle(fx.settled)
        for ev in fx.events:
            ACTIONS.labels(ev.workflow, ev.outcome).inc()

    def _redis_ok(self) -> bool:
        return bool(self.client.ping())

    def run(self) -> LoopStats:
        t = self.cfg.topics
        ensure_topics(self.cfg.kafka, t, [t.line_commands, t.actions, t.dlq])
        self.health = serve_health(
            self.cfg.observe.metrics_host,
            self.metrics_port,
            self.heartbeat,
            {"redis": self._redis_ok},
        )
        log.info(
            "bridge started",
            extra={
                "targets": [f"{x.kind}:{x.name}" for x in self.targets],
                "group": self.cfg.bridge.group_id,
                "topic": t.line_commands,
            },
        )
        try:
            return self.loop.run()
        finally:
            for target in self.targets:
                try:
                    target.close()
                except Exception:
                    log.exception("closing a target failed", extra={"target": target.name})
            if self.health:
                self.health.close()
            log.info("bridge stopped", extra={"stats": vars(self.loop.stats)})


def run_bridge(
    cfg: PlantConfig, shutdown: Shutdown, *, metrics_port: int | None = None
) -> LoopStats:
    """Run until ``shutdown`` is requested; used by ``inspector bridge``."""
    return BridgeService(cfg, shutdown, metrics_port=metrics_port).run()
