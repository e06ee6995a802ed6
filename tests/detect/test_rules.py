"""Line rules: pure logic, no servers."""

from __future__ import annotations

import numpy as np

from inspector.config import LineRules
from inspector.detect.rules import CompiledRules, image_is_uniform, part_decision, point_in_polygon
from inspector.events import Box, Detection

W, H = 1280, 720


def det(cls: str, score: float, x1: float, y1: float, x2: float, y2: float) -> Detection:
    return Detection(cls=cls, score=score, box=Box(x1=x1, y1=y1, x2=x2, y2=y2))


def rules(**kw: object) -> CompiledRules:
    return CompiledRules(LineRules.model_validate(kw))


def test_pass_when_nothing_fails() -> None:
    r = rules(classes={"scratch": {"min_confidence": 0.5}, "part": {"fail": False}})
    j = r.judge(
        [det("part", 0.9, 100, 100, 500, 400), det("scratch", 0.3, 200, 200, 260, 220)], W, H
    )
    assert j.verdict == "PASS" and j.rule == "pass" and j.findings == []


def test_fail_names_rule_and_orders_by_severity() -> None:
    r = rules(classes={"scratch": {"severity": "minor"}, "crack": {"severity": "critical"}})
    j = r.judge(
        [det("scratch", 0.95, 10, 100, 90, 120), det("crack", 0.6, 300, 300, 360, 380)], W, H
    )
    assert j.verdict == "FAIL"
    assert j.rule == "class:crack"
    assert [f.cls for f in j.findings] == ["crack", "scratch"]


def test_unlisted_class_never_fails() -> None:
    j = rules(classes={}).judge([det("stain", 0.99, 10, 100, 90, 120)], W, H)
    assert j.verdict == "PASS"


def test_min_area_px_and_mm2() -> None:
    r = rules(classes={"dent": {"min_area_px": 1000}})
    assert r.judge([det("dent", 0.9, 0, 100, 20, 120)], W, H).verdict == "PASS"  # 400 px²
    assert r.judge([det("dent", 0.9, 0, 100, 40, 130)], W, H).verdict == "FAIL"  # 1200 px²
    r2 = rules(mm_per_px=0.5, classes={"dent": {"min_area_mm2": 100}})
    assert r2.judge([det("dent", 0.9, 0, 100, 19, 119)], W, H).verdict == "PASS"  # 90.25 mm²
    assert r2.judge([det("dent", 0.9, 0, 100, 21, 120)], W, H).verdict == "FAIL"  # 105 mm²


def test_roi_and_ignore_masks() -> None:
    r = rules(
        classes={"stain": {}},
        roi=[[(0, 80), (1280, 80), (1280, 660), (0, 660)]],
        ignore=[[(0, 0), (300, 0), (300, 300), (0, 300)]],
    )
    assert r.judge([det("stain", 0.9, 500, 10, 540, 50)], W, H).verdict == "PASS"  # outside ROI
    assert r.judge([det("stain", 0.9, 100, 100, 140, 140)], W, H).verdict == "PASS"  # ignored
    assert r.judge([det("stain", 0.9, 500, 300, 540, 340)], W, H).verdict == "FAIL"


def test_required_features_within_part() -> None:
    r = rules(required_features=[{"feature": "bolt", "min_count": 4, "within": "part"}])
    part = det("part", 0.9, 400, 150, 900, 550)
    bolts = [
        det("bolt", 0.8, x, y, x + 40, y + 40)
        for x, y in ((420, 170), (840, 170), (420, 490), (840, 490))
    ]
    assert r.judge([part, *bolts], W, H).verdict == "PASS"
    j = r.judge([part, *bolts[:3]], W, H)
    assert j.verdict == "FAIL" and j.rule == "required:bolt>=4/part"
    assert j.findings[0].box == part.box
    # A part cut by the frame edge cannot be counted, so it does not fail.
    edge = det("part", 0.9, 0, 150, 500, 550)
    assert r.judge([edge, *bolts[:1]], W, H).verdict == "PASS"
    # Low-confidence bolts do not count.
    weak = [b.model_copy(update={"score": 0.2}) for b in bolts]
    assert r.judge([part, *weak], W, H).verdict == "FAIL"


def test_required_feature_per_frame() -> None:
    r = rules(required_features=[{"feature": "label", "min_count": 1}])
    assert r.judge([], W, H).rule == "required:label"
    assert r.judge([det("label", 0.9, 1, 1, 50, 50)], W, H).verdict == "PASS"


def test_part_aggregation() -> None:
    any_ = LineRules.model_validate({"part_aggregation": {"mode": "any"}})
    k2 = LineRules.model_validate({"part_aggregation": {"mode": "k_of_n", "k": 2}})
    assert part_decision(1, any_) and not part_decision(0, any_)
    assert not part_decision(1, k2) and part_decision(2, k2)


def test_point_in_polygon_and_uniform() -> None:
    sq = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]
    assert point_in_polygon(5, 5, sq) and not point_in_polygon(15, 5, sq)
    assert image_is_uniform(np.full((36, 64), 128, np.uint8), 4.0)
    rng = np.random.default_rng(0)
    assert not image_is_uniform(rng.integers(0, 255, (36, 64), dtype=np.uint8), 4.0)
