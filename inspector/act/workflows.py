"""The workflow engine: one batch of verdicts → line commands, webhook deliveries, action events.

Order per batch, chosen for at-least-once without repeats:
1. count verdicts per line (idempotent by partition offset watermark);
2. decide per (verdict, workflow) in Redis — atomically, recorded as *pending*;
   mes_ticket deliveries are queued in the Redis outbox in the same script;
3. produce line commands and action events, wait for the broker's acks;
4. mark the records *done*; the stream loop then commits the offsets.
A failure anywhere before 4 leaves records pending and offsets uncommitted: the
redelivery redoes the side effect with the same ids. A failure after 4 makes the
redelivery a ``suppressed_dedup``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import redis
from confluent_kafka import Message, Producer

from inspector.act.state import Keys, Scripts, parse_record, redis_errors
from inspector.bus.kafka import DeliveryTracker
from inspector.config import (
    DegradedWorkflow,
    DivertWorkflow,
    MesTicketWorkflow,
    NotifyWorkflow,
    PlantConfig,
    StopLineWorkflow,
    WorkflowFilter,
)
from inspector.events import (
    ActionEvent,
    ActionOutcome,
    Finding,
    LineCommand,
    Payload,
    VerdictEvent,
    deterministic_id,
    encode,
)
from inspector.faults import is_inspection_fault
from inspector.telemetry import tracing
from inspector.telemetry.metrics import ACTIONS

log = logging.getLogger(__name__)

SOURCE = "inspector/act"
AnyWorkflow = (
    DivertWorkflow | StopLineWorkflow | DegradedWorkflow | MesTicketWorkflow | NotifyWorkflow
)


# --------------------------------------------------------------------------- filters


def in_scope(f: WorkflowFilter, v: VerdictEvent) -> bool:
    """Line and camera filters only."""
    return (not f.lines or v.line_id in f.lines) and (not f.cameras or v.camera_id in f.cameras)


def matches(f: WorkflowFilter, v: VerdictEvent) -> bool:
    """All filters; class and severity need one finding that satisfies both."""
    if not in_scope(f, v) or v.verdict not in f.verdicts:
        return False
    if not f.classes and not f.severities:
        return True
    return any(
        (not f.classes or fd.cls in f.classes) and (not f.severities or fd.severity in f.severities)
        for fd in v.findings
    )


# --------------------------------------------------------------------------- ids


def action_id(workflow: str, verdict_id: str) -> str:
    return deterministic_id("action", workflow, verdict_id)


def delivery_id(workflow: str, verdict_id: str) -> str:
    # The webhook-id: the same verdict always yields the same id, across retries,
    # redeliveries and restarts, so the receiver can drop duplicates.
    return "msg_" + deterministic_id("webhook", workflow, verdict_id).replace("-", "")


def episode_id(workflow: str, line_id: str, verdict_id: str) -> str:
    return deterministic_id("episode", workflow, line_id, verdict_id)


# What one notification or MES ticket may carry. A verdict may hold up to 4096 findings
# and a 16 kB reason; copied whole, a notification overflows ActionEvent.detail (the
# verdict would be dead-lettered instead of notified) and a ticket grows to the size of
# the verdict (~1 MB), which receivers refuse and which no longer fits a dead-letter
# record when the receiver gives up. The most severe findings come first; the totals
# are always given.
NOTIFY_MAX_CHARS = 1000
NOTIFY_MAX_FINDINGS = 10
TICKET_MAX_DEFECTS = 50
TICKET_MAX_REASON = 1000
_SEVERITY_RANK = {"critical": 0, "major": 1, "minor": 2}


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def worst_first(v: VerdictEvent) -> list[Finding]:
    return sorted(v.findings, key=lambda fd: (_SEVERITY_RANK.get(fd.severity, 3), -fd.score))


def notify_text(v: VerdictEvent) -> str:
    """One line for a person: where, what, the worst findings; never over NOTIFY_MAX_CHARS."""
    shown = worst_first(v)[:NOTIFY_MAX_FINDINGS]
    classes = ", ".join(f"{clip(fd.cls, 64)} {fd.score:.2f} {fd.severity}" for fd in shown)
    if len(v.findings) > len(shown):
        classes += f", and {len(v.findings) - len(shown)} more"
    where = f"{v.line_id}/{v.camera_id} {v.verdict}: {v.rule}"
    text = f"{where} ({classes})" if classes else where
    return clip(text, NOTIFY_MAX_CHARS)


def ticket_body(
    wf: MesTicketWorkflow, v: VerdictEvent, plant: str, ticket_id: str, created_at: float
) -> bytes:
    evidence: dict[str, Any] = {"key": v.annotated_key or v.evidence_key}
    if wf.evidence_base_url and evidence["key"]:
        evidence["url"] = f"{wf.evidence_base_url.rstrip('/')}/evidence/{v.verdict_id}"
    return orjson.dumps(
        {
            "type": "inspector.quality_ticket",
            "ticket_id": ticket_id,
            "workflow": wf.name,
            "plant": plant,
            "line_id": v.line_id,
            "camera_id": v.camera_id,
            "part_id": v.part_id,
            "frame_id": v.frame_id,
            "verdict_id": v.verdict_id,
            "verdict": v.verdict,
            "rule": v.rule,
            "reason": clip(v.reason, TICKET_MAX_REASON),
            "defects": [
                fd.model_dump(mode="json", exclude_none=True)
                for fd in worst_first(v)[:TICKET_MAX_DEFECTS]
            ],
            "defects_total": len(v.findings),
            "evidence": evidence,
            "captured_at": v.timings.captured_at,
            "created_at": round(created_at, 3),
        }
    )


# --------------------------------------------------------------------------- engine


@dataclass
class BatchEffects:
    messages: list[tuple[str, str, Payload]] = field(default_factory=list)  # topic, key, payload
    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # record key, record
    outcomes: list[tuple[str, ActionOutcome]] = field(default_factory=list)


class ActEngine:
    """Decides and applies workflow actions for batches of verdicts."""

    def __init__(self, cfg: PlantConfig, client: redis.Redis) -> None:
        self.cfg = cfg
        self.client = client
        self.keys = Keys(cfg.redis.key_prefix)
        self.scripts = Scripts(client)
        self.workflows: list[AnyWorkflow] = list(cfg.workflows)

    # ------------------------------------------------------------------ batch

    def handle(
        self,
        batch: Sequence[tuple[Message, VerdictEvent]],
        producer: Producer,
        tracker: DeliveryTracker,
    ) -> BatchEffects:
        self.count(batch)
        fx = BatchEffects()
        traces: list[str] = []  # the traceparent each outgoing message carries
        for msg, v in batch:
            parent = tracing.traceparent_from_headers(msg.headers())
            for wf in self.workflows:
                self.apply_traced(wf, v, msg, fx, parent, traces)
        for (topic, key, payload), tp in zip(fx.messages, traces, strict=True):
            value, headers = encode(payload, source=SOURCE, time=time.time())
            # Actions continue the frame's trace (ingest → worker → act).
            headers = tracing.with_traceparent(headers, tp)
            producer.produce(
                topic, value=value, key=key.encode(), headers=headers, on_delivery=tracker
            )
        tracker.flush(producer)  # raises DeliveryFailed → the loop retries; records stay pending
        if fx.pending:
            with redis_errors("marking actions done"):
                pipe = self.client.pipeline(transaction=False)
                for key, rec in fx.pending:
                    rec["state"] = "done"
                    pipe.set(key, orjson.dumps(rec), ex=self.cfg.act.dedup_ttl_s)
                pipe.execute()
        for workflow, outcome in fx.outcomes:
            ACTIONS.labels(workflow, outcome).inc()
        return fx

    def count(self, batch: Sequence[tuple[Message, VerdictEvent]]) -> None:
        keys = [self.keys.counted]
        args: list[str | int] = []
        for msg, v in batch:
            keys.append(self.keys.counters(v.line_id))
            args += [f"{msg.topic()}:{msg.partition()}", msg.offset() or 0, v.verdict.lower()]
        with redis_errors("counting verdicts"):
            self.scripts.count(keys=keys, args=args)

    # ------------------------------------------------------------------ per workflow

    def apply_traced(
        self,
        wf: AnyWorkflow,
        v: VerdictEvent,
        msg: Message,
        fx: BatchEffects,
        parent: str | None,
        traces: list[str],
    ) -> None:
        """``apply``, recorded as an ``act.<kind>`` span continuing the verdict's trace
        when the workflow decided something (a workflow that does not match records
        nothing); its messages carry that span's context."""
        started = time.time_ns()
        n_msgs, n_outcomes = len(fx.messages), len(fx.outcomes)
        self.apply(wf, v, msg, fx)
        if len(fx.messages) == n_msgs and len(fx.outcomes) == n_outcomes:
            return
        span = tracing.start(
            f"act.{wf.kind}",
            parent,
            {
                "inspector.workflow": wf.name,
                "inspector.verdict": v.verdict,
                "inspector.verdict_id": v.verdict_id,
                "inspector.frame_id": v.frame_id,
                "inspector.camera_id": v.camera_id,
                "inspector.line_id": v.line_id,
            },
            start_time=started,
        )
        if span.is_recording():
            if len(fx.outcomes) > n_outcomes:
                span.set_attribute("inspector.outcome", fx.outcomes[-1][1])
            commands = [p.command for _, _, p in fx.messages[n_msgs:] if isinstance(p, LineCommand)]
            if commands:
                span.set_attribute("inspector.commands", commands)
        span.end()
        tp = tracing.traceparent_of(span, parent)
        traces += [tp] * (len(fx.messages) - n_msgs)

    def apply(self, wf: AnyWorkflow, v: VerdictEvent, msg: Message, fx: BatchEffects) -> None:
        if isinstance(wf, StopLineWorkflow):
            self._stop_line(wf, v, fx)
        elif isinstance(wf, DegradedWorkflow):
            self._degraded(wf, v, fx)
        elif not matches(wf.filter, v):
            return
        elif isinstance(wf, DivertWorkflow):
            self._divert(wf, v, fx)
        elif isinstance(wf, MesTicketWorkflow):
            self._mes_ticket(wf, v, msg, fx)
        else:
            self._notify(wf, v, fx)

    def _record(self, fx: BatchEffects, key: str, result: Any) -> tuple[bool, dict[str, Any]]:
        """→ (decided by this call, record); a done record becomes a suppressed_dedup."""
        is_new, raw = int(result[0]), result[1]
        rec = parse_record(raw)
        if rec["state"] == "pending":
            fx.pending.append((key, rec))
        elif not is_new:
            log.info("verdict redelivered; action already done", extra={"record": key})
        return bool(is_new), rec

    def _event(
        self,
        fx: BatchEffects,
        wf: AnyWorkflow,
        v: VerdictEvent,
        outcome: ActionOutcome,
        at: float,
        **kw: Any,
    ) -> None:
        ev = ActionEvent(
            action_id=action_id(wf.name, v.verdict_id),
            workflow=wf.name,
            kind=wf.kind,
            outcome=outcome,
            line_id=v.line_id,
            camera_id=v.camera_id,
            verdict_id=v.verdict_id,
            at=at,
            **kw,
        )
        fx.messages.append((self.cfg.topics.actions, v.line_id, ev))
        fx.outcomes.append((wf.name, outcome))

    def _divert(self, wf: DivertWorkflow, v: VerdictEvent, fx: BatchEffects) -> None:
        key = self.keys.record(wf.name, v.verdict_id)
        part = v.part_id or v.frame_id
        with redis_errors("deciding divert"):
            result = self.scripts.divert(
                keys=[key, self.keys.debounce(wf.name, v.line_id, part)],
                args=[
                    int(wf.debounce_s * 1000),
                    self.cfg.act.dedup_ttl_s,
                    time.time(),
                    v.verdict_id,
                ],
            )
        _, rec = self._record(fx, key, result)
        at = float(rec["at"])
        if rec["state"] == "done":
            self._event(fx, wf, v, "suppressed_dedup", time.time(), detail=rec["decision"])
        elif rec["decision"] == "suppressed_debounce":
            self._event(fx, wf, v, "suppressed_debounce", at, detail=f"part {part}")
        else:
            cmd = LineCommand(
                command_id=deterministic_id("divert", wf.name, v.verdict_id),
                line_id=v.line_id,
                command="divert",
                camera_id=v.camera_id,
                part_id=v.part_id,
                frame_id=v.frame_id,
                verdict_id=v.verdict_id,
                reason=v.rule,
                issued_at=at,
            )
            fx.messages.append((self.cfg.topics.line_commands, v.line_id, cmd))
            self._event(fx, wf, v, "fired", at, detail=f"divert {part}")

    def _stop_line(self, wf: StopLineWorkflow, v: VerdictEvent, fx: BatchEffects) -> None:
        if is_inspection_fault(v.verdict, v.rule):
            # The inspection system could not judge (a worker restart, overload, ...):
            # says nothing about the parts, so it neither counts nor breaks a streak.
            # The degraded workflow reacts to it.
            return
        counts = matches(wf.filter, v)
        # FAULTs carry no findings, so the streak looks at lines/cameras only.
        scoped = in_scope(wf.filter, v) and wf.consecutive_faults > 0
        if not counts and not scoped:
            return
        key = self.keys.record(wf.name, v.verdict_id)
        with redis_errors("deciding stop_line"):
            result = self.scripts.stop_line(
                keys=[
                    key,
                    self.keys.window(wf.name, v.line_id),
                    self.keys.faults(wf.name, v.line_id),
                    self.keys.episode(wf.name, v.line_id),
                ],
                args=[
                    v.verdict_id,
                    v.timings.captured_at,
                    v.verdict,
                    int(counts),
                    int(scoped),
                    wf.window_s,
                    wf.fail_count,
                    wf.consecutive_faults,
                    wf.cooldown_s,
                    time.time(),
                    self.cfg.act.dedup_ttl_s,
                    episode_id(wf.name, v.line_id, v.verdict_id),
                ],
            )
        if int(result[0]) == 2:
            return
        _, rec = self._record(fx, key, result)
        at = float(rec["at"])
        ep = rec.get("episode_id")
        detail = f"{rec.get('trigger')}: {rec.get('fails')} fails, {rec.get('faults')} faults"
        if rec["state"] == "done":
            self._event(
                fx, wf, v, "suppressed_dedup", time.time(), episode_id=ep, detail=rec["decision"]
            )
        elif rec["decision"] == "suppressed_cooldown":
            self._event(fx, wf, v, "suppressed_cooldown", at, episode_id=ep, detail=detail)
        else:
            self._episode_command(fx, v, "stop", "stop", ep, f"{wf.name}: {detail}", at)
            self._event(fx, wf, v, "fired", at, episode_id=ep, detail=detail)
            log.warning(
                "line stop commanded",
                extra={"line": v.line_id, "workflow": wf.name, "episode": ep, "detail": detail},
            )

    def _episode_command(
        self,
        fx: BatchEffects,
        v: VerdictEvent,
        command: Literal["stop", "manual_inspection"],
        id_prefix: str,
        ep: str | None,
        reason: str,
        at: float,
    ) -> None:
        """The line command an episode opens (stop, manual_inspection), id fixed by episode."""
        cmd = LineCommand(
            command_id=deterministic_id(id_prefix, ep),
            line_id=v.line_id,
            command=command,
            camera_id=v.camera_id,
            part_id=v.part_id,
            frame_id=v.frame_id,
            verdict_id=v.verdict_id,
            episode_id=ep,
            reason=reason,
            issued_at=at,
        )
        fx.messages.append((self.cfg.topics.line_commands, v.line_id, cmd))

    def _degraded(self, wf: DegradedWorkflow, v: VerdictEvent, fx: BatchEffects) -> None:
        """Inspection FAULTs → alert + ``manual_inspection`` line command (the line runs on)."""
        if not in_scope(wf.filter, v) or not is_inspection_fault(v.verdict, v.rule):
            return
        key = self.keys.record(wf.name, v.verdict_id)
        with redis_errors("deciding degraded"):
            result = self.scripts.degraded(
                keys=[
                    key,
                    self.keys.window(wf.name, v.line_id),
                    self.keys.episode(wf.name, v.line_id),
                ],
                args=[
                    v.verdict_id,
                    v.timings.captured_at,
                    wf.window_s,
                    wf.fault_count,
                    wf.cooldown_s,
                    time.time(),
                    self.cfg.act.dedup_ttl_s,
                    episode_id(wf.name, v.line_id, v.verdict_id),
                ],
            )
        if int(result[0]) == 2:
            return
        _, rec = self._record(fx, key, result)
        at = float(rec["at"])
        ep = rec.get("episode_id")
        detail = (
            f"inspection degraded: {rec.get('faults')} inspection FAULTs in {wf.window_s:g} s "
            f"(last {v.rule}); divert to manual inspection"
        )
        if rec["state"] == "done":
            self._event(
                fx, wf, v, "suppressed_dedup", time.time(), episode_id=ep, detail=rec["decision"]
            )
        elif rec["decision"] == "suppressed_cooldown":
            self._event(fx, wf, v, "suppressed_cooldown", at, episode_id=ep, detail=detail)
        else:
            reason = f"{wf.name}: {detail}"
            self._episode_command(fx, v, "manual_inspection", "manual", ep, reason, at)
            alert = ActionEvent(
                action_id=action_id(wf.name, v.verdict_id),
                workflow=wf.name,
                kind="degraded",
                outcome="fired",
                line_id=v.line_id,
                camera_id=v.camera_id,
                verdict_id=v.verdict_id,
                episode_id=ep,
                detail=f"{v.line_id}: {detail}",
                at=at,
            )
            fx.messages.append((self.cfg.topics.notifications, v.line_id, alert))
            self._event(fx, wf, v, "fired", at, episode_id=ep, detail=detail)
            log.warning(
                "inspection degraded: manual inspection commanded",
                extra={"line": v.line_id, "workflow": wf.name, "episode": ep, "detail": detail},
            )

    def _mes_ticket(
        self, wf: MesTicketWorkflow, v: VerdictEvent, msg: Message, fx: BatchEffects
    ) -> None:
        key = self.keys.record(wf.name, v.verdict_id)
        did = delivery_id(wf.name, v.verdict_id)
        now = time.time()
        rec = {"state": "pending", "decision": "queue", "at": str(now), "delivery_id": did}
        delivery: dict[str, str | bytes | int | float] = {
            "id": did,
            "workflow": wf.name,
            "action_id": action_id(wf.name, v.verdict_id),
            "verdict_id": v.verdict_id,
            "line_id": v.line_id,
            "camera_id": v.camera_id,
            "body": ticket_body(wf, v, self.cfg.plant, did, now),
            "attempts": 0,
            "first_at": now,
            "topic": msg.topic() or "",
            "partition": msg.partition() or 0,
            "offset": msg.offset() or 0,
        }
        args: list[Any] = [orjson.dumps(rec), self.cfg.act.dedup_ttl_s, did, int(now * 1000)]
        for k, val in delivery.items():
            args += [k, val]
        with redis_errors("queuing a webhook delivery"):
            result = self.scripts.enqueue(
                keys=[key, self.keys.outbox, self.keys.delivery(did)], args=args
            )
        _, got = self._record(fx, key, result)
        if got["state"] == "done":
            self._event(fx, wf, v, "suppressed_dedup", time.time(), detail="already queued")
        else:
            self._event(fx, wf, v, "queued", float(got["at"]), detail=did)

    def _notify(self, wf: NotifyWorkflow, v: VerdictEvent, fx: BatchEffects) -> None:
        key = self.keys.record(wf.name, v.verdict_id)
        with redis_errors("deciding notify"):
            # a divert without debounce is exactly "decide once, record pending"
            result = self.scripts.divert(
                keys=[key, key + ":none"],
                args=[0, self.cfg.act.dedup_ttl_s, time.time(), v.verdict_id],
            )
        _, rec = self._record(fx, key, result)
        if rec["state"] == "done":
            self._event(fx, wf, v, "suppressed_dedup", time.time(), detail=rec["decision"])
            return
        at = float(rec["at"])
        text = notify_text(v)
        note = ActionEvent(
            action_id=action_id(wf.name, v.verdict_id),
            workflow=wf.name,
            kind="notify",
            outcome="fired",
            line_id=v.line_id,
            camera_id=v.camera_id,
            verdict_id=v.verdict_id,
            detail=text,
            at=at,
        )
        fx.messages.append((wf.topic or self.cfg.topics.notifications, v.line_id, note))
        self._event(fx, wf, v, "fired", at, detail=text)
