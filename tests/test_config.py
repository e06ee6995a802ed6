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
            "lines[0].cameras[0].url: must be an rtsp://, rtsps:// or gige:// URL",
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
    assert "lines[0].cameras[0].url: must be an rtsp://, rtsps:// or gige:// URL" in res.output
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


# --------------------------------------------------------------------------- hostile files

GOOD = "lines:\n  - id: l1\n    cameras:\n      - {id: c1, url: 'rtsp://h/x'}\n"


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A few hundred bytes that expand to width**levels nodes ("billion laughs")."""
    out = ['a0: &a0 ["lol"]']
    for i in range(1, levels):
        out.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return GOOD + "\n".join(out) + "\n"


def check_cli(path: Path) -> tuple[int, str, float]:
    """`inspector config check` in its own process, as an operator runs it, with a deadline."""
    import subprocess
    import sys
    import time

    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "inspector", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return res.returncode, res.stdout + res.stderr, time.monotonic() - t0


def hostile_files() -> list[tuple[str, bytes, str]]:
    deep = "lines: " + "[" * 5000 + "]" * 5000 + "\n"
    return [
        ("alias-bomb", alias_bomb().encode(), "expands (aliases included) to more than"),
        (
            "latin-1",
            (GOOD + "plant: Usine Bévillers\n").encode("latin-1"),
            "line 5, column 15: not UTF-8 (byte 0xe9)",
        ),
        ("deep", deep.encode(), "line 1, column 39: nested deeper than 32 levels"),
        (
            "duplicate-key",
            (GOOD + "plant: a\nplant: b\n").encode(),
            "line 6, column 1: duplicate key 'plant' (first given at line 5, column 1)",
        ),
        (
            "nested-duplicate",
            (GOOD + "observe:\n  ingest_port: 1\n  ingest_port: 2\n").encode(),
            "line 7, column 3: duplicate key 'ingest_port'",
        ),
        (
            "recursive-alias",
            (GOOD + "x: &x [*x]\n").encode(),
            "line 5, column 4: an alias refers to itself",
        ),
        (
            "nul",
            (GOOD + "plant: a\x00b\n").encode(),
            "line 5, column 9: invalid YAML: unacceptable character #x0000",
        ),
        ("huge", GOOD.encode() + b"#" * 1_100_000 + b"\n", "the limit is 1000000"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "expected"), hostile_files(), ids=[h[0] for h in hostile_files()]
)
def test_hostile_file_is_one_located_error_exit_2(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as ei:
        load_config(path, env={})
    assert len(ei.value.errors) == 1 and expected in ei.value.errors[0], ei.value.errors
    code, out, took = check_cli(path)
    assert code == 2, out
    assert expected in out and "Traceback" not in out, out
    assert took < 10, f"config check took {took:.1f}s"


def test_alias_bomb_fails_fast_in_process(tmp_path: Path) -> None:
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(levels=12, width=12))  # 12**12 nodes if expanded
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="expands"):
        load_config(path, env={})
    assert time.monotonic() - t0 < 2.0


def test_aliases_within_budget_still_work(tmp_path: Path) -> None:
    path = tmp_path / "shared.yaml"
    path.write_text(
        "lines:\n"
        "  - id: l1\n    cameras: [{id: c1, url: 'rtsp://h/1'}]\n"
        "    rules: &rules {classes: {scratch: {min_confidence: 0.3}}}\n"
        "  - id: l2\n    cameras: [{id: c2, url: 'rtsp://h/2'}]\n    rules: *rules\n"
    )
    cfg = load_config(path, env={})
    assert cfg.lines[1].rules.classes["scratch"].min_confidence == 0.3
    merged = tmp_path / "merge.yaml"
    merged.write_text(
        GOOD + "observe: {<<: {ingest_port: 9111, act_port: 9113}, ingest_port: 9112}\n"
    )
    cfg = load_config(merged, env={})  # a merge key overridden is not a duplicate
    assert (cfg.observe.ingest_port, cfg.observe.act_port) == (9112, 9113)


def test_utf8_with_bom_and_unicode_names_load(tmp_path: Path) -> None:
    path = tmp_path / "utf8.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + (GOOD + "plant: Usine Bévillers — Halle 2\n").encode())
    assert load_config(path, env={}).plant == "Usine Bévillers — Halle 2"


@pytest.mark.parametrize(
    ("observe", "expected"),
    [
        (
            {"dashboard_port": True},
            "observe.dashboard_port: Input should be a number, not the boolean true",
        ),
        (
            {"ingest_port": False},
            "observe.ingest_port: Input should be a number, not the boolean false",
        ),
    ],
)
def test_booleans_are_not_numbers(observe: dict[str, object], expected: str) -> None:
    assert expected in errors_of({**MINIMAL, "observe": observe})


def test_numbers_from_the_environment_still_parse() -> None:
    cfg = parse_config({**MINIMAL, "observe": {"dashboard_port": "${PORT}"}}, env={"PORT": "8443"})
    assert cfg.observe.dashboard_port == 8443


def test_duplicate_ids_name_the_field_of_the_repeat() -> None:
    cam = {"url": "rtsp://h/x"}
    errs = errors_of(
        {
            "lines": [
                {"id": "l1", "cameras": [{"id": "c1", **cam}, {"id": "c2", **cam}]},
                {"id": "l1", "cameras": [{"id": "c2", **cam}]},
            ]
        }
    )
    assert errs == [
        "lines[1].id: duplicate line id 'l1' (first at lines[0].id)",
        "lines[1].cameras[0].id: duplicate camera id 'c2' (first at lines[0].cameras[1].id)",
    ]
    errs = errors_of(
        {**MINIMAL, "workflows": [{"kind": "divert", "name": "g"}, {"kind": "divert", "name": "g"}]}
    )
    assert errs == ["workflows[1].name: duplicate workflow name 'g' (first at workflows[0].name)"]
