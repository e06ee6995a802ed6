"""The Helm chart agrees with the CLI, the image (deploy/Dockerfile) and the config
loader: each stage's command exists and takes --config, the config file is where the
ConfigMap is mounted, the ports are the config's, and the pods run as the image's user
with a writable cache on a read-only root. (tests/test_helm.py renders and validates.)"""

from __future__ import annotations

import re

import typer
import yaml

from inspector.cli import app
from tests.helmchart import (
    CHART,
    OPTIONAL,
    PLC_MQTT,
    REPO,
    SINK,
    STAGES,
    container,
    deployment,
    render,
)

DOCKERFILE = (REPO / "deploy" / "Dockerfile").read_text()
MAKEFILE = (REPO / "Makefile").read_text()


EVERY_STAGE = (*SINK, *PLC_MQTT)  # every Deployment the chart can render


def test_each_stage_runs_a_cli_command_with_the_mounted_config() -> None:
    objs = render(*EVERY_STAGE)
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for stage in (*STAGES, *OPTIONAL):
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
    for stage in (*STAGES, *OPTIONAL):
        dep = deployment(render(*EVERY_STAGE), stage)
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


def test_the_chart_renders_every_optional_stage_the_tests_cover() -> None:
    """A stage added to the chart must be added here too (and so to the checks above)."""
    deps = {d["metadata"]["name"] for d in render(*EVERY_STAGE) if d["kind"] == "Deployment"}
    assert deps == {f"inspector-{s}" for s in (*STAGES, *OPTIONAL)}


def _makefile_var(name: str) -> str:
    m = re.search(rf"^{name} :?= (.+?)$", MAKEFILE, re.M | re.S)
    assert m, f"Makefile has no {name}"
    return m.group(1)


def test_the_image_can_read_gige_cameras_like_the_venv() -> None:
    """deploy/Dockerfile installs what gige:// cameras need — Debian's python3-gi and
    gir1.2-aravis-0.8, as the Makefile's APT_PACKAGES — and exposes Debian's `gi` to
    the image's Python with venv-gi's .pth (only the gi package, the same folder), and
    checks at build time that Aravis 0.8 imports. Static: no image is built here."""
    apt_packages = set(
        re.search(r"^APT_PACKAGES := ((?:.*\\\n)*.*)$", MAKEFILE, re.M)
        .group(1)  # type: ignore[union-attr]
        .replace("\\\n", " ")
        .split()
    )
    installs = re.findall(r"apt-get install -y --no-install-recommends ([^\\\n&]+)", DOCKERFILE)
    image_packages = {p for line in installs for p in line.split()}
    for pkg in ("python3-gi", "gir1.2-aravis-0.8"):
        assert pkg in apt_packages, f"{pkg} is not in the Makefile's APT_PACKAGES"
        assert pkg in image_packages, f"deploy/Dockerfile does not install {pkg}"
    gi_dir = _makefile_var("GI_DIR").strip()
    venv_gi = MAKEFILE.split("\nvenv-gi:", 1)[1].split("\n\n", 1)[0]
    for part in ("_debian_gi/gi", "echo _debian_gi > ", "/debian_gi.pth"):
        assert part in venv_gi and part in DOCKERFILE, part
    assert f"ln -sfn {gi_dir} " in DOCKERFILE
    assert "from gi.repository import Aravis" in DOCKERFILE.split("debian_gi.pth", 1)[1]
    # the link is made before USER drops root (site-packages is root's), and the base is
    # CPython 3.11 on bookworm: the minor version Debian's _gi extension is built for
    assert DOCKERFILE.index("debian_gi.pth") < DOCKERFILE.index("\nUSER ")
    assert re.search(r"^FROM python:3\.11-[a-z-]*bookworm$", DOCKERFILE, re.M)
