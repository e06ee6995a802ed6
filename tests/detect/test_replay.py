"""Replay: frames archived beyond Redis' TTL are judged again by another model, the
diff against production names the frames that flip, and frames that are gone are
counted and listed; the archive's retention by age and size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from inspector.config import ArchiveSettings, ModelSettings, PlantConfig
from inspector.events import VerdictEvent, decode
from inspector.inference.model import Detector, load_detector
from inspector.learn.archive import FrameArchive, build_archiver
from inspector.learn.replay import html_report, replay
from tests.detect.conftest import FramePublisher, demo_plant, detect_config
from tests.helpers import read, wait_for
from tests.learn.support import variant


def detector_settings() -> ModelSettings:
    return ModelSettings(device="cpu")  # what tests/detect/conftest.py's detector loads


@pytest.mark.integration
def test_replay_judges_archived_traffic_again_and_lists_flips_and_gone_frames(
    make_config: Callable[..., PlantConfig],
    start_worker: Any,
    detector: Detector,
    sim_frames: list[np.ndarray],
    tmp_path: Path,
) -> None:
    models = demo_plant()["models"]
    # the settings of the `detector` fixture the worker runs, so the CLI's replay below
    # loads its candidate exactly as the in-test one
    models["default"] = {
        **models["default"],
        "conf": detector_settings().conf,
        "iou": detector_settings().iou,
        "device": "cpu",
    }
    cfg = detect_config(
        make_config, models=models, learn={"archive": {"url": str(tmp_path / "frames")}}
    )
    archiver, aloop = build_archiver(cfg)
    at = threading.Thread(target=aloop.run, daemon=True)
    at.start()
    pub = FramePublisher(cfg)
    sent = [
        pub.publish("cam-1" if i % 2 else "cam-2", img) for i, img in enumerate(sim_frames[:30])
    ]
    pub.flush()
    start_worker(cfg)
    try:
        wait_for(lambda: archiver.stats.archived >= 30, 60, "30 frames archived")
    finally:
        aloop.shutdown.request()
        at.join(30)
    prod = [
        decode(m.value(), m.headers(), VerdictEvent)
        for m in read(cfg, [cfg.topics.verdicts], count=30, timeout_s=60)
    ]
    archive = FrameArchive(cfg.learn.archive)
    gone = [sent[3], sent[4]]
    for m in gone:  # retention took these two already
        os.remove(archive.path(m.camera_id, m.frame_id, m.captured_at))

    same = replay(cfg, detector, prod, archive)  # the worker's own model and settings
    assert sorted(same.gone) == sorted(m.frame_id for m in gone)
    d = same.as_dict()
    assert d["replayed"] == 28 and d["compared"] == sum(
        1 for p in prod if p.verdict != "FAULT" and p.frame_id not in same.gone
    )
    assert d["agreement"] >= 0.9, d  # the production model, judging the same frames again

    renamed = {k: ("scratch" if n == "part" else n) for k, n in detector.info.names.items()}
    path = variant(tmp_path / "renamed", "renamed", names=renamed)
    cand = load_detector(cfg.model.model_copy(update={"path": str(path)}))
    other = replay(cfg, cand, prod, archive)
    od = other.as_dict(max_flips=100)
    assert od["new_fails"] > 0 and od["agreement"] < d["agreement"]
    page = html_report(other, "replay test")
    assert page.count("<img") == 2 * len(od["flips"]) and "frames gone 2" in page

    conf = tmp_path / "plant.yaml"
    conf.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "inspector",
            "replay",
            "--config",
            str(conf),
            "--since",
            "1h",
            "--model",
            str(path),
            "--json",
            "--flips",
            "100",
            "--html",
            str(tmp_path / "r.html"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    cli = json.loads(out.stdout)
    assert cli["gone"] == 2 and cli["new_fails"] == od["new_fails"]
    assert {f["frame_id"] for f in cli["flips"]} == {f["frame_id"] for f in od["flips"]}
    assert (tmp_path / "r.html").read_text().count("<img") == 2 * len(od["flips"])


def test_archive_retention_by_age_then_size(tmp_path: Path) -> None:
    from inspector.events import FrameMeta

    arch = FrameArchive(ArchiveSettings(url=str(tmp_path / "a"), max_age_s=3600, max_bytes=1024**2))
    now = time.time()
    paths = []
    for i in range(6):
        meta = FrameMeta(
            frame_id=f"cam-1:r:{i}",
            camera_id="cam-1",
            line_id="l",
            run_id="r",
            seq=i,
            captured_at=now,
            ingested_at=now,
            width=8,
            height=8,
            storage="redis",
            claim_key=f"k{i}",
            size_bytes=600_000,
        )
        paths.append(arch.put(meta, bytes(600_000)))
        os.utime(paths[-1], (now - 7200 + i * 1000, now - 7200 + i * 1000))
    # files 0-3 are older than an hour (7200, 6200, 5200, 4200 s); the two left make
    # 1.2 MB > 1 MiB, so the older of them goes too
    res = arch.sweep(now)
    assert (res["age"], res["size"], res["files"]) == (4, 1, 1)
    assert [os.path.exists(p) for p in paths] == [False] * 5 + [True]
