"""``inspector kpi``: figures read back from the lake equal a hand computation over the
verdicts produced to the topic."""

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
from inspector.events import VerdictEvent
from inspector.lake.kpi import Window, compute, parse_time, scan_verdicts
from tests.act.support import write_config
from tests.helpers import wait_for
from tests.lake.support import MakeConfig, RunningSink, lake_config, send, stream, table_offsets

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

    findings = Counter(f.cls for v in verdicts if v.verdict == "FAIL" for f in v.findings)
    frames = Counter(
        c for v in verdicts if v.verdict == "FAIL" for c in {f.cls for f in v.findings}
    )
    total = sum(findings.values())
    order = sorted(findings, key=lambda c: (-findings[c], c))
    cum = np.cumsum([findings[c] for c in order])
    same(
        out["pareto"],
        [
            {
                "class": c,
                "findings": findings[c],
                "frames": frames[c],
                "share_pct": 100 * findings[c] / total,
                "cumulative_pct": 100 * cum[i] / total,
            }
            for i, c in enumerate(order)
        ],
        {"share_pct": 0.005, "cumulative_pct": 0.005},
    )
    assert out["pareto"][-1]["cumulative_pct"] == 100.0

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
    assert doc["window"]["lines"] == ["line-2"]
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
