"""The dashboard's trends (inspector.lake.trends) read from a lake the real sink wrote
from the real broker equal a hand computation over the verdicts produced."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from inspector.lake.trends import trends, trends_provider
from tests.helpers import wait_for
from tests.lake.support import (
    DAY0,
    MakeConfig,
    RunningSink,
    lake_config,
    send,
    stream,
    table_offsets,
)
from tests.lake.trends_support import (
    SHIFTS,
    hand_pareto,
    hand_shifts,
    hand_yield_per_bucket,
    in_window,
)

pytestmark = pytest.mark.integration


def same(got: list[dict[str, Any]], want: list[dict[str, Any]], tol: dict[str, float]) -> None:
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want, strict=True):
        for k, wv in w.items():
            if k in tol and wv is not None:
                assert g[k] == pytest.approx(wv, abs=tol[k]), (k, g, w)
            else:
                assert g[k] == wv, (k, g, w)


TOL = {"yield_pct": 0.0005, "defect_ppm": 0.5, "share_pct": 0.005, "cumulative_pct": 0.005}


def test_trends_equal_a_hand_computation_over_a_sink_written_lake(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    n = 1500
    cfg = lake_config(make_config, tmp_path, shifts=SHIFTS)
    verdicts = stream(n, seed=15)  # two days from DAY0 (2026-09-21 14:13 UTC)
    with RunningSink(cfg):
        send(cfg, verdicts)
        wait_for(lambda: sum(table_offsets(cfg).values()) == n, 60, "the lake to hold all")

    # 24 h ending mid-stream: by hour, and only the verdicts captured inside the window
    now = DAY0 + 30 * 3600.0
    got = trends(cfg, datetime.fromtimestamp(now, UTC), 86400.0)
    window = in_window(verdicts, now - 86400.0, now)
    assert 0 < len(window) < n
    assert got["available"] is True and got["bucket"] == "hour"
    assert got["verdicts"] == len(window)
    assert got["lines"] == [ln.id for ln in cfg.lines]
    want = hand_yield_per_bucket(window, 3600)
    assert len({r["at_s"] for r in want}) in (24, 25)  # every hour of the window
    same(got["yield"], want, TOL)
    assert all(
        r["at"].startswith(datetime.fromtimestamp(r["at_s"], UTC).strftime("%Y-%m-%dT%H"))
        for r in got["yield"]
    )
    same(got["pareto"], hand_pareto(window), TOL)
    assert got["pareto"][-1]["cumulative_pct"] == 100.0
    same(got["shifts"], hand_shifts(window), TOL)
    assert {r["shift"].split()[1] for r in got["shifts"]} == {"early", "late", "night"}

    # a window over two days is by day
    week = trends(cfg, datetime.fromtimestamp(DAY0 + 3 * 86400.0, UTC), 7 * 86400.0)
    assert week["bucket"] == "day"
    same(week["yield"], hand_yield_per_bucket(verdicts, 86400), TOL)
    assert week["verdicts"] == n

    # without lake.shifts there is no shift table
    plain = cfg.model_copy(update={"lake": cfg.lake.model_copy(update={"shifts": []})})
    assert trends(plain, datetime.fromtimestamp(now, UTC))["shifts"] is None

    # the provider the dashboard gets reads the last 24 h of the wall clock: the
    # stream is from September 2026, so nothing falls in it
    live = trends_provider(cfg)()
    assert live["available"] is True and live["verdicts"] == 0 and live["yield"] == []


def test_no_lake_is_said_and_not_created(make_config: MakeConfig, tmp_path: Path) -> None:
    cfg = lake_config(make_config, tmp_path)
    got = trends_provider(cfg)()
    assert got["available"] is False
    assert got["reason"].startswith("no catalog at ") and "inspector sink" in got["reason"]
    assert not (tmp_path / "lake").exists()  # asking did not make an empty lake
