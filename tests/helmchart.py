"""Render deploy/helm/inspector with the real `helm template`, and validate what it
renders offline: core objects against the Kubernetes OpenAPI schemas that the
kubernetes-validate package bundles, KEDA's objects against the openAPIV3Schema of
KEDA's own CRDs and its Kafka scaler's parameter list (both from the kedacore/keda Go
module, copied into .cache/keda by `make setup`).

helm and KEDA's files are installed by `make setup`; when they are missing the tests
fail with a line that says so (never a silent skip).
"""

from __future__ import annotations

import copy
import re
import subprocess
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

# kubernetes-validate reads and parses its schema files (MBs of JSON) on every call;
# parse each once per session (it never changes what they hold).
kubernetes_validate.utils.schema_contents = cache(kubernetes_validate.utils.schema_contents)

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "inspector"
RELEASE = "inspector"
NAMESPACE = "inspector"
STAGES = ("ingest", "worker", "act", "dashboard")
SINK = ("--set", "sink.enabled=true")  # the lakehouse sink, off by default
# the PLC bridge and the MQTT publisher (off by default), from the chart's example file
PLC_MQTT = ("-f", str(CHART / "values-plc-mqtt.yaml"))
OPTIONAL = ("sink", "bridge", "mqtt")  # stages a release may add to STAGES
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest
# schema set kubernetes-validate bundles: every object must pass both.
KUBE_VERSIONS = ("1.27", "1.37")

Obj = dict[str, Any]


def _make_var(name: str) -> str:
    m = re.search(rf"^{name} := (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert m, f"Makefile has no {name}"
    return m.group(1)


def helm_binary() -> Path:
    version = _make_var("HELM_VERSION")
    path = REPO / ".cache" / "helm" / version / "helm"
    if not path.is_file():
        pytest.fail(
            f"helm {version} is not installed at {path.relative_to(REPO)}: run `make setup` "
            "(it builds helm from its Go module with the Go toolchain)",
            pytrace=False,
        )
    return path


def keda_dir() -> Path:
    version = _make_var("KEDA_VERSION")
    path = REPO / ".cache" / "keda" / version
    if not (path / "kafka_scaler.go").is_file():
        pytest.fail(
            f"KEDA {version}'s CRDs are not in {path.relative_to(REPO)}: run `make setup` "
            "(it takes them from the kedacore/keda Go module)",
            pytrace=False,
        )
    return path


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(helm_binary()), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def lint(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(helm_binary()), "lint", "--strict", str(CHART), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


@cache
def _render_cached(args: tuple[str, ...]) -> str:
    proc = _helm(*args)
    assert proc.returncode == 0, f"helm template {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def render(*args: str) -> list[Obj]:
    """The objects `helm template` renders with these extra arguments (-f, --set)."""
    docs = yaml.safe_load_all(_render_cached(tuple(args)))
    return [d for d in docs if d]


def render_error(*args: str) -> str:
    """helm template's stderr for arguments that must make it refuse to render."""
    proc = _helm(*args)
    assert proc.returncode != 0, f"helm template {' '.join(args)} rendered; expected a refusal"
    return proc.stderr


def by_kind(objs: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def deployment(objs: list[Obj], stage: str) -> Obj:
    return by_kind(objs, "Deployment")[f"{RELEASE}-{stage}"]


def container(dep: Obj) -> Obj:
    [c] = dep["spec"]["template"]["spec"]["containers"]
    return c


def plant_yaml(objs: list[Obj]) -> str:
    return str(by_kind(objs, "ConfigMap")[f"{RELEASE}-plant"]["data"]["plant.yaml"])


def secret_env(objs: list[Obj]) -> dict[str, tuple[str, str]]:
    """Environment variables every stage takes from a Secret: name -> (secret, key),
    asserting that all stages take the same ones."""
    seen: dict[str, tuple[str, str]] | None = None
    deps = by_kind(objs, "Deployment")
    for stage in [*STAGES, *(s for s in OPTIONAL if f"{RELEASE}-{s}" in deps)]:
        env = {
            e["name"]: (
                e["valueFrom"]["secretKeyRef"]["name"],
                e["valueFrom"]["secretKeyRef"]["key"],
            )
            for e in container(deployment(objs, stage)).get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert seen is None or env == seen, f"{stage} takes other secrets than the rest"
        seen = env
    assert seen is not None
    return seen


# --------------------------------------------------------------------------- schemas


def validate_core(obj: Obj) -> None:
    """Strict: an unknown field anywhere is an error, as with kubectl's strict validation."""
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            raise AssertionError(
                f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}) at {path}: "
                f"{exc.message}"
            ) from None


def _closed(schema: Any) -> Any:
    """A CRD schema made strict: the API server prunes or (fieldValidation=Strict)
    rejects fields a structural schema does not name, so an object with properties and
    no x-kubernetes-preserve-unknown-fields takes no others."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@cache
def crd_schemas() -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) -> the strict openAPIV3Schema of each served KEDA version."""
    out: dict[tuple[str, str], Obj] = {}
    for name in ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml"):
        crd = yaml.safe_load((keda_dir() / name).read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            if v.get("served"):
                schema = _closed(v["schema"]["openAPIV3Schema"])
                # metadata is the API server's: {type: object} in the CRD
                schema["properties"]["metadata"] = {"type": "object"}
                out[(f"{group}/{v['name']}", kind)] = schema
    return out


def validate_crd(obj: Obj) -> None:
    schema = crd_schemas().get((obj["apiVersion"], obj["kind"]))
    assert schema is not None, f"no CRD schema for {obj['apiVersion']} {obj['kind']}"
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
    assert not errors, "; ".join(
        f"{obj['kind']}/{obj['metadata']['name']} at {'/'.join(map(str, e.path))}: {e.message}"
        for e in errors
    )


@cache
def kafka_scaler_params() -> dict[str, Mapping[str, Any]]:
    """KEDA's Kafka scaler parameters from its source's `keda:"..."` struct tags:
    name -> {"order": {"triggerMetadata", "authParams", ...}, "enum": [...] or None}."""
    src = (keda_dir() / "kafka_scaler.go").read_text()
    out: dict[str, Mapping[str, Any]] = {}
    for tag in re.findall(r'keda:"([^"]+)"', src):
        fields = dict(f.strip().split("=", 1) for f in tag.split(",") if "=" in f)
        out[fields["name"]] = {
            "order": set(fields.get("order", "").split(";")),
            "enum": fields["enum"].split(";") if "enum" in fields else None,
        }
    assert {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} <= set(out)
    return out


def validate_kafka_trigger(obj: Obj) -> None:
    """Every trigger metadata key is one KEDA's Kafka scaler reads from the trigger, with
    an allowed value; every TriggerAuthentication parameter one it reads from auth."""
    params = kafka_scaler_params()
    if obj["kind"] == "ScaledObject":
        for trig in obj["spec"]["triggers"]:
            assert trig["type"] == "kafka"
            for key, value in trig["metadata"].items():
                p = params.get(key)
                assert p is not None and "triggerMetadata" in p["order"], (
                    f"kafka trigger metadata {key!r} is not a KEDA kafka scaler parameter"
                )
                assert p["enum"] is None or value in p["enum"], (
                    f"kafka trigger {key}={value!r}: KEDA takes one of {p['enum']}"
                )
    elif obj["kind"] == "TriggerAuthentication":
        for ref in obj["spec"].get("secretTargetRef", []):
            p = params.get(ref["parameter"])
            assert p is not None and "authParams" in p["order"], (
                f"TriggerAuthentication parameter {ref['parameter']!r} is not a kafka auth param"
            )


def validate_all(objs: list[Obj]) -> None:
    for obj in objs:
        if obj["apiVersion"].startswith("keda.sh/"):
            validate_crd(obj)
            validate_kafka_trigger(obj)
        else:
            validate_core(obj)


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]")


def mutated(obj: Obj, path: list[str | int], value: Any) -> Obj:
    out = copy.deepcopy(obj)
    node: Any = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out
