"""Helpers for the lake tests: a lake config, varied verdict, part, stop-line and camera
status streams, table readers."""

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
    ActionEvent,
    Box,
    CameraState,
    CameraStatusEvent,
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
                    # a scratch is major now and then: the Pareto splits classes by severity
                    severity="major" if c == "scratch" and (i + j) % 4 == 0 else SEVERITY[c],
                    rule=f"class:{c}",
                )
                for j, c in enumerate(classes)
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
                verdict=kind,
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


def send_events(
    cfg: PlantConfig, table: str, events: list[ActionEvent | CameraStatusEvent]
) -> None:
    """Actions or camera status events to the topic the sink reads for ``table``."""
    producer = make_producer(cfg.kafka, client_suffix=f"test-{table}")
    topic = SPECS[table].topic(cfg.topics)
    for e in events:
        value, headers = encode(e, source="inspector/test", time=e.at)
        producer.produce(topic, value=value, key=e.line_id.encode(), headers=headers)
        producer.poll(0)
    assert producer.flush(30) == 0


# --------------------------------------------------------------------------- parts

PART_K = {"line-1": 1, "line-2": 2}  # failing frames that fail a part (any; 2-of-n)


def _part_frames(rnd: random.Random, line: str, part: str, t0: float, i: int) -> list[VerdictEvent]:
    """1-3 frames of one part (line-2 has one camera, so it sees a part twice or more),
    judged in an order that is not always the capture order, as on a busy worker pool;
    ``part_verdict`` counts failing frames in judging order, as detect does."""
    cams = [c for c, ln in CAMS.items() if ln == line]
    n = rnd.choice([1, 2, 2, 3])
    kinds = [rnd.choices(["PASS", "FAIL", "FAULT"], [70, 25, 5])[0] for _ in range(n)]
    order = rnd.sample(range(n), n) if rnd.random() < 0.3 else list(range(n))
    out, fails = [], 0
    for rank, j in enumerate(order):
        cam = cams[j % len(cams)]
        t = t0 + j * 0.4
        kind = kinds[j]
        fails += kind == "FAIL"
        judged = kind != "FAULT"
        findings = (
            [Finding(cls="dent", score=0.9, severity="major", rule="class:dent")]
            if kind == "FAIL"
            else []
        )
        out.append(
            VerdictEvent(
                verdict_id=f"pv-{i}-{j}",
                frame_id=f"{cam}:parts:{i}-{j}",
                camera_id=cam,
                line_id=line,
                seq=i * 10 + j,
                part_id=part,
                part_failed_frames=fails if judged else None,
                part_verdict=("FAIL" if fails >= PART_K[line] else "PASS") if judged else None,
                verdict=kind,
                rule={"PASS": "pass", "FAIL": "class:dent", "FAULT": "fault:shed"}[kind],
                findings=findings,
                model=ModelRef(name="defects", version=rnd.choice(["v1", "v2"]), sha256="0" * 64),
                timings=Timings(captured_at=t, ingested_at=t, emitted_at=t + 1.0 + rank),
            )
        )
    return out


def part_stream(n_parts: int, seed: int = 5) -> list[VerdictEvent]:
    """Parts over two days on both lines, each judged on 1-3 frames; a part id recurs on
    the other line (ids are per line); some frames carry no part id at all."""
    rnd = random.Random(seed)
    out: list[VerdictEvent] = []
    for i in range(n_parts):
        line = rnd.choice(list(PART_K))
        part = f"part-{i // 2}"  # part-7 on line-1 and on line-2 are two parts
        t0 = DAY0 + i * (2 * 86400 / n_parts)
        frames = _part_frames(rnd, line, part, t0, i)
        if rnd.random() < 0.05:
            frames = [
                f.model_copy(
                    update={"part_id": None, "part_verdict": None, "part_failed_frames": None}
                )
                for f in frames
            ]
        out += frames
    return out


# --------------------------------------------------------------------------- stops

Interval = tuple[float, float | None]  # began, resumed (None: still open)


def _stop_events(
    line: str, wf: str, ep: str, began: float, resumed: float | None
) -> list[ActionEvent]:
    """What act and ``inspector resume`` write for one episode, with the noise around it:
    the fired action twice (a redelivery), a cooldown suppression inside the episode."""
    common = {"workflow": wf, "line_id": line, "episode_id": ep}
    out = [
        ActionEvent(action_id=f"{ep}-a", kind="stop_line", outcome="fired", at=began, **common),
        ActionEvent(action_id=f"{ep}-a", kind="stop_line", outcome="fired", at=began, **common),
        ActionEvent(
            action_id=f"{ep}-b",
            kind="stop_line",
            outcome="suppressed_cooldown",
            at=began + 5,
            **common,
        ),
    ]
    if resumed is not None:
        out.append(
            ActionEvent(action_id=f"{ep}-r", kind="resume", outcome="fired", at=resumed, **common)
        )
    return out


def _noise(line: str, t: float, n: int) -> list[ActionEvent]:
    """A degraded (manual inspection) episode and its resume, and a divert: no stop."""
    ep = f"{line}-manual-{n}"
    kw: dict[str, Any] = {"workflow": "degraded", "line_id": line, "episode_id": ep}
    return [
        ActionEvent(action_id=f"{ep}-a", kind="degraded", outcome="fired", at=t, **kw),
        ActionEvent(action_id=f"{ep}-r", kind="resume", outcome="fired", at=t + 900, **kw),
        ActionEvent(
            action_id=f"{ep}-d",
            workflow="divert",
            kind="divert",
            outcome="fired",
            line_id=line,
            at=t + 1,
        ),
    ]


def stop_stream(seed: int = 3) -> tuple[list[ActionEvent], dict[str, list[Interval]]]:
    """Stop-line episodes of two workflows over two days on both lines (sometimes
    overlapping), the last of each line never resumed; → events and the episodes as
    generated."""
    rnd = random.Random(seed)
    events: list[ActionEvent] = []
    truth: dict[str, list[Interval]] = {}
    for line in ("line-1", "line-2"):
        t, eps = DAY0, []
        for n in range(12):
            wf = rnd.choice(["stop-scratch", "stop-faults"])
            began = t + rnd.uniform(600, 4 * 3600)
            resumed = None if n == 11 else began + rnd.uniform(60, 2 * 3600)
            eps.append((wf, f"{line}-ep-{n}", began, resumed))
            if resumed is not None and rnd.random() < 0.3:  # the other workflow, meanwhile
                other = "stop-faults" if wf == "stop-scratch" else "stop-scratch"
                b2 = began + rnd.uniform(0, resumed - began)
                eps.append((other, f"{line}-ep-{n}b", b2, resumed + rnd.uniform(-30, 600)))
            t = resumed or began
            events += _noise(line, began - 300, n)
        for wf, ep, began, resumed in eps:
            events += _stop_events(line, wf, ep, began, resumed)
        truth[line] = [(b, r) for _, _, b, r in eps]
    events.sort(key=lambda e: e.at)
    return events, truth


# --------------------------------------------------------------------------- cameras


def _run(
    rnd: random.Random, cam: str, run: str, t: float, crash: bool
) -> tuple[list[CameraStatusEvent], float]:
    """One ingest run of a camera: connecting, streaming with stalls and reconnects, then
    stopped (or nothing, when the process is killed)."""
    path: list[tuple[CameraState, float]] = [("connecting", rnd.uniform(1, 10))]
    for _ in range(rnd.randint(1, 4)):
        path.append(("streaming", rnd.uniform(600, 6 * 3600)))
        if rnd.random() < 0.5:
            path += [("stalled", rnd.uniform(5, 120))]
        else:
            path += [("backing_off", rnd.uniform(1, 60)), ("connecting", rnd.uniform(1, 10))]
    path.append(("streaming", rnd.uniform(600, 3600)))
    if not crash:
        path.append(("stopped", 0.0))
    out, prev = [], None
    for n, (state, lasts) in enumerate(path):
        out.append(
            CameraStatusEvent(
                camera_id=cam,
                line_id=CAMS[cam],
                run_id=run,
                transition=n,
                state=state,
                previous=prev,
                at=t,
            )
        )
        prev, t = state, t + lasts
    return out, t


def camera_stream(seed: int = 9) -> list[CameraStatusEvent]:
    """Runs of every camera from an hour before DAY0 to past two days: stalls,
    reconnects, stopped between runs, now and then a run killed without a stopped."""
    rnd = random.Random(seed)
    events: list[CameraStatusEvent] = []
    for cam in CAMS:
        t, n = DAY0 - 3600, 0
        while t < DAY0 + 2 * 86400:
            run, t = _run(rnd, cam, f"{cam}-run-{n}", t, crash=rnd.random() < 0.2)
            events += run
            t += rnd.uniform(60, 3 * 3600)  # ingest is down (stopped) until the next run
            n += 1
    events.sort(key=lambda e: e.at)
    return events


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


def offsets(cfg: PlantConfig, table: str) -> int:
    """How many records of ``table``'s topic the table holds (0 before the first commit)."""
    spec = SPECS[table]
    try:
        got = offsets_of(
            open_table(open_catalog(cfg.lake), cfg.lake.namespace, spec), spec.topic(cfg.topics)
        )
    except Exception:
        return 0
    return sum(got.values())


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
