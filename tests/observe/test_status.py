"""`inspector status` against the real broker: states, counts, yield, detect lag."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from typer.testing import CliRunner

from inspector.bus.kafka import make_consumer, make_producer
from inspector.cli import app
from inspector.config import PlantConfig
from inspector.events import FrameMeta, LineCommand, encode_frame
from inspector.observe.feed import start_of_today
from tests.helpers import wait_for
from tests.observe.conftest import camera_status, publish, verdict
from tests.observe.test_tail import write_config

pytestmark = pytest.mark.integration
COORDINATOR_NOT_READY = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}
runner = CliRunner()


def frames(n: int) -> list[tuple[bytes, list]]:
    out = []
    for seq in range(n):
        meta = FrameMeta(
            frame_id=f"cam-1:r:{seq}",
            camera_id="cam-1",
            line_id="line-1",
            run_id="r",
            seq=seq,
            captured_at=time.time(),
            ingested_at=time.time(),
            width=64,
            height=64,
            storage="redis",
            claim_key=f"k:{seq}",
            size_bytes=1,
        )
        out.append(encode_frame(meta, None, source="test"))
    return out


def test_status_reports_states_counts_yield_and_lag(two_lines: PlantConfig, tmp_path: Path) -> None:
    cfg = two_lines
    now = time.time()
    # camera states: the latest per camera wins, even when it predates today
    publish(
        cfg,
        cfg.topics.camera_status,
        [
            camera_status("cam-1", "line-1", "connecting", now - 50, 0),
            camera_status("cam-1", "line-1", "streaming", now - 40, 1, fps=4.8),
            camera_status("cam-2", "line-1", "stalled", now - 5, 3),
        ],
    )
    publish(
        cfg,
        cfg.topics.camera_status,
        [camera_status("cam-3", "line-2", "streaming", now - 3 * 86400, 1)],
        timestamp_s=now - 3 * 86400,
        key=b"cam-3",
    )
    # verdicts: yesterday's do not count; a redelivered verdict counts once
    publish(
        cfg,
        cfg.topics.verdicts,
        [verdict("line-1", "cam-1", 0, "FAIL", cls="dent", at=now - 2 * 86400)],
        timestamp_s=start_of_today() - 3600,
    )
    todays = [
        verdict("line-1", "cam-1", 1, "PASS"),
        verdict("line-1", "cam-1", 2, "PASS"),
        verdict("line-1", "cam-1", 3, "PASS"),
        verdict("line-1", "cam-2", 4, "FAIL", cls="scratch"),
        verdict("line-1", "cam-2", 5, "FAULT"),
        verdict("line-2", "cam-3", 6, "FAIL", cls="crack"),
    ]
    publish(cfg, cfg.topics.verdicts, [*todays, todays[0]])
    publish(
        cfg,
        cfg.topics.line_commands,
        [
            LineCommand(
                command_id="c1",
                line_id="line-2",
                command="stop",
                episode_id="ep-1",
                reason="4 critical FAILs in 20 s",
                issued_at=now,
            )
        ],
    )
    # line-1: a worker restart's FAULTs sent it to manual inspection (the line runs on)
    publish(
        cfg,
        cfg.topics.line_commands,
        [
            LineCommand(
                command_id="c2",
                line_id="line-1",
                command="manual_inspection",
                episode_id="ep-2",
                reason="manual-inspection: 15 inspection FAULTs",
                issued_at=now,
            )
        ],
    )
    # detect group: 5 frames on one partition, committed up to offset 2 → lag 3
    partition = 1
    producer = make_producer(cfg.kafka, client_suffix="test-frames")
    for value, headers in frames(5):
        producer.produce(cfg.topics.frames, value=value, headers=headers, partition=partition)
    assert producer.flush(15) == 0
    committer = make_consumer(cfg.kafka, cfg.worker.group_id, client_suffix="test-commit")

    def committed() -> bool:
        try:
            committer.commit(
                offsets=[TopicPartition(cfg.topics.frames, partition, 2)], asynchronous=False
            )
        except KafkaException as exc:
            # a fresh broker still loading the group's offsets partition answers
            # COORDINATOR_LOAD_IN_PROGRESS / NOT_COORDINATOR: wait for it to be ready
            if exc.args[0].code() not in COORDINATOR_NOT_READY:
                raise
            return False
        return True

    wait_for(committed, 30, "the group coordinator to accept the commit", step_s=0.2)
    committer.close()

    result = runner.invoke(app, ["status", "--config", str(write_config(cfg, tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    snap = orjson.loads(result.stdout)
    lines = {ln["id"]: ln for ln in snap["lines"]}
    assert lines["line-1"]["counts"] == {"PASS": 3, "FAIL": 1, "FAULT": 1}
    assert lines["line-1"]["yield"] == 75.0  # FAULTs judge no part
    assert lines["line-2"]["counts"] == {"PASS": 0, "FAIL": 1, "FAULT": 0}
    assert lines["line-2"]["yield"] == 0.0
    assert [e["episode_id"] for e in lines["line-2"]["episodes"]] == ["ep-1"]
    assert lines["line-1"]["episodes"] == [] and lines["line-2"]["manual_inspection"] == []
    assert [e["episode_id"] for e in lines["line-1"]["manual_inspection"]] == ["ep-2"]
    cams = {c["id"]: c for ln in snap["lines"] for c in ln["cameras"]}
    assert cams["cam-1"]["state"] == "streaming" and cams["cam-1"]["reported_fps"] == 4.8
    assert cams["cam-1"]["counts"]["PASS"] == 3
    assert cams["cam-2"]["state"] == "stalled"
    assert cams["cam-3"]["state"] == "streaming"
    # no act stage ran here: its Redis counters exist in shape only
    assert snap["act_counters"]["line-1"] == {"PASS": 0, "FAIL": 0, "FAULT": 0}
    assert snap["lag"]["group"] == cfg.worker.group_id
    assert snap["lag"]["partitions"][str(partition)] == 3
    assert snap["lag"]["total"] == 3 + 0  # the other partitions hold nothing

    pretty = runner.invoke(app, ["status", "--config", str(write_config(cfg, tmp_path))])
    assert pretty.exit_code == 0, pretty.output
    assert "75.0%" in pretty.stdout and "stalled" in pretty.stdout
    assert "STOPPED" in pretty.stdout and "MANUAL INSPECTION" in pretty.stdout
