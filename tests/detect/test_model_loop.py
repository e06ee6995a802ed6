"""The whole model loop on a tiny budget, on real servers: capture on a running line →
export → fine-tune the champion → register it as challenger → shadow → promote → the
worker swaps → rollback → the worker swaps back."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from inspector.config import PlantConfig
from inspector.dataset.exporters import export_capture
from inspector.detect.follow import registry_info
from inspector.detect.worker import build_worker, start_follower
from inspector.events import VerdictEvent, decode
from inspector.inference.model import load_detector
from inspector.learn.lifecycle import promote, register_model, retrain, rollback
from inspector.learn.shadow import agreement, build_shadow
from inspector.registry import Registry
from tests.detect.conftest import FramePublisher, demo_plant, detect_config
from tests.helpers import read, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_capture_export_finetune_register_shadow_promote_swap_rollback(
    make_config: Callable[..., PlantConfig], tmp_path: Path, sim_frames: list[np.ndarray]
) -> None:
    models = demo_plant()["models"]
    models["default"] = {
        **models["default"],
        "path": "models:/inspector-detector@champion",
        "device": "cpu",
    }
    cfg = detect_config(
        make_config,
        models=models,
        learn={
            "data_dir": str(tmp_path / "learn"),
            "follow": {"recheck_s": 3600},
            "drift": {"enabled": False},
            "shadow": {"share": 1.0, "group_id": "loop-shadow"},
            "capture": {
                "enabled": True,
                "dir": str(tmp_path / "capture"),
                "near_threshold_margin": 1.0,
                "near_threshold_per_hour": 12,
                "random_rate": 0.0,
            },
        },
    )
    reg = Registry(cfg.learn)
    v1 = register_model(cfg, reg, "builtin:defects-v1")
    promote(cfg, reg, v1.version)

    worker, loop = build_worker(cfg)
    follower = start_follower(cfg, worker, loop.shutdown)
    assert follower is not None
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    pub = FramePublisher(cfg)
    try:
        for i, img in enumerate(sim_frames[:24]):
            pub.publish("cam-1" if i % 2 else "cam-2", img)
        pub.flush()
        wait_for(lambda: loop.stats.records >= 24, 90, "the first 24 verdicts")

        # capture → export: the labelling batch, with a held-out split
        summary = export_capture(
            tmp_path / "capture", "yolo", tmp_path / "export", val_fraction=0.25
        )
        assert summary["images"] == 12 and summary["boxes"] > 0

        # fine-tune the champion on it (one epoch: this checks the loop, not the model)
        v2, before = retrain(
            cfg,
            reg,
            "champion",
            tmp_path / "export" / "data.yaml",
            tmp_path / "v2",
            epochs=1,
            batch=4,
        )
        assert before is None and reg.by_alias("challenger").version == v2.version == "2"
        assert v2.data_sha256 and v2.sha256 != v1.sha256 and "mAP50" in v2.metrics
        assert v2.classes == v1.classes

        # shadow the challenger over the same frames
        det2 = registry_info(
            load_detector(cfg.model.model_copy(update={"path": str(reg.fetch(v2))})), v2
        )
        judge, sloop = build_shadow(cfg, det2)
        st = threading.Thread(target=sloop.run, daemon=True)
        st.start()
        try:
            wait_for(lambda: judge.stats.judged >= 24, 90, "the shadow's 24 verdicts")
        finally:
            sloop.shutdown.request()
            st.join(30)
        prod = [
            decode(m.value(), m.headers(), VerdictEvent)
            for m in read(cfg, [cfg.topics.verdicts], count=24, timeout_s=30)
        ]
        shadow = [
            decode(m.value(), m.headers(), VerdictEvent)
            for m in read(cfg, [cfg.topics.shadow_verdicts], count=24, timeout_s=30)
        ]
        rep = agreement(prod, shadow).as_dict()
        assert rep["compared"] == sum(1 for p in prod if p.verdict != "FAULT")
        assert rep["model"] == "inspector-detector/2"

        # promote → the running worker swaps (before its next batch); rollback → back
        sent: dict[int, list[str]] = {}

        def frames(lo: int, hi: int) -> None:
            n = loop.stats.records
            sent[lo] = [
                pub.publish("cam-1" if i % 2 else "cam-2", img).frame_id
                for i, img in enumerate(sim_frames[lo:hi])
            ]
            pub.flush()
            wait_for(lambda: loop.stats.records >= n + hi - lo, 60, f"frames {lo}-{hi}")

        promote(cfg, reg, v2.version)
        wait_for(lambda: follower.running.version == "2", 60, "the fine-tune checked and staged")
        frames(24, 28)
        assert worker.model_ref.version == "2"
        rollback(cfg, reg)
        wait_for(lambda: follower.running.version == "1", 60, "version 1 staged again")
        frames(28, 36)
        assert worker.model_ref.version == "1"
    finally:
        loop.shutdown.request()
        runner.join(30)
        follower.join(10)
    judged = [
        decode(m.value(), m.headers(), VerdictEvent)
        for m in read(cfg, [cfg.topics.verdicts], count=36, timeout_s=30)
    ]
    by_frame = {v.frame_id: v for v in judged}
    assert len(judged) == len(by_frame) == 36, "every frame judged once through both swaps"

    def versions(ids: list[str]) -> set[str]:
        return {m.version for f in ids if (m := by_frame[f].model) is not None}

    assert versions(sent[24]) == {"2"}, "judged by the fine-tune after the promotion"
    assert versions(sent[28]) == {"1"}, "judged by version 1 after the rollback"
