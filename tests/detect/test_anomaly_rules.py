"""The anomaly channel in the verdict: the rule's config, its effect on a judgement (pure,
no broker), the bounded verdict field, and one worker judging real frames with a bank."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from inspector.config import AnomalyRule, LineRules, anomaly_bank_dir, parse_config
from inspector.detect.rules import Judgement, anomaly_report, apply_anomaly
from inspector.events import AnomalyReport, Box, Finding, FrameMeta, PartAnomaly
from inspector.inference.model import Detector, ModelError
from tests.conftest import base_config_dict, deep_merge

B = Box(x1=10, y1=10, x2=110, y2=90)


def test_rule_config_is_strict_and_off_by_default() -> None:
    r = LineRules()
    assert not r.anomaly.enabled and r.anomaly.action == "review" and r.anomaly.threshold is None
    LineRules.model_validate({"anomaly": {"enabled": True, "action": "fail", "threshold": 4.5}})
    for bad in ({"action": "stop"}, {"threshold": 0}, {"thresh": 1}, {"max_parts": 65}):
        with pytest.raises(ValidationError):
            AnomalyRule.model_validate(bad)
    assert anomaly_bank_dir("builtin:defects-v1").name == "defects-v1"
    assert anomaly_bank_dir("/srv/banks/x") == Path("/srv/banks/x")


def test_report_over_is_strictly_above_the_threshold() -> None:
    rep = anomaly_report([(B, 5.0), (B, 5.0001)], 5.0, "review", skipped=1)
    assert [p.over for p in rep.parts] == [False, True] and rep.flagged and rep.skipped == 1
    assert not anomaly_report([(B, 4.0)], 5.0, "fail").flagged


def test_fail_action_fails_a_passing_frame_with_rule_anomaly() -> None:
    rule = AnomalyRule(enabled=True, action="fail", severity="major")
    rep = anomaly_report([(B, 8.0), (B, 2.0)], 5.0, "fail")
    j = apply_anomaly(Judgement("PASS", "pass", "no failing detection"), rep, rule)
    assert j.verdict == "FAIL" and j.rule == "anomaly" and j.anomaly == rep
    assert [(f.cls, f.rule, f.score) for f in j.findings] == [("anomaly", "anomaly", 0.375)]


def test_fail_action_keeps_a_worse_class_finding_on_top() -> None:
    crit = Finding(cls="crack", score=0.9, box=B, severity="critical", rule="class:crack")
    rule = AnomalyRule(enabled=True, action="fail", severity="major")
    j0 = Judgement("FAIL", "class:crack", "1 finding(s)", [crit])
    j = apply_anomaly(j0, anomaly_report([(B, 10.0)], 5.0, "fail"), rule)
    assert j.verdict == "FAIL" and j.rule == "class:crack" and len(j.findings) == 2


def test_review_marks_without_failing_and_fault_stays_fault() -> None:
    rule = AnomalyRule(enabled=True, action="review")
    rep = anomaly_report([(B, 8.0)], 5.0, "review")
    j = apply_anomaly(Judgement("PASS", "pass", "ok"), rep, rule)
    assert j.verdict == "PASS" and j.rule == "pass" and j.findings == []
    assert j.anomaly is not None and j.anomaly.flagged
    fault = Judgement("FAULT", "fault:expired", "old")
    fail_rule = AnomalyRule(enabled=True, action="fail")
    assert apply_anomaly(fault, anomaly_report([(B, 9.0)], 5.0, "fail"), fail_rule) is fault
    quiet = apply_anomaly(Judgement("PASS", "pass", "ok"), anomaly_report([], 5.0, "fail"), rule)
    assert quiet.verdict == "PASS" and quiet.anomaly is not None and not quiet.anomaly.flagged


def test_verdict_field_is_bounded() -> None:
    part = PartAnomaly(box=B, score=1.0, over=False)
    AnomalyReport(threshold=1.0, action="review", flagged=False, parts=[part] * 64)
    with pytest.raises(ValidationError):
        AnomalyReport(threshold=1.0, action="review", flagged=False, parts=[part] * 65)
    with pytest.raises(ValidationError):
        PartAnomaly(box=B, score=-1.0, over=False)


# ------------------------------------------------------------------ worker


@pytest.fixture(scope="module")
def bank() -> str:
    """The bank shipped beside defects-v1 (fit on other seeds than the frames below)."""
    return "builtin:defects-v1"


def _config(bank: Path | str, **anomaly: Any) -> Any:
    base = base_config_dict("127.0.0.1:1", "redis://127.0.0.1:1", uuid.uuid4().hex[:8])
    rules = {"anomaly": {"enabled": True, "bank": str(bank), **anomaly}}
    over = {"lines": [{"id": "line-1", "cameras": [{"id": "cam-1", "url": "rtsp://x/1"}],
                       "rules": rules}]}  # fmt: skip
    return parse_config(deep_merge(base, over), "test", env={})


def _job(frame: np.ndarray) -> Any:
    from inspector.detect.worker import FrameJob

    _, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
    jpeg = buf.tobytes()
    now = time.time()
    meta = FrameMeta(
        frame_id="cam-1:r:1", camera_id="cam-1", line_id="line-1", run_id="r", seq=1,
        captured_at=now, ingested_at=now, width=frame.shape[1], height=frame.shape[0],
        storage="inline", size_bytes=len(jpeg),
    )  # fmt: skip
    return FrameJob(msg=None, meta=meta, jpeg=jpeg)  # type: ignore[arg-type]


def _mid_frame(seed: int, novel: float) -> np.ndarray:
    from inspector.sim import ConveyorScene, SceneConfig

    scene = ConveyorScene(SceneConfig(seed=seed, defect_rate=0.0, novel_defect_rate=novel))
    rec = next(p for p in scene.clip_truth().parts if p.first_full_frame >= 0)
    frame, _ = scene.render((rec.first_full_frame + rec.last_full_frame) // 2)
    return frame


def test_worker_scores_detected_parts_and_fails_a_burn(bank: str, detector: Detector) -> None:
    from inspector.detect.worker import DetectWorker

    worker = DetectWorker(_config(bank, action="fail"), detector, store=None)  # type: ignore[arg-type]
    burn, good = _job(_mid_frame(7301, 1.0)), _job(_mid_frame(7301, 0.0))
    worker.infer([burn, good])
    jb, jg = worker.judgement(burn), worker.judgement(good)
    assert jb.anomaly is not None and jg.anomaly is not None
    assert len(jb.anomaly.parts) == 1 and len(jg.anomaly.parts) == 1  # one part, in view
    assert jb.anomaly.parts[0].score > jg.anomaly.parts[0].score
    assert jb.verdict == "FAIL" and any(f.rule == "anomaly" for f in jb.findings)
    assert not jg.anomaly.flagged and jg.verdict == "PASS"
    # review: the same burn passes, marked, and the verdict carries the report
    reviewer = DetectWorker(_config(bank, action="review"), detector, store=None)  # type: ignore[arg-type]
    reviewer.infer([burn])
    jr = reviewer.judgement(burn)
    assert jr.verdict == "PASS" and jr.anomaly is not None and jr.anomaly.flagged
    v = reviewer.judge(burn, jr, None, 0.0, 0.0, pipe=None)
    assert v.verdict == "PASS" and v.anomaly == jr.anomaly


def test_worker_refuses_a_missing_bank_in_one_line(tmp_path: Path, detector: Detector) -> None:
    from inspector.detect.worker import DetectWorker

    with pytest.raises(ModelError, match="line line-1: anomaly bank"):
        DetectWorker(_config(tmp_path / "none"), detector, store=None)  # type: ignore[arg-type]
