"""``inspector dashboard``: the live, read-only web view a QA engineer keeps open all day.

A background thread reads the plant's event topics (assign(), from the start of the
day or the last N minutes) into a ``PlantView``; the page gets a snapshot whenever
it changes over Server-Sent Events. Evidence images are the worker's annotated
JPEGs from Redis, or the evidence frame annotated here.

Trends (yield over time per line, the defect Pareto, a per-shift table) come from the
lake, which this stage does not import: whoever composes the dashboard (``inspector
dashboard`` in ``inspector.cli``) passes a ``trends`` callable; ``/api/trends`` serves
its result cached for ``trends_ttl_s``, so page loads never reach the catalog more
than once per period. Without one the panel says "no lake".

Auth: one bearer token from ``observe.dashboard_token`` — an ``Authorization:
Bearer`` header, or ``?token=`` once, after which an HttpOnly cookie carries a value
derived from the token. ``/healthz``, ``/readyz`` and ``/metrics`` are open (probes
and scrapers carry no tokens and learn nothing about parts there).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import redis
from fastapi import FastAPI, Request
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from inspector.bus.crypto import BlobError, KeyringError, Sealer, store_sealer
from inspector.bus.kafka import ServiceUnavailable
from inspector.bus.store import connect, valid_store_id
from inspector.config import PlantConfig
from inspector.events import VerdictEvent
from inspector.observe.aggregate import PlantView
from inspector.observe.evidence import (
    EvidenceExpired,
    EvidenceUnreadable,
    evidence_jpeg,
    lookup_index,
)
from inspector.observe.feed import KINDS, FeedError, TopicReader, group_lag
from inspector.telemetry.health import Heartbeat, Readiness
from inspector.telemetry.metrics import (
    CONSUMER_LAG,
    DASHBOARD_CLIENTS,
    OBSERVE_SKIPPED,
    OBSERVED_EVENTS,
)

log = logging.getLogger(__name__)

# Every feed kind is read; a shadow's verdicts only feed the shadow panel (PlantView).
NOT_SHOWN: frozenset[str] = frozenset()

STATIC = Path(__file__).parent / "static"
COOKIE = "inspector_dashboard"
OPEN_PATHS = {"/healthz", "/readyz", "/metrics"}


class DashboardConfigError(Exception):
    """The dashboard cannot be started with this config (e.g. no token)."""


# --------------------------------------------------------------------------- feed


class Feed:
    """Reads every event topic into the view until stopped; survives broker outages."""

    def __init__(
        self,
        cfg: PlantConfig,
        view: PlantView,
        *,
        since: float,
        heartbeat: Heartbeat,
        lag_every_s: float = 15.0,
    ) -> None:
        self.cfg = cfg
        self.view = view
        self.since = since
        self.heartbeat = heartbeat
        self.lag_every_s = lag_every_s
        self.stop = threading.Event()
        self.kafka_ok_at = 0.0  # monotonic time the broker last answered
        self.lag: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)
        self._skipped_seen: dict[str, int] = {}

    @property
    def kafka_ok(self) -> bool:
        return time.monotonic() - self.kafka_ok_at < 15.0

    def start(self) -> Feed:
        self.thread.start()
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout_s)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._follow()
            except (FeedError, ServiceUnavailable) as exc:
                log.warning("dashboard feed waiting for the broker", extra={"error": str(exc)})
                self.stop.wait(2.0)
            except Exception:
                log.exception("dashboard feed failed; restarting it")
                self.stop.wait(2.0)

    def _follow(self) -> None:
        reader = TopicReader(
            self.cfg,
            [k for k in KINDS if k not in NOT_SHOWN],
            start_s=self.since,
            # camera states change rarely; the current one may predate the window
            kind_start={"camera-status": None},
            client_suffix="dashboard",
        ).open(require_topics=False)
        try:
            self.kafka_ok_at = time.monotonic()
            next_check = time.monotonic() + 5.0
            next_lag = time.monotonic()
            while not self.stop.is_set():
                for rec in reader.poll(0.5):
                    before = self.view.version
                    self.view.apply(rec)
                    if self.view.version != before:
                        OBSERVED_EVENTS.labels(rec.kind).inc()
                self._count_skipped(reader.skipped)
                self.heartbeat.beat()
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + 5.0
                    if self._broker_answers(reader) and reader.missing:
                        # a topic created after we started (fresh plant): re-open to
                        # include it; ids de-duplicate what is read twice
                        return
                if self.lag_every_s > 0 and now >= next_lag:
                    next_lag = now + self.lag_every_s
                    self._update_lag()
        finally:
            reader.close()

    def _broker_answers(self, reader: TopicReader) -> bool:
        assert reader.consumer is not None
        try:
            md = reader.consumer.list_topics(timeout=3.0)
        except Exception:
            return False
        self.kafka_ok_at = time.monotonic()
        return any(t in md.topics for t in reader.missing)

    def _count_skipped(self, skipped: dict[str, int]) -> None:
        for reason, n in skipped.items():
            new = n - self._skipped_seen.get(reason, 0)
            if new > 0:
                OBSERVE_SKIPPED.labels(reason).inc(new)
                self._skipped_seen[reason] = n

    def _update_lag(self) -> None:
        group, topic = self.cfg.worker.group_id, self.cfg.topics.frames
        try:
            lag = group_lag(self.cfg, group, topic, timeout_s=5.0)
        except (FeedError, Exception) as exc:
            self.lag = {"group": group, "topic": topic, "total": None, "error": str(exc)}
            return
        for p, n in lag.items():
            if n is not None:
                CONSUMER_LAG.labels(group, topic, str(p)).set(n)
        known = [n for n in lag.values() if n is not None]
        self.lag = {"group": group, "topic": topic, "total": sum(known) if known else None}


# --------------------------------------------------------------------------- auth


def session_value(token: str) -> str:
    """What the cookie holds: derived from the token, so a leaked cookie is not the token."""
    return hmac.new(token.encode(), b"inspector-dashboard-session", hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def local_target(path: str, params: list[tuple[str, str]]) -> str:
    """Where the token exchange redirects: only a path on this server. ``//host/``,
    ``/\\host`` or anything with a scheme would make the Location leave the site."""
    if (
        not path.startswith("/")
        or path[1:2] in ("/", "\\")
        or any(c in path for c in "\\\r\n\t\x00")
    ):
        path = "/"
    return path + (f"?{urlencode(params)}" if params else "")


# The page loads its own script and stylesheet and talks to its own API, nothing else.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


# --------------------------------------------------------------------------- trends

TrendsProvider = Callable[[], dict[str, Any]]
NO_LAKE = "this dashboard was started without a lake"


class TrendsCache:
    """The lake's trends, computed at most once per ``ttl_s`` however many pages ask:
    callers during a computation wait for it and share its result. A provider that
    raises is reported as ``available: false`` with the reason, and also kept for
    ``ttl_s`` (an unreachable catalog is not asked again on every page load)."""

    def __init__(
        self,
        provider: TrendsProvider | None,
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.ttl_s = ttl_s
        self.clock = clock
        self.calls = 0
        self._value: dict[str, Any] | None = None
        self._at = 0.0
        self._lock = threading.Lock()

    def get(self) -> dict[str, Any]:
        if self.provider is None:
            return {"available": False, "reason": NO_LAKE}
        with self._lock:
            if self._value is not None and self.clock() - self._at < self.ttl_s:
                return self._value
            self.calls += 1
            try:
                value = dict(self.provider())
            except Exception as exc:
                detail = (str(exc).splitlines() or [""])[0][:300]
                log.warning("dashboard trends: the lake could not be read", extra={"error": detail})
                value = {
                    "available": False,
                    "reason": f"the lake could not be read: {type(exc).__name__}: {detail}",
                }
            value["generated_at"] = time.time()
            self._value, self._at = value, self.clock()
            return value


# --------------------------------------------------------------------------- app


class EvidenceCache:
    """Annotated JPEGs are immutable per verdict; keep the latest few rendered."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._items[key] = data
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def create_app(
    cfg: PlantConfig,
    view: PlantView,
    client: redis.Redis,
    *,
    token: str,
    feed: Feed | None = None,
    heartbeat: Heartbeat | None = None,
    push_interval_s: float = 0.5,
    sealer: Sealer | None = None,
    trends: TrendsProvider | None = None,
    trends_ttl_s: float = 60.0,
) -> FastAPI:
    if not token:
        raise DashboardConfigError("observe.dashboard_token is empty")
    tls = cfg.observe.dashboard_tls_cert is not None
    try:
        sealer = sealer or store_sealer(cfg)
    except KeyringError as exc:
        raise DashboardConfigError(str(exc)) from None
    heartbeat = heartbeat or Heartbeat()
    session = session_value(token)
    cache = EvidenceCache()
    trends_cache = TrendsCache(trends, trends_ttl_s)
    closing = threading.Event()

    def redis_ok() -> bool:
        return bool(client.ping())

    checks: dict[str, Callable[[], bool]] = {"redis": redis_ok}
    if feed is not None:
        checks["kafka"] = lambda: feed.kafka_ok
    readiness = Readiness(checks, cache_s=0.5)

    app = FastAPI(
        title=f"inspector dashboard — {cfg.plant}",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.closing = closing
    app.state.trends = trends_cache

    @app.middleware("http")
    async def auth(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path in OPEN_PATHS:
            return await call_next(request)
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse("read-only dashboard", status_code=405)
        header = request.headers.get("authorization", "")
        query = request.query_params.get("token")
        ok = (header[:7].lower() == "bearer " and _same(header[7:].strip(), token)) or _same(
            request.cookies.get(COOKIE, ""), session
        )
        if not ok and query is not None and _same(query, token):
            # exchange the token in the URL for a cookie, and drop it from the address bar
            params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            resp: Response = RedirectResponse(
                local_target(request.scope["path"], params), status_code=303
            )
            resp.set_cookie(
                COOKIE,
                session,
                httponly=True,
                samesite="strict",
                secure=tls or request.url.scheme == "https",
                path="/",
            )
            return resp
        if not ok:
            return JSONResponse(
                {
                    "error": "unauthorized: send 'Authorization: Bearer <token>' or open "
                    "/?token=<observe.dashboard_token> once"
                },
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="inspector"'},
            )
        return await call_next(request)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        resp = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            resp.headers.setdefault(name, value)
        if tls or request.url.scheme == "https":
            resp.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if request.url.path.startswith("/api/") or resp.status_code in (303, 401, 405):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    # -------------------------------------------------------------- probes

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        alive = heartbeat.alive() if feed is not None else True
        return JSONResponse({"alive": alive}, status_code=200 if alive else 503)

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        result = readiness()
        ok = all(result.values())
        return JSONResponse({"ready": ok, "checks": result}, status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    # -------------------------------------------------------------- page

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    shipped = {p.name: p for p in STATIC.iterdir() if p.is_file()}

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        path = shipped.get(name)  # only what ships: no path is ever built from the URL
        if path is None:
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    # -------------------------------------------------------------- data

    def snapshot() -> dict[str, Any]:
        snap = view.snapshot()
        snap["lag"] = feed.lag if feed is not None else {}
        snap["kafka_ok"] = feed.kafka_ok if feed is not None else None
        return snap

    @app.get("/api/snapshot")
    def api_snapshot() -> Response:
        return Response(orjson.dumps(snapshot()), media_type="application/json")

    @app.get("/api/stream")
    async def api_stream(request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            DASHBOARD_CLIENTS.inc()
            try:
                sent_version, sent_at = -1, 0.0
                # the browser reconnects by itself after this many ms
                yield b"retry: 2000\n\n"
                while not closing.is_set() and not await request.is_disconnected():
                    now = time.monotonic()
                    # re-send at least every 5 s: rates and "ago" labels age with time
                    if view.version != sent_version or now - sent_at > 5.0:
                        sent_version, sent_at = view.version, now
                        data = await asyncio.to_thread(snapshot)
                        yield b"event: snapshot\ndata: " + orjson.dumps(data) + b"\n\n"
                    await asyncio.sleep(push_interval_s)
            finally:
                DASHBOARD_CLIENTS.dec()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/api/trends")
    def api_trends() -> Response:
        # a plain def: FastAPI runs it on a worker thread, the event loop never waits
        return Response(orjson.dumps(trends_cache.get()), media_type="application/json")

    def find(verdict_id: str) -> VerdictEvent | None:
        if not valid_store_id(verdict_id):
            return None
        return view.verdict(verdict_id) or lookup_index(client, cfg.redis.key_prefix, verdict_id)

    @app.get("/api/verdicts/{verdict_id}")
    def api_verdict(verdict_id: str) -> Response:
        try:
            v = find(verdict_id)
        except ServiceUnavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        if v is None:
            return JSONResponse({"error": f"unknown verdict {verdict_id[:80]!r}"}, status_code=404)
        return Response(
            orjson.dumps(v.model_dump(mode="json"), option=orjson.OPT_INDENT_2),
            media_type="application/json",
        )

    @app.get("/evidence/{name}")
    def evidence(name: str) -> Response:
        verdict_id = name.removesuffix(".jpg")
        cached = cache.get(verdict_id)
        if cached is None:
            try:
                v = find(verdict_id)
                if v is None:
                    return PlainTextResponse(
                        f"unknown verdict {verdict_id[:80]!r}", status_code=404
                    )
                cached = evidence_jpeg(client, v, cfg.redis.key_prefix, sealer=sealer)
            except (EvidenceExpired, BlobError) as exc:
                return PlainTextResponse(str(exc), status_code=410)
            except EvidenceUnreadable as exc:
                return PlainTextResponse(str(exc), status_code=422)
            except ServiceUnavailable as exc:
                return PlainTextResponse(str(exc), status_code=503)
            cache.put(verdict_id, cached)
        return Response(
            cached, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
        )

    return app


# --------------------------------------------------------------------------- process


class Dashboard:
    """Feed + web app + server, startable in a thread (tests) or in the foreground (CLI)."""

    def __init__(
        self,
        cfg: PlantConfig,
        *,
        host: str | None = None,
        port: int | None = None,
        since: float,
        lag_every_s: float = 15.0,
        trends: TrendsProvider | None = None,
        trends_ttl_s: float = 60.0,
    ) -> None:
        import uvicorn

        token = cfg.observe.dashboard_token
        if token is None or not token.get_secret_value():
            raise DashboardConfigError(
                "observe.dashboard_token is not set: the dashboard shows production data and "
                "will not start without a token (set it in the config, e.g. "
                "dashboard_token: ${INSPECTOR_DASHBOARD_TOKEN}, or "
                "INSPECTOR__OBSERVE__DASHBOARD_TOKEN)"
            )
        self.cfg = cfg
        self.client = connect(cfg.redis, check=False)
        self.heartbeat = Heartbeat(stale_after_s=30.0)
        self.view = PlantView(cfg, since=since)
        self.feed = Feed(
            cfg, self.view, since=since, heartbeat=self.heartbeat, lag_every_s=lag_every_s
        )
        self.app = create_app(
            cfg,
            self.view,
            self.client,
            token=token.get_secret_value(),
            feed=self.feed,
            heartbeat=self.heartbeat,
            trends=trends,
            trends_ttl_s=trends_ttl_s,
        )
        obs = cfg.observe
        self.scheme = "https" if obs.dashboard_tls_cert else "http"
        for what, path in (
            ("dashboard_tls_cert", obs.dashboard_tls_cert),
            ("dashboard_tls_key", obs.dashboard_tls_key),
        ):
            if path is not None and not os.access(path, os.R_OK):
                raise DashboardConfigError(f"observe.{what}: cannot read {path}")
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                ssl_certfile=obs.dashboard_tls_cert,
                ssl_keyfile=obs.dashboard_tls_key,
                host=host or cfg.observe.dashboard_host,
                port=cfg.observe.dashboard_port if port is None else port,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=3,
                lifespan="off",
            )
        )
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        servers = getattr(self.server, "servers", [])
        for s in servers:
            for sock in s.sockets:
                return int(sock.getsockname()[1])
        return int(self.server.config.port)

    def run(self) -> None:
        """Foreground: until SIGINT/SIGTERM, then a clean exit (status 0).

        uvicorn re-raises the signal after its own graceful shutdown, which would make
        a normal stop look like a crash to a supervisor; so the server runs in a thread
        (where uvicorn installs no handlers) and this thread owns the signals.
        """
        from inspector.bus.kafka import Shutdown

        shutdown = Shutdown().install()
        self.start()
        try:
            while not shutdown.wait(0.5):
                if self.thread is not None and not self.thread.is_alive():
                    break
        finally:
            self.close()

    def start(self, timeout_s: float = 15.0) -> Dashboard:
        """Background (tests): returns once the server accepts connections."""
        self.feed.start()
        self.thread = threading.Thread(target=self.server.run, name="dashboard-http", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.close()
                raise RuntimeError("dashboard did not start")
            time.sleep(0.02)
        return self

    def close(self) -> None:
        self.app.state.closing.set()
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.feed.close()
        self.client.close()
