"""No unmasked pixel reaches Redis or Kafka: real RTSP cameras, real ingest, broker and Redis.

Three ingest cameras read the same simulated stream (cam-a of the fleet):

- ``cam-mask`` blanks a band over the belt's top rail (a bright stripe in every frame) and
  blurs a band over the bottom rail; its frame-index code stays visible, so every frame it
  publishes is compared with the simulator's own rendering of that frame;
- ``cam-code`` blanks the frame-index code (a white label with black cells, bright in
  every frame);
- ``cam-plain`` has no mask: it proves the bright patterns do reach Kafka/Redis unmasked,
  so the assertions on the masked cameras can fail.

Every frame record on the frames topic and every key ingest wrote to Redis is read back.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from inspector.bus.crypto import is_sealed, store_sealer
from inspector.bus.store import connect
from inspector.config import PlantConfig
from inspector.sim import ConveyorScene, SceneConfig, SimCameraFleet, decode_frame_index
from inspector.sim.framecode import frame_code_box
from tests.helpers import wait_for
from tests.ingest.conftest import H, W, camera, collecting, running

pytestmark = pytest.mark.integration

TOP = (150, 30, 630, 80)  # blank: covers the top rail (y ~ 45-55)
BOTTOM = (150, 300, 630, 350)  # blur: covers the bottom rail (y ~ 320-330)
CX1, CY1, CX2, CY2 = frame_code_box(W, H)
CODE = (0, 0, CX2 + 4, CY2 + 4)
FRAMES_EACH = 8


def poly(r: tuple[int, int, int, int]) -> list[list[int]]:
    x1, y1, x2, y2 = r
    return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]


def region(img: np.ndarray, r: tuple[int, int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = r
    return img[y1 : y2 + 1, x1 : x2 + 1].astype(np.float32)


def vertical_edges(a: np.ndarray) -> float:
    """Strongest row-to-row step, column-averaged: the rail's sharp edge, or a blur of it."""
    return float(np.abs(np.diff(a.mean(axis=2), axis=0)).mean(axis=1).max())


def check_cam_mask(img: np.ndarray, scene: ConveyorScene) -> None:
    idx = decode_frame_index(img)
    assert idx is not None, "the unmasked frame code must still decode"
    truth, _ = scene.render(idx)
    # the bright rail is in the source and gone from what was published
    assert region(truth, TOP).max() > 180
    assert region(img, TOP).max() <= 24, "unmasked pixel in the blank mask"
    # blurred: same light, no sharp rail edges left
    assert vertical_edges(region(truth, BOTTOM)) > 20
    assert vertical_edges(region(img, BOTTOM)) < 0.5 * vertical_edges(region(truth, BOTTOM))
    assert abs(region(img, BOTTOM).mean() - region(truth, BOTTOM).mean()) < 25
    # everything outside the masks is the camera's picture
    outside = np.ones((H, W), bool)
    for x1, y1, x2, y2 in (TOP, BOTTOM):
        outside[max(0, y1 - 8) : y2 + 9, max(0, x1 - 8) : x2 + 9] = False
    diff = np.abs(img.astype(np.float32) - truth.astype(np.float32))[outside].mean()
    assert diff < 12, f"outside the masks the frame differs from the source by {diff:.1f}"


def check_cam_code(img: np.ndarray) -> None:
    assert decode_frame_index(img) is None
    assert region(img, (CX1, CY1, CX2 - 1, CY2 - 1)).max() <= 24, "unmasked frame-code pixel"
    assert img[CODE[3] + 10 :].mean() > 30  # the rest of the picture is still there


def check_cam_plain(img: np.ndarray) -> None:
    assert decode_frame_index(img) is not None
    assert region(img, (CX1, CY1, CX2 - 1, CY2 - 1)).max() > 200
    assert region(img, TOP).max() > 180


def decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (H, W, 3)
    return img


@pytest.mark.parametrize(
    ("transport", "encrypted"), [("claim_check", False), ("inline", False), ("claim_check", True)]
)
def test_no_unmasked_pixel_reaches_redis_or_kafka(
    transport: str,
    encrypted: bool,
    fleet: SimCameraFleet,
    ingest_config: Callable[..., PlantConfig],
    tmp_path: Path,
) -> None:
    """With encryption on, Redis holds only sealed blobs (no JPEG magic bytes), and what
    they open to is masked just the same."""
    url = fleet.url("cam-a")
    keys_file = None
    if encrypted:
        keys_file = str(tmp_path / "store-keys")
        Path(keys_file).write_text(f"k1:{base64.b64encode(os.urandom(32)).decode()}\n")
    masked: dict[str, Any] = {
        "masks": [
            {"polygon": poly(TOP), "mode": "blank"},
            {"polygon": poly(BOTTOM), "mode": "blur"},
        ]
    }
    cfg = ingest_config(
        [
            camera("cam-mask", url, privacy=masked),
            camera("cam-code", url, privacy={"masks": [{"polygon": poly(CODE)}]}),
            camera("cam-plain", url),
        ],
        frames={"transport": transport, "encryption": {"keys_file": keys_file}},
    )
    sealer = store_sealer(cfg)
    assert sealer.encrypts == encrypted
    checks: dict[str, Callable[[np.ndarray], None]] = {
        "cam-mask": lambda img: check_cam_mask(img, scene),
        "cam-code": check_cam_code,
        "cam-plain": check_cam_plain,
    }
    scene = ConveyorScene(SceneConfig(seed=11, width=W, height=H))
    with collecting(cfg) as col, running(cfg, triggers=False):
        wait_for(
            lambda: all(len(col.frames(c)) >= FRAMES_EACH for c in checks), 30, "frames of all"
        )
    client = connect(cfg.redis)
    records = col.frames()
    seen = {c: 0 for c in checks}
    for meta, inline, _ in records:
        if transport == "inline":
            assert inline is not None
            jpeg = inline
        else:
            assert inline is None and meta.claim_key is not None
            raw = client.get(meta.claim_key)
            assert isinstance(raw, bytes)
            assert is_sealed(raw) == encrypted
            jpeg = sealer.open(meta.claim_key, raw)
        checks[meta.camera_id](decode(jpeg))
        seen[meta.camera_id] += 1
    assert all(n >= FRAMES_EACH for n in seen.values()), seen
    # every image ingest left in Redis, whether or not a record points at it
    stored = 0
    for key in client.scan_iter(match=f"{cfg.redis.key_prefix}:*", count=1000):
        value = client.get(key)
        assert isinstance(value, bytes)
        if encrypted:
            assert value[:3] != b"\xff\xd8\xff" and is_sealed(value), key
            value = sealer.open(key.decode(), value)
        if value[:3] == b"\xff\xd8\xff":
            cam_id = key.decode().removeprefix(f"{cfg.redis.key_prefix}:frame:").split(":")[0]
            checks[cam_id](decode(value))
            stored += 1
    if transport == "claim_check":
        assert stored >= len(records)
    else:
        assert stored == 0


def test_ingest_refuses_to_start_without_its_redaction_model(
    fleet: SimCameraFleet, ingest_config: Callable[..., PlantConfig], tmp_path: Any
) -> None:
    from inspector.ingest.privacy import PrivacyError
    from inspector.ingest.service import IngestService

    red = {"redaction": {"model": "people", "classes": ["person"]}}
    cfg = ingest_config(
        [camera("cam-r", fleet.url("cam-a"), privacy=red)],
        models={"default": {}, "people": {"path": str(tmp_path / "people.onnx")}},
    )
    svc = IngestService(cfg, triggers=False)
    with pytest.raises(PrivacyError, match="ingest will not publish unredacted frames"):
        svc.start()
    svc.stop()
    assert svc.readers == [] and svc.frames_producer is None


@pytest.mark.model
def test_a_redaction_failure_drops_the_frame_never_publishes_it(
    fleet: SimCameraFleet,
    ingest_config: Callable[..., PlantConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from inspector.ingest.privacy import SharedDetector

    def broken(self: SharedDetector, image: np.ndarray) -> list[Any]:
        raise RuntimeError("inference failed")

    monkeypatch.setattr(SharedDetector, "detect", broken)
    red = {"redaction": {"model": "default", "classes": ["part"]}}
    cfg = ingest_config(
        [camera("cam-r", fleet.url("cam-a"), privacy=red), camera("cam-plain", fleet.url("cam-a"))],
        models={"default": {"device": "cpu"}},
    )
    with collecting(cfg) as col, running(cfg, triggers=False) as svc:
        reader = next(r for r in svc.readers if r.camera.id == "cam-r")
        wait_for(lambda: reader.stats.drops.get("redaction_failed", 0) >= 5, 30, "drops")
        wait_for(lambda: len(col.frames("cam-plain")) >= 5, 30, "the other camera's frames")
    assert col.frames("cam-r") == []
    assert reader.stats.frames_ingested == 0
    client = connect(cfg.redis)
    assert not list(client.scan_iter(match=f"{cfg.redis.key_prefix}:frame:cam-r:*"))


@pytest.mark.model
def test_redaction_model_blanks_what_moves_in_every_published_frame(
    fleet: SimCameraFleet, ingest_config: Callable[..., PlantConfig]
) -> None:
    """The shipped defects-v1 model stands in for a person detector: its ``part`` class
    (plates moving along the belt) is redacted. Every part the simulator says is fully in
    view must be black in what reached Redis (the model finds each of them at >= 0.92 on
    this clip, so a miss here is a real failure, not noise)."""
    red = {"redaction": {"model": "default", "classes": ["part"], "min_confidence": 0.5}}
    cfg = ingest_config(
        [camera("cam-r", fleet.url("cam-a"), privacy=red)], models={"default": {"device": "cpu"}}
    )
    scene = ConveyorScene(SceneConfig(seed=11, width=W, height=H))
    with collecting(cfg) as col, running(cfg, triggers=False):
        wait_for(lambda: len(col.frames("cam-r")) >= 15, 30, "frames")
    client = connect(cfg.redis)
    parts = 0
    for meta, _, _ in col.frames("cam-r"):
        raw = client.get(meta.claim_key or "")
        assert isinstance(raw, bytes)
        img = decode(raw)
        idx = decode_frame_index(img)
        assert idx is not None  # the rest of the frame is intact
        truth, labels = scene.render(idx)
        for p in labels.parts:
            if not p.fully_in_view:
                continue
            x1, y1, x2, y2 = p.box
            assert truth[y1:y2, x1:x2].max() > 150  # a bright plate in the source
            mx, my = (x2 - x1) // 8, (y2 - y1) // 8
            inner = img[y1 + my : y2 - my, x1 + mx : x2 - mx]
            assert inner.max() <= 24, f"part {p.part_id} of frame {idx} is not redacted"
            parts += 1
    assert parts >= 3
