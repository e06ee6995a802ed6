"""Per-line pass/fail rules: detections → PASS or FAIL with the rule that decided.

Pure logic, no I/O. FAULT (the frame cannot be trusted) is decided before the model
runs, in ``inspector.detect.frames``; a frame that reaches these rules is trustworthy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from inspector.config import AnomalyRule, LineRules, Point
from inspector.events import AnomalyReport, Box, Detection, Finding, PartAnomaly, Verdict

SEVERITY_RANK = {"minor": 0, "major": 1, "critical": 2}
EDGE_MARGIN_PX = 2.0  # a container box this close to the frame edge is not fully in view


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    rule: str
    reason: str
    findings: list[Finding] = field(default_factory=list)
    anomaly: AnomalyReport | None = None


def point_in_polygon(x: float, y: float, poly: list[Point]) -> bool:
    """Even-odd ray casting; polygons are small (a handful of points)."""
    inside = False
    n = len(poly)
    j = n - 1
    for i in range(n):
        xi, yi = poly[i]
        xj, yj = poly[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


class CompiledRules:
    """LineRules prepared once per line, applied per frame."""

    def __init__(self, rules: LineRules) -> None:
        self.rules = rules
        self.mm2_per_px2 = rules.mm_per_px**2 if rules.mm_per_px else None

    def in_scope(self, det: Detection) -> bool:
        cx, cy = det.box.center
        if any(point_in_polygon(cx, cy, p) for p in self.rules.ignore):
            return False
        return not self.rules.roi or any(point_in_polygon(cx, cy, p) for p in self.rules.roi)

    def judge(self, detections: list[Detection], width: int, height: int) -> Judgement:
        dets = [d for d in detections if self.in_scope(d)]
        findings: list[Finding] = []
        for d in dets:
            rule = self.rules.classes.get(d.cls)
            if rule is None or not rule.fail or d.score < rule.min_confidence:
                continue
            area = d.box.area
            if area < rule.min_area_px:
                continue
            if (
                rule.min_area_mm2 is not None
                and self.mm2_per_px2 is not None
                and area * self.mm2_per_px2 < rule.min_area_mm2
            ):
                continue
            findings.append(
                Finding(
                    cls=d.cls,
                    score=d.score,
                    box=d.box,
                    severity=rule.severity,
                    rule=f"class:{d.cls}",
                )
            )
        findings += self._missing_features(dets, width, height)
        if not findings:
            return Judgement("PASS", "pass", "no failing detection")
        findings.sort(key=lambda f: (-SEVERITY_RANK[f.severity], -f.score))
        top = findings[0]
        return Judgement(
            "FAIL",
            top.rule,
            f"{len(findings)} finding(s); worst {top.cls} ({top.severity})",
            findings,
        )

    def _missing_features(self, dets: list[Detection], width: int, height: int) -> list[Finding]:
        out: list[Finding] = []
        for req in self.rules.required_features:
            feats = [d for d in dets if d.cls == req.feature and d.score >= req.min_confidence]
            if req.within is None:
                if len(feats) < req.min_count:
                    out.append(
                        Finding(
                            cls=f"missing:{req.feature}",
                            score=1.0,
                            box=None,
                            severity=req.severity,
                            rule=f"required:{req.feature}",
                        )
                    )
                continue
            for c in dets:
                if c.cls != req.within or c.score < req.min_confidence:
                    continue
                b = c.box
                if (
                    b.x1 <= EDGE_MARGIN_PX
                    or b.y1 <= EDGE_MARGIN_PX
                    or b.x2 >= width - EDGE_MARGIN_PX
                    or b.y2 >= height - EDGE_MARGIN_PX
                ):
                    continue  # only parts fully in view can be counted
                n = sum(
                    1
                    for f in feats
                    if b.x1 <= f.box.center[0] <= b.x2 and b.y1 <= f.box.center[1] <= b.y2
                )
                if n < req.min_count:
                    out.append(
                        Finding(
                            cls=f"missing:{req.feature}",
                            score=round(c.score, 5),
                            box=b,
                            severity=req.severity,
                            rule=f"required:{req.feature}>={req.min_count}/{req.within}",
                        )
                    )
        return out


def part_decision(frame_fails: int, rules: LineRules) -> bool:
    """Whether a part with this many failing frames fails (any / k-of-n)."""
    agg = rules.part_aggregation
    return frame_fails >= (1 if agg.mode == "any" else agg.k)


def image_is_uniform(gray: npt.NDArray[np.uint8], min_std: float) -> bool:
    """Black, grey or blown-out frames (lens cap, dead sensor, lighting failure)."""
    return float(gray.std()) < min_std


def anomaly_report(
    scored: list[tuple[Box, float]], threshold: float, action: str, skipped: int = 0
) -> AnomalyReport:
    """Each scored part box against the threshold (over: strictly above)."""
    parts = [PartAnomaly(box=b, score=round(min(s, 1e6), 5), over=s > threshold) for b, s in scored]
    return AnomalyReport(
        threshold=threshold,
        action="fail" if action == "fail" else "review",
        flagged=any(p.over for p in parts),
        parts=parts,
        skipped=skipped,
    )


def apply_anomaly(j: Judgement, report: AnomalyReport | None, rule: AnomalyRule) -> Judgement:
    """The anomaly channel's effect on a frame's judgement. A FAULT stays a FAULT (nothing
    was judged); ``review`` only carries the report; ``fail`` adds a finding (rule
    ``anomaly``, score = how far above the threshold: 1 - threshold/score) per part over."""
    if j.verdict == "FAULT" or report is None:
        return j
    if rule.action != "fail" or not report.flagged:
        return Judgement(j.verdict, j.rule, j.reason, j.findings, report)
    new = [
        Finding(
            cls="anomaly",
            score=round(1.0 - report.threshold / p.score, 5),
            box=p.box,
            severity=rule.severity,
            rule="anomaly",
        )
        for p in report.parts
        if p.over
    ]
    findings = sorted(j.findings + new, key=lambda f: (-SEVERITY_RANK[f.severity], -f.score))
    top = findings[0]
    return Judgement(
        "FAIL",
        top.rule,
        f"{len(findings)} finding(s); worst {top.cls} ({top.severity})",
        findings,
        report,
    )
