"""Inspection modes: look at defects at the resolution they need.

``frame`` is the detector on the whole frame, reduced to its input size (a 1280x720 frame
becomes 320x192, a part ~75 px wide, a crack one or two pixels). The two other modes run a
*region model* on full-resolution squares and map its boxes back to frame pixels:

- ``parts``: the frame model locates the parts on the reduced frame (part AP ~0.99); each
  part is cut from the full-resolution frame as a padded square (``detect.crops``), all
  crops of a batch of frames go through the region model in one call, and the defects
  found in a crop are kept when their centre lies on that part's box, give or take half
  the pad (a neighbour's defect reaching into the margin is its own crop's to report).
- ``tiles``: the region model on a grid of overlapping full-resolution tiles covering the
  frame (sliced inference), with class-aware NMS across tiles.

Either way the result is one list of detections per frame in frame pixels: the frame
model's part boxes (the rules and the anomaly channel use them) followed by the region
model's other classes. Rules, evidence and events do not know which mode ran.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace

import cv2
import numpy as np
import numpy.typing as npt

from inspector.config import InspectionSettings, ModelSettings
from inspector.detect.crops import CropGeom, crop_part
from inspector.events import Box, Detection
from inspector.inference.model import (
    Detector,
    ModelInfo,
    at_input_size,
    decode_scale,
    load_detector,
    nms,
    to_detections,
)

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
BoxF = tuple[float, float, float, float]

REGION_BATCH = 32  # crops per region-model call at most (bounded memory)
MERGE_IOU = 0.5  # class-aware NMS across overlapping regions


def tile_boxes(width: int, height: int, side: int, overlap: float) -> list[BoxF]:
    """Square tiles of ``side`` covering the frame with at least ``overlap`` between
    neighbours, evenly spread (the last tile ends on the frame edge)."""
    side = min(side, max(width, height))

    def starts(extent: int) -> list[int]:
        if extent <= side:
            return [(extent - side) // 2]  # one tile, centred (padded beyond the frame)
        n = max(2, math.ceil((extent - side) / (side * (1 - overlap))) + 1)
        step = (extent - side) / (n - 1)
        return [round(k * step) for k in range(n)]

    return [
        (float(x), float(y), float(x + side), float(y + side))
        for y in starts(height)
        for x in starts(width)
    ]


def _scaled(dets: list[Detection], s: int) -> list[Detection]:
    if s == 1:
        return dets
    return [
        d.model_copy(
            update={"box": Box(x1=d.box.x1 * s, y1=d.box.y1 * s, x2=d.box.x2 * s, y2=d.box.y2 * s)}
        )
        for d in dets
    ]


class RegionDetector:
    """A Detector over full-resolution frames: the frame model + the region model."""

    full_resolution = True  # the worker decodes this line's JPEGs at full size

    def __init__(self, frame: Detector, region: Detector, settings: InspectionSettings) -> None:
        if settings.mode not in ("parts", "tiles"):
            raise ValueError(f"RegionDetector runs parts or tiles, not {settings.mode!r}")
        self.frame = frame
        self.locator = at_input_size(
            frame, settings.locate_size if settings.mode == "parts" else None
        )
        self.region = region
        self.settings = settings
        self.last_regions = 0  # regions the last detect() call inspected (bench, spans)
        fi, ri = frame.info, region.info
        names = dict(fi.names)
        for v in ri.names.values():
            if v not in names.values():
                names[max(names, default=-1) + 1] = v
        how = f"{settings.mode}:{settings.crop_size}:{self.locator.info.imgsz}"
        combined = hashlib.sha256(f"{fi.sha256}:{ri.sha256}:{how}".encode())
        self.info: ModelInfo = replace(
            fi,
            name=f"{fi.name}+{ri.name}",
            version=f"{settings.mode}:{ri.version}",
            sha256=combined.hexdigest(),
            names=names,
        )

    # ------------------------------------------------------------------ regions

    def _regions(self, image: U8, located: list[Detection]) -> list[tuple[BoxF, float]]:
        """(square box, pad) per region of one frame."""
        st = self.settings
        if st.mode == "tiles":
            h, w = image.shape[:2]
            return [(b, 0.0) for b in tile_boxes(w, h, st.tile_side, st.tile_overlap)]
        parts = [d for d in located if d.cls == st.part_class and d.score >= st.part_min_confidence]
        parts.sort(key=lambda d: -d.score)
        return [((d.box.x1, d.box.y1, d.box.x2, d.box.y2), st.pad) for d in parts[: st.max_parts]]

    def reduce(self, image: U8) -> tuple[U8, int]:
        """The frame as the locator sees it: reduced by the largest of 2, 4, 8 that keeps
        its input size (INTER_AREA, like the JPEG's own DCT scaling), and that factor.
        The worker makes it once per frame and shares it with vetting and drift."""
        h, w = image.shape[:2]
        s = decode_scale(w, h, self.locator.info.imgsz)
        if s == 1:
            return image, 1
        return np.asarray(
            cv2.resize(image, (w // s, h // s), interpolation=cv2.INTER_AREA), np.uint8
        ), s

    def detect(self, images: list[U8], reduced: list[U8] | None = None) -> list[list[Detection]]:
        """Detections per full-resolution frame; ``reduced`` (from ``reduce``) saves
        reducing them again."""
        if not images:
            return []
        st = self.settings
        located = self._locate(images, reduced)
        crops, owners = self._crops(images, located)
        self.last_regions = len(crops)
        found: list[list[Detection]] = []
        for start in range(0, len(crops), REGION_BATCH):
            found.extend(self.region.detect(crops[start : start + REGION_BATCH]))
        per_frame: list[list[tuple[F32, float, str]]] = [[] for _ in images]
        for (i, geom, box), dets in zip(owners, found, strict=True):
            h, w = images[i].shape[:2]
            self._collect(per_frame[i], dets, geom, box, w, h)
        out = []
        for i, dets in enumerate(located):
            kept = [d for d in dets if d.cls == st.part_class]
            out.append(kept + self._merge(per_frame[i]))
        return out

    def crops(self, images: list[U8]) -> list[U8]:
        """The squares the region model would see for ``images`` (INT8 calibration)."""
        return self._crops(images, self._locate(images))[0] if images else []

    def _crops(
        self, images: list[U8], located: list[list[Detection]]
    ) -> tuple[list[U8], list[tuple[int, CropGeom, BoxF]]]:
        crops: list[U8] = []
        owners: list[tuple[int, CropGeom, BoxF]] = []
        for i, (im, dets) in enumerate(zip(images, located, strict=True)):
            for box, pad in self._regions(im, dets):
                crop, geom = crop_part(im, box, self.settings.crop_size, pad)
                crops.append(crop)
                owners.append((i, geom, box))
        return crops, owners

    def _locate(self, images: list[U8], reduced: list[U8] | None = None) -> list[list[Detection]]:
        """The frame model (at ``locate_size`` when set) on reduced frames; boxes in
        full-resolution pixels."""
        small, scales = [], []
        for i, im in enumerate(images):
            if reduced is not None:
                r = reduced[i]
                small.append(r)
                scales.append(im.shape[1] // r.shape[1])
            else:
                r, s = self.reduce(im)
                small.append(r)
                scales.append(s)
        return [_scaled(d, s) for d, s in zip(self.locator.detect(small), scales, strict=True)]

    def _collect(
        self,
        into: list[tuple[F32, float, str]],
        dets: list[Detection],
        geom: CropGeom,
        part: BoxF,
        w: int,
        h: int,
    ) -> None:
        st = self.settings
        if not dets:
            return
        raw = np.array([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in dets], np.float32)
        mapped = geom.to_frame(raw, st.crop_size, w, h)
        # parts: a defect belongs to this crop's part when its centre is on the part's
        # box (give or take half the pad); tiles: everything the tile saw.
        for d, b in zip(dets, mapped, strict=True):
            if d.cls == st.part_class or b[2] <= b[0] or b[3] <= b[1]:
                continue
            if st.mode == "parts":
                cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
                side = geom.side
                if not (geom.x1 <= cx <= geom.x1 + side and geom.y1 <= cy <= geom.y1 + side):
                    continue
                if not _near(part, cx, cy, st.pad * side / 2):
                    continue
            into.append((b, d.score, d.cls))

    def _merge(self, found: list[tuple[F32, float, str]]) -> list[Detection]:
        if not found:
            return []
        boxes = np.stack([b for b, _, _ in found]).astype(np.float32)
        scores = np.array([s for _, s, _ in found], np.float32)
        classes = sorted({c for _, _, c in found})
        cid = np.array([classes.index(c) for _, _, c in found], np.intp)
        offset = (cid[:, None] * 100_000).astype(np.float32)  # class-aware NMS
        keep = nms(boxes + offset, scores, MERGE_IOU)
        return to_detections(boxes[keep], scores[keep], cid[keep], dict(enumerate(classes)))


def _near(box: BoxF, x: float, y: float, margin: float) -> bool:
    return box[0] - margin <= x <= box[2] + margin and box[1] - margin <= y <= box[3] + margin


def load_region_detector(
    frame: Detector, model: ModelSettings, settings: InspectionSettings
) -> Detector:
    """The line's Detector for its inspection mode (frame mode: the frame model itself)."""
    if settings.mode == "frame":
        return frame
    region = load_detector(
        model.model_copy(update={"path": settings.region_model, "imgsz": settings.crop_size})
    )
    return RegionDetector(frame, region, settings)
