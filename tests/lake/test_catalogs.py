"""``inspector sink`` on a plant's catalog and warehouse: a real PostgreSQL catalog the
tests start (``inspector.localstack.start_postgres``) and an S3 warehouse on moto's
standalone server, an S3-compatible emulator (``start_s3``; not AWS itself)."""

from __future__ import annotations

import json
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from inspector.config import PlantConfig
from inspector.localstack import ManagedProcess, free_port, start_postgres, start_s3
from tests.act.support import write_config
from tests.helpers import wait_for
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
)

pytestmark = pytest.mark.integration

BUCKET = "lake"
S3_KEY, S3_SECRET = "inspector-test", "a-secret-the-test-sets"


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    pg = start_postgres(log_dir=tmp_path_factory.mktemp("pg"), database="lake")
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture
def pg_uri(postgres: ManagedProcess) -> str:
    """A database of its own for each test on the module's PostgreSQL (psycopg 3)."""
    import psycopg

    name = f"lake_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(
        f"postgresql://inspector@127.0.0.1:{postgres.port}/postgres", autocommit=True
    ) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://inspector@127.0.0.1:{postgres.port}/{name}"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    srv = start_s3(log_dir=tmp_path_factory.mktemp("s3"), buckets=(BUCKET,))
    try:
        yield srv
    finally:
        srv.close()


def s3_settings(srv: ManagedProcess, **over: Any) -> dict[str, Any]:
    return {
        "endpoint": f"http://127.0.0.1:{srv.port}",
        "region": "us-east-1",
        "access_key_id": S3_KEY,
        "secret_access_key": S3_SECRET,
        **over,
    }


def s3_objects(srv: ManagedProcess, prefix: str) -> list[str]:
    """Object keys under ``prefix`` in the bucket, listed with boto3 (not pyiceberg)."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{srv.port}",
        region_name="us-east-1",
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
    )
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


# ---------------------------------------------------------------- helpers


def write_plant(cfg: PlantConfig, path: Path) -> Path:
    """The plant file, its S3 secret as ``${LAKE_S3_SECRET}`` (set by the test)."""
    write_config(cfg, path)
    if cfg.lake.s3 is not None:
        doc = yaml.safe_load(path.read_text())
        doc["lake"]["s3"]["secret_access_key"] = "${LAKE_S3_SECRET}"
        path.write_text(yaml.safe_dump(doc))
    return path


def covered(cfg: PlantConfig) -> int:
    return sum(table_offsets(cfg).values())


def exactly_once(cfg: PlantConfig, verdicts: list[Any]) -> None:
    ids = rows(cfg).column("verdict_id").to_pylist()
    dup = [i for i, n in Counter(ids).items() if n > 1]
    assert not dup, f"{len(dup)} duplicated verdicts, e.g. {dup[:3]}"
    missing = {v.verdict_id for v in verdicts} - set(ids)
    assert not missing, f"{len(missing)} verdicts missing, e.g. {sorted(missing)[:3]}"
    assert len(ids) == len(verdicts)


def metric(port: int, name: str) -> float:
    total = 0.0
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Ready:
    def __init__(self, port: int) -> None:
        self.port = port

    def __call__(self) -> tuple[int, dict[str, Any]]:
        r = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
        return r.status_code, r.json()


def pg_catalog_rows(uri: str) -> list[tuple[str, str]]:
    """The catalog's own view, read with SQL: (table, metadata file) of every table."""
    import psycopg

    with psycopg.connect(uri) as con:
        cur = con.execute("SELECT table_name, metadata_location FROM iceberg_tables")
        return sorted(cur.fetchall())


# ---------------------------------------------------------------- PostgreSQL catalog


def test_postgres_catalog_sigkilled_sinks_give_one_row_per_verdict(
    make_config: MakeConfig, tmp_path: Path, pg_uri: str
) -> None:
    n = 3000
    cfg = lake_config(
        make_config, tmp_path, catalog_uri=pg_uri, roll_s=0.3, roll_bytes=64 * 1024,
        max_poll_records=300,
    )  # fmt: skip
    path = write_config(cfg, tmp_path / "plant.yaml")
    log = tmp_path / "sink.log"
    verdicts = stream(n, seed=21)
    rnd = random.Random(8)
    at_kill = []
    with Paced(cfg, verdicts, per_s=500):
        for _ in range(3):
            proc = SinkProcess(path, log)
            target = covered(cfg) + rnd.randint(200, 500)
            try:
                wait_for(lambda t=target: covered(cfg) >= t, 40, f"the table to cover {target}")  # type: ignore[misc]  # a lambda with a default argument
                # not a wait for a condition: places the kill anywhere in the commit cycle
                time.sleep(rnd.uniform(0, 0.3))
            finally:
                proc.kill()
            at_kill.append(covered(cfg))
    assert at_kill[-1] < n, f"the kills must land mid-stream: {at_kill}"
    final = SinkProcess(path, log)
    try:
        wait_for(lambda: covered(cfg) == n, 40, "the restarted sink to finish")
    finally:
        rc = final.stop()
    assert rc == 0, log.read_text()[-3000:]
    exactly_once(cfg, verdicts)
    # the tables are PostgreSQL's rows, under the catalog's name, nothing in SQLite
    tables = pg_catalog_rows(pg_uri)
    assert [t for t, _ in tables] == sorted(cfg.lake.tables)
    assert not (tmp_path / "lake" / "catalog.db").exists()


def _two_sinks_race(cfg: PlantConfig, tmp_path: Path, n: int) -> None:
    """Two ``inspector sink`` processes in two consumer groups: both read every
    partition and race to commit the same offsets to one table."""
    other = cfg.model_copy(update={"lake": cfg.lake.model_copy(update={"group_id": "lake-b"})})
    paths = [write_plant(cfg, tmp_path / "a.yaml"), write_plant(other, tmp_path / "b.yaml")]
    ports = [free_port(), free_port()]
    verdicts = stream(n, seed=13)
    sinks = [
        SinkProcess(p, tmp_path / f"sink{i}.log", port)
        for i, (p, port) in enumerate(zip(paths, ports, strict=True))
    ]
    try:

        def assigned(port: int) -> float:
            try:
                return metric(port, 'inspector_lake_partitions{table="verdicts"')
            except httpx.HTTPError:
                return 0

        wait_for(lambda: all(assigned(p) == 3 for p in ports), 40, "both sinks assigned")
        with Paced(cfg, verdicts, per_s=600):
            pass
        wait_for(lambda: covered(cfg) == n, 40, "both sinks to cover the stream")
        taken = sum(
            metric(p, 'inspector_lake_commits_total{outcome="partition_taken"') for p in ports
        )
        won = [metric(p, 'inspector_lake_commits_total{outcome="committed"') for p in ports]
    finally:
        rcs = [s.stop() for s in sinks]
    assert rcs == [0, 0], [(tmp_path / f"sink{i}.log").read_text()[-2000:] for i in range(2)]
    exactly_once(cfg, verdicts)
    assert taken > 0, ("no race was lost: the test did not make the sinks contend", won)
    assert all(w > 0 for w in won), ("one sink never won a commit", won)


def test_two_sinks_on_a_postgres_catalog_commit_every_verdict_once(
    make_config: MakeConfig, tmp_path: Path, pg_uri: str
) -> None:
    cfg = lake_config(make_config, tmp_path, catalog_uri=pg_uri, roll_s=0.1, max_poll_records=200)
    _two_sinks_race(cfg, tmp_path, 2000)


def stop_postgres(pg: ManagedProcess) -> None:
    """A fast shutdown (SIGINT): sessions are cut, the data directory stays."""
    assert pg.proc is not None
    pg.signal(signal.SIGINT)
    pg.proc.wait(30)


def test_postgres_outage_pauses_the_sink_says_why_and_it_resumes_by_itself(
    make_config: MakeConfig, tmp_path: Path, postgres: ManagedProcess, pg_uri: str
) -> None:
    cfg = lake_config(make_config, tmp_path, catalog_uri=pg_uri, retry_max_s=0.5)
    verdicts = stream(400, seed=23)
    port = free_port()
    ready = Ready(port)
    try:
        with RunningSink(cfg, metrics_port=port) as sink:
            stats = sink.service.sink.stats
            send(cfg, verdicts[:200])
            wait_for(lambda: covered(cfg) == 200, 40, "the first 200 in the lake")
            assert ready()[0] == 200
            stop_postgres(postgres)
            send(cfg, verdicts[200:])
            wait_for(lambda: ready()[0] == 503, 30, "/readyz to say not ready")
            commits = stats.commits
            _, body = ready()
            why = body["why"]["catalog"]
            assert body["checks"]["catalog"] is False
            assert "\n" not in why and len(why) <= 500, why
            assert "reading inspector.verdicts: OperationalError" in why, why
            assert f"port {postgres.port} failed: Connection refused" in why, why
            # it keeps trying (backoff capped at 0.5 s) and commits nothing meanwhile
            retry_at = sink.service.sink._retry_at
            wait_for(lambda: sink.service.sink._retry_at > retry_at, 30, "a failed retry")
            assert ready()[0] == 503
            assert stats.commits == commits
            assert stats.outages == 1
            postgres.start(timeout_s=60)
            wait_for(lambda: ready()[0] == 200, 30, "/readyz to recover by itself")
            wait_for(lambda: covered(cfg) == 400, 40, "the rest after the outage")
            assert stats.outages == 1
    finally:
        if not postgres.running:  # a failed test must not leave the module's server down
            postgres.start(timeout_s=60)
    exactly_once(cfg, verdicts)


def test_a_sink_whose_catalog_is_unreachable_at_start_exits_1_without_the_password(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    uri = f"postgresql://lake:pa55word@127.0.0.1:{port}/lake"
    cfg = lake_config(make_config, tmp_path, catalog_uri=uri)
    log = tmp_path / "sink.log"
    sink = SinkProcess(write_plant(cfg, tmp_path / "plant.yaml"), log)
    rc = sink.proc.wait(60)
    sink.log.close()
    out = log.read_text()
    assert rc == 1, out
    assert "pa55word" not in out, out
    [line] = [ln for ln in out.splitlines() if f"lake:***@127.0.0.1:{port}" in ln]
    assert "Connection refused" in line, out
    assert "Is the server running" not in out, "the message is one line"


# ---------------------------------------------------------------- S3 warehouse


def test_verdicts_land_in_an_s3_warehouse_exactly_once_and_kpi_reads_them(
    make_config: MakeConfig,
    tmp_path: Path,
    s3: ManagedProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from inspector.cli import app

    prefix = f"wh-{uuid.uuid4().hex[:8]}"
    cfg = lake_config(
        make_config, tmp_path, warehouse=f"s3://{BUCKET}/{prefix}", s3=s3_settings(s3)
    )
    verdicts = stream(300, seed=25)
    with RunningSink(cfg):
        send(cfg, verdicts[:150])
        wait_for(lambda: covered(cfg) == 150, 40, "the first 150 in the lake")
        send(cfg, verdicts[150:])
        wait_for(lambda: covered(cfg) == 300, 40, "all 300 in the lake")
    exactly_once(cfg, verdicts)
    keys = s3_objects(s3, prefix + "/")
    parquet = [k for k in keys if k.endswith(".parquet")]
    assert any("/verdicts/data/day=2026-09-21/line_id=line-1/" in k for k in parquet), keys
    assert any(k.startswith(f"{prefix}/inspector/verdicts/metadata/") for k in keys), keys
    assert not (tmp_path / "lake" / "warehouse").exists(), "nothing on local disk"

    # `inspector kpi` from a plant file whose S3 secret comes from the environment
    path = write_plant(cfg, tmp_path / "plant.yaml")
    assert S3_SECRET not in path.read_text()
    monkeypatch.setenv("LAKE_S3_SECRET", S3_SECRET)
    res = CliRunner().invoke(
        app, ["kpi", "--config", str(path), "-r", "yield", "--by", "line", "-f", "json"]
    )
    assert res.exit_code == 0, res.output
    got = {r["line"]: (r["pass"], r["fail"], r["fault"]) for r in json.loads(res.output)["yield"]}
    want = Counter((v.line_id, v.verdict) for v in verdicts)
    assert got == {
        line: (want[(line, "PASS")], want[(line, "FAIL")], want[(line, "FAULT")])
        for line in ("line-1", "line-2")
    }


def test_two_sinks_on_postgres_and_s3_commit_every_verdict_once(
    make_config: MakeConfig,
    tmp_path: Path,
    pg_uri: str,
    s3: ManagedProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plant's setup for several sinks: the catalog on PostgreSQL, the warehouse on
    S3 (the secret from the environment, as a Secret would give it)."""
    prefix = f"wh-{uuid.uuid4().hex[:8]}"
    cfg = lake_config(
        make_config, tmp_path, catalog_uri=pg_uri, warehouse=f"s3://{BUCKET}/{prefix}",
        s3=s3_settings(s3), roll_s=0.1, max_poll_records=200,
    )  # fmt: skip
    monkeypatch.setenv("LAKE_S3_SECRET", S3_SECRET)
    _two_sinks_race(cfg, tmp_path, 1500)
    assert any(k.endswith(".parquet") for k in s3_objects(s3, prefix + "/"))


def test_s3_outage_pauses_the_sink_and_it_resumes_without_loss(
    make_config: MakeConfig, tmp_path: Path, s3: ManagedProcess
) -> None:
    """The store hangs (SIGSTOP: connections open, nothing answers; moto keeps its
    objects in memory, so it cannot be restarted the way PostgreSQL is)."""
    prefix = f"wh-{uuid.uuid4().hex[:8]}"
    cfg = lake_config(
        make_config, tmp_path, warehouse=f"s3://{BUCKET}/{prefix}", retry_max_s=0.5,
        s3=s3_settings(s3, connect_timeout_s=1, request_timeout_s=1),
    )  # fmt: skip
    verdicts = stream(300, seed=27)
    port = free_port()
    ready = Ready(port)
    try:
        with RunningSink(cfg, metrics_port=port) as sink:
            stats = sink.service.sink.stats
            send(cfg, verdicts[:150])
            wait_for(lambda: covered(cfg) == 150, 40, "the first 150 in the lake")
            s3.signal(signal.SIGSTOP)
            send(cfg, verdicts[150:])
            wait_for(lambda: ready()[0] == 503, 40, "/readyz to say not ready")
            commits = stats.commits
            why = ready()[1]["why"]["catalog"]
            assert "\n" not in why and "inspector.verdicts" in why, why
            assert "in bucket 'lake'" in why, why  # pyarrow's S3 error, naming the store
            retry_at = sink.service.sink._retry_at
            wait_for(lambda: sink.service.sink._retry_at > retry_at, 30, "a failed retry")
            assert stats.commits == commits
            s3.signal(signal.SIGCONT)
            wait_for(lambda: ready()[0] == 200, 40, "/readyz to recover by itself")
            wait_for(lambda: covered(cfg) == 300, 40, "the rest after the outage")
            assert stats.outages >= 1
    finally:
        s3.signal(signal.SIGCONT)
    exactly_once(cfg, verdicts)
