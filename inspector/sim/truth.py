"""Ground truth of the simulated line: per frame (boxes) and per clip (which part is defective).

Everything here is plain data so it can be written as JSON next to a clip or dataset and read
back by the evaluation harness without importing the renderer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

# Order matters: a class's position is its id in the detection model.
CLASS_NAMES: tuple[str, ...] = (
    "part",
    "scratch",
    "dent",
    "stain",
    "crack",
    "missing_bolt",
    "bolt",
)
CLASS_IDS: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}
DEFECT_CLASSES: tuple[str, ...] = ("scratch", "dent", "stain", "crack", "missing_bolt")
SURFACE_DEFECTS: tuple[str, ...] = ("scratch", "dent", "stain", "crack")

# Bump whenever the rendered pixels or the truth format change: cached clips, datasets and
# model cards record it so a model can be traced to the generator that made its data.
GENERATOR_VERSION = "sim-1"

Box = tuple[int, int, int, int]
"""Pixel box (x1, y1, x2, y2) in frame coordinates; x2/y2 are exclusive."""


@dataclass(frozen=True)
class ObjectTruth:
    """A labelled object on a part: a surface defect, a missing bolt or a present bolt."""

    cls: str
    box: Box
    visible_fraction: float

    @property
    def class_id(self) -> int:
        return CLASS_IDS[self.cls]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cls": self.cls,
            "class_id": self.class_id,
            "box": list(self.box),
            "visible_fraction": round(self.visible_fraction, 3),
        }


@dataclass(frozen=True)
class PartTruth:
    """One part as seen in one frame (only parts at least half in view are reported)."""

    part_id: int
    kind: str
    defective: bool
    fully_in_view: bool
    box: Box
    visible_fraction: float
    objects: tuple[ObjectTruth, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "part_id": self.part_id,
            "kind": self.kind,
            "defective": self.defective,
            "fully_in_view": self.fully_in_view,
            "box": list(self.box),
            "visible_fraction": round(self.visible_fraction, 3),
            "objects": [o.to_dict() for o in self.objects],
        }


@dataclass(frozen=True)
class FrameTruth:
    frame_index: int
    width: int
    height: int
    parts: tuple[PartTruth, ...]

    def labels(self) -> list[ObjectTruth]:
        """Every box a detector should find: each part's own box followed by its objects."""
        out: list[ObjectTruth] = []
        for p in self.parts:
            out.append(ObjectTruth("part", p.box, p.visible_fraction))
            out.extend(p.objects)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame_index": self.frame_index,
            "width": self.width,
            "height": self.height,
            "parts": [p.to_dict() for p in self.parts],
        }


@dataclass(frozen=True)
class PartRecord:
    """One part of a clip: what it is and when it is fully in view (clip frame indices)."""

    part_id: int
    kind: str
    defective: bool
    defects: tuple[str, ...]
    bolts: int
    first_full_frame: int
    last_full_frame: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "part_id": self.part_id,
            "kind": self.kind,
            "defective": self.defective,
            "defects": list(self.defects),
            "bolts": self.bolts,
            "first_full_frame": self.first_full_frame,
            "last_full_frame": self.last_full_frame,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PartRecord:
        return cls(
            part_id=int(d["part_id"]),
            kind=str(d["kind"]),
            defective=bool(d["defective"]),
            defects=tuple(str(x) for x in d["defects"]),
            bolts=int(d["bolts"]),
            first_full_frame=int(d["first_full_frame"]),
            last_full_frame=int(d["last_full_frame"]),
        )


@dataclass(frozen=True)
class ClipTruth:
    """Ground truth for a whole (looping) clip."""

    generator_version: str
    config: dict[str, Any]
    n_frames: int
    fps: int
    frame_code_box: Box
    parts: tuple[PartRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "generator_version": self.generator_version,
            "config": self.config,
            "n_frames": self.n_frames,
            "fps": self.fps,
            "class_names": list(CLASS_NAMES),
            "frame_code_box": list(self.frame_code_box),
            "parts": [p.to_dict() for p in self.parts],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipTruth:
        x1, y1, x2, y2 = (int(v) for v in d["frame_code_box"])
        return cls(
            generator_version=str(d["generator_version"]),
            config=dict(d["config"]),
            n_frames=int(d["n_frames"]),
            fps=int(d["fps"]),
            frame_code_box=(x1, y1, x2, y2),
            parts=tuple(PartRecord.from_dict(p) for p in d["parts"]),
        )

    def write(self, path: Path) -> None:
        path.write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, path: Path) -> ClipTruth:
        return cls.from_dict(orjson.loads(path.read_bytes()))


def part_triggers(clip: ClipTruth, fps: float | None = None) -> list[tuple[int, float, float]]:
    """When each part is fully in view: ``(part_id, enter_offset_s, exit_offset_s)``.

    Offsets are seconds from the start of the clip: ``enter`` is the first fully-in-view frame's
    time, ``exit`` the moment the last fully-in-view frame ends. A publisher emulating a
    photo-eye adds ``loop * n_frames / fps`` for each pass of the looping stream. ``fps``
    defaults to the clip's own rate. Sorted by enter time.
    """
    rate = float(fps if fps is not None else clip.fps)
    out = [
        (p.part_id, p.first_full_frame / rate, (p.last_full_frame + 1) / rate)
        for p in clip.parts
        if p.first_full_frame >= 0
    ]
    return sorted(out, key=lambda t: t[1])
