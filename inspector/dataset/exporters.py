"""``inspector dataset export``: captured frames (``learn.capture.dir``) → YOLO or COCO
with the model's predictions as pre-annotations, for CVAT or Label Studio to import
(both read YOLO 1.1 folders and COCO 1.0 JSON)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Literal

import yaml

from inspector.dataset.importers import Box, DatasetError, Sample, check_box, yolo_line

ExportFormat = Literal["yolo", "coco"]


def read_capture(src: Path, min_score: float = 0.0) -> tuple[list[Sample], list[str], int]:
    """→ (samples, class names in the model's order, records skipped as unreadable)."""
    if not src.is_dir():
        raise DatasetError(f"{src}: not a folder")
    samples: list[Sample] = []
    names: list[str] = []
    skipped = 0
    for meta in sorted(src.glob("*.json")):
        try:
            rec: dict[str, Any] = json.loads(meta.read_text())
            image = meta.with_suffix(".jpg")
            if not image.exists():
                raise ValueError("its .jpg is missing")
            w, h = int(rec["width"]), int(rec["height"])
            boxes = [
                Box(str(p["cls"]), float(p["x1"]), float(p["y1"]), float(p["x2"]), float(p["y2"]))
                for p in rec.get("predictions", [])
                if float(p.get("score", 1.0)) >= min_score
            ]
        except (OSError, ValueError, KeyError, TypeError):
            skipped += 1
            continue
        boxes = [b for b in boxes if check_box(meta.name, b, w, h) is None]
        for c in [*rec.get("classes", []), *(b.cls for b in boxes)]:
            if c not in names:
                names.append(c)
        samples.append(Sample(image=image, width=w, height=h, boxes=boxes, split="train"))
    if not samples:
        raise DatasetError(f"{src}: no captured frames")
    return samples, names, skipped


def split_of(name: str, val_fraction: float) -> str:
    """Deterministic: the same frame lands in the same split on every export."""
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def export_yolo(
    samples: list[Sample], names: list[str], out: Path, val_fraction: float = 0.2
) -> None:
    index = {n: i for i, n in enumerate(names)}
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True)
        (out / "labels" / split).mkdir(parents=True)
    splits = [split_of(s.image.name, val_fraction) for s in samples]
    if val_fraction > 0 and len(samples) > 1 and "val" not in splits:
        splits[-1] = "val"  # held-out data to evaluate a fine-tune on
    if "train" not in splits:
        splits[0] = "train"
    for s, split in zip(samples, splits, strict=True):
        s.split = split
        shutil.copyfile(s.image, out / "images" / split / s.image.name)
        (out / "labels" / split / f"{s.image.stem}.txt").write_text(
            "".join(yolo_line(b, index[b.cls], s.width, s.height) + "\n" for b in s.boxes)
        )
    (out / "data.yaml").write_text(
        yaml.safe_dump(
            {
                "path": str(out.resolve()),
                "train": "images/train",
                "val": "images/val",
                "names": dict(enumerate(names)),
            },
            sort_keys=False,
        )
    )
    # CVAT's "YOLO 1.1" import reads obj.names / train.txt beside the labels
    (out / "obj.names").write_text("".join(f"{n}\n" for n in names))
    (out / "train.txt").write_text("".join(f"images/{s.split}/{s.image.name}\n" for s in samples))


def export_coco(samples: list[Sample], names: list[str], out: Path) -> None:
    (out / "images").mkdir(parents=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i, s in enumerate(samples, start=1):
        shutil.copyfile(s.image, out / "images" / s.image.name)
        images.append({"id": i, "file_name": s.image.name, "width": s.width, "height": s.height})
        for b in s.boxes:
            w, h = b.x2 - b.x1, b.y2 - b.y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": names.index(b.cls) + 1,
                    "bbox": [round(b.x1, 2), round(b.y1, 2), round(w, 2), round(h, 2)],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                }
            )
    (out / "annotations").mkdir()
    (out / "annotations" / "instances.json").write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [
                    {"id": i + 1, "name": n, "supercategory": "defect"} for i, n in enumerate(names)
                ],
            },
            indent=1,
        )
    )


def export_capture(
    src: Path, fmt: ExportFormat, out: Path, min_score: float = 0.0, val_fraction: float = 0.2
) -> dict[str, Any]:
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: exists and is not empty (choose a new folder)")
    samples, names, skipped = read_capture(src, min_score)
    if fmt == "yolo":
        export_yolo(samples, names, out, val_fraction)
    else:
        export_coco(samples, names, out)
    return {
        "format": fmt,
        "images": len(samples),
        "boxes": sum(len(s.boxes) for s in samples),
        "classes": names,
        "skipped": skipped,
        "out": str(out),
    }
