"""Kafka and Redis plumbing against the real broker and redis-server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import orjson
import pytest

from inspector.bus.kafka import ServiceUnavailable, check_broker, make_consumer, make_producer
from inspector.bus.loop import StreamLoop
from inspector.bus.store import ClaimExpired, Dedup, FrameStore, StoreUnavailable, connect
from inspector.config import KafkaSettings, PlantConfig, RedisSettings
from inspector.events import (
    DeadLetterRecord,
    PartTrigger,
    decode,
    encode,
)
from inspector.localstack import ManagedProcess, broker_choice
from tests.helpers import create_topics, header_bytes, produce, read, wait_for

pytestmark = pytest.mark.integration


def trigger(i: int) -> PartTrigger:
    return PartTrigger(
        line_id="l1", camera_id="cam-1", part_id=f"p{i}", event="enter", at=1000.0 + i
    )


def test_event_round_trip_through_broker(plant: PlantConfig) -> None:
    create_topics(plant)
    value, headers = encode(trigger(1), source="inspector/test", time=1000.0)
    produce(plant, plant.topics.triggers, [(value, headers)])
    [msg] = read(plant, [plant.topics.triggers], count=1)
    h = header_bytes(msg.headers())
    assert h["ce_specversion"] == b"1.0"
    assert h["ce_type"] == b"io.inspector.part-trigger.v1"
    assert h["ce_source"] == b"inspector/test"
    assert h["ce_time"] == b"1970-01-01T00:16:40.000Z"
    assert h["content-type"] == b"application/json"
    assert h["ce_id"].decode() == trigger(1).event_id()
    assert decode(msg.value(), msg.headers(), PartTrigger) == trigger(1)


def test_claim_check_store_fetch_expiry(plant: PlantConfig) -> None:
    client = connect(plant.redis)
    store = FrameStore(client, plant.redis.key_prefix, ttl_s=60)
    key = store.put("cam-1:r:1", b"jpegbytes")
    assert store.get(key) == b"jpegbytes"
    assert 0 < client.ttl(key) <= 60
    assert store.get_many([key, key + "-gone"]) == [b"jpegbytes", None]
    assert store.extend(key, 3600) and client.ttl(key) > 60
    short = store.put("cam-1:r:2", b"x", ttl_s=1)
    wait_for(lambda: not client.exists(short), 5, "the claim-check TTL to expire")
    with pytest.raises(ClaimExpired, match="expired or was never stored"):
        store.get(short)


def test_dedup_first_wins(plant: PlantConfig) -> None:
    d = Dedup(connect(plant.redis), plant.redis.key_prefix, ttl_s=60)
    assert d.claim("v1:wf")
    assert not d.claim("v1:wf")
    assert d.seen("v1:wf")
    d.release("v1:wf")
    assert d.claim("v1:wf")


def test_unreachable_services_give_one_line() -> None:
    with pytest.raises(ServiceUnavailable) as ei:
        check_broker(KafkaSettings(bootstrap_servers="127.0.0.1:1"), timeout_s=2)
    assert "Kafka broker unreachable at 127.0.0.1:1" in str(ei.value)
    assert "\n" not in str(ei.value)
    with pytest.raises(StoreUnavailable) as ei2:
        connect(RedisSettings(url="redis://127.0.0.1:1/0", socket_timeout_s=0.5))
    assert "Redis unreachable at redis://127.0.0.1:1/0" in str(ei2.value)


def test_redis_down_is_distinct_from_expired(own_redis: ManagedProcess) -> None:
    client = connect(
        RedisSettings(url=f"redis://127.0.0.1:{own_redis.port}/0", socket_timeout_s=0.5)
    )
    store = FrameStore(client, "p", 60)
    own_redis.close()
    with pytest.raises(StoreUnavailable):
        store.get("p:frame:x")


def echo_loop(cfg: PlantConfig, group: str, **kw: object) -> StreamLoop[PartTrigger]:
    """A minimal stage: decode triggers from the triggers topic, re-emit them to actions."""
    producer = make_producer(cfg.kafka, client_suffix="echo")
    consumer = make_consumer(cfg.kafka, group)
    loop: StreamLoop[PartTrigger]

    def handle(batch: list) -> None:
        for _msg, ev in batch:
            value, headers = encode(ev, source="echo", time=ev.at)
            producer.produce(
                cfg.topics.actions, value=value, headers=headers, on_delivery=loop.tracker
            )

    loop = StreamLoop(
        consumer=consumer,
        producer=producer,
        topics=[cfg.topics.triggers],
        dlq_topic=cfg.topics.dlq,
        stage="echo",
        decode=lambda m: decode(m.value(), m.headers(), PartTrigger),
        handle=handle,
        max_batch=16,
        max_wait_s=0.05,
        max_message_bytes=cfg.kafka.message_max_bytes,
        **kw,  # type: ignore[arg-type]
    )
    return loop


def start(loop: StreamLoop) -> threading.Thread:
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    return t


def test_dead_letters_while_good_messages_flow(make_config: Callable[..., PlantConfig]) -> None:
    cfg: PlantConfig = make_config(kafka={"message_max_bytes": 100_000})
    # The topic takes 1 MB (an upstream with a larger limit than this stage's 100 kB):
    # the broker itself would refuse the oversized record on a topic made with the
    # stage's own limit.
    create_topics(
        cfg.model_copy(
            update={"kafka": cfg.kafka.model_copy(update={"message_max_bytes": 1_000_000})}
        )
    )
    good = [encode(trigger(i), source="t", time=1.0) for i in range(6)]
    gv, gh = good[0]
    bad = [
        (b"{oops", gh),  # bad JSON
        (gv, [h for h in gh if h[0] != "ce_type"]),  # missing header
        (
            gv,
            [
                (k, b"io.inspector.part-trigger.v7" if k == "ce_type" else v)  # wrong version
                for k, v in gh
            ],
        ),
        (orjson.dumps({"line_id": "l1"}), gh),  # schema violation
        (b"x" * 150_000, gh),  # oversized
        (None, gh),  # empty value
        (gv, [(k, b"0.9" if k == "ce_specversion" else v) for k, v in gh]),  # bad specversion
    ]
    interleaved = [r for pair in zip(good, bad[:6], strict=True) for r in pair] + bad[6:]
    produce(cfg, cfg.topics.triggers, interleaved, max_bytes=1_000_000)
    loop = echo_loop(cfg, "g-dlq")
    t = start(loop)
    try:
        outs = read(cfg, [cfg.topics.actions], count=len(good), timeout_s=40)
        dlq = read(cfg, [cfg.topics.dlq], count=len(bad), timeout_s=20)
    finally:
        loop.shutdown.request()
        t.join(15)
    assert sorted(decode(m.value(), m.headers(), PartTrigger).part_id for m in outs) == sorted(
        f"p{i}" for i in range(6)
    )
    records = [decode(m.value(), m.headers(), DeadLetterRecord) for m in dlq]
    reasons = sorted(r.reason for r in records)
    assert reasons == sorted(
        [
            "bad_json",
            "missing_header",
            "unsupported_version",
            "schema_violation",
            "oversized",
            "empty_value",
            "bad_specversion",
        ]
    )
    for r in records:
        assert r.original_topic == cfg.topics.triggers and r.original_offset is not None
        assert r.stage == "echo" and r.error
    big = next(r for r in records if r.reason == "oversized")
    assert big.original_value_size == 150_000 and big.original_value_sha256
    assert not t.is_alive()


def test_graceful_shutdown_commits_and_restart_resumes(plant: PlantConfig) -> None:
    create_topics(plant)
    produce(
        plant, plant.topics.triggers, [encode(trigger(i), source="t", time=1.0) for i in range(20)]
    )
    loop = echo_loop(plant, "g-resume")
    t = start(loop)
    wait_for(lambda: loop.stats.records >= 20, 40, "first 20 records to be processed")
    loop.shutdown.request()
    t.join(15)
    assert not t.is_alive()

    produce(
        plant,
        plant.topics.triggers,
        [encode(trigger(i), source="t", time=1.0) for i in range(20, 30)],
    )
    loop2 = echo_loop(plant, "g-resume")
    t2 = start(loop2)
    wait_for(lambda: loop2.stats.records >= 10, 40, "the 10 new records after restart")
    time.sleep(1.0)  # a window in which a wrongly re-read record would show up
    loop2.shutdown.request()
    t2.join(15)
    assert loop2.stats.records == 10, "restart must resume after the committed offsets"
    outs = read(plant, [plant.topics.actions], count=30, timeout_s=30)
    ids = [decode(m.value(), m.headers(), PartTrigger).part_id for m in outs]
    assert sorted(ids) == sorted(f"p{i}" for i in range(30))


def test_a_record_the_handler_fails_on_is_dead_lettered_and_the_stage_runs_on(
    make_config: Callable[..., PlantConfig],
) -> None:
    """Issue 12: an exception in the handler for one record used to end the stage, and
    its replacement met the same record: the record is dead-lettered instead."""
    cfg: PlantConfig = make_config()
    create_topics(cfg)
    loop = echo_loop(cfg, "g-poison", retry_initial_s=0.01)
    inner = loop.handle

    def handle(batch: list) -> None:
        if any(ev.part_id == "poison" for _m, ev in batch):
            raise ValueError("cannot serialize this one")
        inner(batch)

    loop.handle = handle
    recs = [encode(trigger(i), source="t", time=1.0) for i in range(4)]
    pv, ph = encode(trigger(99).model_copy(update={"part_id": "poison"}), source="t", time=1.0)
    produce(cfg, cfg.topics.triggers, [recs[0], recs[1], (pv, ph), recs[2]])
    t = start(loop)
    try:
        read(cfg, [cfg.topics.actions], count=3, timeout_s=40)
        [dlq] = read(cfg, [cfg.topics.dlq], count=1, timeout_s=20)
        produce(cfg, cfg.topics.triggers, [recs[3]])  # the stage is still consuming
        outs = read(cfg, [cfg.topics.actions], count=4, timeout_s=30)
    finally:
        loop.shutdown.request()
        t.join(15)
    assert {decode(m.value(), m.headers(), PartTrigger).part_id for m in outs} == {
        "p0",
        "p1",
        "p2",
        "p3",
    }
    rec = decode(dlq.value(), dlq.headers(), DeadLetterRecord)
    assert rec.reason == "handler_error" and "ValueError: cannot serialize" in rec.error
    assert rec.original_value_b64 and rec.original_offset is not None
    assert len(outs) == 4 and t.is_alive() is False
    assert loop.stats.dead_lettered == 1


def test_dead_letter_copy_of_a_huge_header_and_key_fits_the_broker(
    make_config: Callable[..., PlantConfig],
) -> None:
    """Issue 12 regression: a large header and key with an undecodable value made a DLQ
    copy over the topic's max.message.bytes, which killed the stage in a loop."""
    cfg: PlantConfig = make_config(kafka={"message_max_bytes": 100_000})
    create_topics(cfg)  # every topic, the DLQ included, made with max.message.bytes=100000
    gv, gh = encode(trigger(1), source="t", time=1.0)
    key = b"k" * 20_000
    bad_headers = [*gh, ("x-big", b"h" * 50_000)]
    produce(cfg, cfg.topics.triggers, [(b"\xff" * 25_000, bad_headers), (gv, gh)], key=key)
    loop = echo_loop(cfg, "g-bigdlq")
    t = start(loop)
    try:
        [out] = read(cfg, [cfg.topics.actions], count=1, timeout_s=40)
        [dlq] = read(cfg, [cfg.topics.dlq], count=1, timeout_s=20)
    finally:
        loop.shutdown.request()
        t.join(15)
    assert decode(out.value(), out.headers(), PartTrigger).part_id == "p1"
    rec = decode(dlq.value(), dlq.headers(), DeadLetterRecord)
    assert rec.reason == "invalid_field"  # the 50 kB header, before the value is read
    assert rec.original_value_size == 25_000 and rec.original_value_sha256
    parts = {p.part: p for p in rec.original_trimmed}
    assert parts["key"].size == 20_000 and parts["header:x-big"].size == 50_000
    import hashlib

    assert parts["key"].sha256 == hashlib.sha256(key).hexdigest()
    assert rec.original_key_b64 is None and "x-big" not in rec.original_headers
    assert "ce_type" in rec.original_headers  # small headers are still copied
    assert len(dlq.value() or b"") < 100_000
    assert not t.is_alive()


def test_group_settings_for_each_protocol_and_static_membership() -> None:
    from inspector.bus.kafka import configure_group

    classic: dict[str, object] = {}
    configure_group(classic, KafkaSettings(session_timeout_ms=1500, heartbeat_interval_ms=500))
    assert classic == {
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 1500,
        "heartbeat.interval.ms": 500,
    }
    kip848: dict[str, object] = {}
    configure_group(kip848, KafkaSettings(group_protocol="consumer"), "detect-pod-0")
    # librdkafka refuses the three classic properties with the consumer protocol
    assert kip848 == {"group.protocol": "consumer", "group.instance.id": "detect-pod-0"}
    assert KafkaSettings().session_timeout_ms == 6000


@pytest.mark.skipif(broker_choice() == "tansu", reason="KIP-848 groups need Apache Kafka 4")
def test_kip848_group_session_is_set_on_the_broker_and_static_ids_are_stable(
    make_config: Callable[..., PlantConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    from inspector.bus.kafka import client_config, stage_consumer

    cfg: PlantConfig = make_config(
        kafka={
            "group_protocol": "consumer",
            "static_membership": True,
            "session_timeout_ms": 1500,
            "heartbeat_interval_ms": 500,
        }
    )
    create_topics(cfg)
    monkeypatch.setenv("INSPECTOR_INSTANCE_ID", "pod-7")
    consumer = stage_consumer(cfg.kafka, cfg.worker.group_id, "detect")
    admin = AdminClient(client_config(cfg.kafka, "test-admin"))
    try:
        res = ConfigResource(ResourceType.GROUP, cfg.worker.group_id)
        got = admin.describe_configs([res])[res].result(10)
        assert got["consumer.session.timeout.ms"].value == "1500"
        assert got["consumer.heartbeat.interval.ms"].value == "500"
        consumer.subscribe([cfg.topics.frames])

        def member_ids() -> list[str | None]:
            consumer.poll(0.1)
            group = cfg.worker.group_id
            try:
                desc = admin.describe_consumer_groups([group])[group].result(10)
            except KafkaException:  # NOT_COORDINATOR while the group's coordinator loads
                return []
            return [m.group_instance_id for m in desc.members]

        wait_for(lambda: member_ids() == ["detect-pod-7"], 30, "the static member")
    finally:
        consumer.close()


class _RebalancedOnce:
    """A real transactional producer whose first offset commit meets what a rebalance
    that overtook the batch gives (ILLEGAL_GENERATION, abortable, not fatal)."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.raised = 0

    def send_offsets_to_transaction(self, *args: object) -> None:
        from confluent_kafka import KafkaError, KafkaException

        if not self.raised:
            self.raised += 1
            raise KafkaException(
                KafkaError(
                    KafkaError.ILLEGAL_GENERATION,
                    "Specified group generation id is not valid",
                    fatal=False,
                    retriable=False,
                    txn_requires_abort=True,
                )
            )
        self._inner.send_offsets_to_transaction(*args)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_a_transaction_overtaken_by_a_rebalance_is_redone_not_fatal(plant: PlantConfig) -> None:
    """An exactly-once stage whose offset commit fails with ILLEGAL_GENERATION (another
    member joined mid-batch) aborts, rewinds and carries on: each output once."""
    import uuid

    create_topics(plant)
    produce(
        plant, plant.topics.triggers, [encode(trigger(i), source="t", time=1.0) for i in range(12)]
    )
    loop = echo_loop(plant, "g-txn-rebalance", transactional=True)
    real = make_producer(
        plant.kafka, client_suffix="echo-txn", transactional_id=f"echo-{uuid.uuid4().hex[:8]}"
    )
    flaky = _RebalancedOnce(real)
    loop.producer = flaky  # type: ignore[assignment]

    def produce_with(batch: list) -> None:
        for _msg, ev in batch:
            value, headers = encode(ev, source="echo", time=ev.at)
            real.produce(
                plant.topics.actions, value=value, headers=headers, on_delivery=loop.tracker
            )

    loop.handle = produce_with
    t = start(loop)
    try:
        wait_for(lambda: loop.stats.records >= 12, 40, "every trigger after the retry")
        assert t.is_alive(), "a rebalance must not stop an exactly-once stage"
    finally:
        loop.shutdown.request()
        t.join(15)
    assert flaky.raised == 1 and loop.stats.retries == 1
    outs = read(plant, [plant.topics.actions], timeout_s=20, quiet_s=2)  # read_committed
    ids = sorted(decode(m.value(), m.headers(), PartTrigger).part_id for m in outs)
    assert ids == sorted(f"p{i}" for i in range(12)), "the aborted batch leaked or was lost"


def test_a_transient_failure_retries_the_held_batch_and_reads_nothing_new_meanwhile(
    plant: PlantConfig,
) -> None:
    """Redis down (or any RetryLater): the loop retries the very records it holds, with
    its partitions paused, so records produced during the outage wait their turn and
    every record is handled once, in order, after the outage."""
    from inspector.bus.loop import RetryLater

    create_topics(plant)
    produce(
        plant, plant.topics.triggers, [encode(trigger(i), source="t", time=1.0) for i in range(5)]
    )
    loop = echo_loop(plant, "g-held")
    echo = loop.handle
    outage = threading.Event()
    outage.set()
    tried: list[list[str]] = []
    handled: list[str] = []

    def flaky(batch: list) -> None:
        ids = [ev.part_id for _m, ev in batch]
        if outage.is_set():
            tried.append(ids)
            raise RetryLater("store down")
        echo(batch)
        handled.extend(ids)

    loop.handle = flaky
    loop.retry_max_s = 0.4
    t = start(loop)
    try:
        wait_for(lambda: len(tried) >= 3, 30, "three failed tries")
        produce(  # arrives during the outage: must not be read before the held batch is done
            plant,
            plant.topics.triggers,
            [encode(trigger(i), source="t", time=1.0) for i in range(5, 10)],
        )
        wait_for(lambda: len(tried) >= 6, 30, "three more tries with the new records on the topic")
        first = tried[0]
        assert first and all(ids == first for ids in tried), f"the held batch changed: {tried}"
        outage.clear()
        wait_for(lambda: len(handled) >= 10, 30, "all ten records after the outage")
        time.sleep(1.0)  # a window in which a record read twice would show up
    finally:
        loop.shutdown.request()
        t.join(15)
    assert handled == [f"p{i}" for i in range(10)], handled
    assert loop.stats.retries == len(tried)
