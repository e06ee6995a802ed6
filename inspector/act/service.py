"""Composition root of ``inspector act`` and the ``resume`` operation."""

from __future__ import annotations

import logging
import time

import redis
from confluent_kafka import Message, Producer

from inspector.act.state import Keys, open_episodes, redis_errors
from inspector.act.webhook import WebhookSender
from inspector.act.workflows import SOURCE, ActEngine
from inspector.bus.kafka import (
    DeliveryTracker,
    Shutdown,
    ensure_topics,
    make_producer,
    stage_consumer,
)
from inspector.bus.loop import LoopStats, StreamLoop
from inspector.bus.store import connect
from inspector.config import DegradedWorkflow, PlantConfig, StopLineWorkflow
from inspector.events import (
    ActionEvent,
    LineCommand,
    VerdictEvent,
    decode,
    deterministic_id,
    encode,
)
from inspector.telemetry.health import HealthServer, Heartbeat, serve_health
from inspector.telemetry.metrics import ACTIONS

log = logging.getLogger(__name__)


def act_topics(cfg: PlantConfig) -> list[str]:
    t = cfg.topics
    extra = [w.topic for w in cfg.workflows if w.kind == "notify" and w.topic]
    return [t.verdicts, t.actions, t.line_commands, t.notifications, t.dlq, *extra]


class ActService:
    """Stream loop over verdicts + webhook sender + health endpoint, sharing one shutdown."""

    def __init__(
        self,
        cfg: PlantConfig,
        shutdown: Shutdown,
        *,
        metrics_port: int | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        self.cfg = cfg
        self.shutdown = shutdown
        self.metrics_port = cfg.observe.act_port if metrics_port is None else metrics_port
        # No start-up ping: a Redis that is down pauses the loop with a log line instead.
        self.client = client or connect(cfg.redis, check=False)
        self.engine = ActEngine(cfg, self.client)
        self.producer = make_producer(cfg.kafka, client_suffix="act")
        self.consumer = stage_consumer(cfg.kafka, cfg.act.group_id, "act")
        self.heartbeat = Heartbeat()
        self.loop: StreamLoop[VerdictEvent] = StreamLoop(
            consumer=self.consumer,
            producer=self.producer,
            topics=[cfg.topics.verdicts],
            dlq_topic=cfg.topics.dlq,
            stage="act",
            decode=self._decode,
            handle=self._handle,
            max_batch=cfg.act.max_batch,
            max_message_bytes=cfg.kafka.message_max_bytes,
            shutdown=shutdown,
            on_idle=self.heartbeat.beat,
        )
        self.sender = WebhookSender(
            cfg, self.client, make_producer(cfg.kafka, client_suffix="act-webhook"), shutdown
        )
        self.health: HealthServer | None = None

    def _decode(self, msg: Message) -> VerdictEvent:
        return decode(msg.value(), msg.headers(), VerdictEvent)

    def _handle(self, batch: list[tuple[Message, VerdictEvent]]) -> None:
        self.heartbeat.beat()
        self.engine.handle(batch, self.producer, self.loop.tracker)

    def _redis_ok(self) -> bool:
        return bool(self.client.ping())

    def run(self) -> LoopStats:
        ensure_topics(self.cfg.kafka, self.cfg.topics, act_topics(self.cfg))
        self.health = serve_health(
            self.cfg.observe.metrics_host,
            self.metrics_port,
            self.heartbeat,
            {"redis": self._redis_ok, "webhook_sender": self.sender.alive},
        )
        self.sender.start()
        log.info(
            "act started",
            extra={
                "workflows": [w.name for w in self.cfg.workflows],
                "group": self.cfg.act.group_id,
                "topic": self.cfg.topics.verdicts,
            },
        )
        try:
            return self.loop.run()
        finally:
            self.shutdown.request()  # the loop may end on an error; stop the sender too
            self.sender.join(30)
            if self.health:
                self.health.close()
            log.info("act stopped", extra={"stats": vars(self.loop.stats)})


def run_act(cfg: PlantConfig, shutdown: Shutdown, *, metrics_port: int | None = None) -> LoopStats:
    """Run until ``shutdown`` is requested; used by ``inspector act`` and the demo."""
    return ActService(cfg, shutdown, metrics_port=metrics_port).run()


# --------------------------------------------------------------------------- resume


def resume_line(
    cfg: PlantConfig,
    line_id: str,
    *,
    client: redis.Redis | None = None,
    producer: Producer | None = None,
    operator: str = "cli",
) -> LineCommand:
    """Close the line's stop and manual-inspection episodes; publish a ``resume`` command.

    The command is acknowledged by the broker *before* the episode is cleared, so a
    failed publish leaves the line recorded as stopped and the operator can retry; a
    retry for the same episode repeats the same command id.
    """
    cfg.line(line_id)  # KeyError for an unknown line
    client = client or connect(cfg.redis)
    stop_wfs = [w.name for w in cfg.workflows if isinstance(w, StopLineWorkflow | DegradedWorkflow)]
    episodes = open_episodes(client, cfg.redis.key_prefix, line_id, stop_wfs)
    now = time.time()
    ids = sorted(str(e["episode_id"]) for e in episodes.values())
    cmd = LineCommand(
        command_id=deterministic_id("resume", line_id, *ids)
        if ids
        else deterministic_id("resume", line_id, now),
        line_id=line_id,
        command="resume",
        episode_id=ids[0] if ids else None,
        reason=f"resumed by {operator}" + (f"; episodes {', '.join(ids)}" if ids else ""),
        issued_at=now,
    )
    own = producer is None
    producer = producer or make_producer(cfg.kafka, client_suffix="resume")
    tracker = DeliveryTracker()
    out: list[tuple[str, LineCommand | ActionEvent]] = [(cfg.topics.line_commands, cmd)]
    for wf, ep in episodes.items():
        out.append(
            (
                cfg.topics.actions,
                ActionEvent(
                    action_id=deterministic_id("resume", wf, ep["episode_id"]),
                    workflow=wf,
                    kind="resume",
                    outcome="fired",
                    line_id=line_id,
                    episode_id=str(ep["episode_id"]),
                    detail=cmd.reason,
                    at=now,
                ),
            )
        )
    for topic, payload in out:
        value, headers = encode(payload, source=SOURCE, time=now)
        producer.produce(
            topic, value=value, key=line_id.encode(), headers=headers, on_delivery=tracker
        )
    try:
        tracker.flush(producer, 15)
    finally:
        if own:
            producer.flush(1)
    keys = Keys(cfg.redis.key_prefix)
    with redis_errors("clearing stop episodes"):
        pipe = client.pipeline(transaction=True)
        for wf in stop_wfs:
            pipe.delete(
                keys.episode(wf, line_id), keys.window(wf, line_id), keys.faults(wf, line_id)
            )
        pipe.execute()
    for wf in episodes:
        ACTIONS.labels(wf, "fired").inc()
    log.info("line resumed", extra={"line": line_id, "episodes": ids, "operator": operator})
    return cmd
