"""``inspector status``: one look at the plant — per line and camera: state, fps, lag,
PASS/FAIL/FAULT counts and yield since the start of the day."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from inspector.config import PlantConfig
from inspector.observe.aggregate import PlantView
from inspector.observe.feed import FeedError, TopicReader, group_lag


def collect_status(cfg: PlantConfig, since: float, timeout_s: float = 60.0) -> dict[str, Any]:
    view = PlantView(cfg, since=since)
    # Camera states change rarely: the latest one may be days old, so read them all.
    with TopicReader(cfg, ["camera-status"], client_suffix="status").open() as reader:
        for rec in reader.read_to_end(timeout_s):
            view.apply(rec)
    with TopicReader(
        cfg, ["verdicts", "line-commands"], start_s=since, client_suffix="status"
    ).open() as reader:
        for rec in reader.read_to_end(timeout_s):
            view.apply(rec)
    snap = view.snapshot()
    try:
        lag: dict[int, int | None] | None = group_lag(
            cfg, cfg.worker.group_id, cfg.topics.frames, timeout_s=min(timeout_s, 10.0)
        )
        lag_error = None
    except FeedError as exc:
        lag, lag_error = None, str(exc)
    snap["act_counters"] = act_counters(cfg)
    snap["lag"] = {
        "group": cfg.worker.group_id,
        "topic": cfg.topics.frames,
        "partitions": {str(p): n for p, n in (lag or {}).items()},
        "total": sum(n for n in (lag or {}).values() if n is not None) if lag else None,
        "error": lag_error,
    }
    return snap


def act_counters(cfg: PlantConfig) -> dict[str, dict[str, int]] | None:
    """The workflow consumer's own per-line counters (since their last reset), when the act
    stage is installed and Redis answers; None otherwise. Shown next to today's counts,
    which come from the verdicts topic."""
    try:
        from inspector.bus.store import connect, line_counters

        client = connect(cfg.redis)
        try:
            out = {}
            for ln in cfg.lines:
                c = line_counters(client, cfg.redis.key_prefix, ln.id)
                out[ln.id] = {"PASS": c.passed, "FAIL": c.failed, "FAULT": c.faults}
            return out
        finally:
            client.close()
    except Exception:  # optional context: never let it break the status view
        return None


def _fmt_pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}%"


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "—"
    s = max(0.0, now - ts)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.0f}h ago"


STATE_STYLE = {
    "streaming": "green",
    "connecting": "yellow",
    "backing_off": "yellow",
    "stalled": "red",
    "stopped": "red",
    "unknown": "dim",
}


def render_unknown(unknown: dict[str, Any], console: Console, now: float) -> None:
    """Events from lines/cameras this config does not list: apart, never as plant lines."""
    if not unknown.get("events"):
        return
    c = unknown["counts"]
    t = Table(
        title=f"Unknown source (not in this config): {unknown['events']} events, "
        f"PASS {c['PASS']} FAIL {c['FAIL']} FAULT {c['FAULT']}",
        title_justify="left",
    )
    for col in ("line", "camera", "state", "PASS", "FAIL", "FAULT", "last"):
        t.add_column(col, no_wrap=True)
    for src in unknown["sources"]:
        sc = src["counts"]
        t.add_row(
            src["line_id"],
            src["id"] or "—",
            src["state"],
            str(sc["PASS"]),
            str(sc["FAIL"]),
            str(sc["FAULT"]),
            _ago(src["last_verdict_at"], now),
        )
    if unknown.get("not_listed"):
        t.caption = f"{unknown['not_listed']} more events from sources not listed"
    console.print(t)


def render_status(snap: dict[str, Any], console: Console) -> None:
    now = time.time()
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(snap["since"]))
    console.print(f"[bold]{snap['plant']}[/bold]  counts since {since}")
    lines = Table(title="Lines", title_justify="left")
    lines.add_column("line", no_wrap=True)
    for col in ("PASS", "FAIL", "FAULT", "yield", "p50 latency"):
        lines.add_column(col, justify="right", no_wrap=True)
    lines.add_column("state")
    for ln in snap["lines"]:
        c = ln["counts"]
        p50 = ln["latency"]["p50"]
        stops = ", ".join(e["reason"] or e["episode_id"][:8] for e in ln["episodes"])
        manual = ln.get("manual_inspection") or []
        line_state = [f"[red]STOPPED[/red] {stops}"] if ln["episodes"] else []
        if manual:
            line_state.append("[yellow]MANUAL INSPECTION[/yellow] (inspection degraded)")
        lines.add_row(
            ln["id"],
            str(c["PASS"]),
            f"[red]{c['FAIL']}[/red]" if c["FAIL"] else "0",
            f"[yellow]{c['FAULT']}[/yellow]" if c["FAULT"] else "0",
            _fmt_pct(ln["yield"]),
            "—" if p50 is None else f"{p50 * 1000:.0f} ms",
            "; ".join(line_state),
        )
    console.print(lines)
    if snap.get("act_counters"):
        totals = "  ".join(
            f"{line}: {c['PASS']}/{c['FAIL']}/{c['FAULT']}"
            for line, c in snap["act_counters"].items()
        )
        console.print(f"[dim]act counters since reset (PASS/FAIL/FAULT): {totals}[/dim]")
    cams = Table(title="Cameras", title_justify="left")
    cams.add_column("camera", no_wrap=True)
    cams.add_column("state", no_wrap=True)
    cams.add_column("fps", justify="right", no_wrap=True)
    for col in ("PASS", "FAIL", "FAULT", "yield"):
        cams.add_column(col, justify="right", no_wrap=True)
    cams.add_column("last", justify="right", no_wrap=True)
    for ln in snap["lines"]:
        for cam in ln["cameras"]:
            c = cam["counts"]
            style = STATE_STYLE.get(cam["state"], "")
            state = f"[{style}]{cam['state']}[/{style}]" if style else cam["state"]
            state += f" [dim]{_ago(cam['state_since'], now)}[/dim]"
            if cam["reason"] and cam["state"] != "streaming":
                state += f" [dim]({cam['reason']})[/dim]"
            cams.add_row(
                cam["id"],
                state,
                f"{cam['judged_fps']:.1f}",
                str(c["PASS"]),
                str(c["FAIL"]),
                str(c["FAULT"]),
                _fmt_pct(cam["yield"]),
                _ago(cam["last_verdict_at"], now),
            )
    console.print(cams)
    render_unknown(snap.get("unknown_sources") or {}, console, now)
    lag = snap["lag"]
    if lag["error"]:
        console.print(f"lag of {lag['group']} on {lag['topic']}: unknown ({lag['error']})")
    else:
        parts = ", ".join(
            f"p{p}={'?' if n is None else n}" for p, n in sorted(lag["partitions"].items())
        )
        console.print(
            f"lag of consumer group [bold]{lag['group']}[/bold] on {lag['topic']}: "
            f"[bold]{lag['total']}[/bold] frames ({parts})"
        )
