"""Part 8: what the model lifecycle costs the worker (hot swap and shadow).

Three drains of the same pre-loaded frames by one in-process worker, on the same
machine and servers: the worker alone (baseline); the worker with a hot swap staged
when a third of the frames are judged (the candidate is loaded and checked on the
follower's side, as in production, while the worker runs); the worker with a shadow
consumer judging a share of the same frames beside it (both share the CPU, as they
would on one node). Throughput = frames / (first batch → last commit).
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from statistics import median
from typing import Any

from bench.common import FramePublisher, Servers, camera_ids, make_plant, new_prefix, plant_dict
from inspector.bus.kafka import ensure_topics
from inspector.detect.follow import check_candidate
from inspector.detect.worker import build_worker
from inspector.inference.model import Detector, load_detector

CAMERAS = 8


def _candidate_path() -> Path:
    """The shipped model with changed metadata: a distinct version that behaves alike."""
    import onnx

    from inspector.inference.model import BUILTIN_DIR

    m = onnx.load(str(BUILTIN_DIR / "defects-v1" / "model.onnx"))
    p = m.metadata_props.add()
    p.key, p.value = "inspector_variant", "bench"
    out = Path(tempfile.mkdtemp(prefix="bench-candidate-")) / "model.onnx"
    onnx.save(m, str(out))
    return out


def _drain(
    srv: Servers,
    det: Detector,
    jpegs: list[bytes],
    n: int,
    *,
    swap_to: Path | None = None,
    shadow_share: float | None = None,
) -> dict[str, Any]:
    cams = camera_ids(CAMERAS)
    prefix = new_prefix("life")
    data = plant_dict(
        srv,
        prefix,
        cams,
        frames={"max_age_s": 3600},
        worker={"max_batch": 8, "max_wait_ms": 5, "shed_after_ms": 3_600_000},
        learn={"shadow": {"share": shadow_share or 0.25, "group_id": f"{prefix}-shadow"}},
    )
    cfg = make_plant(data)
    ensure_topics(cfg.kafka, cfg.topics)
    pub = FramePublisher(cfg, "life")
    for i in range(n):
        pub.publish(cams[i % len(cams)], jpegs[i % len(jpegs)])
    pub.flush()

    worker, loop = build_worker(cfg, detector=det)
    batch_s: list[tuple[float, float]] = []  # (start, seconds)
    marks: dict[str, float] = {}
    inner = loop.handle

    def handle(batch: list[Any]) -> None:
        t0 = time.perf_counter()
        marks.setdefault("first", t0)
        try:
            inner(batch)
        finally:
            batch_s.append((t0, time.perf_counter() - t0))

    loop.handle = handle
    out: dict[str, Any] = {}
    threads = [threading.Thread(target=loop.run, daemon=True)]
    shadow_loop = None
    if shadow_share is not None:
        from inspector.learn.shadow import build_shadow

        sdet = load_detector(cfg.model.model_copy(update={"path": str(_candidate_path())}))
        judge, shadow_loop = build_shadow(cfg, sdet)
        threads.append(threading.Thread(target=shadow_loop.run, daemon=True))
    for t in threads:
        t.start()
    swap_mark: float | None = None
    try:
        if swap_to is not None:
            while loop.stats.records < n // 3:
                time.sleep(0.01)
            t0 = time.perf_counter()
            cand = load_detector(cfg.model.model_copy(update={"path": str(swap_to)}))
            t1 = time.perf_counter()
            check_candidate(worker.detector, cand, set(), worker.references.get())
            t2 = time.perf_counter()
            worker.stage_model(cand, None)
            swap_mark = time.perf_counter()
            out["candidate_load_s"] = round(t1 - t0, 3)
            out["candidate_check_s"] = round(t2 - t1, 3)
        deadline = time.monotonic() + 300
        while loop.stats.records < n and time.monotonic() < deadline:
            time.sleep(0.01)
        end = time.perf_counter()
        if shadow_loop is not None:
            out["shadow_judged"] = judge.stats.judged
    finally:
        loop.shutdown.request()
        if shadow_loop is not None:
            shadow_loop.shutdown.request()
        for t in threads:
            t.join(30)
    out["frames"] = loop.stats.records
    out["fps"] = round(n / (end - marks["first"]), 1)
    times = [s for _t, s in batch_s]
    out["batch_ms_median"] = round(1000 * median(times), 1)
    if swap_mark is not None:
        after = [s for t, s in batch_s if t >= swap_mark]
        out["first_batch_after_swap_ms"] = round(1000 * after[0], 1) if after else None
        out["swapped_to"] = worker.model_ref.sha256[:12]
    return out


def part8_lifecycle(srv: Servers, jpegs: list[bytes], n: int) -> dict[str, Any]:
    det = load_detector(
        make_plant(plant_dict(srv, "x", camera_ids(1))).model.model_copy(update={"device": "cpu"})
    )
    _drain(srv, det, jpegs, max(40, n // 4))  # warm-up: the first drain pays for caches
    base = _drain(srv, det, jpegs, n)
    swap = _drain(srv, det, jpegs, n, swap_to=_candidate_path())
    shadow = _drain(srv, det, jpegs, n, shadow_share=0.25)
    return {
        "what": f"{n} pre-loaded frames from {CAMERAS} cameras, one in-process worker, "
        "three drains after a warm-up one: alone, with a hot swap staged at a third, "
        "with a shadow at 25 % (same CPU); one run each, so compare the ratios of one run",
        "baseline": base,
        "hot_swap": swap,
        "shadow_25pct": shadow,
        "swap_fps_ratio": round(swap["fps"] / base["fps"], 3),
        "shadow_fps_ratio": round(shadow["fps"] / base["fps"], 3),
    }
