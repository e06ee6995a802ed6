"""Delivers queued MES tickets: signed POSTs with capped exponential backoff and jitter.

Why an outbox rather than pausing the partition: a stop or divert command for a line
must not wait behind an MES that is down, and a paused partition would hold every line
on it hostage. So the consumer commits a verdict once its ticket is durably in Redis
(``act:outbox``), and this thread works the outbox independently. Nothing is lost
while the receiver is down (the delivery stays queued, and survives an act restart as
long as Redis keeps its data — run production Redis with AOF persistence), and the
``webhook-id`` never changes, so a receiver that deduplicates sees each ticket once.

Outcomes per attempt: 2xx → ``fired``; 408/429/5xx/network error → ``retried`` until
``max_attempts`` or ``give_up_after_s``; any other 4xx → not retried. Giving up writes
a dead-letter record (the undelivered ticket) and a ``given_up`` action event.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import threading
import time
from dataclasses import dataclass

import httpx
import redis
from confluent_kafka import Producer

from inspector.act.signing import signed_headers
from inspector.act.state import Keys, Scripts, redis_errors
from inspector.bus.kafka import Shutdown
from inspector.bus.store import StoreRejected, StoreUnavailable
from inspector.config import MesTicketWorkflow, PlantConfig, RetrySettings
from inspector.events import ActionEvent, ActionOutcome, DeadLetterRecord, encode
from inspector.telemetry.metrics import ACTIONS, WEBHOOK_OUTBOX, WEBHOOK_SECONDS

log = logging.getLogger(__name__)

SOURCE = "inspector/act"
RETRYABLE_4XX = {408, 429}


def backoff_s(retry: RetrySettings, attempt: int, rng: random.Random) -> float:
    """Capped exponential with equal jitter: half fixed (spacing), half random (no herds)."""
    capped: float = min(retry.max_backoff_s, retry.initial_backoff_s * 2 ** (attempt - 1))
    return capped / 2 + rng.uniform(0, capped / 2)


def retry_after_s(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


@dataclass
class Delivery:
    id: str
    workflow: str
    action_id: str
    verdict_id: str
    line_id: str
    camera_id: str
    body: bytes
    attempts: int
    first_at: float
    topic: str
    partition: int
    offset: int

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> Delivery:
        s = {k.decode(): v for k, v in raw.items()}
        return cls(
            id=s["id"].decode(),
            workflow=s["workflow"].decode(),
            action_id=s["action_id"].decode(),
            verdict_id=s["verdict_id"].decode(),
            line_id=s["line_id"].decode(),
            camera_id=s["camera_id"].decode(),
            body=s["body"],
            attempts=int(s["attempts"]),
            first_at=float(s["first_at"]),
            topic=s["topic"].decode(),
            partition=int(s["partition"]),
            offset=int(s["offset"]),
        )


@dataclass
class Attempt:
    ok: bool
    retryable: bool
    detail: str
    retry_after: float | None = None


class WebhookSender:
    """A thread that delivers due outbox entries; safe to run in several act processes."""

    def __init__(
        self,
        cfg: PlantConfig,
        client: redis.Redis,
        producer: Producer,
        shutdown: Shutdown,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.client = client
        self.producer = producer
        self.shutdown = shutdown
        self.keys = Keys(cfg.redis.key_prefix)
        self.scripts = Scripts(client)
        self.workflows = {w.name: w for w in cfg.workflows if isinstance(w, MesTicketWorkflow)}
        lease = max((w.timeout_s for w in self.workflows.values()), default=5.0) + 10.0
        self.lease_ms = int(lease * 1000)
        self.rng = rng or random.Random()
        self.http = httpx.Client(headers={"user-agent": "inspector-act"}, follow_redirects=False)
        self.thread = threading.Thread(target=self.run, name="webhook-sender", daemon=True)
        self.delivered = 0
        self.healthy = True

    def start(self) -> WebhookSender:
        if self.workflows:
            self.thread.start()
        return self

    def alive(self) -> bool:
        return not self.workflows or (self.thread.is_alive() and self.healthy)

    def join(self, timeout_s: float) -> None:
        if self.thread.is_alive():
            self.thread.join(timeout_s)
        self.http.close()

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        pause = self.cfg.act.outbox_poll_s
        while not self.shutdown.requested:
            try:
                sent = self.tick()
                self.healthy = True
                pause = self.cfg.act.outbox_poll_s
            except StoreUnavailable as exc:
                if self.healthy:
                    log.warning(
                        "webhook deliveries paused: Redis unreachable", extra={"error": str(exc)}
                    )
                self.healthy = False
                sent = 0
                pause = min(pause * 2, 5.0)
            except Exception:  # the sender must outlive any single bad delivery
                log.exception("webhook sender error")
                sent = 0
            if not sent:
                self.shutdown.wait(pause)
        self.producer.flush(10)

    def tick(self, limit: int = 16) -> int:
        """Attempt every due delivery (up to ``limit``); → how many were attempted."""
        with redis_errors("claiming webhook deliveries"):
            ids = self.scripts.claim_due(
                keys=[self.keys.outbox], args=[int(time.time() * 1000), self.lease_ms, limit]
            )
            WEBHOOK_OUTBOX.set(int(self.client.zcard(self.keys.outbox)))
        for raw_id in ids:
            if self.shutdown.requested:
                break
            self.deliver(raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id))
        self.producer.poll(0)
        return len(ids)

    # ------------------------------------------------------------------ one delivery

    def deliver(self, did: str) -> None:
        try:
            with redis_errors("loading a webhook delivery"):
                raw = self.client.hgetall(self.keys.delivery(did))
            d = Delivery.from_hash(raw) if raw else None  # type: ignore[arg-type]
        except (StoreRejected, KeyError, ValueError) as exc:
            # Not a hash, or one without the fields we wrote: no retry can read it, so it
            # leaves the outbox (dead-lettered) instead of being claimed again forever.
            self._discard(did, f"{type(exc).__name__}: {exc}")
            return
        if d is None:  # completed by another sender between claim and load
            with redis_errors("cleaning the outbox"):
                self.client.zrem(self.keys.outbox, did)
            return
        wf = self.workflows.get(d.workflow)
        attempt_no = d.attempts + 1
        if wf is None:
            self._give_up(d, attempt_no, "workflow no longer configured", "webhook_orphaned")
            return
        result = self._post(wf, d)
        if result.ok:
            self._event(d, "fired", attempt_no, result.detail)
            self.producer.flush(5)
            with redis_errors("completing a webhook delivery"):
                self._complete(d.id)
            self.delivered += 1
            log.info(
                "webhook delivered",
                extra={"workflow": wf.name, "webhook_id": d.id, "attempt": attempt_no},
            )
            return
        elapsed = time.time() - d.first_at
        if not result.retryable:
            self._give_up(d, attempt_no, result.detail, "webhook_rejected")
        elif attempt_no >= wf.retry.max_attempts or elapsed >= wf.retry.give_up_after_s:
            why = f"{result.detail}; gave up after {attempt_no} attempts in {elapsed:.1f}s"
            self._give_up(d, attempt_no, why, "webhook_given_up")
        else:
            delay = backoff_s(wf.retry, attempt_no, self.rng)
            if result.retry_after is not None:
                delay = max(delay, min(result.retry_after, wf.retry.max_backoff_s))
            self._event(d, "retried", attempt_no, f"{result.detail}; next in {delay:.2f}s")
            with redis_errors("rescheduling a webhook delivery"):
                pipe = self.client.pipeline(transaction=True)
                pipe.hset(self.keys.delivery(d.id), "attempts", attempt_no)
                pipe.zadd(self.keys.outbox, {d.id: int((time.time() + delay) * 1000)}, xx=True)
                pipe.execute()
            log.warning(
                "webhook attempt failed, will retry",
                extra={
                    "workflow": wf.name,
                    "webhook_id": d.id,
                    "attempt": attempt_no,
                    "error": result.detail,
                    "retry_in_s": round(delay, 2),
                },
            )

    def _complete(self, did: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.keys.outbox, did)
        pipe.delete(self.keys.delivery(did))
        pipe.execute()

    def _post(self, wf: MesTicketWorkflow, d: Delivery) -> Attempt:
        secrets = [s.get_secret_value() for s in wf.secrets]
        headers = signed_headers(d.id, d.body, secrets)
        headers["content-type"] = "application/json"
        started = time.monotonic()
        try:
            resp = self.http.post(wf.url, content=d.body, headers=headers, timeout=wf.timeout_s)
        except httpx.HTTPError as exc:
            return Attempt(False, True, f"{type(exc).__name__}: {exc}"[:300])
        finally:
            WEBHOOK_SECONDS.labels(wf.name).observe(time.monotonic() - started)
        code = resp.status_code
        if 200 <= code < 300:
            return Attempt(True, False, f"HTTP {code}")
        retryable = code >= 500 or code in RETRYABLE_4XX or code < 200
        return Attempt(
            False, retryable, f"HTTP {code}", retry_after_s(resp.headers.get("retry-after"))
        )

    def _give_up(
        self,
        d: Delivery,
        attempt_no: int,
        detail: str,
        reason: str,
    ) -> None:
        rec = DeadLetterRecord(
            reason=reason,
            error=f"webhook {d.id} for verdict {d.verdict_id}: {detail}"[:2000],
            stage="act",
            original_topic=d.topic,
            original_partition=d.partition,
            original_offset=d.offset,
            original_headers={"webhook-id": base64.b64encode(d.id.encode()).decode()},
            # the ticket itself only while it fits the record; size and digest always
            original_value_b64=base64.b64encode(d.body).decode()
            if len(d.body) * 4 // 3 < self.cfg.kafka.message_max_bytes // 2
            else None,
            original_value_size=len(d.body),
            original_value_sha256=hashlib.sha256(d.body).hexdigest(),
            failed_at=time.time(),
        )
        value, headers = encode(rec, source=SOURCE, time=rec.failed_at)
        self.producer.produce(
            self.cfg.topics.dlq, value=value, key=d.line_id.encode(), headers=headers
        )
        self._event(d, "given_up", attempt_no, detail)
        self.producer.flush(5)
        with redis_errors("dead-lettering a webhook delivery"):
            self._complete(d.id)
        log.error(
            "webhook given up, dead-lettered",
            extra={
                "workflow": d.workflow,
                "webhook_id": d.id,
                "attempt": attempt_no,
                "reason": reason,
                "error": detail,
            },
        )

    def _discard(self, did: str, why: str) -> None:
        rec = DeadLetterRecord(
            reason="webhook_unreadable",
            error=f"webhook delivery {did[:200]} cannot be read from Redis: {why}"[:2000],
            stage="act",
            original_headers={"webhook-id": base64.b64encode(did.encode()[:512]).decode()},
            failed_at=time.time(),
        )
        value, headers = encode(rec, source=SOURCE, time=rec.failed_at)
        self.producer.produce(self.cfg.topics.dlq, value=value, headers=headers)
        self.producer.flush(5)
        with redis_errors("dropping an unreadable webhook delivery"):
            self.client.zrem(self.keys.outbox, did)
        log.error(
            "unreadable webhook delivery dropped from the outbox, dead-lettered",
            extra={"webhook_id": did[:200], "error": why[:300]},
        )

    def _event(
        self,
        d: Delivery,
        outcome: ActionOutcome,
        attempt_no: int,
        detail: str,
    ) -> None:
        ev = ActionEvent(
            action_id=d.action_id,
            workflow=d.workflow,
            kind="mes_ticket",
            outcome=outcome,
            line_id=d.line_id,
            camera_id=d.camera_id,
            verdict_id=d.verdict_id,
            attempt=attempt_no,
            detail=f"{d.id}: {detail}"[:1000],
            at=time.time(),
        )
        value, headers = encode(ev, source=SOURCE, time=ev.at)
        self.producer.produce(
            self.cfg.topics.actions, value=value, key=d.line_id.encode(), headers=headers
        )
        ACTIONS.labels(d.workflow, outcome).inc()
