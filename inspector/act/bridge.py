"""The line bridge: line commands (divert, stop, resume, manual_inspection) to the line's
controllers, through targets.

A **target** is anything that can carry a command to the line: a PLC over OPC UA
(``act/opcua.py``), an MQTT broker, ... It answers three questions, all synchronous and
bounded by its own timeouts:

- ``accepts(cmd)``: is this command for me (my line, a command I have a variable for)?
- ``deliver(cmd) -> Outcome``: carry it out; ``ok`` only once the effect is confirmed
  (OPC UA: written, then read back); a failure says whether retrying can help;
- ``check() -> list[str]``: what is wrong with my configuration against the live
  system (``inspector config check --online``), one line per problem.

The bridge decides what happens around a delivery (``LineBridge.handle``, pure: no
broker, no Redis; the ledger is an interface), per command and target, in the order
the commands came:

- already settled (the ledger has an outcome for this command id at this target) →
  ``suppressed_dedup``, nothing is sent again;
- delivered → ``delivered`` (settled);
- refused for a reason no retry fixes (credentials, a node that does not exist, a
  type the PLC refuses) → ``failed`` with the reason, dead-lettered (settled);
- a transient failure (PLC unreachable, a timeout, a read-back that differs) →
  ``retried``, and the batch is retried later (the stream loop holds it and backs off,
  nothing after it is read: commands of a line stay in order); after
  ``retry.max_attempts`` attempts or ``retry.give_up_after_s`` → ``given_up``,
  dead-lettered (settled). Never a stuck stage.

A settled outcome is written to the ledger only after its action event is acknowledged
by the broker; a crash in between redelivers the command, and the target writes the
same value again (at least once; the values are idempotent, the command id is the
same).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from inspector.config import RetrySettings
from inspector.events import ActionEvent, ActionOutcome, LineCommand, deterministic_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt came to."""

    ok: bool
    detail: str
    retryable: bool = False


class Target(Protocol):
    """A way to the line's controllers. Implementations bound every call by timeouts."""

    name: str  # unique among the configured targets (the ActionEvent's workflow)
    kind: str  # "opcua", "mqtt", ... (the ActionEvent's kind)

    def accepts(self, cmd: LineCommand) -> bool: ...

    def deliver(self, cmd: LineCommand) -> Outcome: ...

    def check(self) -> list[str]: ...

    def close(self) -> None: ...


class Ledger(Protocol):
    """Where settled outcomes are remembered, by target and command id (act's Redis)."""

    def settled(self, target: str, command_id: str) -> dict[str, Any] | None: ...

    def settle(self, records: Sequence[tuple[str, str, dict[str, Any]]]) -> None: ...


@dataclass
class Effects:
    """What one batch produced: action events, dead letters, ledger records, and
    whether the batch must be retried later (then ``retry_reason`` says why)."""

    events: list[ActionEvent] = field(default_factory=list)
    dead: list[tuple[Any, str, str]] = field(default_factory=list)  # msg, reason, detail
    settled: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    retry_reason: str | None = None


@dataclass
class _Tries:
    n: int
    first_at: float


def action_id(target: str, command_id: str) -> str:
    return deterministic_id("bridge", target, command_id)


def backoff_s(retry: RetrySettings, attempt: int) -> float:
    """The stream loop's backoff after ``attempt`` consecutive failures (doubling, capped)."""
    return float(min(retry.max_backoff_s, retry.initial_backoff_s * 2 ** (attempt - 1)))


class LineBridge:
    """Delivers batches of line commands to targets; see the module docstring."""

    def __init__(
        self,
        targets: Sequence[Target],
        ledger: Ledger,
        retry: RetrySettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.targets = list(targets)
        self.ledger = ledger
        self.retry = retry
        self.clock = clock
        self._tries: dict[tuple[str, str], _Tries] = {}
        # settled while the current batch was held: skipped silently when it is redone
        self._settled_here: set[tuple[str, str]] = set()

    def committed(self) -> None:
        """The batch's offsets are committed: forget its in-flight bookkeeping."""
        self._tries.clear()
        self._settled_here.clear()

    def handle(self, batch: Sequence[tuple[Any, LineCommand]]) -> Effects:
        fx = Effects()
        for msg, cmd in batch:
            for target in self.targets:
                if not target.accepts(cmd):
                    continue
                if not self._one(fx, msg, cmd, target):
                    return fx  # retry later; nothing after this command is attempted
        return fx

    def _one(self, fx: Effects, msg: Any, cmd: LineCommand, target: Target) -> bool:
        """→ False when the batch must be retried later."""
        key = (target.name, cmd.command_id)
        if key in self._settled_here:
            return True
        prior = self.ledger.settled(*key)
        if prior is not None:
            self._settled_here.add(key)
            self._event(fx, target, cmd, "suppressed_dedup", 1, f"already {prior.get('outcome')}")
            return True
        now = self.clock()
        tries = self._tries.setdefault(key, _Tries(0, now))
        tries.n += 1
        try:
            out = target.deliver(cmd)
        except Exception as exc:  # a target's bug must not stop the stage; bounded below
            log.exception("target raised", extra={"target": target.name})
            out = Outcome(False, f"{type(exc).__name__}: {exc}"[:500], retryable=True)
        n = tries.n
        if out.ok:
            self._settle(fx, target, cmd, "delivered", n, out.detail)
            log.info(
                "line command delivered",
                extra={
                    "target": target.name,
                    "line": cmd.line_id,
                    "command": cmd.command,
                    "command_id": cmd.command_id,
                    "attempt": n,
                },
            )
            return True
        elapsed = self.clock() - tries.first_at
        if not out.retryable:
            self._settle(fx, target, cmd, "failed", n, out.detail)
            fx.dead.append((msg, "line_command_failed", f"{target.name}: {out.detail}"))
            log.error(
                "line command failed",
                extra={"target": target.name, "command_id": cmd.command_id, "error": out.detail},
            )
            return True
        if n >= self.retry.max_attempts or elapsed >= self.retry.give_up_after_s:
            why = f"{out.detail}; gave up after {n} attempts in {elapsed:.1f}s"
            self._settle(fx, target, cmd, "given_up", n, why)
            fx.dead.append((msg, "line_command_given_up", f"{target.name}: {why}"))
            log.error(
                "line command given up, dead-lettered",
                extra={"target": target.name, "command_id": cmd.command_id, "error": why},
            )
            return True
        delay = backoff_s(self.retry, n)
        self._event(fx, target, cmd, "retried", n, f"{out.detail}; next in {delay:.2f}s")
        fx.retry_reason = f"{target.name}: {out.detail}"
        return False

    def _settle(
        self,
        fx: Effects,
        target: Target,
        cmd: LineCommand,
        outcome: ActionOutcome,
        attempt: int,
        detail: str,
    ) -> None:
        key = (target.name, cmd.command_id)
        self._settled_here.add(key)
        self._tries.pop(key, None)
        record = {"outcome": outcome, "attempts": attempt, "at": round(self.clock(), 3)}
        fx.settled.append((target.name, cmd.command_id, record))
        self._event(fx, target, cmd, outcome, attempt, detail)

    def _event(
        self,
        fx: Effects,
        target: Target,
        cmd: LineCommand,
        outcome: ActionOutcome,
        attempt: int,
        detail: str,
    ) -> None:
        fx.events.append(
            ActionEvent(
                action_id=action_id(target.name, cmd.command_id),
                workflow=target.name,
                kind=target.kind,
                outcome=outcome,
                line_id=cmd.line_id,
                camera_id=cmd.camera_id,
                verdict_id=cmd.verdict_id,
                episode_id=cmd.episode_id,
                attempt=attempt,
                detail=f"{cmd.command} {cmd.command_id}: {detail}"[:1000],
                at=self.clock(),
            )
        )
