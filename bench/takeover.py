"""How long a dead group member's partitions go unconsumed (issue 12, "Worker restarts").

Two member processes (the stage consumer the worker and act use: ``stage_consumer``)
share a 4-partition topic that a producer feeds every 20 ms per partition. Once both
hold partitions, member A is SIGKILLed. *Takeover* = the time from the kill until every
partition A held has been consumed again (by B, or by A restarted with the same static
id). Frames of that time are what a worker SIGKILL leaves unjudged.

    .venv/bin/python -m bench.takeover                # all scenarios, 3 rounds each
    .venv/bin/python -m bench.takeover --rounds 1 --scenarios classic-1500,kip848-1500

Scenarios: classic protocol with session 6000/3000/1500 ms; KIP-848 (``consumer``
protocol, session set on the broker as the group's ``consumer.session.timeout.ms``);
static membership with A restarted at once (``static-restart``) and A not coming back
(``static-dead``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PARTITIONS = 4
PRODUCE_EVERY_S = 0.02


@dataclass(frozen=True)
class Scenario:
    name: str
    protocol: str
    session_ms: int
    heartbeat_ms: int
    static: bool = False
    restart: bool = False  # restart A at once with the same instance id


SCENARIOS = [
    Scenario("classic-6000", "classic", 6000, 2000),
    Scenario("classic-3000", "classic", 3000, 1000),
    Scenario("classic-1500", "classic", 1500, 500),
    Scenario("kip848-1500", "consumer", 1500, 500),
    Scenario("static-restart-6000", "classic", 6000, 2000, static=True, restart=True),
    Scenario("static-dead-1500", "classic", 1500, 500, static=True),
]


# --------------------------------------------------------------------------- member


def member(args: argparse.Namespace) -> None:
    """A group member: prints '<epoch> <partition>' for every record it consumes."""
    from inspector.bus.kafka import stage_consumer
    from inspector.config import KafkaSettings

    settings = KafkaSettings(
        bootstrap_servers=args.bootstrap,
        session_timeout_ms=args.session,
        heartbeat_interval_ms=args.heartbeat,
        group_protocol=args.protocol,
        static_membership=args.static,
    )
    consumer = stage_consumer(
        settings,
        args.group,
        "bench",
        **{
            "enable.auto.commit": True,
            "enable.auto.offset.store": True,
            "auto.commit.interval.ms": 200,
        },
    )
    consumer.subscribe([args.topic])
    out = sys.stdout
    while True:
        for m in consumer.consume(100, 0.05):
            if m.error() is None:
                out.write(f"{time.time():.4f} {m.partition()}\n")
        out.flush()


# --------------------------------------------------------------------------- harness


@dataclass
class Member:
    name: str
    proc: subprocess.Popen[bytes]
    seen: list[tuple[float, int]] = field(default_factory=list)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t, p = line.split()
            self.seen.append((float(t), int(p)))

    def last_by_partition(self, since: float) -> set[int]:
        return {p for t, p in self.seen[-400:] if t >= since}


def spawn(name: str, sc: Scenario, bootstrap: str, group: str, topic: str) -> Member:
    argv = [
        sys.executable,
        "-m",
        "bench.takeover",
        "member",
        "--bootstrap",
        bootstrap,
        "--group",
        group,
        "--topic",
        topic,
        "--protocol",
        sc.protocol,
        "--session",
        str(sc.session_ms),
        "--heartbeat",
        str(sc.heartbeat_ms),
    ]
    if sc.static:
        argv.append("--static")
    env = {**os.environ, "INSPECTOR_INSTANCE_ID": name}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    m = Member(name, proc)
    threading.Thread(target=m.read, daemon=True).start()
    return m


def wait(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


def one_round(sc: Scenario, bootstrap: str) -> dict[str, Any]:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"takeover-{uuid.uuid4().hex[:8]}"
    group = f"takeover-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(15)
    stop = threading.Event()

    def produce() -> None:
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        while not stop.is_set():
            for part in range(PARTITIONS):
                p.produce(topic, b"x", partition=part)
            p.poll(0)
            time.sleep(PRODUCE_EVERY_S)
        p.flush(5)

    threading.Thread(target=produce, daemon=True).start()
    members = [
        spawn("member-a", sc, bootstrap, group, topic),
        spawn("member-b", sc, bootstrap, group, topic),
    ]
    a, b = members
    try:
        # steady: both members consume, every partition is consumed, for a whole second
        def split() -> bool:
            since = time.time() - 0.3
            pa, pb = a.last_by_partition(since), b.last_by_partition(since)
            return bool(pa) and bool(pb) and not (pa & pb) and len(pa | pb) == PARTITIONS

        wait(split, 60, "both members to hold partitions")
        stable_since = time.monotonic()
        while time.monotonic() - stable_since < 1.0:
            if not split():
                wait(split, 30, "a stable split")
                stable_since = time.monotonic()
            time.sleep(0.05)
        held = a.last_by_partition(time.time() - 0.3)
        t_kill = time.time()
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(5)
        takers = [b]
        if sc.restart:
            a2 = spawn("member-a", sc, bootstrap, group, topic)  # same instance id
            members.append(a2)
            takers.append(a2)

        def first_after(p: int) -> float | None:
            ts = [t for m in takers for t, q in list(m.seen) if q == p and t > t_kill]
            return min(ts) if ts else None

        wait(
            lambda: all(first_after(p) is not None for p in held),
            max(30, 4 * sc.session_ms / 1000),
            "the dead member's partitions",
        )
        gaps = {p: round((first_after(p) or 0) - t_kill, 3) for p in held}
        return {"takeover_s": max(gaps.values()), "partitions": sorted(held)}
    finally:
        stop.set()
        for m in members:
            if m.proc.poll() is None:
                m.proc.kill()
                m.proc.wait(5)
        admin.delete_topics([topic])


def run(rounds: int, names: list[str] | None, bootstrap: str | None) -> dict[str, Any]:
    from inspector.localstack import kafka_version, start_kafka

    broker = None
    if bootstrap is None:
        broker = start_kafka(log_dir=Path(tempfile.mkdtemp(prefix="takeover-")))
        bootstrap = broker.bootstrap
    results: dict[str, Any] = {"broker": f"Apache Kafka {kafka_version()}", "scenarios": {}}
    try:
        for sc in SCENARIOS:
            if names and sc.name not in names:
                continue
            figs = [one_round(sc, bootstrap)["takeover_s"] for _ in range(rounds)]
            results["scenarios"][sc.name] = {
                "protocol": sc.protocol,
                "session_ms": sc.session_ms,
                "heartbeat_ms": sc.heartbeat_ms,
                "static": sc.static,
                "restart": sc.restart,
                "takeover_s": figs,
            }
            print(f"{sc.name:22s} takeover {min(figs):5.2f}-{max(figs):5.2f} s  {figs}", flush=True)
    finally:
        if broker is not None:
            broker.close()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.takeover")
    sub = ap.add_subparsers(dest="cmd")
    m = sub.add_parser("member")
    m.add_argument("--bootstrap", required=True)
    m.add_argument("--group", required=True)
    m.add_argument("--topic", required=True)
    m.add_argument("--protocol", default="classic")
    m.add_argument("--session", type=int, default=6000)
    m.add_argument("--heartbeat", type=int, default=2000)
    m.add_argument("--static", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scenarios", default="")
    ap.add_argument("--bootstrap", default=None, help="use a running broker")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    if args.cmd == "member":
        member(args)
        return 0
    names = [s for s in args.scenarios.split(",") if s] or None
    results = run(args.rounds, names, args.bootstrap)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
