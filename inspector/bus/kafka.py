"""The one place that builds Kafka clients, topics and the dead-letter path.

Defaults are the safe ones: idempotent producer with ``acks=all``; consumers with
auto-commit off (offsets are committed only after what a batch produced has been
acknowledged), cooperative-sticky assignment, and ``message.max.bytes`` sized from
config on both sides.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from types import FrameType
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from inspector.config import KafkaSettings, TopicSettings
from inspector.events import DeadLetterRecord, encode, header_dict

log = logging.getLogger(__name__)

DLQ_VALUE_CAP = 256 * 1024  # bigger originals are summarised (size + sha256), not copied


class ServiceUnavailable(Exception):
    """A backing service (broker, Redis) cannot be reached; the message is one actionable line."""


def client_config(settings: KafkaSettings, client_suffix: str = "") -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": f"{settings.client_id}-{client_suffix}"
        if client_suffix
        else settings.client_id,
        "security.protocol": settings.security_protocol,
        "message.max.bytes": settings.message_max_bytes,
    }
    if settings.sasl_mechanism:
        conf["sasl.mechanism"] = settings.sasl_mechanism
    if settings.sasl_username:
        conf["sasl.username"] = settings.sasl_username
    if settings.sasl_password:
        conf["sasl.password"] = settings.sasl_password.get_secret_value()
    if settings.ssl_ca_location:
        conf["ssl.ca.location"] = settings.ssl_ca_location
    if settings.ssl_certificate_location:
        conf["ssl.certificate.location"] = settings.ssl_certificate_location
    if settings.ssl_key_location:
        conf["ssl.key.location"] = settings.ssl_key_location
    if settings.ssl_key_password:
        conf["ssl.key.password"] = settings.ssl_key_password.get_secret_value()
    return conf


def make_producer(
    settings: KafkaSettings,
    *,
    client_suffix: str = "producer",
    transactional_id: str | None = None,
    linger_ms: float = 2.0,
    buffer_messages: int | None = None,
    **overrides: Any,
) -> Producer:
    conf = client_config(settings, client_suffix)
    conf.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "compression.type": "none",  # JPEG does not compress; JSON events are small
        }
    )
    if buffer_messages is not None:
        conf["queue.buffering.max.messages"] = buffer_messages
    if transactional_id:
        conf["transactional.id"] = transactional_id
    conf.update(overrides)
    conf.update(settings.extra)
    return Producer(conf)


def make_consumer(
    settings: KafkaSettings,
    group_id: str,
    *,
    client_suffix: str = "consumer",
    auto_offset_reset: str = "earliest",
    isolation_level: str | None = None,
    **overrides: Any,
) -> Consumer:
    conf = client_config(settings, client_suffix)
    conf.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": auto_offset_reset,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": settings.heartbeat_interval_ms,
            "fetch.max.bytes": max(52_428_800, settings.message_max_bytes),
            "max.partition.fetch.bytes": settings.message_max_bytes,
            # A live line is latency-bound: don't let an idle fetch park for the 500 ms
            # default before the next frame can be handed over.
            "fetch.wait.max.ms": 25,
        }
    )
    if isolation_level:
        conf["isolation.level"] = isolation_level
    conf.update(overrides)
    conf.update(settings.extra)
    return Consumer(conf)


def check_broker(settings: KafkaSettings, timeout_s: float = 5.0) -> None:
    """Fail fast with one line naming the address instead of librdkafka's retry noise."""
    first = settings.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if settings.security_protocol == "PLAINTEXT" and host and port.isdigit():
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                pass
        except OSError as exc:
            raise ServiceUnavailable(
                f"Kafka broker unreachable at {first}: {exc.strerror or exc} "
                "(check kafka.bootstrap_servers or INSPECTOR__KAFKA__BOOTSTRAP_SERVERS)"
            ) from None
    admin = AdminClient(client_config(settings, "probe"))
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise ServiceUnavailable(
            f"Kafka broker at {settings.bootstrap_servers} did not answer: {exc.args[0]}"
        ) from None


def ensure_topics(
    settings: KafkaSettings,
    topics: TopicSettings,
    names: Iterable[str] | None = None,
    *,
    timeout_s: float = 15.0,
) -> list[str]:
    """Create missing topics; return the names created. Existing topics are left alone."""
    admin = AdminClient(client_config(settings, "admin"))
    wanted = list(names) if names is not None else topics.all()
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    new = [
        NewTopic(
            n,
            num_partitions=topics.partitions,
            replication_factor=settings.replication_factor,
            config={
                "max.message.bytes": str(settings.message_max_bytes),
                **topics.retention_configs(n),
            },
        )
        for n in wanted
        if n not in existing
    ]
    if not new:
        return []
    created = []
    for name, fut in admin.create_topics(new, request_timeout=timeout_s).items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if getattr(err, "code", lambda: None)() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    _wait_for_metadata(admin, created, timeout_s)
    return created


def _wait_for_metadata(admin: AdminClient, names: Sequence[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while names and time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout_s)
        if all(n in md.topics and not md.topics[n].error for n in names):
            return
        time.sleep(0.05)


# --------------------------------------------------------------------------- delivery


class DeliveryFailed(Exception):
    pass


class DeliveryTracker:
    """Collects delivery reports so a batch is committed only when all of it landed."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.delivered = 0

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err.str()}")
        else:
            self.delivered += 1

    def flush(self, producer: Producer, timeout_s: float = 30.0) -> None:
        """Flush and raise if anything produced since the last call was not acknowledged."""
        remaining = producer.flush(timeout_s)
        errors, self.errors = self.errors, []
        if remaining:
            raise DeliveryFailed(f"{remaining} messages not acknowledged within {timeout_s}s")
        if errors:
            raise DeliveryFailed("; ".join(errors[:5]))


def commit_offsets(consumer: Consumer, msgs: Iterable[Message]) -> list[TopicPartition]:
    """Synchronously commit next offsets (highest + 1 per partition) for processed messages."""
    offsets = next_offsets(msgs)
    if offsets:
        consumer.commit(offsets=offsets, asynchronous=False)
    return offsets


def topic_partition(m: Message) -> tuple[str, int]:
    return (m.topic() or "", m.partition() or 0)


def next_offsets(msgs: Iterable[Message]) -> list[TopicPartition]:
    high: dict[tuple[str, int], int] = {}
    for m in msgs:
        key = topic_partition(m)
        off = m.offset()
        if off is not None and off >= 0 and off + 1 > high.get(key, -1):
            high[key] = off + 1
    return [TopicPartition(t, p, o) for (t, p), o in high.items()]


# --------------------------------------------------------------------------- dead letters


def _b64(b: bytes | None) -> str | None:
    return base64.b64encode(b).decode() if b is not None else None


def dead_letter_record(
    msg: Message, reason: str, detail: str, stage: str, value_cap: int = DLQ_VALUE_CAP
) -> DeadLetterRecord:
    value = msg.value()
    size = len(value) if value else 0
    return DeadLetterRecord(
        reason=reason,
        error=detail[:2000],
        stage=stage,
        original_topic=msg.topic(),
        original_partition=msg.partition(),
        original_offset=msg.offset(),
        original_key_b64=_b64(msg.key()),
        original_headers={k: _b64(v) for k, v in header_dict(msg.headers()).items()},
        original_value_b64=_b64(value) if value is not None and size <= value_cap else None,
        original_value_size=size,
        original_value_sha256=hashlib.sha256(value).hexdigest() if value else None,
        failed_at=time.time(),
    )


class DeadLetters:
    """Routes records we cannot process to the DLQ topic, with the reason and the original."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        stage: str,
        tracker: DeliveryTracker | None = None,
        max_message_bytes: int = 1_000_000,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.stage = stage
        self.tracker = tracker
        # base64 grows the copy by 4/3; leave room for headers and the record itself
        self.value_cap = min(DLQ_VALUE_CAP, (max_message_bytes * 3) // 5)
        self.counts: dict[str, int] = {}

    def send(self, msg: Message, reason: str, detail: str) -> DeadLetterRecord:
        rec = dead_letter_record(msg, reason, detail, self.stage, self.value_cap)
        value, headers = encode(rec, source=f"inspector/{self.stage}", time=rec.failed_at)
        self.producer.produce(
            self.topic, value=value, key=msg.key(), headers=headers, on_delivery=self.tracker
        )
        self.counts[reason] = self.counts.get(reason, 0) + 1
        log.warning(
            "dead-lettered record",
            extra={
                "reason": reason,
                "detail": detail[:300],
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
            },
        )
        return rec


def oversize_error(msg: Message, limit: int) -> str | None:
    """librdkafka accepts records up to fetch sizes; we hold our own limit."""
    value = msg.value()
    if value is not None and len(value) > limit:
        return f"value is {len(value)} bytes, over message_max_bytes {limit}"
    return None


# --------------------------------------------------------------------------- shutdown


class Shutdown:
    """SIGTERM/SIGINT set a flag; the loop finishes its in-flight batch, flushes, commits, closes.

    A second signal while shutting down is honoured at once (operators expect a
    second Ctrl-C to work).
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self._installed = False

    def install(self) -> Shutdown:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._handle)
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        log.info("shutdown requested", extra={"signal": signal.Signals(signum).name})
        self.event.set()

    def request(self) -> None:
        self.event.set()

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float) -> bool:
        return self.event.wait(timeout)
