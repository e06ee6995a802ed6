"""Register, promote and roll back model versions; every alias move is announced on
``model-events`` after the registry holds it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson

from inspector.config import ModelSettings, PlantConfig
from inspector.inference.model import ModelError, load_detector, resolve_model_path, sha256_of
from inspector.registry import ModelVersion, Registry
from inspector.registry.announce import model_event, publish

log = logging.getLogger(__name__)

CHAMPION = "champion"


def data_hash(path: Path | None) -> str | None:
    """sha256 over a dataset (a folder's files in name order, or one file)."""
    if path is None:
        return None
    if not path.exists():
        raise ModelError(f"training data {path} does not exist")
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        # a YOLO data.yaml: hash the folder it describes (its images and labels)
        path = path.parent
    return sha256_of(path)


def register_model(
    cfg: PlantConfig,
    registry: Registry,
    spec: str,
    *,
    data: Path | None = None,
    metrics: dict[str, float] | None = None,
    description: str = "",
    settings: ModelSettings | None = None,
) -> ModelVersion:
    """Load ``spec`` (a path or builtin:NAME) as the worker would — a file that does not
    load is refused here, before the registry sees it — and register it."""
    entry, _name = resolve_model_path(spec)
    base = settings or cfg.model
    det = load_detector(base.model_copy(update={"path": str(entry)}))
    model_dir = entry.parent if entry.is_file() else entry
    card: dict[str, Any] | None = None
    card_file = model_dir / "card.json"
    if card_file.exists():
        card = orjson.loads(card_file.read_bytes())
        val = (card or {}).get("validation", {})
        for k in ("mAP50", "mAP50-95"):
            if isinstance(val.get(k), int | float):
                metrics = {k: float(val[k]), **(metrics or {})}
    info = det.info
    mv = registry.register(
        model_dir,
        entry=entry.name,
        sha256=sha256_of(entry),
        classes=[info.names[k] for k in sorted(info.names)],
        imgsz=info.imgsz,
        data_sha256=data_hash(data),
        metrics=metrics,
        card=card,
        description=description,
    )
    publish(cfg, [model_event("registered", mv.name, mv.version, sha256=mv.sha256)])
    return mv


def promote(
    cfg: PlantConfig, registry: Registry, version: str, alias: str = CHAMPION
) -> str | None:
    """Point ``alias`` at ``version``, then announce it; → the version it named before."""
    mv = registry.get(version)
    before = registry.set_alias(alias, mv.version)
    publish(
        cfg,
        [
            model_event(
                "promoted",
                mv.name,
                mv.version,
                alias=alias,
                previous_version=before,
                sha256=mv.sha256,
            )
        ],
    )
    log.info("alias moved", extra={"alias": alias, "from": before, "to": mv.version})
    return before


def rollback(cfg: PlantConfig, registry: Registry, alias: str = CHAMPION) -> tuple[str, str]:
    """Point ``alias`` back at its previous version, then announce it; → (from, to)."""
    current, previous = registry.rollback(alias)
    mv = registry.get(previous)
    publish(
        cfg,
        [
            model_event(
                "rolled_back",
                mv.name,
                previous,
                alias=alias,
                previous_version=current,
                sha256=mv.sha256,
            )
        ],
    )
    return current, previous


def retrain(
    cfg: PlantConfig,
    registry: Registry,
    base: str,
    data: Path,
    out: Path,
    *,
    alias: str | None = "challenger",
    epochs: int = 10,
    batch: int = 8,
    imgsz: int | None = None,
    time_hours: float | None = None,
) -> tuple[ModelVersion, str | None]:
    """Fine-tune the PyTorch weights of a registered version (``base``: alias or version)
    on ``data`` (a YOLO data.yaml, e.g. from ``inspector dataset export``), evaluate on
    its val split, register the result with its card and point ``alias`` at it.
    → (the new version, what the alias named before)."""
    from inspector.detect.train import train

    src = registry.get(base) if base.isdigit() else registry.by_alias(base)
    entry = registry.fetch(src)
    weights = entry.parent / "model.pt"
    if not weights.is_file():
        raise ModelError(
            f"version {src.version} has no model.pt beside {entry.name}: fine-tuning needs "
            "the PyTorch weights (register a folder with both)"
        )
    size = imgsz or src.imgsz or cfg.model.imgsz
    result = train(
        data,
        out,
        base=str(weights),
        imgsz=size,
        epochs=epochs,
        batch=batch,
        time_hours=time_hours,
    )
    card = {
        "fine_tuned_from": {"version": src.version, "sha256": src.sha256},
        "data": str(data),
        "epochs": epochs,
        "epochs_completed": result.epochs_completed,
        "imgsz": size,
        "validation": result.metrics,
    }
    (out / "card.json").write_bytes(orjson.dumps(card, option=orjson.OPT_INDENT_2))
    mv = register_model(
        cfg,
        registry,
        str(result.onnx),
        data=data,
        description=f"fine-tuned from version {src.version} on {data}",
        settings=cfg.model.model_copy(update={"imgsz": size}),
    )
    before = promote(cfg, registry, mv.version, alias) if alias else None
    return mv, before
