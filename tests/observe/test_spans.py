"""Real OpenTelemetry spans through a running plant: RTSP camera → ingest → worker → act.

The OpenTelemetry SDK records into an in-memory exporter for the test process; the
three stages run in-process on threads, as in tests/test_pipeline.py. For one frame
that was diverted, the spans must form one trace and a parent chain
ingest.publish → detect.decode / detect.infer / detect.judge → act.divert, and the
records on the topics must carry exactly those spans' contexts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inspector.bus.kafka import Shutdown
from inspector.config import PlantConfig
from inspector.events import LineCommand, VerdictEvent, decode, decode_frame
from inspector.telemetry import tracing
from tests.detect.conftest import demo_plant, frame_mode_rules
from tests.helpers import create_topics, read, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.slow]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    tracing.configure(provider)
    try:
        yield exp
    finally:
        tracing.configure(None)
        provider.shutdown()


@pytest.fixture
def traced_plant(make_config: Callable[..., PlantConfig]) -> Iterator[Any]:
    from inspector.sim import SceneConfig, SimCameraFleet

    fleet = SimCameraFleet(
        {"cam-1": SceneConfig(seed=31, width=640, height=360, clip_seconds=10, defect_rate=0.7)}
    )
    fleet.start()
    cfg = make_config(
        lines=[
            {
                "id": "line-1",
                "cameras": [
                    {
                        "id": "cam-1",
                        "url": fleet.url("cam-1"),
                        "sample_fps": 5,
                        "width": 640,
                        "height": 360,
                    }
                ],
                "rules": frame_mode_rules(),
            }
        ],
        models=demo_plant()["models"],
        workflows=[{"kind": "divert", "name": "gate", "filter": {"verdicts": ["FAIL"]}}],
    )
    create_topics(cfg)
    yield cfg
    fleet.close()


def hexid(n: int, width: int) -> str:
    return format(n, f"0{width}x")


def ctx(s: ReadableSpan) -> tuple[str, str]:
    assert s.context is not None
    return hexid(s.context.trace_id, 32), hexid(s.context.span_id, 16)


def parent_id(s: ReadableSpan) -> str | None:
    return hexid(s.parent.span_id, 16) if s.parent is not None else None


def chain(spans: list[ReadableSpan]) -> dict[str, ReadableSpan] | None:
    """ingest.publish, detect.{decode,infer,judge} and act.divert of one diverted frame."""
    by_id = {ctx(s)[1]: s for s in spans}
    for act in (s for s in spans if s.name == "act.divert"):
        judge = by_id.get(parent_id(act) or "")
        if judge is None or judge.name != "detect.judge":
            continue
        publish = by_id.get(parent_id(judge) or "")
        if publish is None or publish.name != "ingest.publish":
            continue
        frame_id = publish.attributes["inspector.frame_id"]  # type: ignore[index]
        found = {"ingest.publish": publish, "detect.judge": judge, "act.divert": act}
        for s in spans:
            fid = (s.attributes or {}).get("inspector.frame_id")
            if s.name in ("detect.decode", "detect.infer") and fid == frame_id:
                found[s.name] = s
        if len(found) == 5:
            return found
    return None


def test_one_frame_is_one_trace_of_real_spans(
    traced_plant: PlantConfig, exporter: InMemorySpanExporter
) -> None:
    from inspector.act.service import run_act
    from inspector.detect.worker import run_worker
    from inspector.ingest.service import run_ingest

    cfg = traced_plant
    stops = [Shutdown() for _ in range(3)]
    threads = [
        threading.Thread(
            target=run_ingest, args=(cfg, stops[0]), kwargs={"metrics_port": 0}, daemon=True
        ),
        threading.Thread(
            target=run_worker,
            args=(cfg,),
            kwargs={"metrics_port": 0, "shutdown": stops[1]},
            daemon=True,
        ),
        threading.Thread(
            target=run_act, args=(cfg, stops[2]), kwargs={"metrics_port": 0}, daemon=True
        ),
    ]
    for t in threads:
        t.start()
    found: dict[str, ReadableSpan] = {}
    try:

        def diverted() -> bool:
            got = chain(list(exporter.get_finished_spans()))
            if got:
                found.update(got)
            return got is not None

        wait_for(diverted, 120, "a diverted frame's spans ingest → worker → act")
        publish, judge, act = found["ingest.publish"], found["detect.judge"], found["act.divert"]
        frame_id = publish.attributes["inspector.frame_id"]  # type: ignore[index]

        # One trace, and each stage's span is the child of the previous stage's.
        trace = ctx(publish)[0]
        assert {ctx(s)[0] for s in found.values()} == {trace}
        assert publish.parent is None  # the frame's trace starts at ingest
        for name in ("detect.decode", "detect.infer", "detect.judge"):
            assert parent_id(found[name]) == ctx(publish)[1], name
            assert found[name].parent.is_remote  # type: ignore[union-attr]  # across Kafka
        assert parent_id(act) == ctx(judge)[1]

        # What each span says.
        assert publish.attributes["inspector.camera_id"] == "cam-1"  # type: ignore[index]
        assert publish.attributes["messaging.kafka.offset"] >= 0  # type: ignore[index,operator]
        for name in ("detect.decode", "detect.infer", "detect.judge"):
            assert found[name].attributes["inspector.frame_id"] == frame_id  # type: ignore[index]
            assert found[name].attributes["inspector.camera_id"] == "cam-1"  # type: ignore[index]
        assert 1 <= found["detect.infer"].attributes["inspector.batch_size"] <= 8  # type: ignore[index,operator]
        assert found["detect.infer"].attributes["inspector.detections"] >= 1  # type: ignore[index,operator]
        assert judge.attributes["inspector.verdict"] == "FAIL"  # type: ignore[index]
        assert act.attributes["inspector.workflow"] == "gate"  # type: ignore[index]
        assert act.attributes["inspector.frame_id"] == frame_id  # type: ignore[index]
        assert act.attributes["inspector.outcome"] == "fired"  # type: ignore[index]
        assert tuple(act.attributes["inspector.commands"]) == ("divert",)  # type: ignore[index,arg-type]
        # Stages in time order: published, then judged, then acted on.
        assert publish.start_time <= judge.start_time <= act.start_time  # type: ignore[operator]

        # The records carry exactly these spans' contexts.
        frames = read(
            cfg,
            [cfg.topics.frames],
            until=lambda ms: any(
                decode_frame(m.value(), m.headers())[0].frame_id == frame_id for m in ms
            ),
        )
        meta = next(
            meta
            for meta, _ in (decode_frame(m.value(), m.headers()) for m in frames)
            if meta.frame_id == frame_id
        )
        assert meta.traceparent == f"00-{trace}-{ctx(publish)[1]}-01"

        def verdict_of(m: Any) -> VerdictEvent:
            return decode(m.value(), m.headers(), VerdictEvent)

        verdicts = read(
            cfg,
            [cfg.topics.verdicts],
            until=lambda ms: any(verdict_of(m).frame_id == frame_id for m in ms),
        )
        vmsg = next(m for m in verdicts if verdict_of(m).frame_id == frame_id)
        assert tracing.traceparent_from_headers(vmsg.headers()) == (
            f"00-{trace}-{ctx(judge)[1]}-01"
        )

        def command_of(m: Any) -> LineCommand:
            return decode(m.value(), m.headers(), LineCommand)

        cmds = read(
            cfg,
            [cfg.topics.line_commands],
            until=lambda ms: any(command_of(m).frame_id == frame_id for m in ms),
        )
        cmsg = next(m for m in cmds if command_of(m).frame_id == frame_id)
        assert tracing.traceparent_from_headers(cmsg.headers()) == (f"00-{trace}-{ctx(act)[1]}-01")
    finally:
        for s in stops:
            s.request()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
