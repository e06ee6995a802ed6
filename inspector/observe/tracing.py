"""W3C Trace Context (``traceparent``) carried on Kafka records, end to end.

Ingest starts a trace per sampled frame (``FrameMeta.traceparent`` and a
``traceparent`` record header); every stage that produces an output *because of* an
input writes a child traceparent — same trace id, new span id, parent's flags — on
that output. One frame can then be followed from camera to PLC command by trace id,
in logs (log the ``trace_id``) or in any OpenTelemetry backend.

The OpenTelemetry API is used when an SDK is installed and configured by the
process (``span()`` then records real spans, parented to the incoming context);
without one everything still works in plain W3C format, which is what the records
carry either way.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

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

_propagator = TraceContextTextMapPropagator()


@contextmanager
def span(name: str, parent: str | bytes | None, tracer: str = "inspector") -> Iterator[str]:
    """Run a block as a span that continues ``parent``; yields the traceparent for outputs.

    With a configured OpenTelemetry SDK the span is recorded (and exported by
    whatever exporter the process set up) and its real span id is yielded; with the
    API alone (no SDK) spans are no-ops, so a child id is made here instead.
    """
    tp = parse_traceparent(parent)
    carrier = {HEADER: str(tp)} if tp else {}
    ctx = _propagator.extract(carrier)
    with trace.get_tracer(tracer).start_as_current_span(name, context=ctx) as current:
        sc = current.get_span_context()
        recorded = sc.is_valid and (tp is None or format(sc.span_id, "016x") != tp.span_id)
        if recorded:
            yield str(
                TraceParent(
                    format(sc.trace_id, "032x"), format(sc.span_id, "016x"), int(sc.trace_flags)
                )
            )
        else:
            yield child_traceparent(parent)
