"""A watchdog per child: restart what exits, kill and restart what hangs.

Pure logic around two injected edges — how a process is spawned and how its health
endpoint is probed — so the policy is tested without processes or sockets:

- a child that exits is started again after a delay that doubles for every exit in a
  row (``restart_backoff_s`` … ``restart_backoff_max_s``) and resets once the child
  stayed up ``stable_after_s``;
- a child whose ``/healthz`` has not answered OK for ``hung_after_s`` (after a start
  grace) is SIGKILLed and then restarted like one that exited: a stage whose loop
  stopped beating answers 503, and a stage that cannot answer at all is hung too;
- on stop, children get SIGTERM in pipeline order (ingest first, so the worker and
  act drain what is already on the topics) and SIGKILL after ``stop_timeout_s``.
"""

from __future__ import annotations

import logging
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from inspector.config import EdgeSettings
from inspector.telemetry.metrics import EDGE_CHILD_UP, EDGE_RESTARTS

log = logging.getLogger(__name__)


class Proc(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    health_port: int | None = None  # None: no endpoint, judged by its exit only
    log_path: Path | None = None


@dataclass
class Child:
    spec: ChildSpec
    proc: Proc | None = None
    started_at: float = 0.0
    due_at: float = 0.0  # when to (re)start while proc is None
    delay: float = 0.0  # the delay the last restart waited
    restarts: int = 0
    unhealthy_since: float | None = None
    last_exit: str = ""
    history: list[str] = field(default_factory=list)  # last few exits, newest last

    @property
    def running(self) -> bool:
        return self.proc is not None


Spawn = Callable[[ChildSpec], Proc]
Probe = Callable[[int, str], bool]  # (port, path) -> answered 200


def spawn_process(spec: ChildSpec) -> Proc:
    """The real spawn: own session (a Ctrl-C on the terminal reaches the supervisor
    only, which stops the children in order), output appended to the child's log."""
    if spec.log_path is None:
        return subprocess.Popen(spec.argv, env=spec.env, start_new_session=True)
    with spec.log_path.open("ab") as out:
        return subprocess.Popen(
            spec.argv,
            env=spec.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


class Supervisor:
    def __init__(
        self,
        specs: list[ChildSpec],
        settings: EdgeSettings,
        *,
        spawn: Spawn = spawn_process,
        probe: Probe,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.children = [Child(s) for s in specs]
        self.spawn = spawn
        self.probe = probe
        self.clock = clock

    # ------------------------------------------------------------------ loop

    def step(self) -> None:
        now = self.clock()
        for c in self.children:
            if c.proc is None:
                if now >= c.due_at:
                    self._start(c, now)
                continue
            code = c.proc.poll()
            if code is not None:
                self._down(c, now, "exited", f"exited with {code}")
            elif self._hung(c, now):
                c.proc.send_signal(signal.SIGKILL)
                c.proc.wait(10)
                self._down(
                    c, now, "hung", f"hung: /healthz not OK for {self.settings.hung_after_s:g} s"
                )

    def _start(self, c: Child, now: float) -> None:
        try:
            c.proc = self.spawn(c.spec)
        except OSError as exc:  # e.g. the executable vanished: retry like an exit
            self._down(c, now, "spawn_failed", f"could not start: {exc}")
            return
        c.started_at, c.unhealthy_since = now, None
        EDGE_CHILD_UP.labels(c.spec.name).set(1)
        log.info("child started", extra={"child": c.spec.name, "pid": c.proc.pid})

    def _hung(self, c: Child, now: float) -> bool:
        port = c.spec.health_port
        if port is None or now - c.started_at < self.settings.start_grace_s:
            return False
        if self.probe(port, "/healthz"):
            c.unhealthy_since = None
            return False
        if c.unhealthy_since is None:
            c.unhealthy_since = now
        return now - c.unhealthy_since >= self.settings.hung_after_s

    def _down(self, c: Child, now: float, reason: str, detail: str) -> None:
        s = self.settings
        stable = c.proc is not None and now - c.started_at >= s.stable_after_s
        first = stable or c.delay == 0
        c.delay = s.restart_backoff_s if first else min(c.delay * 2, s.restart_backoff_max_s)
        c.proc = None
        c.due_at = now + c.delay
        c.restarts += 1
        c.last_exit = detail
        c.history = [*c.history[-4:], detail]
        EDGE_CHILD_UP.labels(c.spec.name).set(0)
        EDGE_RESTARTS.labels(c.spec.name, reason).inc()
        log.warning(
            "child down; restarting",
            extra={"child": c.spec.name, "why": detail, "restart_in_s": round(c.delay, 2)},
        )

    # ------------------------------------------------------------------ health

    def ready(self, c: Child) -> bool:
        """Running and, if it has an endpoint, answering /readyz 200."""
        if c.proc is None or c.proc.poll() is not None:
            return False
        port = c.spec.health_port
        return True if port is None else self.probe(port, "/readyz")

    def why(self) -> dict[str, str]:
        """One line per child that is not running, for the supervisor's /readyz."""
        return {
            c.spec.name: f"{c.last_exit}; restart {c.restarts} due in "
            f"{max(0.0, c.due_at - self.clock()):.1f} s"
            for c in self.children
            if c.proc is None and c.last_exit
        }

    # ------------------------------------------------------------------ stop

    def stop(self) -> dict[str, int | None]:
        """SIGTERM each running child in pipeline order and wait; SIGKILL a laggard.
        Returns each child's exit code (None: was not running)."""
        codes: dict[str, int | None] = {}
        for c in self.children:
            if c.proc is None:
                codes[c.spec.name] = None
                continue
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
            try:
                codes[c.spec.name] = c.proc.wait(self.settings.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("child did not stop in time; killing", extra={"child": c.spec.name})
                c.proc.send_signal(signal.SIGKILL)
                codes[c.spec.name] = c.proc.wait(10)
            EDGE_CHILD_UP.labels(c.spec.name).set(0)
            c.proc = None
        return codes
