"""Issue 12: a worker SIGKILL under a steady frame stream costs <= 2 s of unjudged frames
and never stops a line.

Real ``inspector worker`` processes (two members of a KIP-848 group, 1.5 s session) on
the session's Apache Kafka and redis-server, act with the demo's kind of FAULT rules
(tightened: 3 consecutive FAULTs), and a publisher that plays 4 cameras at 3 fps like
the demo. One worker is SIGKILLed once both hold partitions and verdicts flow.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from confluent_kafka.admin import AdminClient

from inspector.bus.kafka import client_config
from inspector.config import PlantConfig
from inspector.events import LineCommand, VerdictEvent, decode
from inspector.faults import is_inspection_fault
from inspector.localstack import ManagedProcess, broker_choice, free_port
from tests.act.support import Collector, RunningAct
from tests.detect.conftest import FramePublisher, H, W, detect_config, frame_mode_rules
from tests.helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.slow]

CAMERAS = ["cam-1", "cam-2", "cam-3", "cam-4"]
FPS = 3.0  # per camera, as in the demo
LATE_S = 1.0  # judged later than the worker's own shed limit: not judged in time
TARGET_S = 2.0


class Stream:
    """4 cameras x 3 fps, camera i on partition i (so both workers get frames)."""

    def __init__(self, cfg: PlantConfig, frames: list[np.ndarray]) -> None:
        self.pub = FramePublisher(cfg)
        self.frames = frames
        self.published: dict[str, tuple[str, int, float]] = {}  # frame id → camera, seq, t
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stream", daemon=True)

    def _run(self) -> None:
        period = 1.0 / (FPS * len(CAMERAS))
        n = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            cam = CAMERAS[n % len(CAMERAS)]
            meta = self.pub.publish(
                cam, self.frames[n % len(self.frames)], partition=CAMERAS.index(cam)
            )
            self.pub.producer.poll(0)  # serve delivery reports as a live publisher does
            self.published[meta.frame_id] = (cam, meta.seq, meta.captured_at)
            n += 1
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))  # pacing the source
        self.pub.flush()

    def __enter__(self) -> Stream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def assignment(cfg: PlantConfig) -> dict[str, set[int]]:
    """client id → frames partitions, as the group coordinator has it."""
    admin = AdminClient(client_config(cfg.kafka, "test-admin"))
    group = cfg.worker.group_id
    try:
        desc = admin.describe_consumer_groups([group])[group].result(10)
    except Exception:
        return {}
    return {
        m.client_id: {
            tp.partition for tp in m.assignment.topic_partitions if tp.topic == cfg.topics.frames
        }
        for m in desc.members
    }


def write(cfg: PlantConfig, path: Path, client_id: str) -> Path:
    data = cfg.model_dump(mode="json", exclude_none=True)
    data["kafka"]["client_id"] = client_id
    path.write_text(yaml.safe_dump(data))
    return path


def longest_unjudged_run(frames: list[tuple[int, bool]]) -> int:
    """Longest run of consecutive frames (by seq) that were not judged in time."""
    best = run = 0
    for _, bad in sorted(frames):
        run = run + 1 if bad else 0
        best = max(best, run)
    return best


@pytest.mark.skipif(broker_choice() == "tansu", reason="KIP-848 groups need Apache Kafka 4")
def test_worker_sigkill_costs_at_most_two_seconds_and_never_stops_the_line(
    make_config: Callable[..., PlantConfig], sim_frames: list[np.ndarray], tmp_path: Path
) -> None:
    rules = frame_mode_rules()
    cfg = detect_config(
        make_config,
        lines=[
            {
                "id": "line-1",
                "rules": rules,
                "cameras": [
                    {
                        "id": c,
                        "url": f"rtsp://127.0.0.1:1/{c}",
                        "width": W,
                        "height": H,
                        "sample_fps": FPS,
                    }
                    for c in CAMERAS
                ],
            }
        ],
        kafka={
            "group_protocol": "consumer",
            "session_timeout_ms": 1500,
            "heartbeat_interval_ms": 500,
        },
        topics={"partitions": 4},
        # the demo's limits: shed after 1 s, stale after 10 s
        worker={"max_batch": 8, "max_wait_ms": 5, "shed_after_ms": 1000},
        frames={"max_age_s": 10},
        workflows=[
            # the rule that stopped lines: now 3 consecutive FAULTs would do it
            {
                "kind": "stop_line",
                "name": "stop-on-burst",
                "filter": {"verdicts": ["FAIL"]},
                "fail_count": 100000,
                "window_s": 1,
                "consecutive_faults": 3,
            },
            {"kind": "degraded", "name": "manual-inspection", "fault_count": 15, "window_s": 10},
        ],
    )
    cli = [sys.executable, "-m", "inspector", "worker"]
    workers = {}
    for name in ("w1", "w2"):
        port = free_port()
        path = write(cfg, tmp_path / f"{name}.yaml", name)
        workers[name] = ManagedProcess(
            name,
            [*cli, "-c", str(path), "--metrics-port", str(port)],
            "127.0.0.1",
            port,
            tmp_path / f"{name}.log",
        )
    col = Collector(cfg, [cfg.topics.verdicts, cfg.topics.line_commands])
    verdicts: dict[str, list[VerdictEvent]] = defaultdict(list)

    def pump() -> None:
        col.pump()
        for m in col.messages[cfg.topics.verdicts][sum(map(len, verdicts.values())) :]:
            v = decode(m.value(), m.headers(), VerdictEvent)
            verdicts[v.frame_id].append(v)

    def judged_after(t: float, cams: list[str]) -> bool:
        pump()
        got = {
            vs[0].camera_id
            for vs in verdicts.values()
            if vs[0].timings.captured_at > t and vs[0].verdict != "FAULT"
        }
        return set(cams) <= got

    try:
        with RunningAct(cfg):
            env = {**os.environ, "YOLO_OFFLINE": "1"}
            for name, proc in workers.items():
                proc.start(timeout_s=90, env={**env, "INSPECTOR_INSTANCE_ID": name})
            wait_for(
                lambda: (
                    {k: bool(v) for k, v in assignment(cfg).items()}
                    == {"w1-detect": True, "w2-detect": True}
                ),
                60,
                "both workers to hold frames partitions",
            )
            with Stream(cfg, sim_frames) as stream:
                t_start = time.time()
                wait_for(
                    lambda: judged_after(t_start + 2.0, CAMERAS),
                    60,
                    "verdicts of every camera flowing",
                )
                held = assignment(cfg)["w1-detect"]
                t_kill = time.time()
                workers["w1"].signal(signal.SIGKILL)
                dead = [c for c in CAMERAS if CAMERAS.index(c) in held]
                wait_for(
                    lambda: judged_after(t_kill + 4.0, CAMERAS),
                    30,
                    "the survivor to judge every camera again",
                )
                assert assignment(cfg) == {"w2-detect": set(range(4))}
            published = dict(stream.published)

            def pumped_all() -> bool:
                pump()
                return published.keys() <= verdicts.keys()

            wait_for(
                pumped_all,
                30,
                "a verdict for every published frame",
            )
        col.drain(0.5)
        pump()
    finally:
        for proc in workers.values():
            proc.close()
        col.close()

    # every frame exactly one verdict (a redelivered frame's is the same, stored first)
    assert verdicts.keys() == published.keys()
    for fid, vs in verdicts.items():
        assert len({(v.verdict_id, v.verdict, v.rule) for v in vs}) == 1, fid

    runs: dict[str, float] = {}
    for cam in CAMERAS:
        frames = []
        for fid, (c, seq, _) in published.items():
            if c != cam:
                continue
            v = verdicts[fid][0]
            late = v.timings.emitted_at - v.timings.captured_at > LATE_S
            frames.append((seq, is_inspection_fault(v.verdict, v.rule) or late))
        runs[cam] = longest_unjudged_run(frames) / FPS
    faults = sorted({vs[0].rule for vs in verdicts.values() if vs[0].verdict == "FAULT"})
    waited = max(vs[0].timings.emitted_at - vs[0].timings.captured_at for vs in verdicts.values())
    print(
        f"\nworker SIGKILL (load average {os.getloadavg()[0]:.1f}): dead member's cameras "
        f"{dead}; longest run not judged in time "
        f"per camera {runs} s; longest wait for a verdict {waited:.2f} s; FAULT rules {faults}"
    )
    assert dead, "w1 held no partition at the kill"
    # What the kill cost is the dead member's cameras' run beyond what the survivor's own
    # cameras saw in the same run: those were never without an owner, so any run of
    # theirs is CPU starvation (other jobs on this 2-core machine, the survivor taking
    # on twice the load), which hits every camera alike. On a quiet machine it is 0 and
    # this is the absolute target; with the old 6 s classic session the cost is ~7 s.
    overload = max(runs[c] for c in CAMERAS if c not in dead)
    cost = max(runs[c] for c in dead) - overload
    assert cost <= TARGET_S, (
        f"the SIGKILL left frames unjudged for {cost:.2f} s beyond the "
        f"{overload:.2f} s the survivor's own cameras saw: {runs}"
    )
    commands = col.payloads(cfg.topics.line_commands, LineCommand)
    assert [c for c in commands if c.command == "stop"] == []
