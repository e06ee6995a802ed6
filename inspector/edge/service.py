"""Composition root of ``inspector edge``: the children, the probe, the health endpoint,
the signal handling and the loop."""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from inspector.config import PlantConfig, int8_regions, int8_sibling
from inspector.edge.supervisor import ChildSpec, Supervisor
from inspector.telemetry.health import Heartbeat, serve_health

log = logging.getLogger(__name__)
STEP_S = 0.5


def prober(host: str) -> Callable[[int, str], bool]:
    """GET http://<host>:<port><path> answered 200 (the children's metrics_host; a
    wildcard bind is probed on loopback)."""
    target = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host

    def probe(port: int, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{target}:{port}{path}", timeout=2.0) as r:
                return bool(r.status == 200)
        except OSError:  # refused, timed out, or an HTTP error status (503)
            return False

    return probe


def int8_model(cfg: PlantConfig) -> str | None:
    """The INT8 build beside the worker's configured ONNX file, when edge.int8 is auto
    and the file exists (``model.onnx`` → ``model.int8.onnx``)."""
    if cfg.edge.int8 == "off":
        return None
    return int8_sibling(cfg.models[cfg.worker.model].path)


def _port(port: int) -> tuple[list[str], int | None]:
    return ["--metrics-port", str(port)], (port or None)


class EdgeConfigError(Exception):
    """The group cannot be laid out as configured; one line."""


def _distinct_ports(specs: list[ChildSpec]) -> None:
    owner: dict[int, str] = {}
    for s in specs:
        if s.health_port is None:
            continue
        if s.health_port in owner:
            raise EdgeConfigError(
                f"{s.name} and {owner[s.health_port]} would both listen on port "
                f"{s.health_port} (workers use observe.worker_port + i); move the ports apart"
            )
        owner[s.health_port] = s.name


def child_specs(cfg: PlantConfig, config: Path, log_dir: Path | None) -> list[ChildSpec]:
    """The group in pipeline order: ingest, worker(s), act, bridge, mqtt, sink (those
    configured). Raises EdgeConfigError when two children would listen on one port."""
    exe = [sys.executable, "-m", "inspector"]
    base = ["--config", str(config)]
    env = dict(os.environ)
    host = env.get("INSPECTOR_INSTANCE_ID") or socket.gethostname()
    ports = {
        "ingest": cfg.observe.ingest_port,
        "act": cfg.observe.act_port,
        "bridge": cfg.bridge.port,
        "mqtt": cfg.mqtt.metrics_port if cfg.mqtt is not None else 0,
        "sink": cfg.lake.port,
    }
    specs: list[ChildSpec] = []

    def logfile(name: str) -> Path | None:
        return None if log_dir is None else log_dir / f"{name}.log"

    for stage in ("ingest", "worker", "act", "bridge", "mqtt", "sink"):
        if stage not in cfg.edge.stages:
            continue
        if stage != "worker":
            args, port = _port(ports[stage])
            specs.append(ChildSpec(stage, [*exe, stage, *base, *args], env, port, logfile(stage)))
            continue
        int8 = int8_model(cfg)
        model = ["--model-path", int8] if int8 else []
        if int8_regions(cfg):
            model.append("--int8-regions")
        for i in range(cfg.edge.workers):
            wp = cfg.observe.worker_port + i if cfg.observe.worker_port else 0
            args, port = _port(wp)
            name = "worker" if cfg.edge.workers == 1 else f"worker-{i + 1}"
            wenv = {**env, "INSPECTOR_INSTANCE_ID": f"{host}-edge-{i + 1}"}
            specs.append(
                ChildSpec(name, [*exe, "worker", *base, *args, *model], wenv, port, logfile(name))
            )
    _distinct_ports(specs)
    return specs


def run_edge(cfg: PlantConfig, config: Path, *, log_dir: Path | None = None) -> int:
    """Run the group until SIGTERM/SIGINT; 0 after an orderly stop."""
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    specs = child_specs(cfg, config, log_dir)
    int8 = int8_model(cfg)
    log.info(
        "edge starting",
        extra={
            "children": [s.name for s in specs],
            "worker_model": int8 or cfg.models[cfg.worker.model].path,
            "int8": bool(int8),
            "int8_region_models": int8_regions(cfg),
        },
    )
    sup = Supervisor(specs, cfg.edge, probe=prober(cfg.observe.metrics_host), clock=time.monotonic)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    beat = Heartbeat(stale_after_s=max(10.0, 20 * STEP_S))
    checks: dict[str, Callable[[], bool]] = {
        c.spec.name: functools.partial(sup.ready, c) for c in sup.children
    }
    health = serve_health(cfg.observe.metrics_host, cfg.edge.port, beat, checks, why=sup.why)
    try:
        while not stop.is_set():
            sup.step()
            beat.beat()
            stop.wait(STEP_S)
    finally:
        codes = sup.stop()
        if health is not None:
            health.close()
        for s, h in old.items():
            signal.signal(s, h)
        log.info("edge stopped", extra={"exit_codes": codes})
    return 0
