"""``inspector act`` on the real broker, redis-server and a real local HTTP MES."""

from __future__ import annotations

import base64
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from standardwebhooks import Webhook, WebhookVerificationError
from typer.testing import CliRunner

from inspector.act.mes_stub import MesStub
from inspector.act.state import Keys, open_episodes, outbox_size
from inspector.act.workflows import ActEngine
from inspector.bus.store import connect, line_counters
from inspector.cli import app
from inspector.config import PlantConfig
from inspector.events import (
    ActionEvent,
    DeadLetterRecord,
    LineCommand,
    PartTrigger,
    encode,
    header_dict,
)
from inspector.localstack import ManagedProcess, free_port, start_redis
from tests.act.support import (
    LINES,
    Collector,
    RunningAct,
    Trickle,
    send,
    verdict,
    write_config,
)
from tests.act.test_signing import NEW, OLD
from tests.helpers import create_topics, produce, wait_for

pytestmark = pytest.mark.integration

MakeConfig = Callable[..., PlantConfig]


def act_config(make_config: MakeConfig, *workflows: dict[str, Any], **over: Any) -> PlantConfig:
    # A short session: a killed act member is evicted within 3 s, so the kill and
    # restart tests do not wait on the default 10 s.
    kafka = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 500}
    cfg = make_config(lines=LINES, workflows=list(workflows), kafka=kafka, **over)
    create_topics(cfg)
    return cfg


def outcomes(col: Collector, cfg: PlantConfig, workflow: str | None = None) -> Counter[str]:
    return Counter(
        e.outcome
        for e in col.payloads(cfg.topics.actions, ActionEvent)
        if workflow is None or e.workflow == workflow
    )


def commands(col: Collector, cfg: PlantConfig, kind: str) -> list[LineCommand]:
    return [c for c in col.payloads(cfg.topics.line_commands, LineCommand) if c.command == kind]


# --------------------------------------------------------------------------- divert


def test_divert_per_fail_with_debounce_counters_notify_and_metrics(
    make_config: MakeConfig,
) -> None:
    cfg = act_config(
        make_config,
        {"kind": "divert", "name": "reject-gate", "debounce_s": 30},
        {"kind": "notify", "name": "qa-chat", "filter": {"severities": ["critical"]}},
    )
    fired_before = (
        REGISTRY.get_sample_value(
            "inspector_actions_total", {"workflow": "reject-gate", "outcome": "fired"}
        )
        or 0.0
    )
    batch = [
        verdict(1, "FAIL", cls="dent", part="p1"),
        verdict(2, "PASS", part="p2"),
        verdict(3, "FAIL", cam="cam-3", cls="crack", part="p3"),
        verdict(4, "FAULT"),
        verdict(5, "FAIL", cam="cam-2", cls="scratch", part="p1"),  # same part, 2nd camera
        verdict(6, "FAIL", cls="dent", part="p4"),
        verdict(7, "PASS", part="p5"),
    ]
    send(cfg, batch)
    port = free_port()
    col = Collector(cfg, [cfg.topics.line_commands, cfg.topics.actions, cfg.topics.notifications])
    try:
        with RunningAct(cfg, metrics_port=port):
            col.wait(lambda: sum(outcomes(col, cfg).values()) >= 5, 30, "five action events")
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        col.drain()
        diverts = commands(col, cfg, "divert")
        assert [(d.verdict_id, d.part_id, d.line_id) for d in diverts if d.line_id == "line-1"] == [
            ("v-cam-1-1", "p1", "line-1"),
            ("v-cam-1-6", "p4", "line-1"),
        ]
        assert [(d.verdict_id, d.frame_id) for d in diverts if d.line_id == "line-2"] == [
            ("v-cam-3-3", "cam-3:run1:3")
        ]
        assert len(diverts) == 3
        # keyed by line: a PLC gateway per line reads one partition
        keys = {m.key() for m in col.messages[cfg.topics.line_commands]}
        assert keys == {b"line-1", b"line-2"}
        assert outcomes(col, cfg, "reject-gate") == {"fired": 3, "suppressed_debounce": 1}
        debounced = [
            e
            for e in col.payloads(cfg.topics.actions, ActionEvent)
            if e.outcome == "suppressed_debounce"
        ]
        assert debounced[0].verdict_id == "v-cam-2-5"
        assert outcomes(col, cfg, "qa-chat") == {"fired": 1}
        [note] = col.payloads(cfg.topics.notifications, ActionEvent)
        assert note.verdict_id == "v-cam-3-3" and "crack 0.90 critical" in note.detail

        client = connect(cfg.redis)
        c1 = line_counters(client, cfg.redis.key_prefix, "line-1")
        assert (c1.passed, c1.failed, c1.faults) == (2, 3, 1)
        assert c1.yield_ratio == pytest.approx(2 / 5)
        c2 = line_counters(client, cfg.redis.key_prefix, "line-2")
        assert (c2.passed, c2.failed, c2.faults, c2.yield_ratio) == (0, 1, 0, 0.0)

        assert ready.status_code == 200 and ready.json()["checks"] == {
            "redis": True,
            "webhook_sender": True,
        }
        assert 'inspector_actions_total{outcome="fired",workflow="reject-gate"}' in metrics
        fired_after = REGISTRY.get_sample_value(
            "inspector_actions_total", {"workflow": "reject-gate", "outcome": "fired"}
        )
        assert fired_after == fired_before + 3
    finally:
        col.close()


# --------------------------------------------------------------------------- stop_line


def test_stop_line_fires_once_per_episode_respects_cooldown_and_resume(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    cfg = act_config(
        make_config,
        {
            "kind": "stop_line",
            "name": "stop-on-crack",
            "filter": {"classes": ["crack"], "lines": ["line-1"]},
            "fail_count": 3,
            "window_s": 10,
            "consecutive_faults": 3,
            "cooldown_s": 300,
        },
    )
    t0 = time.time() - 100  # event time decides the window, so no waiting is needed
    col = Collector(cfg, [cfg.topics.line_commands, cfg.topics.actions])
    try:
        with RunningAct(cfg):
            send(
                cfg,
                [
                    verdict(1, cls="crack", t=t0),
                    verdict(2, cls="crack", t=t0 + 1),
                    verdict(3, cls="dent", t=t0 + 2),  # not in the filter
                    verdict(4, cls="crack", t=t0 + 20),  # 1 and 2 slid out of the window
                    verdict(5, cls="crack", t=t0 + 21),
                    verdict(6, cam="cam-3", cls="crack", t=t0 + 21),  # line-2: not in scope
                    verdict(7, cam="cam-2", cls="crack", t=t0 + 22),  # 3 in 10 s → stop
                    verdict(8, cls="crack", t=t0 + 23),
                    verdict(9, cls="crack", t=t0 + 24),
                    verdict(10, cls="crack", t=t0 + 25),  # threshold again, same episode
                ],
            )
            # The stop command and the action events are on different topics: wait for both.
            col.wait(
                lambda: (
                    outcomes(col, cfg)["suppressed_cooldown"] >= 1
                    and len(commands(col, cfg, "stop")) >= 1
                ),
                30,
                "cooldown suppression and the stop command",
            )
            [stop] = commands(col, cfg, "stop")
            assert stop.line_id == "line-1" and stop.verdict_id == "v-cam-2-7"
            assert stop.episode_id and "fail_count: 3 fails" in stop.reason
            assert outcomes(col, cfg) == {"fired": 1, "suppressed_cooldown": 1}

            result = CliRunner().invoke(
                app,
                [
                    "resume",
                    "--config",
                    str(write_config(cfg, tmp_path / "p.yaml")),
                    "--line",
                    "line-1",
                ],
            )
            assert result.exit_code == 0, result.output
            assert stop.episode_id in result.output
            col.wait(lambda: len(commands(col, cfg, "resume")) == 1, 15, "the resume command")
            [resume] = commands(col, cfg, "resume")
            assert resume.episode_id == stop.episode_id and resume.line_id == "line-1"
            client = connect(cfg.redis)
            assert open_episodes(client, cfg.redis.key_prefix, "line-1", ["stop-on-crack"]) == {}

            # after resume: FAULT, FAULT, PASS resets the streak; then three in a row stop
            send(
                cfg,
                [
                    verdict(11, "FAULT"),
                    verdict(12, "FAULT"),
                    verdict(13, "PASS"),
                    verdict(14, "FAULT"),
                    verdict(15, "FAULT", cam="cam-2"),
                    verdict(16, "FAULT"),
                ],
            )
            col.wait(lambda: len(commands(col, cfg, "stop")) == 2, 30, "the second stop")
        col.drain()
        stops = commands(col, cfg, "stop")
        assert len(stops) == 2
        assert stops[1].verdict_id == "v-cam-1-16"
        assert stops[1].episode_id != stops[0].episode_id
        assert "consecutive_faults" in stops[1].reason
        open_now = open_episodes(client, cfg.redis.key_prefix, "line-1", ["stop-on-crack"])
        assert open_now["stop-on-crack"]["episode_id"] == stops[1].episode_id
        events = col.payloads(cfg.topics.actions, ActionEvent)
        assert [(e.kind, e.outcome) for e in events if e.kind == "resume"] == [("resume", "fired")]
        assert Counter(e.outcome for e in events if e.kind == "stop_line") == {
            "fired": 2,
            "suppressed_cooldown": 1,
        }
    finally:
        col.close()


def test_inspection_faults_divert_to_manual_inspection_and_never_stop_the_line(
    make_config: MakeConfig,
) -> None:
    """A worker restart's stale FAULTs: alert + manual_inspection, never a stop; product
    FAULTs (the station sees nothing) still stop the line, inspection FAULTs in between
    neither count nor break their streak."""
    from inspector.act.service import resume_line

    cfg = act_config(
        make_config,
        {
            "kind": "stop_line",
            "name": "stop-on-burst",
            "filter": {"lines": ["line-1"]},
            "fail_count": 50,
            "consecutive_faults": 3,
            "cooldown_s": 300,
        },
        {
            "kind": "degraded",
            "name": "manual-qa",
            "fault_count": 4,
            "window_s": 10,
            "cooldown_s": 300,
        },
    )
    t0 = time.time() - 100
    col = Collector(cfg, [cfg.topics.line_commands, cfg.topics.actions, cfg.topics.notifications])
    try:
        with RunningAct(cfg):
            stale = [
                verdict(i, "FAULT", cam=f"cam-{1 + i % 2}", rule="fault:stale", t=t0 + i * 0.1)
                for i in range(1, 11)
            ]
            # line-2 has its own window: 3 < fault_count
            stale += [
                verdict(i, "FAULT", cam="cam-3", rule="fault:shed", t=t0 + i) for i in range(1, 4)
            ]
            send(cfg, stale)
            col.wait(
                lambda: outcomes(col, cfg, "manual-qa")["suppressed_cooldown"] >= 1,
                30,
                "the second threshold, suppressed by the cooldown",
            )
            [manual] = commands(col, cfg, "manual_inspection")
            assert manual.line_id == "line-1" and manual.verdict_id == "v-cam-1-4"
            assert manual.episode_id and "4 inspection FAULTs" in manual.reason
            assert "fault:stale" in manual.reason
            assert commands(col, cfg, "stop") == []
            [alert] = col.payloads(cfg.topics.notifications, ActionEvent)
            assert alert.kind == "degraded" and alert.episode_id == manual.episode_id

            send(
                cfg,
                [
                    verdict(11, "FAULT", t=t0 + 20),
                    verdict(12, "FAULT", rule="fault:stale", t=t0 + 20.1),
                    verdict(13, "FAULT", cam="cam-2", t=t0 + 20.2),
                    verdict(14, "FAULT", rule="fault:claim_expired", t=t0 + 20.3),
                    verdict(15, "FAULT", t=t0 + 20.4),
                ],
            )
            col.wait(lambda: len(commands(col, cfg, "stop")) == 1, 30, "the product-FAULT stop")
            [stop] = commands(col, cfg, "stop")
            assert stop.verdict_id == "v-cam-1-15" and "consecutive_faults" in stop.reason
            assert "3 faults" in stop.reason

            resume_line(cfg, "line-1", operator="test")
            col.wait(lambda: len(commands(col, cfg, "resume")) == 1, 15, "the resume")
            client = connect(cfg.redis)
            assert (
                open_episodes(
                    client, cfg.redis.key_prefix, "line-1", ["stop-on-burst", "manual-qa"]
                )
                == {}
            )
        col.drain()
        assert len(commands(col, cfg, "manual_inspection")) == 1  # line-2 stayed below
        events = col.payloads(cfg.topics.actions, ActionEvent)
        # one suppression per further fault_count FAULTs (8th), not one per FAULT (8, 9, 10)
        assert Counter(e.outcome for e in events if e.kind == "degraded") == {
            "fired": 1,
            "suppressed_cooldown": 1,
        }
        assert Counter(e.outcome for e in events if e.kind == "stop_line") == {"fired": 1}
        assert {e.workflow for e in events if e.kind == "resume"} == {"stop-on-burst", "manual-qa"}
    finally:
        col.close()


# --------------------------------------------------------------------------- MES tickets


def mes_workflow(url: str, name: str = "mes-ticket", **kw: Any) -> dict[str, Any]:
    return {
        "kind": "mes_ticket",
        "name": name,
        "filter": {"severities": ["major", "critical"]},
        "url": url,
        "secrets": [NEW, OLD],  # rotating: the MES still only knows OLD
        "timeout_s": 2,
        "evidence_base_url": "http://dashboard.local:8080",
    } | kw


def failed_ids(mes: MesStub) -> set[str]:
    return {r.headers["webhook-id"] for r in mes.requests if r.status == 503}


def test_mes_tickets_signed_and_a_receiver_outage_loses_and_duplicates_nothing(
    make_config: MakeConfig,
) -> None:
    with MesStub(secrets=[OLD]) as mes:
        cfg = act_config(
            make_config,
            mes_workflow(
                mes.url,
                # the 60 s outage, scaled: 6 s with a 1 s backoff cap
                retry={
                    "max_attempts": 60,
                    "initial_backoff_s": 0.1,
                    "max_backoff_s": 1.0,
                    "give_up_after_s": 60,
                },
            ),
        )
        mes.fail(503)
        tickets = [verdict(i, cls="crack" if i % 2 else "dent", part=f"p{i}") for i in range(6)]
        send(cfg, [*tickets, verdict(10, cls="scratch"), verdict(11, "PASS")])  # 2 filtered out
        col = Collector(cfg, [cfg.topics.actions, cfg.topics.dlq])
        client = connect(cfg.redis)
        try:
            with RunningAct(cfg):
                col.wait(lambda: outcomes(col, cfg)["queued"] == 6, 30, "six queued tickets")
                assert outbox_size(client, cfg.redis.key_prefix) == 6
                # The 60 s outage, scaled to 6 s (with a 1 s backoff cap): the MES
                # stays down until every ticket has failed and 6 s have passed.
                wait_for(
                    lambda: len(failed_ids(mes)) == 6 and time.time() - mes.requests[0].at >= 6,
                    30,
                    "every ticket to meet the outage",
                )
                mes.recover()
                col.wait(lambda: outcomes(col, cfg)["fired"] == 6, 40, "six delivered tickets")
                assert outbox_size(client, cfg.redis.key_prefix) == 0
            col.drain()
        finally:
            col.close()

        stats = mes.snapshot()
        assert stats["failed"] >= 6, stats  # every ticket met the outage at least once
        assert stats["tickets"] == 6 and stats["verified"] == 6, stats
        assert stats["duplicates"] == 0 and stats["rejected"] == 0, stats
        assert {t["verdict_id"] for t in mes.tickets.values()} == {v.verdict_id for v in tickets}
        got = outcomes(col, cfg)
        assert got["given_up"] == 0 and got["retried"] >= 6, got
        assert col.messages[cfg.topics.dlq] == []

        # webhook-id stable across retries: every failed attempt carried a recorded id
        assert failed_ids(mes) == set(mes.tickets)
        ticket = mes.tickets[sorted(mes.tickets)[0]]
        assert ticket["evidence"]["url"].startswith("http://dashboard.local:8080/evidence/v-")
        assert ticket["defects"][0]["severity"] in ("major", "critical")

        # an independent verifier accepts what arrived; a tampered body is rejected
        delivered = [r for r in mes.requests if r.status == 200]
        for req in delivered:
            assert (
                Webhook(OLD).verify(req.body, req.headers)["ticket_id"] == req.headers["webhook-id"]
            )
            Webhook(NEW).verify(req.body, req.headers)
        tampered = delivered[0].body.replace(b'"line-1"', b'"line-2"')
        assert tampered != delivered[0].body
        with pytest.raises(WebhookVerificationError):
            Webhook(OLD).verify(tampered, delivered[0].headers)


def test_webhook_4xx_is_not_retried_and_5xx_gives_up_to_the_dlq(make_config: MakeConfig) -> None:
    with MesStub(secrets=[OLD]) as rejecting, MesStub(secrets=[OLD]) as down:
        rejecting.fail(422)
        down.fail(503)
        cfg = act_config(
            make_config,
            mes_workflow(rejecting.url, "mes-reject"),
            mes_workflow(
                down.url,
                "mes-down",
                retry={"max_attempts": 3, "initial_backoff_s": 0.05, "max_backoff_s": 0.1},
            ),
        )
        send(cfg, [verdict(1, cls="crack")])
        col = Collector(cfg, [cfg.topics.actions, cfg.topics.dlq])
        try:
            with RunningAct(cfg):
                col.wait(lambda: outcomes(col, cfg)["given_up"] == 2, 30, "two give-ups")
                col.wait(lambda: len(col.messages[cfg.topics.dlq]) == 2, 10, "two dead letters")
            col.drain()
        finally:
            col.close()
        events = col.payloads(cfg.topics.actions, ActionEvent)
        assert [(e.outcome, e.attempt) for e in events if e.workflow == "mes-reject"] == [
            ("queued", 1),
            ("given_up", 1),
        ]
        assert [(e.outcome, e.attempt) for e in events if e.workflow == "mes-down"] == [
            ("queued", 1),
            ("retried", 1),
            ("retried", 2),
            ("given_up", 3),
        ]
        assert rejecting.snapshot()["received"] == 1
        assert down.snapshot()["received"] == 3
        dead = {d.reason: d for d in col.payloads(cfg.topics.dlq, DeadLetterRecord)}
        assert set(dead) == {"webhook_rejected", "webhook_given_up"}
        assert "HTTP 422" in dead["webhook_rejected"].error
        assert "gave up after 3 attempts" in dead["webhook_given_up"].error
        for d in dead.values():
            assert d.stage == "act" and d.original_topic == cfg.topics.verdicts
            body = orjson.loads(base64.b64decode(d.original_value_b64 or ""))
            assert body["verdict_id"] == "v-cam-1-1"


# --------------------------------------------------------------------------- redelivery


def test_redelivered_verdicts_do_not_refire_and_a_pending_action_is_redone(
    make_config: MakeConfig,
) -> None:
    cfg = act_config(make_config, {"kind": "divert", "name": "reject-gate"})
    first = [verdict(i, part=f"p{i}") for i in range(4)]
    send(cfg, first)
    col = Collector(cfg, [cfg.topics.line_commands, cfg.topics.actions])
    try:
        with RunningAct(cfg):
            col.wait(lambda: len(commands(col, cfg, "divert")) == 4, 30, "four diverts")

        # A crash after deciding v4 but before its command was acknowledged leaves a
        # pending record; the redelivery must redo it, not suppress it.
        crashed = verdict(4, part="p4")
        engine = ActEngine(cfg, connect(cfg.redis))
        key = Keys(cfg.redis.key_prefix).record("reject-gate", crashed.verdict_id)
        engine.scripts.divert(keys=[key, key + ":d"], args=[0, 3600, time.time(), "v"])
        send(cfg, [crashed])

        # a new consumer group sees every verdict again: a redelivery of all five
        replay = cfg.model_copy(update={"act": cfg.act.model_copy(update={"group_id": "replay"})})
        with RunningAct(replay):
            col.wait(
                lambda: (
                    outcomes(col, cfg)["suppressed_dedup"] == 4
                    and len(commands(col, cfg, "divert")) == 5
                ),
                30,
                "four dedups and the redone divert",
            )
        col.drain()
        diverts = commands(col, cfg, "divert")
        assert Counter(d.verdict_id for d in diverts) == {f"v-cam-1-{i}": 1 for i in range(5)}
        assert outcomes(col, cfg) == {"fired": 5, "suppressed_dedup": 4}
        rec = orjson.loads(connect(cfg.redis).get(key) or b"{}")
        assert rec["state"] == "done"
    finally:
        col.close()


def test_act_restarted_mid_stream_loses_and_duplicates_nothing(make_config: MakeConfig) -> None:
    cfg = act_config(make_config, {"kind": "divert", "name": "reject-gate"}, act={"max_batch": 2})
    col = Collector(cfg, [cfg.topics.line_commands])
    try:
        with Trickle(cfg, [verdict(i, part=f"p{i}") for i in range(40)], every_s=0.05) as src:
            with RunningAct(cfg):
                col.wait(lambda: len(commands(col, cfg, "divert")) >= 5, 30, "the stream")
            seen_at_stop = len(commands(col, cfg, "divert"))  # SIGTERM path, mid-stream
            assert not src.done and seen_at_stop < 40
            with RunningAct(cfg):
                col.wait(lambda: len(commands(col, cfg, "divert")) >= 40, 30, "all forty")
        col.drain()
        got = Counter(d.verdict_id for d in commands(col, cfg, "divert"))
        assert got == {f"v-cam-1-{i}": 1 for i in range(40)}
    finally:
        col.close()


def test_act_killed_mid_stream_redoes_only_with_identical_commands(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys

    cfg = act_config(make_config, {"kind": "divert", "name": "reject-gate"}, act={"max_batch": 2})
    path = write_config(cfg, tmp_path / "plant.yaml")
    inspector = str(Path(sys.executable).parent / "inspector")
    ports = [free_port(), free_port()]
    log = (tmp_path / "act.log").open("ab")
    col = Collector(cfg, [cfg.topics.line_commands])
    procs: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> None:
        argv = [inspector, "act", "--config", str(path), "--metrics-port", str(port)]
        procs.append(subprocess.Popen(argv, stdout=log, stderr=log))

    def healthy(port: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        start(ports[0])
        wait_for(lambda: healthy(ports[0]), 30, "act to serve /healthz")
        with Trickle(cfg, [verdict(i, part=f"p{i}") for i in range(40)], every_s=0.1) as src:
            col.wait(lambda: len(commands(col, cfg, "divert")) >= 5, 40, "the stream under way")
            procs[0].send_signal(signal.SIGKILL)  # no graceful commit, mid-batch at worst
            procs[0].wait(10)
            assert not src.done, "the kill must land mid-stream"
            start(ports[1])
        wait_for(lambda: healthy(ports[1]), 30, "the restarted act to serve /healthz")
        col.wait(
            lambda: len({d.command_id for d in commands(col, cfg, "divert")}) == 40,
            60,
            "every verdict diverted after the restart",
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
        log.close()
        col.close()
    assert procs[-1].returncode == 0, (tmp_path / "act.log").read_text()[-2000:]
    by_id: dict[str, set[bytes]] = {}
    for m in col.messages[cfg.topics.line_commands]:
        by_id.setdefault(str(header_dict(m.headers())["ce_id"]), set()).add(m.value() or b"")
    # A kill between the broker's ack and the done-mark can repeat a command, but only
    # byte-identical with the same ce_id, which a PLC gateway drops.
    assert len(by_id) == 40 and all(len(v) == 1 for v in by_id.values())


# --------------------------------------------------------------------------- bad input


def test_malformed_verdicts_are_dead_lettered_and_the_stream_goes_on(
    make_config: MakeConfig,
) -> None:
    cfg = act_config(make_config, {"kind": "divert", "name": "reject-gate"})
    good_value, good_headers = encode(verdict(1), source="t", time=1.0)
    trig_value, trig_headers = encode(
        PartTrigger(line_id="line-1", camera_id="cam-1", part_id="p", event="enter", at=1.0),
        source="t",
        time=1.0,
    )
    broken = orjson.loads(good_value)
    del broken["line_id"]
    produce(
        cfg,
        cfg.topics.verdicts,
        [
            (b"{not json", good_headers),
            (trig_value, trig_headers),
            (orjson.dumps(broken), good_headers),
            (good_value, good_headers),
        ],
        key=b"line-1",
    )
    col = Collector(cfg, [cfg.topics.line_commands, cfg.topics.dlq])
    try:
        with RunningAct(cfg):
            col.wait(
                lambda: (
                    len(col.messages[cfg.topics.dlq]) == 3
                    and len(commands(col, cfg, "divert")) == 1
                ),
                30,
                "three dead letters and one divert",
            )
        col.drain()
        dead = col.payloads(cfg.topics.dlq, DeadLetterRecord)
        assert sorted(d.reason for d in dead) == ["bad_json", "schema_violation", "wrong_type"]
        assert {d.stage for d in dead} == {"act"}
        assert {d.original_offset for d in dead} == {0, 1, 2}
        assert commands(col, cfg, "divert")[0].verdict_id == "v-cam-1-1"
    finally:
        col.close()


# --------------------------------------------------------------------------- Redis down


def test_redis_down_pauses_then_resumes_without_loss(
    make_config: MakeConfig,
    own_redis: ManagedProcess,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = act_config(
        make_config,
        {"kind": "divert", "name": "reject-gate"},
        redis={"url": f"redis://127.0.0.1:{own_redis.port}/0", "socket_timeout_s": 0.5},
    )
    port = free_port()
    col = Collector(cfg, [cfg.topics.line_commands, cfg.topics.actions])
    restarted: ManagedProcess | None = None
    caplog.set_level(logging.INFO, logger="inspector")
    try:
        with RunningAct(cfg, metrics_port=port) as act:
            send(cfg, [verdict(1), verdict(2)])
            col.wait(lambda: len(commands(col, cfg, "divert")) == 2, 30, "two diverts")
            # The diverts are on the topic before act marks them done in Redis and commits:
            # Redis must go only once both records are committed, or the retry after this
            # fresh (empty) Redis would rightly divert them again (same command ids).
            stats = act.service.loop.stats
            wait_for(lambda: stats.records >= 2, 10, "the first batch committed")

            own_redis.close()
            send(cfg, [verdict(3), verdict(4), verdict(5)])
            retries_before = stats.retries
            col.wait(lambda: stats.retries >= retries_before + 2, 20, "the loop to pause")
            assert len(commands(col, cfg, "divert")) == 2  # nothing acted while paused
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["redis"] is False
            paused = [
                r for r in caplog.records if r.getMessage() == "batch not processed, will retry"
            ]
            assert paused and "Redis unavailable" in paused[-1].error  # type: ignore[attr-defined]

            restarted = start_redis(port=own_redis.port, log_dir=tmp_path)
            try:
                col.wait(lambda: len(commands(col, cfg, "divert")) == 5, 30, "the paused diverts")
            except AssertionError as exc:
                acts = [
                    (e.verdict_id, e.outcome) for e in col.payloads(cfg.topics.actions, ActionEvent)
                ]
                logs = [(r.name, r.getMessage(), getattr(r, "error", "")) for r in caplog.records]
                raise AssertionError(
                    f"{exc}; act: {act.describe()}; actions {acts}; logs {logs}"
                ) from None
        col.drain()
        got = Counter(d.verdict_id for d in commands(col, cfg, "divert"))
        assert got == {f"v-cam-1-{i}": 1 for i in range(1, 6)}
    finally:
        col.close()
        if restarted is not None:
            restarted.close()
