"""The sink's spans: one ``lake.commit`` per committed record, in the record's trace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inspector.bus.kafka import make_producer
from inspector.events import encode
from inspector.telemetry import tracing
from tests.helpers import wait_for
from tests.lake.support import MakeConfig, RunningSink, lake_config, rows, stream, table_offsets

pytestmark = [pytest.mark.integration]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    tracing.configure(provider)
    try:
        yield exp
    finally:
        tracing.configure(None)
        provider.shutdown()


def test_each_committed_verdict_continues_its_trace(
    make_config: MakeConfig, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    cfg = lake_config(make_config, tmp_path)
    verdicts = stream(40)
    parents = {v.verdict_id: tracing.new_traceparent() for v in verdicts}
    producer = make_producer(cfg.kafka, client_suffix="test-verdicts")
    for i, v in enumerate(verdicts):
        value, headers = encode(v, source="inspector/test", time=v.timings.emitted_at)
        if i % 10 != 9:  # every tenth carries no traceparent: it gets no span
            headers = tracing.with_traceparent(headers, parents[v.verdict_id])
        producer.produce(cfg.topics.verdicts, value=value, key=v.line_id.encode(), headers=headers)
    assert producer.flush(30) == 0
    with RunningSink(cfg):
        wait_for(lambda: sum(table_offsets(cfg).values()) == 40, 60, "all 40 verdicts committed")
        wait_for(lambda: len(exporter.get_finished_spans()) >= 36, 10, "the commits' spans")
    spans = [s for s in exporter.get_finished_spans() if s.name == "lake.commit"]
    assert len(spans) == 36
    by_offset = {
        (int(r["kafka_partition"]), int(r["kafka_offset"])): r["verdict_id"]
        for r in rows(cfg).to_pylist()
    }
    seen = set()
    for s in spans:
        a = s.attributes or {}
        assert a["inspector.table"] == "verdicts"
        assert a["messaging.destination.name"] == cfg.topics.verdicts
        assert 1 <= a["inspector.commit_rows"] <= 40  # type: ignore[operator]
        # the sink sets the partition id as a string (semantic conventions), the offset an int
        partition = int(cast(str, a["messaging.destination.partition.id"]))
        vid = by_offset[(partition, cast(int, a["messaging.kafka.offset"]))]
        parent = tracing.parse_traceparent(parents[vid])
        assert parent is not None and s.parent is not None and s.context is not None
        assert (format(s.context.trace_id, "032x"), format(s.parent.span_id, "016x")) == (
            parent.trace_id,
            parent.span_id,
        )
        assert s.start_time is not None and s.end_time is not None
        assert s.start_time <= s.end_time
        seen.add(vid)
    assert seen == {v.verdict_id for i, v in enumerate(verdicts) if i % 10 != 9}
