"""``inspector ingest`` as a process, and ingest with Redis going away."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from inspector.config import PlantConfig
from inspector.localstack import ManagedProcess, free_port, start_redis
from inspector.sim import SimCameraFleet
from tests.helpers import wait_for
from tests.ingest.conftest import camera, collecting, running

pytestmark = pytest.mark.integration

CLI = [str(Path(sys.executable).parent / "inspector")]


def _write(cfg: PlantConfig, path: Path) -> Path:
    data = cfg.model_dump(mode="json", exclude_none=True)
    path.write_text(yaml.safe_dump(data))
    return path


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def test_unreachable_broker_is_one_line_and_exit_1(
    ingest_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    port = free_port()
    cfg = ingest_config(
        [camera("cam-a", "rtsp://127.0.0.1:9/x")],
        kafka={"bootstrap_servers": f"127.0.0.1:{port}"},
    )
    res = subprocess.run(
        [*CLI, "ingest", "--config", str(_write(cfg, tmp_path / "p.yaml"))],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 1
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [
        f"error: Kafka broker unreachable at 127.0.0.1:{port}: Connection refused "
        "(check kafka.bootstrap_servers or INSPECTOR__KAFKA__BOOTSTRAP_SERVERS)"
    ]


def test_process_serves_health_and_exits_0_on_sigterm(
    fleet: SimCameraFleet, ingest_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    cfg = ingest_config([camera("cam-a", fleet.url("cam-a"))])
    port = free_port()
    path = _write(cfg, tmp_path / "p.yaml")
    with collecting(cfg) as col:
        proc = subprocess.Popen(
            [*CLI, "ingest", "--config", str(path), "--metrics-port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: _get(f"{base}/readyz")[0] == 200, 20, "/readyz 200")
            body = _get(f"{base}/readyz")[1]
            assert b'"broker":true' in body and b'"redis":true' in body
            wait_for(lambda: len(col.frames("cam-a")) >= 3, 15, "frames from the process")
            metrics = _get(f"{base}/metrics")[1].decode()
            assert 'inspector_camera_up{camera="cam-a",line="line-1"} 1.0' in metrics
            assert _get(f"{base}/healthz")[0] == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()
        wait_for(lambda: any(e.state == "stopped" for e in col.statuses("cam-a")), 10,
                 "stopped status from the process")


def test_redis_down_drops_frames_with_a_reason_and_recovers(
    fleet: SimCameraFleet,
    ingest_config: Callable[..., PlantConfig],
    own_redis: ManagedProcess,
    tmp_path: Path,
) -> None:
    cfg = ingest_config(
        [camera("cam-b", fleet.url("cam-b"))],
        redis={"url": f"redis://127.0.0.1:{own_redis.port}/0", "socket_timeout_s": 0.5},
    )

    def drops() -> float:
        v = REGISTRY.get_sample_value(
            "inspector_frames_dropped_total", {"camera": "cam-b", "reason": "redis_unavailable"}
        )
        return v or 0.0

    before = drops()
    with running(cfg) as svc:
        reader = svc.readers[0]
        wait_for(lambda: reader.stats.frames_ingested >= 3, 15, "frames before the outage")
        own_redis.close()
        wait_for(lambda: drops() >= before + 3, 10, "counted drops while Redis is down")
        assert reader.state == "streaming" and reader.is_alive()
        ingested = reader.stats.frames_ingested
        again = start_redis(port=own_redis.port, log_dir=tmp_path)
        try:
            wait_for(lambda: reader.stats.frames_ingested >= ingested + 3, 10, "recovery")
        finally:
            again.close()
    assert reader.stats.drops["redis_unavailable"] == drops() - before


def test_broker_outage_buffers_then_drops_and_resumes(
    fleet: SimCameraFleet, ingest_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    from inspector.bus.kafka import ensure_topics
    from inspector.localstack import start_kafka

    broker = start_kafka(log_dir=tmp_path)
    try:
        cfg = ingest_config(
            [camera("cam-b", fleet.url("cam-b"))],
            kafka={"bootstrap_servers": f"127.0.0.1:{broker.port}"},
            ingest={"producer_buffer_frames": 5},
        )
        with running(cfg, triggers=False) as svc:
            reader = svc.readers[0]
            wait_for(lambda: reader.stats.frames_ingested >= 3, 15, "frames before the outage")
            broker.close()
            wait_for(lambda: reader.stats.drops.get("broker_backlog", 0) >= 3, 10,
                     "counted drops once the local buffer is full")
            assert svc.publisher is not None and svc.publisher.inflight <= 5
            assert reader.state == "streaming"
            ingested = reader.stats.frames_ingested
            broker = start_kafka(port=broker.port, log_dir=tmp_path)  # memory broker: empty
            ensure_topics(cfg.kafka, cfg.topics)
            wait_for(lambda: reader.stats.frames_ingested >= ingested + 5, 20, "resumed")
    finally:
        broker.close()
