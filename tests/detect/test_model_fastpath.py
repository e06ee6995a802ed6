"""The fused pre/post-processing of OnnxRuntimeDetector gives exactly what the plain numpy
implementation it replaced (kept here as the reference) gave, on mixed batches of 8."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from inspector.config import ModelSettings
from inspector.detect.worker import decode_jpeg
from inspector.events import Box, Detection
from inspector.inference.model import (
    F32,
    MAX_DET,
    MAX_NMS,
    MAX_WH,
    U8,
    Letterbox,
    OnnxRuntimeDetector,
    decode_scale,
    load_detector,
)
from inspector.sim import ConveyorScene, SceneConfig

pytestmark = pytest.mark.model

# ---------------------------------------------------------------- the previous implementation


def ref_preprocess(det: OnnxRuntimeDetector, images: list[U8]) -> tuple[F32, list[Letterbox]]:
    plans = [det.plan(im.shape[0], im.shape[1]) for im in images]
    stacked = np.stack([p.apply(im) for p, im in zip(plans, images, strict=True)])
    x = stacked[..., ::-1].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32) / 255.0, plans


def ref_nms(boxes: F32, scores: F32, iou_thres: float) -> npt.NDArray[np.intp]:
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(x1[i], x1[rest])
        yy1 = np.maximum(y1[i], y1[rest])
        xx2 = np.minimum(x2[i], x2[rest])
        yy2 = np.minimum(y2[i], y2[rest])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        iou = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[iou <= iou_thres]
    return np.asarray(keep, dtype=np.intp)


def ref_postprocess(pred: F32, conf: float, iou: float) -> tuple[F32, F32, npt.NDArray[np.intp]]:
    best = pred[4:].max(0)
    cand = best > conf
    if not cand.any():
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.intp)
    p = pred[:, cand]
    xywh = p[:4].T
    boxes = np.empty_like(xywh)
    boxes[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
    boxes[:, 2:] = xywh[:, :2] + xywh[:, 2:] / 2
    cls = p[4:].argmax(0)
    scores = p[4:].max(0)
    if scores.size > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        boxes, scores, cls = boxes[top], scores[top], cls[top]
    keep = ref_nms(boxes + (cls[:, None] * MAX_WH).astype(np.float32), scores, iou)[:MAX_DET]
    return boxes[keep], scores[keep], cls[keep]


def ref_detect(det: OnnxRuntimeDetector, images: list[U8]) -> list[list[Detection]]:
    out: list[list[Detection]] = [[] for _ in images]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault((im.shape[0], im.shape[1]), []).append(i)
    for idx in groups.values():
        x, plans = ref_preprocess(det, [images[i] for i in idx])
        pred = det.infer(x)
        for j, i in enumerate(idx):
            boxes, scores, cls = ref_postprocess(pred[j], det.conf, det.iou)
            h, w = images[i].shape[:2]
            boxes = plans[j].unmap(boxes, h, w)
            out[i] = [
                Detection(
                    cls=det.info.names.get(int(c), str(int(c))),
                    score=round(float(s), 5),
                    box=Box(
                        x1=round(float(b[0]), 2),
                        y1=round(float(b[1]), 2),
                        x2=round(float(b[2]), 2),
                        y2=round(float(b[3]), 2),
                    ),
                )
                for b, s, c in zip(boxes, scores, cls, strict=True)
            ]
    return out


# ---------------------------------------------------------------- frames and tests


def sim_frames(n: int, seed: int) -> list[U8]:
    """Sim line frames as the worker sees them: 1280x720 JPEG decoded at reduced scale."""
    scene = ConveyorScene(SceneConfig(seed=seed, defect_rate=0.6, clip_seconds=20))
    out = []
    for i in range(n):
        img, _ = scene.render(i * 7)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
        small = decode_jpeg(buf.tobytes(), decode_scale(1280, 720, 320))
        assert ok and small is not None
        out.append(small)
    return out


def mixed_batch() -> list[U8]:
    """Eight frames: the worker's 320x180 (no resize, top/bottom pad), full 720p (resize),
    portrait (left/right pad) and 4:3, interleaved so groups are not contiguous."""
    f = sim_frames(6, seed=21)
    rng = np.random.default_rng(3)
    return [
        f[0],
        np.ascontiguousarray(cv2.resize(f[1], (1280, 720))),
        f[2],
        np.ascontiguousarray(cv2.rotate(f[3], cv2.ROTATE_90_CLOCKWISE)),
        f[4],
        np.ascontiguousarray(cv2.resize(f[5], (640, 480))),
        rng.integers(0, 256, (180, 320, 3), dtype=np.uint8),
        np.ascontiguousarray(cv2.resize(f[0], (1280, 720))),
    ]


@pytest.mark.parametrize(("h", "w"), [(180, 320), (720, 1280), (320, 180), (480, 640), (600, 500)])
def test_preprocess_bit_identical(h: int, w: int) -> None:
    det = load_detector(ModelSettings(device="cpu", threads=1))
    assert isinstance(det, OnnxRuntimeDetector)
    rng = np.random.default_rng(h * w)
    imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(8)]
    x, plans = det.preprocess(imgs)
    ref, ref_plans = ref_preprocess(det, imgs)
    assert plans == ref_plans
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert x.shape == ref.shape
    assert np.array_equal(x, ref)
    # a fresh array per call: callers (quantize's calibration) keep several
    y, _ = det.preprocess(imgs[:8])
    assert not np.shares_memory(x, y)


@pytest.mark.parametrize("conf", [0.25, 0.0001])
def test_detect_identical_to_previous_implementation(conf: float) -> None:
    """conf 0.0001 puts dozens of candidates a frame through NMS, not just the demo's handful."""
    det = load_detector(ModelSettings(device="cpu", threads=1, conf=conf))
    assert isinstance(det, OnnxRuntimeDetector)
    images = mixed_batch()
    ours = det.detect(images)
    theirs = ref_detect(det, images)
    assert ours == theirs
    assert sum(len(d) for d in ours) > 0, "nothing detected: the comparison proves little"
    if conf < 0.01:
        cands = det.infer(det.preprocess(images[:1])[0])[0][4:].max(0)
        assert (cands > conf).sum() > 50
