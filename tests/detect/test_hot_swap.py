"""Hot swap on a running worker: the champion alias moves in the registry (MLflow,
embedded store), the worker swaps between batches with no frame lost or judged twice,
refuses a version that fails its check, and follows a rollback."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inspector.config import PlantConfig
from inspector.detect.worker import build_worker, start_follower
from inspector.events import ModelEvent, VerdictEvent, decode
from inspector.learn.lifecycle import promote, register_model, rollback
from inspector.registry import Registry
from tests.detect.conftest import FramePublisher, demo_plant, detect_config
from tests.helpers import partition_offset, read, wait_for
from tests.learn.support import variant

pytestmark = pytest.mark.integration


def swap_config(make_config: Callable[..., PlantConfig], tmp_path: Path) -> PlantConfig:
    models = demo_plant()["models"]
    models["default"] = {
        **models["default"],
        "path": "models:/inspector-detector@champion",
        "device": "cpu",
    }
    # recheck_s is long: the swaps below can only come from model-events
    return detect_config(
        make_config,
        models=models,
        learn={"data_dir": str(tmp_path / "learn"), "follow": {"recheck_s": 3600}},
    )


def worker_events(cfg: PlantConfig) -> list[ModelEvent]:
    msgs = read(cfg, [cfg.topics.model_events], timeout_s=5, quiet_s=1)
    return [e for e in (decode(m.value(), m.headers(), ModelEvent) for m in msgs) if e.worker]


def test_champion_moves_worker_swaps_refuses_a_bad_version_and_follows_rollback(
    make_config: Callable[..., PlantConfig], tmp_path: Path, sim_frames: list[np.ndarray]
) -> None:
    cfg = swap_config(make_config, tmp_path)
    reg = Registry(cfg.learn)
    v1 = register_model(cfg, reg, "builtin:defects-v1")
    promote(cfg, reg, v1.version)
    v2 = register_model(cfg, reg, str(variant(tmp_path / "v2", "v2")))
    classes = dict(enumerate(v1.classes))
    renamed = {k: f"other-{v}" for k, v in classes.items()}
    v3 = register_model(cfg, reg, str(variant(tmp_path / "v3", "v3", names=renamed)))

    worker, loop = build_worker(cfg)
    assert worker.model_ref.version == "1" and worker.model_ref.sha256 == v1.sha256
    follower = start_follower(cfg, worker, loop.shutdown)
    assert follower is not None
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    pub = FramePublisher(cfg)
    sent: list[str] = []
    stop = threading.Event()

    def stream() -> None:  # a live line: frames keep coming through every swap
        i = 0
        while not stop.is_set():
            cam = "cam-1" if i % 2 else "cam-2"
            sent.append(pub.publish(cam, sim_frames[i % len(sim_frames)]).frame_id)
            pub.flush()
            i += 1
            time.sleep(0.05)

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        wait_for(lambda: loop.stats.records >= 10, 60, "verdicts on version 1")
        promote(cfg, reg, v2.version)
        wait_for(lambda: worker.model_ref.version == "2", 60, "the swap to version 2")
        n = loop.stats.records
        wait_for(lambda: loop.stats.records >= n + 10, 60, "verdicts on version 2")

        promote(cfg, reg, v3.version)  # other class names: must be refused
        wait_for(lambda: any(e.kind == "refused" for e in worker_events(cfg)), 60, "a refusal")
        n = loop.stats.records
        wait_for(lambda: loop.stats.records >= n + 10, 60, "verdicts after the refusal")
        assert worker.model_ref.version == "2", "a refused version must not be swapped in"

        assert rollback(cfg, reg) == ("3", "2")  # back to what the worker already runs
        assert rollback(cfg, reg) == ("2", "1")
        wait_for(lambda: worker.model_ref.version == "1", 60, "the swap back to version 1")
        n = loop.stats.records
        wait_for(lambda: loop.stats.records >= n + 10, 60, "verdicts after the rollback")
    finally:
        stop.set()
        streamer.join(10)
        pub.flush()
    try:
        wait_for(lambda: loop.stats.records >= len(sent), 60, "a verdict for every frame")
    finally:
        loop.shutdown.request()
        runner.join(30)
        follower.join(10)

    msgs = read(cfg, [cfg.topics.verdicts], count=len(sent), timeout_s=30, quiet_s=2)
    verdicts = [(*partition_offset(m), decode(m.value(), m.headers(), VerdictEvent)) for m in msgs]
    frames = [v.frame_id for _p, _o, v in verdicts]
    assert sorted(frames) == sorted(sent), "every frame judged exactly once across the swaps"
    # Per partition, in log order, the versions run 1… 2… 1… with no interleaving: the
    # swap happens between batches, never inside one.
    runs: dict[int, list[str]] = defaultdict(list)
    for p, _o, v in sorted(verdicts, key=lambda t: (t[0], t[1])):
        assert v.model is not None
        if not runs[p] or runs[p][-1] != v.model.version:
            runs[p].append(v.model.version)
    seen = {tuple(r) for r in runs.values()}
    assert all(r in {("1", "2", "1"), ("2", "1"), ("1", "2"), ("1",), ("2",)} for r in seen), seen
    assert any("2" in r for r in seen) and any(r[-1] == "1" for r in seen)
    assert {v.model.sha256 for _p, _o, v in verdicts if v.model} == {v1.sha256, v2.sha256}

    answers = [(e.kind, e.version) for e in worker_events(cfg)]
    assert answers == [("swapped", "2"), ("refused", "3"), ("swapped", "1")], answers
    refusal = next(e for e in worker_events(cfg) if e.kind == "refused")
    assert "classes missing" in refusal.reason and refusal.previous_version == "2"


def test_worker_with_an_unreachable_registry_exits_1_naming_it(
    make_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    import subprocess
    import sys

    import yaml

    from inspector.localstack import free_port

    port = free_port()
    models: dict[str, Any] = demo_plant()["models"]
    models["default"] = {**models["default"], "path": "models:/inspector-detector@champion"}
    cfg = detect_config(
        make_config,
        models=models,
        learn={"registry": {"uri": f"http://127.0.0.1:{port}", "timeout_s": 2}},
    )
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    out = subprocess.run(
        [sys.executable, "-m", "inspector", "worker", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 1, out.stderr[-2000:]
    assert f"127.0.0.1:{port}" in out.stderr and "unavailable" in out.stderr
