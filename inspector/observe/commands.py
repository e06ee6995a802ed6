"""CLI of the QA surface: ``tail``, ``evidence``, ``status``, ``dashboard``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from inspector.commandline import ConfigOpt, fail, load_or_exit

if TYPE_CHECKING:
    from inspector.config import PlantConfig

# (config, window in seconds) -> the callable the dashboard asks for its trends panel;
# given by the composition root (inspector.cli), since observe does not import the lake.
TrendsSource = Callable[["PlantConfig", float], Callable[[], dict[str, Any]]]


class TailKind(StrEnum):
    verdicts = "verdicts"
    defects = "defects"
    actions = "actions"
    camera_status = "camera-status"
    line_commands = "line-commands"


class VerdictChoice(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    FAULT = "FAULT"


def _since(text: str | None, default: float | None) -> float | None:
    from inspector.observe.feed import FeedError, parse_duration

    if text is None:
        return default
    try:
        return time.time() - parse_duration(text)
    except FeedError as exc:
        raise fail(str(exc)) from None


def tail(
    kind: TailKind = typer.Argument(..., help="Which events to follow."),
    config: Path = ConfigOpt,
    line: str | None = typer.Option(None, "--line", help="Only this line."),
    camera: str | None = typer.Option(None, "--camera", help="Only this camera."),
    cls: str | None = typer.Option(None, "--class", help="Only events with this defect class."),
    verdict: VerdictChoice | None = typer.Option(None, "--verdict", help="Only this verdict."),
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="Start at the oldest record kept."
    ),
    since: str | None = typer.Option(
        None, "--since", help="Start this long ago (30s, 10m, 2h, 1d)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON event per line (for jq)."),
    max_events: int | None = typer.Option(None, "--max", min=1, help="Stop after N events."),
    timeout: float | None = typer.Option(None, "--timeout", min=0, help="Stop after S seconds."),
) -> None:
    """Follow verdicts, defects, actions or camera states live (default: from now on)."""
    from inspector.observe.feed import FeedError, Filters, topic_for
    from inspector.observe.tail import run_tail
    from inspector.telemetry.logs import setup_logging

    if from_beginning and since:
        raise fail("use either --from-beginning or --since, not both")
    cfg = load_or_exit(config)
    setup_logging("tail", cfg.observe.log_format, level=logging.WARNING)
    filters = Filters(line, camera, cls, verdict.value if verdict else None)
    try:
        filters.validate(cfg, kind.value)
    except FeedError as exc:
        raise fail(str(exc)) from None
    start = None if from_beginning else _since(since, None)
    from_now = not from_beginning and since is None
    topic = topic_for(cfg, kind.value)
    if from_now:
        origin = "now"
    elif start is None:
        origin = "the beginning"
    else:
        origin = time.strftime("%H:%M:%S", time.localtime(start))

    def ready() -> None:
        # stderr, so JSON on stdout stays clean for pipes
        typer.echo(f"following {topic} from {origin} (Ctrl-C to stop)", err=True)

    try:
        run_tail(
            cfg,
            kind.value,
            filters,
            start_s=start,
            from_now=from_now,
            as_json=as_json,
            max_events=max_events,
            timeout_s=timeout,
            on_ready=ready,
        )
    except FeedError as exc:
        raise fail(str(exc), 1) from None
    except KeyboardInterrupt:
        pass


def evidence(
    verdict_id: str = typer.Argument(..., help="Verdict id (from `tail verdicts`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the JPEG."),
    config: Path = ConfigOpt,
    raw: bool = typer.Option(False, "--raw", help="The frame as captured, without boxes."),
) -> None:
    """Write the evidence frame of a verdict with its findings boxed and labelled."""
    from inspector.bus.crypto import BlobError, KeyringError, store_sealer
    from inspector.bus.kafka import ServiceUnavailable
    from inspector.bus.store import connect
    from inspector.observe.evidence import (
        EvidenceExpired,
        EvidenceUnreadable,
        VerdictNotFound,
        evidence_jpeg,
        find_verdict,
    )
    from inspector.observe.feed import FeedError

    cfg = load_or_exit(config)
    try:
        client = connect(cfg.redis)
        verdict = find_verdict(cfg, client, verdict_id)
        jpeg = evidence_jpeg(
            client, verdict, cfg.redis.key_prefix, annotated=not raw, sealer=store_sealer(cfg)
        )
    except VerdictNotFound as exc:
        raise fail(str(exc), 1) from None
    except (EvidenceExpired, EvidenceUnreadable, BlobError) as exc:
        raise fail(str(exc), 3) from None
    except KeyringError as exc:
        raise fail(str(exc), 2) from None
    except (ServiceUnavailable, FeedError) as exc:
        raise fail(str(exc), 1) from None
    out.write_bytes(jpeg)
    classes = ", ".join(f"{f.cls} {f.score:.2f}" for f in verdict.findings) or "no findings"
    typer.echo(
        f"{out}: {verdict.verdict} {verdict.line_id}/{verdict.camera_id} #{verdict.seq} — {classes}"
    )


def status(
    config: Path = ConfigOpt,
    since: str | None = typer.Option(
        None, "--since", help="Count from this long ago (default: local midnight)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Per line and camera: state, fps, detect lag, PASS/FAIL/FAULT counts and yield."""
    import orjson
    from rich.console import Console

    from inspector.observe.feed import FeedError, start_of_today
    from inspector.observe.status import collect_status, render_status

    cfg = load_or_exit(config)
    start = _since(since, start_of_today())
    assert start is not None
    try:
        snap = collect_status(cfg, start)
    except FeedError as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        for ln in snap["lines"]:
            ln["latency"].pop("points", None)
            ln.pop("gallery", None)
        typer.echo(orjson.dumps(snap, option=orjson.OPT_INDENT_2).decode())
    else:
        render_status(snap, Console(highlight=False))


def dashboard(
    config: Path,
    host: str | None,
    port: int | None,
    since: str | None,
    trends_window: str,
    trends_every: float,
    trends_source: TrendsSource | None,
) -> None:
    from inspector.observe.dashboard import Dashboard, DashboardConfigError
    from inspector.observe.feed import FeedError, parse_duration, start_of_today
    from inspector.telemetry.logs import setup_logging

    cfg = load_or_exit(config)
    setup_logging("dashboard", cfg.observe.log_format)
    start = _since(since, start_of_today())
    assert start is not None
    try:
        window_s = parse_duration(trends_window)
    except FeedError as exc:
        raise fail(f"--trends-window: {exc}") from None
    if not 3600 <= window_s <= 90 * 86400:
        raise fail("--trends-window is 1h to 90d")
    trends = trends_source(cfg, window_s) if trends_source is not None else None
    try:
        dash = Dashboard(
            cfg, host=host, port=port, since=start, trends=trends, trends_ttl_s=trends_every
        )
    except DashboardConfigError as exc:
        raise fail(str(exc)) from None
    logging.getLogger(__name__).info(
        "dashboard serving",
        extra={"url": f"http://{dash.server.config.host}:{dash.server.config.port}/"},
    )
    dash.run()


def register(app: typer.Typer, *, trends_source: TrendsSource | None = None) -> None:
    """``trends_source``: where the dashboard's trends panel reads from (the lake, wired
    in by ``inspector.cli``); without it the panel says "no lake"."""
    app.command("tail")(tail)
    app.command("evidence")(evidence)
    app.command("status")(status)

    @app.command("dashboard")
    def dashboard_command(
        config: Path = ConfigOpt,
        host: str | None = typer.Option(None, "--host", help="Default: observe.dashboard_host."),
        port: int | None = typer.Option(None, "--port", help="Default: observe.dashboard_port."),
        since: str | None = typer.Option(
            None, "--since", help="Show this long a window (default: since local midnight)."
        ),
        trends_window: str = typer.Option(
            "24h",
            "--trends-window",
            help="The lake trends panel's window (1h to 90d; by hour up to 2d, then by day).",
        ),
        trends_every: float = typer.Option(
            60.0,
            "--trends-every",
            min=1.0,
            max=3600.0,
            help="Seconds the trends are cached: the lake is read at most this often.",
        ),
    ) -> None:
        """Serve the live QA dashboard (token required; read-only), with trends from
        the lake."""
        dashboard(config, host, port, since, trends_window, trends_every, trends_source)
