"""``inspector train``: Ultralytics train → val → ONNX export → model card, fully offline.

No pretrained weights are reachable on a plant network (nor here), so training starts
from a model yaml (``--from-scratch``) or fine-tunes a ``.pt`` the user brings
(``--weights``). Every setting that would make Ultralytics reach the internet is
switched off before it is imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.inference.offline import default_config_dir as default_config_dir
from inspector.inference.offline import offline_ultralytics as offline_ultralytics


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class TrainResult:
    pt: Path
    onnx: Path
    metrics: dict[str, Any]
    run_dir: Path | None = None

    @property
    def epochs_completed(self) -> int:
        if self.run_dir is None or not (self.run_dir / "results.csv").exists():
            return 0
        return max(0, len((self.run_dir / "results.csv").read_text().splitlines()) - 1)


def train(
    data_yaml: Path,
    out_dir: Path,
    *,
    base: str = "yolov8n.yaml",
    imgsz: int = 320,
    epochs: int = 60,
    time_hours: float | None = None,
    batch: int = 16,
    seed: int = 0,
    workers: int = 2,
    threads: int | None = None,
    patience: int = 100,
) -> TrainResult:
    offline_ultralytics(default_config_dir())
    import ultralytics.utils.torch_utils as tu
    from ultralytics import YOLO

    # Ultralytics pins itself to one CPU thread; training on CPU wants every core.
    tu.NUM_THREADS = threads or os.cpu_count() or 1
    import torch

    torch.set_num_threads(tu.NUM_THREADS)
    out_dir = out_dir.resolve()
    # Ultralytics' run directory (checkpoints, results.csv) stays in the cache, so only
    # the shipped artefacts land in out_dir (which may be inside the package).
    work_dir = default_config_dir().parent / "train" / out_dir.name
    run_dir = work_dir / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    model = YOLO(base)
    kwargs: dict[str, Any] = dict(
        data=str(data_yaml),
        imgsz=imgsz,
        epochs=epochs,
        batch=batch,
        seed=seed,
        deterministic=True,
        workers=workers,
        device="cuda:0" if torch.cuda.is_available() else "cpu",
        amp=False,
        plots=False,
        patience=patience,
        project=str(work_dir),
        name="run",
        exist_ok=True,
        cache="ram",
        verbose=False,
    )
    if time_hours:
        kwargs["time"] = time_hours
    model.train(**kwargs)
    best = run_dir / "weights" / "best.pt"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = finish(best, data_yaml, out_dir, imgsz=imgsz)
    result.run_dir = run_dir
    return result


def finish(best: Path, data_yaml: Path, out_dir: Path, *, imgsz: int) -> TrainResult:
    """Validate the best weights, export ONNX next to them, return per-class metrics."""
    from ultralytics import YOLO

    pt = out_dir / "model.pt"
    shutil.copyfile(best, pt)
    model = YOLO(str(pt))
    val = model.val(data=str(data_yaml), imgsz=imgsz, batch=8, plots=False, verbose=False)
    names = model.names
    per_class = {}
    for i, c in enumerate(val.box.ap_class_index):
        p, r, ap50, ap = val.box.class_result(i)
        per_class[names[int(c)]] = {
            "precision": round(float(p), 4),
            "recall": round(float(r), 4),
            "mAP50": round(float(ap50), 4),
            "mAP50-95": round(float(ap), 4),
        }
    metrics = {
        "mAP50": round(float(val.box.map50), 4),
        "mAP50-95": round(float(val.box.map), 4),
        "per_class": per_class,
    }
    exported = Path(model.export(format="onnx", imgsz=imgsz, dynamic=True, simplify=False))
    onnx = out_dir / "model.onnx"
    if exported != onnx:
        shutil.move(str(exported), onnx)
    portable_description(onnx, data_yaml)
    portable_checkpoint(pt)
    return TrainResult(pt=pt, onnx=onnx, metrics=metrics)


def portable_checkpoint(pt: Path) -> None:
    """Ultralytics pickles the training machine's paths into a checkpoint (its data file,
    run directory and git checkout): a shipped model keeps only their last component.
    The weights are untouched."""
    import torch

    ckpt = torch.load(str(pt), map_location="cpu", weights_only=False)

    def strip(d: dict[str, Any]) -> None:
        for k, v in d.items():
            if isinstance(v, str) and os.path.isabs(v):
                d[k] = Path(v).name
            elif isinstance(v, dict):
                strip(v)

    for key in ("train_args", "git"):
        if isinstance(ckpt.get(key), dict):
            strip(ckpt[key])
    for key in ("model", "ema"):  # the models carry the training arguments too
        args = getattr(ckpt.get(key), "args", None)
        if isinstance(args, dict):
            strip(args)
    torch.save(ckpt, str(pt))


def portable_description(onnx_path: Path, data_yaml: Path) -> None:
    """Ultralytics writes the data file's absolute path into the ONNX ``description``;
    a shipped model must not carry the training machine's paths: keep the file name."""
    import onnx

    model = onnx.load(str(onnx_path))
    for prop in model.metadata_props:
        if prop.key == "description":
            prop.value = prop.value.replace(str(data_yaml), data_yaml.name)
    onnx.save(model, str(onnx_path))


def write_card_json(out_dir: Path, info: dict[str, Any]) -> Path:
    path = out_dir / "card.json"
    path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path


def generate_sim_dataset(out: Path, n_train: int, n_val: int, seed: int) -> Path:
    from inspector.sim import write_yolo_dataset

    t0 = time.time()
    data = write_yolo_dataset(out, n_train, n_val, seed=seed)
    print(f"dataset: {n_train}+{n_val} images in {time.time() - t0:.0f}s at {out}", flush=True)
    return data
