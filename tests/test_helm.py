"""The Helm chart (deploy/helm/inspector), rendered by the real `helm template`: the
objects it makes, KEDA's lag-based scaling capped at the partition count, secrets only
from Kubernetes Secrets, the plant config that the real loader accepts, and every object
valid against the Kubernetes and KEDA schemas (offline; nothing is applied to a cluster).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from inspector.config import PlantConfig, dump_config, parse_config
from tests.helmchart import (
    CHART,
    PLC_MQTT,
    RELEASE,
    SINK,
    STAGES,
    Obj,
    by_kind,
    container,
    deployment,
    lint,
    mutated,
    plant_yaml,
    render,
    render_error,
    secret_env,
    validate_all,
    validate_core,
    validate_crd,
    validate_kafka_trigger,
    walk,
)

CPU = ("-f", str(CHART / "values-cpu.yaml"))
GPU = "nvidia.com/gpu"

# What the Secret would hold, one recognisable value per key (formats the loader takes).
SAMPLE_SECRETS = {
    "KAFKA_USERNAME": "user-5e1c7a",
    "KAFKA_PASSWORD": "kafka-pw-5e1c7a",
    "REDIS_URL": "rediss://:redis-url-pw-5e1c7a@redis.plant.local:6379/0",
    "REDIS_PASSWORD": "redis-pw-5e1c7a",
    "MES_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"mes-secret-5e1c7a-0123456789").decode(),
    "DASHBOARD_TOKEN": "dashboard-token-5e1c7a",
}
# ... and what a plant adds for a registry server (test_workers_follow_a_registry_server...)
MLFLOW_SECRETS = {
    "MLFLOW_TRACKING_USERNAME": "mlflow-user-5e1c7a",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-pw-5e1c7a",
}


# ... and for the PLC bridge and the MQTT publisher (values-plc-mqtt.yaml)
PLC_SECRETS = {"PLC_PASSWORD": "plc-pw-5e1c7a", "MQTT_PASSWORD": "mqtt-pw-5e1c7a"}


def pod_env(objs: list[Obj]) -> dict[str, str]:
    """The secret environment a pod would see: exactly the variables the chart takes from
    the Secret, each with its sample value."""
    names = secret_env(objs)
    samples = {**SAMPLE_SECRETS, **MLFLOW_SECRETS, **PLC_SECRETS}
    missing = set(names) - set(samples)
    assert not missing, f"add a sample value for {sorted(missing)} to SAMPLE_SECRETS"
    return {n: samples[n] for n in names}


def loaded_config(objs: list[Obj]) -> PlantConfig:
    """The rendered plant.yaml through the real loader, with only the pods' secret env."""
    return parse_config(yaml.safe_load(plant_yaml(objs)), "plant.yaml", env=pod_env(objs))


def gpu_anywhere(dep: Obj) -> list[str]:
    return [p for p, v in walk(dep) if GPU in str(p) or v == GPU]


# --------------------------------------------------------------------------- objects


def test_default_values_render_one_deployment_per_stage_with_gpu_workers() -> None:
    objs = render()
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(
        ["ConfigMap", "Service", "ScaledObject", "TriggerAuthentication"]
        + ["Deployment"] * 4
        + ["PodDisruptionBudget"] * 4
    )
    assert "Secret" not in kinds  # the chart never holds a secret value
    cfg = loaded_config(objs)
    ports = {
        "ingest": cfg.observe.ingest_port,
        "worker": cfg.observe.worker_port,
        "act": cfg.observe.act_port,
        "dashboard": cfg.observe.dashboard_port,
    }
    for stage in STAGES:
        dep = deployment(objs, stage)
        c = container(dep)
        assert c["args"][:3] == [stage, "--config", "/etc/inspector/config/plant.yaml"]
        [port] = c["ports"]
        assert port["containerPort"] == ports[stage]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = c[probe]["httpGet"]
            assert get["port"] == port["name"]
            assert get["path"] == ("/readyz" if probe == "readinessProbe" else "/healthz")
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(
            ports[stage]
        )
        if stage != "worker":
            assert not gpu_anywhere(dep), f"{stage} asks for a GPU"

    worker = deployment(objs, "worker")
    res = container(worker)["resources"]
    assert res["requests"][GPU] == res["limits"][GPU] == 1
    pod = worker["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "replicas" not in worker["spec"], "KEDA owns the worker's replica count"
    assert deployment(objs, "ingest")["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment(objs, "ingest")["spec"]["replicas"] == 1
    [svc] = by_kind(objs, "Service").values()
    assert (
        svc["spec"]["selector"] == deployment(objs, "dashboard")["spec"]["selector"]["matchLabels"]
    )
    validate_all(objs)


def test_cpu_variant_asks_for_no_gpu() -> None:
    objs = render(*CPU)
    worker = deployment(objs, "worker")
    assert not gpu_anywhere(worker), gpu_anywhere(worker)
    pod = worker["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert container(worker)["resources"]["requests"]["cpu"] == "4"
    cfg = loaded_config(objs)
    assert cfg.model.device == "cpu" and cfg.model.threads == 4
    assert by_kind(objs, "ScaledObject"), "the CPU variant is autoscaled too"
    validate_all(objs)


@pytest.mark.parametrize("variant", [(), CPU], ids=["gpu", "cpu"])
def test_helm_lint_strict_passes(variant: tuple[str, ...]) -> None:
    proc = lint(*variant)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout


def test_every_stage_has_a_pod_disruption_budget_over_its_pods() -> None:
    objs = render()
    pdbs = by_kind(objs, "PodDisruptionBudget")
    assert set(pdbs) == {f"{RELEASE}-{s}" for s in STAGES}
    for stage in STAGES:
        dep = deployment(objs, stage)
        pdb = pdbs[f"{RELEASE}-{stage}"]["spec"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert pdb["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
        # a budget a single pod can never meet would block every node drain
        if "minAvailable" in pdb:
            assert pdb["minAvailable"] < dep["spec"]["replicas"], stage
        else:
            assert pdb["maxUnavailable"] >= 1, stage
    assert pdbs[f"{RELEASE}-worker"]["spec"] == {
        "maxUnavailable": 1,
        "selector": deployment(objs, "worker")["spec"]["selector"],
    }


def test_lake_sink_runs_on_its_volume_when_enabled() -> None:
    assert "sink" not in {d.split("-", 1)[1] for d in by_kind(render(), "Deployment")}
    objs = render(*SINK)
    cfg = loaded_config(objs)
    sink = deployment(objs, "sink")
    c = container(sink)
    assert c["args"][:3] == ["sink", "--config", "/etc/inspector/config/plant.yaml"]
    [port] = c["ports"]
    assert port["containerPort"] == cfg.lake.port == 9104
    assert c["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": port["name"],
        "scheme": "HTTP",
    }
    assert sink["spec"]["replicas"] == 1
    assert sink["spec"]["strategy"] == {"type": "Recreate"}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["lake"] == cfg.lake.data_dir == "/var/lib/inspector/lake"
    vols = {v["name"]: v for v in sink["spec"]["template"]["spec"]["volumes"]}
    [pvc] = by_kind(objs, "PersistentVolumeClaim").values()
    assert vols["lake"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert f"{RELEASE}-sink" in by_kind(objs, "PodDisruptionBudget")
    assert not gpu_anywhere(sink)
    validate_all(objs)
    # a shared catalog and warehouse: several sinks, no volume
    objs = render(
        *SINK,
        "--set",
        "sink.persistence.enabled=false,sink.replicas=2",
        "--set-string",
        "config.lake.catalog_uri=${LAKE_CATALOG_URI},config.lake.warehouse=s3://plant/lake,"
        "config.lake.s3.secret_access_key=${LAKE_S3_SECRET},config.lake.s3.access_key_id=k",
        "--set-string",
        "secret.env.LAKE_CATALOG_URI=lake-catalog-uri,secret.env.LAKE_S3_SECRET=lake-s3",
    )
    sink = deployment(objs, "sink")
    assert sink["spec"]["replicas"] == 2 and "lake" not in {
        m["name"] for m in container(sink)["volumeMounts"]
    }
    assert not by_kind(objs, "PersistentVolumeClaim")
    assert secret_env(objs)["LAKE_CATALOG_URI"] == ("inspector-secrets", "lake-catalog-uri")
    assert secret_env(objs)["LAKE_S3_SECRET"] == ("inspector-secrets", "lake-s3")
    validate_all(objs)


def test_plc_bridge_and_mqtt_publisher_run_when_enabled() -> None:
    """bridge.enabled / mqtt.enabled: `inspector bridge` and `inspector mqtt`, each on the
    probe port of its own plant settings, with a budget, resources and the Secret's
    passwords and certificate files; the plant config they read loads."""
    default = {d.removeprefix(f"{RELEASE}-") for d in by_kind(render(), "Deployment")}
    assert default == set(STAGES), "bridge and mqtt are off by default"
    objs = render(*PLC_MQTT)
    validate_all(objs)
    cfg = loaded_config(objs)
    assert cfg.mqtt is not None
    ports = {"bridge": cfg.bridge.port, "mqtt": cfg.mqtt.metrics_port}
    assert ports == {"bridge": 9105, "mqtt": 9106}
    pdbs = by_kind(objs, "PodDisruptionBudget")
    for stage, port in ports.items():
        dep = deployment(objs, stage)
        c = container(dep)
        assert c["args"] == [stage, "--config", "/etc/inspector/config/plant.yaml"]
        [p] = c["ports"]
        assert p["containerPort"] == port
        for probe, path in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ]:
            assert c[probe]["httpGet"] == {"path": path, "port": p["name"], "scheme": "HTTP"}
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port)
        assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
        assert not gpu_anywhere(dep)
        assert dep["spec"]["replicas"] == 1
        pdb = pdbs[f"{RELEASE}-{stage}"]["spec"]
        assert pdb["selector"] == dep["spec"]["selector"] and pdb["maxUnavailable"] == 1
        env = {e["name"]: e for e in c["env"]}
        for name, key in [("PLC_PASSWORD", "plc-password"), ("MQTT_PASSWORD", "mqtt-password")]:
            assert env[name]["valueFrom"]["secretKeyRef"] == {
                "name": "inspector-secrets",
                "key": key,
            }
        vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        keys = {i["key"] for i in vols["secret-files"]["secret"]["items"]}
        assert {"mqtt-ca.pem", "plc-client.pem", "plc-client-key.pem", "plc-server.pem"} <= keys
    # one MQTT client id per connection: never two publisher pods at once
    assert deployment(objs, "mqtt")["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment(objs, "bridge")["spec"]["strategy"]["type"] == "RollingUpdate"
    # the secrets the loader resolved came from the Secret, the files are the mounted keys
    [target] = cfg.bridge.targets
    assert target.kind == "opcua" and target.password is not None
    assert target.password.get_secret_value() == PLC_SECRETS["PLC_PASSWORD"]
    assert target.security.private_key == "/etc/inspector/secrets/plc-client-key.pem"
    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == PLC_SECRETS["MQTT_PASSWORD"]
    assert cfg.mqtt.ca_file == "/etc/inspector/secrets/mqtt-ca.pem"
    text = plant_yaml(objs)
    assert all(v not in text for v in PLC_SECRETS.values())


def test_a_bridge_with_an_mqtt_target_is_one_pod_replaced_with_recreate(tmp_path: Path) -> None:
    bridge = _example()["config"]["bridge"]
    bridge["targets"].append({"kind": "mqtt", "name": "plc-gw", "host": "gw.plant.local"})
    values = tmp_path / "mqtt-target.yaml"
    values.write_text(yaml.safe_dump({"config": {"bridge": bridge}}))
    objs = render(*PLC_MQTT, "-f", str(values))
    assert deployment(objs, "bridge")["spec"]["strategy"] == {"type": "Recreate"}
    assert [t.kind for t in loaded_config(objs).bridge.targets] == ["opcua", "mqtt"]
    validate_all(objs)
    err = render_error(*PLC_MQTT, "-f", str(values), "--set", "bridge.replicas=2")
    assert "bridge.replicas > 1 with the MQTT target plc-gw" in err


# --------------------------------------------------------------------------- KEDA


@pytest.mark.parametrize("partitions", [None, 24, 3])
def test_workers_scale_on_frames_lag_capped_at_the_partition_count(
    partitions: int | None,
) -> None:
    args = () if partitions is None else ("--set", f"config.topics.partitions={partitions}")
    objs = render(*args)
    cfg = loaded_config(objs)
    assert partitions is None or cfg.topics.partitions == partitions
    [so] = by_kind(objs, "ScaledObject").values()
    spec = so["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment(objs, "worker")["metadata"]["name"]
    assert spec["maxReplicaCount"] == cfg.topics.partitions
    assert spec["minReplicaCount"] == 1
    [trig] = spec["triggers"]
    assert trig["type"] == "kafka"
    md = trig["metadata"]
    assert md["bootstrapServers"] == cfg.kafka.bootstrap_servers
    assert md["consumerGroup"] == cfg.worker.group_id
    assert md["topic"] == cfg.topics.frames
    assert md["lagThreshold"] == "50"
    assert md["allowIdleConsumers"] == "false"
    assert md["sasl"] == "scram_sha512" and md["tls"] == "enable"  # SASL_SSL, SCRAM-SHA-512
    [auth] = by_kind(objs, "TriggerAuthentication").values()
    assert trig["authenticationRef"]["name"] == auth["metadata"]["name"]
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    env = secret_env(objs)
    # KEDA authenticates as the workers do: the same Secret keys
    assert refs["username"] == env["KAFKA_USERNAME"]
    assert refs["password"] == env["KAFKA_PASSWORD"]
    assert refs["ca"] == ("inspector-secrets", "kafka-ca.pem")
    validate_all(objs)


def test_plaintext_kafka_scales_without_trigger_authentication(tmp_path: Path) -> None:
    values = tmp_path / "plaintext.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "config": {
                    "kafka": {
                        "bootstrap_servers": "kafka:9092",
                        "security_protocol": "PLAINTEXT",
                        "sasl_mechanism": None,
                        "sasl_username": None,
                        "sasl_password": None,
                        "ssl_ca_location": None,
                    }
                },
                "secret": {"env": {"KAFKA_USERNAME": None, "KAFKA_PASSWORD": None}},
            }
        )
    )
    objs = render("-f", str(values))
    assert not by_kind(objs, "TriggerAuthentication")
    [so] = by_kind(objs, "ScaledObject").values()
    [trig] = so["spec"]["triggers"]
    assert "authenticationRef" not in trig and "sasl" not in trig["metadata"]
    assert trig["metadata"]["tls"] == "disable"
    assert "KAFKA_PASSWORD" not in secret_env(objs)
    assert loaded_config(objs).kafka.security_protocol == "PLAINTEXT"
    validate_all(objs)


def test_autoscaling_off_gives_the_workers_a_fixed_replica_count() -> None:
    objs = render("--set", "worker.autoscaling.enabled=false", "--set", "worker.replicas=3")
    assert not by_kind(objs, "ScaledObject") and not by_kind(objs, "TriggerAuthentication")
    assert deployment(objs, "worker")["spec"]["replicas"] == 3
    validate_all(objs)


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("variant", [(), CPU], ids=["gpu", "cpu"])
def test_secrets_come_only_from_kubernetes_secrets(variant: tuple[str, ...]) -> None:
    objs = render(*variant)
    env = pod_env(objs)
    assert set(env) == set(SAMPLE_SECRETS)
    for stage in STAGES:
        c = container(deployment(objs, stage))
        assert "envFrom" not in c
        for e in c["env"]:
            if e["name"] in SAMPLE_SECRETS:
                assert set(e) == {"name", "valueFrom"}, e
                assert e["valueFrom"]["secretKeyRef"]["name"] == "inspector-secrets"
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["secret-files"]["readOnly"] is True
        vols = {
            v["name"]: v for v in deployment(objs, stage)["spec"]["template"]["spec"]["volumes"]
        }
        assert vols["secret-files"]["secret"]["secretName"] == "inspector-secrets"
        keys = {i["key"] for i in vols["secret-files"]["secret"]["items"]}
        assert keys == {"kafka-ca.pem", "redis-ca.pem", "store-keys"}

    # The plant config loads with nothing but the pods' secret environment, and every
    # secret field of it (SecretStr) holds a value that came from the Secret.
    cfg = loaded_config(objs)
    _, secrets = dump_config(cfg)
    assert secrets, "the default plant has secrets"
    assert set(secrets.values()) <= set(env.values()), secrets
    assert cfg.redis.url == env["REDIS_URL"]  # the URL may carry a password: from the Secret
    assert cfg.frames.encryption.keys_file == "/etc/inspector/secrets/store-keys"

    for cm in by_kind(objs, "ConfigMap").values():
        text = yaml.safe_dump(cm)
        for name, value in SAMPLE_SECRETS.items():
            assert value not in text, f"{name}'s value is in ConfigMap {cm['metadata']['name']}"
        data = yaml.safe_load(cm["data"]["plant.yaml"])
        for path, value in walk(data):
            leaf = path.rsplit(".", 1)[-1]
            if any(w in leaf for w in ("password", "token", "secrets")) and value:
                assert all(
                    str(v).startswith("${") for v in (value if isinstance(value, list) else [value])
                ), f"{path} in the ConfigMap is not a ${{NAME}} reference"


def test_more_sinks_need_a_shared_catalog_not_the_volume() -> None:
    err = render_error(*SINK, "--set", "sink.replicas=2")
    assert "sink.replicas > 1 needs a shared catalog" in err


def _values() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


def _example() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values-plc-mqtt.yaml").read_text()))


def _with_target(**fields: Any) -> dict[str, Any]:
    """config.bridge of the example with its OPC UA target changed (a None removes)."""
    bridge = _example()["config"]["bridge"]
    target = bridge["targets"][0]
    for key, value in fields.items():
        node, _, leaf = key.rpartition(".")
        where = target[node] if node else target
        if value is None:
            where.pop(leaf)
        else:
            where[leaf] = value
    return {"config": {"bridge": bridge}}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            _with_target(password="plc-s3cret"),
            "config.bridge.targets[0].password must be a ${NAME}",
        ),
        (
            _with_target(**{"security.private_key_password": "k3y"}),
            "config.bridge.targets[0].security.private_key_password must be a ${NAME}",
        ),
        ({"config": {"mqtt": {"password": "hunter2"}}}, "config.mqtt.password must be a ${NAME}"),
        (
            _with_target(**{"security.private_key": "/etc/inspector/plc-key.pem"}),
            "config.bridge.targets[0].security.private_key is /etc/inspector/plc-key.pem: "
            "certificates and keys reach the pods only through secret.files",
        ),
        (
            {"config": {"mqtt": {"ca_file": "/etc/inspector/secrets/other-ca.pem"}}},
            "config.mqtt.ca_file is /etc/inspector/secrets/other-ca.pem: certificates and keys",
        ),
        ({"config": {"bridge": {"targets": []}}}, "config.bridge.targets is empty with bridge."),
        ({"config": {"bridge": {"port": 0}}}, "config.bridge.port must be a port 1-65535"),
        ({"config": {"mqtt": {"metrics_port": 0}}}, "config.mqtt.metrics_port must be a port"),
        ({"config": {"mqtt": None}}, "config.mqtt is required with mqtt.enabled"),
        ({"mqtt": {"replicas": 2}}, "mqtt.replicas > 1: config.mqtt.client_id"),
    ],
    ids=[
        "plc-password",
        "key-password",
        "mqtt-password",
        "key-not-mounted",
        "ca-not-in-files",
        "no-targets",
        "bridge-port-0",
        "mqtt-port-0",
        "no-mqtt-section",
        "two-publishers",
    ],
)
def test_chart_refuses_literal_plc_and_mqtt_secrets_and_unmounted_keys(
    values: dict[str, Any], message: str, tmp_path: Path
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    err = render_error(*PLC_MQTT, "-f", str(path))
    assert message in err, err
    assert len([ln for ln in err.strip().splitlines() if ln.startswith("Error")]) == 1


def test_literal_plc_and_mqtt_secrets_are_refused_with_the_pods_off(tmp_path: Path) -> None:
    """The plant config is rendered into the ConfigMap whether or not its stage runs."""
    path = tmp_path / "values.yaml"
    values = {**_with_target(password="plc-s3cret"), "bridge": {"enabled": False}}
    path.write_text(yaml.safe_dump(values))
    err = render_error("-f", str(path))
    assert "config.bridge.targets[0].password must be a ${NAME}" in err


def _with_workflow_secret(secret: str) -> dict[str, Any]:
    workflows = _values()["config"]["workflows"]
    workflows[2]["secrets"] = [secret]
    return {"workflows": workflows}


def _with_camera_url(url: str) -> dict[str, Any]:
    lines = _values()["config"]["lines"]
    lines[0]["cameras"][0]["url"] = url
    return {"lines": lines}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kafka": {"sasl_password": "hunter2"}}, "config.kafka.sasl_password must be a ${NAME}"),
        (
            {"kafka": {"sasl_password": "${KAFKA_PASSWORD:-hunter2}"}},
            "config.kafka.sasl_password must be a ${NAME}",
        ),
        ({"kafka": {"ssl_key_password": "k3y"}}, "config.kafka.ssl_key_password must be a"),
        ({"redis": {"password": "hunter2"}}, "config.redis.password must be a ${NAME}"),
        ({"observe": {"dashboard_token": "t0ken"}}, "config.observe.dashboard_token must be a"),
        (
            _with_workflow_secret("whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"),
            "config.workflows[2].secrets[0] must be a ${NAME}",
        ),
        ({"redis": {"url": "redis://:pw@redis:6379/0"}}, "config.redis.url holds credentials"),
        (
            _with_camera_url("rtsp://admin:pw@10.0.0.1/s"),
            "config.lines[0].cameras[0].url holds a password",
        ),
        (
            {"observe": {"metrics_host": "127.0.0.1"}},
            "config.observe.metrics_host must be 0.0.0.0",
        ),
        ({"observe": {"worker_port": 0}}, "config.observe.worker_port must be a port 1-65535"),
        ({"kafka": {"bootstrap_servers": "${KAFKA}"}}, "bootstrap_servers must be literal"),
        ({"kafka": {"sasl_mechanism": "GSSAPI"}}, "KEDA's kafka scaler takes PLAIN"),
        (
            {"lake": {"catalog_uri": "postgresql+psycopg2://lake:pw@db/lake"}},
            "config.lake.catalog_uri holds a password",
        ),
        (
            {"lake": {"warehouse": "s3://b/p", "s3": {"secret_access_key": "plain"}}},
            "config.lake.s3.secret_access_key must be a ${NAME} reference",
        ),
        ({"lake": {"data_dir": "lake"}}, "config.lake.data_dir must be an absolute path"),
        (
            {"learn": {"registry": {"uri": "https://ci:s3cret@mlflow.plant.local"}}},
            "config.learn.registry.uri holds a password",
        ),
        (
            {"models": {"default": {"path": "models:/inspector-detector@champion"}}},
            "config.models.default.path follows the registry",
        ),
        ({"lake": {"port": 0}}, "config.lake.port must be a port 1-65535"),
    ],
)
def test_chart_refuses_secret_values_and_unprobeable_configs(
    config: dict[str, Any], message: str, tmp_path: Path
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"config": config}))
    err = render_error("-f", str(values), *(SINK if "lake" in config else ()))
    assert message in err, err
    assert len([ln for ln in err.strip().splitlines() if ln.startswith("Error")]) == 1


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("variant", [(), CPU, PLC_MQTT], ids=["gpu", "cpu", "plc-mqtt"])
def test_rendered_config_passes_inspector_config_check(
    variant: tuple[str, ...], tmp_path: Path
) -> None:
    """The real CLI on the ConfigMap's plant.yaml, in an environment holding only what
    the pods get from the Secret (no INSPECTOR__ overrides, nothing else)."""
    objs = render(*variant)
    path = tmp_path / "plant.yaml"
    path.write_text(plant_yaml(objs))
    base = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "HOME", "LANG") if k in os.environ}
    proc = subprocess.run(
        [sys.executable, "-m", "inspector", "config", "check", str(path)],
        env={**base, **pod_env(objs)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK — plant 'stuttgart-2', 1 lines, 2 cameras, 3 workflows" in proc.stdout
    # and without the Secret the same file is refused, naming the missing variable
    proc = subprocess.run(
        [sys.executable, "-m", "inspector", "config", "check", str(path)],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "environment variable KAFKA_PASSWORD is not set" in proc.stdout + proc.stderr


def test_workers_follow_a_registry_server_with_credentials_from_the_secret(
    tmp_path: Path,
) -> None:
    """The registry values: workers following an alias on an MLflow server, MLflow's
    credentials from the Secret (never in the ConfigMap), the model cache on /tmp."""
    values = tmp_path / "registry.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "secret": {
                    "env": {
                        "MLFLOW_TRACKING_USERNAME": "mlflow-username",
                        "MLFLOW_TRACKING_PASSWORD": "mlflow-password",
                    }
                },
                "config": {
                    "models": {"default": {"path": "models:/inspector-detector@champion"}},
                    "learn": {"registry": {"uri": "https://mlflow.plant.local"}},
                },
            }
        )
    )
    objs = render("-f", str(values))
    validate_all(objs)
    env = {e["name"]: e for e in container(deployment(objs, "worker"))["env"]}
    for name, key in [
        ("MLFLOW_TRACKING_USERNAME", "mlflow-username"),
        ("MLFLOW_TRACKING_PASSWORD", "mlflow-password"),
    ]:
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] == key, env[name]
    cfg = loaded_config(objs)
    assert cfg.learn.registry.uri == "https://mlflow.plant.local"
    assert cfg.models["default"].path == "models:/inspector-detector@champion"
    assert cfg.learn.data_dir.startswith("/tmp/")  # the pods' emptyDir: the root is read-only


# --------------------------------------------------------------------------- validators


def _bad(objs: list[Obj]) -> list[tuple[str, Obj, Any]]:
    worker = deployment(objs, "worker")
    [so] = by_kind(objs, "ScaledObject").values()
    [auth] = by_kind(objs, "TriggerAuthentication").values()
    pdb = by_kind(objs, "PodDisruptionBudget")[f"{RELEASE}-act"]
    c: list[str | int] = ["spec", "template", "spec", "containers", 0]
    md: list[str | int] = ["spec", "triggers", 0, "metadata"]
    return [
        ("unknown container field", mutated(worker, [*c, "livenesProbe"], {}), validate_core),
        ("port as a list", mutated(worker, [*c, "ports", 0, "containerPort"], [1]), validate_core),
        ("bad strategy", mutated(worker, ["spec", "strategy", "type"], 1), validate_core),
        ("pdb typo", mutated(pdb, ["spec", "minAvaliable"], 1), validate_core),
        ("max replicas as text", mutated(so, ["spec", "maxReplicaCount"], "12"), validate_crd),
        ("unknown spec field", mutated(so, ["spec", "maxReplicas"], 12), validate_crd),
        ("lag as a number", mutated(so, [*md, "lagThreshold"], 50), validate_crd),
        ("no scale target", mutated(so, ["spec", "scaleTargetRef"], {}), validate_crd),
        (
            "metadata typo",
            mutated(so, [*md, "lagThreshhold"], "50"),
            validate_kafka_trigger,
        ),
        ("sasl enum", mutated(so, [*md, "sasl"], "scram-sha-512"), validate_kafka_trigger),
        (
            "auth parameter",
            mutated(auth, ["spec", "secretTargetRef", 0, "parameter"], "user"),
            validate_kafka_trigger,
        ),
    ]


def test_validators_reject_broken_objects() -> None:
    """The schema checks bite: each broken copy of a rendered object is rejected."""
    for what, obj, check in _bad(render()):
        with pytest.raises(AssertionError):
            check(obj)
            pytest.fail(f"{what}: accepted")
