"""Detection worker against the real broker, redis-server and the shipped model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from inspector.bus.store import connect
from inspector.config import PlantConfig
from inspector.events import DeadLetterRecord, DefectEvent, VerdictEvent, decode
from tests.detect.conftest import FramePublisher, WorkerThread, detect_config
from tests.helpers import header_bytes, produce, read, value_of

pytestmark = [pytest.mark.integration, pytest.mark.model]


def verdicts_of(cfg: PlantConfig, count: int, timeout_s: float = 60) -> list[VerdictEvent]:
    msgs = read(cfg, [cfg.topics.verdicts], count=count, timeout_s=timeout_s)
    return [decode(m.value(), m.headers(), VerdictEvent) for m in msgs]


def test_every_frame_gets_one_verdict_and_fails_keep_evidence(
    make_config: Callable[..., PlantConfig],
    start_worker: Callable[[PlantConfig], WorkerThread],
    sim_frames: list[np.ndarray],
) -> None:
    cfg = detect_config(make_config)
    pub = FramePublisher(cfg)
    sent = [pub.publish("cam-1" if i % 2 else "cam-2", img) for i, img in enumerate(sim_frames)]
    pub.flush()
    start_worker(cfg)
    verdicts = verdicts_of(cfg, len(sent))
    assert sorted(v.frame_id for v in verdicts) == sorted(m.frame_id for m in sent)
    assert len({v.verdict_id for v in verdicts}) == len(sent)
    counts = Counter(v.verdict for v in verdicts)
    assert counts["FAULT"] == 0, [v.reason for v in verdicts if v.verdict == "FAULT"]
    assert counts["FAIL"] >= 5, f"defect-rich frames should fail: {counts}"
    assert counts["PASS"] >= 5, f"clean frames should pass: {counts}"
    defects = read(cfg, [cfg.topics.defects], count=counts["FAIL"], timeout_s=20)
    assert len(defects) == counts["FAIL"]
    redis = connect(cfg.redis)
    for m in defects:
        d = decode(m.value(), m.headers(), DefectEvent)
        assert d.findings and d.evidence_key and d.annotated_key
        assert redis.ttl(d.evidence_key) > cfg.frames.claim_ttl_s  # kept as evidence
        assert redis.exists(d.annotated_key)
    v = verdicts[0]
    assert v.model is not None and len(v.model.sha256) == 64
    assert v.timings.infer_start is not None and v.timings.infer_end is not None
    assert (
        v.timings.captured_at
        <= v.timings.infer_start
        <= v.timings.infer_end
        <= v.timings.emitted_at
    )
    # The trace continues: same trace id as the frame, new span.
    [msg] = [m for m in read(cfg, [cfg.topics.verdicts], count=1)]
    tp = header_bytes(msg.headers())["traceparent"].decode()
    assert tp.startswith("00-") and len(tp.split("-")[1]) == 32


def test_untrustworthy_frames_are_fault_never_pass(
    make_config: Callable[..., PlantConfig],
    start_worker: Callable[[PlantConfig], WorkerThread],
    sim_frames: list[np.ndarray],
) -> None:
    cfg = detect_config(make_config)
    pub = FramePublisher(cfg)
    good = sim_frames[3]
    expected = {
        pub.publish("cam-1", good, store=False).frame_id: "fault:claim_expired",
        pub.publish("cam-1", jpeg=b"\xff\xd8\xffnot-a-jpeg" * 10).frame_id: "fault:undecodable",
        pub.publish("cam-1", good, captured_at=time.time() - 600).frame_id: "fault:stale",
        pub.publish("cam-1", good, captured_at=time.time() - 90).frame_id: "fault:shed",
        # Clock skew: a camera clock an hour ahead would otherwise look fresh for an hour.
        pub.publish(
            "cam-1", good, captured_at=time.time() + 3600, ingested_at=time.time() + 3600
        ).frame_id: "fault:clock_skew",
        pub.publish("cam-1", good, ingested_at=-1.0).frame_id: "fault:clock_skew",
        pub.publish("cam-1", good, ingested_at=time.time() - 60).frame_id: "fault:clock_skew",
        pub.publish("cam-1", np.zeros_like(good)).frame_id: "fault:uniform_image",
        pub.publish("cam-1", np.full_like(good, 128)).frame_id: "fault:uniform_image",
        pub.publish("cam-1", good[::2, ::2].copy()).frame_id: "fault:wrong_size",
        pub.publish(
            "cam-1", good[:, :320].copy(), width=640, height=360
        ).frame_id: "fault:wrong_size",
        pub.publish("cam-9", good).frame_id: "fault:unknown_camera",
        pub.publish("cam-2", good, line="line-7").frame_id: "fault:wrong_line",
    }
    ok = pub.publish("cam-2", good).frame_id
    # Within the default 2 s skew: judged like any other frame.
    ahead = pub.publish("cam-2", good, captured_at=time.time() + 1.0).frame_id
    pub.flush()
    start_worker(cfg)
    verdicts = {v.frame_id: v for v in verdicts_of(cfg, len(expected) + 2)}
    for frame_id, rule in expected.items():
        assert verdicts[frame_id].verdict == "FAULT", (rule, verdicts[frame_id])
        assert verdicts[frame_id].rule == rule
        assert verdicts[frame_id].reason
    assert verdicts[ok].verdict in ("PASS", "FAIL")
    assert verdicts[ahead].verdict in ("PASS", "FAIL"), verdicts[ahead]


def test_malformed_frames_dead_letter_while_good_frames_flow(
    make_config: Callable[..., PlantConfig],
    start_worker: Callable[[PlantConfig], WorkerThread],
    sim_frames: list[np.ndarray],
) -> None:
    cfg = detect_config(make_config)
    pub = FramePublisher(cfg)
    good_ids = [pub.publish("cam-1", sim_frames[i]).frame_id for i in range(3)]
    pub.flush()
    hdr = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"x"),
        ("ce_source", b"s"),
        ("ce_type", b"io.inspector.frame.v1"),
        ("content-type", b"application/json"),
    ]
    produce(
        cfg,
        cfg.topics.frames,
        [
            (b"{garbage", hdr),
            (orjson.dumps({"frame_id": "f"}), hdr),
            (
                b"\xff\xd8",
                [h for h in hdr if h[0] != "content-type"] + [("content-type", b"image/jpeg")],
            ),
            (b"{}", [("content-type", b"application/json")]),
            (b"{}", [*hdr[:4], ("content-type", b"text/plain")]),
        ],
    )
    good_ids.append(pub.publish("cam-1", sim_frames[4]).frame_id)
    pub.flush()
    start_worker(cfg)
    verdicts = verdicts_of(cfg, len(good_ids))
    assert sorted(v.frame_id for v in verdicts) == sorted(good_ids)
    dlq = [
        decode(m.value(), m.headers(), DeadLetterRecord)
        for m in read(cfg, [cfg.topics.dlq], count=5, timeout_s=20)
    ]
    assert sorted(r.reason for r in dlq) == sorted(
        ["bad_json", "schema_violation", "schema_violation", "missing_header", "wrong_content_type"]
    )
    assert all(r.stage == "detect" and r.original_topic == cfg.topics.frames for r in dlq)


def test_inline_frames_and_redelivery_reemits_identical_verdict(
    make_config: Callable[..., PlantConfig],
    start_worker: Callable[[PlantConfig], WorkerThread],
    sim_frames: list[np.ndarray],
) -> None:
    cfg = detect_config(make_config)
    pub = FramePublisher(cfg)
    sent = [pub.publish("cam-2", sim_frames[i], inline=True) for i in range(6)]
    pub.flush()
    w = start_worker(cfg)
    first = verdicts_of(cfg, len(sent))
    assert {v.frame_id for v in first} == {m.frame_id for m in sent}
    assert all(v.verdict != "FAULT" for v in first)
    w.stop()
    # Replay the same frames (as a crash before the commit would): identical payloads.
    for m in sent:
        pub.publish("cam-2", sim_frames[sent.index(m)], inline=True, frame_id=m.frame_id, seq=m.seq)
    pub.flush()
    start_worker(cfg)
    msgs = read(cfg, [cfg.topics.verdicts], count=2 * len(sent), timeout_s=60)
    by_id: dict[str, set[bytes]] = {}
    for msg in msgs:
        by_id.setdefault(header_bytes(msg.headers())["ce_id"].decode(), set()).add(value_of(msg))
    assert len(by_id) == len(sent)
    assert all(len(vals) == 1 for vals in by_id.values()), "a redelivery changed a verdict"


@pytest.mark.slow
def test_sigkill_one_of_two_workers_loses_nothing(
    make_config: Callable[..., PlantConfig],
    sim_frames: list[np.ndarray],
    tmp_path: Path,
) -> None:
    cfg = detect_config(
        make_config, worker={"max_batch": 4, "max_wait_ms": 2, "shed_after_ms": 60_000}
    )
    data = cfg.model_dump(mode="json")
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {**os.environ, "INSPECTOR_TEST_PLANT": str(path)}
    procs = []
    for i in range(2):
        with open(tmp_path / f"w{i}.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "inspector",
                        "worker",
                        "--config",
                        str(path),
                        "--metrics-port",
                        "0",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )
    try:
        pub = FramePublisher(cfg)
        sent = []

        def wave(n: int) -> None:
            for rnd in range(n):
                for i, img in enumerate(sim_frames):
                    sent.append(pub.publish(("cam-1", "cam-2")[(i + rnd) % 2], img))
            pub.flush()

        wave(2)
        seen = read(cfg, [cfg.topics.verdicts], count=30, timeout_s=90)
        assert len(seen) >= 30, "workers did not start"
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        # Frames keep coming after the crash; the survivor must take the dead
        # member's partitions over and judge everything, the crashed batch included.
        wave(2)
        msgs = read(
            cfg,
            [cfg.topics.verdicts],
            timeout_s=150,
            until=lambda ms: len({header_bytes(m.headers())["ce_id"] for m in ms}) >= len(sent),
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    by_id: dict[str, set[bytes]] = {}
    frames = set()
    for m in msgs:
        by_id.setdefault(header_bytes(m.headers())["ce_id"].decode(), set()).add(value_of(m))
        frames.add(orjson.loads(value_of(m))["frame_id"])
    assert frames == {m.frame_id for m in sent}, "a frame got no verdict"
    dup = {k: v for k, v in by_id.items() if len(v) > 1}
    assert not dup, f"{len(dup)} verdict ids with different payloads"
    assert procs[1].returncode == 0


def test_part_aggregation_k_of_n(
    make_config: Callable[..., PlantConfig], start_worker: Callable[[PlantConfig], WorkerThread]
) -> None:
    """Frames tagged with a part id: the part fails once k of its frames failed."""
    from inspector.sim import ConveyorScene, SceneConfig

    cfg = detect_config(make_config)
    data = cfg.model_dump(mode="json")
    # Make every frame showing a part fail, so the test is about aggregation, not the model.
    data["lines"][0]["rules"] = {
        "classes": {"part": {"min_confidence": 0.25}},
        "part_aggregation": {"mode": "k_of_n", "k": 2},
    }
    from inspector.config import parse_config

    cfg = parse_config(data, env={})
    scene = ConveyorScene(SceneConfig(seed=7, width=640, height=360, clip_seconds=10))
    part_frames = [
        i
        for i in range(scene.config.n_frames)
        if any(p.fully_in_view for p in scene.truth(i).parts)
    ][:4]
    pub = FramePublisher(cfg)
    sent = [pub.publish("cam-1", scene.render(i)[0], part_id="P1") for i in part_frames]
    pub.flush()
    start_worker(cfg)
    verdicts = sorted(verdicts_of(cfg, len(sent)), key=lambda v: v.seq)
    assert [v.verdict for v in verdicts] == ["FAIL"] * 4
    assert [v.part_failed_frames for v in verdicts] == [1, 2, 3, 4]
    assert [v.part_verdict for v in verdicts] == ["PASS", "FAIL", "FAIL", "FAIL"]


def test_exactly_once_commits_offsets_in_the_transaction_and_fences_zombies(
    make_config: Callable[..., PlantConfig],
    start_worker: Callable[[PlantConfig], WorkerThread],
    sim_frames: list[np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The offsets travel inside the transaction, and a second instance with the same
    transactional id fences the first with the proper error."""
    from confluent_kafka import TopicPartition

    from inspector.bus.kafka import make_consumer, make_producer
    from inspector.detect.worker import transactional_id

    monkeypatch.setenv("INSPECTOR_INSTANCE_ID", "eos-test")
    cfg = detect_config(make_config, worker={"exactly_once": True, "shed_after_ms": 60_000})
    pub = FramePublisher(cfg)
    sent = [pub.publish("cam-1", sim_frames[i]) for i in range(6)]
    pub.flush()
    w = start_worker(cfg)
    verdicts = verdicts_of(cfg, len(sent))
    assert {v.frame_id for v in verdicts} == {m.frame_id for m in sent}

    probe = make_consumer(cfg.kafka, cfg.worker.group_id, client_suffix="probe")
    parts = probe.list_topics(cfg.topics.frames, timeout=10).topics[cfg.topics.frames].partitions
    committed = probe.committed([TopicPartition(cfg.topics.frames, p) for p in parts], timeout=10)
    probe.close()
    assert sum(max(tp.offset, 0) for tp in committed) == len(sent)

    # A new instance with the same transactional id fences the running one.
    zombie_killer = make_producer(cfg.kafka, transactional_id=transactional_id(cfg))
    zombie_killer.init_transactions(30)
    pub.publish("cam-1", sim_frames[7])
    pub.flush()
    w.thread.join(60)
    assert not w.thread.is_alive(), "a fenced worker must stop, not keep producing"
    from confluent_kafka import KafkaException

    assert isinstance(w.error, KafkaException), w.error
    # Apache Kafka fences the zombie: librdkafka raises the fatal _FENCED error
    # (PRODUCER_FENCED from the broker) on its next transactional request.
    from confluent_kafka import KafkaError

    err = w.error.args[0]
    assert err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED), err
    assert err.fatal(), err


@pytest.mark.slow
def test_partitions_added_under_running_workers_then_a_third_joins(
    make_config: Callable[..., PlantConfig],
    start_worker: Callable[[PlantConfig], WorkerThread],
    sim_frames: list[np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CreatePartitions on the frames topic while two exactly-once workers run, then a
    third worker joins: the new partitions are produced to and consumed, and every frame
    has exactly one committed verdict."""
    from confluent_kafka.admin import AdminClient, NewPartitions

    from inspector.bus.kafka import client_config
    from tests.helpers import wait_for

    cams = [f"cam-{i}" for i in range(1, 9)]
    line = {
        "id": "line-1",
        "cameras": [
            {"id": c, "url": f"rtsp://127.0.0.1:1/{c}", "width": 640, "height": 360} for c in cams
        ],
        "rules": detect_config.__globals__["demo_plant"]()["lines"][0]["rules"],
    }
    cfg = detect_config(
        make_config,
        lines=[line],
        topics={"partitions": 2},
        kafka={
            "metadata_refresh_ms": 1000,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        },
        worker={"exactly_once": True, "max_batch": 4, "max_wait_ms": 2, "shed_after_ms": 120_000},
    )
    workers = []
    for name in ("w1", "w2"):
        monkeypatch.setenv("INSPECTOR_INSTANCE_ID", f"parts-{name}")
        workers.append(start_worker(cfg))
    pub = FramePublisher(cfg)
    sent = []

    def wave(n: int) -> None:
        for i in range(n):
            sent.append(pub.publish(cams[i % len(cams)], sim_frames[i % len(sim_frames)]))
        pub.flush()

    def judged() -> list[VerdictEvent]:
        return verdicts_of(cfg, len(sent), timeout_s=120)

    wave(16)
    assert len(judged()) == len(sent)

    admin = AdminClient(client_config(cfg.kafka, "test-admin"))
    for fut in admin.create_partitions([NewPartitions(cfg.topics.frames, 6)]).values():
        fut.result(30)
    # the producer sees the new partitions after a metadata refresh (1 s here)
    wait_for(
        lambda: (
            len(
                pub.producer.list_topics(cfg.topics.frames, timeout=5)
                .topics[cfg.topics.frames]
                .partitions
            )
            == 6
        ),
        15,
        "6 partitions",
    )
    wait_for(
        lambda: (
            set().union(*(w.loop.assigned for w in workers))
            == {(cfg.topics.frames, p) for p in range(6)}
        ),
        30,
        "the two workers to be assigned all six partitions",
    )
    wave(16)
    monkeypatch.setenv("INSPECTOR_INSTANCE_ID", "parts-w3")
    third = start_worker(cfg)
    wait_for(lambda: bool(third.loop.assigned), 30, "the third worker to get partitions")
    wave(24)
    verdicts = judged()
    # nothing more arrives after every frame has its verdict
    late = read(cfg, [cfg.topics.verdicts], timeout_s=10, quiet_s=3)
    ids = Counter(v.frame_id for v in verdicts)
    assert set(ids) == {m.frame_id for m in sent}, "a frame got no verdict"
    again = Counter(orjson.loads(value_of(m))["frame_id"] for m in late)
    assert all(n == 1 for n in again.values()), "a frame was judged twice"
    assert sum(again.values()) == len(sent)
    assert third.worker.processed > 0, "the third worker judged nothing"
    frames = read(cfg, [cfg.topics.frames], count=len(sent), timeout_s=30)
    assert {m.partition() for m in frames} & {2, 3, 4, 5}, "no frame on an added partition"
    for w in (*workers, third):
        assert w.error is None and w.thread.is_alive()
