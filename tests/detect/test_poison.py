"""Poison records against a running plant: a real worker and a real act process.

A fixed adversarial corpus goes straight onto the frames and the verdicts topics,
interleaved with good records: NaN/inf capture times, huge sequence numbers,
oversized headers, keys and values, empty values and tombstones, wrong media types
and CloudEvents types, garbage and deeply nested JSON, binary junk, clock-skewed
frames and a JPEG pixel bomb. Both processes must stay alive; every good frame gets
exactly one verdict, every hostile frame ends as exactly one FAULT verdict (with the
expected rule) or one dead-letter record (with the expected reason, at its offset),
and act acts on every valid verdict and dead-letters every bad one.
"""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import orjson
import pytest
from confluent_kafka import KafkaError, Message

from inspector.bus.kafka import make_producer
from inspector.bus.store import connect
from inspector.config import PlantConfig
from inspector.events import (
    DeadLetterRecord,
    EventError,
    LineCommand,
    Verdict,
    VerdictEvent,
    decode,
    encode,
    header_dict,
)
from inspector.localstack import free_port
from tests.act.support import Collector, verdict, write_config
from tests.detect.conftest import FramePublisher, detect_config
from tests.detect.test_vetting import claim_size, jpeg
from tests.helpers import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.model]

# kafka.message_max_bytes of the stages; the topics take 1 MB, as from an upstream with a
# larger limit, so the broker lets the oversized records through to the stages.
BIG = 600_000


class Recorder:
    """Stands in for FramePublisher's producer: keeps the records, in order, to interleave."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, list[tuple[str, bytes]], bytes | None]] = []

    def produce(
        self,
        topic: str,
        *,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> None:
        self.records.append((value, list(headers), key))

    def take(self) -> tuple[bytes | None, list[tuple[str, bytes]], bytes | None]:
        return self.records.pop()


def ce(ce_type: str, ctype: str = "application/json", **extra: bytes) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", uuid.uuid4().hex.encode()),
        ("ce_source", b"hostile"),
        ("ce_type", ce_type.encode()),
        ("content-type", ctype.encode()),
        *((k, v) for k, v in extra.items()),
    ]


def replace_header(
    headers: Sequence[tuple[str, str | bytes | None]], name: str, value: bytes
) -> list[tuple[str, str | bytes | None]]:
    assert any(k == name for k, _ in headers), name
    return [(k, value if k == name else v) for k, v in headers]


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


@pytest.fixture
def poison_plant(make_config: Any, tmp_path: Path) -> Iterator[tuple[PlantConfig, Path]]:
    def make_with_big_topics(**over: Any) -> PlantConfig:
        cfg: PlantConfig = make_config(**over)
        kafka = cfg.kafka.model_copy(update={"message_max_bytes": 1_000_000})
        create_topics(cfg.model_copy(update={"kafka": kafka}))
        return cfg

    cfg = detect_config(
        make_with_big_topics,
        kafka={"message_max_bytes": BIG},
        workflows=[
            {
                "kind": "divert",
                "name": "every-verdict",
                "filter": {"verdicts": ["PASS", "FAIL", "FAULT"]},
            }
        ],
    )
    yield cfg, write_config(cfg, tmp_path / "plant.yaml")


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_poison_records_never_stop_the_plant(
    poison_plant: tuple[PlantConfig, Path], sim_frames: list[np.ndarray], tmp_path: Path
) -> None:
    t_start = time.monotonic()
    cfg, path = poison_plant
    topics = cfg.topics
    redis = connect(cfg.redis)

    # ------------------------------------------------------------ the corpus: frames
    pub = FramePublisher(cfg)
    recorder = Recorder()
    pub.producer = recorder  # type: ignore[assignment]
    now = time.time()
    good_frames: list[tuple[str, Any]] = []  # (frame id, record)
    for i in range(12):
        meta = pub.publish(("cam-1", "cam-2")[i % 2], sim_frames[i], inline=i % 3 == 0)
        good_frames.append((meta.frame_id, recorder.take()))

    fault_frames: list[tuple[str, str, str, Any]] = []  # (frame id, rule, reason part, record)

    def fault(rule: str, camera: str = "cam-1", why: str = "", **kw: Any) -> None:
        meta = pub.publish(camera, **kw)
        fault_frames.append((meta.frame_id, rule, why, recorder.take()))

    good = sim_frames[20]
    bomb = claim_size(jpeg(16, 16), 30000, 30000)  # 1 kB that decodes to 2.7 GB (675 MB at 1/2)
    wrong_type_key = f"{cfg.redis.key_prefix}:hostile-list"
    redis.rpush(wrong_type_key, b"x")
    fault("fault:clock_skew", image=good, captured_at=now + 3600, ingested_at=now + 3600)
    fault("fault:clock_skew", image=good, ingested_at=-1.0)
    fault("fault:clock_skew", image=good, captured_at=now, ingested_at=now - 300)
    fault("fault:wrong_size", jpeg=bomb, inline=True, why="JPEG header says 30000x30000")
    fault("fault:wrong_size", jpeg=bomb, why="JPEG header says 30000x30000")
    fault("fault:undecodable", jpeg=b"\xff\xd8\xff" + bytes(5000), inline=True)
    fault("fault:undecodable", jpeg=bytes(range(256)) * 4)
    fault("fault:claim_expired", image=good, claim_key=wrong_type_key)  # a list, not a blob
    fault("fault:unknown_camera", camera="cam-9", image=good, seq=2**63 - 1)
    fault("fault:wrong_line", image=good, line="line-7")
    fault("fault:stale", image=good, captured_at=1.0, ingested_at=1.0)

    # Raw hostile frame records, built from valid ones.
    pub.publish("cam-1", good, inline=True)
    inline_value, inline_headers, _ = recorder.take()
    pub.publish("cam-1", good)
    claim_value, claim_headers, _ = recorder.take()
    assert claim_value is not None
    claim = orjson.loads(claim_value)
    frame_t = "io.inspector.frame.v1"
    dlq_frames: list[tuple[str, Any]] = [  # (expected reason, (value, headers, key))
        (
            "invalid_field",
            (inline_value, replace_header(inline_headers, "ce_capturedat", b"nan"), b"k"),
        ),
        (
            "invalid_field",
            (inline_value, replace_header(inline_headers, "ce_capturedat", b"inf"), b"k"),
        ),
        (
            "invalid_field",
            (inline_value, replace_header(inline_headers, "ce_ingestedat", b"-1e400"), b"k"),
        ),
        (
            "invalid_field",
            (inline_value, replace_header(inline_headers, "ce_seq", b"9" * 40), b"k"),
        ),
        ("invalid_field", (inline_value, replace_header(inline_headers, "ce_width", b"0"), b"k")),
        ("empty_value", (b"", inline_headers, b"k")),
        (
            "bad_json",
            (
                claim_value.replace(b'"captured_at":', b'"captured_at":NaN,"x":'),
                claim_headers,
                b"k",
            ),
        ),
        (
            "invalid_field",
            (
                orjson.dumps({**claim, "seq": 0}).replace(b'"seq":0', b'"seq":1' + b"0" * 30),
                claim_headers,
                b"k",
            ),
        ),
        ("invalid_field", (orjson.dumps({**claim, "captured_at": 1e300}), claim_headers, b"k")),
        (
            "invalid_field",
            (orjson.dumps({**claim, "frame_id": "f" * 100_000}), claim_headers, b"k"),
        ),
        ("schema_violation", (orjson.dumps({**claim, "width": "wide"}), claim_headers, b"k")),
        ("schema_violation", (orjson.dumps({**claim, "extra": 1}), claim_headers, b"k")),
        ("schema_violation", (b"[1, 2, 3]", claim_headers, b"k")),
        ("bad_json", (b"{garbage", claim_headers, b"k")),
        ("bad_json", (deep(100_000), claim_headers, b"k")),
        ("bad_json", (b'{"frame_id": "\\ud800"}', claim_headers, b"k")),
        ("empty_value", (b"", claim_headers, b"k")),
        ("empty_value", (None, claim_headers, b"k")),
        ("wrong_content_type", (claim_value, ce(frame_t, "text/plain"), b"k")),
        ("wrong_content_type", (claim_value, ce(frame_t, "image/png"), b"k")),
        ("wrong_type", (claim_value, ce("io.inspector.verdict.v1"), b"k")),
        ("unsupported_version", (claim_value, ce("io.inspector.frame.v2"), b"k")),
        ("unknown_type", (claim_value, ce("com.example.anything"), b"k")),
        ("missing_header", (np.random.default_rng(1).bytes(4096), [], b"k")),
        ("missing_header", (None, [], None)),
        (
            "bad_header",
            (claim_value, replace_header(claim_headers, "ce_id", b"\xff\xfe\xfd"), b"k"),
        ),
        ("invalid_field", (claim_value, [*claim_headers, ("x-huge", b"h" * 5000)], b"k")),
        (
            "invalid_field",
            (claim_value, claim_headers + [(f"x-{i}", b"h" * 1000) for i in range(80)], b"k"),
        ),
        ("missing_header", (b"junk", [], b"K" * 900_000)),  # an oversized key
        ("oversized", (b"{" + b" " * BIG + b"}", claim_headers, b"k")),
    ]

    # ------------------------------------------------------------ the corpus: verdicts
    good_verdicts = [
        verdict(i, kind, cam=("cam-1", "cam-2")[i % 2])
        for i, kind in enumerate(cast(list[Verdict], ["PASS", "FAIL", "FAULT"] * 4))
    ]
    good_v_records = []
    for v in good_verdicts:
        value, headers = encode(v, source="test/worker", time=v.timings.emitted_at)
        good_v_records.append((value, headers, v.line_id.encode()))
    vval, vhdr, _ = good_v_records[1]
    vd = orjson.loads(vval)
    verdict_t = "io.inspector.verdict.v1"
    finding = vd["findings"][0]
    dlq_verdicts: list[tuple[str, Any]] = [
        ("bad_json", (b"{not json", vhdr, b"line-1")),
        ("bad_json", (vval.replace(b'"seq":', b'"seq":NaN,"z":'), vhdr, b"line-1")),
        ("bad_json", (deep(50_000), vhdr, b"line-1")),
        (
            "invalid_field",
            (
                orjson.dumps({**vd, "timings": {**vd["timings"], "captured_at": 1e300}}),
                vhdr,
                b"line-1",
            ),
        ),
        ("invalid_field", (orjson.dumps({**vd, "findings": [finding] * 5000}), vhdr, b"line-1")),
        ("invalid_field", (orjson.dumps({**vd, "reason": "r" * 20_000}), vhdr, b"line-1")),
        ("invalid_field", (orjson.dumps({**vd, "seq": 2**63}), vhdr, b"line-1")),
        ("schema_violation", (orjson.dumps({**vd, "verdict": "MAYBE"}), vhdr, b"line-1")),
        ("schema_violation", (orjson.dumps({**vd, "admin": True}), vhdr, b"line-1")),
        ("schema_violation", (b'"a string"', vhdr, b"line-1")),
        ("wrong_type", (claim_value, ce(frame_t), b"line-1")),
        ("wrong_content_type", (vval, ce(verdict_t, "image/jpeg"), b"line-1")),
        ("unsupported_version", (vval, ce("io.inspector.verdict.v9"), b"line-1")),
        ("empty_value", (b"", vhdr, b"line-1")),
        ("empty_value", (None, vhdr, b"line-1")),
        ("missing_header", (np.random.default_rng(2).bytes(2048), [], None)),
        ("bad_header", (vval, replace_header(vhdr, "content-type", b"\xc3\x28"), b"line-1")),
        ("invalid_field", (vval, [*vhdr, ("traceparent", b"0" * 10_000)], b"line-1")),
        ("missing_header", (b"junk", [], b"L" * 900_000)),
        ("oversized", (b" " * (BIG + 10), vhdr, b"line-1")),
    ]

    # ------------------------------------------------------------ interleave and produce
    # (topic, record, tag): tags say what each record must end as.
    stream: list[tuple[str, Any, tuple[str, ...]]] = []
    frame_items: list[tuple[Any, tuple[str, ...]]] = (
        [(r, ("good_frame", fid)) for fid, r in good_frames]
        + [(r, ("fault_frame", fid, rule, why)) for fid, rule, why, r in fault_frames]
        + [(r, ("dlq", "detect", reason)) for reason, r in dlq_frames]
    )
    verdict_items: list[tuple[Any, tuple[str, ...]]] = [
        (r, ("good_verdict", v.verdict_id))
        for v, r in zip(good_verdicts, good_v_records, strict=True)
    ] + [(r, ("dlq", "act", reason)) for reason, r in dlq_verdicts]
    order = np.random.default_rng(7)
    for items, topic in ((frame_items, topics.frames), (verdict_items, topics.verdicts)):
        for k in order.permutation(len(items)):
            stream.append((topic, items[k][0], items[k][1]))
    shuffled = [stream[k] for k in order.permutation(len(stream))]

    # ------------------------------------------------------------ the running plant
    worker_port, act_port = free_port(), free_port()
    log = (tmp_path / "plant.log").open("ab")
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inspector",
                name,
                "--config",
                str(path),
                "--metrics-port",
                str(port),
            ],
            stdout=log,
            stderr=log,
        )
        for name, port in (("worker", worker_port), ("act", act_port))
    }
    col = Collector(cfg, [topics.verdicts, topics.dlq, topics.line_commands])
    try:
        deadline = time.monotonic() + 30
        while not (ready(worker_port) and ready(act_port)):
            assert time.monotonic() < deadline, "worker and act not ready within 30 s"
            assert all(p.poll() is None for p in procs.values()), (
                tmp_path / "plant.log"
            ).read_text()[-3000:]
            time.sleep(0.1)  # polling the health endpoints, not hiding a race

        coords: dict[int, tuple[str, int, int]] = {}  # stream index → (topic, partition, offset)
        errors: list[str] = []

        def delivered(i: int) -> Any:
            def cb(err: KafkaError | None, msg: Message) -> None:
                if err is not None:
                    errors.append(f"record {i}: {err}")
                else:
                    coords[i] = (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)

            return cb

        limit: dict[str, Any] = {"message.max.bytes": 1_040_000}
        producer = make_producer(cfg.kafka, client_suffix="hostile", **limit)
        for i, (topic, (value, headers, key), _) in enumerate(shuffled):
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered(i))
            producer.poll(0)
        assert producer.flush(20) == 0 and not errors, errors
        t_produced = time.monotonic()

        tags = [tag for _, _, tag in shuffled]
        n_frames_judged = sum(t[0] in ("good_frame", "fault_frame") for t in tags)
        n_valid_verdicts = n_frames_judged + sum(t[0] == "good_verdict" for t in tags)
        n_dlq = sum(t[0] == "dlq" for t in tags)

        def worker_verdicts() -> list[VerdictEvent]:
            out = []
            for m in col.messages[topics.verdicts]:
                try:
                    v = decode(m.value(), m.headers(), VerdictEvent)
                except EventError:
                    continue  # a hostile record we put there ourselves
                if header_dict(m.headers()).get("ce_source") != b"test/worker":
                    out.append(v)
            return out

        def done() -> bool:
            return (
                len(worker_verdicts()) >= n_frames_judged
                and len(col.messages[topics.dlq]) >= n_dlq
                and len(col.messages[topics.line_commands]) >= n_valid_verdicts
            )

        try:
            col.wait(done, 45, "every record to end as a verdict, a FAULT or a dead letter")
        finally:
            alive = {name: p.poll() is None for name, p in procs.items()}
        assert alive == {"worker": True, "act": True}, (tmp_path / "plant.log").read_text()[-3000:]
        col.drain(1.0)  # nothing more arrives: no duplicates, no stray dead letters
        # The pixel bombs were refused from their header, never decoded.
        status = Path(f"/proc/{procs['worker'].pid}/status").read_text()
        peak_mb = int(status.split("VmHWM:")[1].split()[0]) // 1024
        assert peak_mb < 600, f"worker peaked at {peak_mb} MB"
        t_settled = time.monotonic()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        log.close()
        col.close()
    assert {n: p.returncode for n, p in procs.items()} == {"worker": 0, "act": 0}, (
        tmp_path / "plant.log"
    ).read_text()[-3000:]

    # ------------------------------------------------------------ every record's end
    by_frame = Counter(v.frame_id for v in worker_verdicts())
    judged = {v.frame_id: v for v in worker_verdicts()}
    for tag in tags:
        if tag[0] == "good_frame":
            assert by_frame[tag[1]] == 1, (tag, by_frame[tag[1]])
            assert judged[tag[1]].verdict in ("PASS", "FAIL"), judged[tag[1]]
        elif tag[0] == "fault_frame":
            assert by_frame[tag[1]] == 1, (tag, by_frame[tag[1]])
            v = judged[tag[1]]
            assert (v.verdict, v.rule) == ("FAULT", tag[2]), (tag, v.rule, v.reason)
            assert v.reason and tag[3] in v.reason, (tag, v.reason)
    assert sum(by_frame.values()) == n_frames_judged, "a verdict for something not sent"

    dead = [decode(m.value(), m.headers(), DeadLetterRecord) for m in col.messages[topics.dlq]]
    assert all(len(m.value() or b"") <= BIG for m in col.messages[topics.dlq]), (
        "a DLQ record too big"
    )
    at = {(d.original_topic, d.original_partition, d.original_offset): d for d in dead}
    assert len(at) == len(dead) == n_dlq, Counter((d.stage, d.reason) for d in dead)
    for i, tag in enumerate(tags):
        if tag[0] != "dlq":
            continue
        d = at.get(coords[i])
        assert d is not None, (tag, coords[i])
        assert (d.stage, d.reason) == (tag[1], tag[2]), (tag, d.reason, d.error)
        assert d.error
    # Keys and headers over the cap are summarised, not copied.
    assert any(t.part == "key" for d in dead for t in d.original_trimmed)

    commands = [
        decode(m.value(), m.headers(), LineCommand) for m in col.messages[topics.line_commands]
    ]
    acted = Counter(c.verdict_id for c in commands)
    expected = {v.verdict_id for v in worker_verdicts()} | {v.verdict_id for v in good_verdicts}
    assert set(acted) == expected and set(acted.values()) == {1}, acted
    assert all(c.command == "divert" for c in commands)

    took = t_settled - t_start
    print(
        f"\n{len(shuffled)} records ({n_dlq} dead-lettered, {n_frames_judged} frames judged, "
        f"{n_valid_verdicts} verdicts acted on): settled {t_settled - t_produced:.1f}s after "
        f"the last record was produced, {took:.1f}s in all; worker peak RSS {peak_mb} MB"
    )
    assert took < 60, f"took {took:.1f}s"


def test_a_redis_refusal_dead_letters_the_frame_and_the_stream_goes_on(
    make_config: Any, start_worker: Any, sim_frames: list[np.ndarray]
) -> None:
    """WRONGTYPE on one part's tally key: that frame is dead-lettered (store_rejected)
    after poison_attempts; the others are judged. It used to pause the worker forever."""
    cfg = detect_config(make_config)
    pub = FramePublisher(cfg)
    connect(cfg.redis).hset(pub.store.key("line-1:p-bad", "part-fails"), "x", "1")
    ok = [pub.publish("cam-1", sim_frames[i]).frame_id for i in range(3)]
    bad = pub.publish("cam-2", sim_frames[3], part_id="p-bad")
    ok += [pub.publish("cam-1", sim_frames[i], part_id="p-ok").frame_id for i in (4, 5)]
    pub.flush()
    worker = start_worker(cfg)
    col = Collector(cfg, [cfg.topics.verdicts, cfg.topics.dlq])
    try:
        col.wait(
            lambda: (
                len(col.messages[cfg.topics.verdicts]) >= len(ok)
                and len(col.messages[cfg.topics.dlq]) >= 1
            ),
            60,
            "five verdicts, one dead letter",
        )
        col.drain()
    finally:
        col.close()
    assert worker.thread.is_alive() and worker.error is None
    judged = Counter(v.frame_id for v in col.payloads(cfg.topics.verdicts, VerdictEvent))
    assert judged == dict.fromkeys(ok, 1)
    [dead] = col.payloads(cfg.topics.dlq, DeadLetterRecord)
    assert (dead.reason, dead.stage) == ("store_rejected", "detect"), dead
    assert "WRONGTYPE" in dead.error and "part tally" in dead.error, dead.error
    assert bad.frame_id.encode() in base64.b64decode(dead.original_value_b64 or "")
