"""Hand computations of the dashboard's lake trends (tests/lake and tests/observe)."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from inspector.events import Timings, VerdictEvent

SHIFTS = [
    {"name": "early", "start": "06:00"},
    {"name": "late", "start": "14:00"},
    {"name": "night", "start": "22:00"},
]


def retimed(verdicts: list[VerdictEvent], start: float, span_s: float) -> list[VerdictEvent]:
    """The same verdicts spread evenly over ``[start, start + span_s)``."""
    out = []
    for i, v in enumerate(verdicts):
        t = start + i * span_s / len(verdicts)
        lat = v.timings.emitted_at - v.timings.captured_at
        timings = Timings(captured_at=t, ingested_at=t + 0.001, emitted_at=t + lat)
        out.append(v.model_copy(update={"timings": timings}))
    return out


def in_window(vs: list[VerdictEvent], since: float, until: float) -> list[VerdictEvent]:
    return [v for v in vs if since <= v.timings.captured_at < until]


def _figures(c: Counter[str]) -> dict[str, Any]:
    judged = c["PASS"] + c["FAIL"]
    return {
        "verdicts": sum(c.values()),
        "pass": c["PASS"],
        "fail": c["FAIL"],
        "fault": c["FAULT"],
        "yield_pct": 100 * c["PASS"] / judged if judged else None,
        "defect_ppm": 1e6 * c["FAIL"] / judged if judged else None,
    }


def hand_yield_per_bucket(vs: list[VerdictEvent], bucket_s: int) -> list[dict[str, Any]]:
    """Per line and UTC hour (3600) or day (86400), ordered by line then time."""
    groups: dict[tuple[str, float], Counter[str]] = defaultdict(Counter)
    for v in vs:
        t = v.timings.captured_at
        groups[(v.line_id, t - t % bucket_s)][v.verdict] += 1
    return [{"line": line, "at_s": at, **_figures(c)} for (line, at), c in sorted(groups.items())]


def hand_pareto(vs: list[VerdictEvent]) -> list[dict[str, Any]]:
    findings = Counter(f.cls for v in vs if v.verdict == "FAIL" for f in v.findings)
    frames = Counter(c for v in vs if v.verdict == "FAIL" for c in {f.cls for f in v.findings})
    total = sum(findings.values())
    order = sorted(findings, key=lambda c: (-findings[c], c))
    out, cum = [], 0
    for c in order:
        cum += findings[c]
        out.append(
            {
                "class": c,
                "findings": findings[c],
                "frames": frames[c],
                "share_pct": 100 * findings[c] / total,
                "cumulative_pct": 100 * cum / total,
            }
        )
    return out


def shift_of(captured_at: float) -> str:
    """early 06-14, late 14-22, night 22-06 named by the day it started (UTC)."""
    t = datetime.fromtimestamp(captured_at, UTC)
    m = t.hour * 60 + t.minute
    if m < 6 * 60:
        return f"{(t - timedelta(days=1)).date().isoformat()} night"
    name = "early" if m < 14 * 60 else "late" if m < 22 * 60 else "night"
    return f"{t.date().isoformat()} {name}"


def hand_shifts(vs: list[VerdictEvent]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for v in vs:
        groups[(shift_of(v.timings.captured_at), v.line_id)][v.verdict] += 1
    return [{"shift": s, "line": line, **_figures(c)} for (s, line), c in sorted(groups.items())]
