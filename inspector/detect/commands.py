"""CLI commands of the detect stage: ``worker``, ``train``."""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("worker")(worker_cmd)
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)


def evaluate_cmd(
    config: Path = typer.Option(Path("configs/demo.yaml"), "--config", "-c", help="Plant config."),
    line: str | None = typer.Option(None, "--line", help="Whose rules to apply (default: first)."),
    model: str | None = typer.Option(None, "--model", help="Model path (default: config's)."),
    seconds: float = typer.Option(120.0, "--seconds", help="Simulated seconds per seed."),
    seeds: str = typer.Option("9001,9002,9003", "--seeds", help="Held-out scene seeds."),
    sample_fps: float = typer.Option(3.0, "--sample-fps"),
    card: Path | None = typer.Option(
        None, "--card", help="Model card JSON to record the result in (and MODEL_CARD.md)."
    ),
    sweep_thresholds: bool = typer.Option(
        False, "--sweep", help="Tune: recall / false-reject per min_confidence on tuning seeds."
    ),
) -> None:
    """Score a model + line rules on a held-out simulated run (per-frame and per-part)."""
    import json

    from inspector.commandline import load_or_exit
    from inspector.detect.evaluate import evaluate, sweep

    cfg = load_or_exit(config)
    ln = cfg.line(line) if line else cfg.lines[0]
    settings = cfg.model if model is None else cfg.model.model_copy(update={"path": model})
    if sweep_thresholds:
        for row in sweep(settings, ln.rules, seconds=seconds, sample_fps=sample_fps):
            pp, pf = row["per_part"], row["per_frame"]
            typer.echo(
                f"min_conf {row['min_confidence']:.2f}  part recall {pp['recall']}  "
                f"part FRR {pp['false_reject_rate']}  frame recall {pf['recall']}  "
                f"frame FRR {pf['false_reject_rate']}"
            )
        return
    result = evaluate(
        settings,
        ln.rules,
        seeds=tuple(int(s) for s in seeds.split(",")),
        seconds=seconds,
        sample_fps=sample_fps,
    )
    result["rules_from"] = f"{config}#{ln.id}"
    typer.echo(json.dumps(result, indent=2))
    if card is not None:
        from inspector.detect.card import render_card

        data = json.loads(card.read_text())
        data["held_out_quality"] = result
        card.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        (card.parent / "MODEL_CARD.md").write_text(render_card(data))
        typer.echo(f"recorded in {card} and {card.parent / 'MODEL_CARD.md'}")


def worker_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Plant config YAML."),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Override observe.worker_port (0 = off)."
    ),
) -> None:
    """Run a detection worker (one member of the consumer group)."""
    from inspector.commandline import load_or_exit, traces_or_exit
    from inspector.detect.model import ModelError
    from inspector.detect.worker import run_worker
    from inspector.telemetry.logs import setup_logging

    cfg = load_or_exit(config)
    setup_logging("worker", cfg.observe.log_format)
    traces_or_exit(cfg, "worker")
    try:
        code = run_worker(cfg, metrics_port=metrics_port)
    except ModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def train_cmd(
    out: Path = typer.Option(..., "--out", help="Directory for model.pt, model.onnx, card."),
    data: Path | None = typer.Option(None, "--data", help="Ultralytics data.yaml (your dataset)."),
    from_scratch: bool = typer.Option(
        False, "--from-scratch", help="Generate the simulator's dataset and train from a yaml."
    ),
    weights: str | None = typer.Option(
        None, "--weights", help="Fine-tune from this .pt (transfer learning)."
    ),
    base: str = typer.Option("yolov8n.yaml", "--base", help="Model yaml when not fine-tuning."),
    imgsz: int = typer.Option(320, "--imgsz"),
    epochs: int = typer.Option(60, "--epochs"),
    time_hours: float | None = typer.Option(
        None, "--time-hours", help="Wall-clock budget; the LR schedule fits into it."
    ),
    batch: int = typer.Option(16, "--batch"),
    n_train: int = typer.Option(800, "--n-train", help="Images generated (--from-scratch)."),
    n_val: int = typer.Option(160, "--n-val"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train (or fine-tune) a defect detector offline, export ONNX, write its card."""
    from inspector.detect import train as tr

    if (data is None) == (not from_scratch):
        raise typer.BadParameter("give exactly one of --data or --from-scratch")
    out.mkdir(parents=True, exist_ok=True)
    gen_version = None
    if from_scratch:
        from inspector.sim import GENERATOR_VERSION

        gen_version = GENERATOR_VERSION
        ds_dir = tr.default_config_dir().parent / "datasets" / f"sim-{gen_version}-{seed}"
        data = tr.generate_sim_dataset(ds_dir, n_train, n_val, seed)
    assert data is not None
    t0 = time.time()
    result = tr.train(
        data,
        out,
        base=weights or base,
        imgsz=imgsz,
        epochs=epochs,
        time_hours=time_hours,
        batch=batch,
        seed=seed,
    )
    import ultralytics

    card = {
        "architecture": Path(weights or base).stem,
        "fine_tuned_from": weights,
        "imgsz": imgsz,
        "epochs_requested": epochs,
        "time_hours": time_hours,
        "batch": batch,
        "seed": seed,
        "dataset": {
            "data_yaml": str(data),
            "n_train": n_train,
            "n_val": n_val,
            "generator_version": gen_version,
        },
        "ultralytics": ultralytics.__version__,
        "python": platform.python_version(),
        "train_seconds": round(time.time() - t0),
        "epochs_completed": result.epochs_completed,
        "validation": result.metrics,
        "sha256": {
            "model.onnx": tr.sha256_file(result.onnx),
            "model.pt": tr.sha256_file(result.pt),
        },
        "command": "inspector " + " ".join(sys.argv[1:]),
    }
    path = tr.write_card_json(out, card)
    typer.echo(f"model: {result.onnx} ({result.metrics['mAP50']} mAP50); card: {path}")
