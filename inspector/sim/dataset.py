"""A YOLO training set drawn by the same renderer the simulated cameras use.

Train and val come from disjoint clips (different seeds), so validation never sees a part the
model was trained on. Frames are sampled across many clips and part periods: parts in full view,
parts entering and leaving (labelled only where at least half visible, like the ground truth)
and a few frames of empty belt so the model learns that nothing is also an answer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson
import yaml

from inspector.sim.scene import ConveyorScene, SceneConfig
from inspector.sim.truth import CLASS_NAMES, GENERATOR_VERSION, FrameTruth

__all__ = ["write_data_yaml", "write_yolo_dataset", "yolo_label_lines"]

_IMAGES_PER_CLIP = 12  # consecutive frames are near-duplicates: take few per clip
_PERIODS_S = (2.5, 3.25, 4.0)  # the longest leaves gaps of empty belt between parts
_JPEG_QUALITY = 85


def yolo_label_lines(truth: FrameTruth) -> list[str]:
    """One ``class cx cy w h`` line (normalised to the frame) per labelled box."""
    w, h = truth.width, truth.height
    lines = []
    for obj in truth.labels():
        x1, y1, x2, y2 = obj.box
        lines.append(
            f"{obj.class_id} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
            f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
        )
    return lines


def _configs(
    base_seed: int, n_clips: int, width: int, height: int, defect_rate: float
) -> list[SceneConfig]:
    return [
        SceneConfig(
            seed=base_seed + c,
            width=width,
            height=height,
            defect_rate=defect_rate,
            part_period_s=_PERIODS_S[c % len(_PERIODS_S)],
            clip_seconds=12.0,
        )
        for c in range(n_clips)
    ]


def _write_split(
    out: Path,
    split: str,
    n: int,
    configs: list[SceneConfig],
    rng: np.random.Generator,
    empty_share: float,
) -> list[dict[str, Any]]:
    scenes = [ConveyorScene(c) for c in configs]
    empty: list[tuple[int, int]] = []
    busy: list[tuple[int, int]] = []
    for ci, scene in enumerate(scenes):
        for i in range(scene.n_frames):
            if not scene.parts_in_view(i):
                empty.append((ci, i))
            elif scene.truth(i).parts:
                busy.append((ci, i))
    n_empty = min(len(empty), round(empty_share * n))
    picks = [empty[k] for k in rng.choice(len(empty), n_empty, replace=False)] if n_empty else []
    n_busy = min(len(busy), n - n_empty)
    picks += [busy[k] for k in rng.choice(len(busy), n_busy, replace=False)]
    if len(picks) < n:
        raise ValueError(f"only {len(picks)} distinct frames available for {n} {split} images")
    img_dir, lbl_dir = out / "images" / split, out / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for ci, i in sorted(picks):  # grouped by clip so each part's sprite is drawn once
        scene = scenes[ci]
        bgr, truth = scene.render(i)
        stem = f"s{scene.config.seed:06d}_f{i:05d}"
        ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        (img_dir / f"{stem}.jpg").write_bytes(jpg.tobytes())
        lines = yolo_label_lines(truth)
        (lbl_dir / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
        records.append(
            {
                "image": f"images/{split}/{stem}.jpg",
                "config": scene.config.to_dict(),
                "truth": truth.to_dict(),
            }
        )
    return records


def write_yolo_dataset(
    out_dir: Path | str,
    n_train: int,
    n_val: int,
    seed: int = 0,
    width: int = 1280,
    height: int = 720,
    *,
    defect_rate: float = 0.6,
    empty_share: float = 0.07,
) -> Path:
    """Write ``images/``, ``labels/``, ``data.yaml`` and ``manifest.json``; return data.yaml.

    ``defect_rate`` is higher than a real line's so that every defect class has enough
    examples. The manifest holds each image's scene config and full ground truth.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 7])
    # Seeds: train clips from seed*10000, val clips from seed*10000 + 5000: never shared.
    n_train_clips = max(2, math.ceil(n_train / _IMAGES_PER_CLIP))
    n_val_clips = max(2, math.ceil(n_val / _IMAGES_PER_CLIP))
    manifest: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "class_names": list(CLASS_NAMES),
        "seed": seed,
    }
    for split, n, base, n_clips in (
        ("train", n_train, seed * 10000, n_train_clips),
        ("val", n_val, seed * 10000 + 5000, n_val_clips),
    ):
        configs = _configs(base, n_clips, width, height, defect_rate)
        manifest[split] = _write_split(out, split, n, configs, rng, empty_share)
    return write_data_yaml(out, manifest)


def write_data_yaml(out: Path, manifest: dict[str, Any], **extra: Any) -> Path:
    """Ultralytics' ``data.yaml`` (the simulator's classes, ``images/{train,val}``) and the
    ``manifest.json`` beside it; returns the data.yaml."""
    data = {
        "path": str(out),
        "train": "images/train",
        "val": "images/val",
        "nc": len(CLASS_NAMES),
        "names": dict(enumerate(CLASS_NAMES)),
        "generator_version": GENERATOR_VERSION,
        **extra,
    }
    data_yaml = out / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    (out / "manifest.json").write_bytes(orjson.dumps(manifest))
    return data_yaml
