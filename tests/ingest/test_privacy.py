"""Privacy masks and the redaction model (pure logic, plus the shipped model on sim frames)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from inspector.config import CameraSettings, ConfigError, ModelSettings, PlantConfig, parse_config
from inspector.inference.model import load_detector
from inspector.ingest.privacy import (
    PrivacyError,
    PrivacyFilter,
    RedactionFailed,
    SharedDetector,
    build_filters,
    load_redactors,
    redaction_boxes,
)
from inspector.sim import ConveyorScene, SceneConfig, decode_frame_index
from inspector.sim.framecode import frame_code_box

W, H = 640, 360


def cam(**privacy: Any) -> CameraSettings:
    return CameraSettings(id="cam", url="rtsp://127.0.0.1/x", width=W, height=H, privacy=privacy)


def plant(privacy: dict[str, Any], models: dict[str, Any] | None = None) -> PlantConfig:
    data: dict[str, Any] = {
        "lines": [
            {
                "id": "l",
                "cameras": [
                    {"id": "cam", "url": "rtsp://h/x", "width": W, "height": H, "privacy": privacy}
                ],
            }
        ]
    }
    if models is not None:
        data["models"] = models
    return parse_config(data, "test", env={})


def rect(x1: float, y1: float, x2: float, y2: float) -> list[list[float]]:
    return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    img, _ = ConveyorScene(SceneConfig(seed=3, width=W, height=H)).render(40)
    return img


def test_blank_mask_zeroes_the_polygon_and_nothing_else(frame: np.ndarray) -> None:
    f = PrivacyFilter(cam(masks=[{"polygon": rect(100, 50, 300, 200), "mode": "blank"}]))
    out = f.apply(frame.copy())
    assert not out[50:200, 100:300].any()
    inside = np.zeros((H, W), bool)
    inside[50:201, 100:301] = True  # the polygon's edges are masked too (conservative)
    assert np.array_equal(out[~inside], frame[~inside])
    assert frame[50:200, 100:300].mean() > 30  # the region had content to hide


def test_triangle_mask_follows_the_polygon_not_its_bounding_box(frame: np.ndarray) -> None:
    f = PrivacyFilter(cam(masks=[{"polygon": [[0, 0], [200, 0], [0, 200]]}]))
    out = f.apply(np.full((H, W, 3), 255, np.uint8))
    assert not out[10, 10].any() and not out[90, 90].any()  # inside the triangle
    assert (out[150, 150] == 255).all()  # in the bounding box, outside the triangle


def test_blur_mask_makes_the_frame_code_unreadable(frame: np.ndarray) -> None:
    x1, y1, x2, y2 = frame_code_box(W, H)
    assert decode_frame_index(frame) == 40
    f = PrivacyFilter(cam(masks=[{"polygon": rect(0, 0, x2 + 4, y2 + 4), "mode": "blur"}]))
    out = f.apply(frame.copy())
    assert decode_frame_index(out) is None
    region, before = out[y1:y2, x1:x2].astype(float), frame[y1:y2, x1:x2].astype(float)
    # the black/white cells are gone (far less local contrast), but blurred, not blanked
    assert np.abs(np.diff(region, axis=1)).mean() < 0.25 * np.abs(np.diff(before, axis=1)).mean()
    assert region.mean() > 60
    assert np.array_equal(out[y2 + 10 :], frame[y2 + 10 :])


def test_mask_plan_is_built_once_per_frame_size(frame: np.ndarray) -> None:
    f = PrivacyFilter(cam(masks=[{"polygon": rect(0, 0, 10, 10)}]))
    f.apply(frame.copy())
    first = f.plan(W, H)
    f.apply(frame.copy())
    assert f.plan(W, H) is first


def test_redaction_boxes_pad_clip_and_filter() -> None:
    s = plant({"redaction": {"model": "default", "classes": ["part"], "min_confidence": 0.5}})
    red = s.lines[0].cameras[0].privacy.redaction
    assert red is not None
    found = [
        ("part", 0.9, (10, 10, 110, 60)),
        ("part", 0.4, (200, 200, 300, 300)),  # below min_confidence
        ("bolt", 0.99, (0, 0, 50, 50)),  # not a redacted class
        ("part", 0.8, (600, 300, 640, 360)),  # padded past the frame edge: clipped
    ]
    assert redaction_boxes(found, red, W, H) == [(0, 5, 120, 65), (596, 294, 640, 360)]


class Boom:
    info: Any = None

    def detect(self, images: list[np.ndarray]) -> list[list[Any]]:
        raise RuntimeError("onnx session lost")


def test_a_failing_redaction_model_raises_instead_of_returning_the_frame(
    frame: np.ndarray,
) -> None:
    cfg = plant({"redaction": {"model": "default", "classes": ["part"]}})
    f = PrivacyFilter(cfg.lines[0].cameras[0], SharedDetector(Boom()))
    with pytest.raises(RedactionFailed, match="onnx session lost"):
        f.apply(frame.copy())


def test_redaction_model_that_cannot_load_refuses_to_start(tmp_path: Any) -> None:
    cfg = plant(
        {"redaction": {"model": "people", "classes": ["person"]}},
        models={"default": {}, "people": {"path": str(tmp_path / "missing.onnx")}},
    )
    with pytest.raises(PrivacyError, match="redaction model 'people' cannot be loaded"):
        load_redactors(cfg, [cfg.lines[0].cameras[0]])


@pytest.mark.model
def test_redaction_class_the_model_lacks_refuses_to_start() -> None:
    cfg = plant(
        {"redaction": {"model": "default", "classes": ["face"]}},
        models={"default": {"device": "cpu"}},
    )
    with pytest.raises(PrivacyError, match=r"has no class \['face'\]"):
        load_redactors(cfg, [cfg.lines[0].cameras[0]])


@pytest.mark.model
def test_shipped_model_redacts_its_part_class_standing_in_for_a_person() -> None:
    """defects-v1 has no person class; its ``part`` class (a plate moving along the belt)
    stands in for one: a region that moves, found by a detector, redacted in every frame."""
    cfg = plant(
        {"redaction": {"model": "default", "classes": ["part"], "min_confidence": 0.5}},
        models={"default": {"device": "cpu"}},
    )
    filters = build_filters(cfg, [cfg.lines[0].cameras[0]])
    scene = ConveyorScene(SceneConfig(seed=3, width=W, height=H))
    det = load_detector(ModelSettings(device="cpu"))
    redacted = 0
    for i in range(0, 60, 6):
        img, _ = scene.render(i)
        parts = [d for d in det.detect([img])[0] if d.cls == "part" and d.score >= 0.5]
        out = filters["cam"].apply(img.copy())
        for d in parts:
            b = d.box
            assert not out[int(b.y1) + 1 : int(b.y2) - 1, int(b.x1) + 1 : int(b.x2) - 1].any()
            redacted += 1
    assert redacted >= 3
    assert filters["cam"].boxes_redacted == redacted


def test_config_rejects_masks_outside_the_frame_and_unknown_models() -> None:
    with pytest.raises(ConfigError, match="outside the 640x360 frame"):
        plant({"masks": [{"polygon": rect(0, 0, 700, 10)}]})
    with pytest.raises(ConfigError, match=r"privacy\.redaction\.model 'people' is not one of"):
        plant({"redaction": {"model": "people", "classes": ["person"]}})
    with pytest.raises(ConfigError, match="at least 3"):
        plant({"masks": [{"polygon": [[0, 0], [1, 1]]}]})
    with pytest.raises(ConfigError, match="mode"):
        plant({"masks": [{"polygon": rect(0, 0, 9, 9), "mode": "pixelate"}]})
