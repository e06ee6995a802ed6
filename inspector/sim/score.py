"""Score verdicts against the simulator's ground truth (demo scorecard, model card).

Definitions (documented in the README):
- A frame is *defective* when a part at least half in view shows a defect
  (scratch, dent, stain, crack, missing_bolt) at least half in view. It is *clean*
  when no defect has a pixel in it; a frame that is neither (the only defects in view
  are on a part mostly out of view, or cut by the frame edge) is *ambiguous*: counted
  apart, it is neither a miss nor a false reject whatever the verdict. Frame recall =
  defective frames judged FAIL / defective frames; frame false-reject rate = clean
  frames judged FAIL / clean frames. FAULT frames are counted apart and excluded.
- A *part instance* is one pass of a part under one camera (a looping clip repeats
  parts; each pass counts). It is judged from the sampled frames where it is fully
  in view: it fails when at least ``k`` of them carry a failing finding located on
  that part (any = k 1). Part recall and false-reject rate follow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from inspector.sim.scene import ConveyorScene, SceneConfig
from inspector.sim.truth import DEFECT_CLASSES, ClipTruth, FrameTruth


@dataclass(frozen=True)
class JudgedFrame:
    camera_id: str
    frame_index: int  # read from the frame-index code
    captured_at: float
    verdict: str  # PASS | FAIL | FAULT
    finding_boxes: tuple[tuple[float, float, float, float] | None, ...] = ()


@dataclass
class Rates:
    positives: int = 0
    negatives: int = 0
    true_pos: int = 0
    false_pos: int = 0

    @property
    def recall(self) -> float | None:
        return self.true_pos / self.positives if self.positives else None

    @property
    def false_reject_rate(self) -> float | None:
        return self.false_pos / self.negatives if self.negatives else None

    def as_dict(self) -> dict[str, Any]:
        r, f = self.recall, self.false_reject_rate
        return {
            "defective": self.positives,
            "clean": self.negatives,
            "caught": self.true_pos,
            "false_rejects": self.false_pos,
            "recall": None if r is None else round(r, 4),
            "false_reject_rate": None if f is None else round(f, 4),
        }


@dataclass
class Score:
    frames: Rates = field(default_factory=Rates)
    parts: Rates = field(default_factory=Rates)
    faults: int = 0
    ambiguous: int = 0
    ambiguous_failed: int = 0
    unreadable: int = 0
    unknown_camera: int = 0
    missed_parts: list[str] = field(default_factory=list)
    # per defect class: the defective part instances carrying it, and how many were caught
    classes: dict[str, Rates] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "per_frame": self.frames.as_dict(),
            "per_part": self.parts.as_dict(),
            "per_class_part_recall": {
                c: {
                    "parts": r.positives,
                    "caught": r.true_pos,
                    "recall": None if r.recall is None else round(r.recall, 4),
                }
                for c, r in sorted(self.classes.items())
            },
            "fault_frames": self.faults,
            "ambiguous_frames": self.ambiguous,
            "ambiguous_frames_failed": self.ambiguous_failed,
            "frames_without_readable_code": self.unreadable,
            "frames_from_cameras_without_truth": self.unknown_camera,
        }


@lru_cache(maxsize=16)
def _scene(config_items: tuple[tuple[str, Any], ...]) -> ConveyorScene:
    return ConveyorScene(SceneConfig(**dict(config_items)))


def frame_truth(clip: ClipTruth, index: int) -> FrameTruth:
    return _scene(tuple(sorted(clip.config.items()))).truth(index)


def unlabelled_defects(clip: ClipTruth, index: int) -> int:
    return _scene(tuple(sorted(clip.config.items()))).unlabelled_defects(index)


def _inside(
    box: tuple[float, float, float, float] | None, part_box: tuple[int, int, int, int]
) -> bool:
    if box is None:  # frame-level finding (e.g. a required feature with no box)
        return True
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return part_box[0] <= cx <= part_box[2] and part_box[1] <= cy <= part_box[3]


def score(frames: Iterable[JudgedFrame], clips: dict[str, ClipTruth], k: int = 1) -> Score:
    out = Score()
    # part instance → (failing frames, judged frames, defective?)
    instances: dict[tuple[str, int, int], list[int]] = {}
    defective_of: dict[tuple[str, int, int], bool] = {}
    by_camera: dict[str, list[JudgedFrame]] = {}
    for f in frames:
        by_camera.setdefault(f.camera_id, []).append(f)
    for cam, fs in by_camera.items():
        clip = clips.get(cam)
        if clip is None:  # a camera the simulator does not run: nothing to score against
            out.unknown_camera += len(fs)
            continue
        fs.sort(key=lambda f: f.captured_at)
        loop, last_index = 0, -1
        for f in fs:
            if f.frame_index < 0:
                out.unreadable += 1
                continue
            if f.frame_index < last_index - clip.n_frames // 2:
                loop += 1  # the clip started over
            last_index = f.frame_index
            if f.verdict == "FAULT":
                out.faults += 1
                continue
            truth = frame_truth(clip, f.frame_index)
            failed = f.verdict == "FAIL"
            positive = any(o.cls in DEFECT_CLASSES for p in truth.parts for o in p.objects)
            if positive:
                out.frames.positives += 1
                out.frames.true_pos += failed
            elif unlabelled_defects(clip, f.frame_index):
                out.ambiguous += 1
                out.ambiguous_failed += failed
            else:
                out.frames.negatives += 1
                out.frames.false_pos += failed
            for p in truth.parts:
                if not p.fully_in_view:
                    continue
                key = (cam, loop, p.part_id)
                hits = instances.setdefault(key, [0, 0])
                hits[1] += 1
                defective_of[key] = p.defective
                if failed and any(_inside(b, p.box) for b in f.finding_boxes):
                    hits[0] += 1
    records = {
        cam: {r.part_id: r for r in clip.parts} for cam, clip in clips.items() if cam in by_camera
    }
    for key, (fails, _judged) in instances.items():
        caught = fails >= k
        if defective_of[key]:
            out.parts.positives += 1
            out.parts.true_pos += caught
            rec = records.get(key[0], {}).get(key[2])
            for cls in sorted(set(rec.defects) if rec is not None else ()):
                rates = out.classes.setdefault(cls, Rates())
                rates.positives += 1
                rates.true_pos += caught
            if not caught:
                out.missed_parts.append(f"{key[0]}/loop{key[1]}/part{key[2]}")
        else:
            out.parts.negatives += 1
            out.parts.false_pos += caught
    return out
