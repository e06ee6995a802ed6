"""What only a real Apache Kafka broker can show: transactions hidden from read_committed
readers, CreatePartitions under running consumers, the broker's own size limit."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import cast

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from inspector.bus.kafka import make_consumer, make_producer
from inspector.bus.store import connect, line_counters
from inspector.config import PlantConfig
from inspector.events import LineCommand, VerdictEvent, encode
from inspector.observe.feed import TopicReader
from tests.act.support import Collector, RunningAct, verdict
from tests.act.test_act import act_config
from tests.helpers import partition_offset

pytestmark = pytest.mark.integration

MakeConfig = Callable[..., PlantConfig]


def _produce_in_transaction(cfg: PlantConfig, verdicts: list[VerdictEvent], commit: bool) -> None:
    """Write verdicts the way an exactly-once worker does: inside one transaction."""
    p = make_producer(cfg.kafka, transactional_id=f"test-txn-{uuid.uuid4().hex[:8]}")
    p.init_transactions(30)
    p.begin_transaction()
    for v in verdicts:
        value, headers = encode(v, source="inspector/test", time=v.timings.emitted_at)
        p.produce(cfg.topics.verdicts, value=value, key=v.line_id.encode(), headers=headers)
    assert p.flush(15) == 0  # the records are in the log, inside an open transaction
    if commit:
        p.commit_transaction(30)
    else:
        p.abort_transaction(30)


def _count_uncommitted(cfg: PlantConfig, want: int) -> int:
    """How many verdict records are physically in the log (read_uncommitted)."""
    c = make_consumer(
        cfg.kafka, f"probe-{uuid.uuid4().hex[:8]}", isolation_level="read_uncommitted"
    )
    c.assign(
        [
            TopicPartition(cfg.topics.verdicts, p, OFFSET_BEGINNING)
            for p in range(cfg.topics.partitions)
        ]
    )
    seen = 0
    try:
        for _ in range(200):
            seen += sum(1 for m in c.consume(100, 0.1) if m.error() is None)
            if seen >= want:
                break
    finally:
        c.close()
    return seen


def committed_offset(cfg: PlantConfig, partition: int) -> int:
    c = make_consumer(cfg.kafka, cfg.act.group_id, client_suffix="probe")
    try:
        [tp] = c.committed([TopicPartition(cfg.topics.verdicts, partition)], 10)
        return int(tp.offset)
    finally:
        c.close()


def test_aborted_transaction_verdicts_are_never_seen_by_act_or_observers(
    make_config: MakeConfig,
) -> None:
    cfg = act_config(make_config, {"kind": "divert", "name": "reject-gate", "debounce_s": 0})
    aborted = [verdict(i, "FAIL", cls="dent", part=f"a{i}") for i in range(1, 4)]
    committed = [verdict(i, "FAIL", cls="dent", part=f"c{i}") for i in range(10, 12)]
    _produce_in_transaction(cfg, aborted, commit=False)
    _produce_in_transaction(cfg, committed, commit=True)
    # The aborted records are in the log: a read_uncommitted reader would act on them.
    assert _count_uncommitted(cfg, 5) == 5

    # Observers (tail, status, the dashboard, evidence lookups) read committed only.
    with TopicReader(cfg, ["verdicts"], client_suffix="test").open() as reader:
        records = list(reader.read_to_end(30))
    # the reader reads the verdicts topic only: each event is a VerdictEvent
    assert sorted(cast(VerdictEvent, r.event).verdict_id for r in records) == sorted(
        v.verdict_id for v in committed
    )
    last = {partition_offset(r.msg) for r in records}
    ends = {p: o + 1 for p, o in sorted(last)}  # where act has read everything

    # act diverts the committed FAILs and nothing of the aborted transaction.
    col = Collector(cfg, [cfg.topics.line_commands])
    try:
        with RunningAct(cfg):
            col.wait(lambda: len(col.messages[cfg.topics.line_commands]) >= 2, 30, "two diverts")

            # act has committed past the last committed record (and so past the
            # aborted ones before it)
            def caught_up() -> bool:
                return all(committed_offset(cfg, p) >= end for p, end in ends.items())

            col.wait(caught_up, 30, "act to commit past the last verdict")
        col.drain()
        diverted: list[str] = []
        for c in col.payloads(cfg.topics.line_commands, LineCommand):
            assert c.verdict_id is not None  # a divert names the verdict it acts on
            diverted.append(c.verdict_id)
        assert sorted(diverted) == sorted(v.verdict_id for v in committed)
        counters = line_counters(connect(cfg.redis), cfg.redis.key_prefix, "line-1")
        assert (counters.passed, counters.failed) == (0, 2)
    finally:
        col.close()
