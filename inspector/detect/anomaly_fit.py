"""Fitting and measuring the anomaly channel on the simulated line (``inspector anomaly``).

Fit: crops of fully-in-view parts from defect-free scenes (fit seeds) make the bank; crops
from other defect-free seeds (threshold seeds) set the threshold at the target false-alarm
rate. Evaluate, on seeds distinct from both: the false-alarm rate on good parts, the recall
on parts carrying the novel defect (a burn the detector never saw, opt-in in the simulator)
and on parts carrying the known defect classes, per crop (one part in one frame) and per
part (any of its crops over the threshold).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspector.detect.anomaly import (
    DEFAULT_LAYERS,
    AnomalyModel,
    FeatureExtractor,
    fit_bank,
    threshold_for,
)
from inspector.detect.crops import crop_part
from inspector.events import Finding
from inspector.inference.model import sha256_of
from inspector.sim import ConveyorScene, SceneConfig
from inspector.sim.truth import GENERATOR_VERSION


@dataclass(frozen=True)
class Crop:
    image: np.ndarray
    seed: int
    part_id: int
    label: str  # good | known | novel
    detector: bool | None = None  # the detector + line rules fail this part in this frame


def sim_crops(
    seeds: list[int],
    *,
    defect_rate: float = 0.0,
    novel_defect_rate: float = 0.0,
    size: int,
    pad: float,
    every: int = 4,
    clip_seconds: float = 20.0,
    jpeg_quality: int | None = 85,
    judge: Callable[[np.ndarray], list[Finding]] | None = None,
) -> list[Crop]:
    """Crops of every fully-in-view part, every ``every``-th frame it is fully in view; each
    frame first goes through JPEG at ``jpeg_quality`` as ingest sends it (None: raw)."""
    out: list[Crop] = []
    for seed in seeds:
        scene = ConveyorScene(
            SceneConfig(
                seed=seed,
                defect_rate=defect_rate,
                novel_defect_rate=novel_defect_rate,
                clip_seconds=clip_seconds,
            )
        )
        novel = scene.novel_parts()
        seen: dict[int, int] = {}
        for i in range(scene.n_frames):
            full = [p for p in scene.truth(i).parts if p.fully_in_view]
            due = [p for p in full if seen.get(p.part_id, -1) < 0 or (i - seen[p.part_id]) >= every]
            if not due:
                continue
            frame, _ = scene.render(i)
            if jpeg_quality is not None:
                _, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
                frame = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), np.uint8)
            findings = judge(frame) if judge is not None else None
            for p in due:
                seen[p.part_id] = i
                crop, _ = crop_part(frame, p.box, size, pad)
                label = "novel" if p.part_id in novel else ("known" if p.defective else "good")
                hit = None if findings is None else any(_overlaps(f, p.box) for f in findings)
                out.append(Crop(crop, seed, p.part_id, label, hit))
    return out


def fit(
    model_path: Path,
    *,
    fit_seeds: list[int],
    threshold_seeds: list[int],
    bank_size: int = 3000,
    false_alarm_rate: float = 0.01,
    size: int = 192,
    pad: float = 0.08,
    per_crop: int = 160,
    pool: int = 30000,
    per: str = "part",
) -> AnomalyModel:
    """``per``: the false-alarm rate is per ``part`` (a good part alarms when any of its
    crops, one per frame it is seen in, is over: what sends a part to review) or per
    ``crop`` (one part in one frame)."""
    if per not in ("part", "crop"):
        raise ValueError(f"per must be part or crop, not {per!r}")
    t0 = time.monotonic()
    ext = FeatureExtractor(model_path, DEFAULT_LAYERS)
    rng = np.random.default_rng(0)
    sampled: list[np.ndarray] = []
    n_crops, parts = 0, set()
    for seed in fit_seeds:  # one seed at a time: the crops and their patches stay small
        good = sim_crops([seed], size=size, pad=pad)
        n_crops += len(good)
        parts |= {(c.seed, c.part_id) for c in good}
        for s in range(0, len(good), 16):
            emb = ext.embed([c.image for c in good[s : s + 16]])
            for e in emb:  # a random share of each crop's patches (the coreset's pool)
                sampled.append(e[rng.choice(len(e), min(len(e), per_crop), replace=False)])
    bank = fit_bank(np.concatenate(sampled), bank_size, pool=pool)
    model = AnomalyModel(bank=bank, threshold=0.0)
    held = sim_crops(threshold_seeds, size=size, pad=pad)
    held_scores = model.scores(ext, [c.image for c in held])
    if per == "part":
        worst = worst_per_part(held_scores, [(c.seed, c.part_id) for c in held])
        model.threshold = threshold_for(worst, false_alarm_rate)
    else:
        model.threshold = threshold_for(held_scores, false_alarm_rate)
    held_parts = len({(c.seed, c.part_id) for c in held})
    model.meta = {
        "method": "patchcore-style: coreset of detector backbone patches, max NN distance",
        "feature_model": model_path.name,
        "feature_model_sha256": sha256_of(model_path),
        "layers": list(DEFAULT_LAYERS),
        "crop_size": size,
        "pad": pad,
        "generator_version": GENERATOR_VERSION,
        "jpeg_quality": 85,
        "fit_seeds": fit_seeds,
        "fit_crops": n_crops,
        "fit_parts": len(parts),
        "threshold_seeds": threshold_seeds,
        "threshold_crops": len(held),
        "threshold_parts": held_parts,
        "false_alarm_rate_target": false_alarm_rate,
        "false_alarm_rate_per": per,
        "fit_s": round(time.monotonic() - t0, 1),
    }
    return model


def worst_per_part(scores: list[float], parts: list[tuple[int, int]]) -> list[float]:
    """Each part's highest crop score (a part alarms when any of its crops is over)."""
    worst: dict[tuple[int, int], float] = {}
    for sc, key in zip(scores, parts, strict=True):
        worst[key] = max(worst.get(key, sc), sc)
    return list(worst.values())


def _overlaps(f: Finding, box: tuple[int, int, int, int]) -> bool:
    """A finding on this part: its box overlaps the part's (a box-less finding, e.g. a
    missing feature of the frame, counts for every part)."""
    b = f.box
    return b is None or (b.x1 < box[2] and b.x2 > box[0] and b.y1 < box[3] and b.y2 > box[1])


def _rates(scores: list[float], crops: list[Crop], label: str, thr: float) -> dict[str, Any]:
    sel = [(s, c) for s, c in zip(scores, crops, strict=True) if c.label == label]
    parts: dict[tuple[int, int], bool] = {}
    det: dict[tuple[int, int], bool] = {}
    for s, c in sel:
        parts[(c.seed, c.part_id)] = parts.get((c.seed, c.part_id), False) or s > thr
        det[(c.seed, c.part_id)] = det.get((c.seed, c.part_id), False) or bool(c.detector)
    extra: dict[str, Any] = {}
    if sel and all(c.detector is not None for _, c in sel):
        # the detector with the line's rules alone, and either channel, per part
        extra["detector_part_rate"] = round(sum(det.values()) / len(det), 4)
        extra["either_part_rate"] = round(sum(parts[k] or det[k] for k in parts) / len(parts), 4)
    return {
        "crops": len(sel),
        "crop_rate": round(sum(s > thr for s, _ in sel) / len(sel), 4) if sel else None,
        "parts": len(parts),
        "part_rate": round(sum(parts.values()) / len(parts), 4) if parts else None,
        **extra,
    }


def evaluate(
    model: AnomalyModel,
    ext: FeatureExtractor,
    seeds: list[int],
    judge: Callable[[np.ndarray], list[Finding]] | None = None,
) -> dict[str, Any]:
    """Held-out figures at the model's threshold: alarm rate on good parts, recall on novel
    (burn) and known-defect parts. Two scenes per seed: good + burns, and known defects.
    With ``judge`` (a frame → the detector's failing findings under a line's rules), each
    also says what share of parts the detector alone fails, and either channel."""
    t0 = time.monotonic()
    size, pad = model.crop_size, model.pad
    mixed = sim_crops(seeds, novel_defect_rate=0.5, size=size, pad=pad, judge=judge)
    known = [
        c
        for c in sim_crops(seeds, defect_rate=1.0, size=size, pad=pad, judge=judge)
        if c.label == "known"
    ]
    crops = mixed + known
    scores = model.scores(ext, [c.image for c in crops])
    thr = model.threshold
    good = _rates(scores, crops, "good", thr)
    return {
        "threshold": round(thr, 4),
        "seeds": seeds,
        "false_alarm_rate_per_crop": good["crop_rate"],
        "false_alarm_rate_per_part": good["part_rate"],
        "good": good,
        "novel_burn": _rates(scores, crops, "novel", thr),
        "known_defects": _rates(scores, crops, "known", thr),
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
