"""The line bridge against a real OPC UA server (asyncua's, started by the test on a free
loopback port) and the session's real Kafka broker and Redis.

Line commands produced on the line-commands topic end up as values on the server's
variables, read back; Basic256Sha256 SignAndEncrypt with certificates made here and a
user; credentials rejected; the PLC going away mid-episode and coming back; a node id
the server does not have, found by ``inspector config check --online``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from inspector.act.bridge_service import BridgeService
from inspector.bus.kafka import Shutdown, ensure_topics, make_producer
from inspector.cli import app
from inspector.config import PlantConfig
from inspector.events import ActionEvent, DeadLetterRecord, LineCommand, encode
from inspector.localstack import free_port
from tests.act.plcserver import Certs, PlcServer, make_certs, node_id
from tests.act.support import Collector

pytestmark = pytest.mark.integration

MakeConfig = Callable[..., PlantConfig]


def writes(**nodes: tuple[str, str, Any]) -> dict[str, dict[str, Any]]:
    """command → {node_id, type, value} for line-1."""
    return {cmd: {"node_id": node_id(n), "type": t, "value": v} for cmd, (n, t, v) in nodes.items()}


LINE_1 = writes(
    divert=("LastPart", "String", "{part_id}"),
    stop=("Stop", "Boolean", True),
    resume=("Stop", "Boolean", False),
    manual_inspection=("Mode", "Int16", 2),
)


def target(
    name: str, endpoint: str, lines: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    return {
        "kind": "opcua",
        "name": name,
        "endpoint": endpoint,
        "connect_timeout_s": 3,
        "request_timeout_s": 2,
        "lines": lines or {"line-1": LINE_1},
        **kw,
    }


def bridge_config(make_config: MakeConfig, *targets: dict[str, Any], **retry: Any) -> PlantConfig:
    uid = f"{time.monotonic_ns()}"[-8:]
    return make_config(
        bridge={
            "group_id": f"bridge-{uid}",
            "port": 0,
            "targets": list(targets),
            "retry": {
                "max_attempts": 20,
                "initial_backoff_s": 0.2,
                "max_backoff_s": 1.0,
                "give_up_after_s": 60,
                **retry,
            },
        }
    )


def secure(certs: Certs) -> dict[str, Any]:
    return {
        "policy": "Basic256Sha256",
        "mode": "SignAndEncrypt",
        "certificate": str(certs.client_cert),
        "private_key": str(certs.client_key),
        "server_certificate": str(certs.server_cert),
    }


class RunningBridge:
    def __init__(self, cfg: PlantConfig) -> None:
        self.shutdown = Shutdown()
        self.service = BridgeService(cfg, self.shutdown, metrics_port=0)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="bridge-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> RunningBridge:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown.request()
        self.thread.join(30)
        assert not self.thread.is_alive(), "bridge did not stop within 30 s"
        if self.error is not None:
            raise self.error


def send(cfg: PlantConfig, *cmds: LineCommand) -> None:
    producer = make_producer(cfg.kafka, client_suffix="test-commands")
    for c in cmds:
        value, headers = encode(c, source="inspector/test", time=c.issued_at)
        producer.produce(
            cfg.topics.line_commands, value=value, key=c.line_id.encode(), headers=headers
        )
    assert producer.flush(15) == 0


def command(cid: str, kind: str, part: str | None = None) -> LineCommand:
    return LineCommand(
        command_id=cid,
        line_id="line-1",
        command=kind,
        part_id=part,
        reason="test",
        issued_at=time.time(),
    )


@pytest.fixture
def collector(make_config: MakeConfig) -> Iterator[Callable[[PlantConfig], Collector]]:
    made: list[Collector] = []

    def factory(cfg: PlantConfig) -> Collector:
        ensure_topics(cfg.kafka, cfg.topics)
        c = Collector(cfg, [cfg.topics.actions, cfg.topics.dlq])
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()


def actions(col: Collector, cfg: PlantConfig) -> list[ActionEvent]:
    return col.payloads(cfg.topics.actions, ActionEvent)


def seen(
    col: Collector, cfg: PlantConfig, cid: str, outcome: str, target: str | None = None
) -> int:
    return sum(
        1
        for e in actions(col, cfg)
        if e.outcome == outcome
        and f" {cid}:" in e.detail
        and (target is None or e.workflow == target)
    )


def test_line_commands_become_plc_values_read_back(make_config: MakeConfig, collector: Any) -> None:
    with PlcServer() as plc:
        cfg = bridge_config(make_config, target("plc-1", plc.endpoint))
        col = collector(cfg)
        with RunningBridge(cfg):
            send(
                cfg,
                command("c-divert", "divert", part="part-17"),
                command("c-stop", "stop"),
                command("c-manual", "manual_inspection"),
            )
            col.wait(lambda: seen(col, cfg, "c-manual", "delivered") == 1, 25, "three deliveries")
            assert plc.value("LastPart") == "part-17"
            assert plc.value("Stop") is True
            assert plc.value("Mode") == 2
            send(cfg, command("c-resume", "resume"))
            col.wait(lambda: seen(col, cfg, "c-resume", "delivered") == 1, 15, "resume delivered")
            assert plc.value("Stop") is False
        # one write per command, in the order the commands came
        assert plc.writes == [
            (node_id("LastPart"), "part-17"),
            (node_id("Stop"), True),
            (node_id("Mode"), 2),
            (node_id("Stop"), False),
        ]
        events = [e for e in actions(col, cfg) if e.outcome == "delivered"]
        assert [e.detail.split(":")[0] for e in events] == [
            "divert c-divert",
            "stop c-stop",
            "manual_inspection c-manual",
            "resume c-resume",
        ]
        assert all(
            "read back" in e.detail and e.workflow == "plc-1" and e.kind == "opcua" for e in events
        )
        assert all(e.line_id == "line-1" for e in events)


def test_sign_and_encrypt_with_user_and_rejected_credentials(
    make_config: MakeConfig, collector: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    certs = make_certs(tmp_path / "pki")
    with PlcServer(users={"operator": "line1-pass"}, certs=certs) as plc:
        good = target(
            "plc-secure",
            plc.endpoint,
            security=secure(certs),
            username="operator",
            password="line1-pass",
        )
        bad = target(
            "plc-wrong-pw",
            plc.endpoint,
            security=secure(certs),
            username="operator",
            password="guess",
        )
        cfg = bridge_config(make_config, good, bad)
        col = collector(cfg)
        caplog.set_level(logging.INFO, logger="inspector")
        with RunningBridge(cfg):
            send(cfg, command("c-1", "stop"))
            col.wait(
                lambda: (
                    seen(col, cfg, "c-1", "delivered") == 1 and seen(col, cfg, "c-1", "failed") == 1
                ),
                25,
                "delivered by one target, failed at the other",
            )
            col.wait(lambda: len(col.messages[cfg.topics.dlq]) == 1, 10, "the dead letter")
        assert plc.value("Stop") is True
        assert plc.writes == [(node_id("Stop"), True)]
        failed = [e for e in actions(col, cfg) if e.outcome == "failed"]
        assert len(failed) == 1 and failed[0].workflow == "plc-wrong-pw"
        assert "rejected the credentials (user 'operator'): BadUserAccessDenied" in failed[0].detail
        assert "guess" not in failed[0].detail
        # refused for good: no retries
        assert not [e for e in actions(col, cfg) if e.outcome == "retried"]
        dead = col.payloads(cfg.topics.dlq, DeadLetterRecord)
        assert [d.reason for d in dead] == ["line_command_failed"]
        assert "plc-wrong-pw" in dead[0].error and dead[0].stage == "bridge"
        errors = [
            r
            for r in caplog.records
            if r.levelno >= logging.ERROR and r.name.startswith("inspector")
        ]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert errors[0].getMessage() == "line command failed"
        assert "rejected the credentials" in errors[0].__dict__["error"]


def test_plc_away_mid_episode_retries_then_delivers_once(
    make_config: MakeConfig, collector: Any
) -> None:
    plc = PlcServer().start()
    try:
        cfg = bridge_config(make_config, target("plc-1", plc.endpoint))
        col = collector(cfg)
        with RunningBridge(cfg):
            send(cfg, command("c-stop", "stop"))
            col.wait(lambda: seen(col, cfg, "c-stop", "delivered") == 1, 25, "stop delivered")
            plc.stop()  # the PLC goes away while the line is stopped
            send(cfg, command("c-manual", "manual_inspection"), command("c-resume", "resume"))
            col.wait(lambda: seen(col, cfg, "c-manual", "retried") >= 2, 20, "two retries")
            assert seen(col, cfg, "c-resume", "retried") == 0, "resume must wait behind manual"
            plc.start()  # back, on the same port
            col.wait(lambda: seen(col, cfg, "c-resume", "delivered") == 1, 20, "both delivered")
            # the same command again (a redelivery, a replay): recognised, not written again
            send(cfg, command("c-manual", "manual_inspection"))
            col.wait(lambda: seen(col, cfg, "c-manual", "suppressed_dedup") == 1, 15, "dedup")
        assert plc.value("Mode") == 2 and plc.value("Stop") is False
        assert plc.writes_to("Mode") == [2]
        assert plc.writes_to("Stop") == [True, False]  # before the outage, after it
        retried = [e for e in actions(col, cfg) if e.outcome == "retried"]
        assert all(plc.endpoint in e.detail for e in retried), [e.detail for e in retried]
        assert [e.attempt for e in retried] == list(range(1, len(retried) + 1))
        delivered = [
            e for e in actions(col, cfg) if e.outcome == "delivered" and "c-manual" in e.detail
        ]
        assert len(delivered) == 1 and delivered[0].attempt == len(retried) + 1
        assert seen(col, cfg, "c-manual", "given_up") == 0
        assert col.messages[cfg.topics.dlq] == []
    finally:
        plc.stop()


def test_plc_that_stays_away_gets_the_command_dead_lettered(
    make_config: MakeConfig, collector: Any
) -> None:
    nowhere = f"opc.tcp://127.0.0.1:{free_port()}/plc"  # nothing listens there
    cfg = bridge_config(make_config, target("plc-gone", nowhere), max_attempts=3)
    col = collector(cfg)
    with RunningBridge(cfg):
        send(cfg, command("c-1", "divert", part="p1"), command("c-2", "stop"))
        col.wait(lambda: seen(col, cfg, "c-2", "given_up") == 1, 25, "both given up")
    got = [(e.detail.split(":")[0], e.outcome, e.attempt) for e in actions(col, cfg)]
    assert got == [
        ("divert c-1", "retried", 1),
        ("divert c-1", "retried", 2),
        ("divert c-1", "given_up", 3),
        ("stop c-2", "retried", 1),
        ("stop c-2", "retried", 2),
        ("stop c-2", "given_up", 3),
    ]
    dead = col.payloads(cfg.topics.dlq, DeadLetterRecord)
    assert [d.reason for d in dead] == ["line_command_given_up"] * 2
    assert "gave up after 3 attempts" in dead[0].error and "cannot connect" in dead[0].error


def write_plant(cfg: PlantConfig, path: Path) -> Path:
    data = cfg.model_dump(mode="json", exclude_none=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_config_check_online_names_a_missing_node(make_config: MakeConfig, tmp_path: Path) -> None:
    with PlcServer() as plc:
        ok = bridge_config(make_config, target("plc-1", plc.endpoint))
        res = CliRunner().invoke(
            app, ["config", "check", "--online", str(write_plant(ok, tmp_path / "ok.yaml"))]
        )
        assert res.exit_code == 0, res.output
        assert "OK" in res.output

        lines = {"line-1": {**LINE_1, **writes(stop=("EmergencyStop", "Boolean", True))}}
        bad = bridge_config(make_config, target("plc-1", plc.endpoint, lines))
        path = write_plant(bad, tmp_path / "bad.yaml")
        res = CliRunner().invoke(app, ["config", "check", "--online", str(path)])
        assert res.exit_code == 1, res.output
        assert "online check failed (1 problems)" in res.output
        assert (
            "bridge.targets plc-1: lines.line-1.stop: node ns=2;s=Line1.EmergencyStop "
            "does not exist on the server (BadNodeIdUnknown)"
        ) in res.output
        # offline, the same file is valid: only --online asks the PLC
        assert CliRunner().invoke(app, ["config", "check", str(path)]).exit_code == 0

        wrong_type = {"line-1": writes(stop=("Mode", "Boolean", True))}
        typed = bridge_config(make_config, target("plc-1", plc.endpoint, wrong_type))
        res = CliRunner().invoke(
            app, ["config", "check", "--online", str(write_plant(typed, tmp_path / "t.yaml"))]
        )
        assert res.exit_code == 1 and "has data type i=4, not Boolean (i=1)" in res.output, (
            res.output
        )
    assert plc.writes == []  # checking writes nothing
