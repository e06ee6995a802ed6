"""The Kubernetes manifests agree with the CLI and the example plant config."""

from __future__ import annotations

from pathlib import Path

import yaml

from inspector.cli import app
from inspector.config import load_config

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"


def deployments() -> list[dict]:  # type: ignore[type-arg]
    out = []
    for f in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc.get("kind") == "Deployment":
                out.append(doc)
    return out


def test_manifests_match_cli_and_ports() -> None:
    env = {"MES_WEBHOOK_SECRET": "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY", "DASHBOARD_TOKEN": "t"}
    cfg = load_config(REPO / "configs" / "example-plant.yaml", env=env)
    ports = {"ingest": cfg.observe.ingest_port, "worker": cfg.observe.worker_port,
             "act": cfg.observe.act_port, "dashboard": cfg.observe.dashboard_port}
    commands = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    deps = deployments()
    assert {d["metadata"]["name"] for d in deps} == set(ports)
    kustom = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustom["resources"])
    for d in deps:
        name = d["metadata"]["name"]
        spec = d["spec"]["template"]["spec"]
        [c] = spec["containers"]
        assert c["args"][0] in commands, f"{name}: `inspector {c['args'][0]}` does not exist"
        assert c["args"][1:3] == ["--config", "/etc/inspector/plant.yaml"]
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert "/etc/inspector" in mounts
        port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            assert c[probe]["httpGet"]["path"] == path
            assert c[probe]["httpGet"]["port"] in port_names
        assert ports[name] in port_names.values(), f"{name}: port differs from the config"
        assert f"{name}.yaml" in listed
    generated = kustom["configMapGenerator"][0]["files"][0].split("=", 1)[1]
    assert (K8S / generated).resolve().exists()
