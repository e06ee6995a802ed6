"""The anomaly channel's logic: threshold, crops, coreset, nearest neighbours, the bank on
disk, the simulator's opt-in novel defect, and a small fit that tells burns from good parts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from inspector.detect.anomaly import (
    AnomalyError,
    AnomalyModel,
    FeatureExtractor,
    greedy_coreset,
    nn_distance,
    threshold_for,
)
from inspector.sim import ConveyorScene, SceneConfig

MODEL = Path(__file__).resolve().parents[2] / "inspector" / "models" / "defects-v1" / "model.onnx"


def test_threshold_allows_at_most_the_false_alarm_rate() -> None:
    scores = np.arange(1, 201, dtype=float)[::-1]  # 200 good scores, unsorted
    t = threshold_for(scores, 0.01)
    assert t == 198.0 and (scores > t).sum() == 2  # 1 % of 200
    assert threshold_for(scores, 0.0) == 200.0  # nothing above
    assert (np.arange(1, 101) > threshold_for(np.arange(1, 101), 0.05)).sum() == 5
    # ties: never more alarms than allowed
    tied = [1.0] * 95 + [5.0] * 5
    assert (np.array(tied) > threshold_for(tied, 0.01)).sum() == 0
    with pytest.raises(AnomalyError):
        threshold_for([], 0.01)


def test_a_part_alarms_on_its_worst_crop_and_the_part_threshold_counts_parts() -> None:
    from inspector.detect.anomaly_fit import worst_per_part

    # 100 good parts seen in 5 frames each; in frame i part k scores 100 i + k
    parts = [(1, k) for k in range(100) for _ in range(5)]
    scores = [100.0 * i + k for k in range(100) for i in range(5)]
    worst = worst_per_part(scores, parts)
    assert sorted(worst) == [400.0 + k for k in range(100)]
    t = threshold_for(worst, 0.01)
    alarmed = {p for p, s in zip(parts, scores, strict=True) if s > t}
    assert alarmed == {(1, 99)}  # 1 % of the parts, however many crops each has
    # a threshold at 1 % of the crops lets 5 crops over: 5 different parts here (5 %)
    t_crop = threshold_for(scores, 0.01)
    assert len({p for p, s in zip(parts, scores, strict=True) if s > t_crop}) == 5


def test_coreset_covers_every_cluster_and_nn_distance_is_exact() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], np.float32)
    x = np.concatenate([c + rng.normal(0, 1, (500, 2)).astype(np.float32) for c in centres])
    picked = x[greedy_coreset(x, 4)]
    assert sorted({tuple(np.round(p / 100).astype(int)) for p in picked}) == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    q = rng.normal(0, 50, (37, 2)).astype(np.float32)
    brute = np.sqrt(((q[:, None] - x[None]) ** 2).sum(-1)).min(1)
    assert np.allclose(nn_distance(q, x, chunk=10), brute, atol=1e-2)


def test_bank_round_trip_and_refuses_another_detector(tmp_path: Path) -> None:
    fm = tmp_path / "model.onnx"
    fm.write_bytes(b"detector bytes")
    from inspector.inference.model import sha256_of

    bank = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    meta = {"feature_model": "model.onnx", "feature_model_sha256": sha256_of(fm)}
    AnomalyModel(bank, 3.25, dict(meta, crop_size=64, pad=0.1)).save(tmp_path)
    m = AnomalyModel.load(tmp_path)
    assert m.threshold == 3.25 and m.crop_size == 64 and m.meta["bank_size"] == 50
    assert np.allclose(m.bank, bank, atol=1e-2)  # stored as float16
    fm.write_bytes(b"another detector")
    with pytest.raises(AnomalyError, match="not the detector"):
        AnomalyModel.load(tmp_path)
    with pytest.raises(AnomalyError, match="cannot read"):
        AnomalyModel.load(tmp_path / "nowhere")


def test_feature_extractor_cuts_our_detector() -> None:
    ext = FeatureExtractor(MODEL)
    crops = [np.full((192, 192, 3), v, np.uint8) for v in (40, 200)]
    emb = ext.embed(crops)
    assert emb.shape == (2, 24 * 24, 64 + 128) and np.isfinite(emb).all()
    with pytest.raises(AnomalyError, match="cannot cut"):
        FeatureExtractor(MODEL, ("/model.99/nothing",))


def test_novel_defect_is_opt_in_and_moves_nothing_else() -> None:
    off = SceneConfig(seed=3, defect_rate=0.3)
    assert "novel_defect_rate" not in off.to_dict()  # cache keys and truth as before
    on = SceneConfig(seed=3, defect_rate=0.3, novel_defect_rate=1.0)
    a, b = ConveyorScene(off), ConveyorScene(on)
    assert a.novel_parts() == frozenset() and len(b.novel_parts()) == len(a._slots)
    assert [r.to_dict() for r in a.clip_truth().parts] == [
        r.to_dict() for r in b.clip_truth().parts
    ]
    i = next(i for i in range(a.n_frames) if any(p.fully_in_view for p in a.truth(i).parts))
    fa, ta = a.render(i)
    fb, tb = b.render(i)
    assert ta == tb  # unlabelled: the truth does not know the burn
    diff = np.argwhere((fa != fb).any(-1))
    assert len(diff) > 50  # the burn is drawn...
    boxes = [p.box for p in ta.parts]
    for y, x in diff[:: max(1, len(diff) // 200)]:  # ...and only on the parts
        assert any(x1 - 8 <= x < x2 + 8 and y1 - 8 <= y < y2 + 8 for x1, y1, x2, y2 in boxes)


def test_fit_and_evaluate_tell_burns_from_good_parts(tmp_path: Path) -> None:
    from inspector.cli import app

    shutil.copy(MODEL, tmp_path / "model.onnx")
    out = tmp_path / "bank"
    r = CliRunner().invoke(
        app,
        [
            "anomaly", "fit", "--model", str(tmp_path / "model.onnx"), "--out", str(out),
            "--fit-seeds", "7001", "--threshold-seeds", "7101", "--bank-size", "400",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "anomaly.json").read_text())
    assert meta["feature_model"] == "../model.onnx" and meta["bank_size"] == 400
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"name": "t"}))
    r = CliRunner().invoke(
        app,
        ["anomaly", "evaluate", "--model-dir", str(out), "--seeds", "7201", "--card", str(card)],
    )
    assert r.exit_code == 0, r.output
    rec = json.loads(card.read_text())["anomaly"]["held_out"]
    assert rec["novel_burn"]["parts"] > 0 and rec["good"]["parts"] > 0
    assert rec["novel_burn"]["part_rate"] > rec["false_alarm_rate_per_part"]
    for key in ("good", "novel_burn", "known_defects"):  # the detector alone, and either
        r = rec[key]
        assert max(r["part_rate"], r["detector_part_rate"]) <= r["either_part_rate"] <= 1
    assert "Unknown defects" in (tmp_path / "MODEL_CARD.md").read_text()
    r = CliRunner().invoke(app, ["anomaly", "evaluate", "--model-dir", str(out), "--seeds", "7001"])
    assert r.exit_code == 2 and "used to fit" in r.output
