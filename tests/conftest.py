"""Real servers for the suite: Apache Kafka and a redis-server on free loopback ports.

The broker is Apache Kafka from the jars `make setup` resolved (inspector.localstack);
INSPECTOR_TEST_BROKER=tansu runs the suite on Tansu instead (opt-in second target).
Set INSPECTOR_TEST_KAFKA=host:port and/or INSPECTOR_TEST_REDIS=redis://host:port/db to
run the same tests against existing servers.
A broker that dies during the session fails the test that was running with the
broker's own log tail, and every later test at once instead of hanging on it.
Every test gets its own topic prefix and Redis key prefix, so tests never see each
other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest
from hypothesis import HealthCheck, settings

from inspector.config import PlantConfig, parse_config
from inspector.localstack import EmbeddedBroker, ManagedProcess, start_kafka, start_redis

# Fuzz tests: bounded in `make test` ("ci"), long under `make fuzz` (HYPOTHESIS_PROFILE=fuzz).
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ARTIFACTS = Path(os.environ.get("INSPECTOR_TEST_ARTIFACTS", "test-artifacts"))


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


_SESSION_BROKER: list[EmbeddedBroker] = []


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("INSPECTOR_TEST_KAFKA")
    if external:
        yield external
        return
    try:
        broker = start_kafka(log_dir=tmp_path_factory.mktemp("kafka"))
    except FileNotFoundError as exc:  # no jars / no java: one line, not a traceback
        pytest.exit(str(exc), returncode=3)
    _SESSION_BROKER.append(broker)
    try:
        yield broker.bootstrap
    finally:
        _SESSION_BROKER.clear()
        broker.close()


@pytest.fixture(autouse=True)
def _session_broker_alive() -> Iterator[None]:
    """Fail fast, with the broker's log tail, once the session's broker has died."""
    if _SESSION_BROKER and (err := _SESSION_BROKER[0].health_error()):
        pytest.fail(err, pytrace=False)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _SESSION_BROKER and (err := _SESSION_BROKER[0].health_error()):
        report.sections.append(("session broker", err))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("INSPECTOR_TEST_REDIS")
    if external:
        yield external
        return
    server = start_redis(log_dir=tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[ManagedProcess]:
    """A redis-server of the test's own, for tests that stop and restart it."""
    server = start_redis(log_dir=tmp_path)
    try:
        yield server
    finally:
        server.close()


def base_config_dict(bootstrap: str, redis: str, uid: str) -> dict[str, Any]:
    return {
        "plant": f"test-{uid}",
        # Low timeouts: the test broker holds a JoinGroup for half the session timeout.
        "kafka": {
            "bootstrap_servers": bootstrap,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        },
        "topics": {"prefix": f"t{uid}", "partitions": 3},
        "redis": {"url": redis, "key_prefix": f"t{uid}"},
        # Consumer groups are per test too: a member SIGKILLed by one test must not hold
        # up the next test's rebalance on the shared broker.
        "worker": {"group_id": f"detect-{uid}"},
        "act": {"group_id": f"act-{uid}"},
        "lines": [
            {
                "id": "line-1",
                "cameras": [{"id": "cam-1", "url": "rtsp://127.0.0.1:8554/cam-1"}],
            }
        ],
    }


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = (
            deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


@pytest.fixture
def make_config(kafka_bootstrap: str, redis_url: str) -> Callable[..., PlantConfig]:
    """Build a PlantConfig on the session's servers with a fresh topic/key namespace."""

    def factory(**overrides: Any) -> PlantConfig:
        uid = uuid.uuid4().hex[:10]
        data = deep_merge(base_config_dict(kafka_bootstrap, redis_url, uid), overrides)
        return parse_config(data, "test", env={})

    return factory


@pytest.fixture
def plant(make_config: Callable[..., PlantConfig]) -> PlantConfig:
    return make_config()
