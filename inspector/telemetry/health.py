"""``/metrics``, ``/healthz`` and ``/readyz`` for every long-running process.

- ``/healthz``: the main loop made progress recently (Kubernetes restarts us if not).
- ``/readyz``: every dependency check passes (Kafka, Redis, model loaded); the body
  names the failing ones so an operator sees *why* at a glance.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger(__name__)

Check = Callable[[], bool]


class Heartbeat:
    """The main loop calls beat(); /healthz fails when it has not for ``stale_after_s``."""

    def __init__(self, stale_after_s: float = 30.0) -> None:
        self.stale_after_s = stale_after_s
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.last < self.stale_after_s


class Readiness:
    """Named dependency checks, run at most once per ``cache_s`` (probes can be frequent).

    Shared by the plain health server and the dashboard's own /readyz.
    """

    def __init__(self, checks: dict[str, Check] | None = None, cache_s: float = 1.0) -> None:
        self.checks = dict(checks or {})
        self.cache_s = cache_s
        self._cache: tuple[float, dict[str, bool]] = (0.0, {})
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, bool]:
        with self._lock:
            at, cached = self._cache
            if time.monotonic() - at < self.cache_s and cached:
                return cached
            result = {}
            for name, check in self.checks.items():
                try:
                    result[name] = bool(check())
                except Exception:  # a failing check is a "not ready", never a 500
                    result[name] = False
            self._cache = (time.monotonic(), result)
            return result


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        heartbeat: Heartbeat,
        checks: dict[str, Check] | None = None,
        check_cache_s: float = 1.0,
        why: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.heartbeat = heartbeat
        self.why = why
        self.ready = Readiness(checks, check_cache_s)
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def checks(self) -> dict[str, Check]:
        return self.ready.checks

    def readiness(self) -> dict[str, bool]:
        return self.ready()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = server.heartbeat.alive()
                    self._send(200 if ok else 503, orjson.dumps({"alive": ok}))
                elif path == "/readyz":
                    checks = server.readiness()
                    ok = all(checks.values())
                    body: dict[str, object] = {"ready": ok, "checks": checks}
                    why = server.why() if server.why else {}
                    if why:
                        body["why"] = why
                    self._send(200 if ok else 503, orjson.dumps(body))
                else:
                    self._send(404, b'{"error":"not found"}')

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would drown the logs

        return Handler


def serve_health(
    host: str,
    port: int,
    heartbeat: Heartbeat,
    checks: dict[str, Check],
    why: Callable[[], dict[str, str]] | None = None,
) -> HealthServer | None:
    """Start the endpoint unless port is 0; a busy port is logged, not fatal.

    ``why``: failing checks' reasons (one line each), shown in /readyz's body."""
    if port == 0:
        return None
    try:
        return HealthServer(host, port, heartbeat=heartbeat, checks=checks, why=why).start()
    except OSError as exc:
        log.error("metrics/health port unavailable", extra={"port": port, "error": str(exc)})
        raise
