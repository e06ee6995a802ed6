"""Pure logic of the lake: config, time parsing, and how a sink rebases on a lost race."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka import Consumer

from inspector.bus.kafka import Shutdown
from inspector.config import ConfigError, LakeSettings, parse_config
from inspector.lake.kpi import parse_by, parse_time
from inspector.lake.sink import Pending, Sink


def test_lake_config_defaults_and_bounds(tmp_path: Path) -> None:
    s = LakeSettings(data_dir=str(tmp_path / "lk"))
    assert s.resolved_catalog_uri() == f"sqlite:///{tmp_path / 'lk' / 'catalog.db'}"
    assert s.resolved_warehouse() == (tmp_path / "lk" / "warehouse").as_uri()
    assert (s.roll_bytes, s.roll_s) == (64 * 1024 * 1024, 60.0)
    base: dict[str, Any] = {"lines": [{"id": "l", "cameras": [{"id": "c", "url": "rtsp://x/y"}]}]}
    for bad, where in [
        ({"roll_s": 0}, "lake.roll_s"),
        ({"roll_bytes": 10}, "lake.roll_bytes"),
        ({"tables": ["verdicts", "verdicts"]}, "lake.tables"),
        ({"tables": ["frames"]}, "lake.tables"),
        ({"namespace": "Bad Name"}, "lake.namespace"),
        ({"catalog": "x"}, "lake.catalog"),
        ({"shifts": [{"name": "a", "start": "25:00"}]}, "lake.shifts[0].start"),
        (
            {"shifts": [{"name": "a", "start": "14:00"}, {"name": "b", "start": "06:00"}]},
            "lake.shifts",
        ),
        (
            {"shifts": [{"name": "a", "start": "06:00"}, {"name": "a", "start": "14:00"}]},
            "lake.shifts",
        ),
    ]:
        with pytest.raises(ConfigError) as exc:
            parse_config({**base, "lake": bad}, "t", env={})
        assert any(where in e for e in exc.value.errors), (bad, exc.value.errors)


def test_kpi_times_and_groupings() -> None:
    now = datetime(2026, 9, 22, 12, 0, tzinfo=UTC)
    assert parse_time("7d", now) == datetime(2026, 9, 15, 12, 0, tzinfo=UTC)
    assert parse_time("90m", now) == datetime(2026, 9, 22, 10, 30, tzinfo=UTC)
    assert parse_time("2026-09-21") == datetime(2026, 9, 21, tzinfo=UTC)
    assert parse_time("2026-09-21T06:00+02:00").hour == 6
    with pytest.raises(ValueError, match="not a time"):
        parse_time("last tuesday")
    assert parse_by("line, day") == ["line", "day"]
    with pytest.raises(ValueError, match="--by takes"):
        parse_by("line,weekday")


class FakeConsumer:
    """Records seeks; the sink's rebase is pure bookkeeping around them."""

    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


def _row(p: int, off: int) -> dict[str, Any]:
    return {"kafka_partition": p, "kafka_offset": off, "raw": "{}"}


def test_a_lost_race_keeps_only_what_lies_beyond_the_tables_offsets() -> None:
    consumer = FakeConsumer()
    sink = Sink(
        LakeSettings(),
        # fakes: the rebase only seeks the consumer and touches none of the others
        consumer=cast(Consumer, consumer),
        dead_letters=None,  # type: ignore[arg-type]
        tracker=None,  # type: ignore[arg-type]
        writers={"t": None},  # type: ignore[dict-item]
        shutdown=Shutdown(),
        max_message_bytes=1000,
    )
    pend = sink.pending["t"]
    # partition 0: rows 10..19 buffered from base 10; partition 1: rows 5..7 from base 5
    pend.rows = [_row(0, o) for o in range(10, 20)] + [_row(1, o) for o in range(5, 8)]
    pend.ends = {0: 20, 1: 8}
    sink.base.update({("t", 0): 10, ("t", 1): 5})
    sink.pos.update({("t", 0): 20, ("t", 1): 8})
    # another committer wrote partition 0 up to 15 and partition 1 up to 30
    sink._rebase("t", {0: 15, 1: 30})
    assert [r["kafka_offset"] for r in pend.rows] == [15, 16, 17, 18, 19]
    assert pend.ends == {0: 20}
    assert sink.base[("t", 0)] == 15 and sink.base[("t", 1)] == 30
    assert consumer.seeks == [("t", 1, 30)]  # partition 0 reads on from 20
    assert sink.stats.lost_rows == 8
    assert isinstance(pend, Pending)


def test_offsets_lost_to_an_expiry_are_a_refusal_not_a_restart_from_zero(tmp_path: Path) -> None:
    """A foreign maintenance snapshot (no offsets) on top, its parent expired: resuming
    from nothing would duplicate the whole table, so the sink refuses."""
    import pyarrow as pa

    from inspector.lake.catalog import LakeError, offsets_of, open_catalog, open_table
    from inspector.lake.tables import OFFSETS_PROPERTY, SPECS

    settings = LakeSettings(data_dir=str(tmp_path / "lake"))
    table = open_table(open_catalog(settings), "inspector", SPECS["verdicts"])
    empty = pa.Table.from_pylist([], schema=table.schema().as_arrow())
    table.append(empty, snapshot_properties={OFFSETS_PROPERTY: '{"t.verdicts": {"0": 7}}'})
    assert offsets_of(table, "t.verdicts") == {0: 7}
    first = table.current_snapshot()
    assert first is not None
    table.append(empty)  # e.g. another engine's maintenance: no offsets in its summary
    assert offsets_of(table, "t.verdicts") == {0: 7}  # found on the parent
    table.maintenance.expire_snapshots().by_id(first.snapshot_id).commit()
    with pytest.raises(LakeError, match="refusing to guess"):
        offsets_of(table, "t.verdicts")
