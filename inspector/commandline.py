"""What every command shares, below the stages: the --config option, one-line errors
with an exit code, loading a plant config, and setting up the span exporter."""

from __future__ import annotations

from pathlib import Path

import typer

from inspector.config import ConfigError, PlantConfig, load_config

ConfigOpt = typer.Option(..., "--config", "-c", help="Plant config YAML.", exists=False)


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def load_or_exit(path: Path) -> PlantConfig:
    """Load a config or print every problem with its field path and exit 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"{exc.source}: invalid configuration ({len(exc.errors)} problems)", err=True)
        for e in exc.errors:
            typer.echo(f"  {e}", err=True)
        raise typer.Exit(2) from None


def traces_or_exit(cfg: PlantConfig, service: str) -> None:
    """Set the process's span exporter up per ``observe.traces``, or exit 2 saying why."""
    from inspector.telemetry.tracing import TracingUnavailable, setup

    o = cfg.observe
    try:
        setup(service, o.traces, o.otlp_endpoint, o.traces_file)
    except TracingUnavailable as exc:
        raise fail(str(exc), 2) from None
