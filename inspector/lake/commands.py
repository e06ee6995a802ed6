"""``inspector sink`` and ``inspector kpi``."""

from __future__ import annotations

from pathlib import Path

import typer

from inspector.commandline import ConfigOpt, fail, load_or_exit, traces_or_exit


def register(app: typer.Typer) -> None:
    @app.command("sink")
    def sink(
        config: Path = ConfigOpt,
        metrics_port: int | None = typer.Option(
            None, "--metrics-port", help="Port of /metrics /healthz /readyz (default: lake.port)."
        ),
    ) -> None:
        """Write verdicts, actions, camera status and defects into Apache Iceberg tables,
        exactly once (the table's snapshots hold the Kafka offsets they cover)."""
        from inspector.bus.kafka import ServiceUnavailable, Shutdown, check_broker
        from inspector.lake.catalog import CatalogUnavailable, LakeError
        from inspector.lake.service import run_sink
        from inspector.telemetry.logs import setup_logging

        cfg = load_or_exit(config)
        setup_logging("sink", cfg.observe.log_format)
        traces_or_exit(cfg, "sink")
        try:
            check_broker(cfg.kafka)
            run_sink(cfg, Shutdown().install(), metrics_port=metrics_port)
        except (ServiceUnavailable, CatalogUnavailable, LakeError) as exc:
            raise fail(str(exc), 1) from None

    @app.command("kpi")
    def kpi(
        config: Path = ConfigOpt,
        since: str | None = typer.Option(
            None, "--since", help="From (UTC): 2026-09-21, 2026-09-21T06:00, or 7d / 12h ago."
        ),
        until: str | None = typer.Option(None, "--until", help="Until (exclusive), same forms."),
        line: list[str] = typer.Option([], "--line", "-l", help="Only these lines (repeat)."),
        by: str = typer.Option(
            "line,day", "--by", help="Group by: line, day, shift, camera, model."
        ),
        report: list[str] = typer.Option(
            [], "--report", "-r", help="yield, pareto, faults, latency (repeat; default all)."
        ),
        fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    ) -> None:
        """Yield, defect ppm, defect Pareto, FAULT share by rule and capture→verdict
        latency, computed with DuckDB over the lake's verdicts table."""
        import orjson

        from inspector.lake.catalog import CatalogUnavailable, LakeError
        from inspector.lake.kpi import (
            REPORTS,
            Window,
            compute,
            parse_by,
            parse_time,
            scan_verdicts,
            to_csv,
            to_table,
        )

        cfg = load_or_exit(config)
        if fmt not in ("table", "csv", "json"):
            raise fail(f"--format is table, csv or json; got {fmt!r}")
        bad = [r for r in report if r not in REPORTS]
        if bad:
            raise fail(f"--report takes {', '.join(REPORTS)}; got {bad}")
        try:
            dims = parse_by(by)
            window = Window(
                since=parse_time(since) if since else None,
                until=parse_time(until) if until else None,
                lines=tuple(line),
            )
        except ValueError as exc:
            raise fail(str(exc)) from None
        try:
            arrow = scan_verdicts(cfg, window)
        except (LakeError, CatalogUnavailable) as exc:
            raise fail(str(exc), 1) from None
        except Exception as exc:  # the catalog or warehouse could not be read
            raise fail(f"reading the lake: {type(exc).__name__}: {exc}", 1) from None
        try:
            out = compute(arrow, dims, tuple(report) or REPORTS, cfg.lake.shifts)
        except ValueError as exc:
            raise fail(str(exc)) from None
        if fmt == "json":
            meta = {
                "since": window.since.isoformat() if window.since else None,
                "until": window.until.isoformat() if window.until else None,
                "lines": list(window.lines),
                "by": dims,
            }
            typer.echo(orjson.dumps({"window": meta, **out}, option=orjson.OPT_INDENT_2))
        elif fmt == "csv":
            parts = [f"# {name}\n{to_csv(rows)}" for name, rows in out.items()]
            typer.echo("\n".join(parts), nl=False)
        else:
            typer.echo("\n\n".join(to_table(name, rows) for name, rows in out.items()))
