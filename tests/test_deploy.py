"""The Helm chart agrees with the CLI, the image (deploy/Dockerfile) and the config
loader: each stage's command exists and takes --config, the config file is where the
ConfigMap is mounted, the ports are the config's, and the pods run as the image's user
with a writable cache on a read-only root. (tests/test_helm.py renders and validates.)"""

from __future__ import annotations

import re

import typer
import yaml

from inspector.cli import app
from tests.helmchart import CHART, REPO, SINK, STAGES, container, deployment, render

DOCKERFILE = (REPO / "deploy" / "Dockerfile").read_text()


def test_each_stage_runs_a_cli_command_with_the_mounted_config() -> None:
    objs = render(*SINK)
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for stage in (*STAGES, "sink"):
        dep = deployment(objs, stage)
        c = container(dep)
        cmd, flag, path = c["args"][:3]
        assert cmd in commands, f"{stage}: `inspector {cmd}` does not exist"
        assert flag in {o for p in commands[cmd].params for o in p.opts if p.name == "config"}
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        [(vol, mount)] = [(n, p) for n, p in mounts.items() if path.startswith(p + "/")]
        assert vols[vol]["configMap"]["name"] == "inspector-plant"
        assert path.removeprefix(mount + "/") == "plant.yaml"


def test_pods_run_as_the_image_user_with_a_writable_cache() -> None:
    user = re.search(r"^USER (\d+)$", DOCKERFILE, re.M)
    entry = re.search(r"^ENTRYPOINT (.+)$", DOCKERFILE, re.M)
    assert user and entry
    assert yaml.safe_load(entry.group(1)) == ["inspector"]  # the chart's args are subcommands
    cache_env = re.search(r"INSPECTOR_CACHE_DIR=(\S+)", DOCKERFILE)
    assert cache_env
    for stage in (*STAGES, "sink"):
        dep = deployment(render(*SINK), stage)
        pod = dep["spec"]["template"]["spec"]
        c = container(dep)
        assert pod["securityContext"]["runAsUser"] == int(user.group(1))
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        env = {e["name"]: e.get("value") for e in c["env"]}
        writable = [m["mountPath"] for m in c["volumeMounts"] if m["name"] == "tmp"]
        vols = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in vols["tmp"]
        for var in ("INSPECTOR_CACHE_DIR", "YOLO_CONFIG_DIR"):
            assert any(env[var].startswith(w + "/") for w in writable), (stage, var)
    # the image's own default agrees, for `docker run` outside the chart
    assert cache_env.group(1).startswith("/tmp/")


def test_kustomize_manifests_are_gone_and_the_readme_points_at_the_chart() -> None:
    assert not (REPO / "deploy" / "k8s").exists(), "deploy/k8s is replaced by the chart"
    readme = (REPO / "README.md").read_text()
    assert "deploy/k8s" not in readme
    assert "helm template inspector deploy/helm/inspector" in readme
    assert (CHART / "values-cpu.yaml").is_file()
