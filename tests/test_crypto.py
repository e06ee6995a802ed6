"""Encryption at rest: the blob format, key rotation and retirement, tampering, key sources."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from inspector.bus.crypto import (
    ENV_VAR,
    MAGIC,
    BlobError,
    BlobTampered,
    KeyringError,
    Sealer,
    UnknownKey,
    load_keys,
    parse_keys,
)
from inspector.config import PlantConfig

KEY = "inspector:frame:cam-1:run:7"
JPEG = b"\xff\xd8\xff\xe0" + os.urandom(2000)


def b64(n: int = 32) -> str:
    return base64.b64encode(os.urandom(n)).decode()


def sealer(spec: str) -> Sealer:
    return Sealer(parse_keys(spec, "test"))


def test_round_trip_hides_the_jpeg_and_names_the_key() -> None:
    s = sealer(f"k1:{b64()}")
    blob = s.seal(KEY, JPEG)
    assert blob.startswith(MAGIC + b"\x01\x02k1")
    assert b"\xff\xd8\xff" not in blob[:16] and JPEG[4:40] not in blob
    assert s.open(KEY, blob) == JPEG
    assert s.seal(KEY, JPEG) != blob  # a fresh nonce every time


def test_rotation_old_key_still_reads_new_writes_use_the_new_kid() -> None:
    k1, k2 = b64(), b64(16)
    old = sealer(f"k1:{k1}")
    blob1 = old.seal(KEY, JPEG)
    rotated = sealer(f"k2:{k2},k1:{k1}")
    assert rotated.open(KEY, blob1) == JPEG
    blob2 = rotated.seal(KEY, JPEG)
    assert blob2[6:8] == b"k2"
    assert rotated.open(KEY, blob2) == JPEG
    with pytest.raises(UnknownKey, match="key id 'k2'"):
        old.open(KEY, blob2)


def test_a_retired_key_is_a_clear_error() -> None:
    k1, k2 = b64(), b64()
    blob = sealer(f"k1:{k1}").seal(KEY, JPEG)
    with pytest.raises(UnknownKey, match=r"key id 'k1', which is not configured \(known: k2\)"):
        sealer(f"k2:{k2}").open(KEY, blob)
    with pytest.raises(UnknownKey, match="none configured"):
        Sealer(None).open(KEY, blob)


def test_tampering_truncation_and_moving_are_detected() -> None:
    s = sealer(f"k1:{b64()}")
    blob = bytearray(s.seal(KEY, JPEG))
    for i in (len(blob) - 1, len(blob) // 2, 20):  # tag, ciphertext, nonce
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(BlobTampered):
            s.open(KEY, bytes(bad))
    with pytest.raises(BlobTampered):
        s.open(KEY, bytes(blob[:-5]))
    with pytest.raises(BlobTampered):
        s.open(KEY, bytes(blob[:5]))
    with pytest.raises(BlobTampered, match="moved"):
        s.open("inspector:frame:cam-1:run:8", bytes(blob))
    bad = bytearray(blob)
    bad[4] = 9
    with pytest.raises(BlobError, match="version 09"):
        s.open(KEY, bytes(bad))


def test_plaintext_is_the_default_and_stays_readable() -> None:
    plain = Sealer(None)
    assert not plain.encrypts
    assert plain.seal(KEY, JPEG) == JPEG
    assert sealer(f"k1:{b64()}").open(KEY, JPEG) == JPEG  # stored before encryption was on


def test_key_parsing_errors_are_one_line_each() -> None:
    with pytest.raises(KeyringError, match="'k2' has 20 bytes; AES-GCM needs 16, 24 or 32"):
        parse_keys(f"k1:{b64()}\nk2:{b64(20)}", "f")
    with pytest.raises(KeyringError, match="not valid base64"):
        parse_keys("k1:@@@", "f")
    with pytest.raises(KeyringError, match="listed twice"):
        parse_keys(f"k1:{b64()},k1:{b64()}", "f")
    with pytest.raises(KeyringError, match="entry 1 must be 'kid:base64key'"):
        parse_keys(b64(), "f")
    with pytest.raises(KeyringError, match="no keys"):
        parse_keys("# only a comment\n", "f")


def test_keys_from_the_environment_or_a_mounted_file(tmp_path: Path) -> None:
    k1, k2 = b64(), b64()
    assert load_keys(None, {}) is None
    env_keys = load_keys(None, {ENV_VAR: f"a:{k1}, b:{k2}"})
    assert env_keys is not None and list(env_keys) == ["a", "b"]
    f = tmp_path / "keys"
    f.write_text(f"# rotated 2026-12\nnew:{k2}\nold:{k1}\n")
    file_keys = load_keys(str(f), {})
    assert file_keys is not None and list(file_keys) == ["new", "old"]
    with pytest.raises(KeyringError, match="use one source"):
        load_keys(str(f), {ENV_VAR: f"a:{k1}"})
    with pytest.raises(KeyringError, match="cannot read"):
        load_keys(str(tmp_path / "missing"), {})


@pytest.mark.integration
def test_stages_refuse_to_start_with_unusable_keys(
    make_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    from inspector.bus.kafka import Shutdown
    from inspector.detect.worker import run_worker
    from inspector.ingest.service import IngestService

    keys = tmp_path / "store-keys"
    keys.write_text("k1:c2hvcnQ=\n")  # 5 bytes
    cfg = make_config(frames={"encryption": {"keys_file": str(keys)}}, observe={"ingest_port": 0})
    svc = IngestService(cfg, triggers=False)
    with pytest.raises(KeyringError, match="has 5 bytes"):
        svc.start()
    svc.stop()
    assert svc.frames_producer is None and svc.readers == []
    assert run_worker(cfg, metrics_port=0, shutdown=Shutdown()) == 1
