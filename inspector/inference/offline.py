"""Ultralytics without a network: what every place that loads or trains a YOLO model
calls first (no hub, no font or package downloads, no experiment trackers)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def offline_ultralytics(config_dir: Path) -> None:
    """Make Ultralytics work with no network: no hub, no font download, no pip installs."""
    config_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    os.environ.setdefault("YOLO_VERBOSE", "False")
    # Training plots ask for Arial.ttf from the network even offline; any TTF will do.
    font_dir = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    target = font_dir / "Arial.ttf"
    if not target.exists():
        import matplotlib

        src = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        shutil.copyfile(src, target)
    from ultralytics.utils import SETTINGS

    # No experiment trackers: with mlflow installed (the registry's client) Ultralytics'
    # callback would write an mlflow.db into the working directory of every training.
    trackers = ("mlflow", "tensorboard", "wandb", "clearml", "comet", "dvc", "raytune")
    SETTINGS.update({"sync": False, **{k: False for k in trackers if k in SETTINGS}})


def default_config_dir() -> Path:
    return (
        Path(os.environ.get("INSPECTOR_CACHE_DIR", Path.home() / ".cache" / "inspector")) / "yolo"
    )
