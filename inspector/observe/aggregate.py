"""An in-memory picture of the plant built from its event topics.

Fed by ``TopicReader`` records (verdicts, defects, actions, camera-status,
line-commands); read by ``inspector status`` (one pass over today) and by the
dashboard (continuously). Memory is bounded: counters, fixed-size rings for
latencies, galleries and recent verdicts, a bounded set of ids for de-duplication.

Counts are of *distinct* verdict ids: a worker that redelivers after a crash emits
the same deterministic id again, and a QA counter must not count that part twice.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from inspector.config import PlantConfig
from inspector.events import (
    ActionEvent,
    CameraStatusEvent,
    DefectEvent,
    DriftEvent,
    LineCommand,
    Payload,
    VerdictEvent,
)
from inspector.observe.feed import Record

VERDICTS = ("PASS", "FAIL", "FAULT")
SEVERITY_RANK = {"minor": 1, "major": 2, "critical": 3}
RATE_WINDOW_S = 30.0
MIN_RATE_SPAN_S = 2.0


def yield_pct(counts: dict[str, int]) -> float | None:
    """PASS share of judged parts. FAULTs (camera or system trouble) judge nothing, so
    they are left out rather than counted as bad parts."""
    judged = counts["PASS"] + counts["FAIL"]
    return round(100.0 * counts["PASS"] / judged, 2) if judged else None


class BoundedSet:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, None] = OrderedDict()

    def add(self, item: str) -> bool:
        """True if new."""
        if item in self._items:
            return False
        self._items[item] = None
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return True


@dataclass
class CameraView:
    id: str
    line_id: str
    state: str = "unknown"
    state_since: float | None = None
    reason: str = ""
    reported_fps: float = 0.0
    frames_ingested: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    stalls: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    last_verdict_at: float | None = None
    first_verdict_at: float | None = None
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=2000))

    def judged_fps(self, now: float) -> float:
        """Verdicts per second over the last RATE_WINDOW_S (what the pipeline keeps up with).

        A camera seen for less than the window is rated over the time it has been seen
        (at least MIN_RATE_SPAN_S), so a fresh camera does not read as a fraction of its
        real rate for the first half minute."""
        n = sum(1 for t in self.recent if now - t <= RATE_WINDOW_S)
        if n == 0 or self.first_verdict_at is None:
            return 0.0
        span = min(RATE_WINDOW_S, max(MIN_RATE_SPAN_S, now - self.first_verdict_at))
        return round(n / span, 2)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "state_since": self.state_since,
            "reason": self.reason,
            "reported_fps": round(self.reported_fps, 2),
            "judged_fps": self.judged_fps(now),
            "frames_ingested": self.frames_ingested,
            "frames_dropped": self.frames_dropped,
            "reconnects": self.reconnects,
            "stalls": self.stalls,
            "counts": dict(self.counts),
            "yield": yield_pct(self.counts),
            "last_verdict_at": self.last_verdict_at,
        }


UNKNOWN_SOURCES = 64  # distinct (line, camera) pairs not in the config that are shown


@dataclass
class UnknownSources:
    """Events from lines or cameras the plant config does not list (another plant sharing
    the topics, a renamed camera, a forged record): counted and shown apart as "unknown
    source", never as a plant line. Bounded: past UNKNOWN_SOURCES pairs only counted."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    sources: OrderedDict[tuple[str, str], CameraView] = field(default_factory=OrderedDict)
    events: int = 0
    overflow: int = 0

    def source(self, line_id: str, camera_id: str) -> CameraView | None:
        self.events += 1
        key = (line_id, camera_id)
        cam = self.sources.get(key)
        if cam is None:
            if len(self.sources) >= UNKNOWN_SOURCES:
                self.overflow += 1
                return None
            cam = self.sources[key] = CameraView(camera_id, line_id)
        return cam

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "label": "unknown source",
            "events": self.events,
            "counts": dict(self.counts),
            "sources": [
                {**cam.to_json(now), "line_id": cam.line_id} for cam in self.sources.values()
            ],
            "not_listed": self.overflow,
        }


@dataclass
class LineView:
    id: str
    name: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    cameras: dict[str, CameraView] = field(default_factory=dict)
    latencies: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=120))
    gallery: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    defects: Counter[str] = field(default_factory=Counter)
    episodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # stopped
    manual: dict[str, dict[str, Any]] = field(default_factory=dict)  # manual inspection
    model: str | None = None  # name/version that judged the line's latest verdict
    drift: dict[str, dict[str, Any]] = field(default_factory=dict)  # camera:statistic → alarm
    shadow: dict[str, Any] = field(
        default_factory=lambda: {
            "model": None,
            "compared": 0,
            "agreed": 0,
            "new_fails": 0,
            "missed_fails": 0,
        }
    )
    model_at: float = 0.0

    def camera(self, camera_id: str) -> CameraView:
        cam = self.cameras.get(camera_id)
        if cam is None:
            cam = self.cameras[camera_id] = CameraView(camera_id, self.id)
        return cam


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def gallery_item(v: VerdictEvent) -> dict[str, Any]:
    worst = max((SEVERITY_RANK[f.severity] for f in v.findings), default=0)
    return {
        "verdict_id": v.verdict_id,
        "camera_id": v.camera_id,
        "line_id": v.line_id,
        "seq": v.seq,
        "part_id": v.part_id,
        "at": v.timings.emitted_at,
        "rule": v.rule,
        "classes": sorted({f.cls for f in v.findings}),
        "severity": {0: None, 1: "minor", 2: "major", 3: "critical"}[worst],
        "has_evidence": bool(v.evidence_key or v.annotated_key),
    }


SEEN_WINDOW = 20_000
PAIR_WINDOW = 5_000  # verdict ids kept for pairing shadow and production verdicts (at most)


def _bounded_put(d: OrderedDict[str, Any], key: str, value: Any, size: int) -> None:
    d[key] = value
    if len(d) > size:
        d.popitem(last=False)


def _shadow_json(sv: dict[str, Any]) -> dict[str, Any] | None:
    if sv["model"] is None:
        return None
    n = sv["compared"]
    return {**sv, "agreement": round(sv["agreed"] / n, 4) if n else None}


class PlantView:
    def __init__(
        self,
        cfg: PlantConfig,
        *,
        since: float | None = None,
        recent_verdicts: int = 300,
        seen_window: int = SEEN_WINDOW,
    ) -> None:
        self.cfg = cfg
        self.since = since
        self.lock = threading.Lock()
        self.version = 0  # bumped on every change; the dashboard streams when it moves
        self.lines: dict[str, LineView] = {}
        self.unknown = UnknownSources()
        # the only (line, camera) pairs shown as plant lines: the configured ones
        self._sources = {(ln.id, cam.id) for ln in cfg.lines for cam in ln.cameras}
        for ln in cfg.lines:
            lv = self.lines[ln.id] = LineView(ln.id, ln.name or ln.id)
            for cam in ln.cameras:
                lv.camera(cam.id)
        self.actions: deque[dict[str, Any]] = deque(maxlen=30)
        self.action_counts: Counter[tuple[str, str]] = Counter()
        self.events_seen: Counter[str] = Counter()
        # Memory is bounded by what the views show, not by the traffic: duplicates (a
        # redelivered verdict) follow their original closely on the same partition, so
        # a window of recent ids dedups them; full verdicts are kept only for the
        # gallery and a short recent window — older details come from Redis' index.
        self._seen = BoundedSet(seen_window)
        self._verdicts: OrderedDict[str, VerdictEvent] = OrderedDict()
        self._shown: dict[str, VerdictEvent] = {}  # gallery entries stay clickable
        self._recent_size = recent_verdicts
        # Shadow agreement: production's and the shadow's verdict per verdict id, paired
        # whichever arrives second; both maps bounded (oldest dropped, unpaired).
        self._prod_outcome: OrderedDict[str, str] = OrderedDict()
        self._shadow_pending: OrderedDict[str, VerdictEvent] = OrderedDict()
        self._pair_size = min(PAIR_WINDOW, seen_window)

    def known(self, line_id: str, camera_id: str) -> bool:
        return (line_id, camera_id) in self._sources

    # ------------------------------------------------------------------ feeding

    def apply(self, rec: Record) -> None:
        self.apply_event(rec.kind, rec.event)

    def apply_event(self, kind: str, ev: Payload) -> None:
        with self.lock:
            changed = False
            if kind == "shadow-verdicts":  # a candidate's opinion, never the line's counts
                if isinstance(ev, VerdictEvent):
                    changed = self._shadow(ev)
            elif isinstance(ev, DriftEvent):
                changed = self._drift(ev)
            elif isinstance(ev, VerdictEvent):
                changed = self._verdict(ev)
            elif isinstance(ev, CameraStatusEvent):
                changed = self._camera_status(ev)
            elif isinstance(ev, LineCommand):
                changed = self._line_command(ev)
            elif isinstance(ev, ActionEvent):
                changed = self._action(ev)
            elif isinstance(ev, DefectEvent):
                changed = self._seen.add(f"defect:{ev.defect_id}")
            if changed:
                self.events_seen[kind] += 1
                self.version += 1

    def _verdict(self, v: VerdictEvent) -> bool:
        if not self._seen.add(f"verdict:{v.verdict_id}"):
            return False
        self._remember(v)
        if not self.known(v.line_id, v.camera_id):
            self.unknown.counts[v.verdict] += 1
            src = self.unknown.source(v.line_id, v.camera_id)
            if src is not None:
                src.counts[v.verdict] += 1
                at = v.timings.emitted_at
                src.last_verdict_at = max(src.last_verdict_at or 0.0, at)
                src.first_verdict_at = min(src.first_verdict_at or at, at)
                src.recent.append(at)
            return True
        lv = self.lines[v.line_id]
        cam = lv.camera(v.camera_id)
        lv.counts[v.verdict] += 1
        cam.counts[v.verdict] += 1
        at = v.timings.emitted_at
        cam.last_verdict_at = max(cam.last_verdict_at or 0.0, at)
        cam.first_verdict_at = min(cam.first_verdict_at or at, at)
        cam.recent.append(at)
        lv.latencies.append((at, max(0.0, at - v.timings.captured_at)))
        if v.model is not None and at >= lv.model_at:
            lv.model, lv.model_at = f"{v.model.name}/{v.model.version}", at
        if v.verdict == "FAIL":
            lv.gallery.appendleft(v.verdict_id)
            for f in v.findings:
                lv.defects[f.cls] += 1
            on_show = {vid for x in self.lines.values() for vid in x.gallery}
            self._shown[v.verdict_id] = v
            for vid in [k for k in self._shown if k not in on_show]:
                del self._shown[vid]
        return True

    def _drift(self, ev: DriftEvent) -> bool:
        if not self._seen.add(f"drift:{ev.event_id()}") or ev.line_id not in self.lines:
            return False
        lv = self.lines[ev.line_id]
        key = f"{ev.camera_id}:{ev.statistic}"
        if ev.state == "raised":
            lv.drift[key] = {
                "camera_id": ev.camera_id,
                "statistic": ev.statistic,
                "psi": ev.psi,
                "reference_mean": ev.reference_mean,
                "current_mean": ev.current_mean,
                "model": f"{ev.model.name}/{ev.model.version}",
                "since": ev.at,
            }
        else:
            lv.drift.pop(key, None)
        return True

    def _shadow(self, s: VerdictEvent) -> bool:
        if not self._seen.add(f"shadow:{s.verdict_id}") or s.line_id not in self.lines:
            return False
        prod = self._prod_outcome.get(s.verdict_id)
        if prod is None:
            _bounded_put(self._shadow_pending, s.verdict_id, s, self._pair_size)
        else:
            self._pair(prod, s)
        return True

    def _pair(self, prod: str, s: VerdictEvent) -> None:
        sv = self.lines[s.line_id].shadow
        if s.model is not None:
            sv["model"] = f"{s.model.name}/{s.model.version}"
        if prod == "FAULT":
            return  # production could not trust the frame: nothing to compare
        sv["compared"] += 1
        sv["agreed"] += prod == s.verdict
        sv["new_fails"] += s.verdict == "FAIL" and prod != "FAIL"
        sv["missed_fails"] += prod == "FAIL" and s.verdict != "FAIL"

    def _remember(self, v: VerdictEvent) -> None:
        _bounded_put(self._prod_outcome, v.verdict_id, v.verdict, self._pair_size)
        pending = self._shadow_pending.pop(v.verdict_id, None)
        if pending is not None and pending.line_id in self.lines:
            self._pair(v.verdict, pending)
        self._verdicts[v.verdict_id] = v
        if len(self._verdicts) > self._recent_size:
            self._verdicts.popitem(last=False)

    def _camera_status(self, ev: CameraStatusEvent) -> bool:
        found = (
            self.lines[ev.line_id].camera(ev.camera_id)
            if self.known(ev.line_id, ev.camera_id)
            else self.unknown.source(ev.line_id, ev.camera_id)
        )
        if found is None:
            return True
        cam = found
        if cam.state_since is not None and ev.at < cam.state_since:
            return False  # an older transition arriving late (another partition)
        cam.state = ev.state
        cam.state_since = ev.at
        cam.reason = ev.reason
        cam.reported_fps = ev.fps
        cam.frames_ingested = ev.frames_ingested
        cam.frames_dropped = ev.frames_dropped
        cam.reconnects = ev.reconnects
        cam.stalls = ev.stalls
        return True

    def _line_command(self, cmd: LineCommand) -> bool:
        if not self._seen.add(f"command:{cmd.command_id}"):
            return False
        lv = self.lines.get(cmd.line_id)
        if lv is None:  # a line this plant does not have: nothing of ours stopped
            self.unknown.source(cmd.line_id, cmd.camera_id or "")
            return True
        if cmd.command in ("stop", "manual_inspection"):
            opened = lv.episodes if cmd.command == "stop" else lv.manual
            opened[cmd.episode_id or cmd.command_id] = {
                "episode_id": cmd.episode_id or cmd.command_id,
                "since": cmd.issued_at,
                "reason": cmd.reason,
                "camera_id": cmd.camera_id,
                "verdict_id": cmd.verdict_id,
            }
        elif cmd.command == "resume":
            # `inspector resume` closes every open episode of the line (stop and manual
            # inspection); the command names only the first of them.
            lv.episodes.clear()
            lv.manual.clear()
        return True

    def _action(self, a: ActionEvent) -> bool:
        if not self._seen.add(f"action:{a.action_id}:{a.outcome}:{a.attempt}"):
            return False
        self.action_counts[(a.workflow, a.outcome)] += 1
        self.actions.appendleft(
            {
                "at": a.at,
                "workflow": a.workflow,
                "kind": a.kind,
                "outcome": a.outcome,
                "line_id": a.line_id,
                "camera_id": a.camera_id,
                "verdict_id": a.verdict_id,
                "detail": a.detail,
            }
        )
        return True

    # ------------------------------------------------------------------ reading

    def verdict(self, verdict_id: str) -> VerdictEvent | None:
        with self.lock:
            return self._verdicts.get(verdict_id) or self._shown.get(verdict_id)

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        with self.lock:
            lines = []
            for lv in self.lines.values():
                recent = [s for _, s in lv.latencies]
                lines.append(
                    {
                        "id": lv.id,
                        "name": lv.name,
                        "counts": dict(lv.counts),
                        "total": sum(lv.counts.values()),
                        "yield": yield_pct(lv.counts),
                        "model": lv.model,
                        "drift": sorted(lv.drift.values(), key=lambda d: d["since"]),
                        "shadow": _shadow_json(lv.shadow),
                        "latency": {
                            "points": [[round(t, 3), round(s, 4)] for t, s in lv.latencies],
                            "p50": _percentile(recent, 0.5),
                            "p95": _percentile(recent, 0.95),
                            "last": recent[-1] if recent else None,
                        },
                        "cameras": [c.to_json(now) for c in lv.cameras.values()],
                        "episodes": sorted(lv.episodes.values(), key=lambda e: e["since"]),
                        "manual_inspection": sorted(lv.manual.values(), key=lambda e: e["since"]),
                        "gallery": [
                            gallery_item(self._shown[vid])
                            for vid in lv.gallery
                            if vid in self._shown
                        ],
                        "defects": dict(lv.defects.most_common()),
                    }
                )
            return {
                "plant": self.cfg.plant,
                "generated_at": now,
                "since": self.since,
                "version": self.version,
                "lines": lines,
                "unknown_sources": self.unknown.to_json(now),
                "actions": list(self.actions),
                "events_seen": dict(self.events_seen),
            }
