"""The line bridge's decisions (pure logic): fake targets, an in-memory ledger, a fake clock.

What is delivered, retried, given up, refused and deduplicated, and in which order; the
broker, Redis and a real PLC are in test_plc.py.
"""

from __future__ import annotations

from typing import Any

from inspector.act.bridge import Effects, LineBridge, Outcome, backoff_s
from inspector.config import RetrySettings
from inspector.events import LineCommand

RETRY = RetrySettings(max_attempts=3, initial_backoff_s=0.5, max_backoff_s=2.0, give_up_after_s=60)


class FakeTarget:
    kind = "fake"

    def __init__(
        self, name: str, outcomes: list[Outcome] | None = None, lines: set[str] | None = None
    ) -> None:
        self.name = name
        self.outcomes = list(outcomes or [])  # answered in turn; then ok
        self.lines = lines
        self.delivered: list[str] = []  # command ids, per call
        self.raises = False

    def accepts(self, cmd: LineCommand) -> bool:
        return self.lines is None or cmd.line_id in self.lines

    def deliver(self, cmd: LineCommand) -> Outcome:
        self.delivered.append(cmd.command_id)
        if self.raises:
            raise RuntimeError("target bug")
        return self.outcomes.pop(0) if self.outcomes else Outcome(True, "ok")

    def check(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


class DictLedger:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str], dict[str, Any]] = {}

    def settled(self, target: str, command_id: str) -> dict[str, Any] | None:
        return self.data.get((target, command_id))

    def settle(self, records: Any) -> None:
        for t, c, rec in records:
            self.data[(t, c)] = rec


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def cmd(i: int, command: str = "divert", line: str = "line-1") -> tuple[str, LineCommand]:
    return (
        f"msg-{i}",
        LineCommand(command_id=f"c{i}", line_id=line, command=command, issued_at=1.0),
    )


def run(bridge: LineBridge, ledger: DictLedger, batch: list[tuple[str, LineCommand]]) -> Effects:
    """What the service does: apply the effects (settle) after each handle."""
    fx = bridge.handle(batch)
    ledger.settle(fx.settled)
    return fx


def outcomes(fx: Effects) -> list[tuple[str, str, str, int]]:
    return [(e.workflow, e.detail.split(":")[0], e.outcome, e.attempt) for e in fx.events]


def test_delivers_in_order_to_every_accepting_target() -> None:
    a, b = FakeTarget("a"), FakeTarget("b", lines={"line-2"})
    ledger = DictLedger()
    bridge = LineBridge([a, b], ledger, RETRY)
    fx = run(bridge, ledger, [cmd(1), cmd(2, "stop", "line-2"), cmd(3, "resume", "line-2")])
    assert outcomes(fx) == [
        ("a", "divert c1", "delivered", 1),
        ("a", "stop c2", "delivered", 1),
        ("b", "stop c2", "delivered", 1),
        ("a", "resume c3", "delivered", 1),
        ("b", "resume c3", "delivered", 1),
    ]
    assert fx.retry_reason is None and fx.dead == []
    assert a.delivered == ["c1", "c2", "c3"] and b.delivered == ["c2", "c3"]
    assert {k: v["outcome"] for k, v in ledger.data.items()} == {
        ("a", "c1"): "delivered",
        ("a", "c2"): "delivered",
        ("b", "c2"): "delivered",
        ("a", "c3"): "delivered",
        ("b", "c3"): "delivered",
    }
    ev = fx.events[0]
    assert ev.kind == "fake" and ev.line_id == "line-1" and ev.action_id


def test_redelivered_command_is_suppressed_not_sent_again() -> None:
    a = FakeTarget("a")
    ledger = DictLedger()
    run(LineBridge([a], ledger, RETRY), ledger, [cmd(1)])
    # a new process (restart, rebalance) reads the same record again
    fx = run(LineBridge([a], ledger, RETRY), ledger, [cmd(1)])
    assert outcomes(fx) == [("a", "divert c1", "suppressed_dedup", 1)]
    assert "already delivered" in fx.events[0].detail
    assert a.delivered == ["c1"]


def test_transient_failure_retries_later_and_stops_the_batch_there() -> None:
    down = Outcome(False, "cannot connect", retryable=True)
    a = FakeTarget("a", [Outcome(True, "ok"), down])
    ledger = DictLedger()
    bridge = LineBridge([a], ledger, RETRY)
    batch = [cmd(1), cmd(2), cmd(3)]
    fx = run(bridge, ledger, batch)
    assert outcomes(fx) == [("a", "divert c1", "delivered", 1), ("a", "divert c2", "retried", 1)]
    assert fx.retry_reason == "a: cannot connect"
    assert "next in 0.50s" in fx.events[1].detail
    assert a.delivered == ["c1", "c2"]  # c3 is not tried before c2 is settled: order holds
    # the loop redoes the held batch: c1 is skipped silently, c2 succeeds, c3 goes
    fx = run(bridge, ledger, batch)
    assert outcomes(fx) == [("a", "divert c2", "delivered", 2), ("a", "divert c3", "delivered", 1)]
    assert a.delivered == ["c1", "c2", "c2", "c3"]
    bridge.committed()


def test_gives_up_after_max_attempts_and_dead_letters() -> None:
    down = Outcome(False, "cannot connect", retryable=True)
    a = FakeTarget("a", [down, down, down])
    ledger = DictLedger()
    bridge = LineBridge([a], ledger, RETRY)
    seen = []
    for _ in range(3):
        fx = run(bridge, ledger, [cmd(1), cmd(2)])
        seen += outcomes(fx)
    assert seen == [
        ("a", "divert c1", "retried", 1),
        ("a", "divert c1", "retried", 2),
        ("a", "divert c1", "given_up", 3),
        ("a", "divert c2", "delivered", 1),
    ]
    assert fx.retry_reason is None
    assert fx.dead == [
        ("msg-1", "line_command_given_up", "a: cannot connect; gave up after 3 attempts in 0.0s")
    ]
    assert ledger.data[("a", "c1")]["outcome"] == "given_up"
    # given up is settled: a redelivery does not start over
    fx = run(LineBridge([a], ledger, RETRY), ledger, [cmd(1)])
    assert outcomes(fx) == [("a", "divert c1", "suppressed_dedup", 1)]


def test_gives_up_after_give_up_after_s() -> None:
    clock = Clock()
    retry = RetrySettings(
        max_attempts=100, initial_backoff_s=1, max_backoff_s=5, give_up_after_s=10
    )
    a = FakeTarget("a", [Outcome(False, "timeout", retryable=True)] * 3)
    ledger = DictLedger()
    bridge = LineBridge([a], ledger, retry, clock=clock)
    assert outcomes(run(bridge, ledger, [cmd(1)]))[0][2] == "retried"
    clock.t += 11
    fx = run(bridge, ledger, [cmd(1)])
    assert outcomes(fx) == [("a", "divert c1", "given_up", 2)]
    assert "gave up after 2 attempts in 11.0s" in fx.dead[0][2]


def test_refusal_fails_at_once_with_the_reason() -> None:
    a = FakeTarget("a", [Outcome(False, "rejected the credentials (user 'op')", retryable=False)])
    b = FakeTarget("b")
    ledger = DictLedger()
    fx = run(LineBridge([a, b], ledger, RETRY), ledger, [cmd(1)])
    assert outcomes(fx) == [("a", "divert c1", "failed", 1), ("b", "divert c1", "delivered", 1)]
    assert "rejected the credentials" in fx.events[0].detail
    assert fx.dead == [("msg-1", "line_command_failed", "a: rejected the credentials (user 'op')")]
    assert fx.retry_reason is None


def test_a_target_that_raises_is_retried_then_given_up_not_a_crash() -> None:
    a = FakeTarget("a")
    a.raises = True
    ledger = DictLedger()
    bridge = LineBridge([a], ledger, RETRY)
    got = [outcomes(run(bridge, ledger, [cmd(1)]))[0][2] for _ in range(3)]
    assert got == ["retried", "retried", "given_up"]


def test_one_target_retrying_does_not_redo_the_other() -> None:
    a = FakeTarget("a")
    b = FakeTarget("b", [Outcome(False, "down", retryable=True)])
    ledger = DictLedger()
    bridge = LineBridge([a, b], ledger, RETRY)
    run(bridge, ledger, [cmd(1)])
    fx = run(bridge, ledger, [cmd(1)])
    assert outcomes(fx) == [("b", "divert c1", "delivered", 2)]
    assert a.delivered == ["c1"]


def test_backoff_doubles_to_the_cap() -> None:
    assert [backoff_s(RETRY, n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 2.0, 2.0]
