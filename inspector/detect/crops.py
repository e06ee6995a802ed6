"""Part crops: a part's square cut from the full-resolution frame, and boxes between a crop
and its frame.

One geometry for every consumer of crops (the anomaly channel, the ``parts`` inspection
mode, the crop training set): a part's box becomes a square of its longer side plus ``pad``
of it on each side, centred on the box; what lies beyond the frame edge is the letterbox
grey, so a part cut by the frame edge keeps its place in the square. The square is resized
to ``size`` x ``size``; a box found in the crop maps back to the frame by the inverse of
that one scale and offset (clipped to the frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
BoxF = tuple[float, float, float, float]

FILL = 114  # the letterbox grey: what a crop shows beyond the frame edge


class CropError(ValueError):
    """A part box no crop can be cut from (empty or inverted)."""


@dataclass(frozen=True)
class CropGeom:
    """Where a part's square crop lies in the frame (may extend past the edges)."""

    x1: int
    y1: int
    side: int
    cut: bool  # the crop reaches beyond the frame (filled with FILL)

    def to_frame(self, boxes: F32, size: int, width: int, height: int) -> F32:
        """(n, 4) x1 y1 x2 y2 in the ``size`` crop → frame pixels, clipped to the frame."""
        s = self.side / size
        out = np.asarray(boxes, np.float32).reshape(-1, 4) * np.float32(s)
        out[:, [0, 2]] += self.x1
        out[:, [1, 3]] += self.y1
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
        return out

    def to_crop(self, boxes: F32, size: int) -> F32:
        """(n, 4) frame pixels → the ``size`` crop's pixels (not clipped)."""
        out = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
        out[:, [0, 2]] -= self.x1
        out[:, [1, 3]] -= self.y1
        return out * np.float32(size / self.side)


def crop_geom(box: BoxF, pad: float) -> tuple[int, int, int]:
    """The square around ``box`` (x1, y1, x2, y2): its longer side plus ``pad`` of it on each
    side, centred on the box. Returns (x1, y1, side) in frame pixels."""
    bx1, by1, bx2, by2 = box
    if not (bx2 > bx1 and by2 > by1):
        raise CropError(f"empty part box {box}")
    side = max(1, math.ceil(max(bx2 - bx1, by2 - by1) * (1 + 2 * pad)))
    cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
    return round(cx - side / 2), round(cy - side / 2), side


def crop_part(frame: U8, box: BoxF, size: int, pad: float) -> tuple[U8, CropGeom]:
    """The part's square crop, resized to ``size`` x ``size``; what lies beyond the frame
    is filled with the letterbox grey (and ``cut`` says so)."""
    h, w = frame.shape[:2]
    x1, y1, side = crop_geom(box, pad)
    x2, y2 = x1 + side, y1 + side
    fx1, fy1, fx2, fy2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    cut = (fx1, fy1, fx2, fy2) != (x1, y1, x2, y2)
    if cut:
        square = np.full((side, side, 3), FILL, np.uint8)
        if fx1 < fx2 and fy1 < fy2:
            square[fy1 - y1 : fy2 - y1, fx1 - x1 : fx2 - x1] = frame[fy1:fy2, fx1:fx2]
    else:
        square = frame[y1:y2, x1:x2]
    if side == size:
        return np.ascontiguousarray(square), CropGeom(x1, y1, side, cut)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    out = np.asarray(cv2.resize(square, (size, size), interpolation=interp), np.uint8)
    return out, CropGeom(x1, y1, side, cut)


def box_touches_edge(box: BoxF, w: int, h: int, margin: int) -> bool:
    """A part box cut by the frame edge (within ``margin`` pixels of it)."""
    x1, y1, x2, y2 = box
    return x1 <= margin or y1 <= margin or x2 >= w - margin or y2 >= h - margin
