"""TLS everywhere it travels: Kafka over SSL (client certificates) and SASL_SSL (SCRAM),
Redis over TLS, each against a real server started here with certificates made here.

One Apache Kafka broker serves every Kafka test in this module, with three listeners:
PLAINTEXT (inter-broker), SSL with ``ssl.client.auth=required`` and SASL_SSL with
SCRAM-SHA-256 (user created at storage-format time).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from inspector.bus.kafka import (
    ServiceUnavailable,
    check_broker,
    ensure_topics,
    make_consumer,
    make_producer,
)
from inspector.bus.store import FrameStore, StoreUnavailable, connect
from inspector.config import ConfigError, PlantConfig, parse_config
from inspector.localstack import (
    KafkaBroker,
    KafkaListener,
    ManagedProcess,
    RedisTls,
    free_port,
    start_apache_kafka,
    start_redis,
)
from tests.conftest import base_config_dict, deep_merge
from tests.tlscerts import TlsFiles, make_tls_files

pytestmark = pytest.mark.integration

SCRAM_USER = "alice"
SCRAM_PASSWORD = "alice-scram-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_broker(tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    ssl_port, sasl_port = free_port(), free_port()
    broker = start_apache_kafka(
        log_dir=tmp_path_factory.mktemp("kafka-tls"),
        listeners=[
            KafkaListener("SSL", "SSL", ssl_port),
            KafkaListener("SASL_SSL", "SASL_SSL", sasl_port),
        ],
        properties={
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(tls.server_bundle),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls.ca),
            "listener.name.ssl.ssl.client.auth": "required",
            "sasl.enabled.mechanisms": "SCRAM-SHA-256",
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
        },
        format_args=[
            "--add-scram",
            f"SCRAM-SHA-256=[name={SCRAM_USER},password={SCRAM_PASSWORD}]",
        ],
    )
    try:
        yield broker
    finally:
        broker.close()


def listener_port(broker: KafkaBroker, name: str) -> int:
    return next(x.port for x in broker.listeners if x.name == name)


def ssl_kafka(broker: KafkaBroker, tls: TlsFiles, **over: Any) -> dict[str, Any]:
    return {
        "bootstrap_servers": f"127.0.0.1:{listener_port(broker, 'SSL')}",
        "security_protocol": "SSL",
        "ssl_ca_location": str(tls.ca),
        "ssl_certificate_location": str(tls.client_cert),
        "ssl_key_location": str(tls.client_key),
        **over,
    }


def sasl_kafka(broker: KafkaBroker, tls: TlsFiles, **over: Any) -> dict[str, Any]:
    return {
        "bootstrap_servers": f"127.0.0.1:{listener_port(broker, 'SASL_SSL')}",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_username": SCRAM_USER,
        "sasl_password": SCRAM_PASSWORD,
        "ssl_ca_location": str(tls.ca),
        **over,
    }


def plant(kafka: dict[str, Any] | None = None, redis: dict[str, Any] | None = None) -> PlantConfig:
    uid = uuid.uuid4().hex[:10]
    data = base_config_dict("127.0.0.1:9", "redis://127.0.0.1:9/0", uid)
    data = deep_merge(data, {"kafka": kafka or {}, "redis": redis or {}})
    return parse_config(data, "test", env={})


def round_trip(cfg: PlantConfig) -> bytes:
    """Create a topic, produce one record and read it back, all through inspector's clients."""
    topic = cfg.topics.frames
    check_broker(cfg.kafka)
    ensure_topics(cfg.kafka, cfg.topics, [topic])
    payload = b"over tls " + uuid.uuid4().bytes
    producer = make_producer(cfg.kafka, client_suffix="tls-test")
    producer.produce(topic, value=payload, key=b"k")
    assert producer.flush(15) == 0
    consumer = make_consumer(cfg.kafka, f"tls-{uuid.uuid4().hex[:8]}")
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                return bytes(msg.value() or b"")
    finally:
        consumer.close()
    raise AssertionError(f"nothing came back on {topic}")


def expect_unavailable(cfg: PlantConfig, *needles: str) -> str:
    t0 = time.monotonic()
    with pytest.raises(ServiceUnavailable) as info:
        check_broker(cfg.kafka)
    elapsed = time.monotonic() - t0
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    assert elapsed < 4.0, f"took {elapsed:.1f}s to fail: {msg}"
    return msg


# --------------------------------------------------------------------------- Kafka


def test_kafka_ssl_with_client_certificate_round_trip(
    tls_broker: KafkaBroker, tls: TlsFiles
) -> None:
    cfg = plant(ssl_kafka(tls_broker, tls))
    assert round_trip(cfg).startswith(b"over tls ")


def test_kafka_sasl_ssl_scram_round_trip(tls_broker: KafkaBroker, tls: TlsFiles) -> None:
    cfg = plant(sasl_kafka(tls_broker, tls))
    assert round_trip(cfg).startswith(b"over tls ")


def test_kafka_wrong_ca_fails_at_start_up_with_the_reason(
    tls_broker: KafkaBroker, tls: TlsFiles
) -> None:
    expect_unavailable(
        plant(ssl_kafka(tls_broker, tls, ssl_ca_location=str(tls.other_ca))),
        "certificate verify failed",
        "kafka.ssl_ca_location",
    )
    expect_unavailable(
        plant(sasl_kafka(tls_broker, tls, ssl_ca_location=str(tls.other_ca))),
        "certificate verify failed",
    )


def test_kafka_wrong_scram_password_is_a_clear_auth_error(
    tls_broker: KafkaBroker, tls: TlsFiles
) -> None:
    msg = expect_unavailable(
        plant(sasl_kafka(tls_broker, tls, sasl_password="not-" + SCRAM_PASSWORD)),
        "Authentication failed",
        "kafka.sasl_password",
    )
    assert SCRAM_PASSWORD not in msg


def test_kafka_missing_client_certificate_is_refused(
    tls_broker: KafkaBroker, tls: TlsFiles
) -> None:
    kafka = ssl_kafka(tls_broker, tls)
    del kafka["ssl_certificate_location"], kafka["ssl_key_location"]
    msg = expect_unavailable(plant(kafka), "SSL", "kafka.ssl_certificate_location")
    assert "did not answer" in msg


def test_kafka_tls_file_that_cannot_be_read_is_named(
    tls_broker: KafkaBroker, tls: TlsFiles
) -> None:
    missing = str(tls.dir / "nope.pem")
    expect_unavailable(
        plant(ssl_kafka(tls_broker, tls, ssl_ca_location=missing)),
        f"kafka.ssl_ca_location: cannot read {missing}: No such file or directory",
    )


def test_kafka_plaintext_client_on_a_tls_listener_is_told_to_check_the_protocol(
    tls_broker: KafkaBroker, tls: TlsFiles
) -> None:
    # librdkafka only sees the broker hang up, so this one waits for the probe's timeout.
    cfg = plant({"bootstrap_servers": f"127.0.0.1:{listener_port(tls_broker, 'SSL')}"})
    with pytest.raises(ServiceUnavailable) as info:
        check_broker(cfg.kafka, timeout_s=1.5)
    assert "(PLAINTEXT) did not answer" in str(info.value)
    assert "kafka.security_protocol" in str(info.value)


def test_cli_start_up_fails_with_one_line_on_an_unverifiable_broker(
    tls_broker: KafkaBroker, tls: TlsFiles, tmp_path: Path
) -> None:
    uid = uuid.uuid4().hex[:10]
    data = base_config_dict("x:1", "redis://127.0.0.1:9/0", uid)
    data["kafka"] = ssl_kafka(tls_broker, tls, ssl_ca_location=str(tls.other_ca))
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(data))
    done = subprocess.run(
        [sys.executable, "-m", "inspector", "topics", "create", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: Kafka broker at ")
    assert "certificate verify failed" in lines[0]


# --------------------------------------------------------------------------- Redis


@pytest.fixture(scope="module")
def tls_redis(tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    server = start_redis(
        log_dir=tmp_path_factory.mktemp("redis-tls"),
        tls=RedisTls(cert_file=tls.server_cert, key_file=tls.server_key, ca_file=tls.ca),
    )
    try:
        yield server
    finally:
        server.close()


def redis_tls(server: ManagedProcess, tls: TlsFiles, **over: Any) -> dict[str, Any]:
    return {
        "url": f"rediss://127.0.0.1:{server.port}/0",
        "ssl_ca_location": str(tls.ca),
        "ssl_certificate_location": str(tls.client_cert),
        "ssl_key_location": str(tls.client_key),
        **over,
    }


def test_redis_tls_with_client_certificate_round_trip(
    tls_redis: ManagedProcess, tls: TlsFiles
) -> None:
    cfg = plant(redis=redis_tls(tls_redis, tls))
    client = connect(cfg.redis)
    store = FrameStore(client, cfg.redis.key_prefix, ttl_s=30)
    key = store.put("cam-1:run:1", b"\xff\xd8jpeg")
    assert store.get(key) == b"\xff\xd8jpeg"
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"


def test_redis_localhost_name_is_verified_too(tls_redis: ManagedProcess, tls: TlsFiles) -> None:
    cfg = plant(redis=redis_tls(tls_redis, tls, url=f"rediss://localhost:{tls_redis.port}/0"))
    assert connect(cfg.redis).ping()


def test_redis_unverifiable_server_fails_at_start_up(
    tls_redis: ManagedProcess, tls: TlsFiles
) -> None:
    cfg = plant(redis=redis_tls(tls_redis, tls, ssl_ca_location=str(tls.other_ca)))
    with pytest.raises(StoreUnavailable) as info:
        connect(cfg.redis)
    msg = str(info.value)
    assert "\n" not in msg
    assert "certificate verify failed" in msg
    assert "redis.ssl_ca_location" in msg


def test_redis_server_demanding_a_client_certificate_refuses_none(
    tls_redis: ManagedProcess, tls: TlsFiles
) -> None:
    over = redis_tls(tls_redis, tls)
    del over["ssl_certificate_location"], over["ssl_key_location"]
    with pytest.raises(StoreUnavailable) as info:
        connect(plant(redis=over).redis)
    assert "\n" not in str(info.value)


def test_redis_plain_client_on_tls_port_fails(tls_redis: ManagedProcess) -> None:
    cfg = plant(redis={"url": f"redis://127.0.0.1:{tls_redis.port}/0"})
    with pytest.raises(StoreUnavailable, match="Redis unreachable at"):
        connect(cfg.redis)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("over", "error"),
    [
        (
            {"redis": {"url": "redis://r:6379/0", "ssl_ca_location": "/ca.pem"}},
            "redis: Value error, ssl_ca_location needs a rediss:// url",
        ),
        (
            {"redis": {"url": "rediss://r:6379/0", "ssl_certificate_location": "/c.pem"}},
            "ssl_certificate_location and ssl_key_location go together",
        ),
        (
            {"kafka": {"ssl_ca_location": "/ca.pem"}},
            "ssl_ca_location is set but security_protocol PLAINTEXT does not use TLS",
        ),
        (
            {"kafka": {"security_protocol": "SSL", "ssl_key_location": "/k.pem"}},
            "ssl_certificate_location and ssl_key_location go together",
        ),
    ],
)
def test_tls_settings_that_would_be_ignored_are_errors(over: dict[str, Any], error: str) -> None:
    data = deep_merge(base_config_dict("k:9092", "redis://r:6379/0", "x"), over)
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test", env={})
    assert any(error.removeprefix("redis: Value error, ") in e for e in info.value.errors), (
        info.value.errors
    )


def test_rtsps_camera_urls_are_accepted_and_passed_through() -> None:
    from inspector.ingest import rtsp

    url = "rtsps://viewer:pw@cam.plant.local:322/stream1"
    data = base_config_dict("k:9092", "redis://r:6379/0", "x")
    data["lines"][0]["cameras"][0]["url"] = url
    cfg = parse_config(data, "test", env={})
    assert cfg.lines[0].cameras[0].url == url
    assert rtsp.host_port(url) == ("cam.plant.local", 322)
    assert rtsp.redact(url) == "rtsps://viewer:***@cam.plant.local:322/stream1"


# --------------------------------------------------------------------------- secrets


def _descendants(pid: int) -> list[int]:
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            out += _descendants(int(kid))
    return out


def _cmdlines(pids: list[int]) -> bytes:
    out = b""
    for pid in pids:
        for p in _descendants(pid):
            with contextlib.suppress(OSError):
                out += Path(f"/proc/{p}/cmdline").read_bytes() + b"\n"
    return out


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    import httpx

    try:
        r = httpx.get(url, headers=headers or {}, timeout=3)
        return r.status_code, r.content
    except httpx.HTTPError:
        return 0, b""


@pytest.mark.model
@pytest.mark.slow
def test_no_secret_in_logs_metrics_events_redis_or_argv_of_a_tls_plant(
    tls_broker: KafkaBroker, tls: TlsFiles, tmp_path: Path
) -> None:
    """A whole plant as real processes (mes-stub, ingest, worker, act, dashboard) over
    SASL_SSL Kafka and a TLS Redis with a password, every secret a unique marker; then
    every log line, every /metrics page, every event on every topic, everything in Redis
    and every process's argument list is searched for each marker."""
    import base64
    import os
    import secrets
    import signal

    from inspector.sim import SceneConfig, SimCameraFleet
    from tests.detect.conftest import demo_plant, frame_mode_rules
    from tests.helpers import read, wait_for

    mark = uuid.uuid4().hex[:12]
    whsec_key = secrets.token_bytes(24)
    store_key = secrets.token_bytes(32)
    env_secrets = {
        "T_REDIS_PASSWORD": f"redis-pw-{mark}",
        "T_CAM_PASSWORD": f"campw{mark}",
        "T_MES_SECRET": "whsec_" + base64.b64encode(whsec_key).decode(),
        "T_DASH_TOKEN": f"dash-token-{mark}",
        "INSPECTOR_STORE_KEYS": "k1:" + base64.b64encode(store_key).decode(),
        "T_KAFKA_PASSWORD": SCRAM_PASSWORD,
    }
    needles = {name: value.encode() for name, value in env_secrets.items()}
    needles["store key (raw)"] = store_key
    needles["webhook key (raw)"] = whsec_key
    needles["store key (b64 only)"] = base64.b64encode(store_key)

    redis_server = start_redis(
        log_dir=tmp_path,
        tls=RedisTls(cert_file=tls.server_cert, key_file=tls.server_key, ca_file=tls.ca),
        password=env_secrets["T_REDIS_PASSWORD"],
    )
    fleet = SimCameraFleet(
        {"cam-1": SceneConfig(seed=31, width=640, height=360, clip_seconds=10, defect_rate=0.8)}
    )
    fleet.start()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    try:
        ports = {k: free_port() for k in ("mes", "ingest", "worker", "act", "dashboard")}
        cam_url = fleet.url("cam-1").replace("rtsp://", "rtsp://viewer:${T_CAM_PASSWORD}@", 1)
        uid = uuid.uuid4().hex[:10]
        data = deep_merge(
            base_config_dict("x:1", "redis://x:1/0", uid),
            {
                "kafka": sasl_kafka(tls_broker, tls, sasl_password="${T_KAFKA_PASSWORD}"),
                "redis": redis_tls(
                    redis_server, tls, password="${T_REDIS_PASSWORD}", socket_timeout_s=5
                ),
                "lines": [
                    {
                        "id": "line-1",
                        "cameras": [
                            {
                                "id": "cam-1",
                                "url": cam_url,
                                "sample_fps": 4,
                                "width": 640,
                                "height": 360,
                            }
                        ],
                        "rules": frame_mode_rules(),
                    }
                ],
                "models": demo_plant()["models"],
                "worker": {"shed_after_ms": 60_000},
                "frames": {"max_age_s": 120},
                "workflows": [
                    {"kind": "divert", "name": "gate"},
                    {
                        "kind": "mes_ticket",
                        "name": "ticket",
                        "url": f"http://127.0.0.1:{ports['mes']}/tickets",
                        "secrets": ["${T_MES_SECRET}"],
                        "retry": {"initial_backoff_s": 0.2, "max_backoff_s": 1},
                    },
                ],
                "observe": {
                    "dashboard_token": "${T_DASH_TOKEN}",
                    "dashboard_port": ports["dashboard"],
                    "log_format": "json",
                },
            },
        )
        path = tmp_path / "plant.yaml"
        path.write_text(yaml.safe_dump(data))
        for value in env_secrets.values():
            assert value not in path.read_text()  # only ${NAME} references in the file
        env = {**os.environ, **env_secrets, "INSPECTOR_MES_SECRETS": env_secrets["T_MES_SECRET"]}
        cfg = parse_config(yaml.safe_load(path.read_text()), str(path), env=env)
        ensure_topics(cfg.kafka, cfg.topics)

        cli = [sys.executable, "-m", "inspector"]
        argvs = {
            "mes": [*cli, "mes-stub", "--port", str(ports["mes"])],
            "ingest": [*cli, "ingest", "-c", str(path), "--metrics-port", str(ports["ingest"])],
            "worker": [*cli, "worker", "-c", str(path), "--metrics-port", str(ports["worker"])],
            "act": [*cli, "act", "-c", str(path), "--metrics-port", str(ports["act"])],
            "dashboard": [*cli, "dashboard", "-c", str(path)],
        }
        for name, argv in argvs.items():
            logs[name] = tmp_path / f"{name}.log"
            with logs[name].open("wb") as log:
                procs[name] = subprocess.Popen(argv, stdout=log, stderr=log, env=env)

        def mes_verified() -> int:
            code, body = _get(f"http://127.0.0.1:{ports['mes']}/stats")
            return int(orjson_loads(body).get("verified", 0)) if code == 200 else 0

        def alive() -> bool:
            dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
            assert not dead, f"exited early: {dead}; " + "; ".join(
                f"{n}: {logs[n].read_text()[-800:]}" for n in dead
            )
            return True

        wait_for(lambda: alive() and mes_verified() >= 1, 150, "a signed MES ticket verified")
        dash = f"http://127.0.0.1:{ports['dashboard']}"
        wait_for(lambda: alive() and _get(f"{dash}/healthz")[0] == 200, 30, "dashboard up")
        token = env_secrets["T_DASH_TOKEN"]
        assert _get(f"{dash}/api/snapshot")[0] == 401
        assert _get(f"{dash}/api/snapshot", {"Authorization": f"Bearer {token}"})[0] == 200
        assert _get(f"{dash}/?token={token}")[0] == 303  # token in a URL, once → cookie

        haystacks: dict[str, bytes] = {}
        haystacks["argv"] = _cmdlines([p.pid for p in procs.values()])
        for name in ("ingest", "worker", "act", "dashboard"):
            code, body = _get(f"http://127.0.0.1:{ports[name]}/metrics")
            assert code == 200 and b"inspector_" in body, name
            haystacks[f"{name} /metrics"] = body
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        fleet.close()

    try:
        events = read(cfg, cfg.topics.all(), quiet_s=2.0, timeout_s=60)
        blob = b""
        for m in events:
            blob += (m.key() or b"") + (m.value() or b"")
            # librdkafka's headers: (name, bytes or None) pairs; the type allows more
            for k, v in cast(list[tuple[str, bytes | None]], m.headers() or []):
                blob += k.encode() + (v or b"")
        haystacks["events"] = blob
        client = connect(cfg.redis)
        keys = list(client.scan_iter(f"{cfg.redis.key_prefix}:*"))
        assert keys, "nothing in Redis"
        haystacks["redis"] = b"".join(k + (client.dump(k) or b"") for k in keys)
    finally:
        redis_server.close()
    for name, log_path in logs.items():
        haystacks[f"{name} log"] = log_path.read_bytes()

    leaks = [
        f"{secret} in {where}"
        for where, hay in haystacks.items()
        for secret, needle in needles.items()
        if needle in hay
    ]
    assert not leaks, leaks
    # the search sees what it should: the camera URL, redacted, is in logs and events
    topics_seen = {m.topic() for m in events}
    assert {cfg.topics.frames, cfg.topics.verdicts, cfg.topics.camera_status} <= topics_seen
    assert cfg.topics.line_commands in topics_seen and cfg.topics.actions in topics_seen
    assert b"viewer:***@" in haystacks["events"] + haystacks["ingest log"]
    assert len(haystacks["worker log"]) > 0 and len(haystacks["argv"]) > 0


def orjson_loads(body: bytes) -> dict[str, Any]:
    import orjson

    try:
        out = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return out if isinstance(out, dict) else {}
