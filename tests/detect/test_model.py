"""The shipped model: metadata, and parity of our ONNX path with Ultralytics' predict."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import cv2
import numpy as np
import pytest

from inspector.config import ModelSettings
from inspector.detect.worker import decode_jpeg
from inspector.events import Detection
from inspector.inference.model import (
    Letterbox,
    OnnxRuntimeDetector,
    decode_scale,
    load_detector,
    resolve_model_path,
)
from inspector.inference.offline import default_config_dir, offline_ultralytics
from inspector.sim import CLASS_NAMES, ConveyorScene, SceneConfig

pytestmark = pytest.mark.model
MODEL_DIR = Path(__file__).resolve().parents[2] / "inspector" / "models" / "defects-v1"


def test_shipped_model_files_and_card() -> None:
    for name in ("model.onnx", "model.pt", "card.json", "MODEL_CARD.md"):
        assert (MODEL_DIR / name).exists(), name
    total = sum(p.stat().st_size for p in MODEL_DIR.iterdir())
    assert total <= 25 * 1024 * 1024


def test_class_names_come_from_metadata() -> None:
    det = load_detector(ModelSettings(device="cpu"))
    assert isinstance(det, OnnxRuntimeDetector)
    assert [det.info.names[i] for i in sorted(det.info.names)] == list(CLASS_NAMES)
    assert len(det.info.sha256) == 64


@pytest.mark.parametrize(
    ("h", "w"), [(720, 1280), (180, 320), (360, 640), (480, 640), (1080, 1920), (600, 500)]
)
def test_letterbox_matches_ultralytics(h: int, w: int) -> None:
    offline_ultralytics(default_config_dir())
    from ultralytics.data.augment import LetterBox

    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    ours = Letterbox.plan(h, w, 320, rect=True).apply(img)
    # given an image alone (no labels), LetterBox returns the image
    theirs = cast(np.ndarray, LetterBox((320, 320), auto=True, stride=32)(image=img))
    assert ours.shape == theirs.shape
    assert np.array_equal(ours, theirs)


def match(a: list[Detection], b: list[Detection]) -> tuple[float, float, int]:
    """Greedy pairing by class and IoU; → (max box diff px, max score diff, unmatched)."""
    left = list(b)
    box_diff = score_diff = 0.0
    unmatched = 0
    for d in sorted(a, key=lambda d: -d.score):
        best, best_iou = None, 0.0
        for e in left:
            if e.cls != d.cls:
                continue
            ix = max(0.0, min(d.box.x2, e.box.x2) - max(d.box.x1, e.box.x1))
            iy = max(0.0, min(d.box.y2, e.box.y2) - max(d.box.y1, e.box.y1))
            inter = ix * iy
            iou = inter / (d.box.area + e.box.area - inter + 1e-9)
            if iou > best_iou:
                best, best_iou = e, iou
        if best is None or best_iou < 0.5:
            unmatched += 1
            continue
        left.remove(best)
        box_diff = max(
            box_diff,
            *(abs(getattr(d.box, k) - getattr(best.box, k)) for k in ("x1", "y1", "x2", "y2")),
        )
        score_diff = max(score_diff, abs(d.score - best.score))
    return box_diff, score_diff, unmatched + len(left)


def test_parity_with_ultralytics_predict() -> None:
    """Same model, same decoded frames: our ONNX Runtime path == YOLO(model).predict."""
    offline_ultralytics(default_config_dir())
    from torch import Tensor
    from ultralytics import YOLO
    from ultralytics.engine.results import Results

    settings = ModelSettings(device="cpu", conf=0.25, iou=0.45)
    ours_det = load_detector(settings)
    path, _ = resolve_model_path(settings.path)
    yolo = YOLO(str(path), task="detect")
    frames = []
    for seed in (11, 12):
        scene = ConveyorScene(SceneConfig(seed=seed, defect_rate=0.6, clip_seconds=20))
        for i in range(0, 150, 5):
            img, _ = scene.render(i)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
            small = decode_jpeg(buf.tobytes(), decode_scale(1280, 720, 320))
            assert ok and small is not None
            frames.append(small)
    assert len(frames) >= 50
    total = 0
    for start in range(0, len(frames), 8):
        chunk = frames[start : start + 8]
        ours = ours_det.detect(chunk)
        theirs = yolo.predict(chunk, imgsz=320, conf=0.25, iou=0.45, verbose=False, device="cpu")
        # predict on images gives a Results each, with CPU tensors for boxes
        for o, r in zip(ours, cast(list[Results], theirs), strict=True):
            names = r.names
            assert r.boxes is not None
            xyxy, conf, cls = (cast(Tensor, x) for x in (r.boxes.xyxy, r.boxes.conf, r.boxes.cls))
            t = [
                Detection.model_validate(
                    {
                        "cls": names[int(c)],
                        "score": float(s),
                        "box": {
                            "x1": float(b[0]),
                            "y1": float(b[1]),
                            "x2": float(b[2]),
                            "y2": float(b[3]),
                        },
                    }
                )
                for b, s, c in zip(xyxy.numpy(), conf.numpy(), cls.numpy(), strict=True)
            ]
            box_diff, score_diff, unmatched = match(o, t)
            # a detection sitting right at the confidence floor may fall either side
            borderline = sum(1 for d in [*o, *t] if abs(d.score - 0.25) < 0.01)
            assert unmatched <= borderline, (o, t)
            assert box_diff <= 1.0 and score_diff <= 0.01, (box_diff, score_diff)
            total += len(o)
    assert total > 0, "the model detected nothing at all on 60 frames"


def test_training_runs_no_experiment_tracker() -> None:
    """mlflow is installed (the registry's client): Ultralytics' own callback would log
    every `inspector train` into an mlflow.db in the working directory."""
    offline_ultralytics(default_config_dir())
    from ultralytics.utils import SETTINGS

    assert SETTINGS["mlflow"] is False
    assert not [k for k in ("tensorboard", "wandb", "clearml", "comet") if SETTINGS[k]]
