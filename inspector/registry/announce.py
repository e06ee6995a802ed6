"""Model events on the ``model-events`` topic: the registry's moves and workers' answers.

An alias move is announced *after* the registry holds it, so a worker that reacts reads
the new version; a worker that misses the event still converges through its periodic
re-check of the alias.
"""

from __future__ import annotations

import time

from confluent_kafka import Producer

from inspector.bus.kafka import DeliveryTracker, ensure_topics, make_producer
from inspector.config import PlantConfig
from inspector.events import ModelEvent, ModelEventKind, encode
from inspector.telemetry.metrics import MODEL_EVENTS

SOURCE = "inspector/registry"


def model_event(
    kind: ModelEventKind,
    model_name: str,
    version: str,
    *,
    alias: str | None = None,
    previous_version: str | None = None,
    sha256: str | None = None,
    worker: str | None = None,
    reason: str = "",
) -> ModelEvent:
    return ModelEvent(
        kind=kind,
        model_name=model_name,
        version=version,
        alias=alias,
        previous_version=previous_version,
        sha256=sha256,
        worker=worker,
        reason=reason[:2000],
        at=time.time(),
    )


def publish(
    cfg: PlantConfig,
    events: list[ModelEvent],
    *,
    producer: Producer | None = None,
    timeout_s: float = 15.0,
) -> None:
    """Publish and wait for the broker's acknowledgement (raises DeliveryFailed)."""
    own = producer is None
    if own:
        ensure_topics(cfg.kafka, cfg.topics, [cfg.topics.model_events])
    producer = producer or make_producer(cfg.kafka, client_suffix="model-events")
    tracker = DeliveryTracker()
    for ev in events:
        value, headers = encode(ev, source=SOURCE, time=ev.at)
        producer.produce(
            cfg.topics.model_events,
            value=value,
            key=ev.model_name.encode(),
            headers=headers,
            on_delivery=tracker,
        )
        MODEL_EVENTS.labels(ev.kind).inc()
    tracker.flush(producer, timeout_s)
