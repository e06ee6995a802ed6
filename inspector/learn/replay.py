"""``inspector replay``: judge real past traffic again with another model and diff it.

The production verdicts since a time come from the verdicts topic; each one's frame
from the archive (``inspector archive``). Each frame is judged by the candidate with
its line's rules, exactly as a worker would (same decode scale, same rules), and the
result is compared with the production verdict (the shadow report's arithmetic:
agreement, new FAILs, missed FAILs, per line and class, the frames that flip). Frames
the archive no longer has are counted and listed, never guessed. The HTML report shows
each flip's evidence side by side (production's and the candidate's findings drawn by
the one evidence renderer, ``observe.evidence.annotate``).
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from inspector.config import PlantConfig
from inspector.detect.rules import CompiledRules
from inspector.detect.worker import decode_jpeg, jpeg_size, scale_detections
from inspector.events import Timings, VerdictEvent
from inspector.inference.model import Detector, decode_scale
from inspector.learn.archive import FrameArchive
from inspector.learn.shadow import AgreementReport, agreement
from inspector.observe.evidence import annotate

BATCH = 8


@dataclass
class ReplayResult:
    production: list[VerdictEvent]
    replayed: list[VerdictEvent]
    gone: list[str] = field(default_factory=list)  # frame ids the archive does not have
    undecodable: list[str] = field(default_factory=list)
    frames: dict[str, bytes] = field(default_factory=dict)  # frame id → JPEG of the flips

    def report(self) -> AgreementReport:
        return agreement(self.production, self.replayed)

    def as_dict(self, max_flips: int = 50) -> dict[str, Any]:
        out = self.report().as_dict(max_flips)
        out["production_verdicts"] = len(self.production)
        out["replayed"] = len(self.replayed)
        out["gone"] = len(self.gone)
        out["gone_frames"] = self.gone[:max_flips]
        out["undecodable"] = len(self.undecodable)
        return out


def replay(
    cfg: PlantConfig,
    detector: Detector,
    production: Iterable[VerdictEvent],
    archive: FrameArchive,
) -> ReplayResult:
    rules = {ln.id: CompiledRules(ln.rules) for ln in cfg.lines}
    prod = [v for v in production if v.line_id in rules]
    res = ReplayResult(production=prod, replayed=[])
    todo: list[tuple[VerdictEvent, bytes, Any, int, tuple[int, int]]] = []
    for v in prod:
        jpeg = archive.get(v.camera_id, v.frame_id, v.timings.captured_at)
        if jpeg is None:
            res.gone.append(v.frame_id)
            continue
        size = jpeg_size(jpeg)
        img = None
        if size is not None:
            scale = decode_scale(size[0], size[1], detector.info.imgsz)
            img = decode_jpeg(jpeg, scale)
        if img is None or size is None:
            res.undecodable.append(v.frame_id)
            continue
        todo.append((v, jpeg, img, scale, size))
    ref = detector.info.ref()
    for start in range(0, len(todo), BATCH):
        chunk = todo[start : start + BATCH]
        t0 = time.time()
        results = detector.detect([img for _v, _j, img, _s, _wh in chunk])
        t1 = time.time()
        for (v, jpeg, _img, scale, (w, h)), dets in zip(chunk, results, strict=True):
            dets = scale_detections(dets, scale)
            jd = rules[v.line_id].judge(dets, w, h)
            r = VerdictEvent(
                verdict_id=v.verdict_id,
                frame_id=v.frame_id,
                camera_id=v.camera_id,
                line_id=v.line_id,
                seq=v.seq,
                part_id=v.part_id,
                verdict=jd.verdict,
                rule=jd.rule,
                reason=jd.reason,
                findings=jd.findings,
                detections=dets,
                model=ref,
                timings=Timings(
                    captured_at=v.timings.captured_at,
                    ingested_at=v.timings.ingested_at,
                    infer_start=round(t0, 6),
                    infer_end=round(t1, 6),
                    emitted_at=round(time.time(), 6),
                ),
            )
            res.replayed.append(r)
            if r.verdict != v.verdict and v.verdict != "FAULT":
                res.frames[v.frame_id] = jpeg
    return res


def html_report(res: ReplayResult, title: str, max_flips: int = 50) -> str:
    """One self-contained page: the counts, then each flip's evidence side by side."""
    d = res.as_dict(max_flips)
    by_id = {v.frame_id: v for v in res.production}
    new = {v.frame_id: v for v in res.replayed}
    rows = []
    for f in d["flips"]:
        fid = f["frame_id"]
        jpeg = res.frames.get(fid)
        if jpeg is None:
            continue
        pics = []
        for label, v in (("production", by_id[fid]), ("candidate", new[fid])):
            img = base64.b64encode(annotate(jpeg, v, quality=80)).decode()
            pics.append(
                f"<figure><img src='data:image/jpeg;base64,{img}' width='480'>"
                f"<figcaption>{label}: <b>{html.escape(v.verdict)}</b> "
                f"{html.escape(v.rule)} ({html.escape(v.model.version if v.model else '?')})"
                "</figcaption></figure>"
            )
        rows.append(
            f"<section><h3>{html.escape(fid)} — {html.escape(f['production'])} → "
            f"{html.escape(f['shadow'])}</h3><div class='pair'>{''.join(pics)}</div></section>"
        )
    agree = "n/a" if d["agreement"] is None else f"{d['agreement']:.1%}"
    summary = html.escape(
        f"{d['compared']} frames compared, agreement {agree}, new FAILs "
        f"{d['new_fails']}, missed FAILs {d['missed_fails']}, frames gone {d['gone']}"
    )
    classes = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{g['compared']}</td><td>{g['agreement']}</td>"
        f"<td>{g['new_fails']}</td><td>{g['missed_fails']}</td></tr>"
        for k, g in d["by_class"].items()
    )
    return (
        "<!doctype html><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:24px}.pair{display:flex;gap:12px}"
        "figure{margin:0}td,th{padding:2px 10px;text-align:right}</style>"
        f"<h1>{html.escape(title)}</h1><p>{summary}</p>"
        "<table><tr><th>class</th><th>frames</th><th>agreement</th><th>new FAIL</th>"
        f"<th>missed</th></tr>{classes}</table>{''.join(rows)}"
    )
