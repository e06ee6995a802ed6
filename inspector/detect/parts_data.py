"""The crop training set of the ``parts`` inspection mode, drawn by the line simulator.

Each sampled frame goes through JPEG at the line's quality (what ingest sends), then every
part at least half in view is cut out at full resolution with the same geometry the worker
uses (``inspector.detect.crops``); the crop box is jittered in train (the locator's boxes
are not the truth's), never in val. Labels are every labelled object (the part itself,
bolts, defects, a neighbour's too) whose box keeps at least half its area inside the crop.
Class ids are the simulator's (``CLASS_NAMES``), so a crop model and the frame model share
one class list. Train and val come from disjoint clips (seeds ``seed*10000`` and
``seed*10000 + 5000``), never the evaluation seeds (7000-9999).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspector.detect.crops import crop_part
from inspector.sim.dataset import write_data_yaml
from inspector.sim.scene import ConveyorScene, SceneConfig
from inspector.sim.truth import CLASS_NAMES, GENERATOR_VERSION, FrameTruth

__all__ = ["crop_labels", "write_crop_dataset"]

_FRAMES_PER_CLIP = 10
_PERIODS_S = (2.5, 3.25, 4.0)
_MIN_KEPT = 0.5  # share of an object's box that must lie inside the crop to be labelled


def crop_labels(
    truth: FrameTruth,
    box: tuple[float, float, float, float],
    size: int,
    pad: float,
    shift: tuple[float, float, float] = (0.0, 0.0, 1.0),
) -> tuple[tuple[float, float, float, float], list[tuple[int, float, float, float, float]]]:
    """The (possibly jittered) crop box for the part ``box`` and the YOLO label rows
    (class, cx, cy, w, h normalised to the crop) of every object kept inside it.
    ``shift`` = (dx, dy, scale) moves the box by fractions of its size and scales it."""
    from inspector.detect.crops import CropGeom, crop_geom

    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2 + shift[0] * bw, (y1 + y2) / 2 + shift[1] * bh
    hw, hh = bw * shift[2] / 2, bh * shift[2] / 2
    jbox = (cx - hw, cy - hh, cx + hw, cy + hh)
    gx, gy, side = crop_geom(jbox, pad)
    geom = CropGeom(gx, gy, side, False)
    rows = []
    for obj in truth.labels():
        b = geom.to_crop(np.array(obj.box, np.float32), size)[0]
        area = float((b[2] - b[0]) * (b[3] - b[1]))
        c = b.clip(0, size)
        kept = float((c[2] - c[0]) * (c[3] - c[1]))
        if area <= 0 or kept < _MIN_KEPT * area or min(c[2] - c[0], c[3] - c[1]) < 2:
            continue
        rows.append(
            (
                obj.class_id,
                float((c[0] + c[2]) / 2 / size),
                float((c[1] + c[3]) / 2 / size),
                float((c[2] - c[0]) / size),
                float((c[3] - c[1]) / size),
            )
        )
    return jbox, rows


def _clips(n_frames: int) -> int:
    return max(2, math.ceil(n_frames / _FRAMES_PER_CLIP))


def _write_split(
    out: Path,
    split: str,
    n_frames: int,
    base_seed: int,
    size: int,
    pad: float,
    jitter: float,
    defect_rate: float,
    jpeg_quality: int,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    img_dir, lbl_dir = out / "images" / split, out / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    for c in range(_clips(n_frames)):
        scene = ConveyorScene(
            SceneConfig(
                seed=base_seed + c,
                defect_rate=defect_rate,
                part_period_s=_PERIODS_S[c % len(_PERIODS_S)],
                clip_seconds=12.0,
            )
        )
        busy = [i for i in range(scene.n_frames) if scene.truth(i).parts]
        take = min(len(busy), _FRAMES_PER_CLIP, n_frames - c * _FRAMES_PER_CLIP)
        if take <= 0:
            break
        for i in sorted(rng.choice(len(busy), take, replace=False)):
            frame_index = busy[int(i)]
            bgr, truth = scene.render(frame_index)
            _, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            frame = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), np.uint8)
            for p in truth.parts:
                shift = (
                    (
                        float(rng.uniform(-jitter, jitter)),
                        float(rng.uniform(-jitter, jitter)),
                        float(1 + rng.uniform(-jitter, jitter)),
                    )
                    if jitter
                    else (0.0, 0.0, 1.0)
                )
                jbox, rows = crop_labels(truth, p.box, size, pad, shift)
                crop, _ = crop_part(frame, jbox, size, pad)
                stem = f"s{scene.config.seed:06d}_f{frame_index:05d}_p{p.part_id:03d}"
                ok, jpg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
                if not ok:
                    raise RuntimeError("JPEG encoding failed")
                (img_dir / f"{stem}.jpg").write_bytes(jpg.tobytes())
                (lbl_dir / f"{stem}.txt").write_text(
                    "".join(f"{k} {a:.6f} {b:.6f} {w:.6f} {h:.6f}\n" for k, a, b, w, h in rows)
                )
                records.append({"image": f"images/{split}/{stem}.jpg", "part": p.to_dict()})
    return records


def write_crop_dataset(
    out_dir: Path | str,
    n_train_frames: int,
    n_val_frames: int,
    seed: int = 2,
    *,
    size: int = 320,
    pad: float = 0.08,
    jitter: float = 0.04,
    defect_rate: float = 0.6,
    jpeg_quality: int = 85,
) -> Path:
    """Write ``images/``, ``labels/``, ``data.yaml`` and ``manifest.json``; return data.yaml."""
    clip_seeds = [
        *range(seed * 10000, seed * 10000 + _clips(n_train_frames)),
        *range(seed * 10000 + 5000, seed * 10000 + 5000 + _clips(n_val_frames)),
    ]
    if any(7000 <= s < 10000 for s in clip_seeds):
        raise ValueError(f"seed {seed}: clips would reuse the evaluation seeds 7000-9999")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 11])
    t0 = time.time()
    manifest: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "class_names": list(CLASS_NAMES),
        "seed": seed,
        "crop": {"size": size, "pad": pad, "jitter": jitter, "jpeg_quality": jpeg_quality},
    }
    manifest["train"] = _write_split(
        out,
        "train",
        n_train_frames,
        seed * 10000,
        size,
        pad,
        jitter,
        defect_rate,
        jpeg_quality,
        rng,
    )
    manifest["val"] = _write_split(
        out,
        "val",
        n_val_frames,
        seed * 10000 + 5000,
        size,
        pad,
        0.0,
        defect_rate,
        jpeg_quality,
        rng,
    )
    data_yaml = write_data_yaml(out, manifest, crop=manifest["crop"])
    n_tr, n_va = len(manifest["train"]), len(manifest["val"])
    print(f"crop dataset: {n_tr}+{n_va} crops in {time.time() - t0:.0f}s at {out}", flush=True)
    return data_yaml
