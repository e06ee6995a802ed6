"""Event contracts: CloudEvents envelope, deterministic ids, schema files in sync."""

from __future__ import annotations

import time

import orjson
import pytest

from inspector.events import (
    EventError,
    FrameMeta,
    Timings,
    VerdictEvent,
    decode,
    decode_frame,
    encode,
    encode_frame,
    verdict_id_for,
)
from inspector.schemas import render, write_schemas
from tests.helpers import header_bytes


def frame(storage: str = "redis") -> FrameMeta:
    now = time.time()
    return FrameMeta(
        frame_id="cam-1:r1:7",
        camera_id="cam-1",
        line_id="l1",
        run_id="r1",
        seq=7,
        captured_at=now,
        ingested_at=now,
        width=64,
        height=48,
        storage=storage,
        claim_key="p:frame:cam-1:r1:7" if storage == "redis" else None,
        size_bytes=3,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )


def test_claim_check_frame_round_trip() -> None:
    value, headers = encode_frame(frame(), None, source="inspector/ingest")
    h = header_bytes(headers)
    assert h["ce_specversion"] == b"1.0" and h["content-type"] == b"application/json"
    assert h["ce_cameraid"] == b"cam-1" and h["ce_seq"] == b"7"
    assert h["traceparent"].startswith(b"00-")
    meta, jpeg = decode_frame(value, headers)
    assert jpeg is None and meta == frame().model_copy(
        update={"captured_at": meta.captured_at, "ingested_at": meta.ingested_at}
    )


def test_inline_frame_round_trip() -> None:
    value, headers = encode_frame(frame("inline"), b"\xff\xd8\xff", source="inspector/ingest")
    assert value == b"\xff\xd8\xff"
    meta, jpeg = decode_frame(value, headers)
    assert jpeg == b"\xff\xd8\xff" and meta.storage == "inline" and meta.seq == 7
    assert meta.traceparent is not None


def pass_verdict(verdict_id: str) -> VerdictEvent:
    t = Timings(captured_at=1.0, ingested_at=1.1, emitted_at=1.2)
    return VerdictEvent(
        verdict_id=verdict_id,
        frame_id="f",
        camera_id="c",
        line_id="l",
        seq=1,
        verdict="PASS",
        rule="pass",
        timings=t,
    )


def test_verdict_id_is_deterministic() -> None:
    assert verdict_id_for("cam-1:r1:7") == verdict_id_for("cam-1:r1:7")
    assert verdict_id_for("cam-1:r1:7") != verdict_id_for("cam-1:r1:8")
    v = pass_verdict(verdict_id_for("f"))
    value, headers = encode(v, source="inspector/detect", time=1.2)
    assert header_bytes(headers)["ce_id"].decode() == v.verdict_id
    assert dict(headers)["ce_time"] == b"1970-01-01T00:00:01.200Z"
    assert decode(value, headers, VerdictEvent) == v


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda v, h: (b"{not json", h), "bad_json"),
        (lambda v, h: (v, [x for x in h if x[0] != "ce_type"]), "missing_header"),
        (
            lambda v, h: (v, [(k, b"0.3" if k == "ce_specversion" else x) for k, x in h]),
            "bad_specversion",
        ),
        (
            lambda v, h: (
                v,
                [(k, b"io.inspector.verdict.v9" if k == "ce_type" else x) for k, x in h],
            ),
            "unsupported_version",
        ),
        (lambda v, h: (orjson.dumps({"verdict": "MAYBE"}), h), "schema_violation"),
        (lambda v, h: (None, h), "empty_value"),
    ],
)
def test_decode_errors_have_reasons(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    v = pass_verdict("x")
    value, headers = encode(v, source="s", time=1.0)
    bad_v, bad_h = mutate(value, headers)
    with pytest.raises(EventError) as ei:
        decode(bad_v, bad_h, VerdictEvent)
    assert ei.value.reason == reason


def test_schema_files_are_up_to_date() -> None:
    stale = write_schemas(check=True)
    assert stale == [], f"run `inspector schemas` to regenerate: {stale}"
    assert len(render()) == 10
