"""Model cards: the shipped Markdown is what its JSON renders to, and a card for a
model trained on an imported dataset names that data and its terms."""

from __future__ import annotations

import json
from pathlib import Path

from inspector.config import BUILTIN_MODELS
from inspector.detect.card import render_card


def test_shipped_cards_are_rendered_from_their_json() -> None:
    for d in sorted(p for p in BUILTIN_MODELS.iterdir() if (p / "card.json").is_file()):
        card = json.loads((d / "card.json").read_text())
        assert (d / "MODEL_CARD.md").read_text() == render_card(card), d.name


def test_a_card_for_imported_data_names_it_and_its_terms() -> None:
    card = {
        "name": "neu-det-v1",
        "description": "Steel-surface defects.",
        "validation_split": "NEU-DET val split",
        "data_terms": "research use only",
        "dataset": {"source": "../shared/datasets/neu-det", "format": "voc", "n_train": 1260},
        "validation": {
            "mAP50": 0.5,
            "per_class": {
                "crazing": {"precision": 0.1, "recall": 0.2, "mAP50": 0.3, "mAP50-95": 0.1}
            },
        },
    }
    md = render_card(card)
    assert md.startswith("# Model card: neu-det-v1\n\nSteel-surface defects.\n")
    assert "imported from `../shared/datasets/neu-det` (voc)" in md
    assert "| Data terms | research use only |" in md
    assert "## Validation (NEU-DET val split)" in md
    assert "| crazing | 0.1 | 0.2 | 0.3 | 0.1 |" in md


def test_shipped_models_carry_no_training_machine_paths(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from inspector.detect.train import portable_description
    from inspector.inference.model import sha256_of

    for path in sorted(BUILTIN_MODELS.glob("*/*.onnx")):
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert "/" not in props.get("description", ""), path
        card = json.loads((path.parent / "card.json").read_text())
        if path.name in card.get("sha256", {}):
            assert card["sha256"][path.name] == sha256_of(path), path

    # the recipe keeps only the data file's name
    node = helper.make_node("Identity", ["x"], ["y"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]))
    data = tmp_path / "deep" / "data.yaml"
    model.metadata_props.add(key="description", value=f"YOLOv8n model trained on {data}")
    onnx.save(model, str(tmp_path / "m.onnx"))
    portable_description(tmp_path / "m.onnx", data)
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["description"] == "YOLOv8n model trained on data.yaml"


def test_shipped_checkpoints_carry_no_training_machine_paths(tmp_path: Path) -> None:
    """A shipped .pt pickles no absolute path (data file, run directory, git checkout) and
    its card's sha256 matches; the recipe's portable_checkpoint strips them."""
    import torch

    from inspector.detect.train import portable_checkpoint
    from inspector.inference.model import sha256_of

    for path in sorted(BUILTIN_MODELS.glob("*/*.pt")):
        raw = path.read_bytes()
        for root in (b"/work/", b"/root/", b"/home/", b"/tmp/"):
            assert root not in raw, (path, root)
        card = json.loads((path.parent / "card.json").read_text())
        if path.name in card.get("sha256", {}):
            assert card["sha256"][path.name] == sha256_of(path), path

    from types import SimpleNamespace

    model = SimpleNamespace(args={"data": "/srv/train/data.yaml", "imgsz": 320})
    pt = tmp_path / "m.pt"
    torch.save({"train_args": {"project": "/srv/run", "nested": {"p": "/a/b"}}, "model": model}, pt)
    portable_checkpoint(pt)
    ck = torch.load(str(pt), weights_only=False)
    assert ck["train_args"] == {"project": "run", "nested": {"p": "b"}}
    assert ck["model"].args == {"data": "data.yaml", "imgsz": 320}


def test_the_operating_point_is_the_lowest_threshold_within_the_false_reject_budget() -> None:
    from inspector.config import InspectionSettings
    from inspector.detect.evaluate import operating_point, operating_point_record

    def row(t: float, part_frr: float, frame_frr: float) -> dict[str, object]:
        return {
            "min_confidence": t,
            "per_part": {"recall": 1.0 - t / 10, "false_reject_rate": part_frr},
            "per_frame": {"recall": 0.9, "false_reject_rate": frame_frr},
        }

    rows = [row(0.4, 0.0, 0.0), row(0.2, 0.0, 0.0), row(0.25, 0.0, 0.006), row(0.3, 0.004, 0.005)]
    assert operating_point(rows) == 0.3  # 0.2 is below the floor, 0.25 over the budget
    assert operating_point(rows, max_frr=0.0) == 0.4
    assert operating_point([row(0.5, 0.02, 0.0)]) is None
    assert operating_point([row(0.3, 0.0, None)]) is None  # type: ignore[arg-type]
    st = InspectionSettings(mode="parts", locate_size=224, crop_size=256)
    rec = operating_point_record(rows, 0.3, (8001, 8011), 120.0, st, "configs/demo.yaml#line-a")
    assert rec["min_confidence"] == 0.3 and rec["tuning_seeds"] == [8001, 8011]
    assert "located at 224 px, crops of 256 px" in rec["why"] and "0.5%" in rec["why"]
    assert [r["min_confidence"] for r in rec["sweep"]] == [0.4, 0.2, 0.25, 0.3]


def test_transfer_learning_runs_render_side_by_side() -> None:
    card = {
        "name": "neu-det-v1",
        "transfer_learning": {
            "budget": "10 epochs",
            "pretrained": "defects-v2's weights",
            "runs": [
                {
                    "start": "random",
                    "epochs": 10,
                    "minutes": 20,
                    "map50": 0.4,
                    "map50_95": 0.2,
                    "per_class_map50": {"crazing": 0.1, "patches": 0.7},
                },
                {
                    "start": "defects-v2",
                    "epochs": 10,
                    "minutes": 21,
                    "map50": 0.5,
                    "map50_95": 0.25,
                    "per_class_map50": {"patches": 0.8},
                },
            ],
            "note": "one seed each",
        },
    }
    md = render_card(card)
    assert "| start | epochs | minutes | mAP50 | mAP50-95 | crazing | patches |" in md
    assert "| random | 10 | 20 | 0.4 | 0.2 | 0.1 | 0.7 |" in md
    assert "| defects-v2 | 10 | 21 | 0.5 | 0.25 | — | 0.8 |" in md
    assert "one seed each" in md
    assert "Not measured" in render_card({"name": "x", "transfer_learning": "Not measured"})
