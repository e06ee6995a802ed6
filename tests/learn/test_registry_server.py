"""The registry as a plant runs it: an MLflow tracking server backed by PostgreSQL
(both started by the test), artifacts proxied by the server."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inspector.config import PlantConfig
from inspector.inference.model import sha256_of
from inspector.learn.lifecycle import promote, register_model, rollback
from inspector.localstack import ManagedProcess, start_mlflow_server, start_postgres
from inspector.registry import Registry, RegistryUnavailable
from tests.helpers import create_topics
from tests.learn.support import variant

pytestmark = pytest.mark.integration


@pytest.fixture
def mlflow_on_postgres(tmp_path: Path) -> Iterator[tuple[ManagedProcess, ManagedProcess]]:
    pg = start_postgres(log_dir=tmp_path, database="mlflow")
    try:
        srv = start_mlflow_server(
            f"postgresql://inspector@127.0.0.1:{pg.port}/mlflow",
            tmp_path / "server-artifacts",
            log_dir=tmp_path,
        )
        try:
            yield pg, srv
        finally:
            srv.close()
    finally:
        pg.close()


def test_register_promote_fetch_rollback_through_an_mlflow_server_on_postgres(
    make_config: Callable[..., PlantConfig],
    tmp_path: Path,
    mlflow_on_postgres: tuple[ManagedProcess, ManagedProcess],
) -> None:
    pg, srv = mlflow_on_postgres
    cfg = make_config(
        learn={
            "data_dir": str(tmp_path / "client"),
            "registry": {"uri": f"http://127.0.0.1:{srv.port}", "timeout_s": 5},
        }
    )
    create_topics(cfg)
    reg = Registry(cfg.learn)
    reg.check()
    v1 = register_model(cfg, reg, "builtin:defects-v1")
    v2 = register_model(cfg, reg, str(variant(tmp_path / "v2", "v2")))
    promote(cfg, reg, v1.version)
    promote(cfg, reg, v2.version)
    assert reg.by_alias("champion").version == "2"

    # the files come back through the server's artifact proxy, byte for byte
    entry = reg.fetch(reg.by_alias("champion"))
    assert sha256_of(entry) == v2.sha256
    assert not (tmp_path / "client" / "artifacts").exists(), "artifacts belong to the server"
    assert any((tmp_path / "server-artifacts").rglob("model.onnx"))

    assert rollback(cfg, reg) == ("2", "1")
    # what the server answered is what PostgreSQL holds
    rows = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(pg.port),
            "-U",
            "inspector",
            "-d",
            "mlflow",
            "-At",
            "-c",
            "SELECT alias, version FROM registered_model_aliases ORDER BY alias",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert rows == ["champion|1"]

    # the server goes away: a read fails within seconds, naming the registry
    srv.close()
    t0 = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=f"127.0.0.1:{srv.port}"):
        reg.by_alias("champion")
    assert time.monotonic() - t0 < 30
