"""Commands that run the sidecar or show how it is doing: `run`, `broker`, `demo`, `status`."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from sidecar.cli.common import JsonFlag, configure_logging, read_only_database, stop_on_signals
from sidecar.errors import InputError, SidecarError
from sidecar.settings import load_prompts_config, load_settings


def register(cli: typer.Typer) -> None:
    """Adds this module's commands to `cli`, in the order `--help` lists them."""
    cli.command()(run)
    cli.command()(broker)
    cli.command()(demo)
    cli.command()(status)


def run() -> None:
    """Run everything: consumer, judge workers, the optimize schedule, HTTP API."""
    settings = load_settings()
    prompts = load_prompts_config(settings.config_file)
    from sidecar.runtime.app import App

    configure_logging()
    app = App(settings, prompts, freeze_heap=True)
    stop_on_signals(app.stop)
    try:
        app.run()
    except SidecarError as exc:
        if app.abandoned:
            typer.echo(f"error: {exc}", err=True)
            _exit_now(1)
        raise
    if app.abandoned:
        _exit_now(0)


def _exit_now(code: int) -> None:
    """Leave without waiting for what a bounded stop abandoned: the interpreter's exit joins
    some threads (a job's worker pool, asyncio's executor), which would outlast the grace."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 to listen on.")] = 9092,
    partitions: Annotated[int, typer.Option(help="Partitions of the traffic topic.")] = 1,
) -> None:
    """Start the embedded Kafka-compatible broker (memory only) with the sidecar's topics."""
    from sidecar.runtime.broker import EmbeddedBroker
    from sidecar.runtime.kafka import ensure_topics

    settings = load_settings()
    configure_logging()
    stopped = threading.Event()
    stop_on_signals(stopped.set)
    with EmbeddedBroker(port=port) as embedded:
        servers = embedded.bootstrap_servers
        ensure_topics(servers, [settings.traffic_topic, settings.dlq_topic], partitions)
        ensure_topics(servers, [settings.prompts_topic], compacted=[settings.prompts_topic])
        typer.echo(f"embedded broker listening: SIDECAR_KAFKA_BOOTSTRAP_SERVERS={servers}")
        stopped.wait()


def demo(
    models: Annotated[
        str, typer.Option(help="simulated (default: the example's world) or local (SmolLM2).")
    ] = "simulated",
    yes: Annotated[bool, typer.Option("--yes", help="Approve without asking (said so).")] = False,
    serve: Annotated[
        bool, typer.Option(help="Keep serving after the script, until Ctrl-C.")
    ] = True,
    traffic: Annotated[int, typer.Option(help="Customer messages per round of traffic.")] = 40,
    port: Annotated[int, typer.Option(help="The sidecar's HTTP port (0: any free one).")] = 8791,
    chatbot_port: Annotated[
        int, typer.Option(help="The example chatbot's port (0: any free one).")
    ] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its database.")] = Path(
        "demo-data"
    ),
) -> None:
    """The whole loop beside the example chatbot: traffic, judge, GEPA, shadow, approval, hot
    reload. Simulated models by default (labelled so); real ones with the three role settings."""
    import signal

    from sidecar.runtime.demo import DemoOptions, run_demo

    if models not in ("simulated", "local"):
        raise InputError(f"--models: must be simulated or local (got {models!r})")
    if traffic < 20:
        raise InputError(f"--traffic: at least 20 messages a round (got {traffic})")
    if not yes and not sys.stdin.isatty():
        typer.echo(
            "demo        no terminal to ask on: it approves as --yes would, and stops after "
            "the script instead of serving"
        )
        yes, serve = True, False

    def ask(question: str) -> bool:
        return typer.prompt(question, default="n", show_default=False).strip().lower() in (
            "y",
            "yes",
        )

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    configure_logging(quiet=True)
    signal.signal(signal.SIGTERM, interrupt)
    options = DemoOptions(data_dir, models, yes, serve, traffic, port, chatbot_port)
    try:
        run_demo(options, typer.echo, ask)
    except KeyboardInterrupt:
        # Everything was closed on the way out; a model call interrupted mid-flight may still
        # hold a worker thread the interpreter would wait for at exit, so leave at once.
        typer.echo("stopped")
        sys.stdout.flush()
        os._exit(130)


MESSAGE_SHOWN = 160


def status(json_output: JsonFlag = False) -> None:
    """Counts of consumed and judged events, spend on judging, shadow and optimization over
    the last hour and day, each model role's last error, and each prompt's active version."""
    from sidecar.llm.gateway import ROLES
    from sidecar.store.model_errors import last_model_errors
    from sidecar.store.repository import status_summary
    from sidecar.store.spend import spend_summary

    settings = load_settings()
    engine = read_only_database(settings)
    now = datetime.now(UTC)
    summary = {
        **status_summary(engine),
        "spend": spend_summary(engine, now),
        "models": last_model_errors(engine, ROLES),
    }
    engine.dispose()
    if json_output:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    typer.echo(_format_status(summary, now))


def _format_status(summary: dict[str, Any], now: datetime | None = None) -> str:
    """`status` for a person; `now` (default: the clock) dates the models' last errors."""
    now = now or datetime.now(UTC)
    events = summary["events"]
    optimization = summary["optimization"]
    lines = [
        "events     " + "  ".join(f"{name}={events[name]}" for name in sorted(events)),
        f"optimize   runs={optimization['runs']}  metric_calls={optimization['metric_calls']}"
        f"  cost_usd={optimization['cost_usd']:.4f}",
    ]
    spend = summary["spend"]
    for window, title in (("last_hour", "last hour"), ("last_day", "last day ")):
        parts = "  ".join(f"{purpose}={_money(spend[purpose][window])}" for purpose in spend)
        lines.append(f"spend      {title}  {parts}")
    for role, error in summary.get("models", {}).items():
        lines.append(f"model      {role:<10} {_model_error(error, now)}")
    for name, prompt in summary["prompts"].items():
        published = "  ".join(f"{t}=v{v}" for t, v in sorted(prompt["published"].items()))
        active = prompt["active_version"]
        lines.append(
            f"prompt     {name}  active_version={'none' if active is None else active}  "
            f"published: {published or 'no approval yet'}  "
            f"pending_publishes={prompt['pending_publishes']}"
        )
    return "\n".join(lines)


def _model_error(error: dict[str, Any], now: datetime) -> str:
    """`no errors`, or when the role last failed, how often since its first, and why."""
    if error["last_error_at"] is None:
        return "no errors"
    last = datetime.fromisoformat(error["last_error_at"])
    first = datetime.fromisoformat(error["first_error_at"])
    message = error["last_error"]
    if len(message) > MESSAGE_SHOWN:
        message = message[:MESSAGE_SHOWN].rstrip() + " …"
    count = error["count"]
    return (
        f"last error {_moment(last)} ({_ago(now - last)}; {count} "
        f"{'failure' if count == 1 else 'failures'} since {_moment(first)}): "
        f"{error['kind']}: {message}"
    )


def _moment(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _ago(elapsed: timedelta) -> str:
    seconds = max(0, int(elapsed.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _money(total: dict[str, Any]) -> str:
    """Dollars; calls to a model with no price make the spend unknown, never $0."""
    if total["known"]:
        return f"${total['cost_usd']:.4f}"
    if total["cost_usd"]:
        return f"${total['cost_usd']:.4f}+unknown({total['unpriced_calls']} unpriced calls)"
    return f"unknown({total['unpriced_calls']} unpriced calls)"
