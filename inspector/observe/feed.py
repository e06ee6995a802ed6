"""Reading the pipeline's topics for humans: from a point in time, without a consumer group.

Every observer (``tail``, ``status``, ``evidence``, the dashboard) reads with
``assign()`` and never commits, so watching the plant never moves anyone's offsets
and never joins a group.

Start positions: "from now" is the end of each partition (what
``auto.offset.reset=latest`` means, resolved by a ListOffsets request at assignment);
"since T" comes from the broker's time index (``offsets_for_times``); "everything" is
the beginning. Readers use ``read_committed``, so records of an aborted transaction
(a fenced or crashed exactly-once worker) are never shown. Lag is the distance from
the group's committed offset to the last stable offset, both asked of the broker.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from inspector.bus.kafka import make_consumer, poll_batch
from inspector.config import PlantConfig, TopicSettings
from inspector.events import (
    ActionEvent,
    CameraStatusEvent,
    DefectEvent,
    DriftEvent,
    EventError,
    LineCommand,
    Payload,
    VerdictEvent,
    decode,
)

log = logging.getLogger(__name__)

# kind (as typed on the command line) → (topic of the plant, payload type)
KINDS: dict[str, tuple[Callable[[TopicSettings], str], type[Payload]]] = {
    "verdicts": (lambda t: t.verdicts, VerdictEvent),
    "defects": (lambda t: t.defects, DefectEvent),
    "actions": (lambda t: t.actions, ActionEvent),
    "camera-status": (lambda t: t.camera_status, CameraStatusEvent),
    "line-commands": (lambda t: t.line_commands, LineCommand),
    "shadow-verdicts": (lambda t: t.shadow_verdicts, VerdictEvent),
    "drift": (lambda t: t.drift, DriftEvent),
}


class FeedError(Exception):
    """A request the feed cannot serve (unknown filter, missing topic); one readable line."""


def topic_for(cfg: PlantConfig, kind: str) -> str:
    return KINDS[kind][0](cfg.topics)


def kind_of_topic(cfg: PlantConfig) -> dict[str, str]:
    return {topic_for(cfg, k): k for k in KINDS}


def decode_record(kind: str, msg: Message) -> Payload:
    """Raises EventError for a record that is not a valid event of this kind."""
    return decode(msg.value(), msg.headers(), KINDS[kind][1])


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$")
_UNIT_S = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``30s``, ``10m``, ``2h``, ``1d`` → seconds."""
    m = _DURATION.match(text)
    if not m:
        raise FeedError(f"cannot read duration {text!r}; use e.g. 30s, 10m, 2h, 1d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def start_of_today(now: float | None = None) -> float:
    """Local midnight: what "today's counts" on a shop floor means."""
    t = time.localtime(now if now is not None else time.time())
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filters:
    line: str | None = None
    camera: str | None = None
    cls: str | None = None
    verdict: str | None = None

    def validate(self, cfg: PlantConfig, kind: str) -> None:
        """Raise FeedError naming the valid choices for anything that can never match."""
        lines = [ln.id for ln in cfg.lines]
        if self.line is not None and self.line not in lines:
            raise FeedError(f"unknown line {self.line!r}; valid lines: {', '.join(lines)}")
        if self.camera is not None:
            cams = [c.id for ln in cfg.lines if self.line in (None, ln.id) for c in ln.cameras]
            if self.camera not in cams:
                where = f" on line {self.line}" if self.line else ""
                raise FeedError(
                    f"unknown camera {self.camera!r}{where}; valid cameras: {', '.join(cams)}"
                )
        if self.verdict is not None and kind != "verdicts":
            raise FeedError("--verdict applies to verdicts only")
        if self.cls is not None and kind not in ("verdicts", "defects"):
            raise FeedError("--class applies to verdicts and defects only")

    def matches(self, event: Payload) -> bool:
        if self.line is not None and getattr(event, "line_id", None) != self.line:
            return False
        if self.camera is not None and getattr(event, "camera_id", None) != self.camera:
            return False
        if self.verdict is not None and getattr(event, "verdict", None) != self.verdict:
            return False
        if self.cls is not None:
            findings = getattr(event, "findings", [])
            detections = getattr(event, "detections", [])
            if not any(f.cls == self.cls for f in [*findings, *detections]):
                return False
        return True


# --------------------------------------------------------------------------- reader

# partition EOF marks "caught up"; short fetch waits keep a live view responsive
_READER_CONF: dict[str, Any] = {"enable.partition.eof": True, "fetch.wait.max.ms": 200}


@dataclass
class Record:
    kind: str
    msg: Message
    event: Payload

    @property
    def timestamp_s(self) -> float:
        return self.msg.timestamp()[1] / 1000.0


@dataclass
class TopicReader:
    """Reads topics from ``start_s`` (epoch seconds; None = the beginning) via assign().

    ``poll()`` returns decoded records; records that do not decode are counted in
    ``skipped`` (by reason) and logged — an observer is not the owner of a stream and
    does not dead-letter.
    """

    cfg: PlantConfig
    kinds: list[str]
    start_s: float | None = None
    client_suffix: str = "observe"
    # start at the end of every partition ("from now"), overriding start_s
    from_now: bool = False
    # per-kind start overriding start_s (e.g. camera-status from the beginning)
    kind_start: dict[str, float | None] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    consumer: Consumer | None = None
    partitions: list[tuple[str, int]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    _eof: set[tuple[str, int]] = field(default_factory=set)
    _by_topic: dict[str, str] = field(default_factory=dict)

    def open(self, timeout_s: float = 10.0, *, require_topics: bool = True) -> TopicReader:
        self.consumer = make_consumer(
            self.cfg.kafka,
            # assign() + no commits: the group id is never registered with the broker
            f"inspector-observe-{uuid.uuid4().hex[:12]}",
            client_suffix=self.client_suffix,
            **_READER_CONF,
        )
        self._by_topic = {topic_for(self.cfg, k): k for k in self.kinds}
        try:
            md = self.consumer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            self.close()
            raise FeedError(
                f"Kafka broker at {self.cfg.kafka.bootstrap_servers} did not answer: {exc.args[0]}"
            ) from None
        missing = [t for t in self._by_topic if t not in md.topics or md.topics[t].error]
        self.missing = missing
        if missing and require_topics:
            self.close()
            raise FeedError(
                f"topic {', '.join(missing)} does not exist yet "
                "(create it with `inspector topics create`, or start the pipeline)"
            )
        tps: list[TopicPartition] = []
        for t in self._by_topic:
            if t in missing:
                continue
            for p in sorted(md.topics[t].partitions):
                tps.append(TopicPartition(t, p))
        self.partitions = [(tp.topic, tp.partition) for tp in tps]
        self.consumer.assign(self._start_offsets(tps, timeout_s))
        return self

    def _start_of(self, topic: str) -> float | None:
        kind = self._by_topic[topic]
        return self.kind_start.get(kind, self.start_s)

    def _from_now(self, topic: str) -> bool:
        return self.from_now and self._by_topic[topic] not in self.kind_start

    def _start_offsets(self, tps: list[TopicPartition], timeout_s: float) -> list[TopicPartition]:
        assert self.consumer is not None
        out = [
            TopicPartition(tp.topic, tp.partition, OFFSET_END)
            for tp in tps
            if self._from_now(tp.topic)
        ]
        tps = [tp for tp in tps if not self._from_now(tp.topic)]
        timed = [tp for tp in tps if self._start_of(tp.topic) is not None]
        out += [
            TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING)
            for tp in tps
            if self._start_of(tp.topic) is None
        ]
        if timed:
            out += self._offsets_at_times(timed, timeout_s)
        return out

    def _offsets_at_times(
        self, tps: list[TopicPartition], timeout_s: float
    ) -> list[TopicPartition]:
        assert self.consumer is not None
        query = [
            TopicPartition(tp.topic, tp.partition, int((self._start_of(tp.topic) or 0) * 1000))
            for tp in tps
        ]
        try:
            found = self.consumer.offsets_for_times(query, timeout=timeout_s)
        except KafkaException as exc:
            log.warning(
                "offsets_for_times failed; reading from the beginning", extra={"error": str(exc)}
            )
            return [TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in tps]
        out = []
        for tp in found:
            # -1: no record at or after the time → start at the end of the partition
            off = tp.offset if tp.offset >= 0 else OFFSET_END
            out.append(TopicPartition(tp.topic, tp.partition, off))
        return out

    def poll(self, timeout_s: float = 0.2, max_records: int = 500) -> list[Record]:
        assert self.consumer is not None
        out: list[Record] = []
        for msg in poll_batch(self.consumer, max_records, timeout_s):
            key = (msg.topic() or "", msg.partition() or 0)
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._eof.add(key)
                elif err.fatal():
                    raise KafkaException(err)
                else:
                    log.warning("consumer error", extra={"error": err.str()})
                continue
            self._eof.discard(key)
            kind = self._by_topic[key[0]]
            try:
                out.append(Record(kind, msg, decode_record(kind, msg)))
            except EventError as exc:
                self.skipped[exc.reason] = self.skipped.get(exc.reason, 0) + 1
                log.warning(
                    "skipped a record that is not a valid event",
                    extra={
                        "topic": key[0],
                        "partition": key[1],
                        "offset": msg.offset(),
                        "reason": exc.reason,
                        "detail": exc.detail[:200],
                    },
                )
        return out

    @property
    def at_end(self) -> bool:
        """Every assigned partition has reported end-of-partition since its last record."""
        return set(self.partitions) <= self._eof

    def read_to_end(self, timeout_s: float = 30.0) -> Iterable[Record]:
        """Everything from the start position up to the end as of now."""
        deadline = time.monotonic() + timeout_s
        while not self.at_end:
            if time.monotonic() > deadline:
                raise FeedError(f"could not read to the end of the topics within {timeout_s:.0f}s")
            yield from self.poll(0.2)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- lag


def group_lag(
    cfg: PlantConfig, group_id: str, topic: str, timeout_s: float = 10.0
) -> dict[int, int | None]:
    """partition → messages the group is behind (None: the broker did not answer).

    The group's committed offsets (OffsetFetch) against each partition's end offset
    (ListOffsets, as a ``read_committed`` reader sees it). A group that never committed
    counts from the start of the partition. Nothing is consumed and nothing committed.
    """
    consumer = make_consumer(cfg.kafka, group_id, client_suffix="observe-lag")
    try:
        md = consumer.list_topics(topic, timeout=timeout_s)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None:
            raise FeedError(f"topic {topic} does not exist yet")
        parts = sorted(meta.partitions)
        committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout_s)
        start = {tp.partition: tp.offset for tp in committed}
        lag: dict[int, int | None] = {}
        for p in parts:
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=timeout_s, cached=False
                )
            except KafkaException:
                lag[p] = None
                continue
            lag[p] = max(0, high - (start[p] if start[p] >= 0 else low))
        return lag
    finally:
        consumer.close()
