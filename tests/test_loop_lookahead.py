"""StreamLoop's lookahead (the detect worker's pipeline) on fakes: pure loop logic.

The next batch is handed to ``lookahead`` before the current one is handled, taken
without waiting, handled and committed only in its own turn after the current one; a
revoke during the look-ahead drops the polled records of the partitions that went.
The real worker over a real broker is covered by tests/detect (pipeline on by default).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import TopicPartition

from inspector.bus.loop import StreamLoop


class Msg:
    def __init__(self, partition: int, offset: int) -> None:
        self.p, self.o = partition, offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def value(self) -> bytes:
        return b"x"

    def __repr__(self) -> str:
        return f"{self.p}:{self.o}"


class Consumer:
    """Hands out scripted records; ``on_consume`` runs inside a non-blocking consume."""

    def __init__(self, records: list[Msg], log: list[Any]) -> None:
        self.records, self.log = records, log
        self.on_revoke: Callable[[Any, list[TopicPartition]], None] | None = None
        self.on_consume: Callable[[Consumer], None] | None = None

    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any) -> None:
        self.on_revoke = on_revoke
        on_assign(self, [TopicPartition("in", 0), TopicPartition("in", 1)])

    def poll(self, timeout: float) -> Msg | None:
        return self.records.pop(0) if self.records else None

    def consume(self, n: int, timeout: float) -> list[Msg]:
        if timeout == 0:
            self.log.append("lookahead-poll")
            if self.on_consume is not None:
                hook, self.on_consume = self.on_consume, None
                hook(self)
        out, self.records = self.records[:n], self.records[n:]
        return out

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.log.append(("commit", sorted((o.partition, o.offset) for o in offsets)))

    def assignment(self) -> list[TopicPartition]:
        return []

    def close(self) -> None:
        pass


class Producer:
    def flush(self, timeout: float = 0) -> int:
        return 0


def make_loop(records: list[Msg], max_batch: int) -> tuple[StreamLoop[int], Consumer, list[Any]]:
    log: list[Any] = []
    consumer = Consumer(records, log)
    loop: StreamLoop[int] = StreamLoop(
        consumer=consumer,  # type: ignore[arg-type]
        producer=Producer(),  # type: ignore[arg-type]
        topics=["in"],
        dlq_topic="dlq",
        stage="test",
        decode=lambda m: int(m.offset() or 0),  # fakes always have an offset
        handle=lambda batch: None,
        max_batch=max_batch,
        max_wait_s=0.001,
        idle_poll_s=0.01,
        lookahead=lambda msgs: log.append(("lookahead", [repr(m) for m in msgs])),
    )

    def handle(batch: list[Any]) -> None:
        log.append(("handle", [repr(m) for m, _ in batch]))
        if not consumer.records and not loop._next:
            loop.shutdown.request()

    loop.handle = handle
    return loop, consumer, log


def test_the_next_batch_is_looked_ahead_then_handled_and_committed_in_its_turn() -> None:
    loop, _, log = make_loop([Msg(0, i) for i in range(7)], max_batch=3)
    loop.run()
    assert log == [
        "lookahead-poll",
        ("lookahead", ["0:3", "0:4", "0:5"]),
        ("handle", ["0:0", "0:1", "0:2"]),
        ("commit", [(0, 3)]),
        "lookahead-poll",
        ("lookahead", ["0:6"]),
        ("handle", ["0:3", "0:4", "0:5"]),
        ("commit", [(0, 6)]),
        "lookahead-poll",
        ("handle", ["0:6"]),
        ("commit", [(0, 7)]),
    ]


def test_a_revoke_during_the_lookahead_drops_the_polled_records_of_that_partition() -> None:
    records = [Msg(0, 0), Msg(1, 0), Msg(0, 1), Msg(1, 1), Msg(0, 2), Msg(1, 2)]
    loop, consumer, log = make_loop(records, max_batch=2)

    def revoke_partition_1(c: Consumer) -> None:
        assert c.on_revoke is not None
        c.on_revoke(c, [TopicPartition("in", 1)])
        c.records = [m for m in c.records if m.partition() != 1]  # the new owner has them

    consumer.on_consume = revoke_partition_1
    loop.run()
    handled = [x for x in log if isinstance(x, tuple) and x[0] in ("handle", "commit")]
    # partition 1's record of the batch in hand was dropped before it ran, uncommitted
    assert handled == [
        ("handle", ["0:0"]),
        ("commit", [(0, 1)]),
        ("handle", ["0:1", "0:2"]),
        ("commit", [(0, 3)]),
    ]
