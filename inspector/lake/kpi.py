"""``inspector kpi``: the figures a plant runs on, computed by DuckDB over the lake.

The tables are scanned through pyiceberg (partition pruning on day and line) into
Arrow and queried with DuckDB. Definitions (README, "Lakehouse" → "KPIs"):

- per verdict, i.e. per judged frame: yield = PASS / (PASS + FAIL); FAULTs (frames
  that could not be judged) are counted apart and excluded from both yield and defect
  rate; defect ppm = FAIL / (PASS + FAIL) × 1,000,000;
- Pareto: findings per defect class on FAIL verdicts, with share and cumulative share,
  and the findings of each class per severity;
- FAULT share by rule: FAULTs per rule over all FAULTs and over all verdicts;
- capture→verdict latency: p50/p95 (linear interpolation) of emitted − captured;
- first-pass yield, per part (line_id, part_id) over its PASS/FAIL frames: failed if
  any frame's part verdict is FAIL (it is cumulative, so that is the part's verdict),
  first pass if not failed and its earliest frame passed, passed later otherwise;
- stops (actions table): stop_line episodes from their ``fired`` action to the
  ``resume`` action of the same episode, merged per line where they overlap;
- uptime (camera_status table): the share of the observed window a camera streamed.

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
from pyiceberg.table import Table

from inspector.config import PlantConfig, Shift
from inspector.lake.catalog import LakeError, open_catalog
from inspector.lake.tables import OWNER_PROPERTY

DIMENSIONS = {
    "line": "line_id",
    "day": "CAST(captured_at AS DATE)",
    "hour": "date_trunc('hour', captured_at)",
    "camera": "camera_id",
    "model": "coalesce(model_version, 'unknown')",
}
VERDICT_REPORTS = ("yield", "pareto", "faults", "latency", "fpy")
REPORTS = (*VERDICT_REPORTS, "stops", "uptime")
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

    def end(self, now: datetime | None = None) -> datetime:
        """Where the window ends: ``--until``, else now."""
        return self.until or now or datetime.now(UTC)


def _load(cfg: PlantConfig, name: str) -> Table:
    ident = f"{cfg.lake.namespace}.{name}"
    try:
        table = open_catalog(cfg.lake).load_table(ident)
    except NoSuchTableError:
        raise LakeError(f"no table {ident} in the lake yet: run `inspector sink` first") from None
    if table.properties.get(OWNER_PROPERTY) != name:
        raise LakeError(f"table {ident} was not written by inspector's sink")
    return table


def _line_filter(lines: tuple[str, ...]) -> list[str]:
    if not lines:
        return []
    quoted = ", ".join("'" + ln.replace("'", "''") + "'" for ln in lines)
    return [f"line_id IN ({quoted})"]


def _wall_clock(arrow: pa.Table, column: str) -> pa.Table:
    """``column`` as a UTC wall-clock timestamp: DuckDB then compares it with naive UTC."""
    i = arrow.schema.get_field_index(column)
    return arrow.set_column(i, column, arrow.column(i).cast(pa.timestamp("us")))


def scan_verdicts(cfg: PlantConfig, window: Window) -> pa.Table:
    """The verdicts in the window, as Arrow (captured_at as a UTC wall-clock timestamp)."""
    table = _load(cfg, "verdicts")
    parts = []
    if window.since is not None:
        parts.append(f"captured_at >= '{window.since.isoformat()}'")
    if window.until is not None:
        parts.append(f"captured_at < '{window.until.isoformat()}'")
    parts += _line_filter(window.lines)
    fields = (
        "verdict_id", "line_id", "camera_id", "part_id", "verdict", "part_verdict", "rule",
        "classes", "severities", "captured_at", "latency_ms", "model_version",
    )  # fmt: skip
    scan = table.scan(row_filter=" AND ".join(parts) or "True", selected_fields=fields)
    return _wall_clock(scan.to_arrow(), "captured_at")


HISTORY_FIELDS = {
    "actions": ("kind", "outcome", "workflow", "line_id", "episode_id", "at"),
    "camera_status": ("line_id", "camera_id", "run_id", "transition", "state", "at"),
}


def scan_history(cfg: PlantConfig, name: str, window: Window, end: datetime) -> pa.Table:
    """Rows of ``actions`` or ``camera_status`` before ``end``, however old: a stop or a
    camera state that began before ``--since`` still covers part of the window."""
    table = _load(cfg, name)
    parts = [f"at < '{end.isoformat()}'", *_line_filter(window.lines)]
    scan = table.scan(row_filter=" AND ".join(parts), selected_fields=HISTORY_FIELDS[name])
    return _wall_clock(scan.to_arrow(), "at")


def _query(
    con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or {})
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


@dataclass(frozen=True)
class Grouping:
    """The ``--by`` columns as SQL: ``lead`` selects them (``expr AS name, …``),
    ``names`` lists them, both with a trailing ``, `` so that none is no text at all."""

    exprs: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, by: list[str], shifts: list[Shift] | None) -> Grouping:
        dims = dict(DIMENSIONS)
        if "shift" in by:
            dims["shift"] = shift_sql(shifts or [])
        return cls(tuple((d, dims[d]) for d in by))

    @property
    def lead(self) -> str:
        return "".join(f"{sql} AS {name}, " for name, sql in self.exprs)

    @property
    def names(self) -> str:
        return "".join(f"{name}, " for name, _ in self.exprs)

    @property
    def partition(self) -> str:
        return f"PARTITION BY {self.names[:-2]}" if self.exprs else ""


def _yield(con: duckdb.DuckDBPyConnection, g: Grouping) -> list[dict[str, Any]]:
    return _query(
        con,
        f"""
        SELECT {g.lead}count(*) AS verdicts,
               count(*) FILTER (verdict = 'PASS') AS pass,
               count(*) FILTER (verdict = 'FAIL') AS fail,
               count(*) FILTER (verdict = 'FAULT') AS fault,
               round(100.0 * count(*) FILTER (verdict = 'PASS')
                     / nullif(count(*) FILTER (verdict IN ('PASS', 'FAIL')), 0), 3)
                   AS yield_pct,
               round(1e6 * count(*) FILTER (verdict = 'FAIL')
                     / nullif(count(*) FILTER (verdict IN ('PASS', 'FAIL')), 0), 0)
                   AS defect_ppm
        FROM v GROUP BY ALL ORDER BY ALL""",
    )


def _pareto(con: duckdb.DuckDBPyConnection, g: Grouping) -> list[dict[str, Any]]:
    """Per class (within each group): findings, frames, shares, then findings per severity."""
    return _query(
        con,
        f"""
        WITH f AS (SELECT {g.lead}unnest(classes) AS class, unnest(severities) AS severity,
                          verdict_id FROM v WHERE verdict = 'FAIL'),
             c AS (SELECT {g.names}class, count(*) AS findings,
                          count(DISTINCT verdict_id) AS frames,
                          count(*) FILTER (severity = 'critical') AS critical,
                          count(*) FILTER (severity = 'major') AS major,
                          count(*) FILTER (severity = 'minor') AS minor
                   FROM f GROUP BY {g.names}class)
        SELECT {g.names}class, findings, frames,
               round(100.0 * findings / sum(findings) OVER ({g.partition}), 2) AS share_pct,
               round(100.0 * sum(findings) OVER ({g.partition} ORDER BY findings DESC, class
                     ROWS UNBOUNDED PRECEDING) / sum(findings) OVER ({g.partition}), 2)
                   AS cumulative_pct,
               critical, major, minor
        FROM c ORDER BY {g.names}findings DESC, class""",
    )


def _faults(con: duckdb.DuckDBPyConnection, g: Grouping) -> list[dict[str, Any]]:
    return _query(
        con,
        f"""
        WITH k AS (SELECT {g.lead}rule, verdict FROM v),
             t AS (SELECT *, count(*) OVER ({g.partition}) AS total FROM k)
        SELECT {g.names}rule, count(*) AS faults,
               round(100.0 * count(*) / sum(count(*)) OVER ({g.partition}), 2)
                   AS share_of_faults_pct,
               round(100.0 * count(*) / any_value(total), 3) AS share_of_verdicts_pct
        FROM t WHERE verdict = 'FAULT' GROUP BY {g.names}rule
        ORDER BY {g.names}faults DESC, rule""",
    )


def _latency(con: duckdb.DuckDBPyConnection, g: Grouping) -> list[dict[str, Any]]:
    return _query(
        con,
        f"""
        SELECT {g.lead}count(*) AS verdicts,
               round(quantile_cont(latency_ms, 0.5), 1) AS p50_ms,
               round(quantile_cont(latency_ms, 0.95), 1) AS p95_ms
        FROM v GROUP BY ALL ORDER BY ALL""",
    )


def _fpy(con: duckdb.DuckDBPyConnection, g: Grouping) -> list[dict[str, Any]]:
    """First-pass yield per part, a part counted in the group of its first judgement."""
    return _query(
        con,
        f"""
        WITH j AS (
            SELECT *, row_number() OVER (PARTITION BY line_id, part_id
                                         ORDER BY captured_at, verdict_id) AS nth,
                   bool_or(coalesce(part_verdict, verdict) = 'FAIL')
                       OVER (PARTITION BY line_id, part_id) AS failed
            FROM v WHERE part_id IS NOT NULL AND verdict IN ('PASS', 'FAIL')),
             p AS (SELECT {g.lead}verdict = 'PASS' AND NOT failed AS ok_first, failed
                   FROM j WHERE nth = 1)
        SELECT {g.names}count(*) AS parts,
               count(*) FILTER (ok_first) AS first_pass,
               count(*) FILTER (NOT ok_first AND NOT failed) AS passed_later,
               count(*) FILTER (failed) AS failed,
               round(100.0 * count(*) FILTER (ok_first) / count(*), 3) AS fpy_pct,
               round(100.0 * count(*) FILTER (NOT failed) / count(*), 3) AS part_yield_pct
        FROM p GROUP BY ALL ORDER BY ALL""",
    )


_VERDICT_SQL = {
    "yield": _yield,
    "pareto": _pareto,
    "faults": _faults,
    "latency": _latency,
    "fpy": _fpy,
}
RANKED = ("pareto", "faults")  # plant-wide unless a grouping is asked for


def compute(
    arrow: pa.Table,
    by: list[str],
    reports: tuple[str, ...] = VERDICT_REPORTS,
    shifts: list[Shift] | None = None,
    rank_by: list[str] | None = None,
) -> dict[str, Any]:
    """The verdict reports over ``arrow`` (a verdicts scan); rows ordered by their keys.
    ``by`` groups yield, latency and fpy; ``rank_by`` (default: none, plant-wide) groups
    the ranked reports, pareto and faults, whose shares are then within each group."""
    con = duckdb.connect()
    con.register("v", arrow)
    grouped, ranked = Grouping.of(by, shifts), Grouping.of(rank_by or [], shifts)
    out = {
        name: sql(con, ranked if name in RANKED else grouped)
        for name, sql in _VERDICT_SQL.items()
        if name in reports
    }
    con.close()
    return out


_EPISODES = """
    WITH starts AS (
        SELECT line_id, episode_id, min("at") AS began FROM a
        WHERE kind = 'stop_line' AND outcome = 'fired' AND episode_id IS NOT NULL
        GROUP BY line_id, episode_id),
    ends AS (
        SELECT line_id, episode_id, min("at") AS resumed FROM a
        WHERE kind = 'resume' AND episode_id IS NOT NULL GROUP BY line_id, episode_id),
    ep AS (
        SELECT s.line_id, greatest(s.began, coalesce($since, s.began)) AS lo,
               least(coalesce(e.resumed, $end), $end) AS hi,
               e.resumed IS NULL OR e.resumed > $end AS open
        FROM starts s LEFT JOIN ends e USING (line_id, episode_id)
        WHERE s.began < $end AND ($since IS NULL OR coalesce(e.resumed, $end) > $since)),
    m AS (
        SELECT line_id, lo, greatest(lo, hi) AS hi, open,
               max(greatest(lo, hi)) OVER (PARTITION BY line_id ORDER BY lo, hi
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
        FROM ep),
    i AS (
        SELECT *, sum(CASE WHEN reach IS NULL OR lo > reach THEN 1 ELSE 0 END)
                      OVER (PARTITION BY line_id ORDER BY lo, hi ROWS UNBOUNDED PRECEDING)
                      AS stop_no
        FROM m)
"""


def stops(arrow: pa.Table, since: datetime | None, end: datetime) -> list[dict[str, Any]]:
    """Per line: stop_line episodes (opened by a ``fired`` stop_line action, closed by the
    ``resume`` action of the same episode_id), merged into stops where they overlap, each
    clipped to the window; one still open at ``end`` counts until ``end``."""
    con = duckdb.connect()
    con.register("a", arrow)
    rows = _query(
        con,
        _EPISODES
        + """,
        s AS (SELECT line_id, stop_no, count(*) AS episodes, bool_or(open) AS open,
                     (epoch_us(max(hi)) - epoch_us(min(lo))) / 1e6 AS seconds
              FROM i GROUP BY line_id, stop_no)
        SELECT line_id AS line, count(*) AS stops, sum(episodes)::BIGINT AS episodes,
               count(*) FILTER (open) AS open, round(sum(seconds), 3) AS downtime_s,
               round(max(seconds), 3) AS longest_s,
               round(100.0 * sum(seconds) * 1e6
                     / (epoch_us($end::TIMESTAMP) - epoch_us($since::TIMESTAMP)), 3)
                   AS downtime_pct
        FROM s GROUP BY line_id ORDER BY line_id""",
        _times(since, end),
    )
    con.close()
    return rows


def uptime(arrow: pa.Table, since: datetime | None, end: datetime) -> list[dict[str, Any]]:
    """Per camera: time in each state of its state machine within the window, from its
    transitions (a state lasts until the camera's next transition, in any run, or ``end``);
    observed time starts at ``since`` or at the camera's first transition if later."""
    con = duckdb.connect()
    con.register("c", arrow)
    rows = _query(
        con,
        """
        WITH s AS (
            SELECT line_id, camera_id, state, "at" AS lo,
                   lead("at") OVER (PARTITION BY line_id, camera_id
                                  ORDER BY "at", run_id, transition) AS next_at
            FROM c),
        d AS (
            SELECT line_id, camera_id, state,
                   (epoch_us(least(coalesce(next_at, $end), $end))
                    - epoch_us(greatest(lo, coalesce($since, lo)))) / 1e6 AS seconds
            FROM s),
        t AS (
            SELECT line_id, camera_id, sum(seconds) AS observed,
                   coalesce(sum(seconds) FILTER (state = 'streaming'), 0) AS streaming,
                   coalesce(sum(seconds) FILTER (state = 'stalled'), 0) AS stalled,
                   coalesce(sum(seconds) FILTER (state IN ('connecting', 'backing_off')), 0)
                       AS reconnecting,
                   coalesce(sum(seconds) FILTER (state = 'stopped'), 0) AS stopped
            FROM d WHERE seconds > 0 GROUP BY line_id, camera_id)
        SELECT line_id AS line, camera_id AS camera, round(observed, 3) AS observed_s,
               round(streaming, 3) AS streaming_s, round(stalled, 3) AS stalled_s,
               round(reconnecting, 3) AS reconnecting_s, round(stopped, 3) AS stopped_s,
               round(100.0 * streaming / observed, 3) AS uptime_pct,
               round(100.0 * streaming / nullif(observed - stopped, 0), 3) AS running_uptime_pct
        FROM t ORDER BY line_id, camera_id""",
        _times(since, end),
    )
    con.close()
    return rows


def _times(since: datetime | None, end: datetime) -> dict[str, Any]:
    """Window bounds as naive UTC, as the scanned timestamps are."""

    def naive(t: datetime) -> datetime:
        return t.astimezone(UTC).replace(tzinfo=None)

    return {"since": naive(since) if since else None, "end": naive(end)}


# --------------------------------------------------------------------------- output


def to_table(name: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"{name}: nothing in the window"
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


TABLE_OF = {**dict.fromkeys(VERDICT_REPORTS, "verdicts"), "stops": "actions",
            "uptime": "camera_status"}  # fmt: skip


def run_reports(
    cfg: PlantConfig,
    window: Window,
    reports: tuple[str, ...],
    by: list[str],
    rank_by: list[str] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Scan what ``reports`` need and compute them, in ``REPORTS`` order."""
    end = window.end(now)
    out: dict[str, Any] = {}
    wanted = tuple(r for r in VERDICT_REPORTS if r in reports)
    if wanted:
        out |= compute(scan_verdicts(cfg, window), by, wanted, cfg.lake.shifts, rank_by)
    if "stops" in reports:
        out["stops"] = stops(scan_history(cfg, "actions", window, end), window.since, end)
    if "uptime" in reports:
        arrow = scan_history(cfg, "camera_status", window, end)
        out["uptime"] = uptime(arrow, window.since, end)
    return {r: out[r] for r in REPORTS if r in out}
