"""The consume → process → produce → commit loop every consumer stage runs.

Guarantees:
- bad input never stops the loop: a record the decoder rejects becomes a dead-letter
  record with its reason and original coordinates, and the batch goes on;
- offsets are committed only after everything the batch produced (outputs and
  dead letters) was acknowledged by the broker, or inside the same transaction;
- a transient failure (Redis down, broker not acknowledging) rewinds to the batch's
  first offsets and retries with capped backoff, committing nothing meanwhile;
- SIGTERM/SIGINT lets the in-flight batch finish, then flushes, commits and closes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from inspector.bus.kafka import (
    DeadLetters,
    DeliveryFailed,
    DeliveryTracker,
    ServiceUnavailable,
    Shutdown,
    next_offsets,
    oversize_error,
    topic_partition,
)
from inspector.events import EventError
from inspector.metrics import DEAD_LETTERS, LOOP_ERRORS

log = logging.getLogger(__name__)

T = TypeVar("T")


class RetryLater(Exception):
    """Raised by a handler when the batch cannot be processed *now* (not the input's fault)."""


@dataclass
class LoopStats:
    batches: int = 0
    records: int = 0
    dead_lettered: int = 0
    retries: int = 0
    last_progress: float = 0.0  # monotonic time of the last completed poll


class StreamLoop(Generic[T]):
    """Runs ``decode`` per record and ``handle`` per batch of decoded records.

    ``handle`` produces its outputs on ``producer`` with ``on_delivery=loop.tracker``
    (so they are checked before the commit), and may reject single records itself
    with ``loop.dead_letter(msg, reason, detail)``.
    """

    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: Producer,
        topics: Sequence[str],
        dlq_topic: str,
        stage: str,
        decode: Callable[[Message], T],
        handle: Callable[[list[tuple[Message, T]]], None],
        max_batch: int = 64,
        max_wait_s: float = 0.1,
        max_message_bytes: int = 1_000_000,
        transactional: bool = False,
        shutdown: Shutdown | None = None,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        on_idle: Callable[[], None] | None = None,
        after_commit: Callable[[], None] | None = None,
        idle_poll_s: float = 0.2,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.topics = list(topics)
        self.stage = stage
        self.decode = decode
        self.handle = handle
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_message_bytes = max_message_bytes
        self.transactional = transactional
        self.shutdown = shutdown or Shutdown()
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.on_idle = on_idle
        self.after_commit = after_commit
        self.idle_poll_s = idle_poll_s
        self.tracker = DeliveryTracker()
        self.dlq = DeadLetters(producer, dlq_topic, stage, self.tracker, max_message_bytes)
        self.stats = LoopStats()
        self.assigned: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------ helpers

    def dead_letter(self, msg: Message, reason: str, detail: str) -> None:
        self.dlq.send(msg, reason, detail)
        DEAD_LETTERS.labels(self.stage, reason).inc()
        self.stats.dead_lettered += 1

    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        self.assigned |= {(p.topic, p.partition) for p in parts}
        log.info("partitions assigned", extra={"stage": self.stage, "partitions": len(parts)})

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        # Batches are processed and committed synchronously inside run(), so at a
        # revoke there is nothing in flight to hand over.
        self.assigned -= {(p.topic, p.partition) for p in parts}
        log.info("partitions revoked", extra={"stage": self.stage, "partitions": len(parts)})

    def _poll(self) -> list[Message]:
        # Block only for the first record; then top the batch up for at most max_wait_s,
        # so a lone frame is never held back waiting for company (batch 1 stays fast).
        first = self.consumer.poll(self.idle_poll_s)
        if first is None:
            return []
        msgs = [first]
        if self.max_batch > 1:
            msgs += self.consumer.consume(self.max_batch - 1, self.max_wait_s)
        out = []
        for m in msgs:
            err = m.error()
            if err is None:
                out.append(m)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            elif err.fatal():
                raise KafkaException(err)
            else:
                log.warning("consumer error", extra={"stage": self.stage, "error": err.str()})
        return out

    def _rewind(self, msgs: list[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for m in msgs:
            key = topic_partition(m)
            off = m.offset() or 0
            first[key] = min(first.get(key, off), off)
        for (t, p), off in first.items():
            try:
                self.consumer.seek(TopicPartition(t, p, off))
            except KafkaException as exc:  # partition revoked meanwhile: the new owner redoes it
                log.info("rewind skipped", extra={"topic": t, "partition": p, "error": str(exc)})

    def _process(self, msgs: list[Message]) -> None:
        decoded: list[tuple[Message, T]] = []
        for m in msgs:
            too_big = oversize_error(m, self.max_message_bytes)
            if too_big:
                self.dead_letter(m, "oversized", too_big)
                continue
            try:
                decoded.append((m, self.decode(m)))
            except EventError as exc:
                self.dead_letter(m, exc.reason, exc.detail)
        if decoded:
            self.handle(decoded)

    # ------------------------------------------------------------------ main

    def run(self) -> LoopStats:
        self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        if self.transactional:
            self.producer.init_transactions(30)
        backoff = self.retry_initial_s
        try:
            while not self.shutdown.requested:
                msgs = self._poll()
                self.stats.last_progress = time.monotonic()
                if not msgs:
                    if self.on_idle:
                        self.on_idle()
                    continue
                try:
                    self._run_batch(msgs)
                    backoff = self.retry_initial_s
                except (RetryLater, ServiceUnavailable, DeliveryFailed) as exc:
                    reason = type(exc).__name__
                    LOOP_ERRORS.labels(self.stage, reason).inc()
                    self.stats.retries += 1
                    log.warning(
                        "batch not processed, will retry",
                        extra={
                            "stage": self.stage,
                            "reason": reason,
                            "error": str(exc),
                            "retry_in_s": round(backoff, 2),
                        },
                    )
                    self._rewind(msgs)
                    self.shutdown.wait(backoff)
                    backoff = min(backoff * 2, self.retry_max_s)
        finally:
            self.close()
        return self.stats

    def _run_batch(self, msgs: list[Message]) -> None:
        if self.transactional:
            self.producer.begin_transaction()
            try:
                self._process(msgs)
                self.producer.send_offsets_to_transaction(
                    next_offsets(msgs), self.consumer.consumer_group_metadata(), 30
                )
                self.producer.commit_transaction(30)
            except Exception:
                try:
                    self.producer.abort_transaction(30)
                except KafkaException as abort_exc:
                    # e.g. fenced or timed out: the original error is the one to report
                    log.warning("abort_transaction failed", extra={"error": str(abort_exc)})
                raise
            self.tracker.errors.clear()
        else:
            self._process(msgs)
            self.tracker.flush(self.producer)
            offsets = next_offsets(msgs)
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                # Lost the partition in a rebalance: outputs are deterministic, the new
                # owner's redo is recognisable downstream.
                log.warning("commit failed", extra={"stage": self.stage, "error": str(exc)})
        self.stats.batches += 1
        self.stats.records += len(msgs)
        if self.after_commit:
            self.after_commit()

    def close(self) -> None:
        try:
            if not self.transactional:
                self.producer.flush(10)
        finally:
            self.consumer.close()
