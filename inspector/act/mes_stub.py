"""A stand-in MES for the demo and the tests: a real HTTP server that receives tickets.

It verifies Standard Webhooks signatures (401 when they do not verify), records each
ticket once by ``webhook-id`` (a repeat is answered 200 and counted as a duplicate, as
an idempotent receiver should), and can be told to fail with a status for a while to
play an outage.

HTTP API:
- ``POST /tickets`` (any path outside /control): a signed ticket;
- ``GET /stats``: counts; ``GET /tickets``: recorded tickets;
- ``POST /control/fail`` with ``{"status": 503, "seconds": 8}``; ``POST /control/recover``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from inspector.act.signing import SignatureError, verify

log = logging.getLogger(__name__)


@dataclass
class ReceivedRequest:
    headers: dict[str, str]
    body: bytes
    status: int
    at: float


@dataclass
class StubStats:
    received: int = 0  # every POST, whatever the answer
    verified: int = 0  # signature verified
    rejected: int = 0  # signature did not verify (401) or body not JSON (400)
    failed: int = 0  # answered with the injected failure status
    duplicates: int = 0  # verified again with a webhook-id already recorded
    tickets: int = 0  # distinct tickets recorded


@dataclass
class MesStub:
    secrets: list[str]
    host: str = "127.0.0.1"
    port: int = 0
    tolerance_s: float = 300.0
    stats: StubStats = field(default_factory=StubStats)
    tickets: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[ReceivedRequest] = field(default_factory=list)
    _fail_status: int = 0
    _fail_until: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control

    def fail(self, status: int = 503, seconds: float | None = None) -> None:
        """Answer every ticket with ``status`` for ``seconds`` (None: until recover())."""
        with self._lock:
            self._fail_status = status
            self._fail_until = float("inf") if seconds is None else time.monotonic() + seconds

    def recover(self) -> None:
        with self._lock:
            self._fail_status, self._fail_until = 0, 0.0

    def failing(self) -> int:
        with self._lock:
            return self._fail_status if time.monotonic() < self._fail_until else 0

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return asdict(self.stats)

    # ------------------------------------------------------------------ receive

    def receive(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        status = self.failing()
        with self._lock:
            self.stats.received += 1
        if status:
            with self._lock:
                self.stats.failed += 1
                self.requests.append(ReceivedRequest(headers, body, status, time.time()))
            return status, {"error": "injected failure"}
        try:
            msg_id = verify(body, headers, self.secrets, tolerance_s=self.tolerance_s)
            ticket = orjson.loads(body)
            if not isinstance(ticket, dict):
                raise ValueError("ticket is not an object")
        except SignatureError as exc:
            return self._reject(headers, body, 401, f"signature: {exc}")
        except ValueError as exc:
            return self._reject(headers, body, 400, f"body: {exc}")
        with self._lock:
            self.stats.verified += 1
            self.requests.append(ReceivedRequest(headers, body, 200, time.time()))
            if msg_id in self.tickets:
                self.stats.duplicates += 1
                return 200, {"ticket": msg_id, "duplicate": True}
            self.tickets[msg_id] = ticket
            self.stats.tickets = len(self.tickets)
        log.info("ticket recorded", extra={"webhook_id": msg_id, "line": ticket.get("line_id")})
        return 201, {"ticket": msg_id}

    def _reject(
        self, headers: dict[str, str], body: bytes, status: int, why: str
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.stats.rejected += 1
            self.requests.append(ReceivedRequest(headers, body, status, time.time()))
        log.warning("ticket rejected", extra={"status": status, "error": why})
        return status, {"error": why}

    # ------------------------------------------------------------------ server

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/tickets"

    def start(self) -> MesStub:
        self._httpd = ThreadingHTTPServer((self.host, self.port), self._handler())
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="mes-stub", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> MesStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real MES front-ends speak

            def _send(self, code: int, payload: Any) -> None:
                body = orjson.dumps(payload)
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def do_GET(self) -> None:
                if self.path == "/stats":
                    self._send(200, stub.snapshot())
                elif self.path == "/tickets":
                    with stub._lock:
                        self._send(200, list(stub.tickets.values()))
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                body = self._body()
                if self.path.startswith("/control/fail"):
                    args = orjson.loads(body) if body else {}
                    stub.fail(int(args.get("status", 503)), args.get("seconds"))
                    self._send(200, {"failing": stub.failing()})
                elif self.path.startswith("/control/recover"):
                    stub.recover()
                    self._send(200, {"failing": 0})
                else:
                    code, payload = stub.receive(dict(self.headers.items()), body)
                    self._send(code, payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
