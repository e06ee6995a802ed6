"""The lake's tables: one Apache Iceberg table per event topic, its schema and its rows.

Pure logic (no catalog, no broker): an event becomes one row of typed columns that
analysts filter on, plus ``raw`` (the event's JSON as it was on the topic) and the
Kafka coordinates it came from. Tables are partitioned by day (of the event's own
time: capture for verdicts and defects, ``at`` for actions and camera status) and by
line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    DoubleType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from inspector.config import LakeTable, TopicSettings
from inspector.events import (
    ActionEvent,
    CameraStatusEvent,
    DefectEvent,
    DriftEvent,
    Finding,
    Payload,
    VerdictEvent,
)

# Marks a table as written by inspector; a table at our name without it is refused.
OWNER_PROPERTY = "inspector.table"
# Snapshot summary property: the Kafka next-offsets this table holds everything below.
OFFSETS_PROPERTY = "inspector.kafka-offsets"

_S, _L, _I, _D, _T = StringType, LongType, IntegerType, DoubleType, TimestamptzType


def _field(i: int, name: str, kind: Any, required: bool = False, doc: str | None = None) -> Any:
    return NestedField(i, name, kind, required=required, doc=doc)


def _strings(i: int, name: str, doc: str) -> Any:
    return NestedField(i, name, ListType(i + 500, StringType(), element_required=False), doc=doc)


_KAFKA = (
    _field(90, "kafka_partition", _I(), True),
    _field(91, "kafka_offset", _L(), True),
    _field(92, "raw", _S(), True, "the event's JSON as it was on the topic"),
)


def _us(epoch_s: float) -> int:
    return round(epoch_s * 1_000_000)


def _classes(findings: list[Finding]) -> tuple[list[str], list[str]]:
    return [f.cls for f in findings], [f.severity for f in findings]


def verdict_row(v: VerdictEvent) -> dict[str, Any]:
    t = v.timings
    classes, severities = _classes(v.findings)
    return {
        "verdict_id": v.verdict_id,
        "frame_id": v.frame_id,
        "line_id": v.line_id,
        "camera_id": v.camera_id,
        "part_id": v.part_id,
        "seq": v.seq,
        "verdict": v.verdict,
        "rule": v.rule,
        "reason": v.reason,
        "classes": classes,
        "severities": severities,
        "part_verdict": v.part_verdict,
        "captured_at": _us(t.captured_at),
        "ingested_at": _us(t.ingested_at),
        "emitted_at": _us(t.emitted_at),
        "latency_ms": (t.emitted_at - t.captured_at) * 1000.0,
        "model_name": v.model.name if v.model else None,
        "model_version": v.model.version if v.model else None,
        "evidence_key": v.evidence_key,
    }


def defect_row(d: DefectEvent) -> dict[str, Any]:
    classes, severities = _classes(d.findings)
    return {
        "defect_id": d.defect_id,
        "verdict_id": d.verdict_id,
        "frame_id": d.frame_id,
        "line_id": d.line_id,
        "camera_id": d.camera_id,
        "part_id": d.part_id,
        "seq": d.seq,
        "classes": classes,
        "severities": severities,
        "captured_at": _us(d.captured_at),
        "evidence_key": d.evidence_key,
    }


def action_row(a: ActionEvent) -> dict[str, Any]:
    return {
        "action_id": a.action_id,
        "workflow": a.workflow,
        "kind": a.kind,
        "outcome": a.outcome,
        "line_id": a.line_id,
        "camera_id": a.camera_id,
        "verdict_id": a.verdict_id,
        "episode_id": a.episode_id,
        "attempt": a.attempt,
        "detail": a.detail,
        "at": _us(a.at),
    }


def camera_status_row(c: CameraStatusEvent) -> dict[str, Any]:
    return {
        "camera_id": c.camera_id,
        "line_id": c.line_id,
        "run_id": c.run_id,
        "transition": c.transition,
        "state": c.state,
        "previous": c.previous,
        "reason": c.reason,
        "at": _us(c.at),
        "frames_ingested": c.frames_ingested,
        "frames_dropped": c.frames_dropped,
        "reconnects": c.reconnects,
        "stalls": c.stalls,
        "fps": c.fps,
    }


def drift_row(d: DriftEvent) -> dict[str, Any]:
    return {
        "camera_id": d.camera_id,
        "line_id": d.line_id,
        "state": d.state,
        "statistic": d.statistic,
        "psi": d.psi,
        "ks_statistic": d.ks_statistic,
        "ks_pvalue": d.ks_pvalue,
        "reference_mean": d.reference_mean,
        "current_mean": d.current_mean,
        "window": d.window,
        "model_name": d.model.name,
        "model_version": d.model.version,
        "at": _us(d.at),
    }


@dataclass(frozen=True)
class TableSpec:
    name: LakeTable
    topic_kind: str  # TopicSettings.name(kind)
    payload: type[Payload]
    schema: Schema
    time_column: str
    row: Callable[[Any], dict[str, Any]]

    def topic(self, topics: TopicSettings) -> str:
        return topics.name(self.topic_kind)

    def partition_spec(self) -> PartitionSpec:
        by_name = {f.name: f.field_id for f in self.schema.fields}
        return PartitionSpec(
            PartitionField(by_name[self.time_column], 1000, DayTransform(), "day"),
            PartitionField(by_name["line_id"], 1001, IdentityTransform(), "line_id"),
        )


VERDICTS = TableSpec(
    name="verdicts",
    topic_kind="verdicts",
    payload=VerdictEvent,
    time_column="captured_at",
    row=verdict_row,
    schema=Schema(
        _field(1, "verdict_id", _S(), True),
        _field(2, "frame_id", _S(), True),
        _field(3, "line_id", _S(), True),
        _field(4, "camera_id", _S(), True),
        _field(5, "part_id", _S()),
        _field(6, "seq", _L(), True),
        _field(7, "verdict", _S(), True, "PASS, FAIL or FAULT"),
        _field(8, "rule", _S(), True, "the rule that decided, e.g. class:scratch, fault:shed"),
        _field(9, "reason", _S()),
        _strings(10, "classes", "class of each finding, in order"),
        _strings(11, "severities", "severity of each finding, in order"),
        _field(12, "part_verdict", _S()),
        _field(13, "captured_at", _T(), True),
        _field(14, "ingested_at", _T(), True),
        _field(15, "emitted_at", _T(), True),
        _field(16, "latency_ms", _D(), True, "capture to verdict"),
        _field(17, "model_name", _S()),
        _field(18, "model_version", _S()),
        _field(19, "evidence_key", _S()),
        *_KAFKA,
    ),
)

DEFECTS = TableSpec(
    name="defects",
    topic_kind="defects",
    payload=DefectEvent,
    time_column="captured_at",
    row=defect_row,
    schema=Schema(
        _field(1, "defect_id", _S(), True),
        _field(2, "verdict_id", _S(), True),
        _field(3, "frame_id", _S(), True),
        _field(4, "line_id", _S(), True),
        _field(5, "camera_id", _S(), True),
        _field(6, "part_id", _S()),
        _field(7, "seq", _L(), True),
        _strings(8, "classes", "class of each finding, in order"),
        _strings(9, "severities", "severity of each finding, in order"),
        _field(10, "captured_at", _T(), True),
        _field(11, "evidence_key", _S()),
        *_KAFKA,
    ),
)

ACTIONS = TableSpec(
    name="actions",
    topic_kind="actions",
    payload=ActionEvent,
    time_column="at",
    row=action_row,
    schema=Schema(
        _field(1, "action_id", _S(), True),
        _field(2, "workflow", _S(), True),
        _field(3, "kind", _S(), True),
        _field(4, "outcome", _S(), True),
        _field(5, "line_id", _S(), True),
        _field(6, "camera_id", _S()),
        _field(7, "verdict_id", _S()),
        _field(8, "episode_id", _S()),
        _field(9, "attempt", _I(), True),
        _field(10, "detail", _S()),
        _field(11, "at", _T(), True),
        *_KAFKA,
    ),
)

CAMERA_STATUS = TableSpec(
    name="camera_status",
    topic_kind="camera-status",
    payload=CameraStatusEvent,
    time_column="at",
    row=camera_status_row,
    schema=Schema(
        _field(1, "camera_id", _S(), True),
        _field(2, "line_id", _S(), True),
        _field(3, "run_id", _S(), True),
        _field(4, "transition", _L(), True),
        _field(5, "state", _S(), True),
        _field(6, "previous", _S()),
        _field(7, "reason", _S()),
        _field(8, "at", _T(), True),
        _field(9, "frames_ingested", _L(), True),
        _field(10, "frames_dropped", _L(), True),
        _field(11, "reconnects", _L(), True),
        _field(12, "stalls", _L(), True),
        _field(13, "fps", _D(), True),
        *_KAFKA,
    ),
)

# A candidate's verdicts (``inspector shadow``): the same event and columns as the
# line's verdicts, in a table of their own so no KPI ever counts them as the line's.
SHADOW_VERDICTS = TableSpec(
    name="shadow_verdicts",
    topic_kind="shadow-verdicts",
    payload=VerdictEvent,
    time_column="captured_at",
    row=verdict_row,
    schema=VERDICTS.schema,
)

DRIFT = TableSpec(
    name="drift",
    topic_kind="drift",
    payload=DriftEvent,
    time_column="at",
    row=drift_row,
    schema=Schema(
        _field(1, "camera_id", _S(), True),
        _field(2, "line_id", _S(), True),
        _field(3, "state", _S(), True, "raised or cleared"),
        _field(4, "statistic", _S(), True),
        _field(5, "psi", _D(), True, "population stability index vs the reference"),
        _field(6, "ks_statistic", _D()),
        _field(7, "ks_pvalue", _D()),
        _field(8, "reference_mean", _D()),
        _field(9, "current_mean", _D()),
        _field(10, "window", _L(), True),
        _field(11, "model_name", _S(), True),
        _field(12, "model_version", _S(), True),
        _field(13, "at", _T(), True),
        *_KAFKA,
    ),
)

SPECS: dict[str, TableSpec] = {
    s.name: s for s in (VERDICTS, ACTIONS, CAMERA_STATUS, DEFECTS, SHADOW_VERDICTS, DRIFT)
}
