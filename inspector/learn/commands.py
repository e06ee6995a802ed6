"""CLI of the learn stage: ``inspector models list | show | register | promote | rollback``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from inspector.commandline import ConfigOpt, fail, load_or_exit

models_app = typer.Typer(help="Model registry: versions, champion, rollback.", no_args_is_help=True)


shadow_app = typer.Typer(
    help="A candidate model judging live frames beside production (never acted on).",
    invoke_without_command=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.add_typer(shadow_app, name="shadow")
    shadow_app.callback()(shadow_cmd)
    shadow_app.command("report")(shadow_report_cmd)
    app.command("archive")(archive_cmd)
    app.command("replay")(replay_cmd)
    models_app.command("list")(list_cmd)
    models_app.command("show")(show_cmd)
    models_app.command("register")(register_cmd)
    models_app.command("promote")(promote_cmd)
    models_app.command("rollback")(rollback_cmd)
    models_app.command("train")(train_cmd)


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
    from inspector.inference.model import ModelError
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


def load_candidate(cfg, model: str):  # type: ignore[no-untyped-def]
    """An alias or version from the registry (sha256-checked), or a model path."""
    from inspector.detect.follow import registry_info
    from inspector.inference.model import load_detector
    from inspector.registry import Registry

    if model.isdigit() or ("/" not in model and "." not in model and ":" not in model):
        reg = Registry(cfg.learn)
        reg.check()
        mv = reg.get(model) if model.isdigit() else reg.by_alias(model)
        path = reg.fetch(mv)
        return registry_info(load_detector(cfg.model.model_copy(update={"path": str(path)})), mv)
    return load_detector(cfg.model.model_copy(update={"path": model}))


def shadow_cmd(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", "-c", help="Plant config YAML."),
    model: str | None = typer.Option(
        None, "--model", help="Alias, version or path (default: learn.shadow.alias)."
    ),
    share: float | None = typer.Option(None, "--share", help="Share of frames (0-1]."),
) -> None:
    """Run the shadow: judge a share of live frames with a candidate, write shadow-verdicts."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        raise fail("--config is required", 2)
    from inspector.bus.kafka import ServiceUnavailable, Shutdown, check_broker
    from inspector.inference.model import ModelError
    from inspector.learn.shadow import build_shadow
    from inspector.registry import RegistryError

    cfg = load_or_exit(config)
    if share is not None:
        if not 0 < share <= 1:
            raise fail("--share must be in (0, 1]", 2)
        cfg = cfg.model_copy(
            update={
                "learn": cfg.learn.model_copy(
                    update={"shadow": cfg.learn.shadow.model_copy(update={"share": share})}
                )
            }
        )
    shutdown = Shutdown().install()
    try:
        check_broker(cfg.kafka)
        det = load_candidate(cfg, model or cfg.learn.shadow.alias)
        judge, loop = build_shadow(cfg, det, shutdown=shutdown)
    except (ServiceUnavailable, RegistryError, ModelError) as exc:
        raise fail(str(exc), 1) from None
    typer.echo(
        f"shadow: {det.info.name}/{det.info.version} on {cfg.learn.shadow.share:.0%} of frames "
        f"-> {cfg.topics.shadow_verdicts}",
        err=True,
    )
    loop.run()
    typer.echo(
        f"shadow stopped: judged {judge.stats.judged}, skipped {dict(judge.stats.skipped)}",
        err=True,
    )


def shadow_report_cmd(
    config: Path = ConfigOpt,
    since: str = typer.Option("1h", "--since", help="How far back (30m, 2h, 1d)."),
    as_json: bool = typer.Option(False, "--json"),
    flips: int = typer.Option(20, "--flips", help="How many disagreeing frames to list."),
) -> None:
    """Agreement of shadow and production verdicts, per line and class, with the flips."""
    from inspector.events import VerdictEvent
    from inspector.learn.shadow import agreement
    from inspector.observe.feed import FeedError, TopicReader, parse_duration

    cfg = load_or_exit(config)
    try:
        start = time.time() - parse_duration(since)
        prod: list[VerdictEvent] = []
        shadow: list[VerdictEvent] = []
        with TopicReader(
            cfg, ["verdicts", "shadow-verdicts"], start_s=start, client_suffix="shadow-report"
        ).open() as reader:
            for rec in reader.read_to_end(120):
                assert isinstance(rec.event, VerdictEvent)
                (shadow if rec.kind == "shadow-verdicts" else prod).append(rec.event)
    except (FeedError, ValueError) as exc:
        raise fail(str(exc), 1) from None
    rep = agreement(prod, shadow).as_dict(max_flips=flips)
    if as_json:
        typer.echo(json.dumps(rep, indent=2))
        return
    if not rep["compared"]:
        typer.echo(
            f"no shadow verdict with a production verdict since {since} "
            f"({len(shadow)} shadow verdicts)"
        )
        return
    typer.echo(
        f"shadow {rep['model']} vs production, since {since}: {rep['compared']} frames, "
        f"agreement {rep['agreement']:.1%}, new FAILs {rep['new_fails']}, "
        f"missed FAILs {rep['missed_fails']}"
    )
    typer.echo(f"{'':<10}{'scope':<20}{'frames':>7}{'agree':>8}{'new FAIL':>10}{'missed':>8}")
    for kind, rows in (("line", rep["by_line"]), ("class", rep["by_class"])):
        for name, g in rows.items():
            typer.echo(
                f"{kind:<10}{name:<20}{g['compared']:>7}{g['agreement']:>8.1%}"
                f"{g['new_fails']:>10}{g['missed_fails']:>8}"
            )
    for f in rep["flips"]:
        typer.echo(
            f"flip  {f['frame_id']}  production {f['production']} -> shadow "
            f"{f['shadow']}  [{', '.join(f['classes'])}]  "
            f"evidence: inspector evidence {f['production_verdict_id']}"
        )


def train_cmd(
    data: Path = typer.Option(..., "--data", help="YOLO data.yaml (e.g. from dataset export)."),
    out: Path = typer.Option(..., "--out", help="Folder for model.pt, model.onnx, card.json."),
    config: Path = ConfigOpt,
    base: str = typer.Option(
        "champion", "--from", help="The version to fine-tune: an alias or a number."
    ),
    alias: str = typer.Option("challenger", "--alias", help="Point this alias at the result."),
    epochs: int = typer.Option(10, "--epochs", min=1),
    batch: int = typer.Option(8, "--batch", min=1),
    time_hours: float | None = typer.Option(None, "--time-hours"),
) -> None:
    """Fine-tune a registered version on new data, evaluate it on the data's val split,
    register it and point an alias (challenger) at it."""
    from inspector.bus.kafka import DeliveryFailed, ServiceUnavailable
    from inspector.inference.model import ModelError
    from inspector.learn.lifecycle import retrain
    from inspector.registry import RegistryError

    cfg, reg = _registry(config)
    try:
        mv, before = retrain(
            cfg,
            reg,
            base,
            data,
            out,
            alias=alias,
            epochs=epochs,
            batch=batch,
            time_hours=time_hours,
        )
    except ModelError as exc:
        raise fail(f"model refused: {exc}", 2) from None
    except (RegistryError, ServiceUnavailable, DeliveryFailed) as exc:
        raise fail(str(exc), 1) from None
    typer.echo(
        f"registered {mv.name} version {mv.version} (fine-tuned from {base}; "
        f"mAP50 {mv.metrics.get('mAP50', 'n/a')}); @{alias}: {before or '-'} -> {mv.version}"
    )


def archive_cmd(config: Path = ConfigOpt) -> None:
    """Keep frames beyond Redis' TTL (learn.archive) so `inspector replay` can judge them."""
    from inspector.bus.kafka import ServiceUnavailable, Shutdown, check_broker
    from inspector.learn.archive import build_archiver

    cfg = load_or_exit(config)
    shutdown = Shutdown().install()
    try:
        check_broker(cfg.kafka)
        archiver, loop = build_archiver(cfg, shutdown=shutdown)
    except ServiceUnavailable as exc:
        raise fail(str(exc), 1) from None
    typer.echo(f"archive: {cfg.topics.frames} -> {cfg.learn.archive.url}", err=True)
    loop.run()
    typer.echo(
        f"archive stopped: {archiver.stats.archived} frames, skipped "
        f"{dict(archiver.stats.skipped)}",
        err=True,
    )


def replay_cmd(
    config: Path = ConfigOpt,
    model: str = typer.Option(..., "--model", help="Alias, version or path to judge with."),
    since: str = typer.Option("1h", "--since", help="How far back (30m, 2h, 1d)."),
    as_json: bool = typer.Option(False, "--json"),
    html_out: Path | None = typer.Option(
        None, "--html", help="Write an HTML report with each flip's evidence side by side."
    ),
    flips: int = typer.Option(20, "--flips", help="How many flipped frames to list."),
) -> None:
    """Judge the archived frames of past production verdicts again with another model;
    print what would have changed."""
    from inspector.events import VerdictEvent
    from inspector.inference.model import ModelError
    from inspector.learn.archive import FrameArchive
    from inspector.learn.replay import html_report, replay
    from inspector.observe.feed import FeedError, TopicReader, parse_duration
    from inspector.registry import RegistryError

    cfg = load_or_exit(config)
    try:
        det = load_candidate(cfg, model)
        start = time.time() - parse_duration(since)
        prod: list[VerdictEvent] = []
        with TopicReader(cfg, ["verdicts"], start_s=start, client_suffix="replay").open() as r:
            for rec in r.read_to_end(300):
                assert isinstance(rec.event, VerdictEvent)
                prod.append(rec.event)
        res = replay(cfg, det, prod, FrameArchive(cfg.learn.archive))
    except (RegistryError, ModelError, FeedError, ValueError) as exc:
        raise fail(str(exc), 1) from None
    d = res.as_dict(max_flips=flips)
    title = f"replay of {since} with {det.info.name}/{det.info.version}"
    if html_out is not None:
        html_out.write_text(html_report(res, title, max_flips=flips))
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    agree = "n/a" if d["agreement"] is None else f"{d['agreement']:.1%}"
    typer.echo(
        f"{title}: {d['production_verdicts']} production verdicts, {d['replayed']} judged "
        f"again, {d['gone']} frames gone from the archive; agreement {agree}, "
        f"new FAILs {d['new_fails']}, missed FAILs {d['missed_fails']}"
    )
    for kind, rows in (("line", d["by_line"]), ("class", d["by_class"])):
        for name, g in rows.items():
            typer.echo(
                f"{kind:<6} {name:<20} {g['compared']:>6} frames  agree {g['agreement']:.1%}  "
                f"new FAIL {g['new_fails']}  missed {g['missed_fails']}"
            )
    for f in d["flips"]:
        typer.echo(
            f"flip  {f['frame_id']}  {f['production']} -> {f['shadow']}  "
            f"[{', '.join(f['classes'])}]"
        )
    for fid in d["gone_frames"]:
        typer.echo(f"gone  {fid}")
    if html_out is not None:
        typer.echo(f"report: {html_out}")
