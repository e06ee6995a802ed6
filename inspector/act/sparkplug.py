"""Sparkplug B (spBv1.0) payloads, encoded by hand: the Payload protobuf is small.

Field numbers are those of Eclipse Tahu's ``sparkplug_b.proto``::

    Payload { uint64 timestamp = 1; repeated Metric metrics = 2; uint64 seq = 3; }
    Metric  { string name = 1; uint64 alias = 2; uint64 timestamp = 3; uint32 datatype = 4;
              bool is_null = 7; oneof value { uint32 int_value = 10; uint64 long_value = 11;
              double double_value = 13; bool boolean_value = 14; string string_value = 15; } }

Only what inspector publishes is encoded (no DataSets, Templates, properties). The
tests decode what the broker delivered with the ``protobuf`` package and a descriptor
built from the same field numbers, not with this module.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

NAMESPACE = "spBv1.0"

# Sparkplug B data types (Tahu's DataType enum)
INT32 = 3
INT64 = 4
UINT32 = 7
UINT64 = 8
DOUBLE = 10
BOOLEAN = 11
STRING = 12
DATETIME = 13  # milliseconds since the epoch, in long_value

_INT_TYPES = {INT32: 10, UINT32: 10, INT64: 11, UINT64: 11, DATETIME: 11}

MessageType = Literal["NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA"]

Value = str | int | float | bool | None


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("varints here are unsigned")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _uint(field: int, n: int) -> bytes:
    return _key(field, 0) + _varint(n)


def _bytes(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


@dataclass(frozen=True)
class Metric:
    """One metric; ``name`` is left out of DATA messages once the BIRTH gave its alias."""

    name: str | None
    alias: int | None
    datatype: int
    value: Value
    timestamp_ms: int | None = None

    def encode(self) -> bytes:
        out = b""
        if self.name is not None:
            out += _bytes(1, self.name.encode())
        if self.alias is not None:
            out += _uint(2, self.alias)
        if self.timestamp_ms is not None:
            out += _uint(3, self.timestamp_ms)
        out += _uint(4, self.datatype)
        v = self.value
        if v is None:
            return out + _uint(7, 1)  # is_null
        if self.datatype == STRING:
            return out + _bytes(15, str(v).encode())
        if self.datatype == BOOLEAN:
            return out + _uint(14, 1 if v else 0)
        if self.datatype == DOUBLE:
            return out + _key(13, 1) + struct.pack("<d", float(v))
        if self.datatype in _INT_TYPES:
            # signed values travel as two's complement of the field's width (Tahu's way)
            field = _INT_TYPES[self.datatype]
            return out + _uint(field, int(v) & (0xFFFFFFFF if field == 10 else (1 << 64) - 1))
        raise ValueError(f"datatype {self.datatype} is not encoded here")


def payload(timestamp_ms: int, metrics: list[Metric], seq: int | None) -> bytes:
    """A Sparkplug B Payload; ``seq`` is None only in NDEATH (it carries none)."""
    out = _uint(1, timestamp_ms)
    for m in metrics:
        out += _bytes(2, m.encode())
    if seq is not None:
        out += _uint(3, seq % 256)
    return out


def topic(group: str, kind: MessageType, edge_node: str, device: str | None = None) -> str:
    parts = [NAMESPACE, group, kind, edge_node]
    if device is not None:
        parts.append(device)
    return "/".join(parts)
