"""JSON Schemas of the event payloads, generated from ``inspector.events``.

The ``*.json`` files beside this module are checked in so integrators (MES, PLC
gateways) can validate without Python; ``tests/test_schemas.py`` fails when they drift.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from inspector.events import json_schemas

HERE = Path(__file__).parent


def render() -> dict[str, bytes]:
    return {
        name: orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        for name, schema in json_schemas().items()
    }


def write_schemas(out: Path = HERE, *, check: bool = False) -> list[str]:
    """Write the files (or only compare with check=True); return the names that differed."""
    stale = []
    for name, data in render().items():
        path = out / name
        if not path.exists() or path.read_bytes() != data:
            stale.append(name)
            if not check:
                path.write_bytes(data)
    return stale
