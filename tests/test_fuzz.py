"""Fuzz every consumer's decode path: frames, verdicts, triggers, commands, every event.

Each example starts from a valid record of one kind and mutates it (header values,
missing or extra headers, content-type spelling, the value replaced by random bytes or
by JSON with extreme field values). Whatever comes in, decoding either raises the
project's EventError (→ a dead-letter record with its reason) or returns a payload
that re-encodes with orjson and decodes back to itself, so nothing downstream can
fail to serialize it.

Bounded in ``make test`` (the ``ci`` profile); ``make fuzz`` runs the ``fuzz`` profile.
"""

from __future__ import annotations

import json
import math
from typing import Any, cast

import orjson
import pytest
from confluent_kafka import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.bus.kafka import dead_letter_message
from inspector.events import (
    EPOCH_LIMIT,
    ActionEvent,
    CameraStatusEvent,
    DeadLetterRecord,
    DefectEvent,
    EventError,
    Finding,
    FrameMeta,
    LineCommand,
    ModelRef,
    PartTrigger,
    Payload,
    Timings,
    VerdictEvent,
    decode,
    decode_frame,
    dumps,
    encode,
    encode_frame,
    iso_time,
)
from inspector.observe.feed import KINDS

T = 1_764_000_000.0


def _frame(storage: str) -> FrameMeta:
    return FrameMeta(
        frame_id="cam-1:r1:7",
        camera_id="cam-1",
        line_id="line-1",
        run_id="r1",
        seq=7,
        captured_at=T,
        ingested_at=T + 0.01,
        width=640,
        height=360,
        storage=storage,
        claim_key="p:frame:cam-1:r1:7" if storage == "redis" else None,
        size_bytes=3,
        part_id="p-1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )


FINDING = Finding(cls="scratch", score=0.9, severity="major", rule="class:scratch")
SAMPLES: list[Payload] = [
    VerdictEvent(
        verdict_id="v",
        frame_id="f",
        camera_id="cam-1",
        line_id="line-1",
        seq=3,
        part_id="p",
        part_failed_frames=1,
        part_verdict="FAIL",
        verdict="FAIL",
        rule="class:scratch",
        reason="1 finding",
        findings=[FINDING],
        model=ModelRef(name="m", version="1", sha256="0" * 64),
        timings=Timings(captured_at=T, ingested_at=T, emitted_at=T + 0.1),
    ),
    DefectEvent(
        defect_id="d",
        verdict_id="v",
        frame_id="f",
        camera_id="cam-1",
        line_id="line-1",
        seq=3,
        findings=[FINDING],
        captured_at=T,
    ),
    PartTrigger(line_id="line-1", camera_id="cam-1", part_id="p-1", event="enter", at=T),
    LineCommand(command_id="c", line_id="line-1", command="stop", reason="r", issued_at=T),
    ActionEvent(
        action_id="a", workflow="w", kind="notify", outcome="fired", line_id="line-1", at=T
    ),
    CameraStatusEvent(
        camera_id="cam-1", line_id="line-1", run_id="r", transition=1, state="streaming", at=T
    ),
    DeadLetterRecord(reason="bad_json", error="e", stage="detect", failed_at=T),
]

# Values that broke stages before: non-finite, beyond 64 bits, far future, huge, binary.
NASTY_TEXT = [
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e308",
    "1e400",
    "-1e400",
    str(2**64),
    str(2**63),
    str(-(2**63) - 1),
    "-1",
    "0",
    "",
    " ",
    "9" * 400,
    "1e10",
    "-5e9",
    "\x00",
    "%s" * 10,
    "x" * 5000,
]
nasty_bytes = st.one_of(
    st.sampled_from([t.encode() for t in NASTY_TEXT]),
    st.binary(max_size=64),
    st.binary(min_size=4000, max_size=70_000),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).encode()),
    st.integers(min_value=-(2**70), max_value=2**70).map(lambda i: str(i).encode()),
)
nasty_json = st.one_of(
    st.sampled_from(
        [
            float("nan"),
            float("inf"),
            -float("inf"),
            2**64,
            -(2**63) - 1,
            1e308,
            -1e308,
            2 * EPOCH_LIMIT,
            "x" * 20_000,
            "",
            None,
            True,
            [],
            {},
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _headers(value: Any) -> list[tuple[str, bytes | None]]:
    return [(k, v if isinstance(v, bytes | None) else v.encode()) for k, v in value]


def _valid_records() -> list[tuple[str, bytes, list[tuple[str, bytes | None]]]]:
    out = []
    for p in SAMPLES:
        v, h = encode(p, source="fuzz", time=T)
        out.append((p.ce_type, v, _headers(h)))
    v, h = encode_frame(_frame("redis"), None, source="fuzz")
    out.append(("frame-json", v, _headers(h)))
    v, h = encode_frame(_frame("inline"), b"\xff\xd8\xff\xe0jpeg", source="fuzz")
    out.append(("frame-inline", v, _headers(h)))
    return out


VALID = _valid_records()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes | None, list[tuple[str, bytes | None]]]:
    kind, value, headers = draw(st.sampled_from(VALID))
    hdrs: list[tuple[str, bytes | None]] = list(headers)
    val: bytes | None = value
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(
            st.sampled_from(
                ["header", "drop", "add", "ctype", "value", "field", "empty", "none", "dup"]
            )
        )
        if op == "header" and hdrs:
            i = draw(st.integers(0, len(hdrs) - 1))
            hdrs[i] = (hdrs[i][0], draw(st.one_of(nasty_bytes, st.none())))
        elif op == "drop" and hdrs:
            hdrs.pop(draw(st.integers(0, len(hdrs) - 1)))
        elif op == "add":
            hdrs.append((draw(st.text(max_size=300)), draw(nasty_bytes)))
        elif op == "dup" and hdrs:
            name, _ = draw(st.sampled_from(hdrs))
            hdrs.append((name, draw(nasty_bytes)))
        elif op == "ctype":
            ct = draw(
                st.sampled_from(
                    [
                        "Application/JSON",
                        "application/json; charset=utf-8",
                        "IMAGE/JPEG",
                        "application/jsonx",
                        "image/jpeg;q=1",
                        "text/plain",
                        "",
                    ]
                )
            )
            hdrs = [(k, ct.encode() if k == "content-type" else v) for k, v in hdrs]
        elif op == "value":
            val = draw(st.binary(max_size=200))
        elif op == "empty":
            val = b""
        elif op == "none":
            val = None
        elif op == "field" and val:
            try:
                data = orjson.loads(val)
            except orjson.JSONDecodeError:
                continue
            if isinstance(data, dict) and data:
                path = draw(st.sampled_from(sorted(data)))
                target = data
                if isinstance(data[path], dict) and data[path] and draw(st.booleans()):
                    target = data[path]
                    path = draw(st.sampled_from(sorted(target)))
                target[path] = draw(nasty_json)
                # stdlib json writes what orjson will not: NaN, Infinity, ints past 64 bits
                val = json.dumps(data, allow_nan=True).encode()
    return kind, val, hdrs


def _check_round_trip(p: Payload) -> None:
    v, h = encode(p, source="fuzz", time=T)
    assert type(p).model_validate(orjson.loads(v)) == p
    assert decode(v, h, type(p)) == p


def _check_frame(meta: FrameMeta, jpeg: bytes | None) -> None:
    raw = dumps(meta)  # would raise on a non-finite float or an int past 64 bits
    assert FrameMeta.model_validate(orjson.loads(raw)) == meta
    for t in (meta.captured_at, meta.ingested_at):
        assert math.isfinite(t) and abs(t) <= EPOCH_LIMIT
        iso_time(t)
    v, h = encode_frame(meta, jpeg, source="fuzz")
    again, jpeg2 = decode_frame(v, h)
    assert jpeg2 == jpeg
    assert again.model_copy(update={"size_bytes": meta.size_bytes}) == meta


@given(mutated())
def test_every_decode_path_returns_a_sound_payload_or_an_event_error(
    rec: tuple[str, bytes | None, list[tuple[str, bytes | None]]],
) -> None:
    _kind, value, headers = rec
    try:
        meta, jpeg = decode_frame(value, headers)
    except EventError as exc:
        assert exc.reason and len(exc.detail) <= 501
    else:
        _check_frame(meta, jpeg)
    # every JSON consumer: act and observe (verdicts), ingest (triggers), the PLC side
    # and the feed (line commands, actions, defects, camera status), DLQ readers
    kinds: set[type[Payload]] = {*(t for _, t in KINDS.values()), PartTrigger, DeadLetterRecord}
    for expect in kinds:
        try:
            p = decode(value, headers, expect)
        except EventError as exc:
            assert exc.reason and len(exc.detail) <= 501
        else:
            _check_round_trip(p)


class _Msg:
    """The parts of a confluent_kafka.Message that the dead-letter path reads."""

    def __init__(self, value: bytes | None, headers: Any, key: bytes | None) -> None:
        self._v, self._h, self._k = value, headers, key

    def value(self) -> bytes | None:
        return self._v

    def headers(self) -> Any:
        return self._h

    def key(self) -> bytes | None:
        return self._k

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 42


@given(
    mutated(),
    st.one_of(st.none(), st.binary(max_size=64), st.binary(min_size=2000, max_size=200_000)),
    st.lists(st.tuples(st.text(max_size=400), st.binary(max_size=30_000)), max_size=80),
    st.sampled_from([65_536, 100_000, 1_000_000]),
    st.text(max_size=3000),
)
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_dead_letter_copy_always_fits_the_limit(
    rec: tuple[str, bytes | None, list[tuple[str, bytes | None]]],
    key: bytes | None,
    extra: list[tuple[str, bytes]],
    limit: int,
    detail: str,
) -> None:
    _, value, headers = rec
    msg = cast(Message, _Msg(value, [*headers, *extra], key))
    dlq, v, h, k = dead_letter_message(msg, "bad_json", detail, "fuzz", limit)
    size = len(v) + sum(len(n) + len(x or b"") for n, x in h) + len(k or b"")
    assert size <= limit - 1024
    assert decode(v, h, DeadLetterRecord) == dlq
    if value:
        assert dlq.original_value_size == len(value) and dlq.original_value_sha256


@pytest.mark.parametrize(
    ("header", "raw", "reason"),
    [
        ("ce_capturedat", b"nan", "invalid_field"),  # issue 12: nan capture time
        ("ce_capturedat", b"inf", "invalid_field"),
        ("ce_ingestedat", b"-inf", "invalid_field"),
        ("ce_seq", str(2**64).encode(), "invalid_field"),  # issue 12: seq past 64 bits
        ("ce_capturedat", b"1e300", "invalid_field"),
        ("ce_seq", b"-1", "invalid_field"),
        ("ce_cameraid", b"\xff\xfe", "bad_header"),
        ("traceparent", b"\xff", "bad_header"),
        ("ce_partid", b"p" * 5000, "invalid_field"),
    ],
)
def test_inline_frame_regressions_are_rejected_at_decode(
    header: str, raw: bytes, reason: str
) -> None:
    _, value, headers = VALID[-1]
    bad = [(k, raw if k == header else v) for k, v in headers]
    with pytest.raises(EventError) as ei:
        decode_frame(value, bad)
    assert ei.value.reason == reason, ei.value


def test_media_types_compare_case_insensitively_and_empty_value_is_empty() -> None:
    _, value, headers = VALID[0]
    for ct in (b"Application/JSON", b"application/json; charset=UTF-8", b" APPLICATION/json "):
        h = [(k, ct if k == "content-type" else v) for k, v in headers]
        assert decode(value, h, VerdictEvent) == SAMPLES[0]
    h = [(k, b"application/jsonx" if k == "content-type" else v) for k, v in headers]
    with pytest.raises(EventError, match="wrong_content_type"):
        decode(value, h, VerdictEvent)
    _, fv, fh = VALID[-1]
    fh = [(k, b"Image/JPEG" if k == "content-type" else v) for k, v in fh]
    assert decode_frame(fv, fh)[1] == fv
    for empty in (b"", None):
        with pytest.raises(EventError) as ei:
            decode(empty, headers, VerdictEvent)
        assert ei.value.reason == "empty_value"
