"""``inspector mqtt``: verdict summaries and line commands to an MQTT 5 broker.

A consumer on the one stage runtime (``bus.loop.StreamLoop``) over the verdicts topic
(and line-commands, ``mqtt.publish_line_commands``). Each batch becomes one MQTT
message per record, published at ``mqtt.qos``; the handler returns only once the
broker acknowledged every one of them (PUBACK at QoS 1, PUBCOMP at 2), so the loop
commits a batch's offsets only after its publishes are safe on the broker.

Anything else (broker down, TLS or credentials refused, a PUBACK with a failure
reason code, no acknowledgement within ``ack_timeout_s``, the connection lost mid
batch) drops the connection and raises ``ServiceUnavailable``: the loop keeps the
batch, commits nothing and retries it with capped backoff, and the retry connects
afresh. A fresh connection per failure means paho never re-sends a stale queue behind
our back (duplicates, Sparkplug sequence numbers out of order); what a broker took
but did not acknowledge before the failure can arrive twice (at least once: the
``verdict_id`` / ``command_id`` in each message tells the copies apart). The reason
is logged once per change (ERROR), shown by ``/readyz``, and the recovery once (INFO).

Payloads: ``json`` (compact objects on ``<topic_prefix>/verdicts`` and
``<topic_prefix>/commands``) or ``sparkplug_b`` (``act/sparkplug.py``: each line is a
device of the edge node; NBIRTH + one DBIRTH per line after every connect, DDATA per
verdict / command, the NDEATH as the connection's will, sent by the broker when the
connection dies and on our own disconnect).
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from confluent_kafka import Message
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from inspector.act import sparkplug as spb
from inspector.act.bridge import Outcome
from inspector.bus.kafka import (
    ServiceUnavailable,
    Shutdown,
    ensure_topics,
    make_producer,
    stage_consumer,
    unreadable_files,
)
from inspector.bus.loop import LoopStats, StreamLoop
from inspector.config import MqttConnection, MqttTarget, PlantConfig
from inspector.events import Finding, LineCommand, VerdictEvent, decode
from inspector.telemetry.health import HealthServer, Heartbeat, serve_health
from inspector.telemetry.metrics import MQTT_CONNECTED, MQTT_PUBLISHED

log = logging.getLogger(__name__)

# CONNACK reason codes of a refused login: bad user name or password, not authorized
# (what mosquitto 2.0 answers to a wrong password), bad authentication method
_LOGIN_REFUSED = frozenset({0x86, 0x87, 0x8C})

# PUBACK reason codes that mean "not now": server busy, quota exceeded
_BUSY = frozenset({0x89, 0x97})


class MqttRefused(ServiceUnavailable):
    """The broker refused (a login, our certificate, a publish): waiting will not help."""


SEVERITY_RANK = {"critical": 0, "major": 1, "minor": 2}


def top_findings(findings: list[Finding], n: int) -> list[dict[str, Any]]:
    """The worst ``n`` findings: by severity, then score."""
    worst = sorted(findings, key=lambda f: (SEVERITY_RANK.get(f.severity, 9), -f.score))
    return [
        {"cls": f.cls, "severity": f.severity, "score": round(f.score, 4), "rule": f.rule}
        for f in worst[:n]
    ]


def verdict_summary(v: VerdictEvent, plant: str, n_findings: int) -> dict[str, Any]:
    return {
        "verdict_id": v.verdict_id,
        "verdict": v.verdict,
        "plant": plant,
        "line_id": v.line_id,
        "camera_id": v.camera_id,
        "part_id": v.part_id,
        "rule": v.rule,
        "findings": top_findings(v.findings, n_findings),
        "findings_total": len(v.findings),
        "frame_id": v.frame_id,
        "seq": v.seq,
        "captured_at": v.timings.captured_at,
    }


def command_summary(c: LineCommand, plant: str) -> dict[str, Any]:
    return {"plant": plant, **c.model_dump(mode="json")}


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Outgoing:
    """One message to publish; Sparkplug DDATA get their ``seq`` when sent."""

    kind: str  # verdict | command (a metrics label)
    topic: str
    payload: bytes = b""
    json: bool = True
    metrics: tuple[spb.Metric, ...] = ()
    timestamp_ms: int = 0

    def render(self, seq: int) -> bytes:
        if self.json:
            return self.payload
        return spb.payload(self.timestamp_ms, list(self.metrics), seq)


# name, datatype: a line's device metrics (alias = device base + index)
VERDICT_METRICS = [
    ("verdict", spb.STRING),
    ("verdict_id", spb.STRING),
    ("camera_id", spb.STRING),
    ("part_id", spb.STRING),
    ("rule", spb.STRING),
    ("captured_at", spb.DATETIME),
    ("frame_seq", spb.UINT64),
    ("findings/total", spb.UINT32),
    ("findings/top", spb.STRING),
]
COMMAND_METRICS = [
    ("command/name", spb.STRING),
    ("command/id", spb.STRING),
    ("command/reason", spb.STRING),
    ("command/episode_id", spb.STRING),
    ("command/camera_id", spb.STRING),
    ("command/issued_at", spb.DATETIME),
]
DEVICE_METRICS = VERDICT_METRICS + COMMAND_METRICS
_BIRTH_VALUE: dict[int, spb.Value] = {
    spb.STRING: "",
    spb.DATETIME: 0,
    spb.UINT64: 0,
    spb.UINT32: 0,
}


def _ms(t: float) -> int:
    return round(t * 1000)


class Messages:
    """Turns verdicts and line commands into ``Outgoing`` messages, and births/deaths."""

    def __init__(
        self, settings: MqttConnection, plant: str, lines: list[str], top_findings: int = 3
    ) -> None:
        self.s = settings
        self.plant = plant
        self.lines = lines
        self.top_findings = top_findings
        # Aliases are unique across the edge node: line i's metrics are 1000*(i+1)+k.
        self.alias = {
            (line, name): 1000 * (i + 1) + k
            for i, line in enumerate(self.lines)
            for k, (name, _) in enumerate(DEVICE_METRICS)
        }
        self.datatype = dict(DEVICE_METRICS)

    @property
    def sparkplug(self) -> bool:
        return self.s.payload_format == "sparkplug_b"

    def _spb(self, kind: str, line: str, values: dict[str, spb.Value], at: float) -> Outgoing:
        metrics = tuple(
            spb.Metric(None, self.alias[(line, name)], self.datatype[name], value, _ms(at))
            for name, value in values.items()
        )
        topic = spb.topic(self.s.sparkplug_group_id, "DDATA", self.s.sparkplug_edge_node_id, line)
        return Outgoing(kind, topic, json=False, metrics=metrics, timestamp_ms=_ms(time.time()))

    def verdict(self, v: VerdictEvent) -> Outgoing:
        if not self.sparkplug:
            body = verdict_summary(v, self.plant, self.top_findings)
            return Outgoing("verdict", self.s.topic(self.plant, v.line_id, "verdicts"), _json(body))
        top = top_findings(v.findings, self.top_findings)
        values: dict[str, spb.Value] = {
            "verdict": v.verdict,
            "verdict_id": v.verdict_id,
            "camera_id": v.camera_id,
            "part_id": v.part_id,
            "rule": v.rule,
            "captured_at": _ms(v.timings.captured_at),
            "frame_seq": v.seq,
            "findings/total": len(v.findings),
            "findings/top": json.dumps(top, separators=(",", ":")),
        }
        return self._spb("verdict", v.line_id, values, v.timings.captured_at)

    def command(self, c: LineCommand) -> Outgoing:
        if not self.sparkplug:
            body = command_summary(c, self.plant)
            return Outgoing("command", self.s.topic(self.plant, c.line_id, "commands"), _json(body))
        values: dict[str, spb.Value] = {
            "command/name": c.command,
            "command/id": c.command_id,
            "command/reason": c.reason,
            "command/episode_id": c.episode_id,
            "command/camera_id": c.camera_id,
            "command/issued_at": _ms(c.issued_at),
        }
        return self._spb("command", c.line_id, values, c.issued_at)

    def of(self, payload: VerdictEvent | LineCommand) -> Outgoing:
        return self.verdict(payload) if isinstance(payload, VerdictEvent) else self.command(payload)

    # ---------------------------------------------------------------- Sparkplug state

    def ndeath(self, bd_seq: int) -> tuple[str, bytes]:
        s = self.s
        metric = spb.Metric("bdSeq", None, spb.UINT64, bd_seq)
        topic = spb.topic(s.sparkplug_group_id, "NDEATH", s.sparkplug_edge_node_id)
        return topic, spb.payload(_ms(time.time()), [metric], None)

    def births(self, bd_seq: int) -> list[tuple[str, bytes]]:
        """NBIRTH (seq 0) then a DBIRTH per line declaring every metric with its alias."""
        s = self.s
        now = _ms(time.time())
        node = [
            spb.Metric("bdSeq", None, spb.UINT64, bd_seq),
            spb.Metric("Node Control/Rebirth", None, spb.BOOLEAN, False),
        ]
        out = [
            (
                spb.topic(s.sparkplug_group_id, "NBIRTH", s.sparkplug_edge_node_id),
                spb.payload(now, node, 0),
            )
        ]
        for seq, line in enumerate(self.lines, start=1):
            metrics = [
                spb.Metric(name, self.alias[(line, name)], dt, _BIRTH_VALUE[dt], now)
                for name, dt in DEVICE_METRICS
            ]
            topic = spb.topic(s.sparkplug_group_id, "DBIRTH", s.sparkplug_edge_node_id, line)
            out.append((topic, spb.payload(now, metrics, seq)))
        return out


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _json_properties() -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.PayloadFormatIndicator = 1
    props.ContentType = "application/json"
    return props


# --------------------------------------------------------------------------- connection


@dataclass
class _Conn:
    """One MQTT connection and what its network thread reports."""

    client: paho.Client
    cond: threading.Condition = field(default_factory=threading.Condition)
    connack: ReasonCode | None = None
    lost: str | None = None
    acked: dict[int, ReasonCode] = field(default_factory=dict)
    seq: int = 0  # Sparkplug: the NBIRTH is 0, every later message of the node +1

    def on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        with self.cond:
            self.connack = rc
            self.cond.notify_all()

    def on_disconnect(self, client: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        with self.cond:
            self.lost = f"connection lost ({rc})"
            self.cond.notify_all()

    def on_publish(self, client: paho.Client, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        with self.cond:
            self.acked[mid] = rc
            self.cond.notify_all()


class MqttPublisher:
    """Publishes batches and waits for the broker's acknowledgements; one connection at a
    time, replaced after any failure. ``down`` says why there is none (None when up)."""

    def __init__(
        self,
        settings: MqttConnection,
        plant: str,
        lines: list[str],
        *,
        top_findings: int = 3,
        log_errors: bool = True,
    ) -> None:
        self.s = settings
        self.log_errors = log_errors
        self.messages = Messages(settings, plant, lines, top_findings)
        self.where = f"{self.s.host}:{self.s.port}"
        self.conn: _Conn | None = None
        self.down: str | None = "not connected yet"
        self._logged: str | None = None
        self.bd_seq = -1  # Sparkplug birth/death sequence: +1 per connection
        self.last_attempt = 0.0
        self.lock = threading.Lock()  # one batch or (re)connect at a time

    # ------------------------------------------------------------ connecting

    def _client(self) -> tuple[paho.Client, _Conn]:
        s = self.s
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,  # we reconnect, on a fresh client
        )
        client.connect_timeout = s.connect_timeout_s
        if s.tls:
            client.tls_set(ca_certs=s.ca_file, certfile=s.cert_file, keyfile=s.key_file)
        if s.username is not None:
            pw = s.password.get_secret_value() if s.password is not None else None
            client.username_pw_set(s.username, pw)
        if self.messages.sparkplug:
            topic, body = self.messages.ndeath(self.bd_seq % 256)
            client.will_set(topic, body, qos=1, retain=False)
        conn = _Conn(client)
        client.on_connect = conn.on_connect
        client.on_disconnect = conn.on_disconnect
        client.on_publish = conn.on_publish
        return client, conn

    def _connect(self) -> _Conn:
        self.last_attempt = time.monotonic()
        self.bd_seq += 1
        deadline = time.monotonic() + self.s.connect_timeout_s
        files = {"ca_file": self.s.ca_file, "cert_file": self.s.cert_file}
        bad = unreadable_files("mqtt", files | {"key_file": self.s.key_file})
        if bad:
            raise self._failed(bad)
        try:
            client, conn = self._client()
            client.connect(self.s.host, self.s.port, self.s.keepalive_s, clean_start=True)
        except ssl.SSLCertVerificationError as exc:
            raise self._failed(
                f"TLS to the MQTT broker at {self.where} failed: certificate verify failed: "
                f"{exc.verify_message} (check mqtt.ca_file)",
                refused=True,
            ) from None
        except ssl.SSLError as exc:
            why = exc.reason or str(exc)
            raise self._failed(f"TLS to the MQTT broker at {self.where} failed: {why}") from None
        except OSError as exc:
            raise self._failed(
                f"cannot reach the MQTT broker at {self.where}: {exc.strerror or exc}"
            ) from None
        except ValueError as exc:  # e.g. a key that does not match its certificate
            raise self._failed(f"MQTT client settings refused: {exc}") from None
        client.loop_start()
        with conn.cond:
            while conn.connack is None and conn.lost is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                conn.cond.wait(left)
        if conn.connack is None or conn.connack.is_failure:
            _drop(conn)
            if conn.connack is not None:
                why = f"the MQTT broker at {self.where} refused the connection: {conn.connack}"
                if conn.connack.value in _LOGIN_REFUSED:
                    why += " (check mqtt.username and mqtt.password)"
            elif conn.lost is not None:
                why = f"the MQTT broker at {self.where} closed the connection before CONNACK"
            else:
                why = f"no CONNACK from the MQTT broker at {self.where} within " + (
                    f"{self.s.connect_timeout_s:g} s"
                )
            login = conn.connack is not None and conn.connack.value in _LOGIN_REFUSED
            raise self._failed(why, refused=login)
        if self.messages.sparkplug:
            for topic, body in self.messages.births(self.bd_seq % 256):
                client.publish(topic, body, qos=0, retain=False)
                MQTT_PUBLISHED.labels("birth").inc()
            conn.seq = len(self.messages.lines)  # NBIRTH 0, DBIRTHs 1..n
        self.conn = conn
        self.down = None
        MQTT_CONNECTED.set(1)
        if self._logged is not None:
            log.info("MQTT broker reachable again", extra={"broker": self.where})
        self._logged = None
        return conn

    def _failed(self, why: str, *, refused: bool = False) -> ServiceUnavailable:
        """Record why we are down; the reason is logged once per change. ``refused``:
        the broker said no (login, certificate, a publish refused), not "not now"."""
        if self.conn is not None:
            _drop(self.conn)
            self.conn = None
        MQTT_CONNECTED.set(0)
        self.down = why
        if why != self._logged and self.log_errors:
            log.error(why, extra={"broker": self.where})
            self._logged = why
        return MqttRefused(why) if refused else ServiceUnavailable(why)

    def connect(self) -> None:
        """Connect now if not connected; ServiceUnavailable (one line) when that fails."""
        with self.lock:
            if self.conn is None or self.conn.lost is not None:
                if self.conn is not None:
                    raise self._failed(f"MQTT broker at {self.where}: {self.conn.lost}")
                self._connect()

    def keep_up(self, every_s: float) -> None:
        """While idle: reconnect (births again) at most every ``every_s``; never raises."""
        if self.conn is not None and self.conn.lost is None:
            return
        if time.monotonic() - self.last_attempt < every_s:
            return
        with contextlib.suppress(ServiceUnavailable):  # recorded in down, logged once
            self.connect()

    # ------------------------------------------------------------ publishing

    def publish_all(self, msgs: list[Outgoing]) -> None:
        """Publish ``msgs`` and return once the broker acknowledged all of them."""
        if not msgs:
            return
        with self.lock:
            conn = self.conn
            if conn is not None and conn.lost is not None:
                raise self._failed(f"MQTT broker at {self.where}: {conn.lost}")
            if conn is None:
                conn = self._connect()
            sent: list[tuple[int, Outgoing]] = []
            for m in msgs:
                conn.seq += 1
                props = _json_properties() if m.json else None
                info = conn.client.publish(
                    m.topic, m.render(conn.seq), qos=self.s.qos, retain=False, properties=props
                )
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    why = paho.error_string(info.rc)
                    raise self._failed(f"publish to the MQTT broker at {self.where} failed: {why}")
                sent.append((info.mid, m))
            self._await(conn, sent)

    def _await(self, conn: _Conn, sent: list[tuple[int, Outgoing]]) -> None:
        deadline = time.monotonic() + self.s.ack_timeout_s
        mids = [mid for mid, _ in sent]
        failure: str | None = None
        with conn.cond:  # never drop the connection under cond: its thread needs it
            while True:
                missing = [mid for mid in mids if mid not in conn.acked]
                if not missing:
                    break
                if conn.lost is not None:
                    failure = (
                        f"MQTT broker at {self.where}: {conn.lost} with "
                        f"{len(missing)} of {len(mids)} publishes unacknowledged"
                    )
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    failure = (
                        f"MQTT broker at {self.where} acknowledged {len(mids) - len(missing)} "
                        f"of {len(mids)} publishes within {self.s.ack_timeout_s:g} s"
                    )
                    break
                conn.cond.wait(left)
            codes = [conn.acked.pop(mid, None) for mid in mids]
        if failure is not None:
            raise self._failed(failure)
        for (_, m), rc in zip(sent, codes, strict=True):
            if rc is not None and rc.is_failure:
                why = f"the MQTT broker at {self.where} refused {m.topic}: {rc}"
                raise self._failed(why, refused=rc.value not in _BUSY)
        for _, m in sent:
            MQTT_PUBLISHED.labels(m.kind).inc()

    def close(self) -> None:
        """Disconnect; with Sparkplug, the broker sends our NDEATH (the will) at once."""
        with self.lock:
            conn, self.conn = self.conn, None
            if conn is None:
                return
            if self.messages.sparkplug:
                rc = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
                conn.client.disconnect(reasoncode=rc)
            else:
                conn.client.disconnect()
            conn.client.loop_stop()
            MQTT_CONNECTED.set(0)
            self.down = "closed"


def _drop(conn: _Conn) -> None:
    """End a connection that failed; its queue (unacknowledged publishes) goes with it."""
    with contextlib.suppress(Exception):  # a half-open socket: nothing to tell the broker
        conn.client.disconnect()
    conn.client.loop_stop()


def check_mqtt(cfg: PlantConfig) -> None:
    """Connect once (TLS, credentials, CONNACK) and disconnect; ServiceUnavailable (one
    line) when that fails. ``inspector mqtt`` runs it before it starts consuming."""
    assert cfg.mqtt is not None
    lines = [ln.id for ln in cfg.lines]
    pub = MqttPublisher(cfg.mqtt, cfg.plant, lines, log_errors=False)  # the caller says why
    try:
        pub.connect()
    finally:
        pub.close()


# --------------------------------------------------------------------------- the stage


class MqttService:
    """Stream loop over verdicts (+ line commands) → MQTT, with /healthz and /readyz."""

    def __init__(
        self,
        cfg: PlantConfig,
        shutdown: Shutdown,
        *,
        metrics_port: int | None = None,
        idle_reconnect_s: float = 5.0,
    ) -> None:
        if cfg.mqtt is None:
            raise ValueError("the plant config has no mqtt section")
        self.cfg = cfg
        self.s = cfg.mqtt
        self.shutdown = shutdown
        self.metrics_port = self.s.metrics_port if metrics_port is None else metrics_port
        self.idle_reconnect_s = idle_reconnect_s
        lines = [ln.id for ln in cfg.lines]
        self.publisher = MqttPublisher(self.s, cfg.plant, lines, top_findings=self.s.top_findings)
        self.heartbeat = Heartbeat()
        topics = [cfg.topics.verdicts]
        if self.s.publish_line_commands:
            topics.append(cfg.topics.line_commands)
        self.topics = topics
        self.loop: StreamLoop[VerdictEvent | LineCommand] = StreamLoop(
            consumer=stage_consumer(cfg.kafka, self.s.group_id, "mqtt"),
            producer=make_producer(cfg.kafka, client_suffix="mqtt"),
            topics=topics,
            dlq_topic=cfg.topics.dlq,
            stage="mqtt",
            decode=self._decode,
            handle=self._handle,
            max_batch=self.s.max_batch,
            max_message_bytes=cfg.kafka.message_max_bytes,
            shutdown=shutdown,
            on_idle=self._idle,
        )
        self.health: HealthServer | None = None

    def _decode(self, msg: Message) -> VerdictEvent | LineCommand:
        if msg.topic() == self.cfg.topics.line_commands:
            return decode(msg.value(), msg.headers(), LineCommand)
        return decode(msg.value(), msg.headers(), VerdictEvent)

    def _handle(self, batch: list[tuple[Message, VerdictEvent | LineCommand]]) -> None:
        self.heartbeat.beat()
        self.publisher.publish_all([self.publisher.messages.of(p) for _, p in batch])

    def _idle(self) -> None:
        self.heartbeat.beat()
        self.publisher.keep_up(self.idle_reconnect_s)

    def why(self) -> dict[str, str]:
        down = self.publisher.down
        return {"mqtt": down} if down else {}

    def run(self) -> LoopStats:
        ensure_topics(self.cfg.kafka, self.cfg.topics, [*self.topics, self.cfg.topics.dlq])
        self.health = serve_health(
            self.cfg.observe.metrics_host,
            self.metrics_port,
            self.heartbeat,
            {"mqtt": lambda: self.publisher.down is None},
            why=self.why,
        )
        log.info(
            "mqtt started",
            extra={
                "broker": self.publisher.where,
                "tls": self.s.tls,
                "format": self.s.payload_format,
                "topics": self.topics,
                "group": self.s.group_id,
            },
        )
        # A failure is logged; the loop retries when a batch comes, /readyz says why.
        with contextlib.suppress(ServiceUnavailable):
            self.publisher.connect()
        try:
            return self.loop.run()
        finally:
            self.publisher.close()
            if self.health:
                self.health.close()
            log.info("mqtt stopped", extra={"stats": vars(self.loop.stats)})


def run_mqtt(cfg: PlantConfig, shutdown: Shutdown, *, metrics_port: int | None = None) -> LoopStats:
    return MqttService(cfg, shutdown, metrics_port=metrics_port).run()


# --------------------------------------------------------------------------- bridge target


class MqttLineTarget:
    """A ``bridge.targets`` entry of kind ``mqtt``: each line command is published at the
    target's QoS (1 by default) and counts as delivered once the broker acknowledged it.
    Topics and payloads are ``inspector mqtt``'s (``<prefix>/commands`` or Sparkplug B
    DDATA). A refused login or certificate or a refused publish → not retryable (the
    bridge fails and dead-letters the command); anything else → retried."""

    kind = "mqtt"

    def __init__(self, settings: MqttTarget, plant: str, lines: list[str]) -> None:
        self.name = settings.name
        self.settings = settings
        self.lines = set(settings.lines or lines)
        births = [ln for ln in lines if ln in self.lines]
        self.publisher = MqttPublisher(settings, plant, births)

    def accepts(self, cmd: LineCommand) -> bool:
        return cmd.line_id in self.lines

    def deliver(self, cmd: LineCommand) -> Outcome:
        msg = self.publisher.messages.command(cmd)
        try:
            self.publisher.publish_all([msg])
        except MqttRefused as exc:
            return Outcome(False, str(exc), retryable=False)
        except ServiceUnavailable as exc:
            return Outcome(False, str(exc), retryable=True)
        ack = {0: "sent (QoS 0)", 1: "PUBACK", 2: "PUBCOMP"}[self.settings.qos]
        return Outcome(True, f"published to {msg.topic}, {ack}")

    def check(self) -> list[str]:
        try:
            self.publisher.connect()
        except ServiceUnavailable as exc:
            return [str(exc)]
        return []

    def close(self) -> None:
        self.publisher.close()
