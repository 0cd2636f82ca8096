"""The `gepa-sidecar` command. Every command exits non-zero with one line on bad input; `--json`
gives machine output. Commands other than `run`, `demo` and `broker` are clients of the same
database a running sidecar uses.

One module per concern, each with a `register(cli)` that adds its commands: service (run,
broker, demo, status), judging (judge-eval), optimizing (optimize, shadow), reading (candidates,
show, diff, lineage, export), deciding (approve, reject, rollback). Shared options and helpers
live in `common`."""

from __future__ import annotations

import sys

import typer

from sidecar.cli import deciding, judging, optimizing, reading, service
from sidecar.errors import ConfigError, InputError, SidecarError

cli = typer.Typer(
    name="gepa-sidecar",
    help="Improve a production chatbot's prompt from its own live traffic, safely.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

service.register(cli)
judging.register(cli)
optimizing.register(cli)
reading.register(cli)
deciding.register(cli)


def main() -> None:
    """Entry point: a SidecarError becomes one line on stderr and exit code 2 (bad input or
    config) or 1 (a failure at run time)."""
    try:
        cli()
    except (ConfigError, InputError) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except SidecarError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
