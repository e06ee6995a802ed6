"""Shared pieces of the benchmark: servers, sim frames, plant configs, publisher, reader."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

from inspector.bus.kafka import poll_batch
from inspector.config import PlantConfig, parse_config
from inspector.localstack import EmbeddedBroker, ManagedProcess, start_kafka, start_redis

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
WIDTH, HEIGHT = 1280, 720
JPEG_QUALITY = 85
SOURCE = "bench/ingest"


def cores() -> int:
    return os.cpu_count() or 1


# --------------------------------------------------------------------------- CPU accounting


def _proc_stat_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        parts = [float(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0.0)  # idle + iowait
    total = sum(parts[:8])
    return total - idle, total


@dataclass
class MachineMeter:
    """How busy all cores were between start() and stop(): other engineers' work included.

    A figure measured while the machine was already busy with someone else's job is
    depressed; this number says how much.
    """

    busy0: float = 0.0
    total0: float = 0.0
    load0: float = 0.0
    result: dict[str, float] = field(default_factory=dict)

    def start(self) -> MachineMeter:
        self.busy0, self.total0 = _proc_stat_busy()
        self.load0 = os.getloadavg()[0]
        return self

    def stop(self) -> dict[str, float]:
        busy, total = _proc_stat_busy()
        frac = (busy - self.busy0) / max(total - self.total0, 1.0)
        self.result = {
            "machine_busy": round(frac, 3),
            "loadavg_1m_start": round(self.load0, 2),
            "loadavg_1m_end": round(os.getloadavg()[0], 2),
        }
        return self.result


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of one process, in seconds (None once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces; the fields after its closing parenthesis do not.
    fields = text[text.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def ms_percentiles(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50": None, "p95": None, "p99": None, "max": None, "n": 0}
    a = np.asarray(seconds) * 1000.0
    out: dict[str, float | None] = {
        f"p{q}": round(float(np.percentile(a, q)), 1) for q in (50, 95, 99)
    }
    out["max"] = round(float(a.max()), 1)
    out["n"] = len(seconds)
    return out


def timed_calls(fn: Callable[[], object], seconds: float, warmup: int = 3) -> tuple[int, float]:
    """Call ``fn`` ``warmup`` times untimed, then for at least ``seconds``; (calls, elapsed)."""
    for _ in range(warmup):
        fn()
    n = 0
    t0 = time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n, elapsed


# --------------------------------------------------------------------------- servers


@dataclass
class Servers:
    kafka: EmbeddedBroker
    redis: ManagedProcess

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"


@contextmanager
def servers(log_dir: Path) -> Iterator[Servers]:
    log_dir.mkdir(parents=True, exist_ok=True)
    kafka = start_kafka(log_dir=log_dir)
    try:
        redis_srv = start_redis(log_dir=log_dir)
        try:
            yield Servers(kafka, redis_srv)
        finally:
            redis_srv.close()
    finally:
        kafka.close()


# --------------------------------------------------------------------------- configs


def demo_rules() -> dict[str, Any]:
    """The demo plant's line rules: the worker pays for FAIL evidence as it would there."""
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    rules: dict[str, Any] = data["lines"][0]["rules"]
    return rules


def camera_ids(n: int) -> list[str]:
    return [f"cam-{i + 1}" for i in range(n)]


def plant_dict(
    srv: Servers,
    prefix: str,
    cameras: list[str],
    *,
    urls: dict[str, str] | None = None,
    sample_fps: float = 5.0,
    partitions: int = 4,
    **over: Any,
) -> dict[str, Any]:
    """A plant on the bench's servers: cameras split over lines of at most 32."""
    rules = demo_rules()
    lines = []
    for li, start in enumerate(range(0, len(cameras), 32)):
        lines.append(
            {
                "id": f"line-{li + 1}",
                "cameras": [
                    {
                        "id": c,
                        "url": (urls or {}).get(c, f"rtsp://127.0.0.1:1/{c}"),
                        "width": WIDTH,
                        "height": HEIGHT,
                        "sample_fps": sample_fps,
                    }
                    for c in cameras[start : start + 32]
                ],
                "rules": rules,
            }
        )
    data: dict[str, Any] = {
        "plant": f"bench-{prefix}",
        # The embedded broker holds a JoinGroup for half the session timeout.
        "kafka": {
            "bootstrap_servers": srv.bootstrap,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        },
        "topics": {"prefix": prefix, "partitions": partitions},
        "redis": {"url": srv.redis_url, "key_prefix": prefix},
        "lines": lines,
        "models": {"default": {"path": "builtin:defects-v1", "device": "cpu", "imgsz": 320}},
        "observe": {"log_format": "json"},
    }
    for k, v in over.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    return data


def make_plant(data: dict[str, Any]) -> PlantConfig:
    return parse_config(data, "bench", env={})


def line_of(cfg: PlantConfig) -> dict[str, str]:
    return {c.id: ln.id for ln in cfg.lines for c in ln.cameras}


def write_config(data: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def new_prefix(tag: str) -> str:
    return f"bench-{tag}-{uuid.uuid4().hex[:6]}"


# --------------------------------------------------------------------------- frames


def sim_jpegs(n_unique: int, seed: int = 2026) -> list[bytes]:
    """``n_unique`` distinct 1280x720 q85 JPEGs of the simulated line (two scenes).

    Frames are spread over the clips so parts, defects and empty belt all appear, as a
    camera sampling at 5 fps would see them.
    """
    import cv2

    from inspector.sim import ConveyorScene, SceneConfig

    scenes = [
        ConveyorScene(SceneConfig(seed=seed + s, width=WIDTH, height=HEIGHT, defect_rate=0.3))
        for s in range(2)
    ]
    out = []
    for i in range(n_unique):
        scene = scenes[i % 2]
        idx = (i // 2) * 3  # 15 fps clip, every third frame = 5 fps sampling
        img, _ = scene.render(idx)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("JPEG encode failed")
        out.append(buf.tobytes())
    return out


class FramePublisher:
    """Publishes frames the way ingest does: JPEG claim-check in Redis, FrameMeta on Kafka.

    The JPEGs are encoded beforehand, so ``captured_at`` is the moment a frame is handed
    to Redis; ingest's own grab and encode (~4 ms) are not in the latency figures.
    """

    def __init__(self, cfg: PlantConfig, tag: str) -> None:
        from inspector.bus.kafka import make_producer
        from inspector.bus.store import FrameStore, connect

        self.cfg = cfg
        self.store = FrameStore(connect(cfg.redis), cfg.redis.key_prefix, cfg.frames.claim_ttl_s)
        # As ingest's frames producer: not idempotent, short linger.
        not_idempotent: dict[str, Any] = {"enable.idempotence": False}
        self.producer = make_producer(
            cfg.kafka, client_suffix="bench-ingest", linger_ms=5, **not_idempotent
        )
        self.run_id = f"{tag}-{uuid.uuid4().hex[:6]}"
        self.lines = line_of(cfg)
        self.seq: dict[str, int] = {}
        self.published: dict[str, float] = {}  # frame_id → captured_at

    def publish(self, camera: str, jpeg: bytes) -> str:
        from inspector.events import FrameMeta, encode_frame

        seq = self.seq.get(camera, 0)
        self.seq[camera] = seq + 1
        frame_id = f"{camera}:{self.run_id}:{seq}"
        captured = time.time()
        key = self.store.put(frame_id, jpeg)
        meta = FrameMeta(
            frame_id=frame_id,
            camera_id=camera,
            line_id=self.lines[camera],
            run_id=self.run_id,
            seq=seq,
            captured_at=captured,
            ingested_at=time.time(),
            width=WIDTH,
            height=HEIGHT,
            storage="redis",
            claim_key=key,
            size_bytes=len(jpeg),
        )
        value, headers = encode_frame(meta, None, source=SOURCE)
        self.producer.produce(
            self.cfg.topics.frames, value=value, key=camera.encode(), headers=headers
        )
        self.producer.poll(0)
        self.published[frame_id] = captured
        return frame_id

    def flush(self) -> None:
        left = self.producer.flush(30)
        if left:
            raise RuntimeError(f"{left} frames not acknowledged by the broker")


@dataclass
class VerdictSeen:
    read_at: float
    captured_at: float
    emitted_at: float
    verdict: str
    rule: str | None
    ingested_at: float
    infer_start: float | None
    infer_end: float | None


class VerdictReader:
    """Reads the verdicts topic from the start on its own thread; keeps when each arrived."""

    def __init__(self, cfg: PlantConfig) -> None:
        from confluent_kafka import TopicPartition

        from inspector.bus.kafka import make_consumer

        topic = cfg.topics.verdicts
        # A short fetch wait so reading back adds as little as possible to the latency.
        short_wait: dict[str, Any] = {"fetch.wait.max.ms": 5}
        self.consumer = make_consumer(
            cfg.kafka,
            f"bench-reader-{uuid.uuid4().hex[:8]}",
            client_suffix="bench-reader",
            **short_wait,
        )
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        self.seen: dict[str, VerdictSeen] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-verdicts", daemon=True)

    def start(self) -> VerdictReader:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self.stop_event.is_set():
                for m in poll_batch(self.consumer, 500, 0.05):
                    if m.error() is not None:
                        continue
                    now = time.time()
                    d = orjson.loads(m.value() or b"{}")
                    t = d.get("timings", {})
                    seen = VerdictSeen(
                        now,
                        t["captured_at"],
                        t["emitted_at"],
                        d["verdict"],
                        d.get("rule"),
                        t["ingested_at"],
                        t.get("infer_start"),
                        t.get("infer_end"),
                    )
                    with self.lock:
                        self.seen.setdefault(d["frame_id"], seen)
        finally:
            self.consumer.close()

    def count(self, frame_ids: dict[str, float]) -> int:
        with self.lock:
            return sum(1 for f in frame_ids if f in self.seen)

    def wait_for(self, frame_ids: dict[str, float], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.count(frame_ids) >= len(frame_ids):
                return True
            time.sleep(0.05)
        return False

    def of(self, frame_ids: dict[str, float]) -> list[VerdictSeen]:
        with self.lock:
            return [self.seen[f] for f in frame_ids if f in self.seen]

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
