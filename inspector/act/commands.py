"""``inspector act``, ``inspector mqtt``, ``inspector bridge``, ``inspector resume`` and
``inspector mes-stub``."""

from __future__ import annotations

from pathlib import Path

import typer

from inspector.commandline import ConfigOpt, fail, load_or_exit, traces_or_exit


def register(app: typer.Typer) -> None:
    @app.command("act")
    def act(
        config: Path = ConfigOpt,
        metrics_port: int | None = typer.Option(
            None,
            "--metrics-port",
            help="Port of /metrics /healthz /readyz (default: observe.act_port).",
        ),
    ) -> None:
        """Run the corrective workflows (divert, stop_line, mes_ticket, notify) on verdicts."""
        from inspector.act.service import run_act
        from inspector.bus.kafka import ServiceUnavailable, Shutdown, check_broker
        from inspector.telemetry.logs import setup_logging

        cfg = load_or_exit(config)
        setup_logging("act", cfg.observe.log_format)
        traces_or_exit(cfg, "act")
        if not cfg.workflows:
            typer.echo("warning: no workflows configured; act will only count verdicts", err=True)
        try:
            check_broker(cfg.kafka)
            run_act(cfg, Shutdown().install(), metrics_port=metrics_port)
        except ServiceUnavailable as exc:
            raise fail(str(exc), 1) from None

    @app.command("mqtt")
    def mqtt(
        config: Path = ConfigOpt,
        metrics_port: int | None = typer.Option(
            None,
            "--metrics-port",
            help="Port of /metrics /healthz /readyz (default: mqtt.metrics_port).",
        ),
    ) -> None:
        """Publish verdict summaries and line commands to an MQTT 5 broker (JSON or
        Sparkplug B); a batch is committed once the broker acknowledged it."""
        from inspector.act.mqtt import check_mqtt, run_mqtt
        from inspector.bus.kafka import ServiceUnavailable, Shutdown, check_broker
        from inspector.telemetry.logs import setup_logging

        cfg = load_or_exit(config)
        if cfg.mqtt is None:
            raise fail(f"{config}: no mqtt section (mqtt.host at least)")
        setup_logging("mqtt", cfg.observe.log_format)
        traces_or_exit(cfg, "mqtt")
        try:
            check_broker(cfg.kafka)
            check_mqtt(cfg)
            run_mqtt(cfg, Shutdown().install(), metrics_port=metrics_port)
        except ServiceUnavailable as exc:
            raise fail(str(exc), 1) from None

    @app.command("bridge")
    def bridge(
        config: Path = ConfigOpt,
        metrics_port: int | None = typer.Option(
            None,
            "--metrics-port",
            help="Port of /metrics /healthz /readyz (default: bridge.port).",
        ),
    ) -> None:
        """Deliver line commands to the line's controllers (bridge.targets: OPC UA PLCs)."""
        from inspector.act.bridge_service import run_bridge
        from inspector.bus.kafka import ServiceUnavailable, Shutdown, check_broker
        from inspector.telemetry.logs import setup_logging

        cfg = load_or_exit(config)
        setup_logging("bridge", cfg.observe.log_format)
        traces_or_exit(cfg, "bridge")
        if not cfg.bridge.targets:
            raise fail("bridge.targets is empty: nothing to deliver line commands to")
        try:
            check_broker(cfg.kafka)
            run_bridge(cfg, Shutdown().install(), metrics_port=metrics_port)
        except ServiceUnavailable as exc:
            raise fail(str(exc), 1) from None

    @app.command("resume")
    def resume(
        config: Path = ConfigOpt,
        line: str = typer.Option(..., "--line", "-l", help="Line id to resume."),
        operator: str = typer.Option("cli", "--operator", help="Who resumes (recorded)."),
    ) -> None:
        """Clear the line's stop episode and publish a resume line command."""
        from inspector.act.service import resume_line
        from inspector.bus.kafka import DeliveryFailed, ServiceUnavailable, check_broker

        cfg = load_or_exit(config)
        if line not in [ln.id for ln in cfg.lines]:
            raise fail(f"unknown line {line!r}; known: {[ln.id for ln in cfg.lines]}")
        try:
            check_broker(cfg.kafka)
            cmd = resume_line(cfg, line, operator=operator)
        except (ServiceUnavailable, DeliveryFailed) as exc:
            raise fail(str(exc), 1) from None
        episodes = cmd.reason.split("episodes ", 1)[1] if "episodes " in cmd.reason else "none"
        typer.echo(f"resume sent to {line} (command {cmd.command_id}; closed episodes: {episodes})")

    @app.command("mes-stub")
    def mes_stub(
        port: int = typer.Option(8099, "--port", help="Port to listen on."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
        secret_env: str = typer.Option(
            "INSPECTOR_MES_SECRETS",
            "--secret-env",
            help="Environment variable holding the whsec_... secrets, space- or comma-"
            "separated (several during key rotation). Secrets never go on the command line.",
        ),
    ) -> None:
        """A local MES stand-in that verifies and records signed tickets (demo, tests)."""
        import os

        from inspector.act.mes_stub import MesStub
        from inspector.act.signing import secret_key
        from inspector.bus.kafka import Shutdown
        from inspector.telemetry.logs import setup_logging

        secret = os.environ.get(secret_env, "").replace(",", " ").split()
        if not secret:
            raise fail(f"set {secret_env} to the whsec_... secret(s) (--secret-env names it)")
        for i, s in enumerate(secret):
            try:
                secret_key(s)
            except ValueError as exc:
                raise fail(f"{secret_env} secret {i + 1}: {exc}") from None
        setup_logging("mes-stub")
        shutdown = Shutdown().install()
        try:
            stub = MesStub(secrets=secret, host=host, port=port).start()
        except OSError as exc:
            raise fail(f"cannot listen on {host}:{port}: {exc.strerror}", 1) from None
        typer.echo(f"MES stub listening on {stub.url} (GET /stats, POST /control/fail)", err=True)
        try:
            while not shutdown.wait(1.0):
                pass
        finally:
            stub.close()
            typer.echo(f"MES stub stats: {stub.snapshot()}", err=True)
