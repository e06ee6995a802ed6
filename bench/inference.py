"""Parts 1 and 2: the inference ceiling (raw ONNX Runtime) and the Ultralytics peer."""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import numpy as np

from bench.common import MachineMeter, cores, timed_calls
from inspector.detect.worker import decode_jpeg
from inspector.inference.model import Detector, OnnxRuntimeDetector, decode_scale, postprocess

BATCHES = (1, 8)


def decoded_frames(jpegs: list[bytes], imgsz: int) -> list[np.ndarray]:
    """The worker's view of the frames: JPEG decoded at reduced DCT scale."""
    out = []
    for j in jpegs:
        img = decode_jpeg(j, decode_scale(1280, 720, imgsz))
        if img is None:
            raise RuntimeError("a sim JPEG did not decode")
        out.append(img)
    return out


def per_frame_costs(det: OnnxRuntimeDetector, jpegs: list[bytes], seconds: float) -> dict[str, Any]:
    """What the worker pays per frame besides session.run, timed one stage at a time."""
    scale = decode_scale(1280, 720, det.info.imgsz)
    frames = decoded_frames(jpegs[:8], det.info.imgsz)
    i = 0

    def decode() -> None:
        nonlocal i
        decode_jpeg(jpegs[i % len(jpegs)], scale)
        i += 1

    n, el = timed_calls(decode, seconds / 3)
    decode_ms = el / n * 1000
    n, el = timed_calls(lambda: det.preprocess(frames), seconds / 3)
    pre_ms = el / n * 1000 / len(frames)
    x, _ = det.preprocess(frames)
    pred = det.infer(x)

    def post() -> None:
        for j in range(len(frames)):
            postprocess(pred[j], det.conf, det.iou)

    n, el = timed_calls(post, seconds / 3)
    post_ms = el / n * 1000 / len(frames)
    return {
        "jpeg_decode_ms": round(decode_ms, 2),
        "decode_scale": scale,
        "letterbox_ms": round(pre_ms, 2),
        "postprocess_nms_ms": round(post_ms, 2),
        "what": "per frame, single thread of Python; 1280x720 q85 sim JPEGs, batch 8 for "
        "letterbox and NMS",
    }


def part1_ceiling(det: Detector, jpegs: list[bytes], seconds: float) -> dict[str, Any]:
    """Raw ``session.run`` on the worker's input shape, then ``detect()`` (pre + run + NMS)."""
    if not isinstance(det, OnnxRuntimeDetector):
        raise RuntimeError("the ceiling is measured on the ONNX Runtime backend")
    meter = MachineMeter().start()
    frames = decoded_frames(jpegs, det.info.imgsz)
    opts = det.session.get_session_options()
    threads = opts.intra_op_num_threads
    raw: dict[str, Any] = {}
    full: dict[str, Any] = {}
    for b in BATCHES:
        x, _ = det.preprocess(frames[:b])
        n, el = timed_calls(partial(det.infer, x), seconds)
        raw[f"b{b}"] = {
            "input_shape": list(x.shape),
            "calls": n,
            "seconds": round(el, 2),
            "ms_per_call": round(el / n * 1000, 2),
            "ms_per_image": round(el / n / b * 1000, 2),
            "fps": round(n * b / el, 1),
        }
        imgs = frames[:b]
        n, el = timed_calls(partial(det.detect, imgs), seconds / 2)
        full[f"b{b}"] = {
            "calls": n,
            "seconds": round(el, 2),
            "ms_per_image": round(el / n / b * 1000, 2),
            "fps": round(n * b / el, 1),
        }
    return {
        "what": f"ONNX Runtime session.run on real sim frames letterboxed to "
        f"{raw['b1']['input_shape'][2]}x{raw['b1']['input_shape'][3]} (HxW), "
        f"intra-op threads {threads}, ≥{seconds:g} s per batch size after 3 warm-up runs",
        "model": det.info.name,
        "imgsz": det.info.imgsz,
        "threads": threads,
        "session_run": raw,
        "detect_call": full,
        "detect_call_what": "OnnxRuntimeDetector.detect(): letterbox + session.run + NMS, the "
        "worker's inference call",
        "per_frame_costs": per_frame_costs(det, jpegs, min(seconds, 3.0)),
        **meter.stop(),
    }


def part2_peer(model_dir: str, jpegs: list[bytes], seconds: float, imgsz: int) -> dict[str, Any]:
    """Ultralytics ``predict`` on the same decoded frames, its ONNX and its .pt, batch 1 and 8."""
    from inspector.inference.offline import default_config_dir, offline_ultralytics

    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS",)}
    meter = MachineMeter().start()
    try:
        offline_ultralytics(default_config_dir())
        import torch
        import ultralytics
        import ultralytics.utils.torch_utils as tu
        from ultralytics import YOLO

        n_threads = cores()
        # Ultralytics pins torch to cores-1 threads (1 here); give it what ONNX Runtime gets.
        tu.NUM_THREADS = n_threads
        torch.set_num_threads(n_threads)
        frames = decoded_frames(jpegs, imgsz)
        out: dict[str, Any] = {
            "what": f"Ultralytics {ultralytics.__version__} YOLO(path).predict(list of BGR "
            f"{frames[0].shape[1]}x{frames[0].shape[0]} frames, imgsz={imgsz}), torch threads "
            f"{n_threads}, ≥{seconds:g} s per batch size after 3 warm-up calls; includes "
            "Ultralytics' own letterbox and NMS",
            "threads": n_threads,
        }
        for fmt in ("onnx", "pt"):
            path = f"{model_dir}/model.{fmt}"
            model = YOLO(path, task="detect")
            res: dict[str, Any] = {}
            for b in BATCHES:
                call = partial(model.predict, frames[:b], imgsz=imgsz, verbose=False, device="cpu")
                n, el = timed_calls(call, seconds)
                res[f"b{b}"] = {
                    "calls": n,
                    "seconds": round(el, 2),
                    "ms_per_image": round(el / n / b * 1000, 2),
                    "fps": round(n * b / el, 1),
                }
            res["torch_threads_after"] = torch.get_num_threads()
            out[fmt] = res
        out.update(meter.stop())
        return out
    finally:
        # Ultralytics sets OMP_NUM_THREADS=1 on import; don't hand that to later children.
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
