"""The YOLO dataset: files are valid and labels are the renderer's truth, normalised."""

from __future__ import annotations

from pathlib import Path

import cv2
import orjson
import yaml

from inspector.sim.dataset import write_yolo_dataset
from inspector.sim.scene import ConveyorScene, SceneConfig
from inspector.sim.truth import CLASS_NAMES, GENERATOR_VERSION


def test_dataset_matches_truth(tmp_path: Path) -> None:
    data_yaml = write_yolo_dataset(tmp_path / "ds", 60, 12, seed=2, width=640, height=360)
    data = yaml.safe_load(data_yaml.read_text())
    root = Path(data["path"])
    assert root.is_absolute() and root == (tmp_path / "ds").resolve()
    assert data["names"] == dict(enumerate(CLASS_NAMES))
    assert data["nc"] == len(CLASS_NAMES)
    assert data["generator_version"] == GENERATOR_VERSION
    manifest = orjson.loads((root / "manifest.json").read_bytes())
    assert manifest["generator_version"] == GENERATOR_VERSION

    seeds: dict[str, set[int]] = {}
    scenes: dict[SceneConfig, ConveyorScene] = {}
    for split, n in (("train", 60), ("val", 12)):
        images = sorted((root / data[split]).glob("*.jpg"))
        assert len(images) == n == len(manifest[split])
        seeds[split] = {rec["config"]["seed"] for rec in manifest[split]}
        empty = 0
        classes: set[int] = set()
        for rec in manifest[split]:
            img = cv2.imread(str(root / rec["image"]))
            assert img is not None and img.shape == (360, 640, 3)
            label = root / rec["image"].replace("images/", "labels/").replace(".jpg", ".txt")
            rows = [line.split() for line in label.read_text().splitlines()]
            # Independent of the writer: re-derive the truth from the config and frame index.
            cfg = SceneConfig(**rec["config"])
            scene = scenes.setdefault(cfg, ConveyorScene(cfg))
            truth = scene.truth(rec["truth"]["frame_index"])
            expected = [(o.class_id, o.box) for o in truth.labels()]
            assert len(rows) == len(expected)
            for row, (cid, (x1, y1, x2, y2)) in zip(rows, expected, strict=True):
                assert int(row[0]) == cid
                cx, cy, w, h = (float(v) for v in row[1:])
                assert abs(cx * 640 - (x1 + x2) / 2) < 0.01
                assert abs(cy * 360 - (y1 + y2) / 2) < 0.01
                assert abs(w * 640 - (x2 - x1)) < 0.01 and abs(h * 360 - (y2 - y1)) < 0.01
                assert 0 < w <= 1 and 0 < h <= 1
                assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6
                classes.add(cid)
            empty += not rows
        if split == "train":
            assert 1 <= empty <= 0.15 * n  # a few frames of empty belt
            assert classes == set(range(len(CLASS_NAMES)))
    assert not seeds["train"] & seeds["val"]  # validation never sees a training clip
