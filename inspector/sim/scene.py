"""Deterministic top-down view of a conveyor carrying parts, some of them defective.

``ConveyorScene(config).render(i)`` is a pure function of ``(config, i)``: every part draws from
an RNG seeded by ``(seed, part_id)``, never from call order, so frames can be rendered in any
order, in several processes, and always match the ground truth.

The timeline is periodic: the clip holds a whole number of part slots and a part that is still
crossing at the end of the clip is the one entering at the start, so a looping stream shows no
jump in the belt or the parts (only the frame code starts over). Frame indices are taken modulo
``n_frames``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from inspector.sim.framecode import decode_frame_index, draw_frame_code, frame_code_box
from inspector.sim.parts import (
    BOLT_SEATS,
    KIND_WEIGHTS,
    PART_KINDS,
    Layout,
    PartSpec,
    Sprite,
    SpriteObject,
    layout,
    render_sprite,
)
from inspector.sim.truth import (
    DEFECT_CLASSES,
    GENERATOR_VERSION,
    SURFACE_DEFECTS,
    Box,
    ClipTruth,
    FrameTruth,
    ObjectTruth,
    PartRecord,
    PartTruth,
)

__all__ = [
    "ConveyorScene",
    "SceneConfig",
    "decode_frame_index",
    "frame_code_box",
]

U8 = npt.NDArray[np.uint8]

_REF_W, _REF_H = 1280, 720
_REF_PLATE_W = 455.0  # plate width at 1280x720 that time_in_view_s refers to
_MAX_PART_EXTENT = 540.0  # widest rotated part incl. shadow and blur, at 1280x720
_MIN_PART_EXTENT = 300.0  # narrowest rotated part (a small washer), at 1280x720
_MAX_ANGLE = 7.0
_EXPOSURE_S = 1 / 200  # shutter time: how far a part moves while the frame is exposed
_NOISE_PAD = 64
_SPRITE_CACHE = 12  # sprites with pixels: a 720p frame shows at most ~4 parts
_NOVEL_STREAM = 9  # the per-part stream deciding the opt-in novel defect (unused by parts.py)
_LAYOUT_CACHE = 6  # layouts (~7 MB each at 720p): needed only to render a sprite


@dataclass(frozen=True)
class _Geom:
    """What the truth and the placement need of a sprite: no pixels."""

    anchor: tuple[float, float]
    width: int
    part_box: tuple[float, float, float, float]
    objects: tuple[SpriteObject, ...]

    @staticmethod
    def of(sprite: Sprite) -> _Geom:
        return _Geom(sprite.anchor, int(sprite.add.shape[1]), sprite.part_box, sprite.objects)


@dataclass(frozen=True)
class SceneConfig:
    """What the simulated line looks like. Hashable; its ``to_dict`` keys the clip cache."""

    seed: int = 0
    width: int = 1280
    height: int = 720
    fps: int = 15
    part_period_s: float = 2.5  # seconds between consecutive parts
    defect_rate: float = 0.3  # share of parts with at least one defect
    time_in_view_s: float = 1.5  # how long a standard plate is fully in view
    clip_seconds: float = 10.0  # rounded up to whole part periods, see n_frames
    # Opt-in: share of parts carrying a heat-tint burn, a defect class no model was trained on
    # and no truth labels (the anomaly channel's test). Drawn from its own RNG stream and left
    # out of to_dict while 0, so every existing render, truth and cache key is unchanged.
    novel_defect_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.width < 160 or self.height < 90:
            raise ValueError("frame must be at least 160x90")
        if not 0.0 <= self.defect_rate <= 1.0:
            raise ValueError("defect_rate must be within [0, 1]")
        if not 0.0 <= self.novel_defect_rate <= 1.0:
            raise ValueError("novel_defect_rate must be within [0, 1]")
        if self.fps <= 0 or self.time_in_view_s <= 0 or self.part_period_s <= 0:
            raise ValueError("fps, time_in_view_s and part_period_s must be positive")
        if self.max_jitter_s < 0:
            raise ValueError(
                "part_period_s is too short for time_in_view_s: a part's fully-in-view window "
                "would overlap its neighbour's slot"
            )

    @property
    def scale(self) -> float:
        return min(self.width / _REF_W, self.height / _REF_H)

    @property
    def belt_speed_px_s(self) -> float:
        return (self.width - _REF_PLATE_W * self.scale) / self.time_in_view_s

    @property
    def period_frames(self) -> int:
        return max(1, round(self.part_period_s * self.fps))

    @property
    def n_slots(self) -> int:
        """Part slots per clip: as asked, but enough that no part meets itself on wrap-around."""
        transit = (self.width + _MAX_PART_EXTENT * self.scale) / self.belt_speed_px_s
        needed = math.floor((transit * self.fps + 2) / self.period_frames) + 1
        return max(needed, round(self.clip_seconds / self.part_period_s))

    @property
    def n_frames(self) -> int:
        return self.n_slots * self.period_frames

    @property
    def max_jitter_s(self) -> float:
        """How far a part may arrive early or late while its fully-in-view window stays in
        its own slot (so per-clip windows never wrap around the loop point)."""
        period = self.period_frames / self.fps
        half_window = (self.width - _MIN_PART_EXTENT * self.scale) / (2 * self.belt_speed_px_s)
        return min(0.15 * period, 0.5 * period - half_window - 2.0 / self.fps)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.novel_defect_rate:
            del d["novel_defect_rate"]  # off: the dict (and cache keys) of before it existed
        return d


@dataclass(frozen=True)
class _Slot:
    spec: PartSpec
    t_center: float  # clip time at which the part's centre passes the middle of the frame
    y_center: float


def _wrap_pad(a: npt.NDArray[np.float32], pad: int) -> npt.NDArray[np.float32]:
    return np.pad(a, ((0, 0), (pad, pad)), mode="wrap")


class ConveyorScene:
    """Renderer and ground truth for one :class:`SceneConfig`."""

    def __init__(self, config: SceneConfig) -> None:
        self.config = config
        c = config
        self.width, self.height = c.width, c.height
        self.n_frames = c.n_frames
        self._s = c.scale
        self._v = c.belt_speed_px_s
        self._blur_px = max(1, round(self._v * _EXPOSURE_S))
        self._code_box = frame_code_box(c.width, c.height)
        h = c.height
        self._top = round(0.125 * h)
        rail = max(2, round(0.03 * h))
        self._belt_y1 = self._top + rail
        self._belt_y2 = round(0.885 * h)
        self._rail = rail
        self._slots = tuple(self._make_slot(k) for k in range(c.n_slots))
        # Layouts (canvases, masks: MBs each) for the parts being drawn only; what the
        # truth needs of every part (its defects, its bolts) kept small for all.
        self._layouts: OrderedDict[int, Layout] = OrderedDict()
        self._contents: dict[int, tuple[tuple[str, ...], int]] = {}
        # Pixels only for the parts being drawn (an LRU of _SPRITE_CACHE); the geometry of
        # every part, small, for the truth and for finding what is in view.
        self._sprites: OrderedDict[tuple[int, frozenset[str]], Sprite] = OrderedDict()
        self._geoms: dict[tuple[int, frozenset[str]], _Geom] = {}

    # ------------------------------------------------------------------ timeline

    def _make_slot(self, k: int) -> _Slot:
        c, s = self.config, self._s
        rng = np.random.default_rng([c.seed, k + 1, 0])
        kind = str(rng.choice(PART_KINDS, p=KIND_WEIGHTS))
        if kind == "plate":
            w, h = rng.uniform(430, 480) * s, rng.uniform(280, 320) * s
        elif kind == "bracket":
            w, h = rng.uniform(440, 480) * s, rng.uniform(280, 300) * s
        else:
            w = h = rng.uniform(280, 320) * s
        angle = rng.uniform(-_MAX_ANGLE, _MAX_ANGLE)
        defects: tuple[str, ...] = ()
        if rng.random() < c.defect_rate:
            options = list(SURFACE_DEFECTS) + (["missing_bolt"] if BOLT_SEATS[kind] else [])
            n = 1 if rng.random() < 0.7 else 2
            defects = tuple(str(x) for x in rng.choice(options, size=n, replace=False))
        period = c.period_frames / c.fps
        jitter = rng.uniform(-c.max_jitter_s, c.max_jitter_s)
        belt_mid = (self._belt_y1 + self._belt_y2) / 2
        y = belt_mid + rng.uniform(-0.035, 0.035) * c.height
        burn = (
            c.novel_defect_rate > 0
            and np.random.default_rng([c.seed, k + 1, _NOVEL_STREAM]).random() < c.novel_defect_rate
        )
        spec = PartSpec(k + 1, kind, c.seed, w, h, angle, defects, burn=bool(burn))
        return _Slot(spec, (k + 0.5) * period + jitter, y)

    def _layout(self, slot: _Slot, keep: bool = True) -> Layout:
        """The part's layout (computed again, identically, after an eviction); ``keep``
        False for a use that will not need it again (geometry, contents)."""
        pid = slot.spec.part_id
        lay = self._layouts.get(pid)
        if lay is None:
            lay = layout(slot.spec, self._s)
            self._contents.setdefault(pid, (lay.defects, lay.bolts))
            if keep:
                self._layouts[pid] = lay
                if len(self._layouts) > _LAYOUT_CACHE:
                    self._layouts.popitem(last=False)
        else:
            self._layouts.move_to_end(pid)
        return lay

    def _content(self, slot: _Slot) -> tuple[tuple[str, ...], int]:
        """The part's defect classes and bolt count."""
        pid = slot.spec.part_id
        if pid not in self._contents:
            self._layout(slot, keep=False)
        return self._contents[pid]

    def _sprite(self, slot: _Slot, omit: frozenset[str]) -> Sprite:
        """The part's pixels (rendered again, identically, after an eviction)."""
        key = (slot.spec.part_id, omit)
        sprite = self._sprites.get(key)
        if sprite is None:
            sprite = render_sprite(self._layout(slot), self._s, self._blur_px, omit)
            self._sprites[key] = sprite
            self._geoms.setdefault(key, _Geom.of(sprite))
            if len(self._sprites) > _SPRITE_CACHE:
                self._sprites.popitem(last=False)
        else:
            self._sprites.move_to_end(key)
        return sprite

    def _geom(self, slot: _Slot, omit: frozenset[str]) -> _Geom:
        """The part's geometry. Every part of the clip is looked at for every frame, so it
        is kept for all of them; its pixels are not (a scene that only answers truth, as
        scoring's does, would otherwise hold every part's sprite: ~5 MB each at 720p)."""
        key = (slot.spec.part_id, omit)
        geom = self._geoms.get(key)
        if geom is None:
            sprite = self._sprites.get(key) or render_sprite(
                self._layout(slot, keep=False), self._s, self._blur_px, omit
            )
            geom = self._geoms[key] = _Geom.of(sprite)
        return geom

    def _origin(self, slot: _Slot, sprite: _Geom, index: int) -> tuple[int, int] | None:
        """Top-left of the part's sprite in frame ``index``, or None if it is off-screen."""
        clip_s = self.n_frames / self.config.fps
        t = index / self.config.fps
        dt = (t - slot.t_center + clip_s / 2) % clip_s - clip_s / 2
        cx = self.width / 2 + self._v * dt
        ox = round(cx - sprite.anchor[0])
        oy = round(slot.y_center - sprite.anchor[1])
        if ox >= self.width or ox + sprite.width <= 0:
            return None
        return ox, oy

    # ------------------------------------------------------------------ truth

    def _place(self, box: tuple[float, float, float, float], ox: int, oy: int) -> tuple[Box, Box]:
        x1, y1 = math.floor(box[0] + ox), math.floor(box[1] + oy)
        x2, y2 = math.ceil(box[2] + ox), math.ceil(box[3] + oy)
        clipped = (max(0, x1), max(0, y1), min(self.width, x2), min(self.height, y2))
        return (x1, y1, x2, y2), clipped

    @staticmethod
    def _fraction(full: Box, clipped: Box) -> float:
        area = (full[2] - full[0]) * (full[3] - full[1])
        seen = max(0, clipped[2] - clipped[0]) * max(0, clipped[3] - clipped[1])
        return seen / area if area > 0 else 0.0

    def _visible(
        self, index: int, omit: frozenset[str]
    ) -> list[tuple[_Slot, _Geom, tuple[int, int]]]:
        out = []
        for slot in self._slots:
            geom = self._geom(slot, omit)
            origin = self._origin(slot, geom, index)
            if origin is not None:
                out.append((slot, geom, origin))
        return out

    def _truth(self, index: int, visible: list[tuple[_Slot, _Geom, tuple[int, int]]]) -> FrameTruth:
        parts: list[PartTruth] = []
        for slot, sprite, (ox, oy) in visible:
            full, clipped = self._place(sprite.part_box, ox, oy)
            frac = self._fraction(full, clipped)
            if frac < 0.5:
                continue
            objects = []
            for o in sprite.objects:
                ofull, oclipped = self._place(o.box, ox, oy)
                ofrac = self._fraction(ofull, oclipped)
                if ofrac >= 0.5:
                    objects.append(ObjectTruth(o.cls, oclipped, ofrac))
            parts.append(
                PartTruth(
                    part_id=slot.spec.part_id,
                    kind=slot.spec.kind,
                    defective=bool(self._content(slot)[0]),
                    fully_in_view=full == clipped,
                    box=clipped,
                    visible_fraction=frac,
                    objects=tuple(objects),
                )
            )
        return FrameTruth(index, self.width, self.height, tuple(parts))

    def unlabelled_defects(self, frame_index: int) -> int:
        """Defects with pixels in the frame that the truth does not label: on a part less
        than half in view, or cut to less than half by the frame edge. A frame showing one
        is neither clean nor defective for per-frame scoring (``sim.score``)."""
        index = frame_index % self.n_frames
        n = 0
        for _, sprite, (ox, oy) in self._visible(index, frozenset()):
            full, clipped = self._place(sprite.part_box, ox, oy)
            part_frac = self._fraction(full, clipped)
            for o in sprite.objects:
                if o.cls not in DEFECT_CLASSES:
                    continue
                ofull, oclipped = self._place(o.box, ox, oy)
                ofrac = self._fraction(ofull, oclipped)
                if ofrac > 0 and (part_frac < 0.5 or ofrac < 0.5):
                    n += 1
        return n

    def novel_parts(self) -> frozenset[int]:
        """Ids of parts carrying the unlabelled novel defect (a burn): not in any truth."""
        return frozenset(slot.spec.part_id for slot in self._slots if slot.spec.burn)

    def parts_in_view(self, frame_index: int) -> list[int]:
        """Ids of parts with any pixel (or shadow) in the frame, however little."""
        index = frame_index % self.n_frames
        return [slot.spec.part_id for slot, _, _ in self._visible(index, frozenset())]

    def truth(self, frame_index: int, omit: Collection[str] = ()) -> FrameTruth:
        """Ground truth of a frame without rendering its pixels."""
        index = frame_index % self.n_frames
        om = frozenset(omit)
        return self._truth(index, self._visible(index, om))

    def clip_truth(self) -> ClipTruth:
        # One pass over the frames (each frame's truth once), not one pass per part.
        full_frames: dict[int, list[int]] = {}
        for i in range(self.n_frames):
            for p in self.truth(i).parts:
                if p.fully_in_view:
                    full_frames.setdefault(p.part_id, []).append(i)
        records = []
        for slot in self._slots:
            full = full_frames.get(slot.spec.part_id, [])
            defects, bolts = self._content(slot)
            records.append(
                PartRecord(
                    part_id=slot.spec.part_id,
                    kind=slot.spec.kind,
                    defective=bool(defects),
                    defects=defects,
                    bolts=bolts,
                    first_full_frame=full[0] if full else -1,
                    last_full_frame=full[-1] if full else -1,
                )
            )
        return ClipTruth(
            generator_version=GENERATOR_VERSION,
            config=self.config.to_dict(),
            n_frames=self.n_frames,
            fps=self.config.fps,
            frame_code_box=self._code_box,
            parts=tuple(records),
        )

    # ------------------------------------------------------------------ pixels

    @cached_property
    def _background(self) -> U8:
        """The static parts of the picture: machine housing above and below, guide rails."""
        c, s = self.config, self._s
        rng = np.random.default_rng([c.seed, 0, 1])
        h, w = c.height, c.width
        bg = np.empty((h, w, 3), np.float32)
        bg[:] = (74, 66, 60)  # painted machine housing
        bg += cv2.GaussianBlur(rng.normal(0, 6, (h, w)).astype(np.float32), (0, 0), 2 * s)[
            ..., None
        ]
        rail = self._rail
        prof = 100 + 110 * np.sin(np.linspace(0.15, math.pi - 0.15, rail)) ** 2
        for y0 in (self._top, self._belt_y2):
            bg[y0 : y0 + rail] = prof[:, None, None].astype(np.float32)
        return np.clip(bg, 0, 255).astype(np.uint8)

    @cached_property
    def _belt(self) -> tuple[U8, int]:
        """A belt texture strip that tiles in x, and its tile width.

        The tile width divides the distance the belt travels in one clip (up to rounding), so
        the belt, too, continues seamlessly when the clip loops.
        """
        c, s = self.config, self._s
        travel = self._v * self.n_frames / c.fps
        tile = round(travel / max(1, round(travel / (320 * s))))
        bh = self._belt_y2 - self._belt_y1
        rng = np.random.default_rng([c.seed, 0, 2])
        pad = 64
        grain = _wrap_pad(rng.normal(0, 1, (bh, tile)).astype(np.float32), pad)
        grain = np.asarray(cv2.GaussianBlur(grain, (0, 0), max(0.6, 0.9 * s)), np.float32)
        grain = grain[:, pad:-pad]
        blotch = _wrap_pad(rng.normal(0, 1, (bh, tile)).astype(np.float32), pad)
        blotch = np.asarray(cv2.GaussianBlur(blotch, (0, 0), 14 * s), np.float32)
        blotch = blotch[:, pad:-pad]
        blotch /= blotch.std() + 1e-6
        ribs = np.sin(np.arange(bh) * 2 * math.pi / max(3.0, 6 * s))[:, None] * 2.0
        val = 60 + grain * 7 + blotch * 4 + ribs
        seam = tile // 3
        val[:, seam : seam + max(1, round(2 * s))] -= 18
        belt = np.empty((bh, tile, 3), np.float32)
        belt[:] = (1.02, 1.08, 0.97)  # slightly green PVC
        belt *= val[..., None]
        reps = math.ceil((tile + self.width) / tile)
        strip = np.concatenate([belt] * reps, axis=1)[:, : tile + self.width]
        return np.clip(strip, 0, 255).astype(np.uint8), tile

    @cached_property
    def _gain(self) -> U8:
        """Lighting: a lamp up and right of centre, falling off to the corners (gain * 200)."""
        h, w = self.height, self.width
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        falloff = (
            0.22 * ((xx - 0.55 * w) / (0.7 * w)) ** 2 + 0.3 * ((yy - 0.45 * h) / (0.7 * h)) ** 2
        )
        g = (0.9 + 0.14 * xx / w) * (1.0 - falloff)
        g8 = np.clip(np.round(g * 200), 0, 255).astype(np.uint8)
        return np.repeat(g8[..., None], 3, axis=2)

    @cached_property
    def _noise(self) -> tuple[U8, U8]:
        """A bank of sensor noise, sliced at a per-frame offset (drawing fresh noise per frame
        would cost more than the rest of the frame)."""
        rng = np.random.default_rng([self.config.seed, 0, 3])
        shape = (self.height + _NOISE_PAD, self.width + _NOISE_PAD, 3)
        n = np.round(rng.normal(0, 2.2, shape)).astype(np.int16)
        return np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)

    def render(self, frame_index: int, omit: Collection[str] = ()) -> tuple[U8, FrameTruth]:
        """Frame ``frame_index`` (mod ``n_frames``) as BGR uint8 and its ground truth.

        ``omit`` leaves out objects of the named classes (e.g. ``{"bolt"}``): used by tests to
        check that boxes sit where the pixels are; the truth then lists only what is drawn.
        """
        c = self.config
        index = frame_index % self.n_frames
        om = frozenset(omit)
        frame = self._background.copy()
        strip, tile = self._belt
        off = round(self._v * index / c.fps) % tile
        frame[self._belt_y1 : self._belt_y2] = strip[:, tile - off : tile - off + self.width]
        visible = self._visible(index, om)
        for slot, _, (ox, oy) in visible:
            sprite = self._sprite(slot, om)
            sh, sw = sprite.add.shape[:2]
            fx1, fy1 = max(ox, 0), max(oy, 0)
            fx2, fy2 = min(ox + sw, self.width), min(oy + sh, self.height)
            if fx1 >= fx2 or fy1 >= fy2:
                continue
            sx, sy = fx1 - ox, fy1 - oy
            region = frame[fy1:fy2, fx1:fx2].astype(np.float32)
            region *= sprite.mult[sy : sy + fy2 - fy1, sx : sx + fx2 - fx1]
            region += sprite.add[sy : sy + fy2 - fy1, sx : sx + fx2 - fx1]
            np.clip(region, 0, 255, out=region)
            frame[fy1:fy2, fx1:fx2] = region.astype(np.uint8)
        cv2.multiply(frame, self._gain, dst=frame, scale=1 / 200)
        draw_frame_code(frame, index)
        pos, neg = self._noise
        nrng = np.random.default_rng([c.seed, index, 4])
        dy, dx = (int(v) for v in nrng.integers(0, _NOISE_PAD, 2))
        cv2.add(frame, pos[dy : dy + self.height, dx : dx + self.width], dst=frame)
        cv2.subtract(frame, neg[dy : dy + self.height, dx : dx + self.width], dst=frame)
        return frame, self._truth(index, visible)
