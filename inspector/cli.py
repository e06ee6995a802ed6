"""``inspector <command>``: the single entry point for every process and tool.

Each pipeline stage registers its own commands (``inspector/<stage>/commands.py``
exposes ``register(app)``); heavy imports stay inside the commands so
``inspector --help`` and ``config check`` start fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from inspector import __version__
from inspector.commandline import ConfigOpt, fail, load_or_exit

if TYPE_CHECKING:
    from inspector.config import PlantConfig

app = typer.Typer(
    name="inspector",
    help="Kafka-native visual inspection for factory lines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Plant configuration.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(topics_app, name="topics")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"inspector {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Kafka-native visual inspection for factory lines."""


@config_app.command("check")
def config_check(
    path: Path = typer.Argument(..., help="Plant config YAML."),
    online: bool = typer.Option(
        False,
        "--online",
        help="Also check the config against the live systems it names (the bridge's "
        "targets: PLC reachable, credentials accepted, every node id exists and is writable).",
    ),
) -> None:
    """Validate a plant config; print every error with its field path."""
    cfg = load_or_exit(path)
    if online:
        for check in ONLINE_CHECKS:
            problems = check(cfg)
            if problems:
                typer.echo(f"{path}: online check failed ({len(problems)} problems)", err=True)
                for p in problems:
                    typer.echo(f"  {p}", err=True)
                raise typer.Exit(1)
    cams = sum(len(ln.cameras) for ln in cfg.lines)
    typer.echo(
        f"{path}: OK — plant {cfg.plant!r}, {len(cfg.lines)} lines, {cams} cameras, "
        f"{len(cfg.workflows)} workflows, model {cfg.worker.model!r}"
    )


@topics_app.command("create")
def topics_create(config: Path = ConfigOpt) -> None:
    """Create the plant's topics (missing ones only)."""
    from inspector.bus.kafka import ServiceUnavailable, check_broker, ensure_topics

    cfg = load_or_exit(config)
    try:
        check_broker(cfg.kafka)
        created = ensure_topics(cfg.kafka, cfg.topics)
    except ServiceUnavailable as exc:
        raise fail(str(exc), 1) from None
    for t in cfg.topics.all():
        typer.echo(f"{'created' if t in created else 'exists '}  {t}")


@app.command("retention")
def retention(config: Path = ConfigOpt) -> None:
    """Enforce retention: cap image keys in Redis at the evidence TTL, set the frames
    topic's retention on the broker (for what predates or escaped the built-in TTLs)."""
    from inspector.bus.kafka import ServiceUnavailable
    from inspector.bus.retention import enforce_topic_retention, sweep_redis
    from inspector.bus.store import connect

    cfg = load_or_exit(config)
    try:
        swept = sweep_redis(connect(cfg.redis), cfg.redis.key_prefix, cfg.frames.evidence_ttl_s)
        topic = enforce_topic_retention(cfg)
    except ServiceUnavailable as exc:
        raise fail(str(exc), 1) from None
    capped = ", ".join(f"{k} {n}" for k, n in sorted(swept.capped.items())) or "none"
    typer.echo(
        f"redis: {swept.scanned} image keys, capped at {cfg.frames.evidence_ttl_s} s: {capped}"
    )
    typer.echo(f"kafka: {cfg.topics.frames} " + " ".join(f"{k}={v}" for k, v in topic.items()))


@app.command("schemas")
def schemas(
    out: Path = typer.Option(
        Path(__file__).parent / "schemas", "--out", help="Directory for the JSON Schema files."
    ),
    check: bool = typer.Option(False, "--check", help="Exit 1 if the files differ."),
) -> None:
    """Write (or check) the JSON Schema of every event payload."""
    from inspector.schemas import write_schemas

    stale = write_schemas(out, check=check)
    if check and stale:
        raise fail(f"schemas out of date: {', '.join(stale)}; run `inspector schemas`", 1)
    typer.echo(f"{'checked' if check else 'wrote'} schemas in {out}")


@app.command("demo")
def demo(
    duration: float = typer.Option(60.0, "--duration", help="Seconds to run (0 = until Ctrl-C)."),
    config: Path = typer.Option(
        Path(__file__).resolve().parent.parent / "configs" / "demo.yaml", "--config", "-c"
    ),
    workers: int = typer.Option(1, "--workers", min=1, max=8, help="Detection workers."),
    out: Path = typer.Option(Path("demo-out"), "--out", help="Scorecard and logs directory."),
) -> None:
    """Run a simulated 2-line plant end to end and print a scorecard."""
    from inspector.demo import print_scorecard, run_demo

    try:
        card = run_demo(duration, config=config, workers=workers, out_dir=out, echo=typer.echo)
    except (RuntimeError, OSError) as exc:
        raise fail(str(exc), 1) from None
    print_scorecard(card, typer.echo)
    bad = {k: v for k, v in card["exit_codes"].items() if v not in (0, None)}
    if bad:
        raise fail(f"pipeline processes exited uncleanly: {bad}", 1)


def _lake_trends(cfg: PlantConfig, window_s: float) -> Callable[[], dict[str, Any]]:
    """The dashboard's trends panel reads the lake: observe and lake are sibling stages
    that never import each other, so they meet here (docs/architecture.md)."""
    from inspector.lake.trends import trends_provider

    return trends_provider(cfg, window_s)


def _bridge_targets_online(cfg: PlantConfig) -> list[str]:
    from inspector.act.bridge_service import check_targets

    return check_targets(cfg)


# What `config check --online` runs, in order; each returns one line per problem.
ONLINE_CHECKS: list[Callable[[PlantConfig], list[str]]] = [_bridge_targets_online]


def _register_stages() -> None:
    import importlib

    # what a stage's commands get besides the app: the composition of stages
    wiring: dict[str, dict[str, Any]] = {
        "inspector.observe.commands": {"trends_source": _lake_trends},
    }
    for mod in STAGE_COMMANDS:
        importlib.import_module(mod).register(app, **wiring.get(mod, {}))


# One line per stage; each module defines register(app: typer.Typer).
STAGE_COMMANDS: list[str] = [
    "inspector.ingest.commands",
    "inspector.detect.commands",
    "inspector.act.commands",
    "inspector.observe.commands",
    "inspector.dataset.commands",
    "inspector.lake.commands",
    "inspector.learn.commands",
    "inspector.edge.commands",  # not a stage: the stages of one box as one group
]

_register_stages()
