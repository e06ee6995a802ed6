"""Helpers for the lake tests: a lake config, a varied verdict stream, table readers."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from inspector.bus.kafka import Shutdown, make_producer
from inspector.config import PlantConfig
from inspector.events import (
    Box,
    Finding,
    ModelRef,
    Timings,
    VerdictEvent,
    encode,
)
from inspector.lake.catalog import offsets_of, open_catalog, open_table
from inspector.lake.service import SinkService
from inspector.lake.tables import SPECS
from tests.act.support import LINES

MakeConfig = Callable[..., PlantConfig]
SEVERITY = {"scratch": "minor", "dent": "major", "crack": "critical"}
CAMS = {"cam-1": "line-1", "cam-2": "line-1", "cam-3": "line-2"}
DAY0 = 1_790_000_000.0  # 2026-09-21 14:13 UTC; the stream spans two days


def lake_config(
    make_config: MakeConfig, tmp_path: Path, protocol: str | None = None, **lake: Any
) -> PlantConfig:
    """INSPECTOR_TEST_LAKE_PROTOCOL=consumer runs every lake test on KIP-848 groups."""
    return make_config(
        lines=LINES,
        kafka={
            "session_timeout_ms": 2000,
            "heartbeat_interval_ms": 500,
            "group_protocol": protocol or os.environ.get("INSPECTOR_TEST_LAKE_PROTOCOL", "classic"),
        },
        lake={"data_dir": str(tmp_path / "lake"), "roll_s": 0.3, "port": 0, **lake},
    )


def stream(n: int, seed: int = 7) -> list[VerdictEvent]:
    """``n`` verdicts over two days and both lines: PASS/FAIL/FAULT, findings of several
    classes, two model versions, latencies of a few ms to a second."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        cam = rnd.choice(list(CAMS))
        kind = rnd.choices(["PASS", "FAIL", "FAULT"], [80, 15, 5])[0]
        findings = []
        rule = "pass"
        if kind == "FAIL":
            k = rnd.choice([1, 1, 1, 2, 3])
            classes = [rnd.choices(["scratch", "dent", "crack"], [6, 3, 1])[0] for _ in range(k)]
            findings = [
                Finding(
                    cls=c,
                    score=0.9,
                    box=Box(x1=1, y1=1, x2=5, y2=5),
                    severity=SEVERITY[c],  # type: ignore[arg-type]
                    rule=f"class:{c}",
                )
                for c in classes
            ]
            rule = f"class:{classes[0]}"
        elif kind == "FAULT":
            rule = rnd.choice(["fault:shed", "fault:uniform_image", "fault:undecodable"])
        t = DAY0 + i * (2 * 86400 / n)
        lat = rnd.uniform(0.005, 1.0)
        out.append(
            VerdictEvent(
                verdict_id=f"v-{seed}-{i}",
                frame_id=f"{cam}:run1:{i}",
                camera_id=cam,
                line_id=CAMS[cam],
                seq=i,
                verdict=kind,  # type: ignore[arg-type]
                rule=rule,
                findings=findings,
                model=ModelRef(name="defects", version=rnd.choice(["v1", "v2"]), sha256="0" * 64),
                timings=Timings(captured_at=t, ingested_at=t + 0.001, emitted_at=t + lat),
            )
        )
    return out


def send(cfg: PlantConfig, verdicts: list[VerdictEvent]) -> None:
    producer = make_producer(cfg.kafka, client_suffix="test-verdicts")
    for v in verdicts:
        value, headers = encode(v, source="inspector/test", time=v.timings.emitted_at)
        producer.produce(cfg.topics.verdicts, value=value, key=v.line_id.encode(), headers=headers)
        producer.poll(0)
    assert producer.flush(30) == 0


class Paced:
    """Sends verdicts in the background in small chunks, as a live plant would."""

    def __init__(self, cfg: PlantConfig, verdicts: list[VerdictEvent], per_s: float) -> None:
        self.cfg, self.verdicts, self.per_s = cfg, verdicts, per_s
        self.sent = 0
        self.thread = threading.Thread(target=self._run, name="paced", daemon=True)

    def _run(self) -> None:
        import time

        producer = make_producer(self.cfg.kafka, client_suffix="test-paced")
        chunk = max(1, int(self.per_s / 10))
        for i in range(0, len(self.verdicts), chunk):
            for v in self.verdicts[i : i + chunk]:
                value, headers = encode(v, source="inspector/test", time=v.timings.emitted_at)
                producer.produce(
                    self.cfg.topics.verdicts, value=value, key=v.line_id.encode(), headers=headers
                )
            producer.flush(10)
            self.sent = min(len(self.verdicts), i + chunk)
            time.sleep(0.1)  # pacing the source, not waiting for a condition
        assert producer.flush(30) == 0

    def __enter__(self) -> Paced:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(120)

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()


def verdict_table(cfg: PlantConfig) -> Any:
    return open_table(open_catalog(cfg.lake), cfg.lake.namespace, SPECS["verdicts"])


def table_offsets(cfg: PlantConfig) -> dict[int, int]:
    try:
        return offsets_of(verdict_table(cfg), cfg.topics.verdicts)
    except Exception:
        return {}


def rows(cfg: PlantConfig) -> pa.Table:
    return verdict_table(cfg).scan().to_arrow()


class RunningSink:
    """A sink service on a thread; stop() is the graceful SIGTERM path."""

    def __init__(self, cfg: PlantConfig, metrics_port: int = 0) -> None:
        self.shutdown = Shutdown()
        self.service = SinkService(cfg, self.shutdown, metrics_port=metrics_port)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="sink-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> RunningSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.shutdown.request()
        self.thread.join(30)
        assert not self.thread.is_alive(), "sink did not stop within 30 s"
        if self.error is not None:
            raise self.error


class SinkProcess:
    """``inspector sink --config …`` as a process of its own."""

    def __init__(self, config: Path, log: Path, metrics_port: int = 0) -> None:
        inspector = str(Path(sys.executable).parent / "inspector")
        self.log = log.open("ab")
        argv = [inspector, "sink", "--config", str(config), "--metrics-port", str(metrics_port)]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.log.close()
        return self.proc.returncode
