"""``inspector sink`` on the session's Apache Kafka and a real SQLite Iceberg catalog."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from inspector.bus.kafka import Shutdown
from inspector.events import DeadLetterRecord, PartTrigger, decode, encode
from inspector.lake.catalog import LakeError, open_catalog
from inspector.lake.service import SinkService
from inspector.lake.tables import SPECS
from tests.act.support import write_config
from tests.helpers import produce, read, wait_for
from tests.lake.support import (
    MakeConfig,
    Paced,
    RunningSink,
    SinkProcess,
    lake_config,
    rows,
    send,
    stream,
    table_offsets,
    verdict_table,
)

pytestmark = pytest.mark.integration


def test_verdicts_land_as_typed_rows_and_bad_records_are_dead_lettered(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    cfg = lake_config(make_config, tmp_path)
    good = stream(300)
    send(cfg, good[:150])
    value, headers = encode(good[0], source="t", time=1.0)
    broken = orjson.loads(value)
    del broken["line_id"]
    trig_value, trig_headers = encode(
        PartTrigger(line_id="line-1", camera_id="cam-1", part_id="p", event="enter", at=1.0),
        source="t",
        time=1.0,
    )
    bad = [
        (b"{not json", headers),
        (orjson.dumps(broken), headers),  # schema violation: no line_id
        (trig_value, trig_headers),  # another event type on the verdicts topic
    ]
    produce(cfg, cfg.topics.verdicts, bad, key=b"line-1")
    with RunningSink(cfg) as sink:
        send(cfg, good[150:])
        wait_for(lambda: sum(table_offsets(cfg).values()) == 303, 60, "all 303 records covered")
        assert sink.service.sink.stats.dead_lettered == 3
    table = rows(cfg)
    assert table.num_rows == 300
    assert sorted(table.column("verdict_id").to_pylist()) == sorted(v.verdict_id for v in good)
    by_id = {r["verdict_id"]: r for r in table.to_pylist()}
    v = good[42]
    r = by_id[v.verdict_id]
    assert (r["line_id"], r["camera_id"], r["verdict"], r["rule"]) == (
        v.line_id,
        v.camera_id,
        v.verdict,
        v.rule,
    )
    assert r["classes"] == [f.cls for f in v.findings]
    assert r["captured_at"].timestamp() == pytest.approx(v.timings.captured_at, abs=1e-6)
    assert r["latency_ms"] == pytest.approx((v.timings.emitted_at - v.timings.captured_at) * 1000)
    assert v.model and r["model_version"] == v.model.version
    assert orjson.loads(r["raw"])["verdict_id"] == v.verdict_id
    # partitioned by day and line
    files = list((tmp_path / "lake" / "warehouse").rglob("*.parquet"))
    assert {p.parent.name for p in files} == {"line_id=line-1", "line_id=line-2"}
    assert {p.parent.parent.name for p in files} == {
        "day=2026-09-21",
        "day=2026-09-22",
        "day=2026-09-23",
    }
    dlq = read(cfg, [cfg.topics.dlq], count=3, timeout_s=20)
    recs = [decode(m.value(), m.headers(), DeadLetterRecord) for m in dlq]
    assert Counter(r.reason for r in recs) == {
        "bad_json": 1,
        "schema_violation": 1,
        "wrong_type": 1,
    }
    assert all(r.stage == "lake" and r.original_topic == cfg.topics.verdicts for r in recs)
    # a graceful restart reads nothing twice
    send(cfg, good[:10])  # re-sent duplicates are rows of their own: same id, new offsets
    with RunningSink(cfg):
        wait_for(lambda: sum(table_offsets(cfg).values()) == 313, 60, "the 10 re-sent")
    assert rows(cfg).num_rows == 310


def test_a_foreign_table_at_our_name_is_refused(make_config: MakeConfig, tmp_path: Path) -> None:
    import pyarrow as pa

    cfg = lake_config(make_config, tmp_path)
    catalog = open_catalog(cfg.lake)
    catalog.create_namespace(cfg.lake.namespace)
    catalog.create_table(f"{cfg.lake.namespace}.verdicts", schema=pa.schema([("x", pa.int64())]))
    with pytest.raises(LakeError, match="not created by inspector's sink"):
        SinkService(cfg, Shutdown())


def _covered(cfg) -> int:  # type: ignore[no-untyped-def]
    return sum(table_offsets(cfg).values())


def _exactly_once(cfg, verdicts) -> None:  # type: ignore[no-untyped-def]
    ids = rows(cfg).column("verdict_id").to_pylist()
    dup = [i for i, n in Counter(ids).items() if n > 1]
    assert not dup, f"{len(dup)} duplicated verdicts, e.g. {dup[:3]}"
    missing = {v.verdict_id for v in verdicts} - set(ids)
    assert not missing, f"{len(missing)} verdicts missing, e.g. {sorted(missing)[:3]}"
    assert len(ids) == len(verdicts)


def test_sigkilled_five_times_mid_stream_gives_one_row_per_verdict(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    n = 10_000
    cfg = lake_config(
        make_config, tmp_path, roll_s=0.5, roll_bytes=256 * 1024, max_poll_records=500
    )
    path = write_config(cfg, tmp_path / "plant.yaml")
    log = tmp_path / "sink.log"
    verdicts = stream(n, seed=11)
    rnd = random.Random(5)
    at_kill = []
    with Paced(cfg, verdicts, per_s=400):
        for _ in range(5):
            proc = SinkProcess(path, log)
            target = _covered(cfg) + rnd.randint(300, 900)
            try:
                wait_for(lambda t=target: _covered(cfg) >= t, 60, f"the table to cover {target}")  # type: ignore[misc]  # a lambda with a default argument
                # not a wait for a condition: places the kill anywhere in the commit cycle
                time.sleep(rnd.uniform(0, 0.5))
            finally:
                proc.kill()
            at_kill.append(_covered(cfg))
    # every kill left work for the next sink (the table did not hold the stream yet)
    assert at_kill[-1] < n, f"the kills must land mid-stream: {at_kill}"
    final = SinkProcess(path, log)
    try:
        wait_for(lambda: _covered(cfg) == n, 60, "the restarted sink to finish")
    finally:
        rc = final.stop()
    assert rc == 0, log.read_text()[-3000:]
    _exactly_once(cfg, verdicts)


def _metric(port: int, name: str) -> float:
    import httpx

    total = 0.0
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_two_sinks_in_two_groups_commit_every_verdict_once(
    make_config: MakeConfig, tmp_path: Path, protocol: str
) -> None:
    """The worst case for concurrent commits: two sinks that both read every partition
    (two consumer groups) and race to commit the same offsets to one table."""
    import httpx

    from inspector.localstack import free_port

    n = 3000
    cfg = lake_config(make_config, tmp_path, protocol, roll_s=0.1, max_poll_records=200)
    other = cfg.model_copy(update={"lake": cfg.lake.model_copy(update={"group_id": "lake-b"})})
    paths = [write_config(cfg, tmp_path / "a.yaml"), write_config(other, tmp_path / "b.yaml")]
    ports = [free_port(), free_port()]
    verdicts = stream(n, seed=3)
    sinks = [
        SinkProcess(p, tmp_path / f"sink{i}.log", port)
        for i, (p, port) in enumerate(zip(paths, ports, strict=True))
    ]
    try:

        def assigned(port: int) -> float:
            try:
                return _metric(port, 'inspector_lake_partitions{table="verdicts"')
            except httpx.HTTPError:
                return 0

        # each sink, in its own group, holds every partition before the stream starts
        wait_for(lambda: all(assigned(p) == 3 for p in ports), 60, "both sinks assigned")
        with Paced(cfg, verdicts, per_s=600):
            pass
        wait_for(lambda: _covered(cfg) == n, 60, "both sinks to cover the stream")
        taken = sum(
            _metric(p, 'inspector_lake_commits_total{outcome="partition_taken"') for p in ports
        )
        won = [_metric(p, 'inspector_lake_commits_total{outcome="committed"') for p in ports]
    finally:
        rcs = [s.stop() for s in sinks]
    assert rcs == [0, 0], [(tmp_path / f"sink{i}.log").read_text()[-2000:] for i in range(2)]
    _exactly_once(cfg, verdicts)
    assert taken > 0, ("no race was lost: the test did not make the sinks contend", won)


def _metadata_location(cfg) -> str:  # type: ignore[no-untyped-def]
    import sqlite3

    db = Path(cfg.lake.data_dir) / "catalog.db"
    with sqlite3.connect(db) as con:
        (loc,) = con.execute(
            "SELECT metadata_location FROM iceberg_tables WHERE table_name = 'verdicts'"
        ).fetchone()
    return str(loc)


def test_warehouse_outage_pauses_commits_nothing_says_why_and_resumes(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    import httpx

    from inspector.localstack import free_port

    cfg = lake_config(make_config, tmp_path)
    verdicts = stream(400, seed=5)
    port = free_port()

    def ready() -> tuple[int, dict]:
        r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
        return r.status_code, r.json()

    with RunningSink(cfg, metrics_port=port) as sink:
        send(cfg, verdicts[:200])
        wait_for(lambda: _covered(cfg) == 200, 60, "the first 200 in the lake")
        assert ready()[0] == 200
        before = _metadata_location(cfg)
        wh = tmp_path / "lake" / "warehouse"
        aside = tmp_path / "lake" / "warehouse.away"
        wh.rename(aside)
        wh.write_text("the warehouse is gone")  # not a directory: every read and write fails
        send(cfg, verdicts[200:])
        wait_for(lambda: ready()[0] == 503, 30, "/readyz to say not ready")
        _, body = ready()
        assert body["checks"]["catalog"] is False
        assert "verdicts" in body["why"]["catalog"], body
        assert sink.service.sink.down is not None
        assert _metadata_location(cfg) == before  # nothing committed while it is away
        wh.unlink()
        aside.rename(wh)
        wait_for(lambda: ready()[0] == 200, 30, "/readyz to recover by itself")
        wait_for(lambda: _covered(cfg) == 400, 60, "the rest after the outage")
        assert sink.service.sink.stats.outages == 1
    _exactly_once(cfg, verdicts)


def test_actions_camera_status_and_defects_land_in_their_own_tables(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    from inspector.events import ActionEvent, CameraStatusEvent, DefectEvent
    from inspector.lake.catalog import offsets_of, open_table
    from inspector.lake.tables import SPECS

    cfg = lake_config(make_config, tmp_path)
    vs = [v for v in stream(60, seed=9) if v.verdict == "FAIL"][:5]
    defects = [
        DefectEvent(
            defect_id=f"d-{v.verdict_id}",
            verdict_id=v.verdict_id,
            frame_id=v.frame_id,
            camera_id=v.camera_id,
            line_id=v.line_id,
            seq=v.seq,
            findings=v.findings,
            captured_at=v.timings.captured_at,
        )
        for v in vs
    ]
    actions = [
        ActionEvent(
            action_id=f"a-{i}",
            workflow="reject-gate",
            kind="divert",
            outcome="fired",
            line_id=v.line_id,
            camera_id=v.camera_id,
            verdict_id=v.verdict_id,
            at=v.timings.emitted_at,
        )
        for i, v in enumerate(vs)
    ]
    statuses = [
        CameraStatusEvent(
            camera_id="cam-3",
            line_id="line-2",
            run_id="r1",
            transition=i,
            state=s,
            previous=p,
            reason="test",
            at=1_790_000_000.0 + i,
            fps=3.0,
        )
        for i, (s, p) in enumerate(
            [("connecting", None), ("streaming", "connecting"), ("stalled", "streaming")]
        )
    ]
    with RunningSink(cfg):
        for topic, events in (
            (cfg.topics.defects, defects),
            (cfg.topics.actions, actions),
            (cfg.topics.camera_status, statuses),
        ):
            encoded = [encode(e, source="t", time=1.0) for e in events]
            produce(cfg, topic, encoded, key=b"line")
        catalog = open_catalog(cfg.lake)
        tables = {
            n: open_table(catalog, cfg.lake.namespace, SPECS[n])
            for n in ("defects", "actions", "camera_status")
        }

        def covered(name: str, topic: str) -> int:
            t = tables[name]
            t.refresh()
            return sum(offsets_of(t, topic).values())

        wait_for(
            lambda: (
                covered("defects", cfg.topics.defects) == 5
                and covered("actions", cfg.topics.actions) == 5
                and covered("camera_status", cfg.topics.camera_status) == 3
            ),
            60,
            "every event in its table",
        )
    d = {r["defect_id"]: r for r in tables["defects"].scan().to_arrow().to_pylist()}
    assert set(d) == {x.defect_id for x in defects}
    assert d[defects[0].defect_id]["classes"] == [f.cls for f in defects[0].findings]
    assert d[defects[0].defect_id]["severities"] == [f.severity for f in defects[0].findings]
    a = tables["actions"].scan().to_arrow().to_pylist()
    assert sorted(r["verdict_id"] for r in a) == sorted(v.verdict_id for v in vs)
    assert {(r["workflow"], r["kind"], r["outcome"]) for r in a} == {
        ("reject-gate", "divert", "fired")
    }
    c = sorted(tables["camera_status"].scan().to_arrow().to_pylist(), key=lambda r: r["transition"])
    assert [(r["state"], r["previous"]) for r in c] == [
        ("connecting", None),
        ("streaming", "connecting"),
        ("stalled", "streaming"),
    ]
    assert c[0]["at"].timestamp() == 1_790_000_000.0


def test_a_locked_catalog_pauses_the_sink_until_it_is_released(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """The catalog itself unreachable: another process holds the SQLite catalog locked."""
    import sqlite3

    import httpx

    from inspector.localstack import free_port

    cfg = lake_config(make_config, tmp_path)
    verdicts = stream(200, seed=6)
    port = free_port()

    def ready() -> tuple[int, dict]:
        r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
        return r.status_code, r.json()

    with RunningSink(cfg, metrics_port=port) as sink:
        send(cfg, verdicts[:100])
        wait_for(lambda: _covered(cfg) == 100, 60, "the first 100 in the lake")
        lock = sqlite3.connect(Path(cfg.lake.data_dir) / "catalog.db", isolation_level=None)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            send(cfg, verdicts[100:])
            wait_for(lambda: ready()[0] == 503, 40, "/readyz to say not ready")
            _, body = ready()
            assert "database is locked" in body["why"]["catalog"], body
            assert "\n" not in body["why"]["catalog"]
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        wait_for(lambda: ready()[0] == 200, 40, "/readyz to recover by itself")
        wait_for(lambda: _covered(cfg) == 200, 60, "the rest after the lock")
        assert sink.service.sink.stats.outages >= 1
    _exactly_once(cfg, verdicts)


def test_old_snapshots_are_expired_and_the_offsets_survive_it(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    cfg = lake_config(make_config, tmp_path, snapshot_max_age_s=1, expire_every_s=1)
    verdicts = stream(300, seed=8)
    with RunningSink(cfg) as sink:
        for i in range(5):  # five commits at least, a second or more apart
            send(cfg, verdicts[i * 50 : (i + 1) * 50])
            wait_for(lambda i=i: _covered(cfg) == (i + 1) * 50, 60, f"batch {i}")  # type: ignore[misc]  # a lambda with a default argument
        stats = sink.service.sink.stats
        wait_for(lambda: stats.expired_snapshots >= 3, 30, "old snapshots expired")
        commits = stats.commits
    table = verdict_table(cfg)
    assert len(table.metadata.snapshots) < commits, (len(table.metadata.snapshots), commits)
    # the current snapshot still says where to resume: a restarted sink reads nothing twice
    with RunningSink(cfg):
        send(cfg, verdicts[250:])
        wait_for(lambda: _covered(cfg) == 300, 60, "the last 50 after a restart")
    _exactly_once(cfg, verdicts)


def test_a_corrupt_table_is_refused_never_overwritten(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    import sqlite3

    cfg = lake_config(make_config, tmp_path)
    with RunningSink(cfg):
        send(cfg, stream(20, seed=2))
        wait_for(lambda: _covered(cfg) == 20, 60, "a first commit")
    location = _metadata_location(cfg)
    path = Path(location.removeprefix("file://"))
    path.write_text('{"format-version": 2, "table-uuid": "not a table"}')
    with pytest.raises(LakeError, match="metadata cannot be read"):
        SinkService(cfg, Shutdown())
    assert _metadata_location(cfg) == location  # the catalog still points at it
    assert path.read_text() == '{"format-version": 2, "table-uuid": "not a table"}'
    with sqlite3.connect(Path(cfg.lake.data_dir) / "catalog.db") as con:
        assert con.execute("SELECT count(*) FROM iceberg_tables").fetchone()[0] == len(SPECS)
