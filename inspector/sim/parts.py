"""Drawing of single parts (plate, bracket, washer) with their bolts and defects, as sprites.

A part is drawn once, unrotated, on a square canvas; then rotated, given a soft drop shadow and
a little horizontal motion blur, and cropped. The result is stored *premultiplied*
(``frame = frame * mult + add``) because blurring premultiplied layers is what a moving object
does to the pixels behind it, and compositing is then a single multiply-add per frame.

Geometry is decided in a layout pass for all objects before anything is painted, and every
object draws from its own RNG, so leaving an object out (``omit``) never moves the others. The
tests rely on that to check that each ground-truth box is where the pixels changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
BoxF = tuple[float, float, float, float]

PART_KINDS: tuple[str, ...] = ("plate", "bracket", "washer")
KIND_WEIGHTS: tuple[float, ...] = (0.5, 0.25, 0.25)
BOLT_SEATS: dict[str, int] = {"plate": 4, "bracket": 3, "washer": 0}

_LIGHT = np.array([-1.0, -1.0]) / math.sqrt(2.0)  # light from the top-left, image coordinates
_SHADOW_STRENGTH = 0.5


@dataclass(frozen=True)
class PartSpec:
    """Everything that decides how one part looks; drawn from the part's own RNG."""

    part_id: int
    kind: str
    seed: int
    width: float  # unrotated size in frame pixels
    height: float
    angle_deg: float
    defects: tuple[str, ...]  # requested defect classes, in placement order
    burn: bool = False  # the unlabelled novel defect (SceneConfig.novel_defect_rate)


@dataclass(frozen=True)
class SpriteObject:
    cls: str
    box: BoxF  # in sprite pixels


@dataclass(frozen=True)
class Sprite:
    mult: F32  # (h, w, 1): what is left of the background
    add: F32  # (h, w, 3): premultiplied part colour
    anchor: tuple[float, float]  # the part's centre inside the sprite
    part_box: BoxF
    objects: tuple[SpriteObject, ...]


@dataclass(frozen=True)
class _Obj:
    cls: str
    mask: U8  # canvas mask (0/255) whose extent is the object's box
    paint: Callable[[F32], None]


@dataclass(frozen=True)
class Layout:
    """A part's geometry before painting: surface, coverage and every object it carries."""

    spec: PartSpec
    size: int
    alpha: F32
    surface: F32
    objects: tuple[_Obj, ...]

    @property
    def defects(self) -> tuple[str, ...]:
        return tuple(o.cls for o in self.objects if o.cls != "bolt")

    @property
    def bolts(self) -> int:
        return sum(o.cls == "bolt" for o in self.objects)


_K3 = np.ones((3, 3), np.uint8)


def _u8(a: npt.ArrayLike) -> U8:
    return np.asarray(a, dtype=np.uint8)


def _f32(a: npt.ArrayLike) -> F32:
    return np.asarray(a, dtype=np.float32)


def _rng(spec: PartSpec, stream: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, spec.part_id, stream])


def _box_of(mask: U8) -> tuple[int, int, int, int] | None:
    pts = cv2.findNonZero(mask)
    if pts is None:
        return None
    x, y, w, h = cv2.boundingRect(pts)
    return x, y, x + w, y + h


def _grid(roi: tuple[int, int, int, int]) -> tuple[F32, F32]:
    x1, y1, x2, y2 = roi
    yy, xx = np.mgrid[y1:y2, x1:x2].astype(np.float32)
    return xx, yy


def _roi(cx: float, cy: float, r: float, size: int) -> tuple[int, int, int, int]:
    return (
        max(0, int(cx - r - 2)),
        max(0, int(cy - r - 2)),
        min(size, int(cx + r + 3)),
        min(size, int(cy + r + 3)),
    )


def _polyline(mask: U8, pts: npt.NDArray[np.float64], thickness: int) -> None:
    """Anti-aliased polyline with sub-pixel vertices."""
    fixed = np.round(pts * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(mask, [fixed], False, 255, thickness, cv2.LINE_AA, shift=4)


def _disk(size: int, cx: float, cy: float, r: float) -> U8:
    m = np.zeros((size, size), np.uint8)
    cv2.circle(m, (round(cx * 16), round(cy * 16)), round(r * 16), 255, -1, cv2.LINE_AA, shift=4)
    return m


def _darken(img: F32, mask: U8, factor: float) -> None:
    x, y, w, h = cv2.boundingRect(mask)  # work on the mask's extent only: masks are small
    a = mask[y : y + h, x : x + w].astype(np.float32) / 255.0
    img[y : y + h, x : x + w] *= (1.0 - a * (1.0 - factor))[..., None]


def _blend(img: F32, mask: U8, color: Sequence[float], opacity: float = 1.0) -> None:
    x, y, w, h = cv2.boundingRect(mask)
    a = (mask[y : y + h, x : x + w].astype(np.float32) * (opacity / 255.0))[..., None]
    roi = img[y : y + h, x : x + w]
    roi *= 1.0 - a
    roi += a * np.array(color, np.float32)


# --------------------------------------------------------------------------- surfaces


def _part_mask(spec: PartSpec, size: int, s: float) -> tuple[U8, list[tuple[float, float]]]:
    """Unrotated part coverage and its bolt seats (canvas coordinates)."""
    c = size / 2
    w, h = spec.width, spec.height
    m = np.zeros((size, size), np.uint8)
    x1, y1, x2, y2 = c - w / 2, c - h / 2, c + w / 2, c + h / 2
    inset = 42 * s

    def rounded(ax: float, ay: float, bx: float, by: float, r: float) -> None:
        cv2.rectangle(m, (round(ax + r), round(ay)), (round(bx - r), round(by)), 255, -1)
        cv2.rectangle(m, (round(ax), round(ay + r)), (round(bx), round(by - r)), 255, -1)
        for px, py in ((ax + r, ay + r), (bx - r, ay + r), (ax + r, by - r), (bx - r, by - r)):
            cv2.circle(m, (round(px), round(py)), round(r), 255, -1, cv2.LINE_AA)

    if spec.kind == "plate":
        rounded(x1, y1, x2, y2, 14 * s)
        seats = [(x1 + inset, y1 + inset), (x2 - inset, y1 + inset)]
        seats += [(x1 + inset, y2 - inset), (x2 - inset, y2 - inset)]
    elif spec.kind == "bracket":
        bar, leg = 140 * s, 150 * s
        rounded(x1, y1, x2, y1 + bar, 12 * s)
        rounded(x1, y1, x1 + leg, y2, 12 * s)
        seats = [(x1 + leg / 2, y1 + bar / 2), (x2 - inset - 4 * s, y1 + bar / 2)]
        seats += [(x1 + leg / 2, y2 - inset - 4 * s)]
    elif spec.kind == "washer":
        r_out = w / 2
        cv2.circle(m, (round(c * 16),) * 2, round(r_out * 16), 255, -1, cv2.LINE_AA, shift=4)
        cv2.circle(m, (round(c * 16),) * 2, round(0.36 * r_out * 16), 0, -1, cv2.LINE_AA, 4)
        seats = []
    else:
        raise ValueError(f"unknown part kind {spec.kind!r}")
    return m, seats


def _surface(spec: PartSpec, mask: U8, s: float) -> F32:
    """Base material: brushed steel plates, powder-coated brackets, zinc-plated washers."""
    rng = _rng(spec, 1)
    size = mask.shape[0]
    noise = rng.normal(0.0, 1.0, (size, size)).astype(np.float32)
    if spec.kind == "plate":
        base = np.array([158, 160, 163], np.float32) + rng.uniform(-8, 8)
        k = max(3, int(41 * s) | 1)
        tex = cv2.blur(noise, (k, 1))
        tex = tex / (tex.std() + 1e-6) * 7.0
    elif spec.kind == "bracket":
        paints = ((40, 160, 215), (150, 105, 45), (60, 125, 70))
        base = np.array(paints[int(rng.integers(len(paints)))], np.float32)
        tex = cv2.GaussianBlur(noise, (0, 0), 1.5 * s) * 6.0
    else:
        base = np.array([186, 183, 176], np.float32)
        tex = cv2.GaussianBlur(noise, (0, 0), 6 * s)
        tex = tex / (tex.std() + 1e-6) * 6.0
    img = np.empty((size, size, 3), np.float32)
    img[:] = base
    img += tex[..., None]
    # Bevelled edges: the rim facing the light is bright, the opposite rim dark.
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), max(1.0, 2.5 * s))
    gx = cv2.Sobel(soft, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(soft, cv2.CV_32F, 0, 1, ksize=3)
    bevel = -(gx * _LIGHT[0] + gy * _LIGHT[1]) * 0.9
    img *= (1.0 + np.clip(bevel, -0.5, 0.5))[..., None]
    return img


# --------------------------------------------------------------------------- objects


def _bolt(spec: PartSpec, n: int, seat: tuple[float, float], size: int, s: float) -> _Obj:
    rng = _rng(spec, 200 + n)
    cx, cy = seat
    rs, rh = 25 * s, 21 * s
    theta = rng.uniform(0, math.pi / 3)
    mask = _disk(size, cx, cy, rs)

    def paint(img: F32) -> None:
        _blend(img, mask, (150, 152, 150))  # zinc washer under the head
        x1, y1, x2, y2 = _roi(cx, cy, rs, size)
        xx, yy = _grid((x1, y1, x2, y2))
        u, v = (xx - cx) / rs, (yy - cy) / rs
        d = np.sqrt(u * u + v * v) + 1e-6
        rim = np.clip((d - 0.8) / 0.2, 0, 1) * (d <= 1.0)
        shade = -(u * _LIGHT[0] + v * _LIGHT[1]) / d * rim * 0.35  # convex washer rim
        img[y1:y2, x1:x2] *= (1.0 - shade)[..., None]
        corners = [theta + k * math.pi / 3 for k in range(6)]
        verts = [(cx + rh * math.cos(a), cy + rh * math.sin(a)) for a in corners]
        shadow = np.zeros((size, size), np.uint8)
        hexagon = np.round(np.array(verts) * 16).astype(np.int32)
        off = round(3 * s * 16)
        cv2.fillPoly(shadow, [hexagon + off], 255, cv2.LINE_AA, shift=4)
        _darken(img, shadow, 0.45)
        for k in range(6):  # six flank faces, each lit by its angle to the light
            face = np.zeros((size, size), np.uint8)
            tri = np.round(np.array([(cx, cy), verts[k], verts[(k + 1) % 6]]) * 16)
            cv2.fillPoly(face, [tri.astype(np.int32)], 255, cv2.LINE_AA, shift=4)
            phi = theta + (k + 0.5) * math.pi / 3
            lit = math.cos(phi) * _LIGHT[0] + math.sin(phi) * _LIGHT[1]
            _blend(img, face, tuple(float(c * (0.75 + 0.45 * lit)) for c in (135, 139, 145)))
        top = _disk(size, cx, cy, 0.62 * rh)
        _blend(img, top, (158, 161, 166))
        ring = np.zeros((size, size), np.uint8)
        cv2.circle(
            ring,
            (round(cx * 16), round(cy * 16)),
            round(0.62 * rh * 16),
            255,
            max(1, round(1.5 * s)),
            cv2.LINE_AA,
            shift=4,
        )
        _darken(img, ring, 0.6)

    return _Obj("bolt", mask, paint)


def _missing_bolt(spec: PartSpec, n: int, seat: tuple[float, float], size: int, s: float) -> _Obj:
    cx, cy = seat
    rs = 25 * s
    mask = _disk(size, cx, cy, rs)

    def paint(img: F32) -> None:
        x1, y1, x2, y2 = _roi(cx, cy, rs, size)
        xx, yy = _grid((x1, y1, x2, y2))
        u, v = (xx - cx) / rs, (yy - cy) / rs
        d = np.sqrt(u * u + v * v) + 1e-6
        f = np.ones_like(d)
        f = np.where((d > 0.8) & (d <= 1.0), 0.82, f)  # scuffed ring where the washer sat
        cham = (d > 0.5) & (d <= 0.8)  # countersink: a cone whose far side faces the light
        lit = (u * _LIGHT[0] + v * _LIGHT[1]) / d
        f = np.where(cham, 1.0 - 0.75 * lit, f)
        f = np.where(d <= 0.5, 0.14, f)
        f = np.where((d <= 0.5) & (np.sin(d * 60.0) > 0.3), 0.32, f)  # thread crests
        img[y1:y2, x1:x2] *= f[..., None]

    return _Obj("missing_bolt", mask, paint)


def _scratch(rng: np.random.Generator, c: tuple[float, float], size: int, s: float) -> _Obj:
    ang = math.radians(rng.uniform(25, 65) + (90 if rng.random() < 0.5 else 0))
    length = rng.uniform(140, 210) * s
    t = max(3, round(rng.uniform(8, 10) * s))
    d = np.array([math.cos(ang), math.sin(ang)])
    perp = np.array([-d[1], d[0]])
    p0 = np.array(c) - d * length / 2
    p2 = np.array(c) + d * length / 2
    p1 = np.array(c) + perp * rng.uniform(-12, 12) * s
    ts = np.linspace(0, 1, 16)[:, None]
    pts = (1 - ts) ** 2 * p0 + 2 * (1 - ts) * ts * p1 + ts**2 * p2
    groove = np.zeros((size, size), np.uint8)
    _polyline(groove, pts, t)
    lip = np.zeros((size, size), np.uint8)  # the groove's bright flank, offset toward the light
    _polyline(lip, pts + perp * (0.25 * t) * np.sign(perp @ _LIGHT), max(2, t // 2))

    def paint(img: F32) -> None:
        _darken(img, groove, 0.28)
        _blend(img, lip, (238, 240, 242), 0.9)

    return _Obj("scratch", groove, paint)


def _dent(rng: np.random.Generator, c: tuple[float, float], size: int, s: float) -> _Obj:
    r = rng.uniform(28, 38) * s
    ecc = rng.uniform(0.8, 1.0)
    rot = rng.uniform(0, math.pi)
    hole = rng.random() < 0.3
    cx, cy = c
    x1, y1, x2, y2 = _roi(cx, cy, r * 1.15, size)
    xx, yy = _grid((x1, y1, x2, y2))
    dx, dy = xx - cx, yy - cy
    u = (dx * math.cos(rot) + dy * math.sin(rot)) / r
    v = (-dx * math.sin(rot) + dy * math.cos(rot)) / (r * ecc)
    dd = np.sqrt(u * u + v * v) + 1e-6
    mask = np.zeros((size, size), np.uint8)
    mask[y1:y2, x1:x2] = np.clip((1.05 - dd) * 10, 0, 1) * 255
    nx, ny = dx / (r * dd), dy / (r * dd)  # unit direction from the centre, image axes
    lit = nx * _LIGHT[0] + ny * _LIGHT[1]

    def paint(img: F32) -> None:
        # Concave: the wall nearest the light is in shade, the far wall catches the light,
        # and the raised lip on the near side shines.
        if hole:
            f = np.where(dd <= 0.55, 0.1, 1.0 - 0.9 * lit * np.clip((1.0 - dd) * 6, 0, 1))
        else:
            slope = dd * np.clip((1.05 - dd) * 8, 0, 1)
            f = 1.0 - 0.85 * lit * slope - 0.25 * np.clip(1.0 - dd * dd, 0, 1)
        lip = np.clip(1.0 - np.abs(dd - 1.05) * 8, 0, 1) * np.clip(lit, 0, 1) * 0.35
        img[y1:y2, x1:x2] *= (f + lip)[..., None]

    return _Obj("dent", mask, paint)


def _stain(rng: np.random.Generator, c: tuple[float, float], size: int, s: float) -> _Obj:
    big = rng.uniform(34, 52) * s
    color = ((30, 80, 150), (40, 36, 32), (70, 60, 120))[int(rng.integers(3))]
    opacity = rng.uniform(0.7, 0.85)
    blob = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(5, 9))):
        off = np.clip(rng.normal(0, 0.4 * big, 2), -big, big)
        axes = (round(rng.uniform(0.35, 0.7) * big), round(rng.uniform(0.35, 0.7) * big))
        centre = (round(c[0] + off[0]), round(c[1] + off[1]))
        cv2.ellipse(blob, centre, axes, rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA)
    soft = cv2.GaussianBlur(blob, (0, 0), max(1.0, 2.5 * s))
    mottle = rng.uniform(0.75, 1.0, (size, size)).astype(np.float32)
    mottle = _f32(cv2.GaussianBlur(mottle, (0, 0), 3 * s))
    mask = np.where(soft > 100, 255, 0).astype(np.uint8)

    def paint(img: F32) -> None:
        _blend(img, (soft * mottle).astype(np.uint8), color, opacity)

    return _Obj("stain", mask, paint)


def _crack(rng: np.random.Generator, c: tuple[float, float], size: int, s: float) -> _Obj:
    ang = math.radians(rng.uniform(30, 60) + (90 if rng.random() < 0.5 else 0))
    length = rng.uniform(120, 180) * s
    nseg = 9
    step = length / nseg
    pts = [np.array(c) - np.array([math.cos(ang), math.sin(ang)]) * length / 2]
    for _ in range(nseg):
        a = ang + rng.normal(0, math.radians(28))
        pts.append(pts[-1] + np.array([math.cos(a), math.sin(a)]) * step)
    t = max(3, round(rng.uniform(6, 8) * s))
    line = np.zeros((size, size), np.uint8)
    _polyline(line, np.array(pts), t)
    for _ in range(int(rng.integers(1, 3))):
        start = pts[int(rng.integers(2, nseg - 1))]
        a0 = ang + math.radians(rng.choice([-1, 1]) * rng.uniform(30, 60))
        branch = [start]
        for _ in range(3):
            a = a0 + rng.normal(0, math.radians(25))
            branch.append(branch[-1] + np.array([math.cos(a), math.sin(a)]) * step * 0.7)
        _polyline(line, np.array(branch), max(2, t // 2))

    def paint(img: F32) -> None:
        _blend(img, line, (22, 22, 24), 0.95)

    return _Obj("crack", line, paint)


_SURFACE_PAINTERS: dict[
    str, Callable[[np.random.Generator, tuple[float, float], int, float], _Obj]
] = {"scratch": _scratch, "dent": _dent, "stain": _stain, "crack": _crack}


def layout(spec: PartSpec, s: float) -> Layout:
    """Decide where every bolt and defect goes (no omission here, see module docstring)."""
    size = math.ceil(math.hypot(spec.width, spec.height) + 40 * s)
    mask, seats = _part_mask(spec, size, s)
    surface = _surface(spec, mask, s)
    rs = 25 * s
    n_missing = spec.defects.count("missing_bolt")
    miss_rng = _rng(spec, 2)
    missing = set(miss_rng.choice(len(seats), size=min(n_missing, len(seats)), replace=False))
    seat_block = np.zeros_like(mask)
    for x, y in seats:
        cv2.circle(seat_block, (round(x), round(y)), round(rs + 4 * s), 255, -1)
    # Defects stay on the part and off the bolt seats so their boxes hold only their pixels.
    allowed = _u8(cv2.erode(mask, _K3, iterations=max(1, round(3 * s))))
    allowed = _u8(cv2.bitwise_and(allowed, cv2.bitwise_not(seat_block)))
    free = _u8(cv2.erode(mask, _K3, iterations=max(1, round(10 * s))))
    free = _u8(cv2.bitwise_and(free, cv2.bitwise_not(cv2.dilate(seat_block, _K3, iterations=6))))
    min_side = 44 * s
    objs: list[_Obj] = []
    for n, cls in enumerate(d for d in spec.defects if d != "missing_bolt"):
        rng = _rng(spec, 100 + n)
        for _attempt in range(12):
            dist = cv2.distanceTransform(free, cv2.DIST_L2, 3)
            need = 30 * s if cls in ("dent", "stain") else 20 * s
            ys, xs = np.nonzero(dist >= need)
            if len(xs) == 0:
                ys, xs = np.nonzero(free)
                if len(xs) == 0:
                    break
            k = int(rng.integers(len(xs)))
            obj = _SURFACE_PAINTERS[cls](rng, (float(xs[k]), float(ys[k])), size, s)
            clipped = _u8(cv2.bitwise_and(obj.mask, allowed))
            box = _box_of(np.where(clipped > 127, 255, 0).astype(np.uint8))
            if box is None or min(box[2] - box[0], box[3] - box[1]) < min_side:
                continue
            # Label and paint only the part that lies on the surface (long marks get cut).
            obj = _Obj(cls, clipped, _clipped(obj.paint, allowed))
            objs.append(obj)
            grown = cv2.dilate(obj.mask, _K3, iterations=max(1, round(8 * s)))
            free = _u8(cv2.bitwise_and(free, cv2.bitwise_not(grown)))
            break
    if spec.burn:
        _burn(spec, free, allowed, surface, s)
    for n, seat in enumerate(seats):
        if n in missing:
            objs.append(_missing_bolt(spec, n, seat, size, s))
        else:
            objs.append(_bolt(spec, n, seat, size, s))
    return Layout(spec, size, mask.astype(np.float32) / 255.0, surface, tuple(objs))


def _burn(spec: PartSpec, free: U8, allowed: U8, surface: F32, s: float) -> None:
    """Paint a heat-tint burn onto the surface: a charred core in oxide rings (blue, purple,
    bronze, straw). Its own RNG stream, placed after every labelled object in what they left
    free, so nothing else moves; deliberately not an object: nothing labels it."""
    rng = _rng(spec, 300)
    ys, xs = np.nonzero(cv2.distanceTransform(free, cv2.DIST_L2, 3) >= 24 * s)
    if len(xs) == 0:
        ys, xs = np.nonzero(free)
        if len(xs) == 0:
            return
    k = int(rng.integers(len(xs)))
    cx, cy = float(xs[k]), float(ys[k])
    r = rng.uniform(24, 34) * s
    size = surface.shape[0]
    x1, y1, x2, y2 = _roi(cx, cy, r, size)
    xx, yy = _grid((x1, y1, x2, y2))
    wobble = 1.0 + 0.12 * np.sin(np.arctan2(yy - cy, xx - cx) * 3 + rng.uniform(0, 6.3))
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / (r * wobble)
    rings = np.array([(25, 25, 30), (170, 95, 40), (130, 50, 115), (40, 95, 165), (95, 185, 215)])
    pos = np.clip(d, 0, 1) * (len(rings) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(rings) - 2)
    frac = (pos - lo)[..., None]
    color = rings[lo] * (1 - frac) + rings[lo + 1] * frac
    a = np.clip((1.0 - d) * 4, 0, 1) * 0.85 * (allowed[y1:y2, x1:x2] / 255.0)
    roi = surface[y1:y2, x1:x2]
    roi += (color.astype(np.float32) - roi) * a[..., None].astype(np.float32)


def _clipped(paint: Callable[[F32], None], allowed: U8) -> Callable[[F32], None]:
    """Restrict a painter to ``allowed`` pixels (paint on a copy, keep only the allowed part)."""
    keep = (allowed.astype(np.float32) / 255.0)[..., None]

    def run(img: F32) -> None:
        scratch = img.copy()
        paint(scratch)
        img += (scratch - img) * keep

    return run


def render_sprite(lay: Layout, s: float, blur_px: int, omit: Collection[str] = ()) -> Sprite:
    """Paint, rotate, shadow, blur and crop a part; boxes follow the same transform."""
    size = lay.size
    img = lay.surface.copy()
    drawn = [o for o in lay.objects if o.cls not in omit]
    for o in drawn:
        o.paint(img)
    np.clip(img, 0, 255, out=img)
    c = size / 2
    rot = cv2.getRotationMatrix2D((c, c), lay.spec.angle_deg, 1.0)
    premult = img * lay.alpha[..., None]
    add = _f32(cv2.warpAffine(premult, rot, (size, size), flags=cv2.INTER_LINEAR))
    alpha = _f32(cv2.warpAffine(lay.alpha, rot, (size, size), flags=cv2.INTER_LINEAR))
    shadow = cv2.GaussianBlur(alpha, (0, 0), max(1.0, 6 * s))
    shift = np.array([[1, 0, 7 * s], [0, 1, 9 * s]], np.float32)
    shadow = _f32(cv2.warpAffine(shadow, shift, (size, size)))
    mult = (1.0 - alpha) * (1.0 - _SHADOW_STRENGTH * shadow)
    if blur_px > 1:
        add = _f32(cv2.blur(add, (blur_px, 1), borderType=cv2.BORDER_CONSTANT))
        mult = 1.0 - _f32(cv2.blur(1.0 - mult, (blur_px, 1), borderType=cv2.BORDER_CONSTANT))
    ys, xs = np.nonzero(mult < 0.995)
    x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

    def box(mask: U8) -> BoxF:
        pts = cv2.findNonZero(np.where(mask > 127, 255, 0).astype(np.uint8))
        hull = cv2.convexHull(pts).reshape(-1, 2).astype(np.float64)
        moved = hull @ rot[:, :2].T + rot[:, 2]
        return (
            float(moved[:, 0].min()) - x1,
            float(moved[:, 1].min()) - y1,
            float(moved[:, 0].max()) + 1 - x1,
            float(moved[:, 1].max()) + 1 - y1,
        )

    part_mask = (lay.alpha * 255).astype(np.uint8)
    return Sprite(
        mult=np.ascontiguousarray(mult[y1:y2, x1:x2, None]),
        add=np.ascontiguousarray(add[y1:y2, x1:x2]),
        anchor=(c - x1, c - y1),
        part_box=box(part_mask),
        objects=tuple(SpriteObject(o.cls, box(o.mask)) for o in drawn),
    )
