"""`inspector dataset import`: Pascal VOC, COCO and YOLO in, one YOLO layout out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from inspector.cli import app
from inspector.dataset.importers import DatasetError, import_dataset

# NEU-DET is read where the machine keeps it (never committed): INSPECTOR_NEU_DET, else
# ../shared/datasets/neu-det beside the checkout; skipped where neither exists.
_ROOT = Path(__file__).resolve().parents[2]
NEU = next(
    (
        p
        for p in (
            Path(os.environ.get("INSPECTOR_NEU_DET", "/nonexistent")),
            _ROOT.parent / "shared" / "datasets" / "neu-det",
        )
        if p.is_dir()
    ),
    Path("/nonexistent"),
)
runner = CliRunner()


def image(path: Path, w: int = 200, h: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))
    return path


def voc_xml(name: str, w: int, h: int, objects: list[tuple[str, int, int, int, int]]) -> str:
    objs = "".join(
        f"<object><name>{c}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{x}</xmax><ymax>{y}</ymax></bndbox></object>"
        for c, a, b, x, y in objects
    )
    return (
        f"<annotation><filename>{name}</filename><size><width>{w}</width>"
        f"<height>{h}</height><depth>3</depth></size>{objs}</annotation>"
    )


def voc_dataset(root: Path) -> Path:
    for i in range(5):
        image(root / "images" / f"s{i}.jpg")
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"s{i}.xml").write_text(
            voc_xml(f"s{i}.jpg", 200, 100, [("scratch", 20, 10, 120, 60), ("dent", 0, 0, 200, 100)])
        )
    (root / "train.txt").write_text("s0\ns1\ns2\ns3\n")
    (root / "val.txt").write_text("s4\n")
    return root


def labels(out: Path, split: str, stem: str) -> list[list[float]]:
    text = (out / "labels" / split / f"{stem}.txt").read_text()
    return [[float(v) for v in line.split()] for line in text.splitlines()]


def test_voc_boxes_become_normalised_yolo_labels_in_the_source_splits(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = import_dataset(voc_dataset(tmp_path / "voc"), "voc", out)
    assert report.classes == ["dent", "scratch"] and report.images == {"train": 4, "val": 1}
    assert labels(out, "train", "s0") == [[1, 0.35, 0.35, 0.5, 0.5], [0, 0.5, 0.5, 1.0, 1.0]]
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "dent", 1: "scratch"} and data["val"] == "images/val"
    assert (out / "images" / "val" / "s4.jpg").resolve() == (
        tmp_path / "voc/images/s4.jpg"
    ).resolve()


def test_broken_voc_annotations_are_named_one_by_one(tmp_path: Path) -> None:
    src = voc_dataset(tmp_path / "voc")
    ann = src / "annotations"
    (ann / "s1.xml").write_text(voc_xml("s1.jpg", 200, 100, [("dent", 150, 10, 260, 60)]))
    (ann / "s2.xml").write_text("<annotation><filename>s2.jpg")
    (ann / "s3.xml").write_text(voc_xml("s3.jpg", 640, 480, [("dent", 1, 1, 5, 5)]))
    (ann / "s5.xml").write_text(voc_xml("gone.jpg", 200, 100, []))
    (ann / "s6.xml").write_text(voc_xml("s0.jpg", 200, 100, [("dent", 50, 50, 40, 60)]))
    with pytest.raises(DatasetError) as err:
        import_dataset(src, "voc", tmp_path / "out")
    problems = "\n".join(err.value.problems)
    assert (
        "annotations/s1.xml: object 1 (dent): box (150,10)-(260,60) outside the 200x100" in problems
    )
    assert "annotations/s2.xml: not valid XML" in problems
    assert "annotations/s3.xml: <size> says 640x480, s3.jpg is 200x100" in problems
    assert "annotations/s5.xml: image gone.jpg not found" in problems
    assert "annotations/s6.xml: object 1 (dent): empty box" in problems
    assert len(err.value.problems) == 5

    report = import_dataset(src, "voc", tmp_path / "out2", skip_invalid=True)
    assert sum(report.images.values()) == 2 and len(report.skipped) == 5
    saved = json.loads((tmp_path / "out2" / "import-report.json").read_text())
    assert saved["skipped"] == 5

    result = runner.invoke(
        app, ["dataset", "import", str(src), "--format", "voc", "--out", str(tmp_path / "out3")]
    )
    assert result.exit_code == 2
    assert "5 broken annotation(s)" in result.stderr and "s2.xml: not valid XML" in result.stderr


def coco_dataset(root: Path, anns: list[dict[str, object]]) -> Path:
    image(root / "images" / "a.png", 200, 100)
    image(root / "images" / "b.png", 200, 100)
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train.json").write_text(
        json.dumps(
            {
                "images": [
                    {"id": 1, "file_name": "a.png", "width": 200, "height": 100},
                    {"id": 2, "file_name": "b.png", "width": 200, "height": 100},
                ],
                "categories": [{"id": 7, "name": "crack"}, {"id": 9, "name": "stain"}],
                "annotations": anns,
            }
        )
    )
    return root


def test_coco_boxes_and_broken_annotations(tmp_path: Path) -> None:
    good: list[dict[str, object]] = [
        {"id": 1, "image_id": 1, "category_id": 9, "bbox": [50, 25, 100, 50]},
        {"id": 2, "image_id": 2, "category_id": 7, "bbox": [0, 0, 20, 10]},
    ]
    out = tmp_path / "out"
    report = import_dataset(coco_dataset(tmp_path / "coco", good), "coco", out, val_fraction=0.0)
    assert report.classes == ["crack", "stain"] and report.images == {"train": 2}
    assert labels(out, "train", "a") == [[1, 0.5, 0.5, 0.5, 0.5]]

    bad: list[dict[str, object]] = [
        *good,
        {"id": 3, "image_id": 1, "category_id": 4, "bbox": [1, 1, 2, 2]},
        {"id": 4, "image_id": 2, "category_id": 7},
        {"id": 5, "image_id": 2, "category_id": 7, "bbox": [190, 0, 30, 10]},
    ]
    with pytest.raises(DatasetError) as err:
        import_dataset(coco_dataset(tmp_path / "coco2", bad), "coco", tmp_path / "o2")
    problems = "\n".join(err.value.problems)
    assert "annotations[2] has unknown category 4" in problems
    assert "annotations[3] lacks image_id, category_id or bbox" in problems
    assert "annotations[4] (b.png): box (190,0)-(220,10) outside the 200x100 image" in problems


def test_yolo_labels_are_validated(tmp_path: Path) -> None:
    src = tmp_path / "yolo"
    for split, stem in (("train", "t0"), ("train", "t1"), ("val", "v0")):
        image(src / "images" / split / f"{stem}.jpg")
        (src / "labels" / split).mkdir(parents=True, exist_ok=True)
        (src / "labels" / split / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (src / "data.yaml").write_text(
        yaml.safe_dump({"train": "images/train", "val": "images/val", "names": ["pit", "scale"]})
    )
    report = import_dataset(src, "yolo", tmp_path / "out")
    assert report.images == {"train": 2, "val": 1}
    assert labels(tmp_path / "out", "val", "v0") == [[0, 0.5, 0.5, 0.2, 0.2]]

    (src / "labels" / "train" / "t0.txt").write_text("2 0.5 0.5 0.2 0.2\n")
    (src / "labels" / "train" / "t1.txt").write_text("0 0.5 0.5 1.7 0.2\n1 0.5 0.5\n")
    with pytest.raises(DatasetError) as err:
        import_dataset(src, "yolo", tmp_path / "out2")
    problems = "\n".join(err.value.problems)
    assert "labels/train/t0.txt:1: class 2 not in data.yaml names (0..1)" in problems
    assert "labels/train/t1.txt:1: coordinates must be normalised to 0..1" in problems
    assert "labels/train/t1.txt:2: expected 'class cx cy w h'" in problems


def test_an_existing_output_folder_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(DatasetError, match="exists and is not empty"):
        import_dataset(voc_dataset(tmp_path / "voc"), "voc", tmp_path / "out")


@pytest.mark.skipif(not NEU.is_dir(), reason="NEU-DET is not on this machine")
def test_neu_det_imports_with_its_own_splits(tmp_path: Path) -> None:
    """The real steel-surface data (read in place, never copied into the repo)."""
    report = import_dataset(NEU, "voc", tmp_path / "neu")
    assert report.classes == [
        "crazing",
        "inclusion",
        "patches",
        "pitted_surface",
        "rolled-in_scale",
        "scratches",
    ]
    train = len((NEU / "train.txt").read_text().split())
    val = len((NEU / "val.txt").read_text().split())
    assert report.images == {"train": train, "val": val} and not report.skipped
    boxes = sum(n for per in report.boxes.values() for n in per.values())
    assert boxes > report.images["train"] + report.images["val"]  # 1-9 boxes per image
