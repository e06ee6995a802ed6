"""ce_source is a URI-reference (CloudEvents 1.0) whatever the plant is called."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import pytest

from inspector.config import parse_config
from inspector.events import ce_source
from inspector.ingest.publisher import FramePublisher, StatusPublisher

# RFC 3986 relative-ref (what ce_source uses) and absolute URI, without the authority forms
_UNRESERVED = r"[A-Za-z0-9\-._~]"
_PCT = r"%[0-9A-Fa-f]{2}"
_SUB = r"[!$&'()*+,;=]"
_PCHAR = rf"(?:{_UNRESERVED}|{_PCT}|{_SUB}|[:@])"
_SEGMENT = rf"{_PCHAR}*"
_NZ_NC = rf"(?:{_UNRESERVED}|{_PCT}|{_SUB}|@)+"
_QUERY = rf"(?:{_PCHAR}|[/?])*"
_PATH = rf"(?:{_NZ_NC}(?:/{_SEGMENT})*|/(?:{_PCHAR}+(?:/{_SEGMENT})*)?|)"
URI_REFERENCE = re.compile(
    rf"(?:[A-Za-z][A-Za-z0-9+.\-]*:{_PCHAR}*(?:/{_SEGMENT})*|{_PATH})"
    rf"(?:\?{_QUERY})?(?:#{_QUERY})?"
)

NAMES = ["plant", "Usine Nord", "Werk 2 / Halle 3", "Usine Bévillers — Ligne ü", "a%20b?#x", "工場"]


def is_uri_reference(s: str) -> bool:
    return URI_REFERENCE.fullmatch(s) is not None


def test_the_check_itself_rejects_what_it_should() -> None:
    assert is_uri_reference("inspector/ingest/plant")
    for bad in ("inspector/ingest/Usine Nord", "inspector/ingest/ü", "a%zz", "x#y#z"):
        assert not is_uri_reference(bad), bad


@pytest.mark.parametrize("name", NAMES)
def test_ce_source_is_a_uri_reference_that_names_the_plant(name: str) -> None:
    src = ce_source("ingest", name)
    assert is_uri_reference(src), src
    assert src.startswith("inspector/ingest/") and unquote(src.split("/", 2)[2]) == name
    assert ce_source("detect") == "inspector/detect"


def test_ingest_publishers_use_it() -> None:
    cfg = parse_config(
        {
            "plant": "Usine Nord / Halle 2",
            "frames": {"transport": "inline"},
            "lines": [{"id": "l1", "cameras": [{"id": "c1", "url": "rtsp://h/x"}]}],
        },
        env={},
    )
    producer: Any = object()  # never called: only the source is looked at
    for pub in (FramePublisher(cfg, producer, None, "r"), StatusPublisher(cfg, producer, "r")):
        assert pub.source == "inspector/ingest/Usine%20Nord%20%2F%20Halle%202"
        assert is_uri_reference(pub.source)
