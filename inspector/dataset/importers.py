"""Labelled datasets as users have them (Pascal VOC, COCO, YOLO) → one YOLO layout.

``import_dataset`` reads a dataset, validates every annotation against its image, and
writes ``images/{train,val}`` (links, or copies), ``labels/{train,val}/*.txt`` and a
``data.yaml`` that ``inspector train --data`` takes, plus ``import-report.json``
(counts per split and class, every problem found). A broken annotation is an error
naming the file and what is wrong; ``skip_invalid`` drops such images instead and
counts them. The images are never re-encoded.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

Format = Literal["voc", "coco", "yolo"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MAX_PROBLEMS_SHOWN = 20


class DatasetError(Exception):
    """A dataset that cannot be imported; ``problems`` lists each one with its file."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


@dataclass(frozen=True)
class Box:
    cls: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class Sample:
    """One image with its boxes (pixel coordinates) and the split it belongs to."""

    image: Path
    width: int
    height: int
    boxes: list[Box]
    split: str | None = None  # None: assigned by the importer


@dataclass
class ImportReport:
    format: str
    source: str
    classes: list[str]
    images: dict[str, int] = field(default_factory=dict)
    boxes: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "format": self.format,
            "source": self.source,
            "classes": self.classes,
            "images": self.images,
            "boxes": self.boxes,
            "skipped": len(self.skipped),
            "problems": self.skipped[:1000],
        }


# --------------------------------------------------------------------------- checks


def check_box(where: str, box: Box, width: int, height: int) -> str | None:
    """One line naming what is wrong with a pixel box, or None."""
    if not all(map(_finite, (box.x1, box.y1, box.x2, box.y2))):
        return f"{where}: coordinates are not numbers"
    if box.x2 <= box.x1 or box.y2 <= box.y1:
        return f"{where}: empty box ({box.x1:g},{box.y1:g})-({box.x2:g},{box.y2:g})"
    # VOC is 1-based and tools round: allow one pixel past the edge
    if box.x1 < -1 or box.y1 < -1 or box.x2 > width + 1 or box.y2 > height + 1:
        return (
            f"{where}: box ({box.x1:g},{box.y1:g})-({box.x2:g},{box.y2:g}) outside the "
            f"{width}x{height} image"
        )
    return None


def _finite(v: float) -> bool:
    return v == v and v not in (float("inf"), float("-inf"))


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header; None if it is not a readable image."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    return int(img.shape[1]), int(img.shape[0])


def _find_image(folder: Path, name: str) -> Path | None:
    p = folder / name
    if p.is_file():
        return p
    stem = Path(name).stem
    for suffix in IMAGE_SUFFIXES:
        q = folder / f"{stem}{suffix}"
        if q.is_file():
            return q
    return None


# --------------------------------------------------------------------------- readers


def read_voc(src: Path, problems: list[str]) -> list[Sample]:
    """``annotations/`` (or ``Annotations/``) of VOC XML next to ``images/`` (or
    ``JPEGImages/``); ``train.txt`` / ``val.txt`` (or ImageSets/Main) give the splits."""
    ann_dir = _first_dir(src, ["annotations", "Annotations"])
    img_dir = _first_dir(src, ["images", "JPEGImages"])
    splits = _voc_splits(src)
    samples: list[Sample] = []
    for xml_path in sorted(ann_dir.glob("*.xml")):
        where = str(xml_path.relative_to(src))
        try:
            root = ET.parse(xml_path).getroot()
        except ET.ParseError as exc:
            problems.append(f"{where}: not valid XML ({exc})")
            continue
        name = (root.findtext("filename") or f"{xml_path.stem}.jpg").strip()
        image = _find_image(img_dir, name) or _find_image(img_dir, xml_path.stem)
        if image is None:
            problems.append(f"{where}: image {name} not found in {img_dir.name}/")
            continue
        try:
            width = int(float(root.findtext("size/width") or 0))
            height = int(float(root.findtext("size/height") or 0))
        except ValueError:
            problems.append(f"{where}: <size> is not a number")
            continue
        real = image_size(image)
        if real is None:
            problems.append(f"{where}: image {image.name} does not decode")
            continue
        if (width, height) != real and width and height:
            problems.append(
                f"{where}: <size> says {width}x{height}, {image.name} is {real[0]}x{real[1]}"
            )
            continue
        width, height = real
        boxes, bad = [], False
        for i, obj in enumerate(root.findall("object"), 1):
            cls = (obj.findtext("name") or "").strip()
            try:
                coords = [
                    float(obj.findtext(f"bndbox/{k}") or "nan")
                    for k in ("xmin", "ymin", "xmax", "ymax")
                ]
            except ValueError:
                coords = [float("nan")] * 4
            box = Box(cls, *coords)
            if not cls:
                problems.append(f"{where}: object {i} has no <name>")
                bad = True
            elif err := check_box(f"{where}: object {i} ({cls})", box, width, height):
                problems.append(err)
                bad = True
            else:
                boxes.append(box)
        if not bad:
            samples.append(Sample(image, width, height, boxes, splits.get(xml_path.stem)))
    if not samples and not problems:
        raise DatasetError(f"no VOC annotations (*.xml) in {ann_dir}")
    return samples


def _first_dir(src: Path, names: list[str]) -> Path:
    for n in names:
        if (src / n).is_dir():
            return src / n
    raise DatasetError(f"{src}: expected a folder named {' or '.join(names)}")


def _voc_splits(src: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for split in ("train", "val"):
        for f in (src / f"{split}.txt", src / "ImageSets" / "Main" / f"{split}.txt"):
            if f.is_file():
                for line in f.read_text().split():
                    out[line.strip()] = split
                break
    return out


def read_coco(src: Path, problems: list[str]) -> list[Sample]:
    """``annotations/instances_<split>.json`` (or any ``*.json`` in ``src``) with the
    images in ``images/<split>/``, ``images/`` or next to the JSON."""
    jsons = sorted((src / "annotations").glob("*.json")) if (src / "annotations").is_dir() else []
    jsons = jsons or sorted(src.glob("*.json"))
    if not jsons:
        raise DatasetError(f"no COCO JSON in {src} or {src / 'annotations'}")
    samples: list[Sample] = []
    for jf in jsons:
        where = str(jf.relative_to(src))
        split = "val" if "val" in jf.stem else "train" if "train" in jf.stem else None
        try:
            doc = json.loads(jf.read_text())
            cats = {int(c["id"]): str(c["name"]) for c in doc["categories"]}
            images = {int(i["id"]): i for i in doc["images"]}
            anns = doc.get("annotations", [])
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{where}: not a COCO detection file ({exc})") from None
        by_image: dict[int, list[Box]] = {i: [] for i in images}
        broken: set[int] = set()
        for k, a in enumerate(anns):
            try:
                img_id, cat = int(a["image_id"]), int(a["category_id"])
                x, y, w, h = (float(v) for v in a["bbox"])
            except (KeyError, TypeError, ValueError):
                problems.append(f"{where}: annotations[{k}] lacks image_id, category_id or bbox")
                continue
            info = images.get(img_id)
            if info is None:
                problems.append(f"{where}: annotations[{k}] names image {img_id}, not listed")
                continue
            if cat not in cats:
                problems.append(f"{where}: annotations[{k}] has unknown category {cat}")
                broken.add(img_id)
                continue
            box = Box(cats[cat], x, y, x + w, y + h)
            err = check_box(
                f"{where}: annotations[{k}] ({info.get('file_name')})",
                box,
                int(info.get("width", 0)),
                int(info.get("height", 0)),
            )
            if err:
                problems.append(err)
                broken.add(img_id)
                continue
            by_image[img_id].append(box)
        for img_id, info in images.items():
            if img_id in broken:
                continue
            name = str(info.get("file_name", ""))
            folders = [src / "images" / (split or ""), src / "images", jf.parent, src]
            image = next((p for d in folders if (p := _find_image(d, name))), None)
            if image is None:
                problems.append(f"{where}: image {name!r} not found")
                continue
            real = image_size(image)
            if real is None:
                problems.append(f"{where}: image {name} does not decode")
                continue
            if real != (int(info.get("width", 0)), int(info.get("height", 0))):
                problems.append(
                    f"{where}: {name} is {real[0]}x{real[1]}, the JSON says "
                    f"{info.get('width')}x{info.get('height')}"
                )
                continue
            samples.append(Sample(image, real[0], real[1], by_image[img_id], split))
    return samples


def read_yolo(src: Path, problems: list[str]) -> list[Sample]:
    """An Ultralytics dataset: ``data.yaml`` (names, train, val) with
    ``images/<split>`` and ``labels/<split>`` (class cx cy w h, normalised)."""
    data_yaml = src / "data.yaml"
    if not data_yaml.is_file():
        raise DatasetError(f"{src}: no data.yaml (a YOLO dataset names its classes there)")
    try:
        meta = yaml.safe_load(data_yaml.read_text()) or {}
        raw = meta["names"]
        names = [raw[k] for k in sorted(raw)] if isinstance(raw, dict) else list(raw)
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise DatasetError(f"{data_yaml}: no usable 'names' ({exc})") from None
    samples: list[Sample] = []
    for split in ("train", "val"):
        img_dir = src / str(meta.get(split, f"images/{split}"))
        if not img_dir.is_dir():
            continue
        lbl_dir = Path(str(img_dir).replace(f"{os.sep}images", f"{os.sep}labels", 1))
        for image in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            real = image_size(image)
            where = str(image.relative_to(src))
            if real is None:
                problems.append(f"{where}: does not decode")
                continue
            w, h = real
            label = lbl_dir / f"{image.stem}.txt"
            boxes, bad = [], False
            lines = label.read_text().splitlines() if label.is_file() else []
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                at = f"{label.relative_to(src)}:{n}"
                parts = line.split()
                try:
                    k = int(parts[0])
                    cx, cy, bw, bh = (float(v) for v in parts[1:5])
                    if len(parts) != 5:
                        raise ValueError
                except (ValueError, IndexError):
                    problems.append(f"{at}: expected 'class cx cy w h', got {line.strip()!r}")
                    bad = True
                    continue
                if not 0 <= k < len(names):
                    problems.append(f"{at}: class {k} not in data.yaml names (0..{len(names) - 1})")
                    bad = True
                    continue
                if not all(0.0 <= v <= 1.0 for v in (cx, cy, bw, bh)):
                    problems.append(f"{at}: coordinates must be normalised to 0..1")
                    bad = True
                    continue
                box = Box(
                    names[k],
                    (cx - bw / 2) * w,
                    (cy - bh / 2) * h,
                    (cx + bw / 2) * w,
                    (cy + bh / 2) * h,
                )
                if err := check_box(at, box, w, h):
                    problems.append(err)
                    bad = True
                    continue
                boxes.append(box)
            if not bad:
                samples.append(Sample(image, w, h, boxes, split))
    if not samples and not problems:
        raise DatasetError(f"{src}: no images under the train/val folders data.yaml names")
    return samples


READERS = {"voc": read_voc, "coco": read_coco, "yolo": read_yolo}


# --------------------------------------------------------------------------- writer


def assign_splits(samples: list[Sample], val_fraction: float, seed: int) -> None:
    """Samples without a split from the source: a seeded, reproducible val share."""
    todo = [s for s in samples if s.split is None]
    todo.sort(key=lambda s: s.image.name)
    random.Random(seed).shuffle(todo)
    n_val = round(len(todo) * val_fraction)
    for i, s in enumerate(todo):
        s.split = "val" if i < n_val else "train"


def yolo_line(box: Box, index: int, width: int, height: int) -> str:
    x1, y1 = max(0.0, box.x1), max(0.0, box.y1)
    x2, y2 = min(float(width), box.x2), min(float(height), box.y2)
    cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
    return f"{index} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"


def import_dataset(
    src: Path,
    fmt: Format,
    out: Path,
    *,
    classes: list[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    skip_invalid: bool = False,
    copy: bool = False,
) -> ImportReport:
    if not src.is_dir():
        raise DatasetError(f"{src}: not a folder")
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: exists and is not empty (choose a new folder)")
    problems: list[str] = []
    samples = READERS[fmt](src, problems)
    if problems and not skip_invalid:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = len(problems) - len(shown)
        raise DatasetError(
            f"{len(problems)} broken annotation(s) in {src}"
            + (f" (first {len(shown)} shown)" if more else "")
            + "; fix them or pass --skip-invalid to leave those images out",
            shown,
        )
    found = sorted({b.cls for s in samples for b in s.boxes})
    names = classes or found
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise DatasetError(f"classes {', '.join(unknown)} are not in --classes {names}")
    if not samples:
        raise DatasetError(f"{src}: no usable images")
    assign_splits(samples, val_fraction, seed)
    report = ImportReport(fmt, str(src), names, skipped=problems)
    index = {n: i for i, n in enumerate(names)}
    used: set[str] = set()
    for s in samples:
        split = s.split or "train"
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        stem = _unique(s.image.stem, used)
        dst = out / "images" / split / f"{stem}{s.image.suffix.lower()}"
        if copy:
            shutil.copyfile(s.image, dst)
        else:
            dst.symlink_to(s.image.resolve())
        (out / "labels" / split / f"{stem}.txt").write_text(
            "".join(yolo_line(b, index[b.cls], s.width, s.height) + "\n" for b in s.boxes)
        )
        report.images[split] = report.images.get(split, 0) + 1
        per = report.boxes.setdefault(split, {})
        for b in s.boxes:
            per[b.cls] = per.get(b.cls, 0) + 1
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
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
    (out / "import-report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report


def _unique(stem: str, used: set[str]) -> str:
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}_{n}"
    used.add(name)
    return name


def class_counts(report: ImportReport) -> Counter[str]:
    total: Counter[str] = Counter()
    for per in report.boxes.values():
        total.update(per)
    return total


def summary_lines(report: ImportReport) -> Iterable[str]:
    imgs = ", ".join(f"{k} {v}" for k, v in sorted(report.images.items()))
    yield f"{sum(report.images.values())} images ({imgs}), {len(report.classes)} classes"
    for cls, n in class_counts(report).most_common():
        yield f"  {cls}: {n} boxes"
    if report.skipped:
        yield f"{len(report.skipped)} broken annotation(s) skipped (see import-report.json)"
