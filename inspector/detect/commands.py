"""CLI commands of the detect stage: ``worker``, ``train``, ``evaluate``, ``quantize``,
``anomaly fit|evaluate``."""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    app.command("worker")(worker_cmd)
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("quantize")(quantize_cmd)
    anomaly = typer.Typer(help="The unknown-defect channel: fit and measure the anomaly bank.")
    anomaly.command("fit")(anomaly_fit_cmd)
    anomaly.command("evaluate")(anomaly_evaluate_cmd)
    app.add_typer(anomaly, name="anomaly")


def _seeds(spec: str) -> list[int]:
    """``7001-7020`` or ``7001,7005``."""
    out: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise typer.BadParameter(f"seeds must look like 7001-7020 or 7001,7005: {spec!r}") from None
    if not out:
        raise typer.BadParameter("no seeds")
    return out


def anomaly_fit_cmd(
    model: Path = typer.Option(
        Path("inspector/models/defects-v1/model.onnx"), "--model", help="The detector (ONNX)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Directory (default: the model's)."),
    fit_seeds: str = typer.Option("7001-7024", "--fit-seeds", help="Defect-free scenes: bank."),
    threshold_seeds: str = typer.Option(
        "7101-7148", "--threshold-seeds", help="Defect-free scenes: the threshold."
    ),
    bank_size: int = typer.Option(4000, "--bank-size", min=1, max=100000),
    false_alarm_rate: float = typer.Option(0.01, "--false-alarm-rate", min=0.0, max=0.5),
    crop_size: int = typer.Option(192, "--crop-size", min=32, max=1024),
    per: str = typer.Option(
        "part",
        "--per",
        help="The false-alarm rate per part (any of its crops over) or per crop.",
    ),
) -> None:
    """Fit the anomaly bank on defect-free simulated parts; threshold at the false-alarm rate."""
    from inspector.detect.anomaly import AnomalyError
    from inspector.detect.anomaly_fit import fit

    fs, ts = _seeds(fit_seeds), _seeds(threshold_seeds)
    if per not in ("part", "crop"):
        raise typer.BadParameter(f"--per must be part or crop, not {per!r}")
    if set(fs) & set(ts):
        raise typer.BadParameter("fit and threshold seeds must be distinct")
    try:
        m = fit(
            model,
            fit_seeds=fs,
            threshold_seeds=ts,
            bank_size=bank_size,
            false_alarm_rate=false_alarm_rate,
            size=crop_size,
            per=per,
        )
    except AnomalyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    import os

    target = out or model.parent
    # The feature model as seen from the bank's directory (a bank written elsewhere finds it).
    m.meta["feature_model"] = os.path.relpath(model.resolve(), target.resolve())
    m.save(target)
    typer.echo(
        f"bank {len(m.bank)} patches from {m.meta['fit_parts']} good parts; threshold "
        f"{m.threshold:.4f} (at most {false_alarm_rate:.1%} of "
        f"{m.meta['threshold_' + per + 's']} held-out good {per}s above); wrote {target}"
    )


def anomaly_evaluate_cmd(
    model_dir: Path = typer.Option(
        Path("inspector/models/defects-v1"), "--model-dir", help="Where anomaly.npz/.json are."
    ),
    seeds: str = typer.Option("7201-7248", "--seeds", help="Held-out scenes (not fit seeds)."),
    card: Path | None = typer.Option(
        None, "--card", help="Model card JSON to record the figures in (and MODEL_CARD.md)."
    ),
    config: Path | None = typer.Option(
        Path("configs/demo.yaml"),
        "--config",
        "-c",
        help="Also measure the detector alone with this plant's model and first line's rules.",
    ),
    no_detector: bool = typer.Option(False, "--no-detector", help="Skip that comparison."),
) -> None:
    """Held-out figures at the bank's threshold: false alarms on good parts, recall on a
    defect the detector never saw (a burn) and on the known defect classes."""
    import json

    from inspector.detect.anomaly import AnomalyError, AnomalyModel, FeatureExtractor
    from inspector.detect.anomaly_fit import evaluate

    try:
        m = AnomalyModel.load(model_dir)
        ss = _seeds(seeds)
        used = set(m.meta.get("fit_seeds", [])) | set(m.meta.get("threshold_seeds", []))
        if used & set(ss):
            raise AnomalyError(f"seeds {sorted(used & set(ss))} were used to fit the bank")
        judge = None
        if config is not None and not no_detector:
            from inspector.commandline import load_or_exit
            from inspector.detect.rules import CompiledRules
            from inspector.inference.model import load_detector

            cfg = load_or_exit(config)
            det, rules = load_detector(cfg.model), CompiledRules(cfg.lines[0].rules)

            def judge(frame: Any) -> list[Any]:
                h, w = frame.shape[:2]
                return rules.judge(det.detect([frame])[0], w, h).findings

        result = evaluate(m, FeatureExtractor(m.feature_model(model_dir)), ss, judge)
    except AnomalyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    record = {
        "bank": {
            k: m.meta.get(k)
            for k in (
                "bank_size",
                "fit_parts",
                "fit_seeds",
                "threshold_seeds",
                "crop_size",
                "layers",
                "false_alarm_rate_target",
            )
        },
        "threshold": round(m.threshold, 4),
        "detector_rules_from": None if judge is None else f"{config}#first line",
        "held_out": result,
    }
    typer.echo(json.dumps(record, indent=2))
    if card is not None:
        from inspector.detect.card import render_card

        data = json.loads(card.read_text())
        data["anomaly"] = record
        card.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        (card.parent / "MODEL_CARD.md").write_text(render_card(data))
        typer.echo(f"recorded in {card} and {card.parent / 'MODEL_CARD.md'}")


def evaluate_cmd(
    config: Path = typer.Option(Path("configs/demo.yaml"), "--config", "-c", help="Plant config."),
    line: str | None = typer.Option(None, "--line", help="Whose rules to apply (default: first)."),
    model: str | None = typer.Option(None, "--model", help="Model path (default: config's)."),
    seconds: float = typer.Option(120.0, "--seconds", help="Simulated seconds per seed."),
    seeds: str | None = typer.Option(
        None,
        "--seeds",
        help="Scene seeds (default: held-out 9001,9002,9003; with --sweep the tuning "
        "seeds 8001,8002).",
    ),
    sample_fps: float = typer.Option(3.0, "--sample-fps"),
    card: Path | None = typer.Option(
        None, "--card", help="Model card JSON to record the result in (and MODEL_CARD.md)."
    ),
    sweep_thresholds: bool = typer.Option(
        False, "--sweep", help="Tune: recall / false-reject per min_confidence on tuning seeds."
    ),
    mode: str | None = typer.Option(
        None, "--mode", help="Inspection mode: frame, parts or tiles (default: the line's)."
    ),
    region_model: str | None = typer.Option(
        None, "--region-model", help="Region model for parts / tiles (default: the line's)."
    ),
    imgsz: int | None = typer.Option(
        None, "--imgsz", help="The frame model's input size (default: the config's)."
    ),
    crop_size: int | None = typer.Option(
        None, "--crop-size", help="Crop / tile input size for parts / tiles (default: the line's)."
    ),
    min_confidence: float | None = typer.Option(
        None, "--min-confidence", help="One min_confidence for every failing class."
    ),
    locate_size: int | None = typer.Option(
        None, "--locate-size", help="The frame model's input size when it locates parts."
    ),
) -> None:
    """Score a model + line rules on a held-out simulated run (per-frame and per-part)."""
    import json

    from inspector.commandline import load_or_exit
    from inspector.detect.evaluate import (
        OP_FLOOR,
        OP_MAX_FRR,
        evaluate,
        operating_point,
        operating_point_record,
        sweep,
    )

    cfg = load_or_exit(config)
    ln = cfg.line(line) if line else cfg.lines[0]
    settings = cfg.model if model is None else cfg.model.model_copy(update={"path": model})
    if imgsz is not None:
        settings = settings.model_copy(update={"imgsz": imgsz})
    rules = ln.rules
    if min_confidence is not None:
        classes = {
            name: r.model_copy(update={"min_confidence": min_confidence}) if r.fail else r
            for name, r in rules.classes.items()
        }
        rules = rules.model_copy(update={"classes": classes})
    overrides: dict[str, str] = {}
    if mode is not None:
        if mode not in ("frame", "parts", "tiles"):
            raise typer.BadParameter(f"--mode must be frame, parts or tiles, not {mode!r}")
        overrides["mode"] = mode
    if region_model is not None:
        overrides["region_model"] = region_model
    inspection = ln.inspection.model_copy(update=overrides)
    if crop_size is not None:
        inspection = inspection.model_copy(update={"crop_size": crop_size})
    if locate_size is not None:
        inspection = inspection.model_copy(update={"locate_size": locate_size})
    if sweep_thresholds:
        tuning = (8001, 8002) if seeds is None else tuple(int(x) for x in seeds.split(","))
        rows = sweep(
            settings,
            rules,
            seeds=tuning,
            seconds=seconds,
            sample_fps=sample_fps,
            inspection=inspection,
        )
        for row in rows:
            pp, pf = row["per_part"], row["per_frame"]
            typer.echo(
                f"min_conf {row['min_confidence']:.2f}  part recall {pp['recall']}  "
                f"part FRR {pp['false_reject_rate']}  frame recall {pf['recall']}  "
                f"frame FRR {pf['false_reject_rate']}  per class "
                + " ".join(
                    f"{c} {r['caught']}/{r['parts']}"
                    for c, r in (row.get("per_class_part_recall") or {}).items()
                )
            )
        point = operating_point(rows)
        typer.echo(
            f"operating point: {point}"
            if point is not None
            else "operating point: none "
            f"(no min_confidence >= {OP_FLOOR} keeps false rejects <= {OP_MAX_FRR:.1%})"
        )
        if card is not None and point is not None:
            from inspector.detect.card import render_card

            data = json.loads(card.read_text())
            data["operating_point"] = operating_point_record(
                rows, point, tuning, seconds, inspection, f"{config}#{ln.id}"
            )
            card.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
            (card.parent / "MODEL_CARD.md").write_text(render_card(data))
            typer.echo(f"recorded in {card} and {card.parent / 'MODEL_CARD.md'}")
        return
    result = evaluate(
        settings,
        rules,
        seeds=(9001, 9002, 9003) if seeds is None else tuple(int(x) for x in seeds.split(",")),
        seconds=seconds,
        sample_fps=sample_fps,
        inspection=inspection,
    )
    result["rules_from"] = f"{config}#{ln.id}" + (
        "" if min_confidence is None else f", min_confidence {min_confidence:g} for every class"
    )
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
    model_path: str | None = typer.Option(
        None,
        "--model-path",
        help="Override the path of the worker's model (models[worker.model].path), e.g. "
        "its INT8 build; inspector edge passes it.",
    ),
    int8_regions: bool = typer.Option(
        False,
        "--int8-regions",
        help="Parts / tiles lines use the INT8 build beside their region model when it "
        "exists (model.int8.onnx); inspector edge passes it.",
    ),
) -> None:
    """Run a detection worker (one member of the consumer group)."""
    from inspector.commandline import load_or_exit, traces_or_exit
    from inspector.config import use_int8_regions
    from inspector.detect.worker import run_worker
    from inspector.inference.model import ModelError
    from inspector.telemetry.logs import setup_logging

    cfg = load_or_exit(config)
    if model_path is not None:
        name = cfg.worker.model
        cfg.models[name] = cfg.models[name].model_copy(update={"path": model_path})
    if int8_regions:
        use_int8_regions(cfg)
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
    parts_dataset: bool = typer.Option(
        False,
        "--parts-dataset",
        help="Generate the simulator's part-crop dataset (the parts mode's region model); "
        "--n-train / --n-val count frames, each gives a crop per part in view.",
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

    if sum((data is not None, from_scratch, parts_dataset)) != 1:
        raise typer.BadParameter("give exactly one of --data, --from-scratch or --parts-dataset")
    out.mkdir(parents=True, exist_ok=True)
    gen_version = None
    if from_scratch or parts_dataset:
        from inspector.sim import GENERATOR_VERSION

        gen_version = GENERATOR_VERSION
        kind = "sim" if from_scratch else "crops"
        ds_dir = tr.default_config_dir().parent / "datasets" / f"{kind}-{gen_version}-{seed}"
        if from_scratch:
            data = tr.generate_sim_dataset(ds_dir, n_train, n_val, seed)
        else:
            from inspector.detect.parts_data import write_crop_dataset

            data = write_crop_dataset(ds_dir, n_train, n_val, seed, size=imgsz)
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
        "name": out.name,
        "dataset": _dataset_facts(data, n_train, n_val, gen_version, parts_dataset),
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
    from inspector.detect.card import render_card

    (out / "MODEL_CARD.md").write_text(render_card(card))
    typer.echo(f"model: {result.onnx} ({result.metrics['mAP50']} mAP50); card: {path}")


def _dataset_facts(
    data: Path, n_train: int, n_val: int, gen_version: str | None, crops: bool = False
) -> dict[str, object]:
    """What the card says about the data: the simulator's settings, or what
    ``inspector dataset import`` recorded beside the data.yaml (source, counts)."""
    import json

    if gen_version is not None and crops:
        manifest = json.loads((data.parent / "manifest.json").read_text())
        return {
            "kind": "part crops (inspector/detect/parts_data.py)",
            "n_train_frames": n_train,
            "n_val_frames": n_val,
            "n_train": len(manifest["train"]),
            "n_val": len(manifest["val"]),
            "crop": manifest["crop"],
            "generator_version": gen_version,
        }
    if gen_version is not None:
        return {"n_train": n_train, "n_val": n_val, "generator_version": gen_version}
    facts: dict[str, object] = {"data_yaml": str(data)}
    report = data.parent / "import-report.json"
    if report.is_file():
        r = json.loads(report.read_text())
        images = r.get("images", {})
        facts.update(
            source=r.get("source"),
            format=r.get("format"),
            n_train=images.get("train"),
            n_val=images.get("val"),
            boxes=r.get("boxes"),
        )
    return facts


def quantize_cmd(
    config: Path = typer.Option(Path("configs/demo.yaml"), "--config", "-c", help="Plant config."),
    line: str | None = typer.Option(None, "--line", help="Whose rules judge (default: first)."),
    model: str | None = typer.Option(None, "--model", help="ONNX model (default: config's)."),
    out: Path | None = typer.Option(
        None, "--out", help="Where the INT8 build goes (default: <model>.int8.onnx beside it)."
    ),
    frames: Path | None = typer.Option(
        None,
        "--frames",
        help="A folder of the line's own frames (JPEG/PNG) to calibrate on "
        "(default: the simulated line, tuning seeds).",
    ),
    n_calib: int = typer.Option(64, "--calibration-frames", min=1, max=5000),
    seeds: str = typer.Option("9001,9002,9003", "--seeds", help="Held-out scene seeds."),
    seconds: float = typer.Option(60.0, "--seconds", help="Simulated seconds per seed."),
    max_drop: float = typer.Option(
        1.0,
        "--max-recall-drop",
        min=0.0,
        max=100.0,
        help="Refuse the build if per-part recall drops by more points than this.",
    ),
    card: Path | None = typer.Option(
        None, "--card", help="Model card JSON to record the comparison in (and MODEL_CARD.md)."
    ),
    region: bool = typer.Option(
        False,
        "--region",
        help="Quantize the line's region model (parts / tiles mode) instead of the frame "
        "model: calibrated on the crops the worker cuts, judged in the line's mode.",
    ),
) -> None:
    """Build the INT8 version of an ONNX detector (static quantization, calibrated on line
    frames, head in float) and ship it only if per-part recall holds."""
    import json

    from inspector.commandline import load_or_exit
    from inspector.detect import quantize as qz
    from inspector.inference.model import resolve_model_path

    cfg = load_or_exit(config)
    ln = cfg.line(line) if line else cfg.lines[0]
    frame_settings = (
        cfg.model if model is None or region else cfg.model.model_copy(update={"path": model})
    )
    inspection = ln.inspection if region else None
    if inspection is not None and inspection.mode == "frame":
        typer.echo(f"error: line {ln.id} inspects whole frames: it has no region model", err=True)
        raise typer.Exit(2)
    settings = (
        frame_settings
        if inspection is None
        else cfg.model.model_copy(
            update={"path": model or inspection.region_model, "imgsz": inspection.crop_size}
        )
    )
    if inspection is not None and model is not None:
        inspection = inspection.model_copy(update={"region_model": model})
    src, _ = resolve_model_path(settings.path)
    target = out or qz.int8_path(src)
    what = {None: "frames", "parts": "part crops"}.get(
        None if inspection is None else inspection.mode, "tiles"
    )
    try:
        calib = (
            qz.folder_frames(frames, n_calib)
            if frames
            else qz.line_frames(n_calib, seeds=(8101, 8102))
        )
        if inspection is not None:
            calib = qz.region_crops(calib, frame_settings, inspection)
        staged = qz.build(src, target.with_name(target.stem + ".candidate.onnx"), calib, settings)
    except qz.QuantizeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    held_out = tuple(int(s) for s in seeds.split(","))
    verdict, f_res, q_res = qz.compare(
        src,
        staged,
        frame_settings if inspection is not None else settings,
        ln.rules,
        seeds=held_out,
        seconds=seconds,
        max_drop_points=max_drop,
        inspection=inspection,
    )
    bench_frames = qz.line_frames(24, seeds=(8103,))
    if inspection is not None:
        bench_frames = qz.region_crops(bench_frames, frame_settings, inspection)[:24]
    f_ms = qz.latency_ms(src, settings, bench_frames)
    q_ms = qz.latency_ms(staged, settings, bench_frames)
    record = {
        "file": target.name,
        "shipped": verdict.shipped,
        "decision": verdict.reason(),
        "judged_in": "frame mode" if inspection is None else f"{inspection.mode} mode",
        "calibration": f"{len(calib)} {what} from "
        + (str(frames) if frames else "the simulated line, seeds 8101,8102"),
        "held_out": {"seeds": list(held_out), "seconds_per_seed": seconds},
        "per_part_recall": {"float": verdict.float_recall, "int8": verdict.int8_recall},
        "per_part_false_reject": {"float": verdict.float_frr, "int8": verdict.int8_frr},
        "per_frame_recall": {
            "float": f_res["per_frame"]["recall"],
            "int8": q_res["per_frame"]["recall"],
        },
        "batch1_ms_median": {"float": round(f_ms, 2), "int8": round(q_ms, 2)},
        "speedup": round(f_ms / q_ms, 2) if q_ms > 0 else None,
        "size_mb": {
            "float": round(src.stat().st_size / 1e6, 2),
            "int8": round(staged.stat().st_size / 1e6, 2),
        },
    }
    typer.echo(json.dumps(record, indent=2))
    if card is not None:
        from inspector.detect.card import render_card

        data = json.loads(card.read_text())
        data["int8"] = record
        card.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        (card.parent / "MODEL_CARD.md").write_text(render_card(data))
    if not verdict.shipped:
        staged.unlink()
        typer.echo(f"error: INT8 build {verdict.reason()}", err=True)
        raise typer.Exit(1)
    staged.replace(target)
    typer.echo(f"wrote {target} ({verdict.reason()})")
