"""Drift: is the line still what the model learned? Per camera and model version.

Each judged frame gives a handful of statistics: image brightness, contrast and
sharpness (variance of the Laplacian), detections per frame, box size, confidence, and
which classes were seen. Per camera, the first ``learn.drift.window`` frames judged by
a model version are its *reference*; the last ``window`` frames are the *current*
window. Every ``check_every`` frames each statistic's current window is compared with
the reference by the population stability index (PSI, deciles of the reference) and a
two-sample Kolmogorov-Smirnov test; the class mix by PSI over class shares. A statistic
drifts when PSI ≥ ``psi_threshold``, the KS p-value ≤ ``ks_pvalue`` *and* its mean moved
by at least ``min_shift`` (relative): PSI and KS alone flag the line's own slow
variation on short windows (measured on the simulator: PSI ~1 between two 13 s windows
of an unchanged line whose brightness moves by 5 %). It clears when PSI falls below half
the threshold. Raising and clearing are events with the statistic that moved (``drift``
topic), gauges ``inspector_drift_psi`` / ``inspector_drift_active``.

The reference is per worker process: a restart, a swap or a rebalance that moves a
camera to another worker starts a new one (documented; a reference stored at promotion
is not built).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from inspector.config import DriftSettings
from inspector.events import Detection

NUMERIC = ("brightness", "contrast", "sharpness", "detections", "box_area", "confidence")
CLASS_MIX = "class_mix"
EPS = 1e-4


@dataclass(frozen=True)
class FrameStats:
    numeric: dict[str, float]
    classes: tuple[str, ...]


def frame_stats(
    image: np.ndarray, dets: list[Detection], boxes_in: tuple[int, int] | None = None
) -> FrameStats:
    """Statistics of one judged frame (``image`` as decoded for inference, BGR).

    ``boxes_in`` is the (width, height) the detections' boxes are measured in when that
    is not ``image``'s own size (a full-resolution frame whose pixel statistics are taken
    on a reduced copy)."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    h, w = gray.shape[:2]
    if boxes_in is not None:
        w, h = boxes_in
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    areas = [
        max(0.0, (d.box.x2 - d.box.x1) * (d.box.y2 - d.box.y1)) / float(max(1, w * h)) for d in dets
    ]
    return FrameStats(
        numeric={
            "brightness": float(gray.mean()),
            "contrast": float(gray.std()),
            "sharpness": float(lap.var()),
            "detections": float(len(dets)),
            "box_area": float(np.median(areas)) if areas else 0.0,
            "confidence": float(np.mean([d.score for d in dets])) if dets else 0.0,
        },
        classes=tuple(d.cls for d in dets),
    )


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # a constant reference: any change of value is a full shift
        same = float(np.mean(current == reference[0]))
        ref_p = np.array([1.0 - EPS, EPS])
        cur_p = np.clip(np.array([same, 1.0 - same]), EPS, None)
        return float(np.sum((cur_p - ref_p) * np.log(cur_p / ref_p)))
    edges[0], edges[-1] = -np.inf, np.inf
    ref_p = np.clip(np.histogram(reference, edges)[0] / len(reference), EPS, None)
    cur_p = np.clip(np.histogram(current, edges)[0] / len(current), EPS, None)
    return float(np.sum((cur_p - ref_p) * np.log(cur_p / ref_p)))


def psi_categorical(reference: Counter[str], current: Counter[str]) -> float:
    keys = set(reference) | set(current)
    if not keys:
        return 0.0
    rt, ct = max(1, sum(reference.values())), max(1, sum(current.values()))
    total = 0.0
    for k in keys:
        r = max(EPS, reference[k] / rt)
        c = max(EPS, current[k] / ct)
        total += (c - r) * np.log(c / r)
    return float(total)


@dataclass(frozen=True)
class DriftChange:
    """A statistic crossing into (raised) or out of (cleared) drift."""

    state: Literal["raised", "cleared"]
    statistic: str
    psi: float
    ks_statistic: float | None
    ks_pvalue: float | None
    reference_mean: float | None
    current_mean: float | None


@dataclass
class CameraDrift:
    settings: DriftSettings
    reference: list[FrameStats] = field(default_factory=list)
    current: deque[FrameStats] = field(default_factory=deque)
    since_check: int = 0
    active: set[str] = field(default_factory=set)
    last_psi: dict[str, float] = field(default_factory=dict)

    def add(self, s: FrameStats) -> list[DriftChange]:
        n = self.settings.window
        if len(self.reference) < n:
            self.reference.append(s)
            return []
        self.current.append(s)
        if len(self.current) > n:
            self.current.popleft()
        self.since_check += 1
        if len(self.current) < n or self.since_check < self.settings.check_every:
            return []
        self.since_check = 0
        return self.check()

    def check(self) -> list[DriftChange]:
        from scipy.stats import ks_2samp  # type: ignore[import-untyped]

        changes: list[DriftChange] = []
        cfg = self.settings
        for name in NUMERIC:
            ref = np.array([f.numeric[name] for f in self.reference])
            cur = np.array([f.numeric[name] for f in self.current])
            value = psi(ref, cur)
            ks = ks_2samp(ref, cur)
            ks_stat, ks_p = float(ks.statistic), float(ks.pvalue)
            self.last_psi[name] = value
            ref_mean, cur_mean = float(ref.mean()), float(cur.mean())
            shift = abs(cur_mean - ref_mean) / max(abs(ref_mean), EPS)
            drifting = (
                value >= cfg.psi_threshold and ks_p <= cfg.ks_pvalue and shift >= cfg.min_shift
            )
            change = self._transition(name, drifting, value)
            if change:
                changes.append(
                    DriftChange(
                        change,
                        name,
                        round(value, 4),
                        round(ks_stat, 4),
                        ks_p,
                        round(float(ref.mean()), 4),
                        round(float(cur.mean()), 4),
                    )
                )
        ref_mix = Counter(c for f in self.reference for c in f.classes)
        cur_mix = Counter(c for f in self.current for c in f.classes)
        enough = min(sum(ref_mix.values()), sum(cur_mix.values())) >= cfg.class_mix_min_detections
        value = psi_categorical(ref_mix, cur_mix) if enough else 0.0
        self.last_psi[CLASS_MIX] = value
        change = self._transition(CLASS_MIX, value >= cfg.class_mix_psi, value)
        if change:
            changes.append(DriftChange(change, CLASS_MIX, round(value, 4), None, None, None, None))
        return changes

    def _transition(
        self, name: str, drifting: bool, value: float
    ) -> Literal["raised", "cleared"] | None:
        if drifting and name not in self.active:
            self.active.add(name)
            return "raised"
        if name in self.active and value < self.settings.psi_threshold / 2:
            self.active.discard(name)
            return "cleared"
        return None


class DriftMonitor:
    """One CameraDrift per (camera, model version); a new version starts a new reference."""

    def __init__(self, settings: DriftSettings) -> None:
        self.settings = settings
        self.cameras: dict[tuple[str, str], CameraDrift] = {}

    def add(self, camera_id: str, model_version: str, s: FrameStats) -> list[DriftChange]:
        key = (camera_id, model_version)
        cam = self.cameras.get(key)
        if cam is None:
            for old in [k for k in self.cameras if k[0] == camera_id]:
                del self.cameras[old]  # the previous version's windows are of no use now
            cam = self.cameras[key] = CameraDrift(self.settings)
        return cam.add(s)
