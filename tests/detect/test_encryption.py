"""Encryption at rest through the worker: sealed claim-checks in, sealed evidence out,
rotation keeps old evidence readable, a retired key is a FAULT (never a crash)."""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.bus.crypto import MAGIC, Sealer, UnknownKey, is_sealed, parse_keys, store_sealer
from inspector.bus.store import FrameStore, connect
from inspector.config import PlantConfig
from inspector.observe.evidence import evidence_jpeg
from tests.detect.conftest import FramePublisher, detect_config
from tests.detect.test_worker import verdicts_of

pytestmark = [pytest.mark.integration, pytest.mark.model]


def b64key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def sealed_publisher(cfg: PlantConfig, sealer: Sealer) -> FramePublisher:
    pub = FramePublisher(cfg)
    pub.store = FrameStore(pub.store.client, cfg.redis.key_prefix, cfg.frames.claim_ttl_s, sealer)
    return pub


def config(make_config: Callable[..., PlantConfig], keys_file: Path) -> PlantConfig:
    return detect_config(
        make_config, frames={"max_age_s": 120, "encryption": {"keys_file": str(keys_file)}}
    )


def test_sealed_frames_are_judged_and_evidence_stays_sealed_across_rotation(
    make_config: Callable[..., PlantConfig],
    start_worker: Callable[[PlantConfig], object],
    sim_frames: list[np.ndarray],
    tmp_path: Path,
) -> None:
    k1, k2 = b64key(), b64key()
    keys = tmp_path / "store-keys"
    keys.write_text(f"k1:{k1}\n")
    cfg = config(make_config, keys)
    pub = sealed_publisher(cfg, store_sealer(cfg))
    sent = [pub.publish("cam-1", img) for img in sim_frames[::2]]
    sent += [pub.publish("cam-2", img, inline=True) for img in sim_frames[1::2]]
    pub.flush()
    start_worker(cfg)
    verdicts = verdicts_of(cfg, len(sent))
    counts = Counter(v.verdict for v in verdicts)
    assert counts["FAULT"] == 0, [v.reason for v in verdicts if v.verdict == "FAULT"]
    fails = [v for v in verdicts if v.verdict == "FAIL"]
    assert len(fails) >= 3 and any(v.evidence_key and ":evidence:" in v.evidence_key for v in fails)

    client = connect(cfg.redis)
    images = 0
    for key in client.scan_iter(match=f"{cfg.redis.key_prefix}:*", count=1000):
        kind = key.decode().removeprefix(cfg.redis.key_prefix + ":").split(":")[0]
        value = client.get(key)
        assert isinstance(value, bytes)
        assert not value.startswith(b"\xff\xd8\xff"), f"plaintext JPEG under {key!r}"
        if kind in ("frame", "evidence", "annotated"):
            assert value.startswith(MAGIC + b"\x01\x02k1"), key
            images += 1
    inline_fails = sum(1 for v in fails if v.evidence_key and ":evidence:" in v.evidence_key)
    assert images == len(sim_frames[::2]) + inline_fails + len(
        fails
    )  # claim-checks, inline evidence, annotated

    v = fails[0]
    img = cv2.imdecode(
        np.frombuffer(
            evidence_jpeg(client, v, cfg.redis.key_prefix, sealer=store_sealer(cfg)), np.uint8
        ),
        1,
    )
    assert img is not None and img.shape[:2] == (360, 640)
    with pytest.raises(UnknownKey):  # a reader without the keys gets an error, not bytes
        evidence_jpeg(client, v, cfg.redis.key_prefix, sealer=Sealer(None))

    # rotate: k2 first writes, k1 still reads what it sealed
    keys.write_text(f"k2:{k2}\nk1:{k1}\n")
    rotated = store_sealer(cfg)
    for v in fails:
        assert (
            evidence_jpeg(client, v, cfg.redis.key_prefix, annotated=False, sealer=rotated)[:3]
            == b"\xff\xd8\xff"
        )
    key = FrameStore(client, cfg.redis.key_prefix, 60, rotated).put("cam-1:rot:1", b"\xff\xd8\xff")
    raw = client.get(key)
    assert isinstance(raw, bytes) and raw[6:8] == b"k2" and is_sealed(raw)


def test_a_frame_sealed_with_a_retired_key_is_fault_and_the_worker_goes_on(
    make_config: Callable[..., PlantConfig],
    start_worker: Callable[[PlantConfig], object],
    sim_frames: list[np.ndarray],
    tmp_path: Path,
) -> None:
    k1, k2 = b64key(), b64key()
    keys = tmp_path / "store-keys"
    keys.write_text(f"k2:{k2}\n")  # k1 has been retired
    cfg = config(make_config, keys)
    old = sealed_publisher(cfg, Sealer(parse_keys(f"k1:{k1}", "test")))
    current = sealed_publisher(cfg, store_sealer(cfg))
    stale = [old.publish("cam-1", img) for img in sim_frames[:2]]
    old.flush()
    fresh = [current.publish("cam-1", img) for img in sim_frames[2:6]]
    current.flush()
    start_worker(cfg)
    verdicts = {v.frame_id: v for v in verdicts_of(cfg, len(stale) + len(fresh))}
    for m in stale:
        v = verdicts[m.frame_id]
        assert (v.verdict, v.rule) == ("FAULT", "fault:undecryptable")
        assert "key id 'k1', which is not configured (known: k2)" in v.reason
    for m in fresh:
        assert verdicts[m.frame_id].verdict in ("PASS", "FAIL"), verdicts[m.frame_id].reason
