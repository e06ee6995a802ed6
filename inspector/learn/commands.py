"""CLI of the learn stage: ``inspector models list | show | register | promote | rollback``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from inspector.commandline import ConfigOpt, fail, load_or_exit

models_app = typer.Typer(help="Model registry: versions, champion, rollback.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    models_app.command("list")(list_cmd)
    models_app.command("show")(show_cmd)
    models_app.command("register")(register_cmd)
    models_app.command("promote")(promote_cmd)
    models_app.command("rollback")(rollback_cmd)


def _registry(config: Path):  # type: ignore[no-untyped-def]
    from inspector.registry import Registry, RegistryUnavailable

    cfg = load_or_exit(config)
    try:
        reg = Registry(cfg.learn)
        reg.check()
    except RegistryUnavailable as exc:
        raise fail(str(exc), 1) from None
    return cfg, reg


def list_cmd(
    config: Path = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per version."),
) -> None:
    """Every registered version, oldest first, with its aliases."""
    from inspector.registry import RegistryError

    _cfg, reg = _registry(config)
    try:
        versions = reg.versions()
    except RegistryError as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        for v in versions:
            typer.echo(json.dumps(v.summary()))
        return
    if not versions:
        typer.echo(f"no versions of {reg.name} registered yet")
        return
    typer.echo(f"{'version':>7}  {'aliases':<22} {'sha256':<14} {'mAP50':>6}  registered")
    for v in versions:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(v.created_at))
        m = v.metrics.get("mAP50")
        typer.echo(
            f"{v.version:>7}  {','.join(v.aliases) or '-':<22} {v.sha256[:12]:<14} "
            f"{'' if m is None else f'{m:.3f}':>6}  {when}Z"
        )


def show_cmd(
    ref: str = typer.Argument(..., help="A version number or an alias (champion, ...)."),
    config: Path = ConfigOpt,
) -> None:
    """One version as JSON: hashes, classes, input size, metrics, aliases."""
    from inspector.registry import RegistryError

    _cfg, reg = _registry(config)
    try:
        v = reg.get(ref) if ref.isdigit() else reg.by_alias(ref)
    except RegistryError as exc:
        raise fail(str(exc), 1) from None
    typer.echo(json.dumps(v.summary(), indent=2))


def register_cmd(
    model: str = typer.Argument(..., help="A .onnx/.pt file, an OpenVINO dir or builtin:NAME."),
    config: Path = ConfigOpt,
    data: Path | None = typer.Option(None, "--data", help="Training data (hashed into the card)."),
    metric: list[str] = typer.Option([], "--metric", help="name=value, repeatable."),
    description: str = typer.Option("", "--description"),
    promote_to: str | None = typer.Option(
        None, "--alias", help="Also point this alias at the new version (e.g. challenger)."
    ),
) -> None:
    """Check that the model loads as a worker would load it, then register it."""
    from inspector.bus.kafka import DeliveryFailed, ServiceUnavailable
    from inspector.detect.model import ModelError
    from inspector.learn.lifecycle import promote, register_model
    from inspector.registry import RegistryError

    metrics: dict[str, float] = {}
    for m in metric:
        k, sep, v = m.partition("=")
        try:
            metrics[k.strip()] = float(v)
        except ValueError:
            raise fail(f"--metric {m!r}: expected name=number", 2) from None
        if not sep or not k.strip():
            raise fail(f"--metric {m!r}: expected name=number", 2)
    cfg, reg = _registry(config)
    try:
        mv = register_model(cfg, reg, model, data=data, metrics=metrics, description=description)
        typer.echo(f"registered {mv.name} version {mv.version} (sha256 {mv.sha256[:12]})")
        if promote_to:
            before = promote(cfg, reg, mv.version, promote_to)
            typer.echo(f"@{promote_to}: {before or '-'} -> {mv.version}")
    except ModelError as exc:
        raise fail(f"model refused: {exc}", 2) from None
    except (RegistryError, ServiceUnavailable, DeliveryFailed) as exc:
        raise fail(str(exc), 1) from None


def promote_cmd(
    version: str = typer.Argument(..., help="The version to promote."),
    config: Path = ConfigOpt,
    alias: str = typer.Option("champion", "--alias", help="champion, challenger, ..."),
) -> None:
    """Point an alias at a version; workers following it swap without a restart."""
    from inspector.bus.kafka import DeliveryFailed, ServiceUnavailable
    from inspector.learn.lifecycle import promote
    from inspector.registry import RegistryError

    cfg, reg = _registry(config)
    try:
        before = promote(cfg, reg, version, alias)
    except (RegistryError, ServiceUnavailable, DeliveryFailed) as exc:
        raise fail(str(exc), 1) from None
    typer.echo(f"@{alias}: {before or '-'} -> {version}")


def rollback_cmd(
    config: Path = ConfigOpt,
    alias: str = typer.Option("champion", "--alias"),
) -> None:
    """Point an alias back at the version it named before its last move."""
    from inspector.bus.kafka import DeliveryFailed, ServiceUnavailable
    from inspector.learn.lifecycle import rollback
    from inspector.registry import RegistryError

    cfg, reg = _registry(config)
    try:
        current, previous = rollback(cfg, reg, alias)
    except (RegistryError, ServiceUnavailable, DeliveryFailed) as exc:
        raise fail(str(exc), 1) from None
    typer.echo(f"@{alias}: {current} -> {previous} (rolled back)")
