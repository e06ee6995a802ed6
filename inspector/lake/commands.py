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
        until: str | None = typer.Option(
            None, "--until", help="Until (exclusive), same forms; default now."
        ),
        line: list[str] = typer.Option([], "--line", "-l", help="Only these lines (repeat)."),
        by: str | None = typer.Option(
            None,
            "--by",
            help="Group by: line, day, hour, shift, camera, model (default line,day for yield, "
            "latency and fpy; pareto and faults are plant-wide unless --by is given).",
        ),
        report: list[str] = typer.Option(
            [],
            "--report",
            "-r",
            help="yield, pareto, faults, latency, fpy, stops, uptime (repeat; default all "
            "whose table lake.tables writes).",
        ),
        fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    ) -> None:
        """Yield, defect ppm, defect Pareto by class and severity, FAULT share by rule,
        capture→verdict latency, first-pass yield per part, stop-line downtime per line
        and camera uptime, computed with DuckDB over the lake's tables."""
        import orjson

        from inspector.lake.catalog import CatalogUnavailable, LakeError
        from inspector.lake.kpi import (
            REPORTS,
            TABLE_OF,
            Window,
            parse_by,
            parse_time,
            run_reports,
            shift_sql,
            to_csv,
            to_table,
        )

        cfg = load_or_exit(config)
        if fmt not in ("table", "csv", "json"):
            raise fail(f"--format is table, csv or json; got {fmt!r}")
        bad = [r for r in report if r not in REPORTS]
        if bad:
            raise fail(f"--report takes {', '.join(REPORTS)}; got {bad}")
        reports = tuple(report) or tuple(r for r in REPORTS if TABLE_OF[r] in cfg.lake.tables)
        try:
            dims = parse_by(by or "line,day")
            if "shift" in dims:
                shift_sql(cfg.lake.shifts)  # refuses an empty shift calendar
            window = Window(
                since=parse_time(since) if since else None,
                until=parse_time(until) if until else None,
                lines=tuple(line),
            )
        except ValueError as exc:
            raise fail(str(exc)) from None
        now = window.end()
        try:
            out = run_reports(cfg, window, reports, dims, dims if by else None, now)
        except (LakeError, CatalogUnavailable) as exc:
            raise fail(str(exc), 1) from None
        except Exception as exc:  # the catalog or warehouse could not be read
            raise fail(f"reading the lake: {type(exc).__name__}: {exc}", 1) from None
        if fmt == "json":
            meta = {
                "since": window.since.isoformat() if window.since else None,
                "until": window.until.isoformat() if window.until else None,
                "end": now.isoformat(),
                "lines": list(window.lines),
                "by": dims,
            }
            typer.echo(orjson.dumps({"window": meta, **out}, option=orjson.OPT_INDENT_2))
        elif fmt == "csv":
            parts = [f"# {name}\n{to_csv(rows)}" for name, rows in out.items()]
            typer.echo("\n".join(parts), nl=False)
        else:
            typer.echo("\n\n".join(to_table(name, rows) for name, rows in out.items()))
