"""The broker down for 30 s under a running plant (RTSP → ingest → worker → act).

Real everything on the test's own Apache Kafka, which is SIGKILLed and restarted on
its log directory: ingest keeps a bounded buffer and counts what it drops, the worker
and act pause and resume without loss, nothing crashes; the recovery time is printed.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inspector.bus.kafka import Shutdown
from inspector.config import PlantConfig
from inspector.events import LineCommand, VerdictEvent, decode, decode_frame
from inspector.localstack import broker_choice, free_port, start_apache_kafka
from inspector.observe.feed import group_lag
from tests.detect.conftest import demo_plant, frame_mode_rules
from tests.helpers import create_topics, read, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.slow]

OUTAGE_S = 30.0
BUFFER = 20


def metric(port: int, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_broker_down_30s_under_a_running_plant(
    make_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    from inspector.act.service import run_act
    from inspector.detect.worker import run_worker
    from inspector.ingest.service import run_ingest
    from inspector.sim import SceneConfig, SimCameraFleet

    if broker_choice() != "kafka":
        pytest.skip("needs Apache Kafka (a broker that restarts on its own log directory)")
    broker = start_apache_kafka(log_dir=tmp_path)
    try:
        fleet = SimCameraFleet(
            {"cam-1": SceneConfig(seed=41, width=640, height=360, clip_seconds=10, defect_rate=0.7)}
        )
        fleet.start()
        cfg = make_config(
            kafka={
                "bootstrap_servers": broker.bootstrap,
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
            },
            lines=[
                {
                    "id": "line-1",
                    "cameras": [
                        {
                            "id": "cam-1",
                            "url": fleet.url("cam-1"),
                            "sample_fps": 5,
                            "width": 640,
                            "height": 360,
                        }
                    ],
                    "rules": frame_mode_rules(),
                }
            ],
            models=demo_plant()["models"],
            workflows=[
                {
                    "kind": "divert",
                    "name": "gate",
                    "debounce_s": 0,
                    "filter": {"verdicts": ["FAIL"]},
                }
            ],
            ingest={"producer_buffer_frames": BUFFER},
        )
        create_topics(cfg)
        port = free_port()  # one registry in this process: every stage's metrics on it
        stops = [Shutdown() for _ in range(3)]
        errors: list[BaseException] = []

        def guarded(fn: Callable[..., Any], *args: Any, **kw: Any) -> Callable[[], None]:
            def run() -> None:
                try:
                    fn(*args, **kw)
                except BaseException as exc:  # a crash is what this test looks for
                    errors.append(exc)

            return run

        threads = [
            threading.Thread(target=guarded(run_ingest, cfg, stops[0], metrics_port=port)),
            threading.Thread(target=guarded(run_worker, cfg, metrics_port=0, shutdown=stops[1])),
            threading.Thread(target=guarded(run_act, cfg, stops[2], metrics_port=0)),
        ]
        # One registry per process, and earlier in-process tests moved it: count from here.
        from tests.test_pipeline import registry_total

        judged_at_start = registry_total("inspector_verdicts_total")
        for t in threads:
            t.start()

        def verdicts() -> float:
            try:
                return metric(port, "inspector_verdicts_total")
            except OSError:
                return 0.0

        try:
            wait_for(lambda: verdicts() >= judged_at_start + 5, 120, "the first verdicts")
            backlog = metric(port, "inspector_frames_dropped_total", reason="broker_backlog")
            broker.kill()
            down_at = time.monotonic()
            # The outage itself: watch that nothing dies while it lasts.
            while time.monotonic() - down_at < OUTAGE_S:
                assert all(t.is_alive() for t in threads) and not errors, errors
                time.sleep(0.5)  # the outage's length is the scenario, not a wait for a result
            dropped = metric(port, "inspector_frames_dropped_total", reason="broker_backlog")
            assert dropped > backlog, "ingest should count drops once its buffer is full"
            judged_before = verdicts()
            t0 = time.monotonic()
            broker.start()
            up_at = time.monotonic()
            wait_for(lambda: verdicts() > judged_before, 90, "verdicts after the restart")
            recovered_s = time.monotonic() - up_at
            print(
                f"\nbroker down {OUTAGE_S:.0f} s, restarted in {up_at - t0:.1f} s (log "
                f"recovery included): verdicts again {recovered_s:.1f} s after the "
                f"broker was ready; ingest dropped {dropped - backlog:.0f} frames beyond its "
                f"{BUFFER}-frame buffer"
            )
            ingested = metric(port, "inspector_frames_ingested_total")
            wait_for(
                lambda: metric(port, "inspector_frames_ingested_total") >= ingested + 10,
                60,
                "frames flowing again",
            )
            stops[0].request()  # stop the source, then let the worker and act catch up
            threads[0].join(30)

            def caught_up(group: str, topic: str) -> bool:
                return all(n == 0 for n in group_lag(cfg, group, topic, timeout_s=5).values())

            wait_for(
                lambda: caught_up(cfg.worker.group_id, cfg.topics.frames),
                90,
                "the worker to judge every frame",
            )
            wait_for(
                lambda: caught_up(cfg.act.group_id, cfg.topics.verdicts),
                60,
                "act to read every verdict",
            )
            assert all(t.is_alive() for t in threads[1:]) and not errors, errors
        finally:
            for s in stops:
                s.request()
            for t in threads:
                t.join(30)
            fleet.close()
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors

        frames = {
            decode_frame(m.value(), m.headers())[0].frame_id
            for m in read(cfg, [cfg.topics.frames], timeout_s=30, quiet_s=2)
        }
        judged = [
            decode(m.value(), m.headers(), VerdictEvent)
            for m in read(cfg, [cfg.topics.verdicts], timeout_s=30, quiet_s=2)
        ]
        assert {v.frame_id for v in judged} == frames, "a frame on the topic got no verdict"
        by_frame = Counter(v.frame_id for v in judged)
        assert len({v.verdict_id for v in judged}) == len(frames), by_frame.most_common(3)
        fails = {v.verdict_id for v in judged if v.verdict == "FAIL"}
        diverted = {
            decode(m.value(), m.headers(), LineCommand).verdict_id
            for m in read(cfg, [cfg.topics.line_commands], timeout_s=20, quiet_s=2)
        }
        assert diverted == fails, "act lost or invented a divert across the outage"
    finally:
        broker.close()
