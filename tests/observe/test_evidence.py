"""`inspector evidence` against the real broker and redis-server."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from inspector.bus.store import FrameStore, connect
from inspector.cli import app
from inspector.config import PlantConfig
from inspector.observe.evidence import SEVERITY_COLOUR, index_verdict
from tests.observe.conftest import SCRATCH_BOX, part_jpeg, publish, verdict
from tests.observe.test_tail import write_config

pytestmark = pytest.mark.integration
runner = CliRunner()


def box_edge_colour(img: np.ndarray) -> np.ndarray:
    """Mean BGR along the left edge of the scratch box (below its label)."""
    x = int(SCRATCH_BOX.x1)
    return img[int(SCRATCH_BOX.y1) + 10 : int(SCRATCH_BOX.y2) - 5, x : x + 2].reshape(-1, 3).mean(0)


def test_evidence_written_with_the_finding_boxed(two_lines: PlantConfig, tmp_path: Path) -> None:
    cfg = two_lines
    store = FrameStore(connect(cfg.redis), cfg.redis.key_prefix, 600)
    key = store.put("cam-1:r:5", part_jpeg(), kind="evidence")
    v = verdict("line-1", "cam-1", 5, "FAIL", cls="scratch", evidence_key=key, run="r")
    publish(cfg, cfg.topics.verdicts, [verdict(seq=1), v, verdict(seq=9)])
    out = tmp_path / "ev.jpg"

    # no index entry: found by scanning the verdicts topic
    result = runner.invoke(
        app,
        ["evidence", v.verdict_id, "-o", str(out), "--config", str(write_config(cfg, tmp_path))],
    )
    assert result.exit_code == 0, result.output
    assert "FAIL line-1/cam-1 #5" in result.stdout and "scratch 0.88" in result.stdout
    img = cv2.imread(str(out))
    assert img is not None and img.shape == (360, 640, 3)
    # the plate is grey (200); the box edge is drawn in the "major" colour
    edge = box_edge_colour(img)
    assert np.abs(edge - np.array(SEVERITY_COLOUR["major"])).max() < 40, edge
    raw = cv2.imdecode(np.frombuffer(part_jpeg(), np.uint8), cv2.IMREAD_COLOR)
    assert raw is not None
    assert np.abs(box_edge_colour(raw) - 200).max() < 15  # nothing there before drawing


def test_evidence_found_through_the_redis_index(two_lines: PlantConfig, tmp_path: Path) -> None:
    cfg = two_lines
    client = connect(cfg.redis)
    key = FrameStore(client, cfg.redis.key_prefix, 600).put("cam-3:r:2", part_jpeg())
    v = verdict("line-2", "cam-3", 2, "FAIL", cls="dent", evidence_key=key, run="r")
    index_verdict(client, cfg.redis.key_prefix, v, ttl_s=600)  # not on the topic at all
    out = tmp_path / "ev.jpg"
    result = runner.invoke(
        app,
        [
            "evidence",
            v.verdict_id,
            "-o",
            str(out),
            "--raw",
            "--config",
            str(write_config(cfg, tmp_path)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == part_jpeg()


def test_expired_and_unknown_evidence_are_clear_errors(
    two_lines: PlantConfig, tmp_path: Path
) -> None:
    cfg = two_lines
    gone = verdict(
        "line-1",
        "cam-2",
        3,
        "FAIL",
        cls="crack",
        run="r",
        evidence_key=f"{cfg.redis.key_prefix}:frame:cam-2:r:3",
    )
    publish(cfg, cfg.topics.verdicts, [gone])
    path = write_config(cfg, tmp_path)
    out = tmp_path / "ev.jpg"

    result = runner.invoke(
        app, ["evidence", gone.verdict_id, "-o", str(out), "--config", str(path)]
    )
    assert result.exit_code == 3
    assert "evidence expired" in result.stderr
    assert not out.exists()

    result = runner.invoke(
        app, ["evidence", "no-such-verdict", "-o", str(out), "--config", str(path)]
    )
    assert result.exit_code == 1
    assert "no verdict no-such-verdict" in result.stderr
