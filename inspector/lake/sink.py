"""The sink loop: topics → buffered rows → conditional Iceberg commits.

Exactly once into the table:
- where a partition starts is read from the table (the offsets in its newest
  snapshot's summary), never from the consumer group: on assignment the partition is
  positioned at the table's offset;
- rows are buffered per table and committed when the buffer reaches ``roll_bytes`` or
  is ``roll_s`` old; one commit holds the rows *and* the next offsets of every
  partition it covers (see ``catalog.LakeTableWriter.commit``);
- a SIGKILL before the commit loses the buffer, which the next owner re-reads from
  the table's offsets; a SIGKILL after it leaves a table that already says where to
  go on. Either way: no gap, no duplicate row.
- concurrent committers (several sinks sharing partitions, a rebalance in flight, or
  a sink wrongly started twice in two groups) are serialized by the catalog's atomic
  metadata swap plus the per-partition compare-and-set; a commit that finds a
  partition advanced by someone else drops those rows and repositions.

Records that are not valid events go to the dead-letter topic with the reason; their
offsets still count as done once the next commit lands. A catalog or warehouse that
cannot be reached pauses every partition (nothing is committed, the group membership
is kept by polling), ``/readyz`` names the reason, and the sink retries with capped
backoff and resumes by itself.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from inspector.bus.kafka import (
    DeadLetters,
    DeliveryFailed,
    DeliveryTracker,
    Shutdown,
    oversize_error,
    poll_batch,
)
from inspector.config import LakeSettings
from inspector.events import EventError, decode, decode_evolving
from inspector.lake import evolve
from inspector.lake.catalog import CatalogUnavailable, LakeTableWriter
from inspector.telemetry import tracing
from inspector.telemetry.metrics import DEAD_LETTERS, LAKE_COMMITS, LAKE_PARTITIONS, LAKE_ROWS

log = logging.getLogger(__name__)

TP = tuple[str, int]
ROW_OVERHEAD = 256  # bytes a row costs beside its raw JSON, for the roll size


@dataclass
class Pending:
    """What one table has buffered since its last commit."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    nbytes: int = 0
    since: float | None = None
    ends: dict[int, int] = field(default_factory=dict)  # partition -> next offset covered
    # (partition, offset) -> (the record's traceparent, when it was buffered, ns); only
    # while spans are recorded
    traces: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)
    # columns buffered rows asked for that the table does not have yet (added at the
    # commit), and the records behind those rows, to dead-letter one that a concurrent
    # sink's evolution made a misfit
    planned: dict[str, Any] = field(default_factory=dict)
    evolving: dict[tuple[int, int], tuple[KafkaMessage, dict[str, Any]]] = field(
        default_factory=dict
    )

    def clear(self) -> None:
        self.rows, self.nbytes, self.since, self.ends = [], 0, None, {}
        self.traces, self.planned, self.evolving = {}, {}, {}


@dataclass
class SinkStats:
    records: int = 0
    rows: int = 0
    dead_lettered: int = 0
    commits: int = 0
    conflicts: int = 0
    lost_rows: int = 0
    outages: int = 0
    expired_snapshots: int = 0
    compactions: int = 0
    compacted_files: int = 0


class Sink:
    def __init__(
        self,
        settings: LakeSettings,
        *,
        consumer: Consumer,
        dead_letters: DeadLetters,
        tracker: DeliveryTracker,
        writers: dict[str, LakeTableWriter],
        shutdown: Shutdown,
        max_message_bytes: int,
        on_beat: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.dlq = dead_letters
        self.tracker = tracker
        self.writers = writers  # topic -> writer
        self.shutdown = shutdown
        self.max_message_bytes = max_message_bytes
        self.on_beat = on_beat
        self.clock = clock
        self.pending: dict[str, Pending] = {t: Pending() for t in writers}
        self.base: dict[TP, int | None] = {}  # the table's offset our pending rows start at
        self.pos: dict[TP, int] = {}  # next offset expected from the consumer
        self.unsynced: set[TP] = set()  # assigned, paused, not yet positioned from the table
        self.down: str | None = None  # why the catalog is considered unreachable
        self._retry_at = 0.0
        self._backoff = 0.5
        self.stats = SinkStats()
        self._expired_at = clock()
        self._compacted_at = clock()
        self.traced = False  # spans recorded (an SDK is set up): asked once per step

    # ------------------------------------------------------------------ rebalance

    def on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        by_topic: dict[str, list[TopicPartition]] = {}
        for tp in parts:
            by_topic.setdefault(tp.topic, []).append(tp)
        assign: list[TopicPartition] = []
        unsynced: list[TopicPartition] = []
        for topic, tps in by_topic.items():
            offsets: dict[int, int] | None = None
            if self.down is None:
                try:
                    offsets = self.writers[topic].offsets()
                except CatalogUnavailable as exc:
                    self._go_down(str(exc))
            for tp in tps:
                key = (topic, tp.partition)
                if offsets is None:
                    self.unsynced.add(key)
                    unsynced.append(TopicPartition(topic, tp.partition))
                    assign.append(TopicPartition(topic, tp.partition))
                    continue
                self._position(key, offsets.get(tp.partition))
                start = offsets.get(tp.partition, OFFSET_BEGINNING)
                assign.append(TopicPartition(topic, tp.partition, start))
        consumer.incremental_assign(assign)
        if unsynced:
            consumer.pause(unsynced)
        self._count_partitions()
        log.info(
            "partitions assigned",
            extra={"partitions": len(parts), "positioned_from_table": len(parts) - len(unsynced)},
        )

    def on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        # Buffered rows of a revoked partition are dropped: the next owner reads them
        # again from the table's offsets.
        for tp in parts:
            self._forget((tp.topic, tp.partition))
        self._count_partitions()
        log.info("partitions revoked", extra={"partitions": len(parts)})

    def _count_partitions(self) -> None:
        for topic, w in self.writers.items():
            n = sum(1 for t, _ in self.pos if t == topic) + sum(
                1 for t, _ in self.unsynced if t == topic
            )
            LAKE_PARTITIONS.labels(w.spec.name).set(n)

    def _position(self, key: TP, table_offset: int | None) -> None:
        self.base[key] = table_offset
        self.pos[key] = table_offset if table_offset is not None else 0
        self.unsynced.discard(key)

    def _forget(self, key: TP) -> None:
        topic, p = key
        pend = self.pending.get(topic)
        if pend is not None:
            self._drop_rows(pend, p, None)
            pend.ends.pop(p, None)
        self.base.pop(key, None)
        self.pos.pop(key, None)
        self.unsynced.discard(key)

    def _drop_rows(self, pend: Pending, partition: int, below: int | None) -> None:
        """Drop ``partition``'s rows (all, or those below offset ``below``)."""
        keep = []
        for r in pend.rows:
            if r["kafka_partition"] == partition and (below is None or r["kafka_offset"] < below):
                self.stats.lost_rows += 1
                continue
            keep.append(r)
        pend.rows = keep
        pend.nbytes = sum(len(r["raw"]) + ROW_OVERHEAD for r in keep)

    def _seek(self, key: TP, offset: int) -> None:
        try:
            self.consumer.seek(TopicPartition(key[0], key[1], offset))
        except KafkaException as exc:  # revoked meanwhile: the new owner positions it
            log.info("seek skipped", extra={"partition": key, "error": str(exc)})

    # ------------------------------------------------------------------ records

    def _add(self, msg: KafkaMessage) -> None:
        topic = msg.topic() or ""
        p = msg.partition() or 0
        off = msg.offset() or 0
        key = (topic, p)
        if key not in self.pos or key in self.unsynced or off < self.pos[key]:
            return  # not ours (any more), or fetched before a reposition
        self.pos[key] = off + 1
        self.stats.records += 1
        pend = self.pending[topic]
        if pend.since is None:
            pend.since = self.clock()
        pend.ends[p] = off + 1
        too_big = oversize_error(msg, self.max_message_bytes)
        if too_big:
            self._dead_letter(msg, "oversized", too_big)
            return
        try:
            row = self._row(msg, pend)
        except EventError as exc:
            self._dead_letter(msg, exc.reason, exc.detail)
            return
        except evolve.Misfit as exc:
            self._dead_letter(msg, evolve.REASON, str(exc))
            return
        except Exception as exc:  # a row builder bug must not stop the sink either
            self._dead_letter(msg, "lake_row", f"{type(exc).__name__}: {exc}")
            return
        raw = row["raw"]
        row.update(kafka_partition=p, kafka_offset=off)
        pend.rows.append(row)
        if self.traced:
            tp = tracing.traceparent_from_headers(msg.headers())
            if tp is not None:
                pend.traces[(p, off)] = (tp, time.time_ns())
        pend.nbytes += len(raw) + ROW_OVERHEAD

    def _row(self, msg: KafkaMessage, pend: Pending) -> dict[str, Any]:
        """The record's row; an unknown top-level field fills (or plans) a column."""
        writer = self.writers[msg.topic() or ""]
        spec = writer.spec
        if not self.settings.evolve_schema:
            row = spec.row(decode(msg.value(), msg.headers(), spec.payload))
        else:
            event, extras = decode_evolving(msg.value(), msg.headers(), spec.payload)
            row = spec.row(event)
            if extras:
                cells, new = evolve.fit(
                    extras,
                    columns=writer.columns(),
                    planned=pend.planned,
                    own=writer.own_columns,
                    max_added=self.settings.max_added_columns,
                )
                row.update(cells)
                if new or any(n in pend.planned for n in cells):
                    pend.planned.update(new)
                    key = (msg.partition() or 0, msg.offset() or 0)
                    pend.evolving[key] = (msg, extras)
        row["raw"] = (msg.value() or b"").decode()
        return row

    def _evolve(self, topic: str, pend: Pending) -> None:
        """Add the columns the buffered rows asked for; a row whose value no longer
        fits (a concurrent sink added the same column with another type) is
        dead-lettered and leaves the batch. Raises CatalogUnavailable."""
        if not pend.planned:
            return
        columns = self.writers[topic].evolve(pend.planned)
        keep = []
        for row in pend.rows:
            entry = pend.evolving.get((row["kafka_partition"], row["kafka_offset"]))
            if entry is not None:
                msg, extras = entry
                try:
                    row.update(
                        {
                            n: evolve.cell(n, v, columns[n])
                            for n, v in extras.items()
                            if n in columns
                        }
                    )
                except evolve.Misfit as exc:
                    self._dead_letter(msg, evolve.REASON, str(exc))
                    continue
            keep.append(row)
        pend.rows = keep
        pend.planned, pend.evolving = {}, {}

    def _dead_letter(self, msg: KafkaMessage, reason: str, detail: str) -> None:
        self.dlq.send(msg, reason, detail)
        DEAD_LETTERS.labels("lake", reason).inc()
        self.stats.dead_lettered += 1

    # ------------------------------------------------------------------ commits

    def _due(self, pend: Pending, now: float) -> bool:
        if pend.since is None:
            return False
        return pend.nbytes >= self.settings.roll_bytes or now - pend.since >= self.settings.roll_s

    def flush(self, topic: str) -> None:
        """Commit the table's pending rows (and offsets); raises CatalogUnavailable."""
        pend = self.pending[topic]
        if not pend.ends:
            pend.clear()
            return
        try:
            self.tracker.flush(self.dlq.producer, 30)  # dead letters acknowledged first
        except DeliveryFailed as exc:
            raise CatalogUnavailable(f"dead-letter topic not acknowledging: {exc}") from exc
        writer = self.writers[topic]
        self._evolve(topic, pend)
        for attempt in range(self.settings.commit_attempts):
            base = {p: self.base.get((topic, p)) for p in pend.ends}
            res = writer.commit(pend.rows, base, dict(pend.ends))
            if res.committed:
                if pend.traces:
                    self._spans(topic, pend, res.rows)
                for p, end in pend.ends.items():
                    self.base[(topic, p)] = end
                self._commit_group(topic, pend.ends)
                LAKE_ROWS.labels(writer.spec.name).inc(res.rows)
                LAKE_COMMITS.labels(writer.spec.name, "committed").inc()
                self.stats.rows += res.rows
                self.stats.commits += 1
                pend.clear()
                return
            if res.lost:
                LAKE_COMMITS.labels(writer.spec.name, "partition_taken").inc()
                self._rebase(topic, res.lost)
                if not pend.ends:
                    pend.clear()
                    return
            else:
                LAKE_COMMITS.labels(writer.spec.name, "conflict").inc()
                self.stats.conflicts += 1
                # another committer won the metadata swap: re-read and retry, jittered
                self.shutdown.wait(random.uniform(0, 0.02 * (attempt + 1)))
        raise CatalogUnavailable(
            f"{writer.ident}: {self.settings.commit_attempts} commits in a row lost to "
            "concurrent committers"
        )

    def _spans(self, topic: str, pend: Pending, committed: int) -> None:
        """One ``lake.commit`` span per committed record, continuing the record's trace:
        from the moment the sink buffered it to the Iceberg commit that made it durable.
        Rows dropped to another committer are not in ``pend.rows`` and get none."""
        table = self.writers[topic].spec.name
        for row in pend.rows:
            p, off = row["kafka_partition"], row["kafka_offset"]
            entry = pend.traces.get((p, off))
            if entry is None:
                continue
            tp, buffered = entry
            span = tracing.start(
                "lake.commit",
                tp,
                {
                    "inspector.table": table,
                    "inspector.commit_rows": committed,
                    "messaging.destination.name": topic,
                    "messaging.destination.partition.id": str(p),
                    "messaging.kafka.offset": off,
                },
                start_time=buffered,
            )
            span.end()

    def _rebase(self, topic: str, lost: dict[int, int]) -> None:
        """Another committer advanced these partitions: keep only what lies beyond."""
        pend = self.pending[topic]
        for p, table_off in lost.items():
            key = (topic, p)
            log.info(
                "partition advanced by another committer",
                extra={"topic": topic, "partition": p, "table_offset": table_off},
            )
            if table_off < 0:  # the table holds nothing for it: start over
                self._drop_rows(pend, p, None)
                pend.ends.pop(p, None)
                self.base[key] = None
                self.pos[key] = 0
                self._seek(key, OFFSET_BEGINNING)
                continue
            self._drop_rows(pend, p, table_off)
            self.base[key] = table_off
            if pend.ends.get(p, 0) <= table_off:
                pend.ends.pop(p, None)
            if self.pos.get(key, 0) < table_off:
                self.pos[key] = table_off
                self._seek(key, table_off)

    def expire(self) -> None:
        """Expire old snapshots of every table (raises CatalogUnavailable)."""
        for w in self.writers.values():
            n = w.expire(self.settings.snapshot_max_age_s)
            if n:
                self.stats.expired_snapshots += n
                log.info("snapshots expired", extra={"table": w.ident, "snapshots": n})

    def compact(self) -> None:
        """Compact small files of every table (raises CatalogUnavailable)."""
        s = self.settings
        for w in self.writers.values():
            for files in w.compact(
                min_files=s.compact_min_files,
                small_bytes=s.compact_small_bytes,
                max_partitions=s.compact_max_partitions,
            ):
                self.stats.compactions += 1
                self.stats.compacted_files += files
                LAKE_COMMITS.labels(w.spec.name, "compacted").inc()

    def _commit_group(self, topic: str, ends: dict[int, int]) -> None:
        """The group's offsets follow the table's, for lag tools only; never read back."""
        with contextlib.suppress(KafkaException):
            self.consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in ends.items()],
                asynchronous=True,
            )

    # ------------------------------------------------------------------ outage

    def _go_down(self, reason: str) -> None:
        reason = (reason.splitlines() or [""])[0][:500]  # one line for /readyz and the log
        if self.down is None:
            self.stats.outages += 1
            log.warning("lake unavailable; pausing consumption", extra={"error": reason})
            with contextlib.suppress(KafkaException):
                self.consumer.pause(self.consumer.assignment())
        self.down = reason
        self._retry_at = self.clock() + self._backoff
        self._backoff = min(self._backoff * 2, self.settings.retry_max_s)

    def _sync(self, *, resume: bool) -> None:
        """Position the partitions assigned while the catalog was away, from the table."""
        for key in sorted(self.unsynced):
            topic, p = key
            off = self.writers[topic].offsets().get(p)
            self._position(key, off)
            self._seek(key, off if off is not None else OFFSET_BEGINNING)
            if resume:
                self.consumer.resume([TopicPartition(topic, p)])

    def _try_recover(self) -> None:
        try:
            for w in self.writers.values():
                w.table()
            for topic in self.pending:
                self.flush(topic)
            self._sync(resume=False)
        except CatalogUnavailable as exc:
            self._go_down(str(exc))
            return
        self.down = None
        self._backoff = 0.5
        with contextlib.suppress(KafkaException):
            self.consumer.resume(self.consumer.assignment())
        log.info("lake reachable again; consuming")

    # ------------------------------------------------------------------ main

    def step(self) -> None:
        """One turn of the loop: poll, buffer, commit what is due."""
        if self.on_beat:
            self.on_beat()
        now = self.clock()
        if self.down is not None:
            poll_batch(self.consumer, 1, 0.1)  # serves rebalances, keeps the membership
            if now >= self._retry_at:
                self._try_recover()
            return
        self.traced = tracing.enabled()
        try:
            if self.unsynced:
                self._sync(resume=True)
            for m in poll_batch(self.consumer, self.settings.max_poll_records, 0.2):
                err = m.error()
                if err is None:
                    self._add(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    continue
                elif err.fatal():
                    raise KafkaException(err)
                else:
                    log.warning("consumer error", extra={"error": err.str()})
            now = self.clock()
            for topic, pend in self.pending.items():
                if self._due(pend, now):
                    self.flush(topic)
            if now - self._expired_at >= self.settings.expire_every_s:
                self._expired_at = now
                self.expire()
            if now - self._compacted_at >= self.settings.compact_every_s:
                self._compacted_at = now
                self.compact()
        except CatalogUnavailable as exc:
            self._go_down(str(exc))

    def run(self) -> SinkStats:
        self.consumer.subscribe(
            list(self.writers),
            on_assign=self.on_assign,
            on_revoke=self.on_revoke,
            on_lost=self.on_revoke,
        )
        try:
            while not self.shutdown.requested:
                self.step()
            if self.down is None:
                for topic in self.pending:
                    try:
                        self.flush(topic)
                    except CatalogUnavailable as exc:
                        log.warning("final commit failed", extra={"error": str(exc)})
                        break
        finally:
            self.consumer.close()
        return self.stats
