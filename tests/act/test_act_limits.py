"""act against records that are valid but extreme, and Redis refusals retrying cannot fix.

- A verdict with 4096 findings (the schema's limit) must still notify and still make
  a ticket a receiver takes: notification text and ticket are bounded, with totals.
- A Redis refusal (WRONGTYPE, a script error) dead-letters the record it concerns
  (``store_rejected``) and the stream goes on; connection errors and "not now"
  replies (READONLY, LOADING, OOM, ...) still pause and retry
  (test_act.py::test_redis_down_pauses_then_resumes_without_loss).
"""

from __future__ import annotations

import base64
import time

import orjson
import pytest
import redis
from redis._parsers.base import BaseParser

from inspector.act.mes_stub import MesStub
from inspector.act.state import Keys
from inspector.act.workflows import (
    NOTIFY_MAX_CHARS,
    TICKET_MAX_DEFECTS,
    TICKET_MAX_REASON,
    notify_text,
    ticket_body,
)
from inspector.bus.store import connect, line_counters, record_fault
from inspector.config import MesTicketWorkflow
from inspector.events import (
    MAX_ITEMS,
    MAX_TEXT,
    ActionEvent,
    Box,
    DeadLetterRecord,
    Finding,
    VerdictEvent,
)
from tests.act.support import Collector, RunningAct, send, verdict
from tests.act.test_act import MakeConfig, act_config, commands, mes_workflow, outcomes
from tests.act.test_signing import OLD


def crowded(seq: int, n: int = MAX_ITEMS, cam: str = "cam-1") -> VerdictEvent:
    """A FAIL with n findings, one critical among majors, and the longest reason allowed."""
    v = verdict(seq, cam=cam)
    box = Box(x1=1, y1=1, x2=9, y2=9)
    findings = [
        Finding(
            cls="crack" if i == n // 2 else "dent",
            score=0.5,
            box=box,
            severity="critical" if i == n // 2 else "major",
            rule="class:dent",
        )
        for i in range(n)
    ]
    return v.model_copy(update={"findings": findings, "reason": "r" * MAX_TEXT})


# --------------------------------------------------------------------------- units


def test_notify_text_and_ticket_are_bounded_with_totals() -> None:
    v = crowded(1)
    assert len(orjson.dumps(v.model_dump(mode="json"))) > 400_000  # a big but valid verdict
    text = notify_text(v)
    assert len(text) <= NOTIFY_MAX_CHARS < MAX_TEXT
    assert text.startswith("line-1/cam-1 FAIL: class:dent (crack 0.50 critical, dent 0.50 major")
    assert text.endswith(f"and {MAX_ITEMS - 10} more)")
    ActionEvent(
        action_id="a",
        workflow="w",
        kind="notify",
        outcome="fired",
        line_id="l",
        detail=text,
        at=1.0,
    )  # fits the event (it did not: 16 kB Text limit)

    wf = MesTicketWorkflow(name="mes", url="http://mes.local/t", secrets=[OLD])
    body = ticket_body(wf, v, "plant", "msg_1", 1.0)
    assert len(body) < 64_000, len(body)
    ticket = orjson.loads(body)
    assert ticket["defects_total"] == MAX_ITEMS
    assert len(ticket["defects"]) == TICKET_MAX_DEFECTS
    assert ticket["defects"][0]["cls"] == "crack"  # the most severe first
    assert len(ticket["reason"]) == TICKET_MAX_REASON and ticket["reason"].endswith("…")
    small = orjson.loads(ticket_body(wf, verdict(2, cls="crack"), "plant", "msg_2", 1.0))
    assert small["defects_total"] == len(small["defects"]) == 1


@pytest.mark.parametrize(
    ("reply", "record_fault_expected"),
    [
        ("WRONGTYPE Operation against a key holding the wrong kind of value", True),
        ("ERR Error running script (call to f_1a2b): @user_script:1: oops", True),
        ("EXECABORT Transaction discarded because of previous errors.", True),
        ("READONLY You can't write against a read only replica.", False),
        ("LOADING Redis is loading the dataset in memory", False),
        ("OOM command not allowed when used memory > 'maxmemory'.", False),
        ("BUSY Redis is busy running a script.", False),
        ("MASTERDOWN Link with MASTER is down", False),
        ("MISCONF Redis is configured to save RDB snapshots, but it's failing", False),
        ("NOPERM this user has no permissions to run the 'set' command", False),
        ("ERR max number of clients reached", False),
    ],
)
def test_redis_replies_are_classed_record_fault_or_transient(
    reply: str, record_fault_expected: bool
) -> None:
    assert record_fault(BaseParser.parse_error(reply)) is record_fault_expected


def test_connection_errors_and_timeouts_are_transient() -> None:
    assert not record_fault(redis.ConnectionError("refused"))
    assert not record_fault(redis.TimeoutError("timed out"))
    assert record_fault(redis.DataError("Invalid input of type: 'dict'"))


# --------------------------------------------------------------------------- through act


def test_a_crowded_verdict_still_notifies_and_tickets(make_config: MakeConfig) -> None:
    with MesStub(secrets=[OLD]) as mes, MesStub(secrets=[OLD]) as refusing:
        refusing.fail(413)  # a receiver that refuses the ticket: given up, dead-lettered
        cfg = act_config(
            make_config,
            {"kind": "notify", "name": "qa-chat"},
            mes_workflow(mes.url),
            mes_workflow(refusing.url, "mes-refusing"),
        )
        big = crowded(1)
        send(cfg, [big, verdict(2, cls="crack")])
        col = Collector(cfg, [cfg.topics.notifications, cfg.topics.actions, cfg.topics.dlq])
        try:
            with RunningAct(cfg):
                col.wait(
                    lambda: (
                        outcomes(col, cfg, "mes-ticket")["fired"] == 2
                        and len(col.messages[cfg.topics.notifications]) == 2
                        and len(col.messages[cfg.topics.dlq]) == 2
                    ),
                    40,
                    "two notifications, two tickets delivered, two refused",
                )
            col.drain()
        finally:
            col.close()
        notes = {n.verdict_id: n for n in col.payloads(cfg.topics.notifications, ActionEvent)}
        assert len(notes[big.verdict_id].detail) <= NOTIFY_MAX_CHARS
        assert f"and {MAX_ITEMS - 10} more" in notes[big.verdict_id].detail
        ticket = next(t for t in mes.tickets.values() if t["verdict_id"] == big.verdict_id)
        assert ticket["defects_total"] == MAX_ITEMS
        assert len(ticket["defects"]) == TICKET_MAX_DEFECTS
        dead = col.payloads(cfg.topics.dlq, DeadLetterRecord)
        assert {d.reason for d in dead} == {"webhook_rejected"}, [(d.reason, d.error) for d in dead]
        for d in dead:  # the refused ticket travels whole in its dead-letter record
            body = orjson.loads(base64.b64decode(d.original_value_b64 or ""))
            assert body["ticket_id"] and d.original_value_size < 64_000


def test_a_redis_refusal_dead_letters_the_record_and_the_stream_goes_on(
    make_config: MakeConfig,
) -> None:
    cfg = act_config(make_config, {"kind": "divert", "name": "reject-gate"})
    client = connect(cfg.redis)
    # line-2's counters hash is a string: every HINCRBY on it is WRONGTYPE, forever.
    client.set(Keys(cfg.redis.key_prefix).counters("line-2"), b"not a hash")
    good = [verdict(i, part=f"p{i}") for i in range(1, 7)]
    bad = [verdict(i, cam="cam-3", cls="crack", part=f"q{i}") for i in range(1, 3)]
    send(cfg, [*good[:3], bad[0], *good[3:], bad[1]])
    col = Collector(cfg, [cfg.topics.line_commands, cfg.topics.dlq])
    t0 = time.monotonic()
    try:
        with RunningAct(cfg) as act:
            col.wait(
                lambda: (
                    len(commands(col, cfg, "divert")) == 6
                    and len(col.messages[cfg.topics.dlq]) == 2
                ),
                30,
                "six diverts for line-1 and two dead letters for line-2",
            )
            assert act.thread.is_alive()
        col.drain()
    finally:
        col.close()
    took = time.monotonic() - t0
    assert {d.verdict_id for d in commands(col, cfg, "divert")} == {v.verdict_id for v in good}
    dead = col.payloads(cfg.topics.dlq, DeadLetterRecord)
    assert [d.reason for d in dead] == ["store_rejected", "store_rejected"]
    for d in dead:
        assert d.stage == "act" and d.original_topic == cfg.topics.verdicts
        assert "WRONGTYPE" in d.error and "counting verdicts" in d.error, d.error
        assert "failed 3 times" in d.error
    c1 = line_counters(client, cfg.redis.key_prefix, "line-1")
    assert c1.failed == 6
    assert took < 30


def test_an_unreadable_webhook_delivery_leaves_the_outbox(make_config: MakeConfig) -> None:
    """A delivery that is not a hash (WRONGTYPE) or lacks its fields is dead-lettered
    (webhook_unreadable) and dropped; it used to be claimed again after every lease."""
    with MesStub(secrets=[OLD]) as mes:
        cfg = act_config(make_config, mes_workflow(mes.url))
        client = connect(cfg.redis)
        keys = Keys(cfg.redis.key_prefix)
        client.set(keys.delivery("msg_wrongtype"), b"not a hash")
        client.hset(keys.delivery("msg_partial"), mapping={"id": "msg_partial"})
        client.zadd(keys.outbox, {"msg_wrongtype": 0, "msg_partial": 0})
        send(cfg, [verdict(1, cls="crack")])
        col = Collector(cfg, [cfg.topics.actions, cfg.topics.dlq])
        try:
            with RunningAct(cfg) as act:
                col.wait(
                    lambda: (
                        outcomes(col, cfg)["fired"] == 1 and len(col.messages[cfg.topics.dlq]) == 2
                    ),
                    30,
                    "the ticket delivered and two unreadable deliveries dead-lettered",
                )
                assert act.service.sender.alive()
            col.drain()
        finally:
            col.close()
        dead = col.payloads(cfg.topics.dlq, DeadLetterRecord)
        assert {d.reason for d in dead} == {"webhook_unreadable"}
        errors = sorted(d.error for d in dead)
        assert "KeyError" in errors[0] and "msg_partial" in errors[0], errors
        assert "WRONGTYPE" in errors[1] and "msg_wrongtype" in errors[1], errors
        assert client.zcard(keys.outbox) == 0
        assert mes.snapshot()["tickets"] == 1
