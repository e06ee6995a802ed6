"""Encrypted evidence in the dashboard and the `evidence` CLI: readable with the configured
keys; a retired key or a tampered blob is a clear 410 / exit 3, never a server error."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from inspector.bus.crypto import Sealer, parse_keys
from inspector.bus.store import FrameStore, connect
from inspector.cli import app
from inspector.config import PlantConfig
from inspector.observe.dashboard import Dashboard, DashboardConfigError
from inspector.observe.evidence import index_verdict
from inspector.observe.feed import start_of_today
from tests.observe.conftest import part_jpeg, verdict
from tests.observe.test_dashboard import TOKEN, dashboard_config, url
from tests.observe.test_tail import write_config

pytestmark = pytest.mark.integration


def b64key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_encrypted_evidence_served_retired_and_tampered_are_410(
    make_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    keys = tmp_path / "store-keys"
    keys.write_text(f"k2:{b64key()}\n")
    cfg = dashboard_config(make_config, frames={"encryption": {"keys_file": str(keys)}})
    client = connect(cfg.redis)
    current = FrameStore(
        client, cfg.redis.key_prefix, 600, Sealer(parse_keys(keys.read_text(), "k"))
    )
    retired = FrameStore(
        client, cfg.redis.key_prefix, 600, Sealer(parse_keys(f"k1:{b64key()}", "k"))
    )
    ok_v = verdict(
        kind="FAIL",
        cls="scratch",
        seq=1,
        run="r",
        evidence_key=current.put("cam-1:r:1", part_jpeg(), kind="evidence"),
    )
    old_v = verdict(
        kind="FAIL",
        cls="scratch",
        seq=2,
        run="r",
        evidence_key=retired.put("cam-1:r:2", part_jpeg(), kind="evidence"),
    )
    bad_key = current.put("cam-1:r:3", part_jpeg(), kind="evidence")
    blob = client.get(bad_key)
    assert isinstance(blob, bytes)
    client.set(bad_key, blob[:-1] + bytes([blob[-1] ^ 1]))
    bad_v = verdict(kind="FAIL", cls="scratch", seq=3, evidence_key=bad_key, run="r")
    for v in (ok_v, old_v, bad_v):
        index_verdict(client, cfg.redis.key_prefix, v, ttl_s=600)

    d = Dashboard(cfg, port=0, since=start_of_today(), lag_every_s=1.0)
    d.start()
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = httpx.get(url(d, f"/evidence/{ok_v.verdict_id}.jpg"), headers=auth)
        assert r.status_code == 200 and r.content[:3] == b"\xff\xd8\xff"
        r = httpx.get(url(d, f"/evidence/{old_v.verdict_id}.jpg"), headers=auth)
        assert r.status_code == 410 and "key id 'k1', which is not configured" in r.text
        r = httpx.get(url(d, f"/evidence/{bad_v.verdict_id}.jpg"), headers=auth)
        assert r.status_code == 410 and "does not authenticate" in r.text
        assert httpx.get(url(d, "/healthz")).status_code == 200  # still serving
    finally:
        d.close()

    path = write_config(cfg, tmp_path)
    out = tmp_path / "ev.jpg"
    res = CliRunner().invoke(
        app, ["evidence", ok_v.verdict_id, "-o", str(out), "--config", str(path)]
    )
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:3] == b"\xff\xd8\xff"
    res = CliRunner().invoke(
        app, ["evidence", old_v.verdict_id, "-o", str(out), "--config", str(path)]
    )
    assert res.exit_code == 3 and "not configured" in res.output


def test_dashboard_refuses_to_start_with_unusable_keys(
    make_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    keys = tmp_path / "store-keys"
    keys.write_text("k1:c2hvcnQ=\n")  # 5 bytes
    cfg = dashboard_config(make_config, frames={"encryption": {"keys_file": str(keys)}})
    with pytest.raises(DashboardConfigError, match="AES-GCM needs 16, 24 or 32"):
        Dashboard(cfg, port=0, since=0)
