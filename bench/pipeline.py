"""Parts 3-5: worker throughput end to end, latency under load, behaviour under overload."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    FramePublisher,
    MachineMeter,
    Servers,
    VerdictReader,
    VerdictSeen,
    camera_ids,
    make_plant,
    ms_percentiles,
    new_prefix,
    plant_dict,
    proc_cpu_s,
    write_config,
)
from inspector.bus.kafka import ensure_topics
from inspector.demo import rss_mb
from inspector.detect.worker import build_worker
from inspector.events import Detection, VerdictEvent
from inspector.inference.model import Detector, OnnxRuntimeDetector

E2E_CAMERAS = 4
CAMERA_FPS = 5.0  # paced cameras sample at this rate, as ingest does by default


class TimedDetector:
    """Wraps the detector the worker gets, to split its wall time into model and the rest."""

    def __init__(self, inner: Detector) -> None:
        self.inner = inner
        self.info = inner.info
        self.detect_s = 0.0
        self.images = 0

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        t0 = time.perf_counter()
        try:
            return self.inner.detect(images)
        finally:
            self.detect_s += time.perf_counter() - t0
            self.images += len(images)


# --------------------------------------------------------------------------- part 3


def part3_worker(
    srv: Servers,
    det: Detector,
    jpegs: list[bytes],
    n_frames: int,
    timeout_s: float = 300.0,
    pipeline: bool | None = None,
    inspection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """N frames pre-loaded into broker + Redis, one in-process worker drains them.

    Throughput = frames / (first batch handed to the worker → last offset commit, which
    the loop makes only after every verdict of the batch was acknowledged). With
    ``inspection`` every line runs that inspection mode (part 10's end-to-end cost).
    """
    cams = camera_ids(E2E_CAMERAS)
    data = plant_dict(
        srv,
        new_prefix("e2e"),
        cams,
        # Pre-loaded frames wait for the group join: nothing may be shed or stale.
        frames={"max_age_s": 3600},
        worker={"max_batch": 8, "max_wait_ms": 5, "shed_after_ms": 3_600_000}
        | ({} if pipeline is None else {"pipeline": pipeline}),
    )
    if inspection is not None:
        for line in data["lines"]:
            line["inspection"] = inspection
    cfg = make_plant(data)
    ensure_topics(cfg.kafka, cfg.topics)
    pub = FramePublisher(cfg, "e2e")
    for i in range(n_frames):
        pub.publish(cams[i % len(cams)], jpegs[i % len(jpegs)])
    pub.flush()

    timed = TimedDetector(det)
    session_s = [0.0]
    inner_infer = None
    if isinstance(det, OnnxRuntimeDetector):
        inner_infer = det.infer

        def infer(batch: np.ndarray) -> np.ndarray:
            t0 = time.perf_counter()
            try:
                assert inner_infer is not None
                return inner_infer(batch)
            finally:
                session_s[0] += time.perf_counter() - t0

        det.infer = infer  # type: ignore[method-assign]
    worker, loop = build_worker(cfg, detector=timed)
    marks: dict[str, float] = {}
    handle_s = [0.0]
    batches: list[int] = []
    verdicts: dict[str, int] = {}
    rules: dict[str, int] = {}
    done = threading.Event()
    inner_handle = loop.handle
    inner_commit = loop.after_commit
    inner_emit = worker.after_emit

    def handle(batch: list[Any]) -> None:
        t0 = time.perf_counter()
        marks.setdefault("first_batch", t0)
        try:
            inner_handle(batch)
        finally:
            handle_s[0] += time.perf_counter() - t0
            batches.append(len(batch))

    def after_commit() -> None:
        if inner_commit:
            inner_commit()
        marks["last_commit"] = time.perf_counter()
        if loop.stats.records >= n_frames:
            done.set()

    def after_emit(emitted: list[VerdictEvent]) -> None:
        for v in emitted:
            verdicts[v.verdict] = verdicts.get(v.verdict, 0) + 1
            if v.verdict == "FAULT":
                rules[v.rule or "?"] = rules.get(v.rule or "?", 0) + 1
        inner_emit(emitted)

    loop.handle = handle
    loop.after_commit = after_commit
    worker.after_emit = after_emit  # type: ignore[method-assign]
    meter = MachineMeter().start()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            loop.run()
        except BaseException as exc:
            errors.append(exc)
            done.set()

    th = threading.Thread(target=run, name="bench-worker", daemon=True)
    th.start()
    try:
        complete = done.wait(timeout_s)
    finally:
        loop.shutdown.request()
        th.join(30)
        vars(det).pop("infer", None)  # back to the class's own method
    machine = meter.stop()
    if errors:
        raise RuntimeError(f"worker failed: {errors[0]!r}")
    records = loop.stats.records
    threads = (
        det.session.get_session_options().intra_op_num_threads
        if isinstance(det, OnnxRuntimeDetector)
        else None
    )
    wall = marks.get("last_commit", 0.0) - marks.get("first_batch", 0.0)
    fps = records / wall if wall > 0 else 0.0
    loop_overhead = wall - handle_s[0]
    return {
        "what": f"{n_frames} sim 1280x720 q85 JPEGs pre-loaded (claim-check in Redis, "
        f"{E2E_CAMERAS} cameras, {cfg.topics.partitions} partitions), one worker in-process, "
        f"max_batch 8, model threads {threads}, pipeline {cfg.worker.pipeline}; "
        "first batch → last commit",
        "pipeline": cfg.worker.pipeline,
        "prepared_ahead": {"used": worker.ahead_used, "dropped": worker.ahead_dropped},
        "frames": n_frames,
        "processed": records,
        "complete": complete,
        "seconds": round(wall, 2),
        "fps": round(fps, 1),
        "mean_batch": round(float(np.mean(batches)), 2) if batches else None,
        "verdicts": verdicts,
        "faults_by_rule": rules,
        "time_split": {
            "session_run_s": round(session_s[0], 2),
            "detect_pre_post_s": round(timed.detect_s - session_s[0], 2),
            "handle_rest_s": round(handle_s[0] - timed.detect_s, 2),
            "loop_poll_flush_commit_s": round(loop_overhead, 2),
            "what": "session_run: ONNX Runtime; detect_pre_post: letterbox + NMS; "
            "handle_rest: Redis fetch, JPEG decode, vetting, rules, verdict JSON, evidence "
            "for FAILs, produce; loop: poll, waiting for acks, commit",
        },
        **machine,
    }


# --------------------------------------------------------------------------- parts 4 + 5


def pace(
    pub: FramePublisher,
    cams: list[str],
    jpegs: list[bytes],
    rate: float,
    seconds: float,
    stop: threading.Event | None = None,
) -> tuple[dict[str, float], int]:
    """Offer ``rate`` frames/s for ``seconds``, the cameras taking turns.

    Returns frame id → captured_at, and how many frames went out > 50 ms behind schedule
    (the publisher itself starved of CPU).
    """
    sent: dict[str, float] = {}
    t0 = time.monotonic()
    k = 0
    late = 0
    while True:
        due = t0 + k / rate
        if due - t0 >= seconds or (stop is not None and stop.is_set()):
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.05:
            late += 1
        fid = pub.publish(cams[k % len(cams)], jpegs[k % len(jpegs)])
        sent[fid] = pub.published[fid]
        k += 1
    pub.producer.flush(30)
    return sent, late


def latency_summary(seen: list[VerdictSeen], sent: int) -> dict[str, Any]:
    judged = [v for v in seen if v.verdict in ("PASS", "FAIL")]
    shed = [v for v in seen if v.rule == "fault:shed"]
    other = [v for v in seen if v.verdict == "FAULT" and v.rule != "fault:shed"]
    return {
        "sent": sent,
        "verdicts": len(seen),
        "judged": len(judged),
        "shed": len(shed),
        "other_faults": len(other),
        "capture_to_read_ms_judged": ms_percentiles([v.read_at - v.captured_at for v in judged]),
        "capture_to_emit_ms_judged": ms_percentiles([v.emitted_at - v.captured_at for v in judged]),
        "capture_to_read_ms_all": ms_percentiles([v.read_at - v.captured_at for v in seen]),
        "segments_p50_ms_judged": segments(judged),
    }


def segments(judged: list[VerdictSeen]) -> dict[str, float | None]:
    """Median of each leg of a judged frame's trip, from the verdict's own timings."""
    legs = {
        "publish (Redis SET + meta)": [v.ingested_at - v.captured_at for v in judged],
        "queue + fetch + decode/vet": [
            v.infer_start - v.ingested_at for v in judged if v.infer_start is not None
        ],
        "inference (batch)": [
            v.infer_end - v.infer_start
            for v in judged
            if v.infer_end is not None and v.infer_start is not None
        ],
        "rules + verdict": [v.emitted_at - v.infer_end for v in judged if v.infer_end is not None],
        "ack + read back": [v.read_at - v.emitted_at for v in judged],
    }
    return {k: ms_percentiles(x)["p50"] for k, x in legs.items()}


def broker_hop(cfg: Any, seconds: float = 5.0, rate: float = 20.0) -> dict[str, Any]:
    """produce → consume latency of one small record on this broker, the clients set up
    as the worker's (linger 1 ms, fetch.wait.max.ms as make_consumer): what each of the
    frame's two Kafka hops costs before any of our code runs."""
    from confluent_kafka import TopicPartition

    from inspector.bus.kafka import make_consumer, make_producer, poll_batch

    topic = cfg.topics.name("bench-hop")
    ensure_topics(cfg.kafka, cfg.topics, [topic])
    producer = make_producer(cfg.kafka, client_suffix="bench-hop", linger_ms=1.0)
    consumer = make_consumer(cfg.kafka, "bench-hop", client_suffix="bench-hop")
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    hops: list[tuple[int, float]] = []
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            for m in poll_batch(consumer, 100, 0.05):
                if m.error() is None and m.value():
                    k, sent = (m.value() or b"0 0").split()
                    hops.append((int(k), time.time() - float(sent)))

    th = threading.Thread(target=consume, name="bench-hop", daemon=True)
    th.start()
    try:
        warm = int(rate)  # the first second pays for connections and metadata
        n = warm + int(seconds * rate)
        t0 = time.monotonic()
        for k in range(n):
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            producer.produce(topic, value=f"{k} {time.time()!r}".encode(), key=b"hop")
            producer.poll(0)
        producer.flush(10)
        deadline = time.monotonic() + 10
        while len(hops) < n and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        th.join(5)
        consumer.close()
    return ms_percentiles([h for k, h in hops if k >= warm])


def start_worker_process(cfg_path: Path, log_dir: Path) -> Any:
    from inspector.demo import Child, wait_ready
    from inspector.localstack import free_port

    port = free_port()
    child = Child(
        "worker",
        [
            sys.executable,
            "-m",
            "inspector",
            "worker",
            "--config",
            str(cfg_path),
            "--metrics-port",
            str(port),
        ],
        {**os.environ, "INSPECTOR_INSTANCE_ID": "bench"},
        log_dir / "worker.log",
        port,
    ).start()
    try:
        wait_ready(child, 90)
    except Exception:
        child.stop()
        raise
    return child


def parts45_latency(
    srv: Servers,
    jpegs: list[bytes],
    capacity_fps: float,
    *,
    loads: tuple[float, ...],
    phase_s: float,
    overload: float | None,
    overload_s: float,
    shed_after_ms: float,
    log_dir: Path,
    echo: Any = print,
) -> dict[str, Any]:
    """One worker process (as a plant runs it); a paced publisher offers each load in turn."""
    top = max([*loads, overload or 0.0]) * capacity_fps
    cams = camera_ids(max(1, min(128, math.ceil(top / CAMERA_FPS))))
    data = plant_dict(
        srv,
        new_prefix("lat"),
        cams,
        worker={"max_batch": 8, "max_wait_ms": 5, "shed_after_ms": shed_after_ms},
    )
    cfg = make_plant(data)
    ensure_topics(cfg.kafka, cfg.topics)
    cfg_path = write_config(data, log_dir / "latency-plant.yaml")
    out: dict[str, Any] = {
        "what": f"one `inspector worker` process (max_batch 8, max_wait_ms 5, model "
        f"{cfg.model.path}, imgsz {cfg.model.imgsz}, threads = cores); a paced publisher "
        f"offers {', '.join(f'{x:.0%}' for x in loads)} of part 3's {capacity_fps:g} fps for "
        f"{phase_s:g} s each as 5 fps cameras taking turns; latency = verdict read back from "
        "the topic - captured_at (JPEG pre-encoded, ingest's grab + encode not included)",
        "shed_after_ms": shed_after_ms,
        "capacity_fps_used": capacity_fps,
    }
    out["broker_hop_ms"] = broker_hop(cfg)
    child = start_worker_process(cfg_path, log_dir)
    reader = VerdictReader(cfg).start()
    try:
        pub = FramePublisher(cfg, "lat")

        def phase(name: str, share: float, seconds: float) -> tuple[dict[str, float], float, int]:
            rate = share * capacity_fps
            n_cams = max(1, min(len(cams), round(rate / CAMERA_FPS)))
            echo(f"  {name}: offering {rate:.1f} frames/s as {n_cams} cameras for {seconds:g} s")
            t0 = time.time()
            sent, late = pace(pub, cams[:n_cams], jpegs, rate, seconds)
            return sent, t0, late

        # Warm-up: the first batches pay for ORT's arena and the verdict producer's connect.
        sent, _, _ = phase("warm-up", min(loads), 3.0)
        reader.wait_for(sent, 30)
        for share in loads:
            meter = MachineMeter().start()
            cpu0 = proc_cpu_s(child.proc.pid) or 0.0
            sent, t0, late = phase(f"{share:.0%} load", share, phase_s)
            offered_s = time.time() - t0
            complete = reader.wait_for(sent, 30)
            cpu1 = proc_cpu_s(child.proc.pid) or 0.0
            res = latency_summary(reader.of(sent), len(sent))
            res.update(
                {
                    "offered_fps": round(len(sent) / offered_s, 1),
                    "cameras": max(1, min(len(cams), round(share * capacity_fps / CAMERA_FPS))),
                    "seconds": round(offered_s, 1),
                    "complete": complete,
                    "late_sends": late,
                    "worker_cpu_cores": round((cpu1 - cpu0) / max(time.time() - t0, 1e-6), 2),
                    **meter.stop(),
                }
            )
            out[f"{round(share * 100)}%"] = res
        if overload:
            meter = MachineMeter().start()
            sent, t0, late = phase(f"overload {overload:g}x", overload, overload_s)
            t_end = time.time()
            complete = reader.wait_for(sent, 60)
            drained = time.time()
            seen = {f: reader.seen[f] for f in sent if f in reader.seen}
            res = latency_summary(list(seen.values()), len(sent))
            window = min(10.0, overload_s / 3)
            first = [v for v in seen.values() if v.captured_at - t0 < window]
            last = [v for v in seen.values() if v.captured_at >= t_end - window]
            res.update(
                {
                    "offered_fps": round(len(sent) / (t_end - t0), 1),
                    "seconds": round(t_end - t0, 1),
                    "complete": complete,
                    "drain_after_offer_s": round(
                        max(v.read_at for v in seen.values()) - t_end if seen else drained - t_end,
                        2,
                    ),
                    "first_window": {
                        "seconds": window,
                        **latency_summary(first, len(first)),
                    },
                    "last_window": {"seconds": window, **latency_summary(last, len(last))},
                    "judged_fps": round(res["judged"] / (t_end - t0), 1),
                    "late_sends": late,
                    **meter.stop(),
                }
            )
            out["overload"] = res
        assert child.proc is not None
        out["worker_rss_mb"] = rss_mb(child.proc.pid)
    finally:
        reader.close()
        code = child.stop()
        out["worker_exit_code"] = code
    return out
