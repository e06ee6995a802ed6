"""``inspector ingest`` and ``inspector sim-camera``."""

from __future__ import annotations

from pathlib import Path

import typer

from inspector.commandline import ConfigOpt, fail, load_or_exit, traces_or_exit


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("sim-camera")(sim_camera)


def ingest(
    config: Path = ConfigOpt,
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Override observe.ingest_port (0 = no endpoint)."
    ),
    camera: list[str] = typer.Option(
        [], "--camera", help="Only these camera ids (repeatable); default: every camera."
    ),
) -> None:
    """Read every configured camera (RTSP, GigE Vision) and publish sampled frames to Kafka."""
    from inspector.bus.crypto import KeyringError
    from inspector.bus.kafka import ServiceUnavailable, Shutdown
    from inspector.ingest.gige import AravisUnavailable
    from inspector.ingest.privacy import PrivacyError
    from inspector.ingest.service import run_ingest
    from inspector.telemetry.logs import setup_logging

    cfg = load_or_exit(config)
    known = {c.id for ln in cfg.lines for c in ln.cameras}
    unknown = sorted(set(camera) - known)
    if unknown:
        raise fail(f"unknown camera ids {unknown}; the config has {sorted(known)}", 2)
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise fail(f"--metrics-port {metrics_port} is not a port number", 2)
    setup_logging("ingest", cfg.observe.log_format)
    traces_or_exit(cfg, "ingest")
    shutdown = Shutdown().install()
    try:
        run_ingest(cfg, shutdown, cameras=camera or None, metrics_port=metrics_port)
    except (ServiceUnavailable, PrivacyError, KeyringError, AravisUnavailable) as exc:
        raise fail(str(exc), 1) from None
    except OSError as exc:  # the metrics port is taken
        raise fail(f"cannot serve metrics/health: {exc}", 1) from None


def sim_camera(
    count: int = typer.Option(2, "--count", min=1, max=64, help="Number of cameras."),
    width: int = typer.Option(1280, "--width", min=160, max=3840),
    height: int = typer.Option(720, "--height", min=90, max=2160),
    fps: int = typer.Option(15, "--fps", min=1, max=60),
    seed: int = typer.Option(0, "--seed", min=0),
    port: int | None = typer.Option(
        None, "--port", min=1, max=65535, help="First camera's port; the others follow."
    ),
    clip_seconds: float = typer.Option(10.0, "--clip-seconds", min=1.0, max=600.0),
    defect_rate: float = typer.Option(0.3, "--defect-rate", min=0.0, max=1.0),
) -> None:
    """Serve simulated conveyor cameras over RTSP until Ctrl-C (see inspector.sim)."""
    from inspector.sim import run_fleet

    run_fleet(
        count,
        width=width,
        height=height,
        fps=fps,
        seed=seed,
        port=port,
        clip_seconds=clip_seconds,
        defect_rate=defect_rate,
        out=typer.echo,
    )
