"""The dashboard process on the real broker and redis-server: auth, data, probes, metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inspector.bus.store import FrameStore, connect
from inspector.config import PlantConfig
from inspector.localstack import ManagedProcess, start_redis
from inspector.observe.dashboard import COOKIE, Dashboard, DashboardConfigError
from inspector.observe.feed import start_of_today
from tests.helpers import create_topics, wait_for
from tests.observe.conftest import TWO_LINES, camera_status, part_jpeg, publish, verdict

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token-for-tests"


def dashboard_config(make_config: Callable[..., PlantConfig], **over: Any) -> PlantConfig:
    cfg = make_config(**TWO_LINES, observe={"dashboard_token": TOKEN, "dashboard_port": 1}, **over)
    create_topics(cfg)
    return cfg


@pytest.fixture
def dash(make_config: Callable[..., PlantConfig]) -> Iterator[Dashboard]:
    d = Dashboard(dashboard_config(make_config), port=0, since=start_of_today(), lag_every_s=1.0)
    d.start()
    try:
        yield d
    finally:
        d.close()


def url(d: Dashboard, path: str) -> str:
    return f"http://127.0.0.1:{d.port}{path}"


def snapshot(d: Dashboard) -> dict[str, Any]:
    r = httpx.get(url(d, "/api/snapshot"), headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    data: dict[str, Any] = r.json()
    return data


def counts(d: Dashboard, line: str) -> dict[str, int]:
    return next(ln["counts"] for ln in snapshot(d)["lines"] if ln["id"] == line)


def metric(d: Dashboard, name: str, **labels: str) -> float:
    text = httpx.get(url(d, "/metrics")).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_refuses_to_start_without_a_token(make_config: Callable[..., PlantConfig]) -> None:
    with pytest.raises(DashboardConfigError, match="dashboard_token is not set"):
        Dashboard(make_config(), port=0, since=0)


def test_token_auth_and_read_only(dash: Dashboard) -> None:
    r = httpx.get(url(dash, "/"))
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert (
        httpx.get(url(dash, "/api/snapshot"), headers={"Authorization": "Bearer wrong"}).status_code
        == 401
    )
    assert httpx.get(url(dash, "/api/snapshot?token=wrong")).status_code == 401
    ok = httpx.get(url(dash, "/"), headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and '<template id="line-tpl">' in ok.text

    with httpx.Client() as browser:
        r = browser.get(url(dash, f"/?token={TOKEN}"), follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"  # token leaves the URL
        assert TOKEN not in r.headers["set-cookie"]  # the cookie is derived, not the token
        assert "httponly" in r.headers["set-cookie"].lower()
        assert browser.get(url(dash, "/static/app.js")).status_code == 200
        assert browser.get(url(dash, "/api/snapshot")).status_code == 200
        assert browser.post(url(dash, "/api/snapshot")).status_code == 405
    assert httpx.get(url(dash, "/api/snapshot"), cookies={COOKIE: "forged"}).status_code == 401
    # probes and scrapers carry no token
    assert httpx.get(url(dash, "/healthz")).status_code == 200
    assert httpx.get(url(dash, "/metrics")).status_code == 200


def test_counts_evidence_and_metrics_move_with_the_events(dash: Dashboard) -> None:
    cfg = dash.cfg
    before = metric(dash, "inspector_dashboard_events_total", kind="verdicts")
    store = FrameStore(connect(cfg.redis), cfg.redis.key_prefix, 600)
    key = store.put("cam-1:r:1", part_jpeg(), kind="evidence")
    fail = verdict("line-1", "cam-1", 1, "FAIL", cls="scratch", evidence_key=key, run="r")
    expired = verdict(
        "line-1", "cam-2", 2, "FAIL", cls="dent", evidence_key=f"{cfg.redis.key_prefix}:frame:gone"
    )
    publish(cfg, cfg.topics.verdicts, [verdict(seq=0), fail, expired, verdict(seq=3), fail])
    publish(cfg, cfg.topics.camera_status, [camera_status("cam-1", "line-1", "streaming", 1.0)])

    wait_for(
        lambda: counts(dash, "line-1") == {"PASS": 2, "FAIL": 2, "FAULT": 0},
        20,
        "the dashboard to count 4 distinct verdicts",
    )

    def cam1_state() -> str:
        line = next(ln for ln in snapshot(dash)["lines"] if ln["id"] == "line-1")
        return str(next(c for c in line["cameras"] if c["id"] == "cam-1")["state"])

    # Verdicts and camera states are separate topics: no order between them is
    # promised, so the state is waited for on its own (it was read as a race: 'unknown').
    wait_for(lambda: cam1_state() == "streaming", 20, "cam-1's state from camera-status")
    snap = snapshot(dash)
    line = next(ln for ln in snap["lines"] if ln["id"] == "line-1")
    assert line["yield"] == 50.0
    assert [g["verdict_id"] for g in line["gallery"]] == [expired.verdict_id, fail.verdict_id]
    assert len(line["latency"]["points"]) == 4
    wait_for(
        lambda: metric(dash, "inspector_dashboard_events_total", kind="verdicts") == before + 4,
        10,
        "the events counter to move by 4 (the duplicate not counted)",
    )

    auth = {"Authorization": f"Bearer {TOKEN}"}
    img = httpx.get(url(dash, f"/evidence/{fail.verdict_id}.jpg"), headers=auth)
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    assert img.content[:2] == b"\xff\xd8" and img.content != part_jpeg()  # boxes drawn
    gone = httpx.get(url(dash, f"/evidence/{expired.verdict_id}.jpg"), headers=auth)
    assert gone.status_code == 410 and "evidence expired" in gone.text
    details = httpx.get(url(dash, f"/api/verdicts/{fail.verdict_id}"), headers=auth)
    assert details.json()["findings"][0]["cls"] == "scratch"
    assert httpx.get(url(dash, "/api/verdicts/nope"), headers=auth).status_code == 404

    # live updates: the stream's first snapshot carries the same counts
    with httpx.stream("GET", url(dash, "/api/stream"), headers=auth, timeout=10) as stream:
        for raw in stream.iter_lines():
            if raw.startswith("data: "):
                first = orjson.loads(raw[6:])
                break
    assert next(ln for ln in first["lines"] if ln["id"] == "line-1")["counts"]["FAIL"] == 2


def test_readiness_follows_redis(
    make_config: Callable[..., PlantConfig], own_redis: ManagedProcess
) -> None:
    cfg = dashboard_config(
        make_config, redis={"url": f"redis://127.0.0.1:{own_redis.port}/0", "socket_timeout_s": 0.5}
    )
    d = Dashboard(cfg, port=0, since=start_of_today(), lag_every_s=0).start()
    restarted: ManagedProcess | None = None
    try:

        def ready() -> int:
            return httpx.get(url(d, "/readyz")).status_code

        wait_for(lambda: ready() == 200, 15, "ready with Kafka and Redis up")
        own_redis.close()
        wait_for(lambda: ready() == 503, 10, "not ready once Redis is stopped")
        body = httpx.get(url(d, "/readyz")).json()
        assert body == {"ready": False, "checks": {"redis": False, "kafka": True}}
        restarted = start_redis(port=own_redis.port)
        wait_for(lambda: ready() == 200, 15, "ready again once Redis is back")
    finally:
        d.close()
        if restarted is not None:
            restarted.close()


# --------------------------------------------------------------------------- trends


def test_trends_cache_reads_the_provider_once_per_period() -> None:
    """Pure logic: the cache in front of the lake (a fake clock and provider)."""
    import threading

    from inspector.observe.dashboard import NO_LAKE, TrendsCache

    now = [100.0]
    calls: list[int] = []
    gate = threading.Event()

    def provider() -> dict[str, Any]:
        calls.append(1)
        gate.wait(5)
        return {"available": True, "n": len(calls)}

    cache = TrendsCache(provider, ttl_s=60.0, clock=lambda: now[0])
    # eight page loads at once while the lake is being read: one read, eight answers
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get())) for _ in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: len(calls) == 1, 5, "the first read to start")
    gate.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 1 and [r["n"] for r in results] == [1] * 8
    now[0] += 59.0
    assert cache.get()["n"] == 1 and len(calls) == 1  # still fresh
    now[0] += 1.0
    assert cache.get()["n"] == 2  # stale: read again

    def broken() -> dict[str, Any]:
        calls.append(1)
        raise OSError("warehouse gone\nsecond line")

    failing = TrendsCache(broken, ttl_s=30.0, clock=lambda: now[0])
    before = len(calls)
    got = failing.get()
    assert got["available"] is False
    assert got["reason"] == "the lake could not be read: OSError: warehouse gone"
    failing.get()
    assert len(calls) == before + 1  # an unreadable lake is not asked on every page load
    assert TrendsCache(None).get() == {"available": False, "reason": NO_LAKE}


def test_api_trends_serves_the_provider_behind_the_token(
    make_config: Callable[..., PlantConfig],
) -> None:
    figures = {"available": True, "yield": [{"line": "line-1", "yield_pct": 97.5}]}
    asked: list[int] = []

    def provider() -> dict[str, Any]:
        asked.append(1)
        return figures

    d = Dashboard(
        dashboard_config(make_config), port=0, since=start_of_today(), lag_every_s=0,
        trends=provider, trends_ttl_s=600,
    ).start()  # fmt: skip
    try:
        assert httpx.get(url(d, "/api/trends")).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for _ in range(3):
            r = httpx.get(url(d, "/api/trends"), headers=auth)
            assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
            body = r.json()
            assert body["yield"] == figures["yield"] and body["generated_at"] > 0
        assert len(asked) == 1
    finally:
        d.close()


def test_api_trends_without_a_lake_says_so(dash: Dashboard) -> None:
    r = httpx.get(url(dash, "/api/trends"), headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    assert r.json() == {"available": False, "reason": "this dashboard was started without a lake"}
