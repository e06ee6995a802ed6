"""A mini plant end to end: RTSP camera → ingest → worker → act, watched by the dashboard.

Real everything: the GStreamer RTSP server, the broker, redis-server, the shipped
model, headless Chromium. Checks what only the whole chain can show: metrics move
while it runs, one trace runs frame → verdict → action, and the dashboard shows it.
"""

from __future__ import annotations

import shutil
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inspector.bus.kafka import Shutdown
from inspector.config import PlantConfig
from inspector.events import FrameMeta, LineCommand, VerdictEvent, decode, decode_frame
from inspector.localstack import free_port
from inspector.telemetry.tracing import trace_id, traceparent_from_headers
from tests.detect.conftest import demo_plant, frame_mode_rules
from tests.helpers import create_topics, read, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
TOKEN = "pipeline-token"


def metric_total(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                total += s.value
    return total


@pytest.fixture
def mini_plant(make_config: Callable[..., PlantConfig]) -> Any:
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
        observe={"dashboard_token": TOKEN},
    )
    create_topics(cfg)
    yield cfg, fleet
    fleet.close()


def test_mini_pipeline_metrics_trace_and_dashboard(mini_plant: Any, artifacts_dir: Path) -> None:
    from inspector.act.service import run_act
    from inspector.detect.worker import run_worker
    from inspector.ingest.service import run_ingest
    from inspector.observe.dashboard import Dashboard
    from inspector.observe.feed import start_of_today

    cfg, _fleet = mini_plant
    ports = {"ingest": free_port(), "worker": free_port()}
    stops = [Shutdown() for _ in range(3)]
    threads = [
        threading.Thread(
            target=run_ingest,
            args=(cfg, stops[0]),
            kwargs={"metrics_port": ports["ingest"]},
            daemon=True,
        ),
        threading.Thread(
            target=run_worker,
            args=(cfg,),
            kwargs={"metrics_port": ports["worker"], "shutdown": stops[1]},
            daemon=True,
        ),
        threading.Thread(
            target=run_act, args=(cfg, stops[2]), kwargs={"metrics_port": 0}, daemon=True
        ),
    ]
    # The stages run in this process, so their counters are the process's registry,
    # which earlier in-process tests already moved: count from here, and wait until
    # each stage's own /metrics answers.
    start = {
        n: registry_total(n)
        for n in (
            "inspector_verdicts_total",
            "inspector_frames_ingested_total",
            "inspector_inference_seconds_count",
        )
    }
    for t in threads:
        t.start()
    dash = Dashboard(cfg, port=0, since=start_of_today()).start()
    try:
        wait_for(
            lambda: (
                _ok(ports["worker"], "inspector_verdicts_total")
                >= start["inspector_verdicts_total"] + 5
            ),
            90,
            "the first verdicts",
        )
        wait_for(
            lambda: (
                _ok(ports["ingest"], "inspector_frames_ingested_total")
                > start["inspector_frames_ingested_total"]
            ),
            60,
            "ingest's /metrics with its first frames",
        )
        before = metric_total(ports["worker"], "inspector_verdicts_total")
        ingested_before = metric_total(ports["ingest"], "inspector_frames_ingested_total")
        wait_for(
            lambda: metric_total(ports["worker"], "inspector_verdicts_total") >= before + 10,
            60,
            "verdicts to keep coming",
        )
        assert metric_total(ports["ingest"], "inspector_frames_ingested_total") > ingested_before
        assert (
            metric_total(ports["worker"], "inspector_inference_seconds_count")
            > start["inspector_inference_seconds_count"]
        )

        # One trace: frame → verdict → line command.
        cmds = read(cfg, [cfg.topics.line_commands], count=1, timeout_s=90)
        assert cmds, "no FAIL was diverted: the model found no defect on a defect-rich line"
        cmd = decode(cmds[0].value(), cmds[0].headers(), LineCommand)
        verdict_msgs = read(
            cfg,
            [cfg.topics.verdicts],
            until=lambda ms: any(
                decode(m.value(), m.headers(), VerdictEvent).verdict_id == cmd.verdict_id
                for m in ms
            ),
        )
        vmsg = next(
            m
            for m in verdict_msgs
            if decode(m.value(), m.headers(), VerdictEvent).verdict_id == cmd.verdict_id
        )
        v = decode(vmsg.value(), vmsg.headers(), VerdictEvent)
        frame_msgs = read(
            cfg,
            [cfg.topics.frames],
            until=lambda ms: any(
                decode_frame(m.value(), m.headers())[0].frame_id == v.frame_id for m in ms
            ),
        )
        fmeta: FrameMeta = next(
            meta
            for meta, _ in (decode_frame(m.value(), m.headers()) for m in frame_msgs)
            if meta.frame_id == v.frame_id
        )
        t_frame = trace_id(fmeta.traceparent)
        assert t_frame is not None
        assert trace_id(traceparent_from_headers(vmsg.headers())) == t_frame
        assert trace_id(traceparent_from_headers(cmds[0].headers())) == t_frame
        assert v.verdict == "FAIL" and cmd.command == "divert"

        if shutil.which(CHROMIUM):
            _browser_check(dash.port, artifacts_dir)
    finally:
        dash.close()
        for s in stops:
            s.request()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)


def registry_total(name: str) -> float:
    """The same sum as metric_total, read from this process's registry directly."""
    from prometheus_client import REGISTRY

    return sum(s.value for fam in REGISTRY.collect() for s in fam.samples if s.name == name)


def _ok(port: int, name: str) -> float:
    try:
        return metric_total(port, name)
    except OSError:
        return 0.0


def _browser_check(port: int, artifacts_dir: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.observe.test_browser import CHROMIUM_ARGS

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")
            line = page.locator('section[data-line="line-1"]')
            expect(page.locator("#conn")).to_have_text("live", timeout=15000)
            expect(line.locator(".count-fail")).not_to_have_text("0", timeout=20000)
            first = int(line.locator(".count-pass").inner_text() or 0)
            expect(line.locator(".count-pass")).not_to_have_text(str(first), timeout=20000)
            img = line.locator(".gallery .shot img").first
            expect(img).to_be_visible(timeout=20000)
            page.wait_for_function(
                "img => img.complete && img.naturalWidth > 0",
                arg=img.element_handle(),
                timeout=15000,
            )
            page.screenshot(path=str(artifacts_dir / "pipeline-dashboard.png"), full_page=True)
        finally:
            browser.close()
