"""``inspector mqtt`` against a real mosquitto (TLS, client certificate, user names and
passwords) that the test starts, fed from the session's real Kafka broker.

What arrives is read by an independent paho subscriber; Sparkplug B payloads are
decoded with the ``protobuf`` package from a descriptor built here from the official
field numbers (Eclipse Tahu's sparkplug_b.proto), not with inspector's encoder.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
import yaml
from confluent_kafka import TopicPartition
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from typer.testing import CliRunner

from inspector.act.mqtt import MqttService
from inspector.bus.kafka import Shutdown, make_consumer, make_producer
from inspector.cli import app
from inspector.config import PlantConfig
from inspector.events import LineCommand, encode
from inspector.localstack import (
    ManagedProcess,
    MosquittoTls,
    free_port,
    mosquitto_passwords,
    start_mosquitto,
)
from tests.act.support import LINES, send, verdict, write_config
from tests.helpers import create_topics
from tests.tlscerts import TlsFiles, make_tls_files

pytestmark = pytest.mark.integration

MakeConfig = Callable[..., PlantConfig]
SERVICE_USER, SERVICE_PW = "inspector", "s3rvice-pw"
WATCHER_USER, WATCHER_PW = "watcher", "w4tcher-pw"


# --------------------------------------------------------------------------- broker


@dataclass
class Mosquitto:
    proc: ManagedProcess
    passwd: Path
    tls: TlsFiles

    @property
    def port(self) -> int:
        return self.proc.port

    def users(self, users: dict[str, str]) -> None:
        """Replace the password file and make mosquitto re-read it (SIGHUP)."""
        mosquitto_passwords(self.passwd, users)
        self.proc.signal(signal.SIGHUP)

    def kill(self) -> None:
        assert self.proc.proc is not None
        self.proc.proc.kill()
        self.proc.proc.wait(10)

    def restart(self) -> None:
        self.proc.start()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("mqtt-tls"))


@pytest.fixture
def mosquitto(tmp_path: Path, certs: TlsFiles) -> Iterator[Mosquitto]:
    passwd = mosquitto_passwords(
        tmp_path / "passwd", {SERVICE_USER: SERVICE_PW, WATCHER_USER: WATCHER_PW}
    )
    tls = MosquittoTls(cert_file=certs.server_cert, key_file=certs.server_key, ca_file=certs.ca)
    proc = start_mosquitto(log_dir=tmp_path, tls=tls, password_file=passwd)
    try:
        yield Mosquitto(proc, passwd, certs)
    finally:
        proc.close()


# --------------------------------------------------------------------------- subscriber


@dataclass
class Got:
    topic: str
    payload: bytes
    content_type: str | None


class Watcher:
    """An independent MQTT 5 subscriber (TLS, its own user) that collects what arrives
    and subscribes again after every reconnect."""

    def __init__(self, broker: Mosquitto, topics: list[str]) -> None:
        self.topics = topics
        self.cond = threading.Condition()
        self.got: list[Got] = []
        self.subacks = 0
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"watcher-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        c.tls_set(
            ca_certs=str(broker.tls.ca),
            certfile=str(broker.tls.client_cert),
            keyfile=str(broker.tls.client_key),
        )
        c.username_pw_set(WATCHER_USER, WATCHER_PW)
        # paho waits these as float seconds; its annotation says int
        c.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c
        c.connect("127.0.0.1", broker.port, 30)
        c.loop_start()
        self.wait(lambda: self.subacks >= 1, 10, "the watcher's SUBACK")

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, *_a: Any) -> None:
        with self.cond:
            self.subacks += 1
            self.cond.notify_all()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        ctype = getattr(msg.properties, "ContentType", None) if msg.properties else None
        with self.cond:
            self.got.append(Got(msg.topic, bytes(msg.payload), ctype))
            self.cond.notify_all()

    def wait(self, cond: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while not cond():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
                self.cond.wait(left)

    def on(self, prefix: str) -> list[Got]:
        with self.cond:
            return [g for g in self.got if g.topic.startswith(prefix)]

    def json_ids(self, key: str = "verdict_id") -> set[str]:
        with self.cond:
            return {
                json.loads(g.payload)[key]
                for g in self.got
                if g.content_type == "application/json" and key in json.loads(g.payload)
            }

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def watchers() -> Iterator[list[Watcher]]:
    made: list[Watcher] = []
    yield made
    for w in made:
        w.close()


# --------------------------------------------------------------------------- service


class RunningMqtt:
    def __init__(self, cfg: PlantConfig, metrics_port: int = 0) -> None:
        self.shutdown = Shutdown()
        self.service = MqttService(cfg, self.shutdown, metrics_port=metrics_port)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="mqtt-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> RunningMqtt:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown.request()
        self.thread.join(30)
        assert not self.thread.is_alive(), "inspector mqtt did not stop within 30 s"
        if self.error is not None:
            raise self.error


def mqtt_config(make_config: MakeConfig, broker: Mosquitto, **mqtt: Any) -> PlantConfig:
    settings = {
        "host": "127.0.0.1",
        "port": broker.port,
        "tls": True,
        "ca_file": str(broker.tls.ca),
        "cert_file": str(broker.tls.client_cert),
        "key_file": str(broker.tls.client_key),
        "username": SERVICE_USER,
        "password": SERVICE_PW,
        "client_id": f"inspector-{uuid.uuid4().hex[:8]}",
        "connect_timeout_s": 5,
        "ack_timeout_s": 5,
        **mqtt,
    }
    cfg = make_config(
        lines=LINES,
        kafka={"session_timeout_ms": 3000, "heartbeat_interval_ms": 500},
        mqtt=settings,
    )
    create_topics(cfg)
    return cfg


def write_mqtt_config(cfg: PlantConfig, path: Path) -> Path:
    path = write_config(cfg, path)
    assert cfg.mqtt is not None and cfg.mqtt.password is not None
    data = yaml.safe_load(path.read_text())
    data["mqtt"]["password"] = cfg.mqtt.password.get_secret_value()
    path.write_text(yaml.safe_dump(data))
    return path


def committed(cfg: PlantConfig, topic: str) -> int:
    """Records of ``topic`` the mqtt group has committed (offsets summed over partitions)."""
    assert cfg.mqtt is not None
    c = make_consumer(cfg.kafka, cfg.mqtt.group_id, client_suffix="committed-check")
    try:
        parts = [TopicPartition(topic, p) for p in range(cfg.topics.partitions)]
        return sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
    finally:
        c.close()


def wait_committed(cfg: PlantConfig, topic: str, n: int, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := committed(cfg, topic)) < n:
        assert time.monotonic() < deadline, f"mqtt group committed {got} of {n} on {topic}"
        time.sleep(0.1)  # polling the coordinator, not waiting out a race


def send_commands(cfg: PlantConfig, cmds: list[LineCommand]) -> None:
    producer = make_producer(cfg.kafka, client_suffix="test-commands")
    for c in cmds:
        value, headers = encode(c, source="inspector/test", time=c.issued_at)
        producer.produce(
            cfg.topics.line_commands, value=value, key=c.line_id.encode(), headers=headers
        )
    assert producer.flush(15) == 0


def command(i: int, kind: str = "stop", line: str = "line-1") -> LineCommand:
    return LineCommand(
        command_id=f"cmd-{i}",
        line_id=line,
        command=kind,
        episode_id=f"ep-{i}",
        reason=f"test command {i}",
        issued_at=time.time(),
    )


# --------------------------------------------------------------------------- tests


def test_json_verdicts_and_line_commands_over_tls_with_credentials(
    make_config: MakeConfig, mosquitto: Mosquitto, watchers: list[Watcher]
) -> None:
    cfg = mqtt_config(make_config, mosquitto)
    w = Watcher(mosquitto, ["inspector/+/verdicts", "inspector/+/commands"])
    watchers.append(w)
    now = time.time()
    fail = verdict(1, "FAIL", cls="dent", part="p-1", t=now - 1)
    fail = fail.model_copy(
        update={
            "findings": [
                *fail.findings,
                *verdict(9, "FAIL", cls="crack").findings,
                *verdict(8, "FAIL", cls="scratch").findings,
            ]
        }
    )
    verdicts = [
        fail,
        verdict(2, "PASS"),
        verdict(3, "FAULT", cam="cam-2"),
        verdict(4, "FAIL", cam="cam-3", cls="crack"),
    ]
    send(cfg, verdicts)
    send_commands(cfg, [command(1, "stop"), command(2, "resume", "line-2")])
    port = free_port()
    with RunningMqtt(cfg, metrics_port=port):
        w.wait(lambda: len(w.got) >= 6, 20, "4 verdicts and 2 commands")
        wait_committed(cfg, cfg.topics.verdicts, 4)
        wait_committed(cfg, cfg.topics.line_commands, 2)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"mqtt": True}

    assert {g.topic for g in w.on("inspector/line-1/verdicts")} == {"inspector/line-1/verdicts"}
    assert len(w.on("inspector/line-1/verdicts")) == 3
    assert len(w.on("inspector/line-2/verdicts")) == 1
    assert all(g.content_type == "application/json" for g in w.got)
    by_id = {
        b["verdict_id"]: b
        for g in w.on("inspector/line-")
        if "verdict_id" in (b := json.loads(g.payload))
    }
    first = by_id[fail.verdict_id]
    assert first == {
        "verdict_id": fail.verdict_id,
        "verdict": "FAIL",
        "plant": cfg.plant,
        "line_id": "line-1",
        "camera_id": "cam-1",
        "part_id": "p-1",
        "rule": "class:dent",
        # worst first: critical, major, minor; at most mqtt.top_findings (3)
        "findings": [
            {"cls": "crack", "severity": "critical", "score": 0.9, "rule": "class:crack"},
            {"cls": "dent", "severity": "major", "score": 0.9, "rule": "class:dent"},
            {"cls": "scratch", "severity": "minor", "score": 0.9, "rule": "class:scratch"},
        ],
        "findings_total": 3,
        "frame_id": fail.frame_id,
        "seq": 1,
        "captured_at": pytest.approx(now - 1),
    }
    assert by_id[verdicts[2].verdict_id]["verdict"] == "FAULT"
    assert by_id[verdicts[2].verdict_id]["camera_id"] == "cam-2"
    assert by_id[verdicts[3].verdict_id]["line_id"] == "line-2"
    cmds = {
        json.loads(g.payload)["command_id"]: (g.topic, json.loads(g.payload))
        for g in w.got
        if "commands" in g.topic
    }
    assert cmds["cmd-1"][0] == "inspector/line-1/commands"
    assert cmds["cmd-1"][1]["command"] == "stop"
    assert cmds["cmd-2"][0] == "inspector/line-2/commands"
    assert cmds["cmd-2"][1]["command"] == "resume"


# Sparkplug B's Payload, from the official field numbers (Eclipse Tahu sparkplug_b.proto)
def sparkplug_payload_class() -> Any:
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="test_sparkplug_b.proto", package="org.eclipse.tahu.protobuf", syntax="proto2"
    )
    payload = fdp.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    metric.oneof_decl.add(name="value")

    def add(
        msg: Any,
        name: str,
        number: int,
        ftype: int,
        *,
        repeated: bool = False,
        type_name: str | None = None,
        oneof: bool = False,
    ) -> None:
        f = msg.field.add(
            name=name,
            number=number,
            type=ftype,
            label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL,
        )
        if type_name:
            f.type_name = type_name
        if oneof:
            f.oneof_index = 0

    add(payload, "timestamp", 1, F.TYPE_UINT64)
    add(
        payload,
        "metrics",
        2,
        F.TYPE_MESSAGE,
        repeated=True,
        type_name=".org.eclipse.tahu.protobuf.Payload.Metric",
    )
    add(payload, "seq", 3, F.TYPE_UINT64)
    add(payload, "uuid", 4, F.TYPE_STRING)
    add(payload, "body", 5, F.TYPE_BYTES)
    add(metric, "name", 1, F.TYPE_STRING)
    add(metric, "alias", 2, F.TYPE_UINT64)
    add(metric, "timestamp", 3, F.TYPE_UINT64)
    add(metric, "datatype", 4, F.TYPE_UINT32)
    add(metric, "is_historical", 5, F.TYPE_BOOL)
    add(metric, "is_transient", 6, F.TYPE_BOOL)
    add(metric, "is_null", 7, F.TYPE_BOOL)
    add(metric, "int_value", 10, F.TYPE_UINT32, oneof=True)
    add(metric, "long_value", 11, F.TYPE_UINT64, oneof=True)
    add(metric, "float_value", 12, F.TYPE_FLOAT, oneof=True)
    add(metric, "double_value", 13, F.TYPE_DOUBLE, oneof=True)
    add(metric, "boolean_value", 14, F.TYPE_BOOL, oneof=True)
    add(metric, "string_value", 15, F.TYPE_STRING, oneof=True)
    add(metric, "bytes_value", 16, F.TYPE_BYTES, oneof=True)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload")
    )


def metric_value(m: Any) -> Any:
    if m.is_null:
        return None
    which = m.WhichOneof("value")
    return getattr(m, which) if which else None


def test_sparkplug_b_births_data_and_death_decoded_independently(
    make_config: MakeConfig, mosquitto: Mosquitto, watchers: list[Watcher]
) -> None:
    cfg = mqtt_config(
        make_config,
        mosquitto,
        payload_format="sparkplug_b",
        sparkplug_group_id="plant-a",
        sparkplug_edge_node_id="inspector-edge",
    )
    Payload = sparkplug_payload_class()
    w = Watcher(mosquitto, ["spBv1.0/plant-a/#"])
    watchers.append(w)
    base = "spBv1.0/plant-a"
    with RunningMqtt(cfg):
        w.wait(lambda: len(w.on(f"{base}/DBIRTH/")) >= 2, 20, "NBIRTH and a DBIRTH per line")
        now = time.time()
        v1 = verdict(1, "FAIL", cls="crack", part="p-7", t=now)
        v2 = verdict(2, "PASS", cam="cam-3")
        send(cfg, [v1, v2])
        send_commands(cfg, [command(5, "stop")])
        w.wait(lambda: len(w.on(f"{base}/DDATA/")) >= 3, 20, "3 DDATA")
        wait_committed(cfg, cfg.topics.verdicts, 2)
    w.wait(lambda: bool(w.on(f"{base}/NDEATH/")), 10, "the NDEATH on disconnect")

    nbirth = [Payload.FromString(g.payload) for g in w.on(f"{base}/NBIRTH/inspector-edge")]
    assert len(nbirth) == 1
    assert nbirth[0].seq == 0
    node = {m.name: m for m in nbirth[0].metrics}
    bd_seq = metric_value(node["bdSeq"])
    assert node["bdSeq"].datatype == 8  # UInt64
    assert metric_value(node["Node Control/Rebirth"]) is False
    ndeath = Payload.FromString(w.on(f"{base}/NDEATH/inspector-edge")[0].payload)
    assert [(m.name, metric_value(m)) for m in ndeath.metrics] == [("bdSeq", bd_seq)]
    assert not ndeath.HasField("seq")

    alias: dict[str, dict[int, tuple[str, int]]] = {}  # device -> alias -> (name, datatype)
    seqs = [0]
    for g in w.on(f"{base}/DBIRTH/"):
        device = g.topic.rsplit("/", 1)[1]
        p = Payload.FromString(g.payload)
        seqs.append(p.seq)
        alias[device] = {m.alias: (m.name, m.datatype) for m in p.metrics}
    assert sorted(alias) == ["line-1", "line-2"]
    assert ("verdict", 12) in alias["line-1"].values()  # String
    assert ("captured_at", 13) in alias["line-1"].values()  # DateTime
    all_aliases = [a for d in alias.values() for a in d]
    assert len(all_aliases) == len(set(all_aliases)), "aliases unique across the edge node"

    data: list[tuple[str, dict[str, Any]]] = []
    for g in w.on(f"{base}/DDATA/"):
        device = g.topic.rsplit("/", 1)[1]
        assert g.topic == f"{base}/DDATA/inspector-edge/{device}"
        p = Payload.FromString(g.payload)
        seqs.append(p.seq)
        values = {}
        for m in p.metrics:
            assert not m.name, "DDATA metrics go by alias"
            name, dtype = alias[device][m.alias]
            assert m.datatype == dtype
            values[name] = metric_value(m)
        data.append((device, values))
    assert seqs == list(range(len(seqs))), "seq counts every message of the node from NBIRTH"

    verdict_data = {v["verdict_id"]: (d, v) for d, v in data if "verdict_id" in v}
    device, first = verdict_data[v1.verdict_id]
    assert device == "line-1"
    assert first["verdict"] == "FAIL"
    assert first["camera_id"] == "cam-1"
    assert first["part_id"] == "p-7"
    assert first["rule"] == "class:crack"
    assert first["captured_at"] == round(now * 1000)
    assert first["findings/total"] == 1
    assert json.loads(first["findings/top"])[0]["cls"] == "crack"
    device, second = verdict_data[v2.verdict_id]
    assert device == "line-2"
    assert second["part_id"] is None
    cmd = [v for d, v in data if "command/id" in v]
    assert cmd == [
        {
            "command/name": "stop",
            "command/id": "cmd-5",
            "command/reason": "test command 5",
            "command/episode_id": "ep-5",
            "command/camera_id": None,
            "command/issued_at": cmd[0]["command/issued_at"],
        }
    ]


def test_wrong_password_retries_commits_nothing_then_delivers_all_once_fixed(
    make_config: MakeConfig,
    mosquitto: Mosquitto,
    watchers: list[Watcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = mqtt_config(make_config, mosquitto, password="not-the-password")
    w = Watcher(mosquitto, ["inspector/#"])
    watchers.append(w)
    sent = [verdict(i, "FAIL" if i % 2 else "PASS") for i in range(1, 7)]
    send(cfg, sent)
    port = free_port()
    caplog.set_level(logging.INFO, logger="inspector")
    with RunningMqtt(cfg, metrics_port=port) as running:
        svc = running.service
        deadline = time.monotonic() + 20
        while svc.loop.stats.retries < 3:
            assert time.monotonic() < deadline, "the batch was not retried"
            time.sleep(0.05)
        refused = (
            f"the MQTT broker at 127.0.0.1:{mosquitto.port} refused the connection: "
            "Not authorized (check mqtt.username and mqtt.password)"
        )
        assert svc.publisher.down == refused
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 503
        assert ready.json()["why"] == {"mqtt": refused}
        assert committed(cfg, cfg.topics.verdicts) == 0
        assert w.got == []
        errors = [
            r
            for r in caplog.records
            if r.name == "inspector.act.mqtt" and r.levelno >= logging.ERROR
        ]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert errors[0].getMessage() == refused

        # the operator fixes the broker's side: the next retry connects and delivers
        mosquitto.users({SERVICE_USER: "not-the-password", WATCHER_USER: WATCHER_PW})
        want = {v.verdict_id for v in sent}
        w.wait(lambda: w.json_ids() >= want, 20, "every verdict after the fix")
        wait_committed(cfg, cfg.topics.verdicts, len(sent))
        assert svc.publisher.down is None
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_broker_killed_and_restarted_loses_nothing(
    make_config: MakeConfig, mosquitto: Mosquitto, watchers: list[Watcher]
) -> None:
    cfg = mqtt_config(make_config, mosquitto)
    w = Watcher(mosquitto, ["inspector/+/verdicts"])
    watchers.append(w)
    first = [verdict(i, "FAIL") for i in range(1, 11)]
    second = [verdict(i, "FAIL", cam="cam-3", cls="crack") for i in range(11, 21)]
    with RunningMqtt(cfg) as running:
        send(cfg, first)
        w.wait(lambda: w.json_ids() >= {v.verdict_id for v in first}, 20, "the first ten")
        wait_committed(cfg, cfg.topics.verdicts, 10)

        mosquitto.kill()
        send(cfg, second)  # arrive while the broker is down
        svc = running.service
        deadline = time.monotonic() + 20
        while svc.loop.stats.retries < 2:
            assert time.monotonic() < deadline, "no retry while the broker was down"
            time.sleep(0.05)
        assert svc.publisher.down is not None
        assert committed(cfg, cfg.topics.verdicts) == 10, "nothing committed while down"

        # Back up, first without the service's user, so the watcher has subscribed
        # again before anything can be published (the broker keeps no sessions).
        subacks = w.subacks
        mosquitto_passwords(mosquitto.passwd, {WATCHER_USER: WATCHER_PW})
        mosquitto.restart()
        w.wait(lambda: w.subacks > subacks, 20, "the watcher's new subscription")
        mosquitto.users({SERVICE_USER: SERVICE_PW, WATCHER_USER: WATCHER_PW})
        want = {v.verdict_id for v in first + second}
        w.wait(lambda: w.json_ids() >= want, 20, "all twenty verdicts")
        wait_committed(cfg, cfg.topics.verdicts, 20)


def test_cli_refuses_a_wrong_password_and_an_untrusted_broker_in_one_line(
    make_config: MakeConfig, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    runner = CliRunner()
    wrong = mqtt_config(make_config, mosquitto, password="wrong")
    res = runner.invoke(
        app, ["mqtt", "--config", str(write_mqtt_config(wrong, tmp_path / "a.yaml"))]
    )
    assert res.exit_code == 1, res.output
    assert res.stderr.strip().splitlines() == [
        f"error: the MQTT broker at 127.0.0.1:{mosquitto.port} refused the connection: "
        "Not authorized (check mqtt.username and mqtt.password)"
    ]
    untrusted = mqtt_config(make_config, mosquitto, ca_file=str(mosquitto.tls.other_ca))
    res = runner.invoke(
        app, ["mqtt", "--config", str(write_mqtt_config(untrusted, tmp_path / "b.yaml"))]
    )
    assert res.exit_code == 1, res.output
    assert res.stderr.strip().splitlines() == [
        f"error: TLS to the MQTT broker at 127.0.0.1:{mosquitto.port} failed: certificate "
        "verify failed: self-signed certificate in certificate chain (check mqtt.ca_file)"
    ]


# --------------------------------------------------------------------------- pure logic


def test_sparkplug_encoder_against_protobuf() -> None:
    from inspector.act import sparkplug as spb

    Payload = sparkplug_payload_class()
    metrics = [
        spb.Metric("s", 1, spb.STRING, "grüße"),
        spb.Metric(None, 2, spb.UINT64, 2**63 + 5, timestamp_ms=1_700_000_000_123),
        spb.Metric("i", 300, spb.INT32, -7),
        spb.Metric("u", None, spb.UINT32, 2**32 - 1),
        spb.Metric("d", 4, spb.DOUBLE, -1.25),
        spb.Metric("b", 5, spb.BOOLEAN, True),
        spb.Metric("t", 6, spb.DATETIME, 1_700_000_000_000),
        spb.Metric("n", 7, spb.STRING, None),
        spb.Metric("l", 8, spb.INT64, -3),
    ]
    p = Payload.FromString(spb.payload(1_700_000_000_999, metrics, 257))
    assert p.timestamp == 1_700_000_000_999
    assert p.seq == 1  # 0..255, wraps
    got = [
        (m.name, m.alias if m.HasField("alias") else None, m.datatype, metric_value(m))
        for m in p.metrics
    ]
    assert got == [
        ("s", 1, 12, "grüße"),
        ("", 2, 8, 2**63 + 5),
        ("i", 300, 3, 2**32 - 7),  # int32 travels as uint32 int_value (two's complement)
        ("u", None, 7, 2**32 - 1),
        ("d", 4, 10, -1.25),
        ("b", 5, 11, True),
        ("t", 6, 13, 1_700_000_000_000),
        ("n", 7, 12, None),
        ("l", 8, 4, 2**64 - 3),
    ]
    assert p.metrics[1].timestamp == 1_700_000_000_123
    assert not Payload.FromString(spb.payload(1, [], None)).HasField("seq")
    assert spb.topic("g", "DDATA", "e", "line-1") == "spBv1.0/g/DDATA/e/line-1"
    assert spb.topic("g", "NBIRTH", "e") == "spBv1.0/g/NBIRTH/e"


@pytest.mark.parametrize(
    ("mqtt", "error"),
    [
        ({"topic_prefix": "plant/+/x"}, "no '+', '#'"),
        ({"topic_prefix": "/inspector"}, "leading or trailing '/'"),
        ({"topic_prefix": "inspector/{camera_id}"}, "only {plant} and {line_id}"),
        ({"topic_prefix": "inspector/{line_id"}, "only {plant} and {line_id}"),
        ({"ca_file": "/ca.pem"}, "ca_file is set but tls is off"),
        ({"tls": True, "cert_file": "/c.pem"}, "cert_file and key_file go together"),
        ({"password": "x"}, "password is set without username"),
        ({"qos": 3}, "qos"),
        ({"sparkplug_group_id": "a/b"}, "sparkplug_group_id"),
        ({"hostname": "x"}, "hostname"),
    ],
)
def test_mqtt_config_is_strict(mqtt: dict[str, Any], error: str) -> None:
    from inspector.config import ConfigError, parse_config

    data = {
        "lines": [{"id": "line-1", "cameras": [{"id": "c", "url": "rtsp://h/c"}]}],
        "mqtt": {"host": "broker", **mqtt},
    }
    with pytest.raises(ConfigError) as exc:
        parse_config(data, "t", env={})
    assert error in str(exc.value)


def test_mqtt_topics_fill_in_plant_and_line() -> None:
    from inspector.config import ConfigError, parse_config

    lines = [{"id": "line-1", "cameras": [{"id": "c", "url": "rtsp://h/c"}]}]
    cfg = parse_config(
        {
            "plant": "north",
            "lines": lines,
            "mqtt": {"host": "b", "topic_prefix": "f/{plant}/{line_id}"},
        },
        "t",
        env={},
    )
    assert cfg.mqtt is not None
    assert cfg.mqtt.topic(cfg.plant, "line-1", "verdicts") == "f/north/line-1/verdicts"
    assert str(cfg.mqtt.password) == "None"
    with pytest.raises(ConfigError, match="not a topic level"):
        parse_config(
            {"plant": "a/b", "lines": lines, "mqtt": {"host": "b", "topic_prefix": "{plant}"}},
            "t",
            env={},
        )
    secret = parse_config(
        {"lines": lines, "mqtt": {"host": "b", "username": "u", "password": "${PW}"}},
        "t",
        env={"PW": "hunter2"},
    )
    assert secret.mqtt is not None and secret.mqtt.password is not None
    assert secret.mqtt.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(secret.mqtt)


def test_the_readme_mqtt_example_is_a_valid_config() -> None:
    import re

    from inspector.config import parse_config

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = re.search(r"### MQTT\n.*?```yaml\n(mqtt:\n.*?)```", readme, re.S)
    assert block, "the README's mqtt example"
    data = yaml.safe_load(block.group(1))
    data["lines"] = [{"id": "line-1", "cameras": [{"id": "c", "url": "rtsp://h/c"}]}]
    cfg = parse_config(data, "README", env={"MQTT_PASSWORD": "pw"})
    assert cfg.mqtt is not None and cfg.mqtt.tls and cfg.mqtt.port == 8883


# --------------------------------------------------------------------------- bridge target


def test_bridge_mqtt_target_counts_the_puback_as_delivered_and_fails_a_refused_login(
    make_config: MakeConfig, mosquitto: Mosquitto, watchers: list[Watcher]
) -> None:
    from inspector.act.bridge_service import BridgeService
    from inspector.events import ActionEvent, DeadLetterRecord
    from tests.act.support import Collector

    def target(name: str, password: str) -> dict[str, Any]:
        return {
            "kind": "mqtt",
            "name": name,
            "host": "127.0.0.1",
            "port": mosquitto.port,
            "tls": True,
            "ca_file": str(mosquitto.tls.ca),
            "cert_file": str(mosquitto.tls.client_cert),
            "key_file": str(mosquitto.tls.client_key),
            "username": SERVICE_USER,
            "password": password,
            "client_id": f"{name}-{uuid.uuid4().hex[:6]}",
            "lines": ["line-1"],
            "connect_timeout_s": 5,
            "ack_timeout_s": 5,
        }

    cfg = make_config(
        lines=LINES,
        kafka={"session_timeout_ms": 3000, "heartbeat_interval_ms": 500},
        bridge={
            "group_id": f"bridge-{uuid.uuid4().hex[:8]}",
            "port": 0,
            "targets": [target("mqtt-ok", SERVICE_PW), target("mqtt-bad", "wrong")],
        },
    )
    create_topics(cfg)
    w = Watcher(mosquitto, ["inspector/+/commands"])
    watchers.append(w)
    col = Collector(cfg, [cfg.topics.actions, cfg.topics.dlq])
    shutdown = Shutdown()
    service = BridgeService(cfg, shutdown, metrics_port=0)
    thread = threading.Thread(target=service.run, name="bridge-under-test", daemon=True)
    thread.start()
    try:
        send_commands(cfg, [command(1, "stop"), command(2, "resume", "line-2")])

        def outcomes() -> set[tuple[str, str]]:
            return {(e.workflow, e.outcome) for e in col.payloads(cfg.topics.actions, ActionEvent)}

        col.wait(
            lambda: {("mqtt-ok", "delivered"), ("mqtt-bad", "failed")} <= outcomes(),
            20,
            "delivered at mqtt-ok, failed at mqtt-bad",
        )
        w.wait(lambda: len(w.got) >= 1, 10, "the stop on the broker")
    finally:
        shutdown.request()
        thread.join(30)
        col.drain(0.5)
        col.close()
    assert not thread.is_alive()
    events = col.payloads(cfg.topics.actions, ActionEvent)
    assert sorted((e.workflow, e.kind, e.outcome) for e in events) == [
        ("mqtt-bad", "mqtt", "failed"),
        ("mqtt-ok", "mqtt", "delivered"),
    ], "line-2's command is for neither target"
    ok = next(e for e in events if e.workflow == "mqtt-ok")
    assert ok.detail == "stop cmd-1: published to inspector/line-1/commands, PUBACK"
    bad = next(e for e in events if e.workflow == "mqtt-bad")
    assert "refused the connection: Not authorized" in bad.detail
    assert bad.attempt == 1, "a refused login is not retried"
    dead = col.payloads(cfg.topics.dlq, DeadLetterRecord)
    assert [d.reason for d in dead] == ["line_command_failed"]
    assert [(g.topic, json.loads(g.payload)["command_id"]) for g in w.got] == [
        ("inspector/line-1/commands", "cmd-1")
    ]
