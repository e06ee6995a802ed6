"""Dashboard hardening on the real broker and redis-server: evidence keys come from the
frame id inside our prefix, bad evidence and paths are clean 4xx, the token redirect
stays on the site, security headers on every answer, HTTPS with a Secure cookie, and
sources the config does not list are shown apart as "unknown source"."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from inspector.bus.store import FrameStore, connect
from inspector.config import PlantConfig
from inspector.observe.aggregate import UNKNOWN_SOURCES, PlantView
from inspector.observe.dashboard import CSP, Dashboard
from inspector.observe.evidence import index_verdict
from inspector.observe.feed import start_of_today
from tests.helpers import create_topics, wait_for
from tests.observe.conftest import TWO_LINES, camera_status, part_jpeg, publish, verdict
from tests.observe.test_dashboard import TOKEN, dashboard_config, snapshot, url
from tests.tlscerts import make_tls_files

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def dash(make_config: Callable[..., PlantConfig]) -> Iterator[Dashboard]:
    d = Dashboard(dashboard_config(make_config), port=0, since=start_of_today(), lag_every_s=0)
    d.start()
    try:
        yield d
    finally:
        d.close()


def raw_get(d: Dashboard, target: str) -> tuple[int, dict[str, str]]:
    """A request line exactly as given (httpx would normalise `//host/`)."""
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
    return int(head[0].split()[1]), headers


def test_evidence_never_reads_a_key_the_event_names(dash: Dashboard) -> None:
    cfg = dash.cfg
    client = connect(cfg.redis)
    foreign = f"otherapp-{cfg.redis.key_prefix}:secret"
    client.set(foreign, part_jpeg(), ex=600)  # even a valid JPEG: it is not ours
    hostile = verdict(
        "line-1",
        "cam-1",
        1,
        "FAIL",
        cls="scratch",
        run="r",
        evidence_key=foreign,
        annotated_key=foreign,
    )
    store = FrameStore(client, cfg.redis.key_prefix, 600)
    store.put("cam-1:r:2", part_jpeg(), kind="evidence")
    honest = verdict(
        "line-1", "cam-1", 2, "FAIL", cls="scratch", run="r", evidence_key=foreign
    )  # wrong key named, right frame id
    for v in (hostile, honest):
        index_verdict(client, cfg.redis.key_prefix, v, ttl_s=600)

    r = httpx.get(url(dash, f"/evidence/{hostile.verdict_id}.jpg"), headers=AUTH)
    assert r.status_code == 410 and r.content != part_jpeg()
    assert foreign not in r.text and "evidence expired" in r.text
    r = httpx.get(url(dash, f"/evidence/{honest.verdict_id}.jpg"), headers=AUTH)
    assert r.status_code == 200 and r.content[:3] == b"\xff\xd8\xff"


def test_bad_evidence_and_bad_ids_are_clear_4xx(dash: Dashboard) -> None:
    cfg = dash.cfg
    client = connect(cfg.redis)
    store = FrameStore(client, cfg.redis.key_prefix, 600)
    store.put("cam-1:r:3", b"GIF89a not a jpeg", kind="frame")
    store.put("cam-1:r:4", part_jpeg(), kind="frame")
    store.put("cam-1:r:4", b"<svg onload=alert(1)>", kind="annotated")
    png = verdict(
        "line-1", "cam-1", 3, "FAIL", cls="scratch", run="r", evidence_key=store.key("cam-1:r:3")
    )
    svg = verdict(
        "line-1",
        "cam-1",
        4,
        "FAIL",
        cls="scratch",
        run="r",
        evidence_key=store.key("cam-1:r:4"),
        annotated_key=store.key("cam-1:r:4"),
    )
    weird = verdict(
        "line-1", "cam-1", 5, "FAIL", cls="scratch", frame_id="../x y\x00z", evidence_key="k"
    )
    for v in (png, svg, weird):
        index_verdict(client, cfg.redis.key_prefix, v, ttl_s=600)

    for v, why in (
        (png, "is not a JPEG"),
        (svg, "is not a JPEG"),
        (weird, "is not a valid frame id"),
    ):
        r = httpx.get(url(dash, f"/evidence/{v.verdict_id}.jpg"), headers=AUTH)
        assert r.status_code == 422 and why in r.text, (r.status_code, r.text)
        assert r.headers["content-type"].startswith("text/plain")
        assert "Traceback" not in r.text
    for path in (
        "/evidence/%00.jpg",
        "/evidence/..%2F..%2Fx.jpg",
        "/api/verdicts/a%00b",
        "/api/verdicts/" + "x" * 5000,
    ):
        r = httpx.get(url(dash, path), headers=AUTH)
        assert r.status_code == 404, (path, r.status_code)
    for path in (
        "/static/%00",
        "/static/app.js%00.txt",
        "/static/..%2Fdashboard.py",
        "/static/.",
        "/static/nope.js",
    ):
        r = httpx.get(url(dash, path), headers=AUTH)
        assert r.status_code == 404, (path, r.status_code)
    assert httpx.get(url(dash, "/healthz")).status_code == 200  # still serving


@pytest.mark.parametrize(
    ("target", "location"),
    [
        (f"//evil.example/?token={TOKEN}", "/"),
        (f"//evil.example/x?token={TOKEN}", "/"),
        (f"/\\evil.example/?token={TOKEN}", "/"),
        (f"/%2F%2Fevil.example/?token={TOKEN}", "/"),
        (f"/%5Cevil.example/?token={TOKEN}", "/"),
        (f"/?token={TOKEN}&next=a%26b%3Dc", "/?next=a%26b%3Dc"),
        (f"/static/app.js?token={TOKEN}", "/static/app.js"),
    ],
)
def test_token_redirect_stays_on_this_site(dash: Dashboard, target: str, location: str) -> None:
    status, headers = raw_get(dash, target)
    assert status == 303 and headers["location"] == location
    assert "secure" not in headers["set-cookie"].lower()  # plain HTTP here


def test_security_headers_on_every_answer(dash: Dashboard) -> None:
    with httpx.Client() as browser:
        answers = {
            "page": browser.get(url(dash, "/"), headers=AUTH),
            "api": browser.get(url(dash, "/api/snapshot"), headers=AUTH),
            "static": browser.get(url(dash, "/static/app.js"), headers=AUTH),
            "401": browser.get(url(dash, "/api/snapshot")),
            "404": browser.get(url(dash, "/api/verdicts/nope"), headers=AUTH),
            "405": browser.post(url(dash, "/api/snapshot"), headers=AUTH),
            "probe": browser.get(url(dash, "/healthz")),
        }
    for name, r in answers.items():
        h = r.headers
        assert h["content-security-policy"] == CSP, name
        assert "frame-ancestors 'none'" in CSP and "script-src 'self'" in CSP
        assert h["x-content-type-options"] == "nosniff", name
        assert h["x-frame-options"] == "DENY", name
        assert h["referrer-policy"] == "no-referrer", name
        assert "strict-transport-security" not in h, name  # only over TLS
    for name in ("page", "api", "401", "404", "405"):
        assert answers[name].headers["cache-control"] == "no-store", name


def test_https_with_a_secure_cookie(
    make_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    tls = make_tls_files(tmp_path / "tls")
    cfg = make_config(
        **TWO_LINES,
        observe={
            "dashboard_token": TOKEN,
            "dashboard_port": 1,
            "dashboard_tls_cert": str(tls.server_cert),
            "dashboard_tls_key": str(tls.server_key),
        },
    )
    create_topics(cfg)
    d = Dashboard(cfg, port=0, since=start_of_today(), lag_every_s=0).start()
    try:
        base = f"https://127.0.0.1:{d.port}"
        with httpx.Client(verify=ssl.create_default_context(cafile=str(tls.ca))) as browser:
            r = browser.get(f"{base}/?token={TOKEN}", follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/"
            cookie = r.headers["set-cookie"].lower()
            assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
            assert r.headers["strict-transport-security"].startswith("max-age=")
            assert browser.get(f"{base}/api/snapshot").status_code == 200
        with pytest.raises(httpx.ConnectError):  # not the test CA: refused
            httpx.get(
                f"{base}/healthz", verify=ssl.create_default_context(cafile=str(tls.other_ca))
            )
        with pytest.raises(httpx.TransportError):  # no plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{d.port}/healthz", timeout=5)
    finally:
        d.close()


def test_unknown_lines_and_cameras_are_shown_apart(dash: Dashboard) -> None:
    cfg = dash.cfg
    publish(
        cfg,
        cfg.topics.verdicts,
        [
            verdict("line-1", "cam-1", 1),
            verdict("line-9", "cam-9", 2, "FAIL", cls="scratch"),  # another plant's line
            verdict("line-1", "cam-3", 3),  # cam-3 is line-2's camera
        ],
    )
    publish(cfg, cfg.topics.camera_status, [camera_status("cam-9", "line-9", "streaming", 1.0)])
    wait_for(
        lambda: snapshot(dash)["unknown_sources"]["events"] >= 3,
        20,
        "the unknown-source events to be counted",
    )
    snap = snapshot(dash)
    assert [ln["id"] for ln in snap["lines"]] == ["line-1", "line-2"]
    line1 = snap["lines"][0]
    assert line1["counts"] == {"PASS": 1, "FAIL": 0, "FAULT": 0}
    assert [c["id"] for c in line1["cameras"]] == ["cam-1", "cam-2"]
    unknown = snap["unknown_sources"]
    assert unknown["label"] == "unknown source"
    assert unknown["counts"] == {"PASS": 1, "FAIL": 1, "FAULT": 0}
    pairs = {(s["line_id"], s["id"]): s for s in unknown["sources"]}
    assert set(pairs) == {("line-9", "cam-9"), ("line-1", "cam-3")}
    assert pairs[("line-9", "cam-9")]["state"] == "streaming"


def test_unknown_sources_are_bounded(make_config: Callable[..., PlantConfig]) -> None:
    view = PlantView(make_config(), since=None)
    for i in range(UNKNOWN_SOURCES + 10):
        view.apply_event("verdicts", verdict(f"line-x{i}", f"cam-x{i}", i))
    snap = view.snapshot(now=time.time())
    assert len(snap["unknown_sources"]["sources"]) == UNKNOWN_SOURCES
    assert snap["unknown_sources"]["not_listed"] == 10
    assert snap["unknown_sources"]["counts"]["PASS"] == UNKNOWN_SOURCES + 10
    assert [ln["id"] for ln in snap["lines"]] == ["line-1"]


def test_status_prints_unknown_sources_apart(make_config: Callable[..., PlantConfig]) -> None:
    from rich.console import Console

    from inspector.observe.status import render_unknown

    view = PlantView(make_config(), since=None)
    view.apply_event("verdicts", verdict("line-9", "cam-9", 1, "FAIL", cls="scratch"))
    console = Console(record=True, width=200)
    render_unknown(view.snapshot()["unknown_sources"], console, time.time())
    text = console.export_text()
    assert "Unknown source (not in this config): 1 events" in text and "cam-9" in text
    quiet = Console(record=True, width=200)
    render_unknown(PlantView(make_config(), since=None).snapshot()["unknown_sources"], quiet, 0)
    assert quiet.export_text() == ""
