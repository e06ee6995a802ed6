"""What the lakehouse sink sustains: rows/s end to end, and the lag it keeps at a plant's rate.

``python -m bench.lake`` starts Apache Kafka and redis-server, then:

1. **throughput**: produces ``--verdicts`` verdicts (default 50,000) to a fresh verdicts
   topic, starts one ``inspector sink`` process and times it until the Iceberg table
   covers them all: rows/s from the process start (import, group join, first commit
   included) and from its first commit on;
2. **lag at a plant's rate**: the same sink, verdicts produced at ``--rate`` per second
   (default 12: the demo's 4 cameras x 3 fps) for ``--seconds``; the lag (verdicts on
   the topic the table does not hold yet) sampled every 0.2 s: p50 / max, in verdicts
   and in seconds of production.

Figures depend on ``lake.roll_s`` (``--roll-s``, default 5 as in the demo): a commit
lands at most every roll_s while events arrive, so the lag at a low rate is about
roll_s plus one commit. Part 9 of ``make bench`` (``python -m bench --parts 9``) runs
the same function, with the figures in the bench's report and JSON; a measurement,
not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, new_prefix, servers, write_config
from bench.report import SINK_TARGET
from inspector.bus.kafka import ensure_topics, make_producer
from inspector.config import PlantConfig, parse_config
from inspector.events import Finding, ModelRef, Timings, VerdictEvent, encode
from inspector.lake.catalog import offsets_of, open_catalog, open_table
from inspector.lake.tables import SPECS


def verdicts(n: int, start: int = 0, seed: int = 1) -> list[VerdictEvent]:
    rnd = random.Random(seed + start)
    now = time.time()
    out = []
    for i in range(start, start + n):
        cam = f"cam-{i % 4 + 1}"
        kind = rnd.choices(["PASS", "FAIL", "FAULT"], [80, 15, 5])[0]
        findings = (
            [Finding(cls="scratch", score=0.8, severity="minor", rule="class:scratch")]
            if kind == "FAIL"
            else []
        )
        out.append(
            VerdictEvent(
                verdict_id=f"bench-{i}",
                frame_id=f"{cam}:run:{i}",
                camera_id=cam,
                line_id=f"line-{i % 2 + 1}",
                seq=i,
                verdict=kind,
                rule={"PASS": "pass", "FAIL": "class:scratch", "FAULT": "fault:shed"}[kind],
                findings=findings,
                model=ModelRef(name="defects", version="v1", sha256="0" * 64),
                timings=Timings(captured_at=now, ingested_at=now, emitted_at=now + 0.09),
            )
        )
    return out


def produce(cfg: PlantConfig, vs: list[VerdictEvent]) -> None:
    p = make_producer(cfg.kafka, client_suffix="bench-lake")
    for v in vs:
        value, headers = encode(v, source="inspector/bench", time=v.timings.emitted_at)
        while True:
            try:
                p.produce(cfg.topics.verdicts, value=value, key=v.line_id.encode(), headers=headers)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0


class Coverage:
    def __init__(self, cfg: PlantConfig) -> None:
        self.cfg = cfg
        self.table: Any = None

    def __call__(self) -> int:
        try:
            if self.table is None:
                self.table = open_table(
                    open_catalog(self.cfg.lake), self.cfg.lake.namespace, SPECS["verdicts"]
                )
            else:
                self.table.refresh()
            return sum(offsets_of(self.table, self.cfg.topics.verdicts).values())
        except Exception:
            return 0


def _plant(srv: Any, work: Path, roll_s: float) -> dict[str, Any]:
    prefix = new_prefix("lake")
    return {
        "plant": "bench-lake",
        "kafka": {"bootstrap_servers": srv.bootstrap},
        "topics": {"prefix": prefix, "partitions": 4},
        "redis": {"url": srv.redis_url, "key_prefix": prefix},
        "lines": [
            {
                "id": f"line-{li}",
                "cameras": [{"id": f"cam-{c}", "url": "rtsp://x/y"} for c in (2 * li - 1, 2 * li)],
            }
            for li in (1, 2)
        ],
        "lake": {"data_dir": str(work / "lake"), "roll_s": roll_s, "port": 0},
        "observe": {"log_format": "json"},
    }


def part9_lake(
    srv: Any,
    *,
    n: int = 50_000,
    rate: float = 12.0,
    seconds: float = 30.0,
    roll_s: float = 5.0,
    work: Path | None = None,
    echo: Any = print,
) -> dict[str, Any]:
    """One ``inspector sink`` process: rows/s over ``n`` produced verdicts, then the lag
    at ``rate`` verdicts/s for ``seconds``."""
    work = work or Path(tempfile.mkdtemp(prefix="bench-lake-"))
    data = _plant(srv, work, roll_s)
    cfg = parse_config(data, "bench", env={})
    path = write_config(data, work / "plant.yaml")
    ensure_topics(cfg.kafka, cfg.topics)
    t = time.monotonic()
    produce(cfg, verdicts(n))
    echo(f"  produced {n} verdicts in {time.monotonic() - t:.1f} s")
    cover = Coverage(cfg)
    log = (work / "sink.log").open("ab")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector", "sink", "--config", str(path)],
        stdout=log,
        stderr=log,
        env=env,
    )
    try:
        first: tuple[float, int] | None = None
        while (c := cover()) < n:
            if proc.poll() is not None:
                raise RuntimeError(f"sink exited {proc.returncode}; see {work / 'sink.log'}")
            if c and first is None:
                first = (time.monotonic(), c)
            time.sleep(0.1)  # sampling the table, not waiting for a test condition
        t1 = time.monotonic()
        out: dict[str, Any] = {
            "verdicts": n,
            "seconds_from_start": round(t1 - t0, 2),
            "rows_per_s": round(n / (t1 - t0)),
            "roll_s": roll_s,
        }
        if first and first[1] < n:
            out["rows_per_s_after_first_commit"] = round((n - first[1]) / (t1 - first[0]))
            out["first_commit"] = {"rows": first[1], "at_s": round(first[0] - t0, 2)}
        out["lag"] = _lag(cfg, cover, n, rate, seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
    out["sink_exit_code"] = proc.returncode
    return out


def _lag(cfg: PlantConfig, cover: Coverage, n: int, rate: float, seconds: float) -> dict[str, Any]:
    """Verdicts on the topic the table does not hold yet, sampled every 0.2 s."""
    lags: list[int] = []
    sent = 0
    start = time.monotonic()
    p = make_producer(cfg.kafka, client_suffix="bench-lake-rate")
    batch = verdicts(int(rate * seconds) + 1, start=n)
    while (el := time.monotonic() - start) < seconds:
        due = int(el * rate)
        for v in batch[sent:due]:
            value, headers = encode(v, source="inspector/bench", time=time.time())
            p.produce(cfg.topics.verdicts, value=value, key=v.line_id.encode(), headers=headers)
        sent = max(sent, due)
        p.flush(5)
        lags.append(n + sent - cover())
        time.sleep(0.2)  # the sampling period
    lags.sort()
    p50, top = lags[len(lags) // 2], lags[-1]
    return {
        "rate": rate,
        "seconds": seconds,
        "p50_verdicts": p50,
        "max_verdicts": top,
        "p50_s": round(p50 / rate, 2),
        "max_s": round(top / rate, 2),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.lake", description=__doc__.split("\n")[0])
    ap.add_argument("--verdicts", type=int, default=50_000)
    ap.add_argument("--rate", type=float, default=12.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--roll-s", type=float, default=5.0)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-lake-"))
    with servers(work / "logs") as srv:
        r = part9_lake(
            srv,
            n=args.verdicts,
            rate=args.rate,
            seconds=args.seconds,
            roll_s=args.roll_s,
            work=work,
        )
    print(
        f"throughput: {r['verdicts']} rows in {r['seconds_from_start']} s from the process "
        f"start = {r['rows_per_s']:,} rows/s (target >= {SINK_TARGET:,.0f})"
    )
    if "rows_per_s_after_first_commit" in r:
        print(f"  {r['rows_per_s_after_first_commit']:,} rows/s after the first commit")
    lag = r["lag"]
    print(
        f"lag at {lag['rate']:g} verdicts/s for {lag['seconds']:g} s, roll_s {r['roll_s']:g}: "
        f"p50 {lag['p50_verdicts']} verdicts ({lag['p50_s']} s), max {lag['max_verdicts']} "
        f"({lag['max_s']} s)"
    )
    print(f"sink exit code {r['sink_exit_code']}; logs and lake in {work}")


if __name__ == "__main__":
    main()
