"""``inspector edge``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("edge")
    def edge(
        config: Path = typer.Option(..., "--config", "-c", help="Plant config YAML."),
        log_dir: Path | None = typer.Option(
            None, "--log-dir", help="Each child's output in <dir>/<child>.log (default: ours)."
        ),
    ) -> None:
        """Run ingest, worker(s) and act — and bridge, mqtt, sink when listed in
        edge.stages — of one box as one supervised group."""
        from inspector.commandline import fail, load_or_exit
        from inspector.edge.service import EdgeConfigError, run_edge
        from inspector.telemetry.logs import setup_logging

        cfg = load_or_exit(config)
        setup_logging("edge", cfg.observe.log_format)
        try:
            code = run_edge(cfg, config, log_dir=log_dir)
        except EdgeConfigError as exc:
            raise fail(str(exc), 2) from None
        raise typer.Exit(code)
