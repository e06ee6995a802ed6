"""``inspector quantize``: the INT8 build of an ONNX detector, for edge boxes.

ONNX Runtime static quantization (QDQ: int8 weights per channel, uint8 activations),
calibrated on line frames prepared exactly as the worker prepares them (JPEG → reduced
decode → letterbox), with the detection head — the last module of Ultralytics' graph,
which decodes boxes and class scores — and everything after it kept in floating point.

The build is shipped (written as ``<model>.int8.onnx``, which ``inspector edge`` picks up)
only if, on held-out simulated runs with the line's rules, its per-part recall is at
most ``max_recall_drop`` points below the float model's. Speed is measured in the same
run: batch-1 ``session.run`` on the same frames, median of each.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from inspector.config import InspectionSettings, LineRules, ModelSettings
from inspector.inference.model import ModelError, OnnxRuntimeDetector

U8 = npt.NDArray[np.uint8]

_MODULE = re.compile(r"^/model\.(\d+)/")


class QuantizeError(Exception):
    """The model cannot be quantized (not ONNX, not an Ultralytics graph, no frames)."""


def int8_path(model: Path) -> Path:
    """``model.onnx`` → ``model.int8.onnx`` (what ``inspector edge`` looks for)."""
    return model.with_name(model.name.removesuffix(".onnx") + ".int8.onnx")


def float_nodes(graph_nodes: Sequence[Any]) -> list[str]:
    """Nodes kept in floating point: the head (the highest ``/model.<i>/`` module of an
    Ultralytics export) and whatever follows outside the module tree (the output concat).
    Refuses a graph that does not look like an Ultralytics export."""
    modules = [int(m.group(1)) for n in graph_nodes if (m := _MODULE.match(n.name))]
    if not modules:
        raise QuantizeError(
            "no /model.<i>/ nodes: not an Ultralytics ONNX export, its head cannot be found"
        )
    head = f"/model.{max(modules)}/"
    return [n.name for n in graph_nodes if n.name.startswith(head) or not _MODULE.match(n.name)]


def line_frames(
    n: int, seeds: Sequence[int], width: int = 1280, height: int = 720, quality: int = 85
) -> list[U8]:
    """``n`` frames of the simulated line (tuning seeds, never the held-out ones) as JPEG
    bytes' reduced decode would give the worker: returned full size, BGR."""
    from inspector.sim.scene import ConveyorScene, SceneConfig

    per_seed = max(1, -(-n // len(seeds)))
    out: list[U8] = []
    for seed in seeds:
        scene = ConveyorScene(
            SceneConfig(seed=seed, width=width, height=height, defect_rate=0.5, clip_seconds=60)
        )
        step = max(1, scene.n_frames // per_seed)
        for i in range(0, scene.n_frames, step)[:per_seed]:
            img, _ = scene.render(i)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
            assert ok
            out.append(np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), np.uint8))
    return out[:n]


def folder_frames(folder: Path, n: int) -> list[U8]:
    """Up to ``n`` JPEG/PNG frames from a folder (a plant's own line frames)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    out = []
    for p in files[:n]:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise QuantizeError(f"{p}: not a readable image")
        out.append(np.asarray(img, np.uint8))
    if not out:
        raise QuantizeError(f"{folder}: no .jpg/.jpeg/.png frames to calibrate on")
    return out


def _inputs(det: OnnxRuntimeDetector, frames: Sequence[U8]) -> list[npt.NDArray[np.float32]]:
    """The model inputs for ``frames``, reduced as the worker's decoder reduces them."""
    from inspector.inference.model import decode_scale

    out = []
    for img in frames:
        h, w = img.shape[:2]
        s = decode_scale(w, h, det.info.imgsz)
        small = img if s == 1 else cv2.resize(img, (w // s, h // s), interpolation=cv2.INTER_AREA)
        out.append(det.preprocess([np.asarray(small, np.uint8)])[0])
    return out


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over prepared inputs."""

    def __init__(self, name: str, inputs: list[npt.NDArray[np.float32]]) -> None:
        self._it: Iterator[npt.NDArray[np.float32]] = iter(inputs)
        self._name = name

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        x = next(self._it, None)
        return None if x is None else {self._name: x}


def build(src: Path, out: Path, frames: Sequence[U8], settings: ModelSettings) -> Path:
    """Quantize ``src`` into ``out`` calibrated on ``frames``; metadata (names, stride,
    imgsz, version) carried over, plus what was done."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if src.suffix != ".onnx":
        raise QuantizeError(f"{src}: INT8 builds are made from an .onnx export")
    try:
        det = OnnxRuntimeDetector(src, src.stem, settings, "cpu")
        model = onnx.load(str(src))
    except (ModelError, OSError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
        raise QuantizeError(f"{src}: {exc}") from None
    if not frames:
        raise QuantizeError("no calibration frames")
    inputs = _inputs(det, frames)
    with tempfile.TemporaryDirectory() as tmp:
        # onnxruntime's pre-processing (graph optimisation + ONNX shape inference; its
        # symbolic shape inference gives up on the dynamic export, so it is skipped).
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        keep_float = float_nodes(onnx.load(str(pre)).graph.node)
        staged = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre),
            str(staged),
            _Reader(det.input_name, inputs),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=keep_float,
        )
        q = onnx.load(str(staged))
    meta = {p.key: p.value for p in model.metadata_props}
    meta["quantization"] = (
        f"int8 static QDQ (onnxruntime), per-channel weights, MinMax on {len(frames)} "
        f"line frames; {len(keep_float)} head nodes kept in float"
    )
    del q.metadata_props[:]
    for k, v in meta.items():
        q.metadata_props.add(key=k, value=v)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(q, str(out))
    return out


def latency_ms(path: Path, settings: ModelSettings, frames: Sequence[U8], repeat: int = 3) -> float:
    """Median batch-1 ``session.run`` time (ms) over ``frames`` (each ``repeat`` times),
    one thread per call as the edge worker is configured."""
    det = OnnxRuntimeDetector(path, path.stem, settings, "cpu")
    inputs = _inputs(det, frames)
    det.infer(inputs[0])  # warm-up
    times = []
    for _ in range(repeat):
        for x in inputs:
            t0 = time.perf_counter()
            det.infer(x)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


@dataclass(frozen=True)
class Verdict:
    """The float model against its INT8 build on the same held-out runs."""

    float_recall: float
    int8_recall: float
    float_frr: float
    int8_frr: float
    max_drop_points: float

    @property
    def drop_points(self) -> float:
        return round(100 * (self.float_recall - self.int8_recall), 2)

    @property
    def shipped(self) -> bool:
        return self.drop_points <= self.max_drop_points

    def reason(self) -> str:
        verb = "shipped" if self.shipped else "refused"
        return (
            f"{verb}: per-part recall {self.int8_recall:.4f} (INT8) vs {self.float_recall:.4f} "
            f"(float), a drop of {self.drop_points:.2f} points, limit {self.max_drop_points:g}"
        )


def region_crops(
    frames: Sequence[U8], frame_model: ModelSettings, inspection: InspectionSettings
) -> list[U8]:
    """The crops (parts) or tiles a line's region model sees for ``frames``: its own
    calibration data, located by the frame model exactly as the worker locates them."""
    from inspector.detect.evaluate import line_detector
    from inspector.detect.regions import RegionDetector

    det = line_detector(frame_model, inspection)
    if not isinstance(det, RegionDetector):
        raise QuantizeError("the line inspects whole frames (mode frame): it has no region model")
    out: list[U8] = []
    for start in range(0, len(frames), 8):
        out.extend(det.crops(list(frames[start : start + 8])))
    if not out:
        raise QuantizeError("the frame model located no part in the calibration frames")
    return out


def compare(
    src: Path,
    candidate: Path,
    settings: ModelSettings,
    rules: LineRules,
    *,
    seeds: tuple[int, ...],
    seconds: float,
    max_drop_points: float,
    inspection: InspectionSettings | None = None,
) -> tuple[Verdict, dict[str, Any], dict[str, Any]]:
    """Both models through ``inspector evaluate`` on the same held-out seeds. With
    ``inspection`` the two are the line's region model (``settings`` is then the frame
    model, the same for both runs)."""
    from inspector.detect.evaluate import evaluate

    res = {}
    for key, path in (("float", src), ("int8", candidate)):
        if inspection is None:
            s = settings.model_copy(update={"path": str(path), "backend": "onnxruntime"})
            res[key] = evaluate(s, rules, seeds=seeds, seconds=seconds)
        else:
            st = inspection.model_copy(update={"region_model": str(path)})
            s = settings.model_copy(update={"backend": "onnxruntime"})
            res[key] = evaluate(s, rules, seeds=seeds, seconds=seconds, inspection=st)
    f, q = res["float"]["per_part"], res["int8"]["per_part"]
    verdict = Verdict(
        float_recall=f["recall"] or 0.0,
        int8_recall=q["recall"] or 0.0,
        float_frr=f["false_reject_rate"] or 0.0,
        int8_frr=q["false_reject_rate"] or 0.0,
        max_drop_points=max_drop_points,
    )
    return verdict, res["float"], res["int8"]
