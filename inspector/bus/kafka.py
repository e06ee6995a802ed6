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
import os
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
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from inspector.config import KafkaSettings, TopicSettings
from inspector.events import MAX_ID, DeadLetterRecord, Headers, TrimmedPart, encode

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
        "topic.metadata.refresh.interval.ms": settings.metadata_refresh_ms,
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


def instance_id() -> str:
    """This process's stable identity: the pod name on Kubernetes (a StatefulSet keeps it
    across restarts), INSPECTOR_INSTANCE_ID where several run on one host."""
    return os.environ.get("INSPECTOR_INSTANCE_ID") or socket.gethostname()


def configure_group(
    conf: dict[str, Any], settings: KafkaSettings, group_instance_id: str | None = None
) -> None:
    """Group membership properties of a consumer, for either group protocol.

    classic: the client asks for its session timeout and heartbeat, cooperative-sticky
    assignment. consumer (KIP-848): librdkafka refuses those three client-side; the
    session timeout and heartbeat are the group's, set on the broker by
    apply_group_config(), and the broker assigns partitions.
    """
    if settings.group_protocol == "consumer":
        conf["group.protocol"] = "consumer"
    else:
        conf["partition.assignment.strategy"] = "cooperative-sticky"
        conf["session.timeout.ms"] = settings.session_timeout_ms
        conf["heartbeat.interval.ms"] = settings.heartbeat_interval_ms
    if group_instance_id:
        conf["group.instance.id"] = group_instance_id


def apply_group_config(settings: KafkaSettings, group_id: str, timeout_s: float = 10.0) -> bool:
    """KIP-848 groups: set the group's session timeout and heartbeat on the broker
    (IncrementalAlterConfigs on the GROUP resource). The broker bounds them by
    group.consumer.min/max.session.timeout.ms (defaults 45 s / 60 s) and
    group.consumer.min.heartbeat.interval.ms (5 s); refused, the group keeps the broker's
    defaults and this says so in one warning line → False."""
    resource = ConfigResource(
        ResourceType.GROUP,
        group_id,
        incremental_configs=[
            ConfigEntry(
                "consumer.session.timeout.ms",
                str(settings.session_timeout_ms),
                incremental_operation=AlterConfigOpType.SET,
            ),
            ConfigEntry(
                "consumer.heartbeat.interval.ms",
                str(settings.heartbeat_interval_ms),
                incremental_operation=AlterConfigOpType.SET,
            ),
        ],
    )
    want = {e.name: e.value for e in resource.incremental_configs}
    admin = AdminClient(client_config(settings, "group-config"))
    deadline = time.monotonic() + timeout_s
    try:
        admin.incremental_alter_configs([resource])[resource].result(timeout_s)
        # The broker applies it through the metadata log: wait until it reads it back, so
        # the member that joins next is already bound by it.
        plain = ConfigResource(ResourceType.GROUP, group_id)
        while True:
            got = admin.describe_configs([plain])[plain].result(timeout_s)
            if all(got[k].value == v for k, v in want.items() if k in got):
                return True
            if time.monotonic() > deadline:
                raise TimeoutError(f"not in effect after {timeout_s:g} s")
            time.sleep(0.05)
    except Exception as exc:  # KafkaException, a timeout: the group still works
        log.warning(
            "group session timeout not set; the broker's group defaults apply",
            extra={"group": group_id, "error": _reason_of(exc)},
        )
        return False


def _reason_of(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return _reason(exc.args[0])
    return str(exc) or type(exc).__name__


def stage_consumer(settings: KafkaSettings, group_id: str, stage: str, **kwargs: Any) -> Consumer:
    """The consumer of a pipeline stage (worker, act): its group's session bound applied
    on the broker for KIP-848, and a static member id when static_membership is on."""
    if settings.group_protocol == "consumer":
        apply_group_config(settings, group_id)
    static = f"{stage}-{instance_id()}" if settings.static_membership else None
    return make_consumer(
        settings, group_id, client_suffix=stage, group_instance_id=static, **kwargs
    )


def make_consumer(
    settings: KafkaSettings,
    group_id: str,
    *,
    client_suffix: str = "consumer",
    auto_offset_reset: str = "earliest",
    isolation_level: str = "read_committed",
    group_instance_id: str | None = None,
    **overrides: Any,
) -> Consumer:
    conf = client_config(settings, client_suffix)
    configure_group(conf, settings, group_instance_id)
    conf.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": auto_offset_reset,
            "fetch.max.bytes": max(52_428_800, settings.message_max_bytes),
            "max.partition.fetch.bytes": settings.message_max_bytes,
            # A live line is latency-bound: don't let an idle fetch park for the 500 ms
            # default before the next frame can be handed over.
            "fetch.wait.max.ms": 25,
        }
    )
    # Explicit, not left to the client's default: records of an aborted transaction (a
    # fenced or crashed exactly-once worker) are never handed to any stage or observer.
    conf["isolation.level"] = isolation_level
    conf.update(overrides)
    conf.update(settings.extra)
    return Consumer(conf)


def poll_batch(consumer: Consumer, max_records: int, timeout_s: float) -> list[Message]:
    """Up to ``max_records`` records, returning as soon as the first one is there.

    ``Consumer.consume(n, timeout)`` waits for ``n`` records or the whole timeout: a
    reader that asks for a batch would add up to ``timeout`` to every record's latency.
    """
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]


def unreadable_files(section: str, paths: dict[str, str | None]) -> str | None:
    """One line naming the first configured TLS file that cannot be read, else None."""
    for name, path in paths.items():
        if path is None:
            continue
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as exc:
            return f"{section}.{name}: cannot read {path}: {exc.strerror or exc}"
    return None


# librdkafka reports these while connecting; they will not go away by waiting longer.
_FATAL_CONNECT = (KafkaError._AUTHENTICATION, KafkaError._SSL)


def _is_fatal(err: KafkaError) -> bool:
    text = err.str()
    return (
        err.code() in _FATAL_CONNECT
        or "SSL routines" in text
        or "incorrect security.protocol" in text
    )


def _reason(err: KafkaError) -> str:
    """librdkafka's error as one line, without its ``ssl://host:port/bootstrap:`` prefix."""
    text = " ".join(err.str().split())
    head, sep, rest = text.partition("/bootstrap: ")
    return rest if sep and "://" in head else text


def _hint(settings: KafkaSettings, reason: str) -> str:
    low = reason.lower()
    if "certificate verify failed" in low or "could not be verified" in low:
        return " (check kafka.ssl_ca_location and that the broker's certificate names the host)"
    if "bad certificate" in low or "certificate required" in low:
        return (
            " (the broker refused our client certificate: check "
            "kafka.ssl_certificate_location and kafka.ssl_key_location)"
        )
    if "authentication" in low or "sasl" in low:
        return " (check kafka.sasl_mechanism, kafka.sasl_username and kafka.sasl_password)"
    if "ssl" in low or "handshake" in low:
        return " (check kafka.security_protocol and kafka.ssl_* against the listener)"
    return " (check kafka.bootstrap_servers and kafka.security_protocol)"


def check_broker(settings: KafkaSettings, timeout_s: float = 5.0) -> None:
    """Fail fast with one actionable line instead of librdkafka's retry noise.

    First a TCP connect to the first bootstrap address (names the address when nothing
    listens), then a real metadata request through a client configured exactly like
    ours, so a TLS handshake (certificate, host name) and SASL authentication are
    proven before the process starts working; their failure is turned into one line
    such as ``certificate verify failed`` or ``invalid credentials``.
    """
    bad = unreadable_files(
        "kafka",
        {
            "ssl_ca_location": settings.ssl_ca_location,
            "ssl_certificate_location": settings.ssl_certificate_location,
            "ssl_key_location": settings.ssl_key_location,
        },
    )
    if bad:
        raise ServiceUnavailable(bad)
    first = settings.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if host and port.isdigit():
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                pass
        except OSError as exc:
            raise ServiceUnavailable(
                f"Kafka broker unreachable at {first}: {exc.strerror or exc} "
                "(check kafka.bootstrap_servers or INSPECTOR__KAFKA__BOOTSTRAP_SERVERS)"
            ) from None
    errors: list[KafkaError] = []
    conf = client_config(settings, "probe")
    conf.update(settings.extra)
    conf.update({"error_cb": errors.append, "log_level": 0})
    try:
        admin = AdminClient(conf)
    except KafkaException as exc:  # e.g. a key that does not match its certificate
        raise ServiceUnavailable(
            f"Kafka client configuration rejected: {_reason(exc.args[0])}"
        ) from None
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            admin.list_topics(timeout=min(0.5, max(0.05, deadline - time.monotonic())))
            return
        except KafkaException as exc:
            last = _reason(exc.args[0])
        admin.poll(0)  # serves error_cb: the handshake / authentication error itself
        fatal = [e for e in errors if _is_fatal(e)]
        if fatal or time.monotonic() >= deadline:
            # "1/1 brokers are down" says less than the error that brought them down
            telling = [e for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
            pick = fatal or telling or errors
            reason = _reason(pick[-1]) if pick else last
            raise ServiceUnavailable(
                f"Kafka broker at {settings.bootstrap_servers} ({settings.security_protocol}) "
                f"did not answer: {reason}{_hint(settings, reason)}"
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
    """Outputs were not acknowledged; ``permanent`` when the broker refused them as such
    (too large, invalid): the input that produced them is to blame, not the broker."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# Delivery errors no retry can cure: the record itself is the problem.
PERMANENT_DELIVERY_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError._INVALID_ARG,
        KafkaError._BAD_MSG,
    }
)


class DeliveryTracker:
    """Collects delivery reports so a batch is committed only when all of it landed."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.permanent = False
        self.delivered = 0

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err.str()}")
            self.permanent |= err.code() in PERMANENT_DELIVERY_ERRORS
        else:
            self.delivered += 1

    def clear(self) -> None:
        self.errors.clear()
        self.permanent = False

    def flush(self, producer: Producer, timeout_s: float = 30.0) -> None:
        """Flush and raise if anything produced since the last call was not acknowledged."""
        remaining = producer.flush(timeout_s)
        errors, permanent = self.errors, self.permanent
        self.clear()
        if remaining:
            raise DeliveryFailed(f"{remaining} messages not acknowledged within {timeout_s}s")
        if errors:
            raise DeliveryFailed("; ".join(errors[:5]), permanent=permanent)


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


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


DLQ_KEY_CAP = 1024  # a bigger original key is summarised
DLQ_HEADER_CAP = 4096  # per header value
DLQ_HEADERS_CAP = 16_384  # all copied header values together
DLQ_MAX_HEADERS = 64  # headers beyond these are summarised as one part
DLQ_NAME_CAP = 200  # header names are cut to this in summaries
DLQ_MARGIN = 1024  # record batch overhead on top of value + headers + key


def _copies(
    msg: Message, *, copy: bool
) -> tuple[str | None, dict[str, str | None], list[TrimmedPart]]:
    """The original key and headers: copied where small, else size + sha256."""
    trimmed: list[TrimmedPart] = []
    key = msg.key()
    key_b64 = None
    if key is not None:
        if copy and len(key) <= DLQ_KEY_CAP:
            key_b64 = _b64(key)
        else:
            trimmed.append(TrimmedPart(part="key", size=len(key), sha256=_sha(key)))
    raw = msg.headers() or []
    pairs = list(raw.items()) if isinstance(raw, dict) else list(raw)
    copied: dict[str, str | None] = {}
    budget = DLQ_HEADERS_CAP
    first = DLQ_MAX_HEADERS if copy else 0  # nothing copied: all headers as one part
    for name, v in pairs[:first]:
        value = v.encode() if isinstance(v, str) else v
        size = len(value) if value else 0
        if copy and len(name) <= DLQ_NAME_CAP and size <= min(DLQ_HEADER_CAP, budget):
            copied[name] = _b64(value)
            budget -= size
        else:
            digest = _sha(name.encode(errors="replace") + b"\0" + (value or b""))
            trimmed.append(
                TrimmedPart(part=f"header:{name[:DLQ_NAME_CAP]}", size=size, sha256=digest)
            )
    rest = pairs[first:]
    if rest:
        h = hashlib.sha256()
        size = 0
        for name, v in rest:
            value = v.encode() if isinstance(v, str) else (v or b"")
            h.update(name.encode(errors="replace") + b"\0" + value + b"\0")
            size += len(value)
        trimmed.append(
            TrimmedPart(
                part=f"headers:rest ({len(rest)})" if first else f"headers ({len(rest)})",
                size=size,
                sha256=h.hexdigest(),
            )
        )
    return key_b64, copied, trimmed


def dead_letter_record(
    msg: Message,
    reason: str,
    detail: str,
    stage: str,
    value_cap: int = DLQ_VALUE_CAP,
    *,
    copy_parts: bool = True,
) -> DeadLetterRecord:
    value = msg.value()
    size = len(value) if value else 0
    key_b64, headers, trimmed = _copies(msg, copy=copy_parts)
    return DeadLetterRecord(
        reason=reason[:MAX_ID],
        error=detail[:2000],
        stage=stage,
        original_topic=msg.topic(),
        original_partition=msg.partition(),
        original_offset=msg.offset(),
        original_key_b64=key_b64,
        original_headers=headers,
        original_trimmed=trimmed,
        original_value_b64=_b64(value) if value is not None and size <= value_cap else None,
        original_value_size=size,
        original_value_sha256=_sha(value) if value else None,
        failed_at=time.time(),
    )


def _record_size(value: bytes, headers: Headers, key: bytes | None) -> int:
    hdrs = sum(len(k) + (len(v) if v else 0) for k, v in headers)
    return len(value) + hdrs + (len(key) if key else 0) + DLQ_MARGIN


def dead_letter_message(
    msg: Message, reason: str, detail: str, stage: str, limit: int
) -> tuple[DeadLetterRecord, bytes, Headers, bytes | None]:
    """The DLQ record for ``msg`` and its encoding, always within ``limit`` bytes.

    Key and headers are copied when small (else size + sha256), the value when what is
    left of the limit holds its base64; if even that does not fit, nothing is copied.
    """
    key = msg.key()
    dlq_key = key if key is None or len(key) <= DLQ_KEY_CAP else _sha(key).encode()
    source = f"inspector/{stage}"
    bare = dead_letter_record(msg, reason, detail, stage, value_cap=-1)
    value, headers = encode(bare, source=source, time=bare.failed_at)
    room = (limit - _record_size(value, headers, dlq_key)) * 3 // 4 - 64
    cap = min(DLQ_VALUE_CAP, room)
    if cap >= 0:
        rec = dead_letter_record(msg, reason, detail, stage, value_cap=cap)
        value, headers = encode(rec, source=source, time=rec.failed_at)
        if _record_size(value, headers, dlq_key) <= limit:
            return rec, value, headers, dlq_key
    rec = dead_letter_record(msg, reason, detail, stage, value_cap=-1, copy_parts=False)
    value, headers = encode(rec, source=source, time=rec.failed_at)
    return rec, value, headers, dlq_key


class DeadLetters:
    """Routes records we cannot process to the DLQ topic, with the reason and the original.

    The dead-letter record always fits ``max_message_bytes``: key, headers and value
    are copied only as far as they fit, the rest is kept as size + sha256.
    """

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
        self.limit = max_message_bytes
        self.counts: dict[str, int] = {}

    def send(self, msg: Message, reason: str, detail: str) -> DeadLetterRecord:
        rec, value, headers, key = dead_letter_message(msg, reason, detail, self.stage, self.limit)
        self.producer.produce(
            self.topic, value=value, key=key, headers=headers, on_delivery=self.tracker
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
