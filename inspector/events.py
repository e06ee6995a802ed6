"""Every message that crosses Kafka, and its CloudEvents 1.0 binary-mode envelope.

Binary mode: the Kafka value is the payload itself; the CloudEvents attributes travel
as ``ce_*`` headers plus ``content-type``. Payloads are JSON (orjson) except inline
frames, whose value is the JPEG itself (``content-type: image/jpeg``) so no base64
tax is paid on the hot path.

Event ids are deterministic (UUIDv5 over what the event is about), so a redelivered
input produces an identical output that downstream consumers can recognise.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import quote

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SPECVERSION = "1.0"
JSON = "application/json"
JPEG = "image/jpeg"
NAMESPACE = uuid.UUID("6f1b7c3e-2d7a-4b7e-9a55-1c0b5e7a9d11")

Verdict = Literal["PASS", "FAIL", "FAULT"]
Severity = Literal["minor", "major", "critical"]

# Every field that crosses Kafka is bounded and finite, so a record that decodes can
# always be judged, stored and re-encoded (orjson refuses ints beyond 64 bits and
# writes NaN as null; datetime refuses years past 9999).
EPOCH_LIMIT = 10_000_000_000.0  # epoch seconds, either side of 1970 (year 2286)
INT64_MAX = 2**63 - 1
MAX_ID = 512  # ids, names, keys
MAX_TEXT = 16_384  # reasons, details
MAX_ITEMS = 4096  # findings, detections per frame
MAX_HEADER_BYTES = 4096  # any one CloudEvents attribute or extension header
MAX_HEADERS_TOTAL = 65_536  # all headers of one record together
Epoch = Annotated[float, Field(ge=-EPOCH_LIMIT, le=EPOCH_LIMIT)]
Pixels = Annotated[float, Field(ge=-1e7, le=1e7)]
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
Int64 = Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
Id = Annotated[str, Field(max_length=MAX_ID)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Key = Annotated[str, Field(max_length=2 * MAX_ID)]  # Redis keys: prefix + kind + id
WIRE = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def deterministic_id(*parts: object) -> str:
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(str(p) for p in parts)))


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Payload(BaseModel):
    """Base of every payload; ``ce_type`` names its schema and version."""

    model_config = WIRE
    ce_type: ClassVar[str]

    def event_id(self) -> str:
        raise NotImplementedError


class Box(BaseModel):
    model_config = WIRE
    x1: Pixels
    y1: Pixels
    x2: Pixels
    y2: Pixels

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)


class Detection(BaseModel):
    model_config = WIRE
    cls: Id = Field(..., description="class name from the model's metadata")
    score: float = Field(..., ge=0, le=1)
    box: Box


# --------------------------------------------------------------------------- frames


class FrameMeta(Payload):
    """A sampled camera frame. On Kafka: claim-check → this JSON is the value;
    inline → the JPEG is the value and these fields are ``ce_*`` extension headers."""

    ce_type: ClassVar[str] = "io.inspector.frame.v1"
    frame_id: Id = Field(..., description="camera:run:seq, unique per sampled frame")
    camera_id: Id
    line_id: Id
    run_id: Id = Field(..., description="ingest run that sampled it (seq restarts per run)")
    seq: Count
    captured_at: Epoch = Field(..., description="epoch seconds the frame was grabbed")
    ingested_at: Epoch = Field(..., description="epoch seconds it was published")
    width: int = Field(..., ge=1, le=65_535)
    height: int = Field(..., ge=1, le=65_535)
    storage: Literal["redis", "inline"]
    claim_key: Key | None = Field(None, description="Redis key of the JPEG (claim-check)")
    size_bytes: int = Field(..., ge=0, le=2**31)
    part_id: Id | None = None
    traceparent: Id | None = None

    def event_id(self) -> str:
        return deterministic_id("frame", self.frame_id)


# --------------------------------------------------------------------------- verdicts


class Timings(BaseModel):
    model_config = WIRE
    captured_at: Epoch
    ingested_at: Epoch
    infer_start: Epoch | None = None
    infer_end: Epoch | None = None
    emitted_at: Epoch


class ModelRef(BaseModel):
    model_config = WIRE
    name: Id
    version: Id
    sha256: Id


class Finding(BaseModel):
    """A detection that the line's rules judged, or a required feature found missing."""

    model_config = WIRE
    cls: Id
    score: float = Field(..., ge=0, le=1)
    box: Box | None = None
    severity: Severity
    rule: Id


class PartAnomaly(BaseModel):
    """One part's unknown-defect score (``inspector anomaly``)."""

    model_config = WIRE
    box: Box
    score: float = Field(..., ge=0, le=1e6, description="largest patch distance to good parts")
    over: bool = Field(..., description="score above the threshold")


class AnomalyReport(BaseModel):
    """What the anomaly channel saw in a frame: each part scored, and whether any is over."""

    model_config = WIRE
    threshold: float = Field(..., gt=0, le=1e6)
    action: Literal["fail", "review"]
    flagged: bool = Field(..., description="a part is over the threshold (review: look at it)")
    parts: list[PartAnomaly] = Field(default_factory=list, max_length=64)
    skipped: Count = Field(0, description="part boxes not scored (cut by the frame edge)")


class VerdictEvent(Payload):
    ce_type: ClassVar[str] = "io.inspector.verdict.v1"
    verdict_id: Id
    frame_id: Id
    camera_id: Id
    line_id: Id
    seq: Count
    part_id: Id | None = None
    part_failed_frames: Count | None = Field(
        None, description="failing frames of this part so far (frames with a part id)"
    )
    part_verdict: Literal["PASS", "FAIL"] | None = Field(
        None, description="the part's verdict so far under the line's part_aggregation rule"
    )
    verdict: Verdict
    rule: Id = Field(..., description="the rule that decided, e.g. class:scratch or fault:expired")
    reason: Text = ""
    findings: list[Finding] = Field(default_factory=list, max_length=MAX_ITEMS)
    detections: list[Detection] = Field(default_factory=list, max_length=MAX_ITEMS)
    model: ModelRef | None = None
    timings: Timings
    evidence_key: Key | None = Field(None, description="Redis key of the frame kept as evidence")
    annotated_key: Key | None = Field(None, description="Redis key of the annotated JPEG")
    anomaly: AnomalyReport | None = Field(
        None, description="the unknown-defect channel, when the line's rules turn it on"
    )

    def event_id(self) -> str:
        return self.verdict_id


def verdict_id_for(frame_id: str) -> str:
    return deterministic_id("verdict", frame_id)


class DefectEvent(Payload):
    ce_type: ClassVar[str] = "io.inspector.defect.v1"
    defect_id: Id
    verdict_id: Id
    frame_id: Id
    camera_id: Id
    line_id: Id
    seq: Count
    part_id: Id | None = None
    findings: list[Finding] = Field(..., max_length=MAX_ITEMS)
    captured_at: Epoch
    evidence_key: Key | None = None
    annotated_key: Key | None = None

    def event_id(self) -> str:
        return self.defect_id


# --------------------------------------------------------------------------- cameras

CameraState = Literal["connecting", "streaming", "stalled", "backing_off", "stopped"]


class CameraStatusEvent(Payload):
    ce_type: ClassVar[str] = "io.inspector.camera-status.v1"
    camera_id: Id
    line_id: Id
    run_id: Id
    transition: int = Field(
        ..., ge=0, le=INT64_MAX, description="counts transitions within the run"
    )
    state: CameraState
    previous: CameraState | None = None
    reason: Text = ""
    at: Epoch
    frames_ingested: Count = 0
    frames_dropped: Count = 0
    reconnects: Count = 0
    stalls: Count = 0
    fps: float = Field(0.0, ge=0, le=1e6)

    def event_id(self) -> str:
        return deterministic_id("camera-status", self.camera_id, self.run_id, self.transition)


class PartTrigger(Payload):
    """A part entering or leaving a camera's view, as a photo-eye or PLC gateway reports."""

    ce_type: ClassVar[str] = "io.inspector.part-trigger.v1"
    line_id: Id
    camera_id: Id
    part_id: Id
    event: Literal["enter", "exit"]
    at: Epoch

    def event_id(self) -> str:
        return deterministic_id("trigger", self.camera_id, self.part_id, self.event)


# --------------------------------------------------------------------------- actions


class LineCommand(Payload):
    """What a PLC gateway subscribes to (keyed by line).

    ``manual_inspection``: the inspection system is degraded; route parts to manual
    inspection (the line keeps running) until the next ``resume``.
    """

    ce_type: ClassVar[str] = "io.inspector.line-command.v1"
    command_id: Id
    line_id: Id
    command: Literal["divert", "stop", "resume", "manual_inspection"]
    camera_id: Id | None = None
    part_id: Id | None = None
    frame_id: Id | None = None
    verdict_id: Id | None = None
    episode_id: Id | None = None
    reason: Text = ""
    issued_at: Epoch

    def event_id(self) -> str:
        return self.command_id


# queued: a webhook delivery was durably stored in the outbox; fired follows on a 2xx.
# delivered / failed: the line bridge's word on a line command at one target (written and
# confirmed / refused for a reason no retry fixes); retried and given_up as for webhooks.
ActionOutcome = Literal[
    "fired",
    "queued",
    "retried",
    "given_up",
    "delivered",
    "failed",
    "suppressed_cooldown",
    "suppressed_dedup",
    "suppressed_debounce",
]


class ActionEvent(Payload):
    ce_type: ClassVar[str] = "io.inspector.action.v1"
    action_id: Id
    workflow: Id
    kind: Id
    outcome: ActionOutcome
    line_id: Id
    camera_id: Id | None = None
    verdict_id: Id | None = None
    episode_id: Id | None = None
    attempt: int = Field(1, ge=0, le=1_000_000)
    detail: Text = ""
    at: Epoch

    def event_id(self) -> str:
        return deterministic_id("action-event", self.action_id, self.outcome, self.attempt)


class TrimmedPart(BaseModel):
    """A part of a dead-lettered record too large to copy: its size and digest instead."""

    model_config = WIRE
    part: Id = Field(..., description="key, header:<name>, or headers:rest (beyond the first 64)")
    size: Count
    sha256: Id


class DeadLetterRecord(Payload):
    ce_type: ClassVar[str] = "io.inspector.dead-letter.v1"
    reason: Id = Field(..., description="machine-readable reason, e.g. bad_json, oversized")
    error: Text = Field(..., description="human-readable detail")
    stage: Id = Field(..., description="which consumer gave up: detect, act, ...")
    original_topic: Id | None = None
    original_partition: Int64 | None = None
    original_offset: Int64 | None = None
    original_key_b64: str | None = Field(None, description="absent when larger than the cap")
    original_headers: dict[str, str | None] = Field(
        default_factory=dict, description="header values, base64 (those that fit)"
    )
    original_trimmed: list[TrimmedPart] = Field(
        default_factory=list,
        max_length=128,
        description="key and headers summarised (size + sha256) instead of copied",
    )
    original_value_b64: str | None = Field(None, description="absent when larger than the cap")
    original_value_size: Count = 0
    original_value_sha256: Id | None = None
    failed_at: Epoch

    def event_id(self) -> str:
        return deterministic_id(
            "dlq",
            self.stage,
            self.original_topic,
            self.original_partition,
            self.original_offset,
            self.reason,
        )


ModelEventKind = Literal["registered", "promoted", "rolled_back", "swapped", "refused"]


class ModelEvent(Payload):
    """The model lifecycle on the ``model-events`` topic: the registry's moves (registered,
    promoted, rolled back: an alias now names another version) and each worker's answer
    (swapped to it, or refused it with the reason and kept its model)."""

    ce_type: ClassVar[str] = "io.inspector.model.v1"
    kind: ModelEventKind
    model_name: Id
    version: Id = Field(..., description="registry version the event is about")
    alias: Id | None = Field(None, description="champion, challenger, ... (moves only)")
    previous_version: Id | None = Field(None, description="what the alias named before")
    sha256: Id | None = None
    worker: Id | None = Field(None, description="the worker instance (swapped / refused)")
    reason: Text = ""
    at: Epoch

    def event_id(self) -> str:
        return deterministic_id(
            "model-event",
            self.kind,
            self.model_name,
            self.version,
            self.alias,
            self.previous_version,
            self.worker,
            self.at,
        )


class DriftEvent(Payload):
    """A statistic of a camera's frames moved away from (raised) or back to (cleared) the
    reference window of the model version judging them."""

    ce_type: ClassVar[str] = "io.inspector.drift.v1"
    state: Literal["raised", "cleared"]
    camera_id: Id
    line_id: Id
    model: ModelRef
    statistic: Id = Field(..., description="brightness, contrast, sharpness, detections, ...")
    psi: float = Field(..., ge=0, description="population stability index vs the reference")
    ks_statistic: float | None = Field(None, ge=0, le=1)
    ks_pvalue: float | None = Field(None, ge=0, le=1)
    reference_mean: float | None = None
    current_mean: float | None = None
    window: Count
    at: Epoch

    def event_id(self) -> str:
        return deterministic_id(
            "drift", self.camera_id, self.model.version, self.statistic, self.state, self.at
        )


PAYLOADS: tuple[type[Payload], ...] = (
    FrameMeta,
    VerdictEvent,
    DefectEvent,
    CameraStatusEvent,
    PartTrigger,
    LineCommand,
    ActionEvent,
    DeadLetterRecord,
    ModelEvent,
    DriftEvent,
)
BY_TYPE: dict[str, type[Payload]] = {p.ce_type: p for p in PAYLOADS}


# --------------------------------------------------------------------------- envelope

# What confluent-kafka takes and gives: a list of (name, value) pairs.
Headers = list[tuple[str, str | bytes | None]]
RawHeaders = Any  # list of pairs or dict, as a Message may carry them
P = TypeVar("P", bound=Payload)


class EventError(Exception):
    """An incoming record that is not a valid event; ``reason`` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail if len(detail) <= 500 else detail[:500] + "…"
        super().__init__(f"{reason}: {self.detail}")


def dumps(payload: BaseModel) -> bytes:
    return orjson.dumps(payload.model_dump(mode="json", exclude_none=True))


def ce_source(stage: str, plant: str | None = None) -> str:
    """The ``ce_source`` of a stage's events: ``inspector/<stage>[/<plant>]``.

    CloudEvents requires a URI-reference; a plant name is free text (spaces, accents,
    slashes), so it is percent-encoded as one path segment (RFC 3986 unreserved kept).
    """
    base = f"inspector/{stage}"
    return base if plant is None else f"{base}/{quote(plant, safe='')}"


def ce_headers(
    payload: Payload,
    *,
    source: str,
    time: float,
    content_type: str = JSON,
    extensions: dict[str, str] | None = None,
) -> Headers:
    hdrs: Headers = [
        ("ce_specversion", SPECVERSION.encode()),
        ("ce_id", payload.event_id().encode()),
        ("ce_source", source.encode()),
        ("ce_type", payload.ce_type.encode()),
        ("ce_time", iso_time(time).encode()),
        ("content-type", content_type.encode()),
    ]
    for k, v in (extensions or {}).items():
        hdrs.append((f"ce_{k}", v.encode()))
    return hdrs


def encode(
    payload: Payload, *, source: str, time: float, extensions: dict[str, str] | None = None
) -> tuple[bytes, Headers]:
    """JSON payload → (value, headers)."""
    return dumps(payload), ce_headers(payload, source=source, time=time, extensions=extensions)


def header_dict(headers: RawHeaders) -> dict[str, bytes | None]:
    items = headers.items() if isinstance(headers, dict) else (headers or [])
    out: dict[str, bytes | None] = {}
    for k, v in items:
        out[k] = v.encode() if isinstance(v, str) else v
    return out


def _text(h: dict[str, bytes | None], key: str) -> str:
    v = h.get(key)
    if v is None:
        raise EventError("missing_header", f"header {key} is missing")
    try:
        return v.decode()
    except UnicodeDecodeError:
        raise EventError("bad_header", f"header {key} is not UTF-8") from None


def media_type(content_type: str) -> str:
    """``Application/JSON; charset=utf-8`` → ``application/json`` (RFC 9110: case-insensitive)."""
    return content_type.split(";", 1)[0].strip().lower()


def check_headers_bounded(h: dict[str, bytes | None]) -> None:
    """Every header of a record we act on is bounded: no attribute can grow unchecked."""
    total = 0
    for k, v in h.items():
        size = len(k.encode(errors="replace")) + (len(v) if v else 0)
        total += size
        if size > MAX_HEADER_BYTES:
            raise EventError(
                "invalid_field", f"header {k[:64]!r} is {size} bytes (max {MAX_HEADER_BYTES})"
            )
    if total > MAX_HEADERS_TOTAL:
        raise EventError("invalid_field", f"headers total {total} bytes (max {MAX_HEADERS_TOTAL})")


def check_envelope(
    headers: RawHeaders,
) -> tuple[str, str, dict[str, bytes | None]]:
    """Validate the CloudEvents attributes; return (ce_type, media type, headers)."""
    h = header_dict(headers)
    check_headers_bounded(h)
    for key in ("ce_specversion", "ce_id", "ce_source", "ce_type", "content-type"):
        _text(h, key)
    if _text(h, "ce_specversion") != SPECVERSION:
        raise EventError("bad_specversion", f"ce_specversion {_text(h, 'ce_specversion')!r} != 1.0")
    ce_type = _text(h, "ce_type")
    if ce_type not in BY_TYPE:
        base = ce_type.rsplit(".", 1)[0]
        known = [t for t in BY_TYPE if t.rsplit(".", 1)[0] == base]
        if known:
            raise EventError(
                "unsupported_version", f"{ce_type} not supported; this build reads {known[0]}"
            )
        raise EventError("unknown_type", f"unknown ce_type {ce_type!r}")
    return ce_type, media_type(_text(h, "content-type")), h


def decode(value: bytes | None, headers: RawHeaders, expect: type[P]) -> P:
    """Decode a JSON event of type ``expect``; raise EventError with a precise reason."""
    ce_type, ctype, _ = check_envelope(headers)
    if ce_type != expect.ce_type:
        raise EventError("wrong_type", f"expected {expect.ce_type}, got {ce_type}")
    if ctype != JSON:
        raise EventError("wrong_content_type", f"expected {JSON}, got {ctype}")
    return parse_json(value, expect)


# pydantic error types that mean "a value out of bounds", not "the wrong shape"
_BOUND_ERRORS = frozenset(
    {
        "finite_number",
        "greater_than",
        "greater_than_equal",
        "int_parsing_size",  # an integer too large to parse (e.g. 40 digits, 1e30)
        "less_than",
        "less_than_equal",
        "string_too_long",
        "too_long",
    }
)


def _validation_error(what: str, exc: ValidationError) -> EventError:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])[:200] or "(root)"
    reason = "invalid_field" if first["type"] in _BOUND_ERRORS else "schema_violation"
    return EventError(reason, f"{what}: {loc}: {first['msg']} ({exc.error_count()} errors)")


def decode_evolving(
    value: bytes | None, headers: RawHeaders, expect: type[P]
) -> tuple[P, dict[str, Any]]:
    """Like ``decode``, but top-level fields ``expect`` does not know are returned apart
    (name → JSON value) instead of refused: a reader that stores events (the lake) can
    keep a newer producer's optional fields. Unknown fields deeper down still refuse."""
    ce_type, ctype, _ = check_envelope(headers)
    if ce_type != expect.ce_type:
        raise EventError("wrong_type", f"expected {expect.ce_type}, got {ce_type}")
    if ctype != JSON:
        raise EventError("wrong_content_type", f"expected {JSON}, got {ctype}")
    data = _json_object(value)
    if not isinstance(data, dict):
        return parse_json(value, expect), {}  # the same refusal decode() gives
    extras = {k: data.pop(k) for k in [k for k in data if k not in expect.model_fields]}
    try:
        return expect.model_validate(data), extras
    except ValidationError as exc:
        raise _validation_error(expect.ce_type, exc) from None


def _json_object(value: bytes | None) -> Any:
    if not value:
        raise EventError(
            "empty_value", "record has no value" if value is None else "value is empty"
        )
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise EventError("bad_json", f"value is not JSON: {exc}") from None


def parse_json(value: bytes | None, expect: type[P]) -> P:
    data = _json_object(value)
    try:
        return expect.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(expect.ce_type, exc) from None


# Frames carry their metadata as extension headers when the JPEG is the value.
_FRAME_EXT = {
    "frame_id": "frameid",
    "camera_id": "cameraid",
    "line_id": "lineid",
    "run_id": "runid",
    "seq": "seq",
    "captured_at": "capturedat",
    "ingested_at": "ingestedat",
    "width": "width",
    "height": "height",
    "part_id": "partid",
}


def encode_frame(meta: FrameMeta, jpeg: bytes | None, *, source: str) -> tuple[bytes, Headers]:
    """Claim-check frames: JSON value. Inline frames: the JPEG is the value.

    Both carry the key metadata as ``ce_*`` extension headers (camera, line, seq,
    capture and ingest time) so consumers can route or filter without the value.
    """
    ext = {
        attr: str(getattr(meta, field))
        for field, attr in _FRAME_EXT.items()
        if getattr(meta, field) is not None
    }
    if meta.traceparent:
        ext["traceparent"] = meta.traceparent
    if meta.storage == "inline":
        if jpeg is None:
            raise ValueError("inline frames need their JPEG")
        hdrs = ce_headers(
            meta, source=source, time=meta.ingested_at, content_type=JPEG, extensions=ext
        )
        hdrs = [(k, v) for k, v in hdrs if k != "ce_traceparent"]
        if meta.traceparent:
            hdrs.append(("traceparent", meta.traceparent.encode()))
        return jpeg, hdrs
    value = dumps(meta)
    hdrs = ce_headers(meta, source=source, time=meta.ingested_at, extensions=ext)
    hdrs = [(k, v) for k, v in hdrs if k != "ce_traceparent"]
    if meta.traceparent:
        hdrs.append(("traceparent", meta.traceparent.encode()))
    return value, hdrs


def decode_frame(value: bytes | None, headers: RawHeaders) -> tuple[FrameMeta, bytes | None]:
    """→ (meta, inline JPEG or None). Raises EventError for anything malformed."""
    ce_type, ctype, h = check_envelope(headers)
    if ce_type != FrameMeta.ce_type:
        raise EventError("wrong_type", f"expected {FrameMeta.ce_type}, got {ce_type}")
    if ctype == JPEG:
        if not value:
            raise EventError("empty_value", "inline frame has no JPEG bytes")
        data: dict[str, Any] = {}
        for field, attr in _FRAME_EXT.items():
            if h.get(f"ce_{attr}") is not None:
                data[field] = _text(h, f"ce_{attr}")
        tp = _text(h, "traceparent") if h.get("traceparent") is not None else None
        data.update(storage="inline", size_bytes=len(value), traceparent=tp)
        try:
            return FrameMeta.model_validate(data), value
        except ValidationError as exc:
            raise _validation_error("inline frame headers", exc) from None
    if ctype == JSON:
        meta = parse_json(value, FrameMeta)
        if meta.storage == "redis" and not meta.claim_key:
            raise EventError("schema_violation", "claim-check frame without claim_key")
        if meta.storage == "inline":
            raise EventError("schema_violation", "inline frame must carry the JPEG as value")
        return meta, None
    raise EventError("wrong_content_type", f"frame content-type {ctype!r} is neither JSON nor JPEG")


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every payload, keyed by file name."""
    out: dict[str, dict[str, Any]] = {}
    for p in PAYLOADS:
        schema = p.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://inspector.dev/schemas/{p.ce_type}.json"
        schema["x-cloudevents-type"] = p.ce_type
        out[f"{p.ce_type}.json"] = schema
    return out
