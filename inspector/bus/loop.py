"""The consume → process → produce → commit loop every consumer stage runs.

Guarantees:
- bad input never stops the loop: a record the decoder rejects becomes a dead-letter
  record with its reason and original coordinates, and the batch goes on;
- no record can stop the stage: when the handler fails on a batch for any reason but a
  transient one, the batch is redone one record at a time, and a record that still
  fails after ``poison_attempts`` tries is dead-lettered (``handler_error``, or the
  error's own ``dlq_reason`` such as ``store_rejected``) with the error; so is one
  whose outputs the broker refuses for good (too large, invalid);
- offsets are committed only after everything the batch produced (outputs and
  dead letters) was acknowledged by the broker, or inside the same transaction;
- a transient failure (Redis down, broker not acknowledging) keeps the batch's
  uncommitted records in memory and retries them with capped backoff, committing
  nothing meanwhile; the assigned partitions are paused and the consumer keeps polling
  (group membership, rebalances), so nothing new is read and nothing has to be fetched
  again (no seek-based rewind);
- SIGTERM/SIGINT lets the in-flight batch finish, then flushes, commits and closes.

With ``lookahead`` (the detect worker's pipeline), the records already fetched for the
next batch are taken right after the current batch is polled, without waiting
(``consume(n, 0)``), and handed to ``lookahead`` so the stage can prepare them (read,
decode, infer) on a thread while the current batch is handled, flushed and committed.
Everything above still holds: the next batch is handled, produced and committed only
in its own turn, after the current one (in its own transaction with ``transactional``);
its records are in memory only, like a held batch, so a revoke drops those of the
partitions that went, and a stop leaves them uncommitted for the next owner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from inspector.bus.kafka import (
    PERMANENT_DELIVERY_ERRORS,
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
from inspector.telemetry.metrics import DEAD_LETTERS, LOOP_ERRORS

log = logging.getLogger(__name__)

T = TypeVar("T")


# Group errors a transactional offset commit meets when a rebalance overtook the batch:
# abortable, not fatal — the member carries on with its new assignment.
REBALANCE_ERRORS = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
    }
)


def lost_in_rebalance(exc: BaseException) -> bool:
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(err, KafkaError) and not err.fatal() and err.code() in REBALANCE_ERRORS


class RetryLater(Exception):
    """Raised by a handler when the batch cannot be processed *now* (not the input's fault)."""


class RecordFailed(Exception):
    """The handler failed on a batch for a reason that may lie in one of its records."""


def is_record_fault(exc: BaseException) -> bool:
    if isinstance(exc, DeliveryFailed):
        return exc.permanent
    return isinstance(exc, RecordFailed)


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, RecordFailed) and exc.__cause__ else exc
    return f"{type(cause).__name__}: {cause}"


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
        poison_attempts: int = 3,
        lookahead: Callable[[list[Message]], None] | None = None,
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
        self.poison_attempts = max(1, poison_attempts)
        self._pending: list[Message] = []  # the records of the batch not yet committed
        self._held: list[Message] = []  # a batch that failed transiently, retried as it is
        self.lookahead = lookahead
        self._current: list[Message] = []  # polled, about to run (lookahead only)
        self._next: list[Message] = []  # polled ahead of its turn (lookahead only)
        self._paused = False
        self._fresh_assignment = False  # librdkafka keeps a partition's pause across a rebalance
        self.tracker = DeliveryTracker()
        self.dlq = DeadLetters(producer, dlq_topic, stage, self.tracker, max_message_bytes)
        self.stats = LoopStats()
        self.assigned: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------ helpers

    def dead_letter(self, msg: Message, reason: str, detail: str) -> None:
        self.dlq.send(msg, reason, detail)
        DEAD_LETTERS.labels(self.stage, reason).inc()
        self.stats.dead_lettered += 1

    def describe(self) -> dict[str, object]:
        """Where the loop stands, for a log line or a failing test's message."""
        return {
            "stage": self.stage,
            "paused": self._paused,
            "held": len(self._held),
            "pending": len(self._pending),
            "next": len(self._next),
            "assigned": sorted(self.assigned),
            "stats": vars(self.stats),
            "since_progress_s": round(time.monotonic() - self.stats.last_progress, 2),
        }

    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        self.assigned |= {(p.topic, p.partition) for p in parts}
        self._fresh_assignment = True
        log.info("partitions assigned", extra={"stage": self.stage, "partitions": len(parts)})

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        # Batches are processed and committed synchronously inside run(), so at a
        # revoke there is nothing in flight to hand over; records polled but not yet
        # run (held, or the lookahead's current and next) are dropped.
        gone = {(p.topic, p.partition) for p in parts}
        self.assigned -= gone
        if self._held:  # the new owner redoes them from the committed offsets
            self._held = [m for m in self._held if topic_partition(m) not in gone]
        if self._current:
            self._current = [m for m in self._current if topic_partition(m) not in gone]
        if self._next:
            self._next = [m for m in self._next if topic_partition(m) not in gone]
        log.info("partitions revoked", extra={"stage": self.stage, "partitions": len(parts)})

    def _poll(self) -> list[Message]:
        # Block only for the first record; then top the batch up for at most max_wait_s,
        # so a lone frame is never held back waiting for company (batch 1 stays fast).
        first = self.consumer.poll(self.idle_poll_s)
        self._sync_pause()
        if first is None:
            return []
        msgs = [first]
        if self.max_batch > 1:
            msgs += self.consumer.consume(self.max_batch - 1, self.max_wait_s)
        return self._usable(msgs)

    def _usable(self, msgs: list[Message]) -> list[Message]:
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

    def _hold(self, msgs: list[Message]) -> None:
        """Keep ``msgs`` for the retry and stop fetching: the consumer's position is past
        them, so no seek is needed, and a long outage reads nothing new meanwhile."""
        self._held = list(msgs)
        if not self._paused:
            self.consumer.pause(self.consumer.assignment())
            self._paused = True

    def _release(self) -> None:
        self._held = []
        if self._paused:
            self._paused = False
            # resumes at the position after the last record handed out: the held batch
            self.consumer.resume(self.consumer.assignment())

    def _sync_pause(self) -> None:
        """After a rebalance, make the new assignment's pause state ours: librdkafka keeps
        a partition paused through revoke and re-assign (measured with Apache Kafka
        4.1.1), so a batch released mid-rebalance would leave its partitions paused for
        good, and a partition assigned while a batch is held would fetch."""
        if not self._fresh_assignment:
            return
        parts = self.consumer.assignment()
        if not parts:
            return
        if self._paused:
            self.consumer.pause(parts)
        else:
            self.consumer.resume(parts)
        self._fresh_assignment = False

    def _wait_polling(self, seconds: float) -> None:
        """Back off while serving the group (rebalance callbacks, max.poll.interval).
        A record delivered although its partition is paused (one newly assigned while
        held) joins the held batch, and its partition is paused too."""
        deadline = time.monotonic() + seconds
        while not self.shutdown.requested:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            m = self.consumer.poll(min(left, self.idle_poll_s))
            self._sync_pause()
            self.stats.last_progress = time.monotonic()
            if m is None:
                continue
            err = m.error()
            if err is None:
                self._held.append(m)
                self.consumer.pause([TopicPartition(*topic_partition(m))])
            elif err.fatal():
                raise KafkaException(err)

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
            except Exception as exc:  # a decoder bug must not stop the stage either
                self.dead_letter(m, "decode_error", f"{type(exc).__name__}: {exc}")
        if decoded:
            self._handle(decoded)

    def _handle(self, decoded: list[tuple[Message, T]]) -> None:
        try:
            self.handle(decoded)
        except (RetryLater, ServiceUnavailable, DeliveryFailed):
            raise
        except BufferError as exc:  # the producer queue is full: not the input's fault
            raise RetryLater(f"producer queue full: {exc}") from None
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            code = err.code() if isinstance(err, KafkaError) else None
            if code in PERMANENT_DELIVERY_ERRORS:  # produce() refused an output outright
                raise RecordFailed(str(exc)) from exc
            raise  # fenced, fatal: the supervisor restarts the stage
        except Exception as exc:
            raise RecordFailed(str(exc)) from exc

    # ------------------------------------------------------------------ main

    def run(self) -> LoopStats:
        self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        if self.transactional:
            self.producer.init_transactions(30)
        backoff = self.retry_initial_s
        try:
            while not self.shutdown.requested:
                if self._held:
                    msgs = self._held
                else:
                    if self._paused:  # the held records were all revoked meanwhile
                        self._release()
                    if self._next:
                        msgs, self._next = self._next, []
                    else:
                        msgs = self._poll()
                    self.stats.last_progress = time.monotonic()
                    if msgs and self.lookahead is not None:
                        msgs = self._look_ahead(msgs)
                if not msgs:
                    if self.on_idle:
                        self.on_idle()
                    continue
                try:
                    self._run_batch(msgs)
                    backoff = self.retry_initial_s
                    self._release()
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
                    self._hold(self._pending or msgs)
                    self._wait_polling(backoff)
                    backoff = min(backoff * 2, self.retry_max_s)
        finally:
            self.close()
        return self.stats

    def _look_ahead(self, msgs: list[Message]) -> list[Message]:
        """Take what is already fetched for the next batch (no waiting) and hand it to
        ``lookahead``; returns the current batch less what a revoke meanwhile took."""
        assert self.lookahead is not None
        self._current = msgs
        try:
            self._next = self._usable(self.consumer.consume(self.max_batch, 0))
            self._sync_pause()
        finally:
            msgs, self._current = self._current, []
        if self._next:
            try:
                self.lookahead(self._next)
            except Exception as exc:  # an optimisation only: the batch runs inline in its turn
                log.warning("lookahead failed", extra={"stage": self.stage, "error": str(exc)})
        return msgs

    def _run_batch(self, msgs: list[Message]) -> None:
        self._pending = msgs
        try:
            self._commit_unit(msgs, self._process)
        except Exception as exc:
            if not is_record_fault(exc):
                raise
            LOOP_ERRORS.labels(self.stage, "record_failed").inc()
            log.warning(
                "batch failed on a record; redoing it one record at a time",
                extra={"stage": self.stage, "records": len(msgs), "error": _describe(exc)[:300]},
            )
            self._after_failure()
            self._isolate(msgs)
        self._pending = []
        self.stats.batches += 1
        self.stats.records += len(msgs)
        if self.after_commit:
            self.after_commit()

    def _isolate(self, msgs: list[Message]) -> None:
        """Each record in its own unit of work; one that keeps failing is dead-lettered."""
        for i, m in enumerate(msgs):
            self._pending = msgs[i:]
            failure: BaseException | None = None
            for attempt in range(1, self.poison_attempts + 1):
                try:
                    self._commit_unit([m], self._process)
                    failure = None
                    break
                except Exception as exc:
                    if not is_record_fault(exc):
                        raise  # transient: run() holds the records not yet committed and retries
                    failure = exc
                    self._after_failure()
                    if attempt < self.poison_attempts:
                        self.shutdown.wait(self.retry_initial_s)
            if failure is not None:
                detail = f"{_describe(failure)} (failed {self.poison_attempts} times)"
                cause = failure.__cause__ or failure
                reason = str(getattr(cause, "dlq_reason", "handler_error"))
                self._commit_unit([m], partial(self._dead_letter_all, reason, detail))

    def _dead_letter_all(self, reason: str, detail: str, msgs: list[Message]) -> None:
        for m in msgs:
            self.dead_letter(m, reason, detail)

    def _after_failure(self) -> None:
        """Drop what a failed unit left: its transaction is aborted; outside one, its
        delivery reports are drained so they are not charged to the next unit."""
        if not self.transactional:
            self.producer.flush(30)
            self.tracker.clear()

    def _commit_unit(self, msgs: list[Message], work: Callable[[list[Message]], None]) -> None:
        """Run ``work`` on ``msgs``; commit their offsets once all it produced is durable."""
        if self.transactional:
            self.producer.begin_transaction()
            try:
                work(msgs)
                self.producer.send_offsets_to_transaction(
                    next_offsets(msgs), self.consumer.consumer_group_metadata(), 30
                )
                self.producer.commit_transaction(30)
            except Exception as exc:
                try:
                    self.producer.abort_transaction(30)
                except KafkaException as abort_exc:
                    # e.g. fenced or timed out: the original error is the one to report
                    log.warning("abort_transaction failed", extra={"error": str(abort_exc)})
                permanent, errors = self.tracker.permanent, self.tracker.errors[:5]
                self.tracker.clear()
                if permanent and isinstance(exc, KafkaException):
                    # the transaction failed because the broker refused an output for good
                    raise DeliveryFailed("; ".join(errors), permanent=True) from exc
                if lost_in_rebalance(exc):
                    # The group moved on (a member joined or left) while this batch ran:
                    # its transaction is aborted, the partitions' new owners redo it.
                    raise RetryLater(f"transaction aborted by a rebalance: {exc}") from exc
                raise
            self.tracker.clear()
        else:
            work(msgs)
            self.tracker.flush(self.producer)
            offsets = next_offsets(msgs)
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                # Lost the partition in a rebalance: outputs are deterministic, the new
                # owner's redo is recognisable downstream.
                log.warning("commit failed", extra={"stage": self.stage, "error": str(exc)})

    def close(self) -> None:
        try:
            if not self.transactional:
                self.producer.flush(10)
        finally:
            self.consumer.close()
