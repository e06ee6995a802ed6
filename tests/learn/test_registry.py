"""The model registry (MLflow, embedded SQLite store) and the models CLI, with the
announcements on a real broker."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from inspector.config import PlantConfig
from inspector.events import ModelEvent, decode
from inspector.inference.model import ModelError, sha256_of
from inspector.learn.lifecycle import promote, register_model, rollback
from inspector.localstack import free_port
from inspector.registry import Registry, RegistryError, RegistryUnavailable
from tests.helpers import create_topics, read
from tests.learn.support import corrupt, variant

pytestmark = pytest.mark.integration


@pytest.fixture
def learn_cfg(make_config: Callable[..., PlantConfig], tmp_path: Path) -> PlantConfig:
    cfg = make_config(learn={"data_dir": str(tmp_path / "learn")})
    create_topics(cfg)
    return cfg


def events(cfg: PlantConfig, count: int) -> list[ModelEvent]:
    msgs = read(cfg, [cfg.topics.model_events], count=count, timeout_s=20)
    return [decode(m.value(), m.headers(), ModelEvent) for m in msgs]


def test_register_promote_rollback_with_cards_hashes_and_events(
    learn_cfg: PlantConfig, tmp_path: Path
) -> None:
    reg = Registry(learn_cfg.learn)
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "a.jpg").write_bytes(b"not really a jpeg, but hashed")
    v1 = register_model(learn_cfg, reg, "builtin:defects-v1", data=data)
    assert v1.version == "1"
    assert v1.sha256 == sha256_of(
        Path(__file__).parents[2] / "inspector/models/defects-v1/model.onnx"
    )
    assert v1.data_sha256 == sha256_of(data)
    assert set(v1.classes) >= {"scratch"} and v1.imgsz == learn_cfg.model.imgsz
    assert "mAP50" in v1.metrics  # from the shipped card
    v2 = register_model(learn_cfg, reg, str(variant(tmp_path / "v2", "v2")), metrics={"f1": 0.5})
    assert v2.version == "2" and v2.sha256 != v1.sha256 and v2.metrics["f1"] == 0.5

    assert promote(learn_cfg, reg, "1") is None
    assert promote(learn_cfg, reg, "2") == "1"
    assert reg.by_alias("champion").version == "2"
    assert [v.aliases for v in reg.versions()] == [[], ["champion"]]
    assert rollback(learn_cfg, reg) == ("2", "1")
    assert reg.by_alias("champion").version == "1"
    with pytest.raises(RegistryError, match="no earlier version"):
        rollback(learn_cfg, reg)
    with pytest.raises(RegistryError):
        promote(learn_cfg, reg, "99")
    assert reg.by_alias("champion").version == "1"  # the refused move moved nothing

    got = events(learn_cfg, 5)
    assert [(e.kind, e.version, e.previous_version) for e in got] == [
        ("registered", "1", None),
        ("registered", "2", None),
        ("promoted", "1", None),
        ("promoted", "2", "1"),
        ("rolled_back", "1", "2"),
    ]

    # the cache holds what the registry says; a file changed behind its back is refused
    entry = reg.fetch(v2)
    assert sha256_of(entry) == v2.sha256
    entry.write_bytes(entry.read_bytes()[:-10])
    with pytest.raises(RegistryError, match="sha256"):
        reg.fetch(v2)


def test_a_model_that_does_not_load_is_refused_before_the_registry_sees_it(
    learn_cfg: PlantConfig, tmp_path: Path
) -> None:
    reg = Registry(learn_cfg.learn)
    with pytest.raises(ModelError, match="cannot load ONNX model"):
        register_model(learn_cfg, reg, str(corrupt(tmp_path / "bad")))
    assert reg.versions() == []


def test_unreachable_registry_is_one_line_and_exit_1(
    make_config: Callable[..., PlantConfig], tmp_path: Path
) -> None:
    port = free_port()
    cfg = make_config(learn={"registry": {"uri": f"http://127.0.0.1:{port}", "timeout_s": 2}})
    t0 = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=f"127.0.0.1:{port}"):
        Registry(cfg.learn).check()
    assert time.monotonic() - t0 < 20, "an unreachable registry must answer within seconds"

    path = tmp_path / "plant.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    out = subprocess.run(
        [sys.executable, "-m", "inspector", "models", "list", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr
    err = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and f"127.0.0.1:{port}" in err[0] and "unavailable" in err[0], out.stderr


def test_models_cli_walks_register_promote_show_rollback(
    learn_cfg: PlantConfig, tmp_path: Path
) -> None:
    import yaml

    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(learn_cfg.model_dump(mode="json", exclude_none=True)))

    def cli(*args: str) -> Any:
        return subprocess.run(
            [sys.executable, "-m", "inspector", "models", *args, "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=180,
        )

    r = cli("register", "builtin:defects-v1", "--alias", "champion")
    assert r.returncode == 0, r.stderr
    assert "registered inspector-detector version 1" in r.stdout and "@champion: - -> 1" in r.stdout
    r = cli("register", str(variant(tmp_path / "v2", "v2")), "--metric", "f1=0.9")
    assert r.returncode == 0, r.stderr
    r = cli("promote", "2")
    assert r.returncode == 0 and "@champion: 1 -> 2" in r.stdout, r.stderr
    r = cli("list")
    assert r.returncode == 0, r.stderr
    rows = [ln.split() for ln in r.stdout.splitlines()[1:]]
    assert [(row[0], row[1]) for row in rows] == [("1", "-"), ("2", "champion")]
    r = cli("show", "champion")
    assert r.returncode == 0 and '"version": "2"' in r.stdout and '"f1": 0.9' in r.stdout
    r = cli("rollback")
    assert r.returncode == 0 and "@champion: 2 -> 1 (rolled back)" in r.stdout, r.stderr
    r = cli("register", str(corrupt(tmp_path / "bad")))
    assert r.returncode == 2 and "model refused" in r.stderr
