"""``inspector ingest`` as a process, and ingest with Redis going away."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from prometheus_client import REGISTRY

from inspector.bus.kafka import make_consumer
from inspector.config import PlantConfig
from inspector.events import FrameMeta, decode_frame
from inspector.localstack import (
    KafkaBroker,
    ManagedProcess,
    broker_choice,
    free_port,
    start_apache_kafka,
    start_redis,
)
from inspector.sim import SimCameraFleet
from tests.helpers import create_topics, wait_for
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
        capture_output=True,
        text=True,
        timeout=60,
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
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
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
        wait_for(
            lambda: any(e.state == "stopped" for e in col.statuses("cam-a")),
            10,
            "stopped status from the process",
        )


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


def own_kafka(tmp_path: Path) -> KafkaBroker:
    """A broker of the test's own, to kill: Apache Kafka (Tansu cannot restart on its log)."""
    if broker_choice() != "kafka":
        pytest.skip("needs Apache Kafka (a broker that restarts on its own log directory)")
    return start_apache_kafka(log_dir=tmp_path)


def frames_on_topic(cfg: PlantConfig, want: int, timeout_s: float = 30) -> list[FrameMeta]:
    """Every frame record in log order per partition (assign from the beginning)."""
    c = make_consumer(cfg.kafka, f"check-{uuid.uuid4().hex[:8]}", client_suffix="check")
    c.assign(
        [
            TopicPartition(cfg.topics.frames, p, OFFSET_BEGINNING)
            for p in range(cfg.topics.partitions)
        ]
    )
    out: list[FrameMeta] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < want and time.monotonic() < deadline:
            for m in c.consume(200, 0.2):
                if m.error() is None:
                    out.append(decode_frame(m.value(), m.headers())[0])
    finally:
        c.close()
    return out


# Drops that happen after a frame got its sequence number (so leave a hole in it).
AFTER_SEQ = (
    "queue_full",
    "broker_backlog",
    "redaction_failed",
    "oversized",
    "redis_unavailable",
    "producer_queue_full",
    "produce_error",
    "delivery_timeout",
    "delivery_failed",
)


def test_broker_sigkill_and_restart_loses_duplicates_and_reorders_no_frame(
    fleet: SimCameraFleet, ingest_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    """Idempotent frames producers: the broker SIGKILLed mid-stream and restarted on its
    log directory; every acknowledged frame is on the topic once, in camera order."""
    broker = own_kafka(tmp_path)
    try:
        cfg = ingest_config(
            [camera("cam-a", fleet.url("cam-a")), camera("cam-b", fleet.url("cam-b"))],
            kafka={"bootstrap_servers": broker.bootstrap},
            ingest={"producer_buffer_frames": 500},
            frames={"max_age_s": 120},
        )
        create_topics(cfg)
        with running(cfg, triggers=False) as svc:
            assert svc.publisher is not None
            pub = svc.publisher

            def ingested() -> int:
                return sum(r.stats.frames_ingested for r in svc.readers)

            wait_for(lambda: ingested() >= 10, 30, "frames before the crash")
            broker.kill()
            wait_for(lambda: pub.inflight >= 10, 20, "frames held while the broker is dead")
            held = ingested()
            broker.start()
            restarted = time.monotonic()
            wait_for(lambda: ingested() > held, 60, "the first frame delivered after restart")
            recovered_s = time.monotonic() - restarted
            wait_for(lambda: ingested() >= held + 30, 60, "frames flowing again")
        print(f"ingest delivered again {recovered_s:.2f} s after the broker was ready")
        per_cam = {r.camera.id: r.stats for r in svc.readers}
        frames = frames_on_topic(cfg, sum(st.frames_ingested for st in per_cam.values()))
        for cam, st in per_cam.items():
            seqs = [f.seq for f in frames if f.camera_id == cam]
            assert len(seqs) == st.frames_ingested, f"{cam}: acknowledged frames missing"
            assert seqs == sorted(set(seqs)), f"{cam}: a frame duplicated or out of order"
            holes = (seqs[-1] - seqs[0] + 1) - len(seqs)
            # every missing sequence number is a drop ingest counted (one after the last
            # frame on the topic is no hole, hence <=)
            counted = sum(st.drops.get(r, 0) for r in AFTER_SEQ)
            assert holes <= counted, f"{cam}: {holes} frames missing, drops {st.drops}"
            assert not {"delivery_timeout", "delivery_failed"} & set(st.drops), st.drops
    finally:
        broker.close()


def test_broker_outage_buffers_then_drops_and_resumes(
    fleet: SimCameraFleet, ingest_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    broker = own_kafka(tmp_path)
    try:
        cfg = ingest_config(
            [camera("cam-b", fleet.url("cam-b"))],
            kafka={"bootstrap_servers": broker.bootstrap},
            ingest={"producer_buffer_frames": 5},
        )
        create_topics(cfg)
        with running(cfg, triggers=False) as svc:
            reader = svc.readers[0]
            wait_for(lambda: reader.stats.frames_ingested >= 3, 15, "frames before the outage")
            broker.stop()
            wait_for(
                lambda: reader.stats.drops.get("broker_backlog", 0) >= 3,
                10,
                "counted drops once the local buffer is full",
            )
            assert svc.publisher is not None and svc.publisher.inflight <= 5
            assert reader.state == "streaming"
            ingested = reader.stats.frames_ingested
            broker.start()
            wait_for(lambda: reader.stats.frames_ingested >= ingested + 5, 30, "resumed")
    finally:
        broker.close()


def test_frame_over_the_brokers_own_limit_is_a_counted_drop_not_a_stuck_producer(
    fleet: SimCameraFleet,
    ingest_config: Callable[..., PlantConfig],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The frames topic allows less than the client does: the broker refuses each inline
    frame (MSG_SIZE_TOO_LARGE); ingest counts them as `oversized`, says why in one line,
    keeps streaming, and delivers again once the topic's limit is raised."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    from inspector.bus.kafka import client_config

    cfg = ingest_config(
        [camera("cam-a", fleet.url("cam-a"))],
        frames={"transport": "inline"},
    )
    create_topics(cfg)
    admin = AdminClient(client_config(cfg.kafka, "test-admin"))

    def topic_limit(n: int) -> None:
        res = ConfigResource(
            ConfigResource.Type.TOPIC,
            cfg.topics.frames,
            incremental_configs=[
                ConfigEntry(
                    "max.message.bytes", str(n), incremental_operation=AlterConfigOpType.SET
                )
            ],
        )
        for fut in admin.incremental_alter_configs([res]).values():
            fut.result(30)

    topic_limit(4096)  # far below a 640x360 JPEG
    with (
        caplog.at_level(logging.WARNING, logger="inspector.ingest.publisher"),
        running(cfg, triggers=False) as svc,
    ):
        assert svc.publisher is not None
        reader = svc.readers[0]
        wait_for(
            lambda: reader.stats.drops.get("oversized", 0) >= 5,
            30,
            "frames refused by the broker, counted as oversized",
        )
        assert reader.stats.frames_ingested == 0 and reader.state == "streaming"
        assert svc.publisher.inflight <= 2, "refused frames must not pile up in the producer"
        topic_limit(cfg.kafka.message_max_bytes)
        wait_for(lambda: reader.stats.frames_ingested >= 5, 30, "frames delivered again")
    lines = [r.getMessage() for r in caplog.records if "refused by the broker" in r.getMessage()]
    assert lines and "max.message.bytes" in lines[0]
    assert len(lines) <= 2, "one line per camera every 10 s, not one per frame"
