"""The demo's own logic without running the plant: scorecard counting, the live view's
fps, and the effective config it writes for `inspector status/tail/evidence`."""

from __future__ import annotations

import io
import os
import shlex
import stat
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from inspector.cli import app
from inspector.config import PlantConfig, load_config
from inspector.demo import (
    DEFAULT_CONFIG,
    camera_fps,
    live_table,
    print_scorecard,
    verdict_counts,
    write_effective_config,
)
from inspector.observe.aggregate import PlantView
from inspector.sim.score import JudgedFrame, score
from tests.observe.conftest import verdict

SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="  # 26 bytes
TOKEN = "demo-token-7f3a9c"


def demo_config() -> PlantConfig:
    return load_config(
        DEFAULT_CONFIG,
        env={
            "INSPECTOR_DEMO_MES_SECRET": SECRET,
            "INSPECTOR_DEMO_TOKEN": TOKEN,
            "INSPECTOR_DEMO_KAFKA": "127.0.0.1:39092",
            "INSPECTOR_DEMO_REDIS": "redis://127.0.0.1:36379/0",
        },
    )


def test_a_verdict_from_an_unconfigured_camera_is_counted_apart() -> None:
    ours = [verdict("line-a", "a-cam-1", 1), verdict("line-a", "a-cam-1", 2, "FAIL", cls="dent")]
    stray = verdict("line-z", "z-cam-9", 3, "FAULT")
    counts, unconfigured = verdict_counts([*ours, stray], {"a-cam-1", "a-cam-2"})
    assert counts == {"PASS": 1, "FAIL": 1, "FAULT": 0}
    assert unconfigured == {"z-cam-9": {"PASS": 0, "FAIL": 0, "FAULT": 1}}
    # the scorer had no ground truth for it: it raised KeyError and lost the scorecard
    s = score([JudgedFrame("z-cam-9", 5, 1.0, "FAIL")], clips={})
    assert s.unknown_camera == 1 and s.as_dict()["frames_from_cameras_without_truth"] == 1

    rates = {
        "defective": 0,
        "clean": 0,
        "caught": 0,
        "false_rejects": 0,
        "recall": None,
        "false_reject_rate": None,
    }
    card = {
        "duration_s": 1.0,
        "cameras": 4,
        "frames_captured": 3,
        "frames_verdicted": 2,
        "frames_dropped": 0,
        "verdicts": counts,
        "verdicts_unconfigured_cameras": unconfigured,
        "quality": {"per_frame": rates, "per_part": rates},
        "capture_to_verdict_s": {"p50": None, "p95": None, "p99": None},
        "actions": {},
        "mes": {},
        "path": "x.json",
    }
    lines: list[str] = []
    print_scorecard(card, lines.append)
    assert "unconfigured camera z-cam-9: PASS 0  FAIL 0  FAULT 1 (not scored)" in lines

    # what the dashboard's trends panel showed at the end, from its /api/trends
    card["dashboard_trends"] = {
        "available": True,
        "verdicts": 7,
        "yield": [
            {"line": "line-a", "pass": 3, "fail": 1},
            {"line": "line-a", "pass": 2, "fail": 0},
            {"line": "line-b", "pass": 0, "fail": 0},
        ],
        "pareto": [{"class": "dent"}, {"class": "scratch"}],
        "shifts": [{}, {}],
    }
    lines.clear()
    print_scorecard(card, lines.append)
    assert (
        "dashboard trends    7 verdicts in the panel's window: line-a 83.3 %; "
        "Pareto dent, scratch; 2 shift rows"
    ) in lines
    card["dashboard_trends"] = {"available": False, "reason": "no catalog at /x: run it"}
    lines.clear()
    print_scorecard(card, lines.append)
    assert "dashboard trends    not shown: no catalog at /x: run it" in lines


def test_live_view_shows_the_rate_cameras_are_judged_at(tmp_path: Path) -> None:
    cfg = demo_config()
    view = PlantView(cfg, since=None)
    now = time.time()
    for i in range(30):  # 3 fps for the last 10 s, a camera that just came up
        view.apply_event("verdicts", verdict("line-a", "a-cam-1", i, at=now - 10 + i / 3))
    snap = view.snapshot(now=now)
    cam = next(c for ln in snap["lines"] for c in ln["cameras"] if c["id"] == "a-cam-1")
    idle = next(c for ln in snap["lines"] for c in ln["cameras"] if c["id"] == "a-cam-2")
    assert 2.8 <= camera_fps(cam) <= 3.1, cam
    assert camera_fps(idle) == 0.0
    out = io.StringIO()
    Console(file=out, width=200).print(
        live_table(
            snap,
            {
                "elapsed": 10,
                "duration": "60s",
                "dashboard": "http://x",
                "actions": {},
                "tickets": 0,
                "verified": 0,
            },
        )
    )
    row = next(line for line in out.getvalue().splitlines() if "a-cam-1" in line)
    assert f"{camera_fps(cam):.1f}" in row and " 0.0 " not in row, row


def test_effective_config_for_observing_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = demo_config()
    cmds = write_effective_config(cfg, tmp_path)
    plant, env_file = tmp_path / "plant.yaml", tmp_path / "demo.env"
    for p in (plant, env_file):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    text = plant.read_text()
    assert SECRET not in text and TOKEN not in text  # secrets only by reference
    assert "127.0.0.1:39092" in text and "redis://127.0.0.1:36379/0" in text
    env = {}
    for line in env_file.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    assert sorted(env.values()) == sorted([SECRET, TOKEN])
    assert load_config(plant, env=env) == cfg
    assert cmds == [
        f". {env_file}",
        f"inspector status --config {plant}",
        f"inspector tail verdicts --config {plant}",
        f"inspector evidence <verdict-id> -o evidence.jpg --config {plant}",
        f"inspector kpi --config {plant}",
    ]
    for k, v in env.items():  # what `. demo.env` does
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(app, ["config", "check", str(plant)])
    assert res.exit_code == 0 and "plant 'demo', 2 lines, 4 cameras" in res.output, res.output
    assert os.environ.get("INSPECTOR_DEMO_TOKEN") is None  # nothing else needed


def test_live_view_tracks_manual_inspection_apart_from_stops_and_resume_ends_both() -> None:
    from inspector.events import LineCommand

    view = PlantView(demo_config(), since=None)
    now = time.time()

    def cmd(cid: str, kind: str, episode: str | None) -> LineCommand:
        return LineCommand(
            command_id=cid,
            line_id="line-a",
            command=kind,
            episode_id=episode,
            reason=kind,
            issued_at=now,
        )

    view.apply_event("line-commands", cmd("c1", "manual_inspection", "ep-m"))
    view.apply_event("line-commands", cmd("c2", "stop", "ep-s"))
    [line] = [ln for ln in view.snapshot(now=now)["lines"] if ln["id"] == "line-a"]
    assert [e["episode_id"] for e in line["episodes"]] == ["ep-s"]
    assert [e["episode_id"] for e in line["manual_inspection"]] == ["ep-m"]
    # `inspector resume` closes every episode of the line; its command names the first
    view.apply_event("line-commands", cmd("c3", "resume", "ep-m"))
    [line] = [ln for ln in view.snapshot(now=now)["lines"] if ln["id"] == "line-a"]
    assert line["episodes"] == [] and line["manual_inspection"] == []


def test_each_line_shows_the_model_version_of_its_latest_verdict() -> None:
    from inspector.events import ModelRef

    view = PlantView(demo_config(), since=None)
    now = time.time()
    old = verdict("line-a", "a-cam-1", 1, at=now - 5).model_copy(
        update={"model": ModelRef(name="inspector-detector", version="1", sha256="a" * 64)}
    )
    new = verdict("line-a", "a-cam-2", 2, at=now - 1).model_copy(
        update={"model": ModelRef(name="inspector-detector", version="2", sha256="b" * 64)}
    )
    for v in (new, old):  # arrival order across partitions is not time order
        view.apply_event("verdicts", v)
    lines = {ln["id"]: ln for ln in view.snapshot(now=now)["lines"]}
    assert lines["line-a"]["model"] == "inspector-detector/2"
    assert lines["line-b"]["model"] is None


def test_drift_alarms_show_on_their_line_until_cleared_and_shadow_verdicts_never_count() -> None:
    from inspector.events import DriftEvent, ModelRef

    view = PlantView(demo_config(), since=None)
    now = time.time()
    ref = ModelRef(name="inspector-detector", version="1", sha256="a" * 64)

    def drift(state: str, at: float) -> DriftEvent:
        return DriftEvent(
            state=state,
            camera_id="a-cam-1",
            line_id="line-a",
            model=ref,
            statistic="brightness",
            psi=1.9,
            ks_statistic=0.8,
            ks_pvalue=1e-9,
            reference_mean=71.0,
            current_mean=42.6,
            window=200,
            at=at,
        )

    view.apply_event("drift", drift("raised", now - 2))
    lines = {ln["id"]: ln for ln in view.snapshot(now=now)["lines"]}
    [alarm] = lines["line-a"]["drift"]
    assert alarm["statistic"] == "brightness" and alarm["current_mean"] == 42.6
    assert lines["line-b"]["drift"] == []
    view.apply_event("drift", drift("cleared", now - 1))
    assert all(not ln["drift"] for ln in view.snapshot(now=now)["lines"])

    view.apply_event("shadow-verdicts", verdict("line-a", "a-cam-1", 7, "FAIL", cls="dent"))
    lines = {ln["id"]: ln for ln in view.snapshot(now=now)["lines"]}
    assert lines["line-a"]["counts"] == {"PASS": 0, "FAIL": 0, "FAULT": 0}


def test_the_shadow_panel_pairs_shadow_and_production_verdicts_in_either_order() -> None:
    from inspector.events import ModelRef

    view = PlantView(demo_config(), since=None)
    challenger = ModelRef(name="inspector-detector", version="2", sha256="b" * 64)

    def pair(seq: int, prod: str, shadow: str, shadow_first: bool) -> None:
        fid = f"a-cam-1:r:{seq}"
        p = verdict(
            "line-a", "a-cam-1", seq, prod, cls="dent" if prod == "FAIL" else None, frame_id=fid
        )
        s = verdict(
            "line-a", "a-cam-1", seq, shadow, cls="dent" if shadow == "FAIL" else None, frame_id=fid
        )
        s = s.model_copy(update={"model": challenger})
        events = [("shadow-verdicts", s), ("verdicts", p)]
        for kind, ev in events if shadow_first else events[::-1]:
            view.apply_event(kind, ev)

    pair(1, "PASS", "PASS", shadow_first=True)
    pair(2, "PASS", "FAIL", shadow_first=False)  # a new FAIL
    pair(3, "FAIL", "PASS", shadow_first=True)  # a missed FAIL
    pair(4, "FAIL", "FAIL", shadow_first=False)
    pair(5, "FAULT", "PASS", shadow_first=True)  # production could not trust it: not compared
    lines = {ln["id"]: ln for ln in view.snapshot()["lines"]}
    assert lines["line-a"]["shadow"] == {
        "model": "inspector-detector/2",
        "compared": 4,
        "agreed": 2,
        "new_fails": 1,
        "missed_fails": 1,
        "agreement": 0.5,
    }
    assert lines["line-a"]["counts"] == {"PASS": 2, "FAIL": 2, "FAULT": 1}  # production only
    assert lines["line-b"]["shadow"] is None
