"""``inspector kpi``: the figures a plant runs on, computed by DuckDB over the lake.

The verdicts table is scanned through pyiceberg (partition pruning on day and line)
into Arrow and queried with DuckDB. Definitions (per verdict, i.e. per judged frame):

- yield = PASS / (PASS + FAIL); FAULTs (frames that could not be judged) are counted
  apart and excluded from both yield and defect rate;
- defect ppm = FAIL / (PASS + FAIL) × 1,000,000;
- Pareto: findings per defect class on FAIL verdicts, with share and cumulative share;
- FAULT share by rule: FAULTs per rule over all FAULTs and over all verdicts;
- capture→verdict latency: p50/p95 (linear interpolation) of emitted − captured.

Times are UTC; a day is a UTC calendar day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
from pyiceberg.exceptions import NoSuchTableError

from inspector.config import PlantConfig, Shift
from inspector.lake.catalog import LakeError, open_catalog
from inspector.lake.tables import OWNER_PROPERTY

DIMENSIONS = {
    "line": "line_id",
    "day": "CAST(captured_at AS DATE)",
    "camera": "camera_id",
    "model": "coalesce(model_version, 'unknown')",
}
REPORTS = ("yield", "pareto", "faults", "latency")
_REL = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``2026-09-21``, ``2026-09-21T06:00`` (UTC unless an offset is given) or ``7d``,
    ``12h``, ``30m`` before now."""
    now = now or datetime.now(UTC)
    m = _REL.match(text.strip())
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use 2026-09-21, 2026-09-21T06:00 or 7d / 12h / 30m"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse_by(text: str) -> list[str]:
    dims = [d.strip() for d in text.split(",") if d.strip()]
    known = [*DIMENSIONS, "shift"]
    bad = [d for d in dims if d not in known]
    if bad or not dims:
        raise ValueError(f"--by takes a comma list of {', '.join(known)}; got {text!r}")
    return dims


def shift_sql(shifts: list[Shift]) -> str:
    """The shift a capture falls in, named with the day the shift started:
    ``2026-09-21 night`` for 02:00 on the 22nd when night starts at 22:00."""
    if not shifts:
        raise ValueError("--by shift needs lake.shifts in the plant config")
    m = "(hour(captured_at) * 60 + minute(captured_at))"
    first = shifts[0].minute
    day = (
        f"strftime(CAST(captured_at AS DATE) - CASE WHEN {m} < {first} THEN 1 ELSE 0 END, "
        "'%Y-%m-%d')"
    )
    cases = " ".join(f"WHEN {m} >= {s.minute} THEN '{s.name}'" for s in reversed(shifts))
    return f"{day} || ' ' || CASE {cases} ELSE '{shifts[-1].name}' END"


@dataclass(frozen=True)
class Window:
    since: datetime | None = None
    until: datetime | None = None
    lines: tuple[str, ...] = ()


def scan_verdicts(cfg: PlantConfig, window: Window) -> pa.Table:
    """The verdicts in the window, as Arrow (captured_at as a UTC wall-clock timestamp)."""
    ident = f"{cfg.lake.namespace}.verdicts"
    try:
        table = open_catalog(cfg.lake).load_table(ident)
    except NoSuchTableError:
        raise LakeError(f"no table {ident} in the lake yet: run `inspector sink` first") from None
    if table.properties.get(OWNER_PROPERTY) != "verdicts":
        raise LakeError(f"table {ident} was not written by inspector's sink")
    parts = []
    if window.since is not None:
        parts.append(f"captured_at >= '{window.since.isoformat()}'")
    if window.until is not None:
        parts.append(f"captured_at < '{window.until.isoformat()}'")
    if window.lines:
        quoted = ", ".join("'" + ln.replace("'", "''") + "'" for ln in window.lines)
        parts.append(f"line_id IN ({quoted})")
    fields = (
        "verdict_id", "line_id", "camera_id", "verdict", "rule", "classes",
        "captured_at", "latency_ms", "model_version",
    )  # fmt: skip
    scan = table.scan(row_filter=" AND ".join(parts) or "True", selected_fields=fields)
    arrow = scan.to_arrow()
    i = arrow.schema.get_field_index("captured_at")
    return arrow.set_column(i, "captured_at", arrow.column(i).cast(pa.timestamp("us")))


def _query(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        out.append(
            {
                n: (v.isoformat() if hasattr(v, "isoformat") else v)
                for n, v in zip(names, row, strict=True)
            }
        )
    return out


def compute(
    arrow: pa.Table,
    by: list[str],
    reports: tuple[str, ...] = REPORTS,
    shifts: list[Shift] | None = None,
) -> dict[str, Any]:
    """Every report over ``arrow`` (a verdicts scan); rows ordered by their keys."""
    dims = dict(DIMENSIONS)
    if "shift" in by:
        dims["shift"] = shift_sql(shifts or [])
    con = duckdb.connect()
    con.register("v", arrow)
    keys = ", ".join(f"{dims[d]} AS {d}" for d in by)
    group = ", ".join(str(i + 1) for i in range(len(by)))
    out: dict[str, Any] = {}
    if "yield" in reports:
        out["yield"] = _query(
            con,
            f"""
            SELECT {keys}, count(*) AS verdicts,
                   count(*) FILTER (verdict = 'PASS') AS pass,
                   count(*) FILTER (verdict = 'FAIL') AS fail,
                   count(*) FILTER (verdict = 'FAULT') AS fault,
                   round(100.0 * count(*) FILTER (verdict = 'PASS')
                         / nullif(count(*) FILTER (verdict IN ('PASS', 'FAIL')), 0), 3)
                       AS yield_pct,
                   round(1e6 * count(*) FILTER (verdict = 'FAIL')
                         / nullif(count(*) FILTER (verdict IN ('PASS', 'FAIL')), 0), 0)
                       AS defect_ppm
            FROM v GROUP BY {group} ORDER BY {group}""",
        )
    if "pareto" in reports:
        out["pareto"] = _query(
            con,
            """
            WITH f AS (SELECT unnest(classes) AS class, verdict_id FROM v
                       WHERE verdict = 'FAIL'),
                 c AS (SELECT class, count(*) AS findings,
                              count(DISTINCT verdict_id) AS frames FROM f GROUP BY class)
            SELECT class, findings, frames,
                   round(100.0 * findings / sum(findings) OVER (), 2) AS share_pct,
                   round(100.0 * sum(findings) OVER (ORDER BY findings DESC, class
                         ROWS UNBOUNDED PRECEDING) / sum(findings) OVER (), 2)
                       AS cumulative_pct
            FROM c ORDER BY findings DESC, class""",
        )
    if "faults" in reports:
        out["faults"] = _query(
            con,
            """
            SELECT rule, count(*) AS faults,
                   round(100.0 * count(*) / sum(count(*)) OVER (), 2) AS share_of_faults_pct,
                   round(100.0 * count(*) / (SELECT count(*) FROM v), 3)
                       AS share_of_verdicts_pct
            FROM v WHERE verdict = 'FAULT' GROUP BY rule ORDER BY faults DESC, rule""",
        )
    if "latency" in reports:
        out["latency"] = _query(
            con,
            f"""
            SELECT {keys}, count(*) AS verdicts,
                   round(quantile_cont(latency_ms, 0.5), 1) AS p50_ms,
                   round(quantile_cont(latency_ms, 0.95), 1) AS p95_ms
            FROM v GROUP BY {group} ORDER BY {group}""",
        )
    con.close()
    return out


# --------------------------------------------------------------------------- output


def to_table(name: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"{name}: no verdicts in the window"
    cols = list(rows[0])
    cells = [[("" if r[c] is None else str(r[c])) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = [name, "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    for row in cells:
        lines.append(
            "  ".join(
                v.rjust(w) if v.replace(".", "", 1).lstrip("-").isdigit() else v.ljust(w)
                for v, w in zip(row, widths, strict=True)
            )
        )
    return "\n".join(lines)


def to_csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()
