"""W3C Trace Context (``traceparent``) carried on Kafka records, end to end.

Ingest starts a trace per sampled frame (``FrameMeta.traceparent`` and a
``traceparent`` record header); every stage that produces an output *because of* an
input writes a child traceparent — same trace id, new span id, parent's flags — on
that output. One frame can then be followed from camera to PLC command by trace id,
in logs (log the ``trace_id``) or in any OpenTelemetry backend.

Every stage also records OpenTelemetry spans, once the process has an SDK
``TracerProvider`` (``configure()``, or the global one an application or
``opentelemetry-instrument`` set): ``ingest.publish`` per frame (its span context *is*
the frame's traceparent), ``detect.decode`` / ``detect.infer`` / ``detect.judge`` per
frame continued from it (the verdict carries ``detect.judge``'s context), and
``act.<workflow kind>`` per workflow decision continued from the verdict (its line
commands and action events carry that span's context), and ``lake.commit`` per record
the sink committed, continued from that record. Without an SDK no span object
is made at all (``start()`` returns the API's shared no-op span) and the records carry
plain W3C child traceparents, exactly as before.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TracerProvider,
)
from opentelemetry.util.types import AttributeValue

from inspector.events import Headers, RawHeaders, header_dict

HEADER = "traceparent"
# CloudEvents' distributed-tracing extension in Kafka binary mode; read as a fallback.
CE_HEADER = "ce_traceparent"

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
SAMPLED = 0x01


@dataclass(frozen=True)
class TraceParent:
    trace_id: str  # 32 lower-case hex
    span_id: str  # 16 lower-case hex: the span that produced the carrier
    flags: int = SAMPLED

    def __str__(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)


def _random_hex(nbytes: int, zero: str) -> str:
    while True:
        value = secrets.token_hex(nbytes)
        if value != zero:  # an all-zero id is invalid by the spec
            return value


def new_span_id() -> str:
    return _random_hex(8, _ZERO_SPAN)


def new_traceparent(sampled: bool = True) -> str:
    """A root: new trace id and span id."""
    return str(TraceParent(_random_hex(16, _ZERO_TRACE), new_span_id(), SAMPLED if sampled else 0))


def parse_traceparent(value: str | bytes | None) -> TraceParent | None:
    """Parse per W3C Trace Context level 1; None for anything invalid (never raises).

    Unknown future versions are read by their first four fields, as the spec asks;
    version ``ff`` and all-zero ids are invalid.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    m = _TRACEPARENT.match(value.strip())
    if not m:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, span_id, int(flags, 16) & SAMPLED)


def child_traceparent(parent: str | bytes | None) -> str:
    """The traceparent for an output caused by ``parent``: same trace, new span.

    An absent or invalid parent starts a new trace rather than failing the record —
    losing a trace link must never lose a verdict.
    """
    tp = parse_traceparent(parent)
    if tp is None:
        return new_traceparent()
    return str(TraceParent(tp.trace_id, new_span_id(), tp.flags))


def traceparent_from_headers(headers: RawHeaders) -> str | None:
    """The valid traceparent on a record (``traceparent``, else ``ce_traceparent``), or None."""
    h = header_dict(headers)
    for name in (HEADER, CE_HEADER):
        tp = parse_traceparent(h.get(name))
        if tp is not None:
            return str(tp)
    return None


def with_traceparent(headers: Headers, traceparent: str) -> Headers:
    """``headers`` with exactly one ``traceparent`` header, set to ``traceparent``."""
    out: Headers = [(k, v) for k, v in headers if k != HEADER]
    out.append((HEADER, traceparent.encode()))
    return out


def child_headers(incoming: RawHeaders, headers: Headers) -> tuple[Headers, str]:
    """Headers for an output caused by a record with ``incoming`` headers.

    → (``headers`` plus a child traceparent, that traceparent). Typical use::

        value, hdrs = encode(verdict, source=..., time=...)
        hdrs, tp = child_headers(msg.headers(), hdrs)
        producer.produce(topic, value=value, headers=hdrs, ...)
    """
    tp = child_traceparent(traceparent_from_headers(incoming))
    return with_traceparent(headers, tp), tp


def trace_id(traceparent: str | bytes | None) -> str | None:
    """The trace id to put in a log line (``extra={"trace_id": ...}``)."""
    tp = parse_traceparent(traceparent)
    return tp.trace_id if tp else None


# --------------------------------------------------------------------------- OpenTelemetry

TRACER = "inspector"
Attributes = dict[str, AttributeValue]

_override: TracerProvider | None = None
_cached: tuple[object, trace.Tracer] | None = None


def configure(provider: TracerProvider | None) -> None:
    """Record this process's spans with ``provider`` (None: back to the global one).

    Without a call the global provider is used, so an application that set one with
    ``trace.set_tracer_provider`` (or runs under ``opentelemetry-instrument``) gets
    spans too. Tests use this to record into an in-memory exporter and stop again.
    """
    global _override, _cached
    _override, _cached = provider, None


def _provider() -> object:
    return _override if _override is not None else trace.get_tracer_provider()


def enabled() -> bool:
    """True when spans are recorded: a real (SDK) tracer provider is in place."""
    p = _provider()
    return not isinstance(p, ProxyTracerProvider | NoOpTracerProvider)


def _tracer() -> trace.Tracer | None:
    global _cached
    p = _provider()
    if isinstance(p, ProxyTracerProvider | NoOpTracerProvider):
        return None
    cached = _cached
    if cached is not None and cached[0] is p:
        return cached[1]
    tracer = p.get_tracer(TRACER)  # type: ignore[attr-defined]
    _cached = (p, tracer)
    return tracer


def context_of(traceparent: str | bytes | None) -> Any:
    """An OpenTelemetry context whose current span is the remote ``traceparent`` (or None)."""
    tp = parse_traceparent(traceparent)
    if tp is None:
        return None
    sc = SpanContext(
        trace_id=int(tp.trace_id, 16),
        span_id=int(tp.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(tp.flags),
    )
    return trace.set_span_in_context(NonRecordingSpan(sc))


def start(
    name: str,
    parent: str | bytes | None,
    attributes: Attributes | None = None,
    *,
    start_time: int | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> trace.Span:
    """Start (not enter) a span continuing ``parent``; a root span if there is none.

    The caller ends it (``span.end()``), possibly on another thread (a delivery
    callback). With no SDK this is the API's shared no-op span: nothing is allocated
    and every method on it does nothing.
    """
    tracer = _tracer()
    if tracer is None:
        return trace.INVALID_SPAN
    return tracer.start_span(
        name,
        context=context_of(parent),
        kind=kind,
        attributes=attributes,
        start_time=start_time,
    )


def traceparent_of(span: trace.Span | None, parent: str | bytes | None) -> str:
    """The traceparent an output of ``span`` carries.

    A recorded span: its own context (so the next stage's span is its child). The
    no-op span (no SDK): a plain W3C child of ``parent``, or a new root without one.
    """
    sc = span.get_span_context() if span is not None else None
    if sc is not None and sc.is_valid:
        return str(
            TraceParent(
                format(sc.trace_id, "032x"),
                format(sc.span_id, "016x"),
                int(sc.trace_flags) & SAMPLED,
            )
        )
    return child_traceparent(parent)


def fail(span: trace.Span, reason: str) -> None:
    """Mark ``span`` failed with a short reason (the drop reason, the error)."""
    if span.is_recording():
        span.set_status(Status(StatusCode.ERROR, reason))


@contextmanager
def span(
    name: str, parent: str | bytes | None, attributes: Attributes | None = None
) -> Iterator[str]:
    """Run a block as the current span, continuing ``parent``; yields the traceparent
    for its outputs (see ``start`` and ``traceparent_of``). An exception escaping the
    block is recorded on the span."""
    s = start(name, parent, attributes)
    with trace.use_span(s, end_on_exit=True):
        yield traceparent_of(s, parent)


# --------------------------------------------------------------------------- exporters


class TracingUnavailable(RuntimeError):
    """``observe.traces`` asks for an exporter this installation does not have."""


def setup(
    service: str, traces: str, otlp_endpoint: str | None, traces_file: str | None
) -> TracerProvider | None:
    """Set this process's spans up per ``observe.traces``; the SDK provider, or None.

    ``off`` leaves the process alone (a provider set by the application, or by
    ``opentelemetry-instrument``, is used as it is). Spans are batched and exported off
    the hot path; the SDK flushes them at exit.
    """
    if traces == "off":
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporter: SpanExporter
    if traces == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )
        except ImportError:
            raise TracingUnavailable(
                "observe.traces: otlp needs the opentelemetry-exporter-otlp-proto-http "
                "package (pip install opentelemetry-exporter-otlp-proto-http)"
            ) from None
        exporter = OTLPSpanExporter(endpoint=otlp_endpoint) if otlp_endpoint else OTLPSpanExporter()
    elif traces == "file":
        assert traces_file is not None
        try:
            out = open(traces_file, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise TracingUnavailable(f"observe.traces_file: {exc}") from None
        exporter = ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")
    else:
        raise TracingUnavailable(f"observe.traces: unknown exporter {traces!r}")
    provider = SdkTracerProvider(resource=Resource.create({"service.name": f"inspector-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    configure(provider)
    return provider
