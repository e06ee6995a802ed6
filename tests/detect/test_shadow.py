"""Shadow on live frames: a candidate judges beside the production worker, writes only
shadow-verdicts, and the report says where the two disagree."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from inspector.config import PlantConfig
from inspector.events import VerdictEvent, decode
from inspector.inference.model import Detector, load_detector
from inspector.learn.shadow import agreement, build_shadow, in_share
from tests.detect.conftest import FramePublisher, detect_config
from tests.helpers import read, wait_for
from tests.learn.support import variant

pytestmark = pytest.mark.integration


def run_shadow(cfg: PlantConfig, det: Detector, expect: int) -> list[VerdictEvent]:
    judge, loop = build_shadow(cfg, det)
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: judge.stats.judged >= expect, 90, f"{expect} shadow verdicts")
    finally:
        loop.shutdown.request()
        t.join(30)
    msgs = read(cfg, [cfg.topics.shadow_verdicts], count=expect, timeout_s=30, quiet_s=2)
    return [decode(m.value(), m.headers(), VerdictEvent) for m in msgs]


def test_shadow_judges_its_share_and_the_report_finds_the_flips(
    make_config: Callable[..., PlantConfig],
    start_worker: Any,
    sim_frames: list[np.ndarray],
    tmp_path: Path,
) -> None:
    cfg = detect_config(make_config, learn={"shadow": {"share": 0.5}})
    pub = FramePublisher(cfg)
    sent = [pub.publish("cam-1" if i % 2 else "cam-2", img) for i, img in enumerate(sim_frames)]
    pub.flush()
    start_worker(cfg)
    prod_msgs = read(cfg, [cfg.topics.verdicts], count=len(sent), timeout_s=90)
    prod = [decode(m.value(), m.headers(), VerdictEvent) for m in prod_msgs]
    assert len(prod) == len(sent)

    sampled = {m.frame_id for m in sent if in_share(m.frame_id, 0.5)}
    assert 0 < len(sampled) < len(sent)
    # A candidate that sees the same things but calls every 'part' a 'scratch': each
    # frame with a part becomes a FAIL the production model would not give.
    names = {int(k): n for k, n in load_detector(cfg.model).info.names.items()}
    renamed = {k: ("scratch" if n == "part" else n) for k, n in names.items()}
    path = variant(tmp_path / "renamed", "renamed", names=renamed)
    cand = load_detector(cfg.model.model_copy(update={"path": str(path)}))
    shadow = run_shadow(cfg, cand, len(sampled))
    assert {v.frame_id for v in shadow} == sampled, "exactly the sampled frames, once each"
    assert all(v.model and v.model.sha256 == cand.info.sha256 for v in shadow)

    rep = agreement(prod, shadow).as_dict()
    trusted = [p for p in prod if p.frame_id in sampled and p.verdict != "FAULT"]
    assert rep["compared"] == len(trusted)
    assert rep["new_fails"] > 0 and rep["agreement"] < 1.0
    assert rep["by_class"]["scratch"]["new_fails"] == rep["new_fails"]
    flipped = {f["frame_id"] for f in rep["flips"]}
    assert all(
        p.verdict == "PASS"
        for p in prod
        if p.frame_id in flipped
        and any(f["frame_id"] == p.frame_id and f["shadow"] == "FAIL" for f in rep["flips"])
    )

    # the CLI report reads both topics and says the same
    conf = tmp_path / "plant.yaml"
    conf.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "inspector",
            "shadow",
            "report",
            "--config",
            str(conf),
            "--since",
            "1h",
            "--json",
            "--flips",
            "500",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    cli = json.loads(out.stdout)
    assert {k: cli[k] for k in ("compared", "agreement", "new_fails", "missed_fails")} == {
        k: rep[k] for k in ("compared", "agreement", "new_fails", "missed_fails")
    }
    assert {f["frame_id"] for f in cli["flips"]} == flipped
