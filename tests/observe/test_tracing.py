"""W3C traceparent helpers (pure logic)."""

from __future__ import annotations

from inspector.events import FrameMeta, encode_frame
from inspector.observe.tracing import (
    child_headers,
    child_traceparent,
    new_traceparent,
    parse_traceparent,
    span,
    trace_id,
    traceparent_from_headers,
    with_traceparent,
)

SPEC_EXAMPLE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_parses_the_spec_example() -> None:
    tp = parse_traceparent(SPEC_EXAMPLE)
    assert tp is not None
    assert tp.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tp.span_id == "00f067aa0ba902b7"
    assert tp.sampled
    assert str(tp) == SPEC_EXAMPLE
    assert parse_traceparent(SPEC_EXAMPLE.encode()) == tp


def test_rejects_what_the_spec_rejects() -> None:
    for bad in (
        None,
        "",
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        SPEC_EXAMPLE + "-extra",  # version 00 has exactly four fields
        b"\xff\xfe",
    ):
        assert parse_traceparent(bad) is None, bad
    # a future version is read by its first four fields
    assert parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")


def test_child_keeps_trace_and_flags_with_a_new_span() -> None:
    child = parse_traceparent(child_traceparent(SPEC_EXAMPLE))
    assert child is not None
    assert child.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert child.span_id != "00f067aa0ba902b7"
    assert child.sampled
    unsampled = SPEC_EXAMPLE[:-2] + "00"
    assert parse_traceparent(child_traceparent(unsampled)).sampled is False  # type: ignore[union-attr]
    # a broken parent starts a new trace instead of failing
    fresh = parse_traceparent(child_traceparent("nonsense"))
    assert fresh is not None and fresh.trace_id != "4bf92f3577b34da6a3ce929d0e0e4736"
    assert len({new_traceparent() for _ in range(50)}) == 50


def test_carried_from_a_frame_record_to_an_output_record() -> None:
    meta = FrameMeta(
        frame_id="cam-1:r:1", camera_id="cam-1", line_id="line-1", run_id="r", seq=1,
        captured_at=1.0, ingested_at=1.1, width=64, height=64, storage="redis",
        claim_key="p:frame:cam-1:r:1", size_bytes=10, traceparent=SPEC_EXAMPLE,
    )
    _, frame_headers = encode_frame(meta, None, source="test")
    assert traceparent_from_headers(frame_headers) == SPEC_EXAMPLE
    out, tp = child_headers(frame_headers, [("ce_id", b"x"), ("traceparent", b"stale")])
    assert [k for k, _ in out].count("traceparent") == 1
    assert traceparent_from_headers(out) == tp
    assert trace_id(tp) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert with_traceparent([], tp) == [("traceparent", tp.encode())]
    # the CloudEvents extension spelling is read too
    assert traceparent_from_headers({"ce_traceparent": SPEC_EXAMPLE.encode()}) == SPEC_EXAMPLE
    assert traceparent_from_headers([("traceparent", b"bad")]) is None


def test_span_without_an_sdk_still_yields_a_child() -> None:
    with span("judge", SPEC_EXAMPLE) as tp:
        child = parse_traceparent(tp)
    assert child is not None
    assert child.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert child.span_id != "00f067aa0ba902b7"
    with span("root", None) as tp:
        assert parse_traceparent(tp) is not None
