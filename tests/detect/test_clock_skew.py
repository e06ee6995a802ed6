"""Clock skew: a frame whose timestamps cannot be trusted is FAULT, never judged as fresh.

Unit level: the vetting of one frame against a plant config (no servers needed). The
end-to-end check through a real worker is in test_worker.py.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from inspector.config import PlantConfig, WorkerSettings, parse_config
from inspector.detect.model import ModelInfo
from inspector.detect.worker import DetectWorker, FrameJob, clock_skew
from inspector.events import FrameMeta, Timings, VerdictEvent
from tests.conftest import base_config_dict

NOW = 1_800_000_000.0


def plant(**worker: Any) -> PlantConfig:
    data = base_config_dict("127.0.0.1:1", "redis://127.0.0.1:1", uuid.uuid4().hex[:8])
    data["lines"][0]["cameras"][0].update(width=64, height=64)
    data["worker"].update(worker)
    data["frames"] = {"max_age_s": 30}
    return parse_config(data, "test", env={})


class NoModel:
    """Vetting never reaches the model; DetectWorker only reads its info."""

    info = ModelInfo(name="none", version="0", sha256="0" * 64, names={}, imgsz=64,
                     backend="none", device="cpu", path="none")

    def detect(self, images: list[Any]) -> list[Any]:
        raise AssertionError("vetting must not run the model")


def meta(captured_at: float, ingested_at: float) -> FrameMeta:
    return FrameMeta(
        frame_id="cam-1:r:0", camera_id="cam-1", line_id="line-1", run_id="r", seq=0,
        captured_at=captured_at, ingested_at=ingested_at, width=64, height=64,
        storage="redis", claim_key="k", size_bytes=10,
    )


def vetted(cfg: PlantConfig, m: FrameMeta, now: float = NOW) -> tuple[str, str] | None:
    worker = DetectWorker(cfg, NoModel(), store=None)  # type: ignore[arg-type]
    try:
        job = FrameJob(msg=None, meta=m, jpeg=b"\xff\xd8")  # type: ignore[arg-type]
        worker.shed([job], now)
        if job.fault is None:
            worker.vet(job, now)
        return job.fault
    finally:
        worker.infer_pool.shutdown()


@pytest.mark.parametrize(
    ("captured", "ingested", "why"),
    [
        (NOW + 3600, NOW + 3600, "captured 3600.000s in the future"),  # camera clock ahead
        (NOW + 2.5, NOW + 2.5, "captured 2.500s in the future"),  # just past the 2 s skew
        (NOW + 1e9, NOW, "in the future"),
        (NOW - 1, -1.0, "negative time"),
        (NOW - 1, -1e9, "negative time"),
        (NOW, NOW - 60, "published 60.000s before it was captured"),
        (NOW - 1, NOW + 600, "published 600.000s in the future"),
    ],
)
def test_skewed_frames_are_fault_clock_skew(captured: float, ingested: float, why: str) -> None:
    fault = vetted(plant(), meta(captured, ingested))
    assert fault is not None and fault[0] == "fault:clock_skew", fault
    assert why in fault[1], fault[1]


@pytest.mark.parametrize(
    ("captured", "ingested"),
    [
        (NOW - 0.05, NOW - 0.01),  # an ordinary frame
        (NOW + 1.9, NOW + 1.95),  # camera slightly ahead, within the 2 s skew
        (NOW - 1, NOW - 2.9),  # ingest host 1.9 s behind the camera: within the skew
    ],
)
def test_frames_within_the_skew_are_vetted_as_usual(captured: float, ingested: float) -> None:
    assert vetted(plant(), meta(captured, ingested)) is None


def test_skew_limit_is_configurable_and_zero_means_exact() -> None:
    m = meta(NOW + 0.5, NOW + 0.5)
    assert vetted(plant(), m) is None
    fault = vetted(plant(max_clock_skew_ms=100), m)
    assert fault is not None and fault[0] == "fault:clock_skew"
    assert "max skew 0.1s" in fault[1]
    assert clock_skew(meta(NOW, NOW), NOW, 0.0) is None
    assert clock_skew(meta(NOW + 0.001, NOW + 0.001), NOW, 0.0) is not None


def test_old_frames_are_still_stale_not_skewed() -> None:
    fault = vetted(plant(), meta(NOW - 600, NOW - 600))
    assert fault is not None and fault[0] == "fault:stale"


def test_skew_setting_is_bounded_and_titled() -> None:
    field = WorkerSettings.model_fields["max_clock_skew_ms"]
    assert field.title and field.default == 2000.0
    for bad in (-1, 3_600_001, True, float("nan"), float("inf")):
        with pytest.raises(ValidationError):
            WorkerSettings(max_clock_skew_ms=bad)
    assert WorkerSettings(max_clock_skew_ms=0).max_clock_skew_ms == 0


def test_a_clock_skew_fault_is_a_valid_verdict() -> None:
    """The FAULT verdict carries the skewed timestamps as they came and stays schema-valid."""
    m = meta(NOW + 3600, -5.0)
    fault = vetted(plant(), m)
    assert fault is not None
    v = VerdictEvent(
        verdict_id="v", frame_id=m.frame_id, camera_id=m.camera_id, line_id=m.line_id,
        seq=m.seq, verdict="FAULT", rule=fault[0], reason=fault[1], findings=[],
        detections=[],
        timings=Timings(captured_at=m.captured_at, ingested_at=m.ingested_at,
                        emitted_at=time.time()),
    )
    assert VerdictEvent.model_validate_json(v.model_dump_json()) == v
