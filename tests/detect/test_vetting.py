"""Vetting at unit level: a frame that cannot be trusted is FAULT, never judged.

Clock skew (timestamps that cannot be trusted) and JPEG headers that declare another
size than the message (pixel bombs) — against a plant config, no servers needed. The
end-to-end checks through a real worker are in test_worker.py and tests/test_poison.py.
"""

from __future__ import annotations

import resource
import time
import uuid
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from inspector.config import PlantConfig, WorkerSettings, parse_config
from inspector.detect.worker import DetectWorker, FrameJob, clock_skew, jpeg_size
from inspector.events import FrameMeta, Timings, VerdictEvent
from inspector.inference.model import ModelInfo
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

    info = ModelInfo(
        name="none",
        version="0",
        sha256="0" * 64,
        names={},
        imgsz=64,
        backend="none",
        device="cpu",
        path="none",
    )

    def detect(self, images: list[Any]) -> list[Any]:
        raise AssertionError("vetting must not run the model")


def meta(captured_at: float, ingested_at: float) -> FrameMeta:
    return FrameMeta(
        frame_id="cam-1:r:0",
        camera_id="cam-1",
        line_id="line-1",
        run_id="r",
        seq=0,
        captured_at=captured_at,
        ingested_at=ingested_at,
        width=64,
        height=64,
        storage="redis",
        claim_key="k",
        size_bytes=10,
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
        verdict_id="v",
        frame_id=m.frame_id,
        camera_id=m.camera_id,
        line_id=m.line_id,
        seq=m.seq,
        verdict="FAULT",
        rule=fault[0],
        reason=fault[1],
        findings=[],
        detections=[],
        timings=Timings(
            captured_at=m.captured_at, ingested_at=m.ingested_at, emitted_at=time.time()
        ),
    )
    assert VerdictEvent.model_validate_json(v.model_dump_json()) == v


# --------------------------------------------------------------------------- JPEG headers


def jpeg(w: int, h: int, **params: int) -> bytes:
    rng = np.random.default_rng(0)
    flags = [v for kv in params.items() for v in (getattr(cv2, kv[0]), kv[1])]
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (h, w, 3), np.uint8), flags)
    assert ok
    return bytes(buf.tobytes())


def claim_size(data: bytes, w: int, h: int) -> bytes:
    """The same JPEG with its frame header rewritten to declare w x h (a pixel bomb)."""
    b = bytearray(data)
    i = 2
    while b[i + 1] not in (0xC0, 0xC2):
        i += 2 + int.from_bytes(b[i + 2 : i + 4], "big")
    b[i + 5 : i + 7] = h.to_bytes(2, "big")
    b[i + 7 : i + 9] = w.to_bytes(2, "big")
    return bytes(b)


def test_jpeg_size_reads_the_frame_header() -> None:
    assert jpeg_size(jpeg(64, 48)) == (64, 48)
    assert jpeg_size(jpeg(33, 17, IMWRITE_JPEG_PROGRESSIVE=1)) == (33, 17)
    assert jpeg_size(claim_size(jpeg(16, 16), 20000, 20000)) == (20000, 20000)
    for junk in (
        b"",
        b"\xff",
        b"\xff\xd8",
        b"\xff\xd8\xffnot-a-jpeg" * 10,
        b"GIF89a" + bytes(99),
        b"\xff\xd8\xff\xda\x00\x02",
        b"\xff\xd8\xff\xc0\x00\x11\x08",
        b"\xff\xd8\xff\xe0\x00\x00",
        jpeg(8, 8)[:20],
    ):
        assert jpeg_size(junk) is None, junk


def vet_image(data: bytes, width: int = 64, height: int = 64) -> FrameJob:
    cfg = plant()
    worker = DetectWorker(cfg, NoModel(), store=None)  # type: ignore[arg-type]
    m = meta(NOW, NOW).model_copy(update={"width": width, "height": height})
    job = FrameJob(msg=None, meta=m, jpeg=data)  # type: ignore[arg-type]
    try:
        worker.vet_image(job)
    finally:
        worker.infer_pool.shutdown()
    return job


def test_a_pixel_bomb_is_refused_before_decoding() -> None:
    """928 bytes declaring 20000x20000: decoding would allocate 2.3 GB and take seconds."""
    bomb = claim_size(jpeg(16, 16), 20000, 20000)
    assert len(bomb) < 2000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    job = vet_image(bomb)
    assert job.fault is not None and job.fault[0] == "fault:wrong_size", job.fault
    assert "JPEG header says 20000x20000, message says 64x64" in job.fault[1]
    assert job.image is None
    assert time.perf_counter() - t0 < 0.5
    grew_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grew_kb < 100_000, f"vetting grew the process by {grew_kb} kB"


def test_a_bomb_that_matches_the_message_still_fails_the_camera_check() -> None:
    """A message claiming the bomb's size is refused by vet() before vet_image runs."""
    fault = vetted(plant(), meta(NOW, NOW).model_copy(update={"width": 20000, "height": 20000}))
    assert fault is not None and fault[0] == "fault:wrong_size"


def test_an_honest_jpeg_decodes_and_junk_is_undecodable() -> None:
    good = vet_image(_textured(64, 64))
    assert good.fault is None and good.image is not None
    junk = vet_image(b"\xff\xd8\xffnot-a-jpeg" * 10)
    assert junk.fault is not None and junk.fault[0] == "fault:undecodable"
    assert "no frame header" in junk.fault[1]


def _textured(w: int, h: int) -> bytes:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = 200
    img[h // 2 :, :] = 60
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return bytes(buf.tobytes())
