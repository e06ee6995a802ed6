"""W3C traceparent helpers (pure logic)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from inspector.events import FrameMeta, encode_frame
from inspector.telemetry.tracing import (
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
        frame_id="cam-1:r:1",
        camera_id="cam-1",
        line_id="line-1",
        run_id="r",
        seq=1,
        captured_at=1.0,
        ingested_at=1.1,
        width=64,
        height=64,
        storage="redis",
        claim_key="p:frame:cam-1:r:1",
        size_bytes=10,
        traceparent=SPEC_EXAMPLE,
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


def test_no_sdk_means_no_span_objects() -> None:
    from opentelemetry import trace

    from inspector.telemetry import tracing

    assert not tracing.enabled()
    s = tracing.start("detect.judge", SPEC_EXAMPLE, {"inspector.frame_id": "f"})
    assert s is trace.INVALID_SPAN and not s.is_recording()
    child = parse_traceparent(tracing.traceparent_of(s, SPEC_EXAMPLE))
    assert child is not None and child.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert child.span_id != "00f067aa0ba902b7"
    root = parse_traceparent(tracing.traceparent_of(s, None))
    assert root is not None and root.trace_id != child.trace_id


def test_with_an_sdk_outputs_carry_the_recorded_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from inspector.telemetry import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(provider)
    try:
        assert tracing.enabled()
        with span("detect.judge", SPEC_EXAMPLE, {"inspector.verdict": "FAIL"}) as tp:
            pass
        root = tracing.start("ingest.publish", None)
        root_tp = tracing.traceparent_of(root, None)
        tracing.fail(root, "dropped: oversized")
        root.end()
        unsampled = tracing.start("act.divert", SPEC_EXAMPLE[:-2] + "00")
        unsampled_tp = tracing.traceparent_of(unsampled, None)
        unsampled.end()
    finally:
        tracing.configure(None)
    assert not tracing.enabled()
    judge, publish = exporter.get_finished_spans()  # the unsampled one is not recorded
    assert judge.name == "detect.judge" and judge.attributes == {"inspector.verdict": "FAIL"}
    assert judge.parent is not None and judge.parent.is_remote
    assert format(judge.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert judge.context is not None
    assert tp == f"00-4bf92f3577b34da6a3ce929d0e0e4736-{judge.context.span_id:016x}-01"
    assert publish.parent is None and publish.context is not None
    assert root_tp == f"00-{publish.context.trace_id:032x}-{publish.context.span_id:016x}-01"
    assert publish.status.description == "dropped: oversized"
    # an unsampled parent: not recorded, and the output stays unsampled in the same trace
    out = parse_traceparent(unsampled_tp)
    assert out is not None and not out.sampled
    assert out.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_traces_file_exporter_writes_one_json_span_per_line(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from inspector.telemetry import tracing

    path = tmp_path / "spans.jsonl"
    provider = tracing.setup("worker", "file", None, str(path))
    assert isinstance(provider, TracerProvider)
    try:
        with span("detect.judge", SPEC_EXAMPLE, {"inspector.verdict": "PASS"}):
            pass
    finally:
        tracing.configure(None)
        provider.shutdown()  # flushes the batch
    (line,) = path.read_text().splitlines()
    rec = json.loads(line)
    assert rec["name"] == "detect.judge"
    assert rec["context"]["trace_id"] == "0x4bf92f3577b34da6a3ce929d0e0e4736"
    assert rec["parent_id"] == "0x00f067aa0ba902b7"
    assert rec["attributes"] == {"inspector.verdict": "PASS"}
    assert rec["resource"]["attributes"]["service.name"] == "inspector-worker"
    assert tracing.setup("worker", "off", None, None) is None
    assert not tracing.enabled()


def test_otlp_without_its_exporter_package_is_a_clear_error() -> None:
    from inspector.telemetry import tracing

    try:
        import opentelemetry.exporter.otlp.proto.http  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the OTLP exporter is installed here")
    with pytest.raises(tracing.TracingUnavailable, match="opentelemetry-exporter-otlp-proto-http"):
        tracing.setup("act", "otlp", "http://127.0.0.1:4318/v1/traces", None)
    assert not tracing.enabled()


def test_traces_config_is_checked() -> None:
    from inspector.config import ObserveSettings

    assert ObserveSettings().traces == "off"
    ok = ObserveSettings(traces="otlp", otlp_endpoint="http://collector:4318/v1/traces")
    assert ok.otlp_endpoint == "http://collector:4318/v1/traces"
    for bad, why in (
        ({"traces": "file"}, "needs traces_file"),
        ({"traces_file": "/tmp/x"}, "only used with traces: file"),
        ({"otlp_endpoint": "http://c:4318"}, "only used with traces: otlp"),
        ({"traces": "otlp", "otlp_endpoint": "collector:4318"}, "pattern"),
        ({"traces": "jaeger"}, "traces"),
    ):
        with pytest.raises(ValidationError, match=why):
            ObserveSettings(**bad)


def test_each_stage_command_sets_its_exporter_up_first(tmp_path: Path) -> None:
    """`inspector ingest|worker|act|sink` read observe.traces before touching a server: an
    OTLP exporter that is not installed stops them at once with exit 2."""
    import yaml
    from typer.testing import CliRunner

    from inspector.cli import app
    from inspector.telemetry import tracing

    try:
        import opentelemetry.exporter.otlp.proto.http  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the OTLP exporter is installed here")
    path = tmp_path / "plant.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "plant": "p",
                "kafka": {"bootstrap_servers": "127.0.0.1:1"},  # nothing listens there
                "redis": {"url": "redis://127.0.0.1:1/0"},
                "lines": [{"id": "line-1", "cameras": [{"id": "cam-1", "url": "rtsp://x/1"}]}],
                "observe": {"traces": "otlp", "otlp_endpoint": "http://127.0.0.1:1/v1/traces"},
            }
        )
    )
    for stage in ("ingest", "worker", "act", "sink"):
        result = CliRunner().invoke(app, [stage, "--config", str(path)])
        assert result.exit_code == 2, (stage, result.output)
        assert "opentelemetry-exporter-otlp-proto-http" in result.output, stage
    assert not tracing.enabled()
