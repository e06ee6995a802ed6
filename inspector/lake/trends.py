"""Trends for the dashboard, read from the lake: yield over time per line, the defect
Pareto and a per-shift table over one window, computed by ``inspector kpi``'s own
scan and queries (``kpi.scan_verdicts`` + ``kpi.compute``), so the dashboard and the
command can never disagree.

The dashboard does not import this module (stages are siblings): the composition root
(``inspector.cli``) hands it ``trends_provider(cfg)`` as a plain callable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from inspector.config import PlantConfig
from inspector.lake.catalog import LakeError
from inspector.lake.kpi import Window, compute, scan_verdicts

# A window up to this long is bucketed by hour, a longer one by day.
HOURLY_UP_TO_S = 2 * 86400.0


class NoLake(LakeError):
    """There is no lake to read (no catalog yet): the panel says so, nothing fails."""


def _check_lake(cfg: PlantConfig) -> None:
    """The default SQLite catalog is a file under ``lake.data_dir``; opening a missing
    one would create an empty lake where the dashboard runs, so say "no lake" instead."""
    lake = cfg.lake
    if lake.catalog_uri:
        return
    db = Path(lake.data_dir) / "catalog.db"
    if not db.is_file():
        raise NoLake(f"no catalog at {db.resolve()}: run `inspector sink` first")


def _point(row: dict[str, Any], bucket: str) -> dict[str, Any]:
    """A yield row with its bucket as ``at`` (ISO, UTC) and ``at_s`` (epoch seconds)."""
    out = {k: v for k, v in row.items() if k != bucket}
    start = datetime.fromisoformat(row[bucket])
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    out["at"] = row[bucket]
    out["at_s"] = start.timestamp()
    return out


def trends(cfg: PlantConfig, now: datetime, window_s: float = 86400.0) -> dict[str, Any]:
    """The figures of the window ``[now - window_s, now)``:

    - ``yield``: per line and bucket (an hour, or a day for a window over two days):
      verdicts, pass, fail, fault, yield_pct, defect_ppm — ``kpi``'s yield report;
    - ``pareto``: ``kpi``'s Pareto over the window (findings per class on FAILs);
    - ``shifts``: ``kpi``'s yield by shift and line, or None without ``lake.shifts``.

    Raises ``NoLake`` when there is no catalog yet, ``LakeError`` / ``CatalogUnavailable``
    (or the catalog's own errors) when the lake cannot be read.
    """
    if window_s <= 0:
        raise ValueError("the trends window must be positive")
    _check_lake(cfg)
    since = now - timedelta(seconds=window_s)
    bucket = "hour" if window_s <= HOURLY_UP_TO_S else "day"
    arrow = scan_verdicts(cfg, Window(since=since, until=now))
    main = compute(arrow, ["line", bucket], ("yield", "pareto"))
    shifts = None
    if cfg.lake.shifts:
        shifts = compute(arrow, ["shift", "line"], ("yield",), cfg.lake.shifts)["yield"]
    return {
        "available": True,
        "since": since.isoformat(),
        "until": now.isoformat(),
        "bucket": bucket,
        "lines": [ln.id for ln in cfg.lines],
        "verdicts": arrow.num_rows,
        "yield": [_point(r, bucket) for r in main["yield"]],
        "pareto": main["pareto"],
        "shifts": shifts,
    }


def trends_provider(cfg: PlantConfig, window_s: float = 86400.0) -> Callable[[], dict[str, Any]]:
    """What the dashboard is given: the trends of the last ``window_s`` seconds at the
    moment it is called. A lake that is not there yet, or that holds tables the sink
    did not write, is ``{"available": False, "reason": ...}``; a catalog or warehouse
    that cannot be read now raises (the dashboard reports it and asks again later)."""

    def provide() -> dict[str, Any]:
        try:
            return trends(cfg, datetime.fromtimestamp(time.time(), UTC), window_s)
        except LakeError as exc:
            return {"available": False, "reason": str(exc)}

    return provide
