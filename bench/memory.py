"""Part 7: resident memory of every pipeline process over a whole-plant run (the demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import MachineMeter

GROWTH_TARGET = 0.05


def part7_memory(duration_s: float, out_dir: Path, echo: Any = print) -> dict[str, Any]:
    from inspector.demo import run_demo

    meter = MachineMeter().start()
    card = run_demo(duration_s, out_dir=out_dir, echo=echo)
    machine = meter.stop()
    procs: dict[str, Any] = {}
    for name, rss in sorted(card.get("rss_mb", {}).items()):
        start, end = rss.get("start"), rss.get("end")
        growth = (end - start) / start if start and end is not None else None
        procs[name] = {
            "start_mb": start,
            "end_mb": end,
            "growth": None if growth is None else round(growth, 4),
        }
    growths = [p["growth"] for p in procs.values() if p["growth"] is not None]
    warm = min(30.0, duration_s / 4)
    return {
        "what": f"`inspector demo` for {duration_s:g} s (2 lines x 2 sim cameras at 3 fps, "
        "ingest, 1 worker, act, dashboard); VmRSS of each process after a "
        f"{warm:g} s warm-up and at the end",
        "duration_s": duration_s,
        "processes": procs,
        "max_growth": max(growths) if growths else None,
        "frames_verdicted": card.get("frames_verdicted"),
        "frames_dropped": card.get("frames_dropped"),
        "capture_to_verdict_s": card.get("capture_to_verdict_s"),
        "exit_codes": card.get("exit_codes"),
        "scorecard": card.get("path"),
        **machine,
    }
