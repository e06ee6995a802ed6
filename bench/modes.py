"""Part 10: what each inspection mode costs per frame (issue 13's 2x budget).

One process, the worker's own path for a batch of 8 frames: JPEG decode at the scale the
mode needs (reduced for ``frame``, full for ``parts`` and ``tiles``), then the line's
detector (``detect.regions``). Frames are the simulated line's at the demo's defect
rate, so the number of parts per frame is the demo's. ONNX Runtime on every core.
"""

from __future__ import annotations

from typing import Any

from bench.common import timed_calls
from inspector.config import InspectionSettings, ModelSettings
from inspector.detect.regions import RegionDetector, load_region_detector
from inspector.detect.worker import decode_jpeg
from inspector.inference.model import Detector, input_scale, load_detector

BATCH = 8


def part10_modes(jpegs: list[bytes], seconds: float, parts: InspectionSettings) -> dict[str, Any]:
    """``parts`` is the demo line's inspection (the shipped default); ``parts_full`` the
    same with the locator at the frame model's own size and 320 px crops (the first
    parts design), ``tiles`` the sliced alternative on the same region model."""
    model = ModelSettings(device="cpu", backend="onnxruntime", conf=0.1)
    frame = load_detector(model)
    variants = {
        "frame": parts.model_copy(update={"mode": "frame"}),
        "parts": parts,
        "parts_full": parts.model_copy(update={"locate_size": None, "crop_size": 320}),
        "tiles": parts.model_copy(update={"mode": "tiles", "crop_size": 320}),
    }
    out: dict[str, Any] = {
        "batch": BATCH,
        "region_model": parts.region_model,
        "parts_settings": {
            "locate_size": parts.locate_size or model.imgsz,
            "crop_size": parts.crop_size,
        },
    }
    for name, st in variants.items():
        out[name] = _measure(load_region_detector(frame, model, st), jpegs, seconds)
    base = out["frame"]["ms_per_frame"]
    for name in variants:
        out[name]["cost_vs_frame"] = round(out[name]["ms_per_frame"] / base, 2)
    out["what"] = (
        f"per frame, decode + detect, batches of {BATCH} simulated 1280x720 q85 frames "
        "(demo defect rate), one process, ONNX Runtime on every core"
    )
    return out


def _measure(det: Detector, jpegs: list[bytes], seconds: float) -> dict[str, Any]:
    scale = input_scale(det, 1280, 720)
    k = 0

    def batch() -> None:
        nonlocal k
        imgs = []
        for _ in range(BATCH):
            img = decode_jpeg(jpegs[k % len(jpegs)], scale)
            assert img is not None
            imgs.append(img)
            k += 1
        det.detect(imgs)

    n, el = timed_calls(batch, seconds, warmup=2)
    frames = n * BATCH
    regions = 0
    if isinstance(det, RegionDetector):  # regions per frame over the unique frames, untimed
        for start in range(0, len(jpegs), BATCH):
            det.detect([decode_jpeg(j, scale) for j in jpegs[start : start + BATCH]])  # type: ignore[misc]
            regions += det.last_regions
    return {
        "ms_per_frame": round(el / frames * 1000, 2),
        "fps": round(frames / el, 1),
        "decode_scale": scale,
        "regions_per_frame": round(regions / len(jpegs), 2) if regions else None,
    }


def part10_worker_e2e(
    srv: Any, jpegs: list[bytes], n_frames: int, parts: InspectionSettings
) -> dict[str, Any]:
    """The same cost through the whole worker (part 3's drain: Kafka, Redis claim-check,
    decode, detect, rules, verdicts produced and committed), frame vs the demo's parts
    settings, one after the other on the same servers."""
    from bench.pipeline import part3_worker

    out: dict[str, Any] = {}
    for name, st in (("frame", None), ("parts", parts.model_dump(mode="json"))):
        det = load_detector(ModelSettings(device="cpu", backend="onnxruntime"))
        r = part3_worker(srv, det, jpegs, n_frames, inspection=st)
        out[name] = {k: r[k] for k in ("fps", "frames", "processed", "complete", "seconds")}
    f, p = out["frame"]["fps"], out["parts"]["fps"]
    out["cost_vs_frame"] = round(f / p, 2) if f and p else None
    out["what"] = (
        f"{n_frames} frames drained by one in-process worker per mode (part 3's drain), "
        "cost per frame = frame fps / parts fps"
    )
    return out
