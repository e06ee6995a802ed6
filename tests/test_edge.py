"""``inspector edge``: the supervisor's policy on fake processes (pure logic), and the real
group — RTSP camera → ingest → worker → act on the session's Kafka and Redis — with a
child SIGKILLed under it."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from inspector.config import BUILTIN_MODELS, EdgeSettings, PlantConfig
from inspector.edge.service import child_specs, int8_model
from inspector.edge.supervisor import ChildSpec, Supervisor

# ----------------------------------------------------------------- fake processes

_pids = itertools.count(1000)


class FakeProc:
    def __init__(self, spec: ChildSpec, log: list[str]) -> None:
        self.pid = next(_pids)
        self.code: int | None = None
        self.ignore_term = False
        self.spec, self.log = spec, log

    def poll(self) -> int | None:
        return self.code

    def send_signal(self, sig: int) -> None:
        self.log.append(f"{self.spec.name}:{signal.Signals(sig).name}")
        if sig == signal.SIGKILL or (sig == signal.SIGTERM and not self.ignore_term):
            self.code = -sig

    def wait(self, timeout: float | None = None) -> int:
        if self.code is None:
            raise subprocess.TimeoutExpired("fake", timeout or 0)
        return self.code


class Rig:
    def __init__(self, names: list[str], **settings: Any) -> None:
        self.now = 0.0
        self.log: list[str] = []
        self.procs: dict[str, list[FakeProc]] = {n: [] for n in names}
        self.healthy: dict[int, bool] = {}
        self.settings = EdgeSettings(
            restart_backoff_s=1, restart_backoff_max_s=8, stable_after_s=60, **settings
        )
        specs = [ChildSpec(n, ["x"], {}, health_port=9000 + i) for i, n in enumerate(names)]
        self.sup = Supervisor(
            specs, self.settings, spawn=self.spawn, probe=self.probe, clock=lambda: self.now
        )

    def spawn(self, spec: ChildSpec) -> FakeProc:
        p = FakeProc(spec, self.log)
        self.procs[spec.name].append(p)
        return p

    def probe(self, port: int, path: str) -> bool:
        return self.healthy.get(port, True)

    def at(self, t: float) -> None:
        self.now = t
        self.sup.step()

    def current(self, name: str) -> FakeProc:
        return self.procs[name][-1]


def test_a_child_that_exits_is_restarted_with_a_doubling_delay_reset_once_stable() -> None:
    rig = Rig(["worker"])
    rig.at(0)
    assert len(rig.procs["worker"]) == 1
    starts = []
    t = 0.0
    for _ in range(5):  # crashes right after each start
        rig.current("worker").code = 1
        rig.at(t := t + 0.1)
        c = rig.sup.children[0]
        starts.append(c.due_at - t)
        rig.at(t := c.due_at)
    assert starts == [1, 2, 4, 8, 8]  # capped at restart_backoff_max_s
    assert len(rig.procs["worker"]) == 6
    rig.at(t := t + 61)  # up for over stable_after_s, then it exits
    rig.current("worker").code = 1
    rig.at(t := t + 0.1)
    assert rig.sup.children[0].due_at - t == 1  # the delay starts over
    assert rig.sup.children[0].restarts == 6
    assert "exited with 1" in rig.sup.why()["worker"]


def test_a_hung_child_is_killed_and_restarted_after_the_grace() -> None:
    rig = Rig(["ingest", "worker"], hung_after_s=30, start_grace_s=60)
    rig.at(0)
    port = rig.sup.children[1].spec.health_port
    assert port is not None
    rig.healthy[port] = False
    rig.at(59)  # within the start grace: not judged
    rig.at(70)
    rig.at(99)  # unhealthy for 29 s
    assert rig.current("worker").code is None
    rig.healthy[port] = True
    rig.at(100)  # answered: the clock starts over
    rig.healthy[port] = False
    rig.at(101)
    rig.at(130)
    assert rig.current("worker").code is None
    rig.at(131)  # 30 s without an OK answer
    assert rig.log == ["worker:SIGKILL"]
    assert rig.sup.children[1].proc is None and "hung" in rig.sup.why()["worker"]
    rig.healthy[port] = True
    rig.at(132)
    assert len(rig.procs["worker"]) == 2 and len(rig.procs["ingest"]) == 1


def test_stop_terms_in_pipeline_order_and_kills_a_laggard() -> None:
    rig = Rig(["ingest", "worker", "act"], stop_timeout_s=1)
    rig.at(0)
    rig.current("worker").ignore_term = True
    codes = rig.sup.stop()
    assert rig.log == ["ingest:SIGTERM", "worker:SIGTERM", "worker:SIGKILL", "act:SIGTERM"]
    assert codes == {"ingest": -15, "worker": -9, "act": -15}


def test_ready_needs_a_running_child_that_answers_readyz() -> None:
    rig = Rig(["act"])
    rig.at(0)
    act = rig.sup.children[0]
    assert rig.sup.ready(act)
    assert act.spec.health_port is not None
    rig.healthy[act.spec.health_port] = False
    assert not rig.sup.ready(act)
    rig.healthy[act.spec.health_port] = True
    rig.current("act").code = 2
    assert not rig.sup.ready(act)


def test_a_spawn_that_fails_is_retried_like_an_exit() -> None:
    rig = Rig(["act"])
    attempts = []

    def broken(spec: ChildSpec) -> FakeProc:
        attempts.append(rig.now)
        raise FileNotFoundError("no such file: inspector")

    rig.sup.spawn = broken
    for t in range(0, 8):
        rig.at(t)
    assert attempts == [0, 1, 3, 7]  # 1, 2, 4 s apart
    assert "could not start" in rig.sup.why()["act"]


# ----------------------------------------------------------------- the group's specs


def _edge_cfg(
    make_config: Callable[..., PlantConfig], act_port: int = 19110, **edge: Any
) -> PlantConfig:
    return make_config(
        edge=edge,
        observe={"ingest_port": 19101, "worker_port": 19102, "act_port": act_port},
    )


def test_children_in_pipeline_order_with_their_ports(
    make_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    cfg = _edge_cfg(make_config, workers=2, stages=["act", "worker", "ingest"])
    specs = child_specs(cfg, tmp_path / "plant.yaml", tmp_path)
    assert [(s.name, s.health_port) for s in specs] == [
        ("ingest", 19101),
        ("worker-1", 19102),
        ("worker-2", 19103),
        ("act", 19110),
    ]
    ids = {s.env["INSPECTOR_INSTANCE_ID"] for s in specs if s.name.startswith("worker")}
    assert len(ids) == 2  # two members of the group, never one id twice
    assert specs[0].argv[-4:] == [
        "--config",
        str(tmp_path / "plant.yaml"),
        "--metrics-port",
        "19101",
    ]


_PLC = {
    "kind": "opcua",
    "name": "press-plc",
    "endpoint": "opc.tcp://127.0.0.1:4840",
    "lines": {"line-1": {"stop": {"node_id": "ns=2;s=Stop", "type": "Boolean", "value": True}}},
}


def test_bridge_and_mqtt_join_the_group_after_act_on_their_own_ports(
    make_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    cfg = make_config(
        edge={"stages": ["mqtt", "bridge", "act", "worker", "ingest", "sink"]},
        observe={"ingest_port": 19101, "worker_port": 19102, "act_port": 19103},
        bridge={"port": 19105, "targets": [_PLC]},
        mqtt={"host": "127.0.0.1", "metrics_port": 19106},
        lake={"port": 19104},
    )
    specs = child_specs(cfg, tmp_path / "plant.yaml", tmp_path)
    assert [(s.name, s.health_port) for s in specs] == [
        ("ingest", 19101),
        ("worker", 19102),
        ("act", 19103),
        ("bridge", 19105),
        ("mqtt", 19106),
        ("sink", 19104),
    ]
    by_name = {s.name: s for s in specs}
    for stage in ("bridge", "mqtt"):
        spec = by_name[stage]
        assert spec.argv[1:] == [
            "-m",
            "inspector",
            stage,
            "--config",
            str(tmp_path / "plant.yaml"),
            "--metrics-port",
            str(spec.health_port),
        ]
        assert spec.log_path == tmp_path / f"{stage}.log"
    # stopped after act, whose line commands they deliver (pipeline order)
    rig = Rig([s.name for s in specs], stop_timeout_s=1)
    rig.at(0)
    rig.sup.stop()
    assert [e.split(":")[0] for e in rig.log] == [s.name for s in specs]
    # a port of 0 turns the endpoint off: judged by its exit only
    off = make_config(
        edge={"stages": ["bridge", "mqtt"]},
        bridge={"port": 0, "targets": [_PLC]},
        mqtt={"host": "127.0.0.1", "metrics_port": 0},
    )
    assert [(s.name, s.health_port) for s in child_specs(off, tmp_path / "p.yaml", None)] == [
        ("bridge", None),
        ("mqtt", None),
    ]


def test_bridge_or_mqtt_the_config_cannot_run_is_refused_when_it_loads(
    make_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    from inspector.config import ConfigError
    from inspector.edge.service import EdgeConfigError

    with pytest.raises(ConfigError, match=r"edge\.stages has bridge, but bridge\.targets is"):
        make_config(edge={"stages": ["act", "bridge"]})
    with pytest.raises(ConfigError, match=r"edge\.stages has mqtt, but there is no mqtt"):
        make_config(edge={"stages": ["act", "mqtt"]})
    clash = make_config(
        edge={"stages": ["act", "bridge"]},
        observe={"act_port": 19105},
        bridge={"port": 19105, "targets": [_PLC]},
    )
    with pytest.raises(EdgeConfigError, match="bridge and act would both listen on port 19105"):
        child_specs(clash, tmp_path / "plant.yaml", None)


def test_two_children_on_one_port_are_refused_before_anything_starts(
    make_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    from inspector.edge.service import EdgeConfigError

    cfg = _edge_cfg(make_config, act_port=19103, workers=2)
    with pytest.raises(EdgeConfigError, match="act and worker-2 would both listen on port 19103"):
        child_specs(cfg, tmp_path / "plant.yaml", None)


def test_the_int8_build_beside_the_model_is_used_when_present(
    make_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"x")
    cfg = make_config(models={"default": {"path": str(onnx)}}, edge={"stages": ["worker"]})
    assert int8_model(cfg) is None
    assert "--model-path" not in child_specs(cfg, tmp_path / "p.yaml", None)[0].argv
    (tmp_path / "model.int8.onnx").write_bytes(b"x")
    assert int8_model(cfg) == str(tmp_path / "model.int8.onnx")
    argv = child_specs(cfg, tmp_path / "p.yaml", None)[0].argv
    assert argv[-2:] == ["--model-path", str(tmp_path / "model.int8.onnx")]
    off = make_config(models={"default": {"path": str(onnx)}}, edge={"int8": "off"})
    assert int8_model(off) is None
    # the shipped model's INT8 build (inspector quantize; its card says how it compares)
    shipped = make_config(models={"default": {"path": "builtin:defects-v1"}})
    assert int8_model(shipped) == str(BUILTIN_MODELS / "defects-v1" / "model.int8.onnx")


# ----------------------------------------------------------------- the real group


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())
    except OSError:
        return 0, {}


def _children(pid: int) -> dict[str, int]:
    """The edge's children by stage, from their command lines."""
    out = subprocess.run(
        ["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    found = {}
    for line in out.splitlines():
        child_pid, args = line.strip().split(" ", 1)
        for stage in ("ingest", "worker", "act"):
            if f"inspector {stage} " in args:
                found[stage] = int(child_pid)
    return found


@pytest.mark.integration
@pytest.mark.model
@pytest.mark.slow
def test_the_group_judges_frames_and_survives_a_killed_worker(
    make_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    from inspector.localstack import free_port
    from inspector.sim import SceneConfig, SimCameraFleet
    from tests.act.support import write_config
    from tests.detect.conftest import demo_plant, frame_mode_rules
    from tests.helpers import create_topics, read, wait_for

    fleet = SimCameraFleet(
        {"cam-1": SceneConfig(seed=32, width=640, height=360, clip_seconds=10, defect_rate=0.7)}
    )
    fleet.start()
    ports = {k: free_port() for k in ("edge", "ingest", "worker", "act")}
    cfg = make_config(
        lines=[
            {
                "id": "line-1",
                "cameras": [
                    {
                        "id": "cam-1",
                        "url": fleet.url("cam-1"),
                        "sample_fps": 5,
                        "width": 640,
                        "height": 360,
                    }
                ],
                "rules": frame_mode_rules(),
            }
        ],
        models=demo_plant()["models"],
        workflows=[{"kind": "divert", "name": "gate", "filter": {"verdicts": ["FAIL"]}}],
        observe={
            "ingest_port": ports["ingest"],
            "worker_port": ports["worker"],
            "act_port": ports["act"],
        },
        edge={"port": ports["edge"], "restart_backoff_s": 0.5, "hung_after_s": 10},
    )
    create_topics(cfg)
    path = write_config(cfg, tmp_path / "plant.yaml")
    logs = tmp_path / "logs"
    edge = subprocess.Popen(
        [sys.executable, "-m", "inspector", "edge", "--config", str(path), "--log-dir", str(logs)],
        stdout=(tmp_path / "edge.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _get(ports["edge"], "/readyz")[0] == 200, 120, "the group ready")
        _, body = _get(ports["edge"], "/readyz")
        assert body["checks"] == {"ingest": True, "worker": True, "act": True}
        assert len(read(cfg, [cfg.topics.verdicts], count=5, timeout_s=60)) == 5
        before = _children(edge.pid)
        assert set(before) == {"ingest", "worker", "act"}, before
        import os

        os.kill(before["worker"], signal.SIGKILL)
        wait_for(
            lambda: _children(edge.pid).get("worker") not in (None, before["worker"]),
            30,
            "a new worker process",
        )
        wait_for(lambda: _get(ports["edge"], "/readyz")[0] == 200, 120, "ready again")
        assert _children(edge.pid)["ingest"] == before["ingest"]  # the others untouched
        # verdicts flow again: the group's consumer group keeps going past the kill
        seen = {m.offset() for m in read(cfg, [cfg.topics.verdicts], count=40, timeout_s=90)}
        assert len(seen) == 40
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{ports['edge']}/metrics").read()
        assert b'inspector_edge_restarts_total{child="worker",reason="exited"} 1.0' in metrics
    finally:
        edge.send_signal(signal.SIGTERM)
        code = edge.wait(60)
        fleet.close()
    assert code == 0
    assert not _children(edge.pid)
    text = (tmp_path / "edge.log").read_text()
    assert "child down; restarting" in text and "edge stopped" in text


def test_parts_lines_use_the_int8_build_of_their_region_model_when_present(
    make_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    from inspector.config import InspectionSettings, int8_regions, use_int8_regions

    region = tmp_path / "region.onnx"
    region.write_bytes(b"x")
    cfg = make_config(edge={"stages": ["worker"]})
    parts = InspectionSettings(mode="parts", region_model=str(region))
    cfg.lines[0] = cfg.lines[0].model_copy(update={"inspection": parts})
    assert int8_regions(cfg) == {}
    assert "--int8-regions" not in child_specs(cfg, tmp_path / "p.yaml", None)[0].argv
    (tmp_path / "region.int8.onnx").write_bytes(b"x")
    line = cfg.lines[0].id
    assert int8_regions(cfg) == {line: str(tmp_path / "region.int8.onnx")}
    assert "--int8-regions" in child_specs(cfg, tmp_path / "p.yaml", None)[0].argv
    # the worker (--int8-regions) points the line at it; a frame-mode line is left alone
    assert use_int8_regions(cfg) == {line: str(tmp_path / "region.int8.onnx")}
    assert cfg.lines[0].inspection.region_model == str(tmp_path / "region.int8.onnx")
    assert int8_regions(cfg) == {}  # already the INT8 build
    frame = make_config(edge={"stages": ["worker"]})
    assert use_int8_regions(frame) == {}
    off = make_config(edge={"int8": "off"})
    off.lines[0] = off.lines[0].model_copy(update={"inspection": parts})
    assert int8_regions(off) == {}
