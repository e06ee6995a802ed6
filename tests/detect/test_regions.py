"""Inspection modes' geometry and merging: part crops (cut by the frame edge, rotated parts
of the simulator), crop <-> frame box mapping, tiles, and the region detector's logic on
fake detectors (pure logic); the real models run in test_regions_models."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from inspector.config import InspectionSettings
from inspector.detect.crops import (
    FILL,
    CropError,
    CropGeom,
    box_touches_edge,
    crop_geom,
    crop_part,
)
from inspector.detect.parts_data import crop_labels
from inspector.detect.regions import RegionDetector, tile_boxes
from inspector.events import Box, Detection
from inspector.inference.model import ModelInfo, input_scale
from inspector.sim import ConveyorScene, SceneConfig
from inspector.sim.truth import CLASS_NAMES


def test_crop_inside_the_frame_is_the_padded_square() -> None:
    frame = np.arange(200 * 300 * 3, dtype=np.uint32).reshape(200, 300, 3).astype(np.uint8)
    x1, y1, side = crop_geom((100, 50, 180, 110), pad=0.1)
    assert side == 96 and (x1, y1) == (92, 32)  # 80 * 1.2, centred on (140, 80)
    crop, g = crop_part(frame, (100, 50, 180, 110), size=96, pad=0.1)
    assert not g.cut and crop.shape == (96, 96, 3)
    assert np.array_equal(crop, frame[32:128, 92:188])


def test_crop_of_a_part_cut_by_the_frame_edge() -> None:
    frame = np.full((200, 300, 3), 7, np.uint8)
    frame[:, :10] = 200  # a marker column at the left edge
    crop, g = crop_part(frame, (0, 60, 40, 100), size=60, pad=0.25)  # box touches x=0
    assert g.cut and (g.x1, g.y1, g.side) == (-10, 50, 60)
    assert (crop[:, :10] == FILL).all()  # beyond the frame: the letterbox grey
    assert (crop[:, 10:20] == 200).all() and (crop[:, 20:] == 7).all()
    assert box_touches_edge((0, 60, 40, 100), 300, 200, margin=4)
    assert not box_touches_edge((100, 50, 180, 110), 300, 200, margin=4)
    with pytest.raises(CropError):
        crop_geom((5, 5, 5, 9), pad=0.1)


def test_boxes_map_between_crop_and_frame() -> None:
    g = CropGeom(x1=100, y1=-40, side=400, cut=True)  # reaches above the frame
    frame_boxes = np.array([[150, 10, 250, 90], [120, 0, 180, 30]], np.float32)
    in_crop = g.to_crop(frame_boxes, size=320)
    np.testing.assert_allclose(in_crop[0], [40, 40, 120, 104])  # (x - 100, y + 40) * 0.8
    back = g.to_frame(in_crop, size=320, width=1280, height=720)
    np.testing.assert_allclose(back, frame_boxes, atol=1e-4)
    # a box found on the grey beyond the frame is clipped to the frame's edge
    clipped = g.to_frame(np.array([[0, 0, 80, 80]], np.float32), 320, 1280, 720)
    np.testing.assert_allclose(clipped, [[100, 0, 200, 60]])


@pytest.mark.parametrize("seed", [3, 11])
def test_rotated_parts_labels_survive_the_crop_and_map_back(seed: int) -> None:
    """The simulator's parts are rotated: every object of a part fully in view lands in its
    crop, and mapping the crop's labels back gives the truth boxes (to a pixel)."""
    scene = ConveyorScene(SceneConfig(seed=seed, defect_rate=1.0, clip_seconds=8.0))
    checked = 0
    for i in range(0, scene.n_frames, 5):
        truth = scene.truth(i)
        for p in truth.parts:
            if not p.fully_in_view or not p.objects:
                continue
            size, pad = 320, 0.08
            box = tuple(float(v) for v in p.box)
            _, rows = crop_labels(truth, box, size, pad)  # type: ignore[arg-type]
            g = CropGeom(*crop_geom(box, pad), cut=False)  # type: ignore[arg-type]
            got = []
            for k, cx, cy, w, h in rows:
                b = np.array([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]]) * size
                fb = g.to_frame(b.astype(np.float32), size, truth.width, truth.height)[0]
                got.append((CLASS_NAMES[k], tuple(np.round(fb).astype(int))))
            for obj in (*p.objects,):
                want = tuple(obj.box)
                assert any(
                    c == obj.cls and max(abs(a - b) for a, b in zip(fb, want, strict=True)) <= 1
                    for c, fb in got
                ), f"{obj.cls} {want} of part {p.part_id} (frame {i}) not in {got}"
                checked += 1
    assert checked >= 5


def test_part_cut_by_the_frame_edge_keeps_only_labels_mostly_inside() -> None:
    scene = ConveyorScene(SceneConfig(seed=5, defect_rate=1.0, clip_seconds=8.0))
    for i in range(scene.n_frames):
        truth = scene.truth(i)
        cut = [p for p in truth.parts if not p.fully_in_view and p.objects]
        if cut:
            p = cut[0]
            break
    else:
        pytest.fail("no part cut by the frame edge in the clip")
    frame, _ = scene.render(i)
    box = tuple(float(v) for v in p.box)
    crop, g = crop_part(frame, box, 320, 0.08)  # type: ignore[arg-type]
    assert g.cut and crop.shape == (320, 320, 3)
    _, rows = crop_labels(truth, box, 320, 0.08)  # type: ignore[arg-type]
    for _, cx, cy, w, h in rows:  # all labels lie on the crop
        assert cx - w / 2 >= 0 and cx + w / 2 <= 1 and cy - h / 2 >= 0 and cy + h / 2 <= 1


def test_tiles_cover_the_frame_with_the_overlap_asked() -> None:
    tiles = tile_boxes(1280, 720, 480, 0.2)
    xs = sorted({t[0] for t in tiles})
    ys = sorted({t[1] for t in tiles})
    assert xs[0] == 0 and xs[-1] + 480 == 1280 and ys[0] == 0 and ys[-1] + 480 == 720
    for a, b in itertools.pairwise(xs):
        assert a + 480 - b >= 0.2 * 480  # neighbours overlap at least 20 %
    assert len(tiles) == len(xs) * len(ys) == 4 * 2
    # a frame smaller than a tile: one tile, as wide as the frame, centred vertically
    assert tile_boxes(400, 300, 480, 0.2) == [(0.0, -50.0, 400.0, 350.0)]


# ---------------------------------------------------------------- region detector (fakes)


def _info(name: str, names: dict[int, str], imgsz: int) -> ModelInfo:
    return ModelInfo(name, "1", name * 8, names, imgsz, "fake", "cpu", name)


def _det(cls: str, score: float, box: tuple[float, float, float, float]) -> Detection:
    return Detection(cls=cls, score=score, box=Box(x1=box[0], y1=box[1], x2=box[2], y2=box[3]))


class FakeFrameModel:
    """Finds parts at fixed places of the reduced (320x180) frame."""

    info = _info("frame", {0: "part", 1: "scratch"}, 320)

    def __init__(self, parts: list[tuple[float, float, float, float]]) -> None:
        self.parts = parts
        self.seen: list[tuple[int, ...]] = []

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        self.seen += [im.shape[:2] for im in images]
        return [
            [_det("part", 0.9, b) for b in self.parts] + [_det("scratch", 0.8, (1, 1, 5, 5))]
            for _ in images
        ]


class FakeRegionModel:
    """Reports a scratch at the centre of every crop, and a stain in its top-left margin."""

    info = _info("region", {0: "part", 1: "scratch", 2: "stain"}, 320)

    def __init__(self) -> None:
        self.calls: list[int] = []

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        self.calls.append(len(images))
        return [
            [
                _det("part", 0.99, (10, 10, 310, 310)),
                _det("scratch", 0.7, (150, 150, 170, 170)),
                _det("stain", 0.6, (0, 0, 6, 6)),
            ]
            for _ in images
        ]


def test_parts_mode_maps_crop_findings_to_frame_pixels() -> None:
    frame_model = FakeFrameModel(parts=[(40, 40, 90, 90), (200, 100, 250, 150)])
    region = FakeRegionModel()
    st = InspectionSettings(mode="parts", pad=0.1)
    det = RegionDetector(frame_model, region, st)
    assert input_scale(det, 1280, 720) == 1  # full-resolution decode for this line
    frames = [np.full((720, 1280, 3), 90, np.uint8) for _ in range(3)]
    out = det.detect(frames)
    assert frame_model.seen == [(180, 320)] * 3  # the frame model sees reduced frames
    assert region.calls == [6]  # 2 parts x 3 frames in one region call
    for dets in out:
        parts = [d for d in dets if d.cls == "part"]
        assert [(p.box.x1, p.box.y1, p.box.x2, p.box.y2) for p in parts] == [
            (160, 160, 360, 360),
            (800, 400, 1000, 600),
        ]  # the frame model's parts, x4 to full resolution
        scratches = sorted((d.box.x1, d.box.y1) for d in dets if d.cls == "scratch")
        # part 1: square of side 240 at (140, 140); the crop's (150, 150) x 240/320
        assert scratches == [(252.5, 252.5), (892.5, 492.5)]
        # the stain in each crop's corner lies in the margin beyond pad: dropped; the
        # frame model's own scratch is not kept (the region model judges defects)
        assert not [d for d in dets if d.cls == "stain"]
        assert len(dets) == 4


def test_tiles_mode_merges_what_overlapping_tiles_both_saw() -> None:
    class CentreScratch(FakeRegionModel):
        def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
            self.calls.append(len(images))
            return [[_det("scratch", 0.7, (150, 150, 170, 170))] for _ in images]

    det = RegionDetector(
        FakeFrameModel(parts=[]),
        CentreScratch(),
        InspectionSettings(mode="tiles", tile_side=640, tile_overlap=0.0, crop_size=320),
    )
    out = det.detect([np.zeros((640, 1280, 3), np.uint8)])[0]
    assert sorted((d.box.x1, d.box.y1) for d in out) == [(300, 300), (940, 300)]
    # two tiles finding one defect where they overlap: one detection after the merge
    dup = RegionDetector(
        FakeFrameModel(parts=[]),
        CentreScratch(),
        InspectionSettings(mode="tiles", tile_side=640, tile_overlap=0.0),
    )
    merged = dup._merge(
        [
            (np.array([300, 300, 340, 340], np.float32), 0.7, "scratch"),
            (np.array([302, 301, 341, 340], np.float32), 0.6, "scratch"),
            (np.array([302, 301, 341, 340], np.float32), 0.5, "stain"),
        ]
    )
    assert [(d.cls, d.score) for d in merged] == [("scratch", 0.7), ("stain", 0.5)]


def test_frame_mode_is_not_a_region_detector() -> None:
    with pytest.raises(ValueError):
        RegionDetector(FakeFrameModel(parts=[]), FakeRegionModel(), InspectionSettings())


# ---------------------------------------------------------------- the worker (real ONNX)


def test_worker_decodes_a_parts_line_at_full_resolution_and_names_both_models() -> None:
    """A line in parts mode: its JPEGs decode at full size, the frame model + the region
    model judge them (boxes in frame pixels), and its verdicts name both models; a line
    in frame mode keeps the reduced decode and the frame model alone."""
    import uuid

    import cv2

    from inspector.config import parse_config
    from inspector.detect.worker import DetectWorker, FrameJob
    from inspector.events import FrameMeta
    from inspector.inference.model import load_detector
    from tests.conftest import base_config_dict

    data = base_config_dict("127.0.0.1:1", "redis://127.0.0.1:1", uuid.uuid4().hex[:8])
    data["lines"][0]["inspection"] = {"mode": "parts", "region_model": "builtin:defects-v1"}
    data["lines"].append(
        {"id": "line-2", "cameras": [{"id": "cam-2", "url": "rtsp://127.0.0.1:8554/cam-2"}]}
    )
    data["frames"] = {"max_age_s": 30}
    cfg = parse_config(data, "test", env={})
    worker = DetectWorker(cfg, load_detector(cfg.model), store=None)  # type: ignore[arg-type]
    try:
        scene = ConveyorScene(SceneConfig(seed=21, defect_rate=1.0, clip_seconds=6.0))
        i = next(
            k for k in range(scene.n_frames) if any(p.fully_in_view for p in scene.truth(k).parts)
        )
        img, truth = scene.render(i)
        jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
        jobs = []
        for cam, line in (("cam-1", "line-1"), ("cam-2", "line-2")):
            m = FrameMeta(
                frame_id=f"{cam}:r:0",
                camera_id=cam,
                line_id=line,
                run_id="r",
                seq=0,
                captured_at=1.0,
                ingested_at=1.0,
                width=1280,
                height=720,
                storage="redis",
                claim_key="k",
                size_bytes=len(jpeg),
            )
            jobs.append(FrameJob(msg=None, meta=m, jpeg=jpeg))  # type: ignore[arg-type]
        assert worker.infer(jobs) == 2
        parts_job, frame_job = jobs
        assert parts_job.scale == 1 and parts_job.image is not None
        assert parts_job.image.shape[:2] == (720, 1280)
        assert frame_job.scale == 4
        assert worker.ref_for("line-1").name == "defects-v1+defects-v1"
        assert worker.ref_for("line-2").name == "defects-v1"
        for j in jobs:
            assert j.detections is not None
            for d in j.detections:
                assert 0 <= d.box.x1 < d.box.x2 <= 1280 and 0 <= d.box.y1 < d.box.y2 <= 720
        # both lines' part boxes come from the same frame model: they agree
        full = [p for p in truth.parts if p.fully_in_view]
        for j in jobs:
            assert j.detections is not None
            found = [d for d in j.detections if d.cls == "part" and d.score >= 0.5]
            assert len(found) >= len(full)
    finally:
        worker.infer_pool.shutdown()
        worker.prepare_pool.shutdown()


def test_crop_dataset_is_reproducible_and_keeps_off_the_evaluation_seeds(tmp_path: Path) -> None:
    import yaml

    from inspector.detect.parts_data import write_crop_dataset

    a = write_crop_dataset(tmp_path / "a", 12, 6, seed=2, size=160)
    b = write_crop_dataset(tmp_path / "b", 12, 6, seed=2, size=160)
    data = yaml.safe_load(a.read_text())
    assert data["names"][0] == "part" and data["crop"]["size"] == 160
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert any(str(f).startswith("images/train") for f in files)
    for f in files:
        if f.suffix in (".jpg", ".txt"):
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert b.exists()
    labelled = [p for p in (tmp_path / "a" / "labels" / "train").glob("*.txt") if p.read_text()]
    assert labelled  # every crop shows at least its part
    for p in labelled:
        for row in p.read_text().splitlines():
            k, *xywh = row.split()
            assert 0 <= int(k) < len(CLASS_NAMES) and all(0 <= float(v) <= 1 for v in xywh)
    with pytest.raises(ValueError, match="evaluation seeds"):
        write_crop_dataset(tmp_path / "c", 12, 20_010, seed=0)  # val clips 5000-7000


@pytest.mark.parametrize("size", [224, 320])
def test_region_model_onnx_matches_its_pytorch_weights_on_part_crops(size: int) -> None:
    """defects-v2 as the worker runs it (our ONNX Runtime path) against Ultralytics'
    own predict on the shipped .pt, on part crops of held-out simulated frames at the
    shipped configs' crop size (224) and the size it was trained at (320)."""
    from typing import cast

    import cv2
    from torch import Tensor
    from ultralytics.engine.results import Results

    from inspector.config import ModelSettings
    from inspector.inference.model import load_detector, resolve_model_path
    from inspector.inference.offline import default_config_dir, offline_ultralytics

    offline_ultralytics(default_config_dir())
    from ultralytics import YOLO

    ours = load_detector(
        ModelSettings(path="builtin:defects-v2", device="cpu", conf=0.25, imgsz=size)
    )
    path, _ = resolve_model_path("builtin:defects-v2")
    yolo = YOLO(str(path.with_suffix(".pt")), task="detect")
    crops = []
    for seed in (31, 32):
        scene = ConveyorScene(SceneConfig(seed=seed, defect_rate=0.8, clip_seconds=16))
        for i in range(0, scene.n_frames, 12):
            img, truth = scene.render(i)
            frame = cv2.imdecode(cv2.imencode(".jpg", img)[1], cv2.IMREAD_COLOR)
            for p in truth.parts:
                crops.append(crop_part(frame, tuple(map(float, p.box)), size, 0.08)[0])  # type: ignore[arg-type]
    assert len(crops) >= 16
    matched = 0
    for start in range(0, len(crops), 8):
        chunk = crops[start : start + 8]
        mine = ours.detect(chunk)
        theirs = cast(
            list[Results],
            yolo.predict(chunk, imgsz=size, conf=0.25, iou=0.45, verbose=False, device="cpu"),
        )
        for o, r in zip(mine, theirs, strict=True):
            assert r.boxes is not None
            xyxy, conf, cls = (
                cast(Tensor, x).numpy() for x in (r.boxes.xyxy, r.boxes.conf, r.boxes.cls)
            )
            for b, s, c in zip(xyxy, conf, cls, strict=True):
                same = [
                    d
                    for d in o
                    if d.cls == r.names[int(c)]
                    and max(
                        abs(d.box.x1 - b[0]),
                        abs(d.box.y1 - b[1]),
                        abs(d.box.x2 - b[2]),
                        abs(d.box.y2 - b[3]),
                    )
                    <= 1.5
                    and abs(d.score - float(s)) <= 0.02
                ]
                if same:
                    matched += 1
                else:  # only a detection right at the floor may fall on one side only
                    assert abs(float(s) - 0.25) < 0.02, (r.names[int(c)], float(s), b, o)
    assert matched >= 16, matched


def test_the_locator_looks_at_the_frame_at_locate_size_and_finds_the_same_parts() -> None:
    """parts mode's locator is the frame model at ``locate_size`` (one loaded model, a
    smaller letterbox): on simulated frames it finds the parts the full-size model finds,
    boxes within a few frame pixels; the combined model's hash names the sizes."""
    import cv2

    from inspector.config import ModelSettings
    from inspector.inference.model import OnnxRuntimeDetector, at_input_size, load_detector

    frame = load_detector(ModelSettings(device="cpu", conf=0.25))
    assert isinstance(frame, OnnxRuntimeDetector)
    small = at_input_size(frame, 224)
    assert isinstance(small, OnnxRuntimeDetector)
    assert small.session is frame.session and frame.info.imgsz == 320
    assert (small.plan(180, 320).out_h, small.plan(180, 320).out_w) == (128, 224)
    assert at_input_size(frame, None) is frame and at_input_size(frame, 320) is frame
    region = FakeRegionModel()
    st = InspectionSettings(mode="parts", locate_size=224, crop_size=224)
    det = RegionDetector(frame, region, st)
    full = RegionDetector(frame, region, st.model_copy(update={"locate_size": None}))
    assert det.locator.info.imgsz == 224 and full.locator is frame
    assert det.info.sha256 != full.info.sha256
    compared = 0
    scene = ConveyorScene(SceneConfig(seed=41, defect_rate=0.5, clip_seconds=12))
    for i in range(0, scene.n_frames, 9):
        img, truth = scene.render(i)
        im = np.asarray(cv2.imdecode(cv2.imencode(".jpg", img)[1], cv2.IMREAD_COLOR), np.uint8)
        a = sorted(d.box.x1 for d in det._locate([im])[0] if d.cls == "part" and d.score > 0.5)
        b = sorted(d.box.x1 for d in full._locate([im])[0] if d.cls == "part" and d.score > 0.5)
        inside = [p for p in truth.parts if p.fully_in_view]
        assert len(a) >= len(inside), (i, a, inside)
        if len(a) == len(b):
            assert max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0) <= 12
            compared += len(a)
    assert compared >= 8
    crops = det.crops([im])
    assert crops and all(c.shape == (224, 224, 3) for c in crops)


def test_a_reduced_copy_made_once_gives_the_same_detections() -> None:
    """The worker reduces a parts line's frame once (``reduce``) for vetting, drift and
    the locator; passing it to ``detect`` changes nothing but the work."""
    frame_model = FakeFrameModel(parts=[(40, 40, 90, 90)])
    det = RegionDetector(frame_model, FakeRegionModel(), InspectionSettings(mode="parts"))
    frames = [np.full((720, 1280, 3), 90, np.uint8) for _ in range(2)]
    small, s = det.reduce(frames[0])
    assert small.shape == (180, 320, 3) and s == 4
    assert det.detect(frames, [det.reduce(f)[0] for f in frames]) == det.detect(frames)
