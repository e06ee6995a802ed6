"""``inspector demo`` / ``make demo``: a whole simulated plant on one machine.

Starts an embedded Kafka-protocol broker and redis-server, simulated RTSP cameras
(2 lines x 2 cameras by default), then the real processes — ``ingest``,
``worker``, ``act``, ``dashboard`` — exactly as a plant would run them, plus a
local MES stand-in that verifies the signed tickets. It shows a live terminal view,
stops after ``duration`` seconds (0 = until Ctrl-C), shuts every child down and
prints a scorecard scored against the simulator's ground truth.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from inspector.config import PlantConfig, load_config
from inspector.events import VerdictEvent
from inspector.localstack import EmbeddedBroker, ManagedProcess, free_port, start_kafka, start_redis

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


@dataclass
class Child:
    """A pipeline process of the demo: its own session, its own log, always reaped."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    health_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 20.0) -> int | None:
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return p.returncode


def _private_file(path: Path, text: str) -> None:
    """Written readable by the owner only, from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    path.chmod(0o600)


def champion(cfg: PlantConfig) -> str:
    """Register the shipped model as the champion unless the registry has one already
    (a rerun keeps what an earlier run, or an operator, promoted)."""
    from inspector.learn.lifecycle import CHAMPION, promote, register_model
    from inspector.registry import Registry, RegistryError

    reg = Registry(cfg.learn)
    try:
        mv = reg.by_alias(CHAMPION)
    except RegistryError:
        mv = register_model(cfg, reg, "builtin:defects-v1", description="shipped with inspector")
        promote(cfg, reg, mv.version)
    return f"{mv.name}/{mv.version}"


def write_effective_config(cfg: PlantConfig, out_dir: Path) -> list[str]:
    """The demo's plant as a config file other commands can use while it runs.

    ``<out>/plant.yaml``: every address and port the demo picked, secrets only as
    ``${INSPECTOR_SECRET_…}`` references; ``<out>/demo.env``: those secrets (this run's
    throwaway webhook secret and dashboard token), 0600, to be sourced, so they reach
    neither the terminal nor a command line. Returns the ready-to-paste commands."""
    import shlex

    import yaml

    from inspector.config import dump_config

    data, secrets = dump_config(cfg)
    plant = out_dir / "plant.yaml"
    env_file = out_dir / "demo.env"
    header = (
        "# The plant `inspector demo` is running (addresses of this run); secrets come\n"
        f"# from the environment: `. {env_file}` first.\n"
    )
    _private_file(plant, header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    _private_file(
        env_file,
        "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(secrets.items())),
    )
    c = f"--config {shlex.quote(str(plant))}"
    return [
        f". {shlex.quote(str(env_file))}",
        f"inspector status {c}",
        f"inspector tail verdicts {c}",
        f"inspector evidence <verdict-id> -o evidence.jpg {c}",
        f"inspector kpi {c}",
    ]


def http_get(url: str, timeout_s: float = 2.0, headers: dict[str, str] | None = None) -> bytes:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        body: bytes = resp.read()
        return body


def wait_ready(child: Child, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(
                f"{child.name} exited with {child.proc.returncode if child.proc else '?'}; "
                f"see {child.log_path}"
            )
        try:
            http_get(f"http://127.0.0.1:{child.health_port}/readyz", 1.0)
            return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"{child.name} not ready after {timeout_s}s; see {child.log_path}")


def scrape(port: int) -> dict[str, float]:
    """Sum each metric family of a /metrics page (labels folded)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    try:
        text = http_get(f"http://127.0.0.1:{port}/metrics").decode()
    except OSError:
        return out
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.endswith("_total") or s.name.endswith("_count"):
                out[s.name] = out.get(s.name, 0.0) + float(s.value)
    return out


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def count_topic(cfg: PlantConfig, topic: str, timeout_s: float = 30.0) -> int:
    """Records in a topic, read to the end (watermarks would count transaction markers)."""
    from confluent_kafka import KafkaError, TopicPartition

    from inspector.bus.kafka import make_consumer

    eof: dict[str, Any] = {"enable.partition.eof": True}
    c = make_consumer(cfg.kafka, f"demo-count-{secrets.token_hex(4)}", **eof)
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        done: set[int] = set()
        n = 0
        deadline = time.monotonic() + timeout_s
        while len(done) < len(parts) and time.monotonic() < deadline:
            for m in c.consume(500, 0.5):
                err = m.error()
                if err is None:
                    n += 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    done.add(m.partition() or 0)
        return n
    finally:
        c.close()


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    a = np.asarray(values)
    return {f"p{q}": round(float(np.percentile(a, q)), 4) for q in (50, 95, 99)}


@dataclass
class Collector:
    """Reads verdicts, actions and camera status while the demo runs."""

    cfg: PlantConfig
    verdicts: dict[str, VerdictEvent] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    view: Any = None
    thread: threading.Thread | None = None

    def start(self) -> Collector:
        from inspector.observe.aggregate import PlantView
        from inspector.observe.feed import TopicReader

        self.view = PlantView(self.cfg, since=None)
        reader = TopicReader(
            self.cfg, ["verdicts", "actions", "camera-status", "line-commands"], start_s=None
        ).open()

        def run() -> None:
            try:
                while not self.stop.is_set():
                    for rec in reader.poll(0.2):
                        self.view.apply(rec)
                        if isinstance(rec.event, VerdictEvent):
                            self.verdicts[rec.event.verdict_id] = rec.event
            finally:
                reader.close()

        self.thread = threading.Thread(target=run, name="demo-collector", daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(10)


def camera_fps(cam: dict[str, Any]) -> float:
    """The rate a camera's frames are judged at. The snapshot has no "fps" key (reading
    it showed 0.0 for every camera); ingest's own measured rate only travels with state
    transitions, taken before the first frame, so the verdict rate is what is live."""
    return float(cam.get("judged_fps") or 0.0)


def live_table(snapshot: dict[str, Any], extra: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(
        title=f"inspector demo — {extra['elapsed']:.0f}s / {extra['duration']}",
        caption=f"dashboard: {extra['dashboard']}",
        expand=False,
    )
    for col in (
        "line",
        "camera",
        "state",
        "fps",
        "PASS",
        "FAIL",
        "FAULT",
        "yield",
        "latency p50/p95",
    ):
        t.add_column(col, justify="right" if col not in ("line", "camera", "state") else "left")
    for ln in snapshot["lines"]:
        c = ln["counts"]
        lat = ln["latency"]
        lat_s = (
            f"{lat['p50'] * 1000:.0f}/{lat['p95'] * 1000:.0f} ms" if lat["p50"] is not None else "-"
        )
        y = ln["yield"]
        t.add_row(
            ln["id"],
            "",
            (
                ", ".join(e.get("episode_id", "")[:8] for e in ln["episodes"])
                and "[red]STOPPED[/red]"
            )
            or "running",
            "",
            str(c.get("PASS", 0)),
            str(c.get("FAIL", 0)),
            str(c.get("FAULT", 0)),
            "-" if y is None else f"{y:.1f}%",
            lat_s,
        )
        for cam in ln["cameras"]:
            t.add_row(
                "",
                cam["id"],
                str(cam.get("state", "?")),
                f"{camera_fps(cam):.1f}",
                str(cam.get("counts", {}).get("PASS", "")),
                str(cam.get("counts", {}).get("FAIL", "")),
                str(cam.get("counts", {}).get("FAULT", "")),
                "",
                "",
            )
    t.add_row("", "", "", "", "", "", "", "", "")
    t.add_row(
        "actions",
        "",
        ", ".join(f"{k} {v}" for k, v in extra["actions"].items()) or "-",
        "",
        "",
        "",
        "",
        "",
        "",
    )
    t.add_row(
        "MES",
        "",
        f"tickets {extra['tickets']} verified {extra['verified']}",
        "",
        "",
        "",
        "",
        "",
        "",
    )
    return t


def run_demo(
    duration: float = 60.0,
    *,
    config: Path = DEFAULT_CONFIG,
    workers: int = 1,
    out_dir: Path = Path("demo-out"),
    width: int = 1280,
    height: int = 720,
    clip_seconds: float = 30.0,
    seed: int = 2026,
    echo: Any = print,
) -> dict[str, Any]:
    """Run the whole plant; return the scorecard (also written as JSON)."""
    from inspector.act.mes_stub import MesStub
    from inspector.bus.kafka import ensure_topics
    from inspector.sim import SceneConfig, SimCameraFleet

    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = out_dir / f"logs-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    interrupted = {"n": 0}

    def on_signal(signum: int, frame: object) -> None:
        interrupted["n"] += 1
        stop.set()
        if interrupted["n"] > 2:
            raise KeyboardInterrupt

    old = [signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)]
    servers: list[ManagedProcess | EmbeddedBroker] = []
    children: list[Child] = []
    fleet: SimCameraFleet | None = None
    mes: MesStub | None = None
    collector: Collector | None = None
    try:
        echo("starting Apache Kafka and redis-server ...")
        kafka = start_kafka(log_dir=logs)
        servers.append(kafka)
        redis_srv = start_redis(log_dir=logs)
        servers.append(redis_srv)

        mes_secret = "whsec_" + __import__("base64").b64encode(secrets.token_bytes(24)).decode()
        token = secrets.token_urlsafe(12)
        ports = {k: free_port() for k in ("ingest", "worker", "act", "dashboard", "sink")}
        worker_ports = [ports["worker"]] + [free_port() for _ in range(workers - 1)]
        mes = MesStub(secrets=[mes_secret]).start()
        env = {
            **os.environ,
            "INSPECTOR_DEMO_KAFKA": kafka.bootstrap,
            "INSPECTOR_DEMO_REDIS": f"redis://127.0.0.1:{redis_srv.port}/0",
            # Tansu has no KIP-848 group coordinator
            "INSPECTOR_DEMO_GROUP_PROTOCOL": "classic" if kafka.tansu else "consumer",
            "INSPECTOR_DEMO_MES_URL": mes.url,
            "INSPECTOR_DEMO_MES_SECRET": mes_secret,
            "INSPECTOR_DEMO_TOKEN": token,
            "INSPECTOR_DEMO_INGEST_PORT": str(ports["ingest"]),
            "INSPECTOR_DEMO_WORKER_PORT": str(ports["worker"]),
            "INSPECTOR_DEMO_ACT_PORT": str(ports["act"]),
            "INSPECTOR_DEMO_DASHBOARD_PORT": str(ports["dashboard"]),
            "INSPECTOR_DEMO_LAKE_PORT": str(ports["sink"]),
            "INSPECTOR_DEMO_LAKE_DIR": str((out_dir / "lake").resolve()),
            "INSPECTOR_DEMO_LEARN_DIR": str((out_dir / "learn").resolve()),
            "INSPECTOR_DEMO_MODEL": "models:/inspector-detector@champion",
            "INSPECTOR_DEMO_DASHBOARD_URL": f"http://127.0.0.1:{ports['dashboard']}",
            "YOLO_OFFLINE": "1",
        }
        base_cfg = load_config(config, env=env)
        cams = [c.id for ln in base_cfg.lines for c in ln.cameras]
        echo(f"rendering {len(cams)} simulated cameras (cached after the first run) ...")
        fleet = SimCameraFleet(
            {
                cid: SceneConfig(
                    seed=seed + i,
                    width=width,
                    height=height,
                    fps=15,
                    clip_seconds=clip_seconds,
                    defect_rate=0.3,
                )
                for i, cid in enumerate(cams)
            }
        )
        fleet.start()
        for cid in cams:
            env[f"INSPECTOR_DEMO_RTSP_{cid.upper().replace('-', '_')}"] = fleet.url(cid)
        cfg = load_config(config, env=env)
        observe_cmds = write_effective_config(cfg, out_dir)
        ensure_topics(cfg.kafka, cfg.topics)
        echo(f"model registry: {champion(cfg)} is the champion the workers follow")
        collector = Collector(cfg).start()

        exe = [sys.executable, "-m", "inspector"]
        cfg_arg = ["--config", str(config)]
        children.append(
            Child("ingest", [*exe, "ingest", *cfg_arg], env, logs / "ingest.log", ports["ingest"])
        )
        for i, p in enumerate(worker_ports):
            children.append(
                Child(
                    f"worker-{i + 1}",
                    [*exe, "worker", *cfg_arg, "--metrics-port", str(p)],
                    {**env, "INSPECTOR_INSTANCE_ID": f"demo-{i + 1}"},
                    logs / f"worker-{i + 1}.log",
                    p,
                )
            )
        children.append(Child("act", [*exe, "act", *cfg_arg], env, logs / "act.log", ports["act"]))
        children.append(
            Child("sink", [*exe, "sink", *cfg_arg], env, logs / "sink.log", ports["sink"])
        )
        children.append(
            Child(
                "dashboard",
                # the trends panel re-reads the lake every 10 s: a demo is short
                [*exe, "dashboard", *cfg_arg, "--trends-every", "10"],
                env,
                logs / "dashboard.log",
                ports["dashboard"],
            )
        )
        for c in children:
            c.start()
        echo("starting ingest, worker, act, sink and dashboard ...")
        for c in children:
            wait_ready(c, 90)
        from inspector.ingest.triggers import replay_fleet_triggers

        replay_fleet_triggers(cfg, fleet, stop)
        dash_url = f"http://127.0.0.1:{ports['dashboard']}/?token={token}"
        echo(f"running. dashboard: {dash_url}")
        echo("observe it from another terminal (same directory) while it runs:")
        for cmd in observe_cmds:
            echo(f"  {cmd}")
        t_start = time.time()
        rss: dict[str, dict[str, float | None]] = {}

        def sample_rss(when: str) -> None:
            for c in children:
                if c.proc is not None:
                    rss.setdefault(c.name, {})[when] = rss_mb(c.proc.pid)

        # "start" is taken after a warm-up: model load and caches are not growth.
        threading.Timer(
            min(30.0, duration / 4) if duration else 30.0, lambda: sample_rss("start")
        ).start()
        _live(collector, mes, duration, t_start, dash_url, stop, children, echo)
        sample_rss("end")

        echo("stopping: ingest first, then letting the workers drain ...")
        ingest_metrics = scrape(ports["ingest"])
        children[0].stop()
        _drain(collector, timeout_s=15)
        lake_caught_up = wait_lake(cfg, timeout_s=30)
        trends = dashboard_trends(ports["dashboard"], token, timeout_s=15)
        worker_metrics = [scrape(p) for p in worker_ports]
        exit_codes = {c.name: c.stop() for c in children[1:]}
        exit_codes["ingest"] = children[0].proc.returncode if children[0].proc else None
        elapsed = time.time() - t_start
        card = scorecard(cfg, fleet, collector, mes, ingest_metrics, worker_metrics, elapsed)
        card["exit_codes"] = exit_codes
        card["lake"] = lake_summary(cfg, caught_up=lake_caught_up)
        card["dashboard_trends"] = trends
        card["rss_mb"] = rss
        card["logs"] = str(logs)
        path = out_dir / f"scorecard-{stamp}.json"
        path.write_bytes(orjson.dumps(card, option=orjson.OPT_INDENT_2))
        (out_dir / "scorecard-latest.json").write_bytes(path.read_bytes())
        card["path"] = str(path)
        return card
    finally:
        stop.set()
        if collector:
            collector.close()
        for c in children:
            c.stop()
        if mes:
            mes.close()
        if fleet:
            fleet.close()
        for srv in reversed(servers):
            srv.close()
        for sig, handler in zip((signal.SIGINT, signal.SIGTERM), old, strict=True):
            signal.signal(sig, handler)


def _live(
    collector: Collector,
    mes: Any,
    duration: float,
    t_start: float,
    dash_url: str,
    stop: threading.Event,
    children: list[Child],
    echo: Any,
) -> None:
    from rich.console import Console
    from rich.live import Live

    console = Console()

    def extra() -> dict[str, Any]:
        acts: dict[str, int] = {}
        for (wf, outcome), n in collector.view.action_counts.items():
            if outcome == "fired":
                acts[wf] = acts.get(wf, 0) + n
        st = mes.snapshot()
        return {
            "elapsed": time.time() - t_start,
            "duration": f"{duration:.0f}s" if duration else "until Ctrl-C",
            "dashboard": dash_url,
            "actions": acts,
            "tickets": st.get("tickets", 0),
            "verified": st.get("verified", 0),
        }

    def done() -> bool:
        if stop.is_set():
            return True
        dead = [c.name for c in children if not c.alive()]
        if dead:
            echo(f"a pipeline process exited early: {dead}")
            return True
        return bool(duration) and time.time() - t_start >= duration

    if console.is_terminal:
        with Live(
            live_table(collector.view.snapshot(), extra()), console=console, refresh_per_second=2
        ) as live:
            while not done():
                stop.wait(0.5)
                live.update(live_table(collector.view.snapshot(), extra()))
    else:
        last = 0.0
        while not done():
            stop.wait(0.5)
            if time.time() - last >= 10:
                last = time.time()
                snap = collector.view.snapshot()
                counts = {ln["id"]: dict(ln["counts"]) for ln in snap["lines"]}
                ex = extra()
                echo(
                    f"[{time.time() - t_start:5.0f}s] verdicts {counts} "
                    f"actions {ex['actions']} tickets {ex['tickets']}"
                )


def _lake_lag(cfg: PlantConfig) -> int:
    """Verdicts on the topic the lake's verdicts table does not cover yet."""
    from confluent_kafka import TopicPartition

    from inspector.bus.kafka import make_consumer
    from inspector.lake.service import lake_writers

    writer = next(w for w in lake_writers(cfg).values() if w.spec.name == "verdicts")
    covered = writer.offsets()
    consumer = make_consumer(cfg.kafka, "demo-lake-probe", client_suffix="lake-probe")
    try:
        high = {
            p: consumer.get_watermark_offsets(TopicPartition(writer.topic, p), 5)[1]
            for p in range(cfg.topics.partitions)
        }
    finally:
        consumer.close()
    return sum(max(0, h - covered.get(p, 0)) for p, h in high.items())


def wait_lake(cfg: PlantConfig, timeout_s: float) -> bool:
    """Wait until the sink has committed every verdict on the topic (it commits every
    lake.roll_s); False if it did not within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if _lake_lag(cfg) == 0:
                return True
        except Exception:  # the catalog being written meanwhile: ask again
            pass
        time.sleep(0.5)
    return False


def dashboard_trends(port: int, token: str, timeout_s: float) -> dict[str, Any]:
    """What the dashboard's Trends panel shows now, read from its /api/trends (the
    dashboard re-reads the lake every 10 s in the demo): wait until it has the lake's
    verdicts, or give its last answer after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {"available": False, "reason": "not asked"}
    while True:
        try:
            body = http_get(
                f"http://127.0.0.1:{port}/api/trends",
                headers={"Authorization": f"Bearer {token}"},
            )
            last = orjson.loads(body)
        except (OSError, ValueError) as exc:
            last = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
        if (last.get("available") and last.get("verdicts")) or time.monotonic() > deadline:
            return last
        time.sleep(1.0)


def lake_summary(cfg: PlantConfig, *, caught_up: bool) -> dict[str, Any]:
    """Two KPIs per line read back from the lake (README: Lakehouse)."""
    from inspector.lake.kpi import Window, compute, scan_verdicts

    try:
        arrow = scan_verdicts(cfg, Window())
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    out = compute(arrow, ["line"], ("yield", "latency"))
    return {
        "rows": arrow.num_rows,
        "caught_up": caught_up,
        "data_dir": cfg.lake.data_dir,
        "yield": out["yield"],
        "latency": out["latency"],
    }


def _drain(collector: Collector, timeout_s: float) -> None:
    """Wait until verdicts stop arriving (the workers finished what ingest published)."""
    deadline = time.monotonic() + timeout_s
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = len(collector.verdicts)
        if n != last:
            last, quiet_since = n, time.monotonic()
        elif time.monotonic() - quiet_since > 2.0:
            return
        time.sleep(0.2)


def verdict_counts(
    verdicts: list[VerdictEvent], cameras: set[str]
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """PASS/FAIL/FAULT of the demo's own cameras, and apart, per camera, verdicts from
    cameras the demo does not run (another producer on the same topics)."""
    counts = {"PASS": 0, "FAIL": 0, "FAULT": 0}
    unconfigured: dict[str, dict[str, int]] = {}
    for v in verdicts:
        if v.camera_id in cameras:
            counts[v.verdict] += 1
        else:
            per = unconfigured.setdefault(v.camera_id, {"PASS": 0, "FAIL": 0, "FAULT": 0})
            per[v.verdict] += 1
    return counts, unconfigured


def scorecard(
    cfg: PlantConfig,
    fleet: Any,
    collector: Collector,
    mes: Any,
    ingest_metrics: dict[str, float],
    worker_metrics: list[dict[str, float]],
    elapsed: float,
) -> dict[str, Any]:
    from inspector.bus.crypto import BlobError, store_sealer
    from inspector.bus.store import FrameStore, connect
    from inspector.sim import decode_frame_index
    from inspector.sim.score import JudgedFrame, score

    store = FrameStore(
        connect(cfg.redis), cfg.redis.key_prefix, cfg.frames.claim_ttl_s, store_sealer(cfg)
    )
    every = list(collector.verdicts.values())
    counts, unconfigured = verdict_counts(every, set(fleet.camera_ids))
    # only the demo's own cameras are scored (and only their evidence keys read)
    verdicts = [v for v in every if v.camera_id in set(fleet.camera_ids)]
    judged: list[JudgedFrame] = []
    keys = [v.evidence_key or "" for v in verdicts]
    blobs = store.get_many(keys) if keys else []
    import cv2

    for v, blob in zip(verdicts, blobs, strict=True):
        idx = None
        if blob is not None:
            try:
                blob = store.open(v.evidence_key or "", blob)
            except BlobError:
                blob = None
        if blob is not None:
            # half scale is enough to read the frame-index code, at a quarter of the cost
            img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
            idx = decode_frame_index(img) if img is not None else None
        judged.append(
            JudgedFrame(
                camera_id=v.camera_id,
                frame_index=-1 if idx is None else idx,
                captured_at=v.timings.captured_at,
                verdict=v.verdict,
                finding_boxes=tuple(
                    None if f.box is None else (f.box.x1, f.box.y1, f.box.x2, f.box.y2)
                    for f in v.findings
                ),
            )
        )
    clips = {cid: fleet.clip_truth(cid) for cid in fleet.camera_ids}
    agg = cfg.lines[0].rules.part_aggregation
    quality = score(judged, clips, k=agg.k if agg.mode == "k_of_n" else 1)
    lat = [v.timings.emitted_at - v.timings.captured_at for v in verdicts]
    actions: dict[str, dict[str, int]] = {}
    for (wf, outcome), n in collector.view.action_counts.items():
        actions.setdefault(wf, {})[outcome] = n
    return {
        "duration_s": round(elapsed, 1),
        "cameras": len(fleet.camera_ids),
        "inspection": {
            ln.id: ln.inspection.mode
            + ("" if ln.inspection.mode == "frame" else f" ({ln.inspection.region_model})")
            for ln in cfg.lines
        },
        "frames_captured": count_topic(cfg, cfg.topics.frames),
        "frames_dropped": int(ingest_metrics.get("inspector_frames_dropped_total", 0)),
        "frames_verdicted": len(verdicts),
        "verdicts": counts,
        "verdicts_unconfigured_cameras": unconfigured,
        "quality": quality.as_dict(),
        "capture_to_verdict_s": percentiles(lat),
        "capture_to_publish_s": percentiles(
            [v.timings.ingested_at - v.timings.captured_at for v in verdicts]
        ),
        "publish_to_verdict_s": percentiles(
            [v.timings.emitted_at - v.timings.ingested_at for v in verdicts]
        ),
        "actions": actions,
        "mes": mes.snapshot(),
        "dead_letters": int(sum(m.get("inspector_dead_letters_total", 0) for m in worker_metrics)),
    }


def print_scorecard(card: dict[str, Any], echo: Any = print) -> None:
    q = card["quality"]
    pf, pp = q["per_frame"], q["per_part"]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f} %"

    lat = card["capture_to_verdict_s"]

    def ms(x: float | None) -> str:
        return "n/a" if x is None else f"{1000 * x:.0f} ms"

    echo("")
    echo("inspector demo scorecard")
    echo("========================")
    echo(f"duration            {card['duration_s']} s, {card['cameras']} cameras")
    modes = card.get("inspection") or {}
    if modes:
        echo("inspection          " + ", ".join(f"{ln} {m}" for ln, m in modes.items()))
    echo(
        f"frames              captured {card['frames_captured']}, verdicted "
        f"{card['frames_verdicted']}, dropped {card['frames_dropped']}"
    )
    v = card["verdicts"]
    echo(f"verdicts            PASS {v['PASS']}  FAIL {v['FAIL']}  FAULT {v['FAULT']}")
    for cam, n in sorted(card.get("verdicts_unconfigured_cameras", {}).items()):
        echo(
            f"unconfigured camera {cam}: PASS {n['PASS']}  FAIL {n['FAIL']}  FAULT {n['FAULT']}"
            " (not scored)"
        )
    echo(
        f"per-frame quality   recall {pct(pf['recall'])} ({pf['caught']}/{pf['defective']}), "
        f"false-reject {pct(pf['false_reject_rate'])} ({pf['false_rejects']}/{pf['clean']})"
    )
    echo(
        f"per-part quality    recall {pct(pp['recall'])} ({pp['caught']}/{pp['defective']}), "
        f"false-reject {pct(pp['false_reject_rate'])} ({pp['false_rejects']}/{pp['clean']})"
    )
    echo(f"capture→verdict     p50 {ms(lat['p50'])}  p95 {ms(lat['p95'])}  p99 {ms(lat['p99'])}")
    for wf, outcomes in sorted(card["actions"].items()):
        echo(f"action {wf:<13} " + ", ".join(f"{k} {n}" for k, n in sorted(outcomes.items())))
    m = card["mes"]
    echo(
        f"MES tickets         received {m.get('received', 0)}, verified {m.get('verified', 0)}, "
        f"distinct {m.get('tickets', 0)}, rejected {m.get('rejected', 0)}"
    )
    lake = card.get("lake")
    if lake and "error" in lake:
        echo(f"lake                not read back: {lake['error']}")
    elif lake:
        behind = "" if lake["caught_up"] else " (sink still behind at the end)"
        echo(
            f"lake yield          {lake['rows']} rows{behind}: "
            + ", ".join(
                f"{r['line']} {r['yield_pct']} % ({r['defect_ppm']:.0f} ppm)" for r in lake["yield"]
            )
        )
        echo(
            "lake capture→verdict "
            + ", ".join(
                f"{r['line']} p50 {r['p50_ms']} ms p95 {r['p95_ms']} ms" for r in lake["latency"]
            )
        )
    tr = card.get("dashboard_trends")
    if tr and not tr.get("available"):
        echo(f"dashboard trends    not shown: {tr.get('reason')}")
    elif tr:
        per_line: dict[str, list[int]] = {}
        for r in tr["yield"]:
            pf = per_line.setdefault(r["line"], [0, 0])
            pf[0] += r["pass"]
            pf[1] += r["fail"]
        echo(
            f"dashboard trends    {tr['verdicts']} verdicts in the panel's window: "
            + ", ".join(
                f"{ln} {100 * p / (p + f):.1f} %" for ln, (p, f) in per_line.items() if p + f
            )
            + f"; Pareto {', '.join(r['class'] for r in tr['pareto']) or 'no findings'}"
            + f"; {len(tr['shifts'] or [])} shift rows"
        )

    echo(f"scorecard JSON      {card.get('path')}")
