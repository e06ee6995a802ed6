"""``inspector evaluate``: the shipped model + a line's rules on a held-out simulated run.

Frames go through the same path as on the line (JPEG q85 → reduced decode →
detector → rules), without Kafka, so the figures describe the model and the rules,
not the transport. Scoring definitions are in ``inspector.sim.score``.
"""

from __future__ import annotations

import time
from typing import Any

import cv2

from inspector.config import LineRules, ModelSettings
from inspector.detect.model import load_detector
from inspector.detect.rules import CompiledRules
from inspector.detect.worker import decode_jpeg, decode_scale, scale_detections
from inspector.sim.framecode import decode_frame_index
from inspector.sim.scene import ConveyorScene, SceneConfig
from inspector.sim.score import JudgedFrame, score


def evaluate(
    model: ModelSettings,
    rules: LineRules,
    *,
    seeds: tuple[int, ...] = (9001, 9002),
    seconds: float = 60.0,
    sample_fps: float = 3.0,
    width: int = 1280,
    height: int = 720,
    defect_rate: float = 0.3,
    jpeg_quality: int = 85,
) -> dict[str, Any]:
    det = load_detector(model)
    compiled = CompiledRules(rules)
    frames: list[JudgedFrame] = []
    clips = {}
    t0 = time.time()
    for seed in seeds:
        cfg = SceneConfig(
            seed=seed, width=width, height=height, defect_rate=defect_rate, clip_seconds=seconds
        )
        scene = ConveyorScene(cfg)
        cam = f"eval-{seed}"
        clips[cam] = scene.clip_truth()
        step = max(1, round(cfg.fps / sample_fps))
        for i in range(0, scene.config.n_frames, step):
            img, _ = scene.render(i)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            assert ok
            s = decode_scale(width, height, det.info.imgsz)
            small = decode_jpeg(buf.tobytes(), s)
            assert small is not None
            dets = scale_detections(det.detect([small])[0], s)
            j = compiled.judge(dets, width, height)
            code = decode_frame_index(img)
            frames.append(
                JudgedFrame(
                    camera_id=cam,
                    frame_index=-1 if code is None else code,
                    captured_at=i / cfg.fps,
                    verdict=j.verdict,
                    finding_boxes=tuple(
                        None if f.box is None else (f.box.x1, f.box.y1, f.box.x2, f.box.y2)
                        for f in j.findings
                    ),
                )
            )
    k = rules.part_aggregation.k if rules.part_aggregation.mode == "k_of_n" else 1
    result = score(frames, clips, k=k).as_dict()
    result.update(
        {
            "seeds": list(seeds),
            "seconds_per_seed": seconds,
            "sample_fps": sample_fps,
            "resolution": f"{width}x{height}",
            "defect_rate": defect_rate,
            "frames": len(frames),
            "elapsed_s": round(time.time() - t0, 1),
        }
    )
    return result
