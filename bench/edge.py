"""What the edge profile costs and how fast it heals: ``python -m bench.edge``.

Starts Apache Kafka and redis-server, ``--cameras`` simulated 1280x720 RTSP cameras
sampled at ``--sample-fps``, then one ``inspector edge`` process (ingest, one worker,
act) and measures: seconds from its start until its ``/readyz`` is 200; verdicts/s
over ``--seconds`` of steady running against the frames offered; each child's RSS; a
SIGKILLed worker: seconds until the supervisor's new worker is ready, and until
verdicts flow again. Printed; a measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import new_prefix, plant_dict, servers, write_config
from inspector.bus.kafka import ensure_topics
from inspector.config import parse_config
from inspector.localstack import free_port


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _children(pid: int) -> dict[str, int]:
    out = subprocess.run(
        ["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    found = {}
    for line in out.splitlines():
        child, args = line.strip().split(" ", 1)
        for stage in ("ingest", "worker", "act"):
            if f"inspector {stage} " in args:
                found[stage] = int(child)
    return found


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _until(cond: Any, timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"timed out after {timeout_s} s: {what}")
        time.sleep(0.1)  # sampling
    return time.monotonic() - t0


class VerdictCount:
    """End offsets of the verdicts topic: how many verdicts were produced so far."""

    def __init__(self, cfg: Any) -> None:
        from confluent_kafka import Consumer

        self.topic = cfg.topics.verdicts
        self.c = Consumer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": "x"})

    def __call__(self) -> int:
        from confluent_kafka import TopicPartition

        md = self.c.list_topics(self.topic, timeout=5).topics[self.topic]
        total = 0
        for p in md.partitions:
            _, high = self.c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=5)
            total += max(high, 0)
        return total


def run(cameras: int, sample_fps: float, seconds: float) -> dict[str, Any]:
    from inspector.sim import SceneConfig, SimCameraFleet

    work = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    ids = [f"cam-{i + 1}" for i in range(cameras)]
    fleet = SimCameraFleet(
        {c: SceneConfig(seed=40 + i, clip_seconds=10, defect_rate=0.3) for i, c in enumerate(ids)}
    )
    fleet.start()
    out: dict[str, Any] = {"cameras": cameras, "sample_fps": sample_fps}
    try:
        with servers(work / "logs") as srv:
            ports = {k: free_port() for k in ("edge", "ingest", "worker", "act")}
            data = plant_dict(
                srv,
                new_prefix("edge"),
                ids,
                urls={c: fleet.url(c) for c in ids},
                sample_fps=sample_fps,
                observe={
                    "ingest_port": ports["ingest"],
                    "worker_port": ports["worker"],
                    "act_port": ports["act"],
                },
                edge={"port": ports["edge"], "restart_backoff_s": 0.5},
            )
            cfg = parse_config(data, "bench", env={})
            ensure_topics(cfg.kafka, cfg.topics)
            path = write_config(data, work / "plant.yaml")
            count = VerdictCount(cfg)
            t0 = time.monotonic()
            argv = [sys.executable, "-m", "inspector", "edge", "--config", str(path)]
            edge = subprocess.Popen(
                [*argv, "--log-dir", str(work / "children")],
                stdout=(work / "edge.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            try:
                out["ready_s"] = round(_until(lambda: _ready(ports["edge"]), 180, "ready"), 1)
                _until(lambda: count() > 0, 60, "a first verdict")
                n0, s0 = count(), time.monotonic()
                time.sleep(seconds)  # steady running: the window measured
                n1, s1 = count(), time.monotonic()
                out["verdicts_per_s"] = round((n1 - n0) / (s1 - s0), 2)
                out["offered_fps"] = cameras * sample_fps
                kids = _children(edge.pid)
                out["rss_mb"] = {k: round(_rss_mb(p), 1) for k, p in kids.items()}
                out["rss_mb"]["edge"] = round(_rss_mb(edge.pid), 1)
                out["rss_total_mb"] = round(sum(out["rss_mb"].values()), 1)
                os.kill(kids["worker"], signal.SIGKILL)
                killed = time.monotonic()
                _until(lambda: not _ready(ports["edge"]), 30, "the kill seen")
                _until(lambda: _ready(ports["edge"]), 180, "ready again")
                out["worker_back_ready_s"] = round(time.monotonic() - killed, 1)
                n2 = count()
                _until(lambda: count() > n2, 120, "verdicts again")
                out["verdicts_again_s"] = round(time.monotonic() - killed, 1)
            finally:
                count.c.close()
                edge.send_signal(signal.SIGTERM)
                out["exit_code"] = edge.wait(60)
                out["stop_s"] = round(time.monotonic() - t0, 1)
    finally:
        fleet.close()
    out["logs"] = str(work)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--sample-fps", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args(argv)
    r = run(args.cameras, args.sample_fps, args.seconds)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"ready {r['ready_s']} s after start")
    print(
        f"verdicts {r['verdicts_per_s']}/s for {r['offered_fps']:g} frames/s offered "
        f"({r['cameras']} cameras x {r['sample_fps']:g} fps, 1280x720)"
    )
    print(f"RSS MB {r['rss_mb']} total {r['rss_total_mb']}")
    print(
        f"worker SIGKILLed: group ready again after {r['worker_back_ready_s']} s, "
        f"verdicts again after {r['verdicts_again_s']} s"
    )
    print(f"edge exit code {r['exit_code']} on SIGTERM; logs in {r['logs']}")


if __name__ == "__main__":
    main()
