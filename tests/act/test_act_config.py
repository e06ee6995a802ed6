"""Workflow configuration errors name the field and say what is wrong."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from inspector.cli import app
from inspector.config import ConfigError, MesTicketWorkflow, parse_config
from tests.act.support import LINES

SECRET = "whsec_ZGVtby1zZWNyZXQtbm90LWZvci1wcm9kdWN0aW9u"


def plant(*workflows: dict[str, Any]) -> dict[str, Any]:
    return {"lines": LINES, "workflows": list(workflows)}


def errors(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse_config(data, "test", env=env or {})
    return ei.value.errors


def mes(**kw: Any) -> dict[str, Any]:
    return {
        "kind": "mes_ticket",
        "name": "mes",
        "url": "https://mes.local/t",
        "secrets": [SECRET],
    } | kw


def test_valid_workflows_parse() -> None:
    cfg = parse_config(
        plant(
            {"kind": "divert", "name": "gate", "filter": {"lines": ["line-1"]}},
            {"kind": "stop_line", "name": "burst", "filter": {"classes": ["crack"]}},
            mes(),
            {"kind": "notify", "name": "chat", "topic": "qa.chat"},
        ),
        env={},
    )
    assert [w.kind for w in cfg.workflows] == ["divert", "stop_line", "mes_ticket", "notify"]
    ticket = cfg.workflows[2]
    assert isinstance(ticket, MesTicketWorkflow) and ticket.retry.max_attempts == 20


@pytest.mark.parametrize(
    ("workflow", "expected"),
    [
        (mes(url="ftp://mes.local/t"), "workflows[0].url: must be an http:// or https:// URL"),
        (mes(url="mes.local/t"), "workflows[0].url: must be an http:// or https:// URL"),
        (
            mes(evidence_base_url="file:///x"),
            "workflows[0].evidence_base_url: must be an http:// or https:// URL",
        ),
        (
            mes(secrets=["hunter2-hunter2-hunter2"]),
            "workflows[0].secrets[0]: must be a Standard Webhooks secret",
        ),
        (
            mes(secrets=["whsec_c2hvcnQta2V5"]),
            "workflows[0].secrets[0]: must be 'whsec_' + base64 of at least 24 random bytes (this one has 9)",
        ),
        # 23 bytes: below the 24 Standard Webhooks asks for (was accepted from 16)
        (
            mes(secrets=[SECRET, "whsec_" + base64.b64encode(b"k" * 23).decode()]),
            "workflows[0].secrets[1]: must be 'whsec_' + base64 of at least 24 random bytes (this one has 23)",
        ),
        (
            mes(secrets=["whsec_not*base64*at*all*"]),
            "workflows[0].secrets[0]: must be 'whsec_' + base64 (the part after 'whsec_' is not base64)",
        ),
        (mes(secrets=[]), "workflows[0].secrets: List should have at least 1 item"),
        (
            {"kind": "mes_ticket", "name": "mes", "url": "https://mes.local/t"},
            "workflows[0].secrets: Field required",
        ),
        (
            mes(retry={"initial_backoff_s": 10, "max_backoff_s": 1}),
            "workflows[0].retry: max_backoff_s must be at least initial_backoff_s",
        ),
        (
            {"kind": "divert", "name": "gate", "filter": {"lines": ["line-9"]}},
            "workflows[0] (gate).filter.lines: unknown line 'line-9'",
        ),
        (
            {"kind": "stop_line", "name": "burst", "filter": {"classes": ["scrach"]}},
            "workflows[0] (burst).filter.classes: class 'scrach' is in no rules of its lines",
        ),
        (
            # dent is a rule on line-1 only
            {
                "kind": "divert",
                "name": "gate",
                "filter": {"lines": ["line-2"], "classes": ["dent"]},
            },
            "workflows[0] (gate).filter.classes: class 'dent' is in no rules of its lines",
        ),
        (
            {"kind": "notify", "name": "chat", "topic": "bad topic!"},
            "workflows[0].topic: String should match pattern",
        ),
        ({"kind": "divert", "name": "Gate One"}, "workflows[0].name: String should match pattern"),
        (
            {"kind": "divert", "name": "gate", "bogus": 1},
            "workflows[0].bogus: Extra inputs are not permitted",
        ),
    ],
)
def test_bad_workflow_is_a_config_error_with_its_path(
    workflow: dict[str, Any], expected: str
) -> None:
    msgs = errors(plant(workflow))
    assert any(expected in m for m in msgs), msgs


def test_missing_secret_variable_is_named() -> None:
    msgs = errors(plant(mes(secrets=["${MES_SECRET}"])))
    assert "workflows[0].secrets[0]: environment variable MES_SECRET is not set" in msgs


def test_config_check_prints_field_paths(tmp_path: Path) -> None:
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(plant(mes(url="ftp://x/y", secrets=["nope"]))))
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2
    assert "workflows[0].url: must be an http:// or https:// URL" in result.output
    assert "workflows[0].secrets[0]: must be a Standard Webhooks secret" in result.output


def test_webhook_timeout_defaults_to_what_standard_webhooks_recommends() -> None:
    ticket = parse_config(plant(mes()), "test", env={}).workflows[0]
    assert isinstance(ticket, MesTicketWorkflow)
    assert 15.0 <= ticket.timeout_s <= 30.0


def test_degraded_workflow_parses_and_rejects_finding_filters() -> None:
    cfg = parse_config(
        plant({"kind": "degraded", "name": "manual-qa", "filter": {"lines": ["line-1"]}}),
        env={},
    )
    [wf] = cfg.workflows
    assert wf.kind == "degraded" and (wf.fault_count, wf.window_s) == (5, 10.0)
    [err] = errors(plant({"kind": "degraded", "name": "m", "filter": {"classes": ["crack"]}}))
    assert "filter.classes and filter.severities must be empty" in err
    [err] = errors(plant({"kind": "degraded", "name": "m", "fault_count": 0}))
    assert err.startswith("workflows[0].degraded.fault_count") or "fault_count" in err
