"""The dashboard in a real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from inspector.bus.store import FrameStore, connect
from inspector.config import PlantConfig
from inspector.events import AnomalyReport, Box, LineCommand, PartAnomaly
from inspector.observe.dashboard import Dashboard
from inspector.observe.feed import start_of_today
from tests.observe.conftest import camera_status, part_jpeg, publish, verdict
from tests.observe.test_dashboard import TOKEN, dashboard_config

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="chromium is not installed (make setup)"),
]


def test_dashboard_live_in_a_browser(
    make_config: Callable[..., PlantConfig], artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    cfg = dashboard_config(make_config)
    store = FrameStore(connect(cfg.redis), cfg.redis.key_prefix, 600)
    publish(
        cfg,
        cfg.topics.camera_status,
        [
            camera_status("cam-1", "line-1", "streaming", 1.0),
            camera_status("cam-2", "line-1", "streaming", 1.0),
            camera_status("cam-3", "line-2", "stalled", 1.0),
        ],
    )
    publish(cfg, cfg.topics.verdicts, [verdict("line-1", "cam-1", i) for i in range(3)])
    dash = Dashboard(cfg, port=0, since=start_of_today(), lag_every_s=0).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                base = f"http://127.0.0.1:{dash.port}"
                assert page.goto(base + "/").status == 401  # type: ignore[union-attr]
                page.goto(f"{base}/?token={TOKEN}")
                assert page.url == base + "/"  # the token was swapped for a cookie

                line1 = page.locator('section[data-line="line-1"]')
                expect(page.locator("#conn")).to_have_text("live", timeout=15000)
                expect(line1.locator(".count-pass")).to_have_text("3", timeout=15000)
                expect(line1.locator(".count-fail")).to_have_text("0")

                # more verdicts arrive: the counters move without a reload
                fails = []
                for seq, cls in ((10, "scratch"), (11, "dent")):
                    key = store.put(f"cam-2:r:{seq}", part_jpeg(), kind="evidence")
                    fails.append(
                        verdict("line-1", "cam-2", seq, "FAIL", cls=cls, evidence_key=key, run="r")
                    )
                # the dent also carries the unknown-defect channel's report
                part = PartAnomaly(box=Box(x1=150, y1=80, x2=480, y2=280), score=7.3, over=True)
                report = AnomalyReport(
                    threshold=5.218, action="review", flagged=True, parts=[part], skipped=1
                )
                fails[1] = fails[1].model_copy(update={"anomaly": report})
                publish(
                    cfg,
                    cfg.topics.verdicts,
                    [
                        *fails,
                        verdict("line-1", "cam-1", 12),
                        verdict("line-2", "cam-3", 13, "FAULT"),
                    ],
                )
                publish(
                    cfg,
                    cfg.topics.line_commands,
                    [
                        LineCommand(
                            command_id="c1",
                            line_id="line-1",
                            command="stop",
                            episode_id="ep-7",
                            reason="2 FAILs in 20 s",
                            camera_id="cam-2",
                            issued_at=1.0,
                        )
                    ],
                )
                expect(line1.locator(".count-pass")).to_have_text("4", timeout=15000)
                expect(line1.locator(".count-fail")).to_have_text("2")
                expect(line1.locator(".yield")).to_have_text("66.7%")
                expect(line1.locator(".stopped")).to_be_visible()
                expect(page.locator('section[data-line="line-2"] .count-fault')).to_have_text("1")
                expect(page.locator('[data-camera="cam-3"]')).to_have_class("state-stalled")

                # the defect gallery: newest first, real decoded JPEGs with boxes drawn
                shots = line1.locator(".gallery .shot")
                expect(shots).to_have_count(2)
                assert shots.first.get_attribute("data-verdict") == fails[1].verdict_id
                img = shots.first.locator("img")
                page.wait_for_function(
                    "(img) => img.complete && img.naturalWidth > 0",
                    arg=img.element_handle(),
                    timeout=10000,
                )
                assert img.evaluate("(i) => i.naturalWidth") == 640
                # the box edge (left side of the finding) is orange, not the grey plate
                r, g, b = img.evaluate(
                    """(i) => { const c = document.createElement('canvas');
                        c.width = i.naturalWidth; c.height = i.naturalHeight;
                        const x = c.getContext('2d'); x.drawImage(i, 0, 0);
                        return Array.from(x.getImageData(200, 160, 1, 1).data.slice(0, 3)); }"""
                )
                assert r > 200 and 100 < g < 180 and b < 60, (r, g, b)
                points = line1.locator(".spark polyline").get_attribute("points") or ""
                assert len(points.split()) == 6

                # started without a lake: the trends panel says so, nothing else breaks
                expect(page.locator("#trends-none")).to_have_text(
                    "No lake: this dashboard was started without a lake"
                )
                expect(page.locator("#trends-body")).to_be_hidden()

                page.screenshot(path=str(artifacts_dir / "dashboard.png"), full_page=True)

                # clicking a defect opens its verdict details
                shots.first.click()
                dialog = page.locator("#details")
                expect(dialog).to_be_visible()
                expect(page.locator("#details-json")).to_contain_text('"cls": "dent"')
                expect(page.locator("#details-json")).to_contain_text(fails[1].verdict_id)
                expect(page.locator("#details-anomaly")).to_have_text(
                    "Unknown-defect score 7.30 (threshold 5.22, 1 part(s) scored, "
                    "1 at the frame edge): over: review"
                )
                # a verdict without the report shows no such line
                page.keyboard.press("Escape")
                shots.nth(1).click()
                expect(page.locator("#details-json")).to_contain_text(fails[0].verdict_id)
                expect(page.locator("#details-anomaly")).to_be_hidden()
                page.screenshot(path=str(artifacts_dir / "dashboard-details.png"))
            finally:
                browser.close()
    finally:
        dash.close()


def fixed(x: float, digits: int = 2) -> str:
    """``Number.prototype.toFixed``: the exact binary value, a tie rounded up."""
    from decimal import ROUND_HALF_UP, Decimal

    return str(Decimal(x).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def test_trends_panel_from_a_real_lake(
    make_config: Callable[..., PlantConfig], tmp_path: Path, artifacts_dir: Path
) -> None:
    """Verdicts of the last 20 hours go through the real sink into Iceberg; the page
    draws yield per line and hour, the Pareto and the shift table equal to a hand
    computation over them."""
    import time

    from playwright.sync_api import expect, sync_playwright

    from inspector.lake.trends import trends_provider
    from tests.helpers import wait_for
    from tests.lake.support import RunningSink, send, stream, table_offsets
    from tests.lake.trends_support import (
        SHIFTS,
        hand_pareto,
        hand_shifts,
        hand_yield_per_bucket,
        retimed,
    )

    cfg = dashboard_config(
        make_config,
        lake={"data_dir": str(tmp_path / "lake"), "roll_s": 0.3, "port": 0, "shifts": SHIFTS},
    )
    n = 600
    verdicts = retimed(stream(n, seed=33), time.time() - 20 * 3600, 20 * 3600)
    with RunningSink(cfg):
        send(cfg, verdicts)
        wait_for(lambda: sum(table_offsets(cfg).values()) == n, 60, "the lake to hold all")

    per_hour = hand_yield_per_bucket(verdicts, 3600)
    pareto = hand_pareto(verdicts)
    shifts = hand_shifts(verdicts)
    dash = Dashboard(
        cfg, port=0, since=start_of_today(), lag_every_s=0, trends=trends_provider(cfg)
    ).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1400})
                base = f"http://127.0.0.1:{dash.port}"
                page.goto(f"{base}/?token={TOKEN}")
                panel = page.locator("#trends")
                expect(panel.locator("#trends-body")).to_be_visible(timeout=15000)
                expect(panel.locator("#trends-window")).to_contain_text(f"{n} verdicts")
                expect(panel.locator("#trends-bucket")).to_have_text("per hour")

                # the chart: one polyline per line, one point per hour with its yield
                for line in ("line-1", "line-2"):
                    want = [r for r in per_hour if r["line"] == line and r["yield_pct"] is not None]
                    g = panel.locator(f'#trends-chart g[data-line="{line}"]')
                    expect(g.locator("circle.point")).to_have_count(len(want))
                    got = g.locator("circle.point").evaluate_all(
                        "(cs) => cs.map((c) => [c.dataset.yield, c.dataset.verdicts])"
                    )
                    assert [(float(y), int(k)) for y, k in got] == [
                        (pytest.approx(r["yield_pct"], abs=0.0005), r["verdicts"]) for r in want
                    ]
                    points = g.locator("polyline").get_attribute("points") or ""
                    assert len(points.split()) == len(want)
                    xs = [float(p.split(",")[0]) for p in points.split()]
                    assert xs == sorted(xs)  # drawn in time order
                    # the window's totals per line
                    mine = [r for r in per_hour if r["line"] == line]
                    p, f = sum(r["pass"] for r in mine), sum(r["fail"] for r in mine)
                    cells = panel.locator(f'#trends-yield tr[data-line="{line}"] td')
                    expect(cells).to_have_text(
                        [
                            line,
                            str(sum(r["verdicts"] for r in mine)),
                            str(p),
                            str(f),
                            str(sum(r["fault"] for r in mine)),
                            fixed(100 * p / (p + f)) + "%",
                            str(round(1e6 * f / (p + f))),
                        ]
                    )

                # the Pareto, most findings first, cumulative to 100 %
                rows = panel.locator("#trends-pareto tbody tr")
                expect(rows).to_have_count(len(pareto))
                for i, r in enumerate(pareto):
                    expect(rows.nth(i).locator("td")).to_have_text(
                        [
                            r["class"],
                            str(r["findings"]),
                            str(r["frames"]),
                            fixed(r["share_pct"]) + "%",
                            fixed(r["cumulative_pct"]) + "%",
                        ]
                    )
                expect(rows.last.locator("td").last).to_have_text("100.00%")

                # the shift table: each shift and line with its counts
                srows = panel.locator("#trends-shifts tbody tr")
                expect(srows).to_have_count(len(shifts))
                got_shifts = srows.evaluate_all(
                    "(rs) => rs.map((r) => Array.from(r.cells).slice(0, 6).map((c) => c.textContent))"
                )
                assert got_shifts == [
                    [r["shift"], r["line"], str(r["verdicts"]), str(r["pass"]), str(r["fail"]),
                     str(r["fault"])]
                    for r in shifts
                ]  # fmt: skip
                expect(panel.locator("#shifts-none")).to_be_hidden()
                page.screenshot(path=str(artifacts_dir / "dashboard-trends.png"), full_page=True)
            finally:
                browser.close()
    finally:
        dash.close()
