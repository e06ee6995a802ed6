"""`inspector tail` against the real broker: filters, start positions, bad input."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from inspector.cli import app
from inspector.config import PlantConfig
from inspector.observe.feed import Filters
from inspector.observe.tail import run_tail
from tests.helpers import produce, wait_for
from tests.observe.conftest import publish, verdict

pytestmark = pytest.mark.integration
runner = CliRunner()


def write_config(cfg: PlantConfig, tmp_path: Path) -> Path:
    path = tmp_path / "plant.yaml"
    data = cfg.model_dump(mode="json", exclude_none=True)
    path.write_text(yaml.safe_dump(data))
    return path


def tail_json(cfg_path: Path, *args: str) -> tuple[list[dict], str]:
    result = runner.invoke(
        app, ["tail", *args, "--config", str(cfg_path), "--json", "--timeout", "30"]
    )
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    return [orjson.loads(ln) for ln in lines], result.stderr


def test_filters_select_exactly_the_matching_verdicts(
    two_lines: PlantConfig, tmp_path: Path
) -> None:
    cfg = two_lines
    events = [
        verdict("line-1", "cam-1", 0, "PASS"),
        verdict("line-1", "cam-1", 1, "FAIL", cls="scratch"),
        verdict("line-1", "cam-2", 2, "FAIL", cls="dent"),
        verdict("line-2", "cam-3", 3, "FAIL", cls="scratch"),
        verdict("line-2", "cam-3", 4, "FAULT"),
    ]
    publish(cfg, cfg.topics.verdicts, events[:3])
    # a record that is not an event: tail reports it and goes on
    produce(cfg, cfg.topics.verdicts, [(b"not json", [("ce_type", b"x")])])
    publish(cfg, cfg.topics.verdicts, events[3:])
    path = write_config(cfg, tmp_path)
    ids = [e.verdict_id for e in events]

    got, _ = tail_json(path, "verdicts", "--from-beginning", "--max", "5")
    assert sorted(g["verdict_id"] for g in got) == sorted(ids)

    got, _ = tail_json(path, "verdicts", "--from-beginning", "--verdict", "FAIL", "--max", "3")
    assert sorted(g["verdict_id"] for g in got) == sorted(ids[1:4])

    got, _ = tail_json(
        path, "verdicts", "--from-beginning", "--class", "scratch", "--line", "line-2", "--max", "1"
    )
    assert [g["verdict_id"] for g in got] == [ids[3]]

    got, _ = tail_json(path, "verdicts", "--from-beginning", "--camera", "cam-2", "--max", "1")
    assert [g["verdict_id"] for g in got] == [ids[2]]
    assert got[0]["findings"][0]["cls"] == "dent"  # the wire payload, ready for jq


def test_since_starts_at_that_time_not_at_the_beginning(
    two_lines: PlantConfig, tmp_path: Path
) -> None:
    cfg = two_lines
    old = [verdict(seq=i, at=time.time() - 1200) for i in range(3)]
    new = [verdict(seq=10 + i) for i in range(3)]
    publish(cfg, cfg.topics.verdicts, old, timestamp_s=time.time() - 1200)
    publish(cfg, cfg.topics.verdicts, new)
    path = write_config(cfg, tmp_path)

    # same key, one partition: had the old records been read they would come first
    got, err = tail_json(path, "verdicts", "--since", "10m", "--max", "3")
    assert [g["verdict_id"] for g in got] == [v.verdict_id for v in new]
    assert "following" in err

    got, _ = tail_json(path, "verdicts", "--since", "30m", "--max", "6")
    assert [g["verdict_id"] for g in got] == [v.verdict_id for v in old + new]


def test_default_start_is_now(two_lines: PlantConfig) -> None:
    """ "From now" is the end of the log (auto.offset.reset=latest), not a time: records
    already there are skipped even when a skewed producer stamped them in the future."""
    cfg = two_lines
    before = [verdict(seq=i) for i in range(3)]
    publish(cfg, cfg.topics.verdicts, before, timestamp_s=time.time() + 600)
    out: list[str] = []
    ready = threading.Event()
    thread = threading.Thread(
        target=run_tail,
        args=(cfg, "verdicts", Filters()),
        kwargs={
            "start_s": None,
            "from_now": True,
            "as_json": True,
            "max_events": 2,
            "timeout_s": 30,
            "write": out.append,
            "on_ready": ready.set,
        },
    )
    thread.start()
    try:
        wait_for(ready.is_set, 15, "tail to be assigned")
        after = [verdict(seq=10 + i) for i in range(2)]
        publish(cfg, cfg.topics.verdicts, after)
        wait_for(lambda: len(out) >= 2, 20, "the new verdicts")
    finally:
        thread.join(35)
    assert [orjson.loads(x)["verdict_id"] for x in out] == [v.verdict_id for v in after]


def test_pretty_output_names_the_verdict(two_lines: PlantConfig, tmp_path: Path) -> None:
    cfg = two_lines
    v = verdict("line-2", "cam-3", 7, "FAIL", cls="crack")
    publish(cfg, cfg.topics.verdicts, [v])
    result = runner.invoke(
        app,
        [
            "tail",
            "verdicts",
            "--config",
            str(write_config(cfg, tmp_path)),
            "--from-beginning",
            "--max",
            "1",
            "--timeout",
            "30",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "line-2/cam-3" in result.stdout
    assert "FAIL" in result.stdout and "crack 0.88 major" in result.stdout
    assert v.verdict_id in result.stdout


def test_unknown_filters_are_errors_listing_the_valid_ones(
    two_lines: PlantConfig, tmp_path: Path
) -> None:
    path = write_config(two_lines, tmp_path)
    result = runner.invoke(app, ["tail", "verdicts", "--config", str(path), "--line", "line-9"])
    assert result.exit_code == 2
    assert "unknown line 'line-9'" in result.stderr
    assert "line-1, line-2" in result.stderr

    result = runner.invoke(app, ["tail", "defects", "--config", str(path), "--camera", "cam-7"])
    assert result.exit_code == 2
    assert "valid cameras: cam-1, cam-2, cam-3" in result.stderr

    result = runner.invoke(
        app, ["tail", "verdicts", "--config", str(path), "--line", "line-2", "--camera", "cam-1"]
    )
    assert result.exit_code == 2
    assert "on line line-2; valid cameras: cam-3" in result.stderr

    result = runner.invoke(app, ["tail", "actions", "--config", str(path), "--verdict", "FAIL"])
    assert result.exit_code == 2
    assert "--verdict applies to verdicts only" in result.stderr

    result = runner.invoke(app, ["tail", "verdicts", "--config", str(path), "--since", "soon"])
    assert result.exit_code == 2
    assert "cannot read duration 'soon'" in result.stderr
