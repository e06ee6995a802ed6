"""Config validation: strict models, field paths in errors, env overrides, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from inspector.cli import app
from inspector.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {"lines": [{"id": "l1", "cameras": [{"id": "c1", "url": "rtsp://10.0.0.5/s"}]}]}


def errors_of(data: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse_config(data, "t", env=env or {})
    return ei.value.errors


def test_shipped_configs_are_valid() -> None:
    for name in ("demo.yaml", "example-plant.yaml"):
        cfg = load_config(
            REPO / "configs" / name,
            env={"MES_WEBHOOK_SECRET": "whsec_" + "A" * 32, "DASHBOARD_TOKEN": "t0ken"},
        )
        assert cfg.lines


def test_minimal_defaults() -> None:
    cfg = parse_config(MINIMAL, env={})
    assert cfg.topics.frames == "inspector.frames"
    assert cfg.frames.transport == "claim_check"
    assert cfg.model.path == "builtin:defects-v1"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"lines": [{"id": "l1", "cameras": [{"id": "c1", "url": "http://x/y"}]}]},
            "lines[0].cameras[0].url: must be an rtsp:// or rtsps:// URL",
        ),
        (
            {
                "lines": [
                    {"id": "l1", "cameras": [{"id": "c1", "url": "rtsp://h/a", "sample_fps": -1}]}
                ]
            },
            "lines[0].cameras[0].sample_fps: Input should be greater than 0",
        ),
        (
            {**MINIMAL, "kafka": {"bootstrap_servers": "b:9092", "colour": "blue"}},
            "kafka.colour: Extra inputs are not permitted",
        ),
        ({"lines": []}, "lines: List should have at least 1 item"),
        (
            {"lines": [{"id": "L 1", "cameras": [{"id": "c1", "url": "rtsp://h/a"}]}]},
            "lines[0].id: String should match pattern",
        ),
        (
            {**MINIMAL, "kafka": {"security_protocol": "SASL_SSL"}},
            "kafka: sasl_mechanism is required when security_protocol is SASL_*",
        ),
        ({**MINIMAL, "worker": {"model": "nope"}}, "worker.model 'nope' is not one of models"),
        (
            {
                **MINIMAL,
                "workflows": [
                    {
                        "kind": "mes_ticket",
                        "name": "mes",
                        "url": "ftp://x",
                        "secrets": ["whsec_AAAAAAAAAAAAAAAAAAAA"],
                    }
                ],
            },
            "workflows[0].url: must be an http:// or https:// URL",
        ),
        (
            {**MINIMAL, "workflows": [{"kind": "mes_ticket", "name": "mes", "url": "http://x"}]},
            "workflows[0].secrets: Field required",
        ),
        (
            {
                **MINIMAL,
                "workflows": [{"kind": "divert", "name": "d", "filter": {"lines": ["l9"]}}],
            },
            "unknown line 'l9'",
        ),
        (
            {
                "lines": [
                    {
                        "id": "l1",
                        "cameras": [{"id": "c1", "url": "rtsp://h/a"}],
                        "rules": {"roi": [[[0, 0], [1, 1]]]},
                    }
                ]
            },
            "lines[0].rules.roi: Value error, polygon 0 needs at least 3 points",
        ),
    ],
)
def test_bad_config_names_the_field(data: object, expected: str) -> None:
    errs = errors_of(data)
    assert any(expected.replace("Value error, ", "") in e for e in errs), errs


def test_all_errors_reported_at_once() -> None:
    data = {
        "lines": [
            {
                "id": "l1",
                "cameras": [
                    {"id": "c1", "url": "http://bad"},
                    {"id": "c2", "url": "rtsp://ok/x", "width": 1},
                ],
            }
        ]
    }
    errs = errors_of(data)
    assert any(e.startswith("lines[0].cameras[0].url") for e in errs)
    assert any(e.startswith("lines[0].cameras[1].width") for e in errs)


def test_env_override_and_interpolation() -> None:
    data = {**MINIMAL, "redis": {"url": "${REDIS_URL:-redis://default:6379/0}"}}
    cfg = parse_config(
        data,
        env={
            "INSPECTOR__KAFKA__BOOTSTRAP_SERVERS": "k1:9093",
            "INSPECTOR__LINES__0__CAMERAS__0__SAMPLE_FPS": "2.5",
        },
    )
    assert cfg.kafka.bootstrap_servers == "k1:9093"
    assert cfg.lines[0].cameras[0].sample_fps == 2.5
    assert cfg.redis.url == "redis://default:6379/0"
    assert errors_of({**MINIMAL, "redis": {"url": "${NOPE}"}})[0].startswith(
        "redis.url: environment variable NOPE is not set"
    )


def test_secrets_are_not_printed() -> None:
    data = {
        **MINIMAL,
        "kafka": {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "u",
            "sasl_password": "hunter2",
        },
    }
    cfg = parse_config(data, env={})
    assert "hunter2" not in repr(cfg)
    assert cfg.kafka.sasl_password is not None
    assert cfg.kafka.sasl_password.get_secret_value() == "hunter2"


def test_cli_config_check(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "lines:\n  - id: l1\n    cameras:\n      - {id: c1, url: 'file:///x'}\n"
        "      - {id: c2, url: 'rtsp://h/x', on_size_mismatch: crop}\n"
    )
    res = runner.invoke(app, ["config", "check", str(bad)])
    assert res.exit_code == 2
    assert "lines[0].cameras[0].url: must be an rtsp:// or rtsps:// URL" in res.output
    assert "lines[0].cameras[1].on_size_mismatch" in res.output

    broken = tmp_path / "broken.yaml"
    broken.write_text("lines: [\n")
    res = runner.invoke(app, ["config", "check", str(broken)])
    assert res.exit_code == 2 and "invalid YAML" in res.output

    res = runner.invoke(app, ["config", "check", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "cannot read file" in res.output

    good = tmp_path / "good.yaml"
    good.write_text("lines:\n  - id: l1\n    cameras:\n      - {id: c1, url: 'rtsp://h/x'}\n")
    res = runner.invoke(app, ["config", "check", str(good)])
    assert res.exit_code == 0, res.output
    assert "OK" in res.output


def test_version() -> None:
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("inspector ")
