"""Schema evolution: a newer producer's optional top-level fields become columns.

Pure logic (no catalog). An event that carries a top-level field this build does not
know (``events.decode_evolving`` hands it over apart) keeps it: the field becomes a
nullable column of the table, typed from its first value — boolean, long, double or
string (objects and arrays are kept as their JSON text in a string column). A value
that does not fit the column its field already has (a string where the column is a
long, a fraction in a long column, an integer past 64 bits), a name that cannot be a
column, or a field that would shadow one of the table's own columns is a ``Misfit``:
the sink dead-letters that record (reason ``schema_evolution``) and goes on.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from pyiceberg.types import BooleanType, DoubleType, IcebergType, LongType, StringType

COLUMN_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,127}$")
INT64 = (-(2**63), 2**63 - 1)
REASON = "schema_evolution"


class Misfit(Exception):
    """A field that cannot become (or fill) a column; one line for the dead letter."""


def column_type(name: str, value: Any) -> IcebergType:
    """The column a field's first value asks for."""
    if isinstance(value, bool):
        return BooleanType()
    if isinstance(value, int):
        _check_int64(name, value)
        return LongType()
    if isinstance(value, float):
        return DoubleType()
    if isinstance(value, str | list | dict):
        return StringType()
    raise Misfit(f"field {name!r}: a {type(value).__name__} cannot become a column")


def cell(name: str, value: Any, kind: IcebergType) -> Any:
    """``value`` as it goes into a column of type ``kind``; Misfit if it does not fit."""
    if value is None:
        return None
    if isinstance(kind, BooleanType) and isinstance(value, bool):
        return value
    if isinstance(kind, LongType) and isinstance(value, int) and not isinstance(value, bool):
        _check_int64(name, value)
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(kind, DoubleType) and number:
        return float(value)
    if isinstance(kind, StringType):
        if isinstance(value, str):
            return value
        if isinstance(value, list | dict):
            return orjson.dumps(value).decode()
    raise Misfit(
        f"field {name!r}: {_describe(value)} does not fit the table's column of type {kind}"
    )


def _check_int64(name: str, value: int) -> None:
    if not INT64[0] <= value <= INT64[1]:
        raise Misfit(f"field {name!r}: integer {value} does not fit 64 bits")


def _describe(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return f"{type(value).__name__} {text[:60]}"


def fit(
    extras: dict[str, Any],
    *,
    columns: dict[str, IcebergType],
    planned: dict[str, IcebergType],
    own: frozenset[str],
    max_added: int,
) -> tuple[dict[str, Any], dict[str, IcebergType]]:
    """→ (cells to add to the row, new columns this row asks for).

    ``columns``: the table's columns now; ``planned``: columns earlier buffered rows
    asked for and the next commit adds; ``own``: the columns the table is created with
    (derived ones included), which an extra field may never fill.
    """
    cells: dict[str, Any] = {}
    new: dict[str, IcebergType] = {}
    added = sum(1 for n in columns if n not in own) + len(planned)
    for name, value in extras.items():
        if not COLUMN_NAME.match(name):
            raise Misfit(f"field {name[:80]!r} cannot be a column name ([a-z_][a-z0-9_]*)")
        if name in own:
            raise Misfit(f"field {name!r} would shadow the table's own column {name!r}")
        kind = columns.get(name) or planned.get(name) or new.get(name)
        if kind is None:
            if value is None:
                continue  # nothing to learn a type from; the column comes with a value
            if added + len(new) >= max_added:
                raise Misfit(
                    f"field {name!r} would be added column {added + len(new) + 1}, over "
                    f"lake.max_added_columns ({max_added})"
                )
            kind = new[name] = column_type(name, value)
        cells[name] = cell(name, value, kind)
    return cells, new
