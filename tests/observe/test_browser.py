"""The dashboard in a real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from inspector.bus.store import FrameStore, connect
from inspector.config import PlantConfig
from inspector.events import LineCommand
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

                page.screenshot(path=str(artifacts_dir / "dashboard.png"), full_page=True)

                # clicking a defect opens its verdict details
                shots.first.click()
                dialog = page.locator("#details")
                expect(dialog).to_be_visible()
                expect(page.locator("#details-json")).to_contain_text('"cls": "dent"')
                expect(page.locator("#details-json")).to_contain_text(fails[1].verdict_id)
                page.screenshot(path=str(artifacts_dir / "dashboard-details.png"))
            finally:
                browser.close()
    finally:
        dash.close()
