"""MLflow's model registry behind a small API that speaks inspector's terms.

A version's files are the artifacts of one MLflow run (``model/`` in that run); the
version's tags say which file to load (``entry``), its sha256, classes and input size,
and the hash of the data it was trained on. ``fetch`` downloads a version into a
content-addressed cache and refuses it when the entry file's sha256 differs from the
registered one (a corrupt or swapped file is never loaded).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from inspector.config import LearnSettings

log = logging.getLogger(__name__)

HISTORY_TAG = "inspector.alias_history.{alias}"
HISTORY_MAX = 50
_URI = re.compile(
    r"^models:/(?P<name>[A-Za-z0-9._-]{1,200})(?:@(?P<alias>[A-Za-z0-9_-]{1,64})|/(?P<version>[0-9]{1,9}))$"
)


class RegistryError(Exception):
    """A request the registry answered with a refusal (unknown version, no history)."""


class RegistryUnavailable(RegistryError):
    """The registry cannot be reached or read."""


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` → (name, alias, None); ``models:/name/3`` → (name, None, "3")."""
    m = _URI.match(uri)
    if not m:
        raise RegistryError(
            f"not a registry model URI: {uri!r} (expected models:/<name>@<alias> or "
            "models:/<name>/<version>)"
        )
    return m["name"], m["alias"], m["version"]


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    entry: str
    sha256: str
    classes: list[str]
    imgsz: int | None
    data_sha256: str | None
    run_id: str
    created_at: float
    aliases: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    description: str = ""

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "aliases": self.aliases,
            "entry": self.entry,
            "sha256": self.sha256,
            "classes": self.classes,
            "imgsz": self.imgsz,
            "data_sha256": self.data_sha256,
            "metrics": self.metrics,
            "created_at": self.created_at,
            "run_id": self.run_id,
            "description": self.description,
        }


def _configure_mlflow_env(timeout_s: float) -> None:
    # No phone-home from a plant's workers, and a server that is down answers in seconds,
    # not after MLflow's default seven retries with exponential backoff.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = os.environ.get("INSPECTOR_MLFLOW_RETRIES", "1")
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, round(timeout_s)))


class Registry:
    def __init__(self, settings: LearnSettings) -> None:
        _configure_mlflow_env(settings.registry.timeout_s)
        from mlflow.tracking import MlflowClient

        self.settings = settings
        self.uri = settings.registry_uri()
        self.name = settings.registry.model_name
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    # ------------------------------------------------------------------ errors

    @contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        from mlflow.exceptions import MlflowException

        try:
            yield
        except RegistryError:
            raise
        except MlflowException as exc:
            code = getattr(exc, "error_code", "")
            text = " ".join(str(exc).split())[:500]
            if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise RegistryError(f"registry {self.where}: {what}: {text}") from None
            raise RegistryUnavailable(
                f"registry {self.where} unavailable ({what}): {text}"
            ) from None
        except (OSError, ConnectionError) as exc:
            raise RegistryUnavailable(
                f"registry {self.where} unavailable ({what}): {type(exc).__name__}: {exc}"
            ) from None
        except Exception as exc:  # sqlalchemy / requests errors surface in many types
            raise RegistryUnavailable(
                f"registry {self.where} unavailable ({what}): {type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:300]}"
            ) from None

    @property
    def where(self) -> str:
        return re.sub(r"//[^/@]*@", "//***@", self.uri)  # no password in messages

    def check(self) -> None:
        """Raise RegistryUnavailable unless the registry answers a read."""
        with self._calls("listing models"):
            self.client.search_registered_models(max_results=1)

    # ------------------------------------------------------------------ reads

    def _version(self, mv: Any) -> ModelVersion:
        tags = dict(mv.tags or {})
        metrics = {
            k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")
        }
        return ModelVersion(
            name=mv.name,
            version=str(mv.version),
            entry=tags.get("entry", ""),
            sha256=tags.get("sha256", ""),
            classes=list(orjson.loads(tags.get("classes", "[]"))),
            imgsz=int(tags["imgsz"]) if tags.get("imgsz") else None,
            data_sha256=tags.get("data_sha256") or None,
            run_id=mv.run_id or "",
            created_at=(mv.creation_timestamp or 0) / 1000.0,
            aliases=sorted(getattr(mv, "aliases", []) or []),
            metrics=metrics,
            description=mv.description or "",
        )

    def aliases(self) -> dict[str, str]:
        """alias → version (search results do not carry aliases; the model does)."""
        with self._calls("reading aliases"):
            try:
                rm = self.client.get_registered_model(self.name)
            except Exception as exc:
                if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")):
                    return {}
                raise
        return {str(k): str(v) for k, v in (rm.aliases or {}).items()}

    def versions(self) -> list[ModelVersion]:
        with self._calls("listing versions"):
            found = self.client.search_model_versions(f"name='{self.name}'")
        by_version: dict[str, list[str]] = {}
        for alias, version in (self.aliases() if found else {}).items():
            by_version.setdefault(version, []).append(alias)
        out = [
            replace(v, aliases=sorted(by_version.get(v.version, [])))
            for v in (self._version(mv) for mv in found)
        ]
        return sorted(out, key=lambda v: int(v.version))

    def get(self, version: str) -> ModelVersion:
        with self._calls(f"reading version {version}"):
            return self._version(self.client.get_model_version(self.name, str(version)))

    def by_alias(self, alias: str) -> ModelVersion:
        with self._calls(f"resolving @{alias}"):
            return self._version(self.client.get_model_version_by_alias(self.name, alias))

    def resolve(self, uri: str) -> ModelVersion:
        name, alias, version = parse_model_uri(uri)
        if name != self.name:
            raise RegistryError(
                f"{uri} names model {name!r}; this plant's registry model is {self.name!r} "
                "(learn.registry.model_name)"
            )
        return self.by_alias(alias) if alias else self.get(str(version))

    def alias_history(self, alias: str) -> list[str]:
        with self._calls("reading the alias history"):
            rm = self.client.get_registered_model(self.name)
        raw = (rm.tags or {}).get(HISTORY_TAG.format(alias=alias))
        return [str(v) for v in orjson.loads(raw)] if raw else []

    # ------------------------------------------------------------------ writes

    def _experiment_id(self) -> str:
        exp_name = self.settings.registry.experiment
        exp = self.client.get_experiment_by_name(exp_name)
        if exp is not None:
            return str(exp.experiment_id)
        location = None
        if not self.uri.startswith(("http://", "https://")):
            artifacts = self.settings.artifacts_dir()
            artifacts.mkdir(parents=True, exist_ok=True)
            location = artifacts.as_uri()
        return str(self.client.create_experiment(exp_name, artifact_location=location))

    def register(
        self,
        model_dir: Path,
        *,
        entry: str,
        sha256: str,
        classes: list[str],
        imgsz: int | None,
        data_sha256: str | None = None,
        metrics: dict[str, float] | None = None,
        card: dict[str, Any] | None = None,
        description: str = "",
    ) -> ModelVersion:
        """Upload ``model_dir`` (already checked by the caller) as a new version."""
        metrics = metrics or {}
        with self._calls("registering a version"):
            try:
                self.client.get_registered_model(self.name)
            except Exception:
                self.client.create_registered_model(
                    self.name, description="inspector's defect detector"
                )
            run = self.client.create_run(
                self._experiment_id(),
                run_name=f"register-{sha256[:12]}",
                tags={"inspector.sha256": sha256},
            )
            run_id = run.info.run_id
            with tempfile.TemporaryDirectory(prefix="inspector-register-") as tmp:
                staged = Path(tmp) / "model"
                shutil.copytree(model_dir, staged)
                if card is not None:
                    (staged / "inspector-card.json").write_bytes(
                        orjson.dumps(card, option=orjson.OPT_INDENT_2)
                    )
                self.client.log_artifacts(run_id, str(staged), artifact_path="model")
            for k, v in metrics.items():
                self.client.log_metric(run_id, k, float(v))
            self.client.set_terminated(run_id)
            tags = {
                "entry": entry,
                "sha256": sha256,
                "classes": orjson.dumps(classes).decode(),
                "imgsz": str(imgsz or ""),
                "data_sha256": data_sha256 or "",
                **{f"metric.{k}": repr(float(v)) for k, v in metrics.items()},
            }
            mv = self.client.create_model_version(
                self.name,
                source=f"{run.info.artifact_uri}/model",
                run_id=run_id,
                tags=tags,
                description=description,
            )
        log.info(
            "model version registered",
            extra={"model": self.name, "version": mv.version, "sha256": sha256[:12]},
        )
        return self.get(str(mv.version))

    def set_alias(self, alias: str, version: str) -> str | None:
        """Point ``alias`` at ``version``; → the version it named before (None if new).
        The move is appended to the alias' history (for rollback)."""
        self.get(version)  # an unknown version is refused before anything moves
        with self._calls(f"moving @{alias}"):
            try:
                before: str | None = str(
                    self.client.get_model_version_by_alias(self.name, alias).version
                )
            except Exception:
                before = None
            history = self.alias_history(alias)
            if not history and before is not None:
                history = [before]
            self.client.set_registered_model_alias(self.name, alias, str(version))
            history = [*history, str(version)][-HISTORY_MAX:]
            self.client.set_registered_model_tag(
                self.name, HISTORY_TAG.format(alias=alias), orjson.dumps(history).decode()
            )
        return before

    def rollback(self, alias: str) -> tuple[str, str]:
        """Point ``alias`` back at the version it named before the last move;
        → (from, to). A registry with no earlier version for the alias refuses."""
        history = self.alias_history(alias)
        if len(history) < 2:
            raise RegistryError(f"@{alias} has no earlier version to roll back to")
        current, previous = history[-1], history[-2]
        with self._calls(f"rolling @{alias} back"):
            self.client.set_registered_model_alias(self.name, alias, previous)
            self.client.set_registered_model_tag(
                self.name, HISTORY_TAG.format(alias=alias), orjson.dumps(history[:-1]).decode()
            )
        return current, previous

    # ------------------------------------------------------------------ files

    def fetch(self, mv: ModelVersion) -> Path:
        """The version's files in the local cache (downloaded once); the entry file's
        sha256 is checked on every call: a mismatch is refused, never loaded."""
        dest = self.settings.cache_dir() / f"{mv.name}-{mv.version}-{mv.sha256[:16]}"
        entry = dest / mv.entry
        if not entry.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest.parent))
            try:
                with self._calls(f"downloading version {mv.version}"):
                    got = Path(self.client.download_artifacts(mv.run_id, "model", str(tmp)))
                if dest.exists():
                    shutil.rmtree(dest)
                got.rename(dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        actual = file_sha256(entry) if entry.exists() else "missing"
        if actual != mv.sha256:
            raise RegistryError(
                f"version {mv.version}: {mv.entry} has sha256 {actual[:16]}…, the registry "
                f"says {mv.sha256[:16]}…; refused"
            )
        return entry


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def now() -> float:
    return time.time()
