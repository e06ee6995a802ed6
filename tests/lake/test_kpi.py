"""``inspector kpi``: figures read back from the lake equal a hand computation over the
verdicts, actions and camera status events produced to the topics."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from inspector.cli import app
from inspector.config import Shift
from inspector.events import CameraStatusEvent, VerdictEvent
from inspector.lake.kpi import Window, compute, parse_time, run_reports, scan_verdicts
from tests.act.support import write_config
from tests.helpers import wait_for
from tests.lake.support import (
    DAY0,
    Interval,
    MakeConfig,
    RunningSink,
    camera_stream,
    lake_config,
    offsets,
    part_stream,
    send,
    send_events,
    stop_stream,
    stream,
    table_offsets,
)

pytestmark = pytest.mark.integration


def _day(v: VerdictEvent) -> str:
    return datetime.fromtimestamp(v.timings.captured_at, UTC).date().isoformat()


def hand_yield(vs: list[VerdictEvent]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for v in vs:
        groups[(v.line_id, _day(v))][v.verdict] += 1
    out = []
    for (line, day), c in sorted(groups.items()):
        judged = c["PASS"] + c["FAIL"]
        out.append(
            {
                "line": line,
                "day": day,
                "verdicts": sum(c.values()),
                "pass": c["PASS"],
                "fail": c["FAIL"],
                "fault": c["FAULT"],
                "yield_pct": 100 * c["PASS"] / judged,
                "defect_ppm": 1e6 * c["FAIL"] / judged,
            }
        )
    return out


def hand_latency(vs: list[VerdictEvent]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for v in vs:
        groups[(v.line_id, _day(v))].append((v.timings.emitted_at - v.timings.captured_at) * 1000)
    return [
        {
            "line": ln,
            "day": d,
            "verdicts": len(xs),
            "p50_ms": float(np.percentile(xs, 50)),
            "p95_ms": float(np.percentile(xs, 95)),
        }
        for (ln, d), xs in sorted(groups.items())
    ]


def hand_pareto(vs: list[VerdictEvent], key: str | None = None) -> list[dict[str, Any]]:
    """Per class: findings, frames, shares and findings per severity; with ``key`` (a
    dimension: model), the same within each value of it."""
    groups: dict[str, list[VerdictEvent]] = defaultdict(list)
    for v in vs:
        if v.verdict == "FAIL":
            groups[v.model.version if key and v.model else ""].append(v)
    out = []
    for g, members in sorted(groups.items()):
        findings = Counter(f.cls for v in members for f in v.findings)
        frames = Counter(c for v in members for c in {f.cls for f in v.findings})
        sev = Counter((f.cls, f.severity) for v in members for f in v.findings)
        total = sum(findings.values())
        order = sorted(findings, key=lambda c: (-findings[c], c))
        cum = np.cumsum([findings[c] for c in order])
        for i, c in enumerate(order):
            row = {"model": g} if key else {}
            out.append(
                row
                | {
                    "class": c,
                    "findings": findings[c],
                    "frames": frames[c],
                    "share_pct": 100 * findings[c] / total,
                    "cumulative_pct": 100 * cum[i] / total,
                    "critical": sev[(c, "critical")],
                    "major": sev[(c, "major")],
                    "minor": sev[(c, "minor")],
                }
            )
    return out


def same(got: list[dict[str, Any]], want: list[dict[str, Any]], tol: dict[str, float]) -> None:
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for k, wv in w.items():
            if k in tol:
                assert g[k] == pytest.approx(wv, abs=tol[k]), (k, g, w)
            else:
                assert g[k] == wv, (k, g, w)


def test_kpis_equal_a_hand_computation_over_the_produced_verdicts(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    n = 2000
    cfg = lake_config(make_config, tmp_path)
    verdicts = stream(n, seed=21)
    with RunningSink(cfg):
        send(cfg, verdicts)
        wait_for(lambda: sum(table_offsets(cfg).values()) == n, 60, "the lake to hold all")

    out = compute(scan_verdicts(cfg, Window()), ["line", "day"])
    same(out["yield"], hand_yield(verdicts), {"yield_pct": 0.0005, "defect_ppm": 0.5})
    same(out["latency"], hand_latency(verdicts), {"p50_ms": 0.05, "p95_ms": 0.05})

    tol = {"share_pct": 0.005, "cumulative_pct": 0.005}
    same(out["pareto"], hand_pareto(verdicts), tol)
    assert out["pareto"][-1]["cumulative_pct"] == 100.0
    assert any(r["class"] == "scratch" and r["minor"] and r["major"] for r in out["pareto"])
    assert out["fpy"] == []  # this stream has no part ids

    faults = Counter(v.rule for v in verdicts if v.verdict == "FAULT")
    nf = sum(faults.values())
    same(
        out["faults"],
        [
            {
                "rule": r,
                "faults": k,
                "share_of_faults_pct": 100 * k / nf,
                "share_of_verdicts_pct": 100 * k / n,
            }
            for r, k in sorted(faults.items(), key=lambda rk: (-rk[1], rk[0]))
        ],
        {"share_of_faults_pct": 0.005, "share_of_verdicts_pct": 0.0005},
    )

    # a window and a line: the scan prunes, the figures are the hand's over the same slice
    since, until = parse_time("2026-09-22"), parse_time("2026-09-22T12:00")
    window = Window(since=since, until=until, lines=("line-2",))
    sliced = [
        v
        for v in verdicts
        if v.line_id == "line-2" and since.timestamp() <= v.timings.captured_at < until.timestamp()
    ]
    assert 0 < len(sliced) < n
    part = compute(scan_verdicts(cfg, window), ["line", "day"], ("yield",))
    same(part["yield"], hand_yield(sliced), {"yield_pct": 0.0005, "defect_ppm": 0.5})

    # by shift: early 06-14, late 14-22, night 22-06 named by the day it started
    shifts = [
        Shift(name="early", start="06:00"),
        Shift(name="late", start="14:00"),
        Shift(name="night", start="22:00"),
    ]

    def shift_of(v: VerdictEvent) -> str:
        t = datetime.fromtimestamp(v.timings.captured_at, UTC)
        m = t.hour * 60 + t.minute
        if m < 6 * 60:
            return f"{(t - timedelta(days=1)).date().isoformat()} night"
        name = "early" if m < 14 * 60 else "late" if m < 22 * 60 else "night"
        return f"{t.date().isoformat()} {name}"

    by_shift = compute(scan_verdicts(cfg, Window()), ["shift"], ("yield",), shifts)["yield"]
    want: dict[str, Counter[str]] = defaultdict(Counter)
    for v in verdicts:
        want[shift_of(v)][v.verdict] += 1
    assert [(r["shift"], r["pass"], r["fail"], r["fault"]) for r in by_shift] == [
        (k, c["PASS"], c["FAIL"], c["FAULT"]) for k, c in sorted(want.items())
    ]
    assert any(r["shift"].endswith("night") for r in by_shift)

    # the command: JSON and CSV, --by model
    path = write_config(cfg, tmp_path / "plant.yaml")
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "kpi",
            "--config",
            str(path),
            "--by",
            "model",
            "--format",
            "json",
            "--since",
            "2026-09-22",
            "--until",
            "2026-09-22T12:00",
            "--line",
            "line-2",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    by_model = Counter(v.model.version for v in sliced if v.model)
    assert {r["model"]: r["verdicts"] for r in doc["yield"]} == dict(by_model)
    assert {r["model"]: r["verdicts"] for r in doc["latency"]} == dict(by_model)
    same(doc["pareto"], hand_pareto(sliced, "model"), tol)
    faults_by_model = Counter((_version(v), v.rule) for v in sliced if v.verdict == "FAULT")
    assert {(r["model"], r["rule"]): r["faults"] for r in doc["faults"]} == dict(faults_by_model)
    for r in doc["faults"]:
        assert r["share_of_verdicts_pct"] == pytest.approx(
            100 * r["faults"] / by_model[r["model"]], abs=0.0005
        )
    assert doc["window"]["lines"] == ["line-2"]
    assert doc["stops"] == [] and doc["uptime"] == []  # tables there, nothing sent to them
    res = runner.invoke(app, ["kpi", "--config", str(path), "--report", "faults", "-f", "csv"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[:2] == ["# faults", "rule,faults,share_of_faults_pct,share_of_verdicts_pct"]
    assert len(lines) == 2 + len(faults)
    res = runner.invoke(app, ["kpi", "--config", str(path), "--by", "weekday"])
    assert res.exit_code == 2 and "--by takes" in res.output
    res = runner.invoke(app, ["kpi", "--config", str(path), "--by", "shift"])
    assert res.exit_code == 2 and "needs lake.shifts" in res.output


def test_the_readme_duckdb_example_runs_on_a_sink_written_lake(
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import re

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("**DuckDB, directly.**") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.S)
    assert snippet, "the README's DuckDB example"
    cfg = lake_config(make_config, tmp_path)  # data_dir = <tmp_path>/lake, as in the README
    verdicts = stream(600, seed=4)
    with RunningSink(cfg):
        send(cfg, verdicts)
        wait_for(lambda: sum(table_offsets(cfg).values()) == 600, 60, "the lake to hold all")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet.group(1), "README.md", "exec"), {})
    out = capsys.readouterr().out
    since = parse_time("2026-09-22").timestamp()
    for line in ("line-1", "line-2"):
        n = sum(1 for v in verdicts if v.line_id == line and v.timings.captured_at >= since)
        assert re.search(rf"{line}\s*│\s*{n}\s*│", out), out


def _version(v: VerdictEvent) -> str:
    """The model version of a verdict that names its model."""
    assert v.model is not None, f"{v.verdict_id} names no model"
    return v.model.version


def hand_fpy(vs: list[VerdictEvent], key: Any) -> list[dict[str, Any]]:
    """Parts (line, part id) over their PASS/FAIL frames: failed when a frame's part verdict
    is FAIL; else first pass when the earliest captured frame passed; counted in the group
    ``key`` gives the part's earliest frame."""
    parts: dict[tuple[str, str], list[VerdictEvent]] = defaultdict(list)
    for v in vs:
        if v.part_id is not None and v.verdict != "FAULT":
            parts[(v.line_id, v.part_id)].append(v)
    groups: dict[tuple[tuple[str, str], ...], Counter[str]] = defaultdict(Counter)
    for frames in parts.values():
        first = min(frames, key=lambda v: (v.timings.captured_at, v.verdict_id))
        failed = any((v.part_verdict or v.verdict) == "FAIL" for v in frames)
        kind = "failed" if failed else "first_pass" if first.verdict == "PASS" else "later"
        groups[key(first)][kind] += 1
    out = []
    for k, c in sorted(groups.items()):
        n = sum(c.values())
        out.append(
            {
                **dict(k),
                "parts": n,
                "first_pass": c["first_pass"],
                "passed_later": c["later"],
                "failed": c["failed"],
                "fpy_pct": 100 * c["first_pass"] / n,
                "part_yield_pct": 100 * (n - c["failed"]) / n,
            }
        )
    return out


def hand_stops(
    truth: dict[str, list[Interval]], since: float | None, end: float
) -> list[dict[str, Any]]:
    """Episodes clipped to the window (an open one runs to ``end``), merged where they
    overlap into stops."""
    out = []
    for line, eps in sorted(truth.items()):
        clipped = []
        for began, resumed in eps:
            stop = end if resumed is None else min(resumed, end)
            if began >= end or (since is not None and stop <= since):
                continue
            lo = began if since is None else max(began, since)
            clipped.append((lo, max(lo, stop), resumed is None or resumed > end))
        clipped.sort()
        merged: list[list[Any]] = []  # [lo, hi, episodes, open]
        for lo, hi, is_open in clipped:
            if merged and lo <= merged[-1][1]:
                m = merged[-1]
                m[1], m[2], m[3] = max(m[1], hi), m[2] + 1, m[3] or is_open
            else:
                merged.append([lo, hi, 1, is_open])
        if not merged:
            continue
        secs = [hi - lo for lo, hi, _, _ in merged]
        out.append(
            {
                "line": line,
                "stops": len(merged),
                "episodes": sum(m[2] for m in merged),
                "open": sum(1 for m in merged if m[3]),
                "downtime_s": sum(secs),
                "longest_s": max(secs),
                "downtime_pct": None if since is None else 100 * sum(secs) / (end - since),
            }
        )
    return out


def hand_uptime(events: list[CameraStatusEvent], since: float, end: float) -> list[dict[str, Any]]:
    """Each state lasts from its transition to the camera's next one (or ``end``)."""
    by_cam: dict[tuple[str, str], list[CameraStatusEvent]] = defaultdict(list)
    for e in events:
        if e.at < end:
            by_cam[(e.line_id, e.camera_id)].append(e)
    out = []
    for (line, cam), evs in sorted(by_cam.items()):
        evs.sort(key=lambda e: (e.at, e.run_id, e.transition))
        spent: defaultdict[str, float] = defaultdict(float)  # seconds; 0 for a state not seen
        for e, nxt in zip(evs, [*evs[1:], None], strict=True):
            hi = end if nxt is None else min(nxt.at, end)
            spent[e.state] += max(0.0, hi - max(e.at, since))
        observed = sum(spent.values())
        out.append(
            {
                "line": line,
                "camera": cam,
                "observed_s": observed,
                "streaming_s": spent["streaming"],
                "stalled_s": spent["stalled"],
                "reconnecting_s": spent["connecting"] + spent["backing_off"],
                "stopped_s": spent["stopped"],
                "uptime_pct": 100 * spent["streaming"] / observed,
                "running_uptime_pct": 100 * spent["streaming"] / (observed - spent["stopped"]),
            }
        )
    return out


SECONDS = {
    k: 0.002
    for k in (
        "downtime_s", "longest_s", "observed_s", "streaming_s", "stalled_s",
        "reconnecting_s", "stopped_s",
    )
} | {"downtime_pct": 0.0005, "uptime_pct": 0.0005, "running_uptime_pct": 0.0005}  # fmt: skip


def test_fpy_stops_and_uptime_equal_a_hand_computation(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    cfg = lake_config(make_config, tmp_path)
    verdicts = part_stream(1500, seed=5)
    actions, truth = stop_stream(seed=3)
    status = camera_stream(seed=9)
    with RunningSink(cfg):
        send(cfg, verdicts)
        send_events(cfg, "actions", list(actions))
        send_events(cfg, "camera_status", list(status))
        wait_for(
            lambda: (offsets(cfg, "verdicts"), offsets(cfg, "actions"),
                     offsets(cfg, "camera_status")) == (len(verdicts), len(actions), len(status)),
            60,
            "the lake to hold every verdict, action and camera status",
        )  # fmt: skip

    # first-pass yield, by line and day, by model and by camera (of the first judgement)
    pct = {"fpy_pct": 0.0005, "part_yield_pct": 0.0005}
    out = run_reports(cfg, Window(), ("fpy",), ["line", "day"])
    want = hand_fpy(verdicts, lambda v: (("line", v.line_id), ("day", _day(v))))
    same(out["fpy"], want, pct)
    later = sum(r["passed_later"] for r in want)
    assert later and all(r["passed_later"] == 0 for r in want if r["line"] == "line-1")
    by_model = run_reports(cfg, Window(), ("fpy",), ["model"])["fpy"]
    same(by_model, hand_fpy(verdicts, lambda v: (("model", v.model.version),)), pct)
    by_cam = run_reports(cfg, Window(), ("fpy",), ["camera"])["fpy"]
    same(by_cam, hand_fpy(verdicts, lambda v: (("camera", v.camera_id),)), pct)

    # stops and uptime in a window that cuts episodes and camera states at both ends
    since, until = DAY0 + 5 * 3600, DAY0 + 43 * 3600
    assert any(b < since < (r or until) for eps in truth.values() for b, r in eps)
    window = Window(
        since=datetime.fromtimestamp(since, UTC), until=datetime.fromtimestamp(until, UTC)
    )
    out = run_reports(cfg, window, ("stops", "uptime"), ["line"])
    want_stops = hand_stops(truth, since, until)
    same(out["stops"], want_stops, SECONDS)
    assert any(r["episodes"] > r["stops"] for r in want_stops)  # overlapping workflows
    assert [r["open"] for r in want_stops] == [1, 1]  # the last episode of each line
    same(out["uptime"], hand_uptime(status, since, until), SECONDS)
    everything = run_reports(cfg, Window(until=window.until), ("stops",), ["line"])["stops"]
    same(everything, hand_stops(truth, None, until), SECONDS)

    # the command: no --until, so an episode never resumed counts until now
    path = write_config(cfg, tmp_path / "plant.yaml")
    runner = CliRunner()
    res = runner.invoke(app, ["kpi", "-c", str(path), "-f", "json", "-l", "line-2"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    end = datetime.fromisoformat(doc["window"]["end"]).timestamp()
    same(doc["stops"], hand_stops({"line-2": truth["line-2"]}, None, end), SECONDS)
    assert doc["stops"][0]["downtime_s"] > end - max(b for b, r in truth["line-2"] if r is None)
    line2 = [e for e in status if e.line_id == "line-2"]
    first = min(e.at for e in line2)
    same(doc["uptime"], hand_uptime(line2, first, end), SECONDS)
    assert set(doc) == {"window", "yield", "pareto", "faults", "latency", "fpy", "stops", "uptime"}
    res = runner.invoke(app, ["kpi", "-c", str(path), "-r", "stops", "-r", "uptime"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("stops\nline ") and "\n\nuptime\nline " in res.output


def test_stop_and_uptime_edges_on_hand_made_rows() -> None:
    """Pure logic over Arrow rows shaped like the scans: clock skew, a repeated resume,
    an episode resumed exactly at --since, states cut by the window."""
    import pyarrow as pa

    from inspector.lake.kpi import stops, uptime

    def at(h: float) -> datetime:
        return datetime(2026, 9, 21, tzinfo=UTC) + timedelta(hours=h)

    def act(kind: str, ep: str, h: float, outcome: str = "fired") -> dict[str, Any]:
        row = {"kind": kind, "outcome": outcome, "workflow": "w", "line_id": "l"}
        return row | {"episode_id": ep, "at": at(h).replace(tzinfo=None)}

    rows = [
        act("stop_line", "a", 1), act("resume", "a", 2),  # ends exactly at since: out
        act("stop_line", "b", 3), act("resume", "b", 2.5),  # resumed "before" it fired
        act("stop_line", "c", 4), act("resume", "c", 5), act("resume", "c", 6),
        act("stop_line", "d", 7, "suppressed_cooldown"),  # opens nothing
        act("resume", "e", 7.5),  # a resume of an episode the window never saw opened
        act("stop_line", "f", 8),  # open: runs to the end
    ]  # fmt: skip
    got = stops(pa.Table.from_pylist(rows), at(2), at(10))
    assert got == [
        {
            "line": "l",
            "stops": 3,
            "episodes": 3,
            "open": 1,
            "downtime_s": 3 * 3600.0,
            "longest_s": 7200.0,
            "downtime_pct": 37.5,
        }
    ]
    assert stops(pa.Table.from_pylist(rows), at(2), at(4.5))[0]["downtime_s"] == 1800.0

    def cam(state: str, h: float, n: int) -> dict[str, Any]:
        return {"line_id": "l", "camera_id": "c", "run_id": "r", "transition": n,
                "state": state, "at": at(h).replace(tzinfo=None)}  # fmt: skip

    status = [cam("connecting", 0, 0), cam("streaming", 1, 1), cam("stalled", 3, 2),
              cam("streaming", 3.5, 3), cam("stopped", 5, 4)]  # fmt: skip
    (row,) = uptime(pa.Table.from_pylist(status), at(2), at(6))
    assert (row["observed_s"], row["streaming_s"], row["stalled_s"], row["stopped_s"]) == (
        4 * 3600.0,
        2.5 * 3600,
        1800.0,
        3600.0,
    )
    assert row["uptime_pct"] == 62.5 and row["running_uptime_pct"] == pytest.approx(83.333)
    assert uptime(pa.Table.from_pylist(status), None, at(2))[0]["observed_s"] == 2 * 3600.0
