"""``inspector tail``: follow one of the plant's event topics, pretty or as JSON lines."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

from inspector.config import PlantConfig
from inspector.events import (
    ActionEvent,
    CameraStatusEvent,
    DefectEvent,
    Finding,
    LineCommand,
    Payload,
    VerdictEvent,
    dumps,
)
from inspector.observe.feed import Filters, Record, TopicReader

VERDICT_STYLE = {"PASS": "green", "FAIL": "bold red", "FAULT": "yellow"}
OUTCOME_STYLE = {
    "fired": "bold",
    "delivered": "bold",
    "retried": "yellow",
    "given_up": "red",
    "failed": "red",
}


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def _findings(findings: list[Finding]) -> str:
    return ", ".join(f"{f.cls} {f.score:.2f} {f.severity}" for f in findings)


def pretty(ev: Payload) -> str:
    """One rich-markup line per event; ids in full so they can be pasted into `evidence`."""
    if isinstance(ev, VerdictEvent):
        style = VERDICT_STYLE[ev.verdict]
        lat = (ev.timings.emitted_at - ev.timings.captured_at) * 1000
        extra = _findings(ev.findings) or escape(ev.reason)
        return (
            f"{_clock(ev.timings.emitted_at)}  {ev.line_id}/{ev.camera_id} #{ev.seq:<6} "
            f"[{style}]{ev.verdict:<5}[/{style}] {escape(ev.rule):<22} {escape(extra)}  "
            f"[dim]{lat:.0f} ms  {ev.verdict_id}[/dim]"
        )
    if isinstance(ev, DefectEvent):
        return (
            f"{_clock(ev.captured_at)}  {ev.line_id}/{ev.camera_id} #{ev.seq:<6} "
            f"[bold red]DEFECT[/bold red] {escape(_findings(ev.findings))}  "
            f"[dim]{ev.verdict_id}[/dim]"
        )
    if isinstance(ev, ActionEvent):
        style = OUTCOME_STYLE.get(ev.outcome, "dim")
        where = f"{ev.line_id}/{ev.camera_id}" if ev.camera_id else ev.line_id
        return (
            f"{_clock(ev.at)}  {where}  {escape(ev.workflow)} ({ev.kind}) "
            f"[{style}]{ev.outcome}[/{style}] attempt {ev.attempt}  {escape(ev.detail)}  "
            f"[dim]{ev.verdict_id or ''}[/dim]"
        )
    if isinstance(ev, CameraStatusEvent):
        style = "green" if ev.state == "streaming" else "yellow"
        return (
            f"{_clock(ev.at)}  {ev.line_id}/{ev.camera_id}  {ev.previous or '—'} → "
            f"[{style}]{ev.state}[/{style}]  {escape(ev.reason)}  "
            f"[dim]fps {ev.fps:.1f}  ingested {ev.frames_ingested}  dropped {ev.frames_dropped}  "
            f"reconnects {ev.reconnects}[/dim]"
        )
    if isinstance(ev, LineCommand):
        return (
            f"{_clock(ev.issued_at)}  {ev.line_id}  [bold]{ev.command.upper()}[/bold]  "
            f"{escape(ev.reason)}  [dim]{ev.episode_id or ev.command_id}[/dim]"
        )
    return escape(dumps(ev).decode())


def run_tail(
    cfg: PlantConfig,
    kind: str,
    filters: Filters,
    *,
    start_s: float | None,
    from_now: bool = False,
    as_json: bool,
    max_events: int | None,
    timeout_s: float | None,
    console: Console | None = None,
    write: Callable[[str], object] | None = None,
    on_ready: Callable[[], object] | None = None,
) -> int:
    """Print matching events until ``max_events`` or ``timeout_s``; return how many.

    ``on_ready`` is called once the start positions are assigned: from then on nothing
    produced is missed.
    """
    console = console or Console(highlight=False, soft_wrap=True)
    write = write or sys.stdout.write
    deadline = time.monotonic() + timeout_s if timeout_s is not None else None
    shown = 0
    with TopicReader(
        cfg, [kind], start_s=start_s, from_now=from_now, client_suffix="tail"
    ).open() as reader:
        if on_ready is not None:
            on_ready()
        while deadline is None or time.monotonic() < deadline:
            batch: list[Record] = reader.poll(0.2)
            for rec in batch:
                if not filters.matches(rec.event):
                    continue
                if as_json:
                    write(dumps(rec.event).decode() + "\n")
                else:
                    console.print(pretty(rec.event))
                shown += 1
                if max_events is not None and shown >= max_events:
                    return shown
            if as_json and batch:
                sys.stdout.flush()
    return shown
