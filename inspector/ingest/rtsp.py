"""Talking to RTSP cameras: a cheap liveness probe and the OpenCV/FFmpeg capture.

OpenCV says only "not opened" when a camera fails, so before opening we probe the
camera ourselves (TCP connect + RTSP ``OPTIONS``, or ``DESCRIBE`` for a failed open) to
put a precise reason into the status event: refused, no answer, 404 ...
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Read by OpenCV's FFmpeg backend at every open, process-wide. TCP interleaving survives
# NAT and loss; a short analyzeduration opens in ~1 s instead of ~1.5 s and buffers less
# stale video (the reader skips what was buffered anyway).
FFMPEG_CAPTURE_OPTIONS = "rtsp_transport;tcp|analyzeduration;100000"
_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_env_lock = threading.Lock()


def configure_ffmpeg() -> str:
    """Set the capture options unless the operator set their own; return what is in effect."""
    with _env_lock:
        return os.environ.setdefault(_ENV, FFMPEG_CAPTURE_OPTIONS)


def redact(url: str) -> str:
    """The URL without its password, fit for logs and status events."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = 322 if parts.scheme == "rtsps" else 554
    return parts.hostname or "", parts.port or default


@dataclass(frozen=True)
class ProbeResult:
    reachable: bool  # something answers at host:port
    status: int | None  # RTSP status code, when asked
    reason: str


def probe(url: str, method: str = "OPTIONS", timeout_s: float = 1.0) -> ProbeResult:
    """One RTSP request over a fresh TCP connection.

    A hung camera (process stopped) still completes the TCP handshake through the
    kernel's backlog; only an RTSP answer proves it is alive. rtsps:// gets the TCP
    check only.
    """
    host, port = host_port(url)
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except socket.gaierror as exc:
        return ProbeResult(False, None, f"cannot resolve {host}: {exc.strerror}")
    except ConnectionRefusedError:
        return ProbeResult(False, None, f"connection refused at {where}")
    except TimeoutError:
        return ProbeResult(False, None, f"no TCP answer from {where} within {timeout_s:g} s")
    except OSError as exc:
        return ProbeResult(False, None, f"cannot connect to {where}: {exc.strerror or exc}")
    with sock:
        if urlsplit(url).scheme != "rtsp":
            return ProbeResult(True, None, f"TCP connect to {where} ok")
        target = urlunsplit(urlsplit(url)._replace(netloc=f"{host}:{port}"))
        request = f"{method} {target} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: inspector\r\n"
        if method == "DESCRIBE":
            request += "Accept: application/sdp\r\n"
        try:
            sock.settimeout(timeout_s)
            sock.sendall((request + "\r\n").encode())
            head = _read_status_line(sock, deadline=time.monotonic() + timeout_s)
        except (TimeoutError, OSError):
            return ProbeResult(
                False, None, f"no RTSP answer from {where} within {timeout_s:g} s (camera hung?)"
            )
    fields = head.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("RTSP/") or not fields[1].isdigit():
        return ProbeResult(True, None, f"{where} does not speak RTSP (answered {head[:40]!r})")
    status = int(fields[1])
    text = fields[2] if len(fields) > 2 else ""
    return ProbeResult(True, status, f"RTSP {method} answered {status} {text}".strip())


def _read_status_line(sock: socket.socket, deadline: float) -> str:
    buf = b""
    while b"\r\n" not in buf and len(buf) < 4096:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(1024)
        if not chunk:
            raise ConnectionResetError("closed before answering")
        buf += chunk
    return buf.split(b"\r\n", 1)[0].decode(errors="replace")


def open_capture(url: str, open_timeout_ms: int, read_timeout_ms: int) -> Any:
    """An opened ``cv2.VideoCapture`` or None. One decode thread: halves the latency."""
    import cv2

    configure_ffmpeg()
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        open_timeout_ms,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        read_timeout_ms,
        cv2.CAP_PROP_N_THREADS,
        1,
    ]
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        return None
    return cap
