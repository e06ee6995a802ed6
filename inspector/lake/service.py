"""Composition root of ``inspector sink``: consumer, dead letters, catalog, health."""

from __future__ import annotations

import logging

from inspector.bus.kafka import (
    DeadLetters,
    DeliveryTracker,
    Shutdown,
    ensure_topics,
    make_producer,
    stage_consumer,
)
from inspector.config import PlantConfig, redact_uri
from inspector.lake.catalog import CatalogUnavailable, LakeTableWriter, open_catalog
from inspector.lake.sink import Sink, SinkStats
from inspector.lake.tables import SPECS
from inspector.telemetry.health import HealthServer, Heartbeat, serve_health

log = logging.getLogger(__name__)


def lake_writers(cfg: PlantConfig) -> dict[str, LakeTableWriter]:
    """One writer per configured table, keyed by its topic; opens (and, if missing,
    creates) every table, so a foreign table at our name is refused before consuming."""
    catalog = open_catalog(cfg.lake)
    writers = {}
    for name in cfg.lake.tables:
        spec = SPECS[name]
        topic = spec.topic(cfg.topics)
        writers[topic] = LakeTableWriter(catalog, cfg.lake.namespace, spec, topic)
    return writers


class SinkService:
    def __init__(
        self, cfg: PlantConfig, shutdown: Shutdown, *, metrics_port: int | None = None
    ) -> None:
        self.cfg = cfg
        self.shutdown = shutdown
        self.metrics_port = cfg.lake.port if metrics_port is None else metrics_port
        self.writers = lake_writers(cfg)
        down: str | None = None
        for w in self.writers.values():
            try:
                w.table()  # LakeError (a foreign table) stops us here, before any client
            except CatalogUnavailable as exc:
                down = str(exc)  # start paused; on_assign leaves partitions unsynced
                log.warning("lake unavailable at start", extra={"error": down})
        self.heartbeat = Heartbeat()
        self.producer = make_producer(cfg.kafka, client_suffix="lake-dlq")
        self.tracker = DeliveryTracker()
        self.consumer = stage_consumer(cfg.kafka, cfg.lake.group_id, "lake")
        self.sink = Sink(
            cfg.lake,
            consumer=self.consumer,
            dead_letters=DeadLetters(
                self.producer, cfg.topics.dlq, "lake", self.tracker, cfg.kafka.message_max_bytes
            ),
            tracker=self.tracker,
            writers=self.writers,
            shutdown=shutdown,
            max_message_bytes=cfg.kafka.message_max_bytes,
            on_beat=self.heartbeat.beat,
        )
        self.sink.down = down
        self.health: HealthServer | None = None

    def _why(self) -> dict[str, str]:
        return {"catalog": self.sink.down} if self.sink.down else {}

    def run(self) -> SinkStats:
        ensure_topics(self.cfg.kafka, self.cfg.topics, [*self.writers, self.cfg.topics.dlq])
        self.health = serve_health(
            self.cfg.observe.metrics_host,
            self.metrics_port,
            self.heartbeat,
            {"catalog": lambda: self.sink.down is None},
            why=self._why,
        )
        log.info(
            "sink started",
            extra={
                "tables": [w.ident for w in self.writers.values()],
                "catalog": redact_uri(self.cfg.lake.resolved_catalog_uri()),
                "warehouse": self.cfg.lake.resolved_warehouse(),
                "group": self.cfg.lake.group_id,
            },
        )
        try:
            return self.sink.run()
        finally:
            self.producer.flush(10)
            if self.health:
                self.health.close()
            log.info("sink stopped", extra={"stats": vars(self.sink.stats)})


def run_sink(cfg: PlantConfig, shutdown: Shutdown, *, metrics_port: int | None = None) -> SinkStats:
    return SinkService(cfg, shutdown, metrics_port=metrics_port).run()
