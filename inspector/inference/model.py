"""Model loading and inference behind one interface, whatever the backend.

- ``onnxruntime`` (default on CPU): our own letterbox + NMS in numpy, written to match
  Ultralytics' pre- and post-processing so detections equal ``YOLO(model).predict``.
- ``ultralytics``: the Ultralytics runtime for ``.pt`` (PyTorch; CUDA when present),
  exported ONNX or OpenVINO directories.

Class names always come from the model's own metadata, never from config.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from inspector.config import BUILTIN_MODELS, ModelSettings, builtin_model_file
from inspector.events import Box, Detection, ModelRef

log = logging.getLogger(__name__)

BUILTIN_DIR = BUILTIN_MODELS
MAX_WH = 7680  # Ultralytics' class offset for class-aware NMS
MAX_NMS = 30000
MAX_DET = 300
PAD_VALUE = 114

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

# uint8 → float32 in [0, 1]: entry k is float32(k) / float32(255), what ``x / 255.0`` gives.
UNIT_LUT: F32 = (np.arange(256, dtype=np.float32) / np.float32(255.0)).reshape(1, 256)


class ModelError(Exception):
    """The configured model cannot be found or loaded."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    sha256: str
    names: dict[int, str]
    imgsz: int
    backend: str
    device: str
    path: str

    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version, sha256=self.sha256)


class Detector(Protocol):
    info: ModelInfo

    def detect(self, images: list[U8]) -> list[list[Detection]]:
        """Detections per image, boxes in that image's pixels."""
        ...


def decode_scale(width: int, height: int, imgsz: int) -> int:
    """Largest JPEG DCT downscale (1, 2, 4, 8) that still leaves the model its full input.

    Decoding a 1280x720 JPEG at 1/4 costs a fraction of a full decode, and the
    letterbox would shrink it to 320 px anyway.
    """
    for s in (8, 4, 2):
        if width % s == 0 and height % s == 0 and max(width, height) // s >= imgsz:
            return s
    return 1


def input_scale(det: Detector, width: int, height: int) -> int:
    """How far a frame may be reduced when decoded for ``det``: 1 for a detector that
    looks at full-resolution regions (``full_resolution``), else ``decode_scale``."""
    if getattr(det, "full_resolution", False):
        return 1
    return decode_scale(width, height, det.info.imgsz)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def resolve_model_path(spec: str) -> tuple[Path, str]:
    """``builtin:NAME`` → the shipped ONNX (and its .pt sibling); else the given path."""
    onnx = builtin_model_file(spec)
    if onnx is not None:
        name = spec.split(":", 1)[1]
        if not onnx.exists():
            raise ModelError(f"built-in model {name!r} not found at {onnx}")
        return onnx, name
    p = Path(spec).expanduser()
    if not p.exists():
        raise ModelError(f"model path {p} does not exist")
    return p, p.stem if p.is_file() else p.name


def nvidia_driver_present() -> bool:
    """Cheap pre-check: without the NVIDIA kernel driver there is no CUDA device."""
    return Path("/proc/driver/nvidia").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def cuda_available() -> bool:
    # Importing torch costs ~0.5 GB of RSS and seconds of start-up; a CPU-only node
    # (no NVIDIA driver) must not pay that just to learn it has no GPU.
    if not nvidia_driver_present():
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# --------------------------------------------------------------------------- pre/post


@dataclass(frozen=True)
class Letterbox:
    """Ultralytics' LetterBox(center=True), with the rectangle rule used for dynamic models."""

    out_h: int
    out_w: int
    new_w: int
    new_h: int
    top: int
    left: int

    @staticmethod
    def plan(h: int, w: int, imgsz: int, rect: bool, stride: int = 32) -> Letterbox:
        r = min(imgsz / h, imgsz / w)
        new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
        dw, dh = imgsz - new_w, imgsz - new_h
        if rect:
            dw, dh = dw % stride, dh % stride
        dw2, dh2 = dw / 2, dh / 2
        top, bottom = round(dh2 - 0.1), round(dh2 + 0.1)
        left, right = round(dw2 - 0.1), round(dw2 + 0.1)
        return Letterbox(new_h + top + bottom, new_w + left + right, new_w, new_h, top, left)

    def apply(self, img: U8) -> U8:
        if (img.shape[1], img.shape[0]) != (self.new_w, self.new_h):
            img = np.asarray(
                cv2.resize(img, (self.new_w, self.new_h), interpolation=cv2.INTER_LINEAR), np.uint8
            )
        bottom = self.out_h - self.new_h - self.top
        right = self.out_w - self.new_w - self.left
        out = cv2.copyMakeBorder(
            img, self.top, bottom, self.left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
        )
        return np.asarray(out, dtype=np.uint8)

    def apply_planes(self, img: U8, out: U8) -> None:
        """``apply`` written as RGB planes into ``out`` (3, out_h, out_w), padding included."""
        if (img.shape[1], img.shape[0]) != (self.new_w, self.new_h):
            img = np.asarray(
                cv2.resize(img, (self.new_w, self.new_h), interpolation=cv2.INTER_LINEAR), np.uint8
            )
        t, b = self.top, self.top + self.new_h
        left, r = self.left, self.left + self.new_w
        bgr = cv2.split(img)
        for c in range(3):
            plane = out[c]
            plane[:t] = PAD_VALUE
            plane[b:] = PAD_VALUE
            plane[t:b, :left] = PAD_VALUE
            plane[t:b, r:] = PAD_VALUE
            plane[t:b, left:r] = bgr[2 - c]  # BGR→RGB

    def unmap(self, boxes: F32, h: int, w: int) -> F32:
        """Model-input xyxy → original-image xyxy, clipped (as Ultralytics' scale_boxes)."""
        gx, gy = self.new_w / w, self.new_h / h
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] - self.left) / gx
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] - self.top) / gy
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return boxes


def nms(boxes: F32, scores: F32, iou_thres: float) -> npt.NDArray[np.intp]:
    """Greedy NMS with torchvision's semantics (suppress IoU > threshold)."""
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


def postprocess(pred: F32, conf: float, iou: float) -> tuple[F32, F32, npt.NDArray[np.intp]]:
    """One image's raw output (4+nc, N) → (xyxy boxes, scores, class ids) after NMS."""
    best = pred[4:].max(0)
    cand = np.flatnonzero(best > conf)  # the confidence floor first: a handful of columns
    if not cand.size:
        empty = np.zeros((0,), np.float32)
        return np.zeros((0, 4), np.float32), empty, np.zeros((0,), np.intp)
    p = pred[:, cand]
    xywh = p[:4].T
    boxes = np.empty_like(xywh)
    boxes[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
    boxes[:, 2:] = xywh[:, :2] + xywh[:, 2:] / 2
    cls = p[4:].argmax(0)
    scores = best[cand]
    if scores.size > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        boxes, scores, cls = boxes[top], scores[top], cls[top]
    keep = nms(boxes + (cls[:, None] * MAX_WH).astype(np.float32), scores, iou)[:MAX_DET]
    return boxes[keep], scores[keep], cls[keep]


def to_detections(
    boxes: F32, scores: F32, cls: npt.NDArray[np.intp], names: dict[int, str]
) -> list[Detection]:
    # tolist() gives the same Python floats as float(np.float32) per element, in one call
    return [
        Detection(
            cls=names.get(c, str(c)),
            score=round(s, 5),
            box=Box(x1=round(b[0], 2), y1=round(b[1], 2), x2=round(b[2], 2), y2=round(b[3], 2)),
        )
        for b, s, c in zip(
            np.asarray(boxes).tolist(),
            np.asarray(scores).tolist(),
            np.asarray(cls).astype(np.int64).tolist(),
            strict=True,
        )
    ]


def parse_names(raw: str | None) -> dict[int, str]:
    if not raw:
        raise ModelError("model metadata has no class names")
    value = ast.literal_eval(raw)
    if not isinstance(value, dict):
        raise ModelError("model metadata 'names' is not a mapping")
    return {int(k): str(v) for k, v in value.items()}


# --------------------------------------------------------------------------- backends


class OnnxRuntimeDetector:
    def __init__(self, path: Path, name: str, settings: ModelSettings, device: str) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        threads = settings.threads or os.cpu_count() or 1
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load ONNX model {path}: {exc}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.dynamic = not all(isinstance(d, int) for d in inp.shape[2:])
        self.conf = settings.conf
        self.iou = settings.iou
        self.stride = int(meta.get("stride", 32))
        imgsz = settings.imgsz if self.dynamic else int(inp.shape[2])
        self.info = ModelInfo(
            name=name,
            version=meta.get("version", "unknown") + "/" + meta.get("date", "")[:10],
            sha256=sha256_of(path),
            names=parse_names(meta.get("names")),
            imgsz=imgsz,
            backend="onnxruntime",
            device="cuda" if providers[0].startswith("CUDA") else "cpu",
            path=str(path),
        )

    def plan(self, h: int, w: int) -> Letterbox:
        # Dynamic models get Ultralytics' minimal rectangle (e.g. 320x192 for 16:9),
        # which is what YOLO(...).predict does with them: 40 % less compute than square.
        return Letterbox.plan(h, w, self.info.imgsz, rect=self.dynamic, stride=self.stride)

    def infer(self, batch: F32) -> F32:
        out = self.session.run(None, {self.input_name: batch})[0]
        return np.asarray(out, dtype=np.float32)

    def preprocess(self, images: list[U8]) -> tuple[F32, list[Letterbox]]:
        """Letterboxed RGB CHW float32 in [0, 1], one fresh array (the caller may keep it).

        Equal, bit for bit, to ``np.stack([letterbox(im)])[..., ::-1].transpose(0, 3, 1, 2)
        .astype(np.float32) / 255`` (the test keeps that reference), in one pass over the
        pixels instead of four: each image's channels are split by OpenCV straight into
        their planes of a uint8 CHW batch, the padding filled around them, and one lookup
        table (k / 255 in float32, so exactly the division) turns the batch into floats.
        """
        plans = [self.plan(im.shape[0], im.shape[1]) for im in images]
        if not plans:
            return np.zeros((0, 3, 0, 0), np.float32), plans
        h, w = plans[0].out_h, plans[0].out_w
        if any((p.out_h, p.out_w) != (h, w) for p in plans):
            raise ValueError("preprocess: one batch needs one letterboxed shape")
        planes = np.empty((len(images), 3, h, w), np.uint8)
        for i, (p, im) in enumerate(zip(plans, images, strict=True)):
            p.apply_planes(im, planes[i])
        x = np.empty(planes.shape, np.float32)
        cv2.LUT(planes.reshape(-1, w), UNIT_LUT, dst=x.reshape(-1, w))
        return x, plans

    def detect(self, images: list[U8]) -> list[list[Detection]]:
        if not images:
            return []
        out: list[list[Detection]] = [[] for _ in images]
        # One session.run per input shape: cameras of one resolution share a batch.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault((im.shape[0], im.shape[1]), []).append(i)
        for idx in groups.values():
            x, plans = self.preprocess([images[i] for i in idx])
            pred = self.infer(x)
            for j, i in enumerate(idx):
                boxes, scores, cls = postprocess(pred[j], self.conf, self.iou)
                h, w = images[i].shape[:2]
                boxes = plans[j].unmap(boxes, h, w)
                out[i] = to_detections(boxes, scores, cls, self.info.names)
        return out


class UltralyticsDetector:
    """PyTorch (.pt, CUDA when available), or any Ultralytics-exported format."""

    def __init__(self, path: Path, name: str, settings: ModelSettings, device: str) -> None:
        from inspector.inference.offline import default_config_dir, offline_ultralytics

        offline_ultralytics(default_config_dir())
        from ultralytics import YOLO

        try:
            self.model = YOLO(str(path), task="detect")
        except Exception as exc:
            raise ModelError(f"cannot load model {path} with Ultralytics: {exc}") from None
        self.device = "cuda:0" if device == "cuda" else "cpu"
        self.settings = settings
        names = {int(k): str(v) for k, v in self.model.names.items()}
        self.info = ModelInfo(
            name=name,
            version=f"ultralytics/{path.suffix.lstrip('.') or 'dir'}",
            sha256=sha256_of(path),
            names=names,
            imgsz=settings.imgsz,
            backend="ultralytics",
            device="cuda" if device == "cuda" else "cpu",
            path=str(path),
        )

    def detect(self, images: list[U8]) -> list[list[Detection]]:
        if not images:
            return []
        results: Any = self.model.predict(
            images,
            imgsz=self.settings.imgsz,
            conf=self.settings.conf,
            iou=self.settings.iou,
            device=self.device,
            verbose=False,
        )
        out = []
        for r in results:
            b: Any = r.boxes
            out.append(
                to_detections(
                    b.xyxy.cpu().numpy().astype(np.float32),
                    b.conf.cpu().numpy().astype(np.float32),
                    b.cls.cpu().numpy().astype(np.intp),
                    self.info.names,
                )
            )
        return out


def at_input_size(det: Detector, imgsz: int | None) -> Detector:
    """``det`` looking at its input at ``imgsz`` (the parts mode's locator runs the frame
    model smaller than frame mode does). Shares the loaded model: a shallow copy with
    another letterbox size. A fixed-shape ONNX export cannot change size: itself."""
    if imgsz is None or imgsz == det.info.imgsz:
        return det
    if isinstance(det, OnnxRuntimeDetector):
        if not det.dynamic:
            return det
        out = copy.copy(det)
        out.info = replace(det.info, imgsz=imgsz)
        return out
    if isinstance(det, UltralyticsDetector):
        u = copy.copy(det)
        u.settings = det.settings.model_copy(update={"imgsz": imgsz})
        u.info = replace(det.info, imgsz=imgsz)
        return u
    return det


def pick_device(settings: ModelSettings) -> str:
    if settings.device == "cpu":
        return "cpu"
    if settings.device == "cuda":
        if not cuda_available():
            raise ModelError("device: cuda requested but torch sees no CUDA device")
        return "cuda"
    return "cuda" if cuda_available() else "cpu"


def load_detector(settings: ModelSettings) -> Detector:
    path, name = resolve_model_path(settings.path)
    device = pick_device(settings)
    backend = settings.backend
    if backend == "auto":
        pt = path.with_suffix(".pt")
        if device == "cuda" and (path.suffix == ".pt" or pt.exists()):
            # On a GPU node the PyTorch weights on CUDA beat ONNX Runtime's CPU build.
            backend, path = "ultralytics", (path if path.suffix == ".pt" else pt)
        elif path.suffix == ".onnx":
            backend = "onnxruntime"
        else:
            backend = "ultralytics"
    if backend == "onnxruntime":
        if path.suffix != ".onnx":
            raise ModelError(f"backend onnxruntime needs an .onnx file, got {path}")
        det: Detector = OnnxRuntimeDetector(path, name, settings, device)
    elif backend == "openvino":
        if not (path.is_dir() and any(path.glob("*.xml"))):
            raise ModelError(f"backend openvino needs an OpenVINO export directory, got {path}")
        det = UltralyticsDetector(path, name, settings, "cpu")
    else:
        det = UltralyticsDetector(path, name, settings, device)
    log.info(
        "model loaded",
        extra={
            "model": det.info.name,
            "backend": det.info.backend,
            "device": det.info.device,
            "classes": len(det.info.names),
            "sha256": det.info.sha256[:12],
        },
    )
    return det


def model_summary(det: Detector) -> dict[str, Any]:
    i = det.info
    return {
        "name": i.name,
        "backend": i.backend,
        "device": i.device,
        "imgsz": i.imgsz,
        "classes": [i.names[k] for k in sorted(i.names)],
        "sha256": i.sha256,
    }
