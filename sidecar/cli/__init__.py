"""The `gepa-sidecar` command. Every command exits non-zero with one line on bad input; `--json`
gives machine output. Commands other than `run`, `demo` and `broker` are clients of the same
database a running sidecar uses.

One module per concern, each with a `register(cli)` that adds its commands: service (run,
broker, demo, status), judging (judge-eval), optimizing (optimize, shadow), reading (candidates,
show, diff, lineage, export), deciding (approve, reject, rollback). Shared options and helpers
live in `common`."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from sidecar import __version__
from sidecar.cli import deciding, doctor, judging, optimizing, reading, service
from sidecar.errors import ConfigError, InputError, SidecarError
from sidecar.settings import misspelled_variables

cli = typer.Typer(
    name="gepa-sidecar",
    help="Improve a production chatbot's prompt from its own live traffic, safely.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"gepa-sidecar {__version__}")
        raise typer.Exit()


@cli.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Improve a production chatbot's prompt from its own live traffic, safely."""


service.register(cli)
doctor.register(cli)
judging.register(cli)
optimizing.register(cli)
reading.register(cli)
deciding.register(cli)


def main() -> None:
    """Entry point: a SidecarError becomes one line on stderr and exit code 2 (bad input or
    config) or 1 (a failure at run time). A misspelled SIDECAR_* variable is warned about first,
    since the setting it meant stays at its default."""
    for warning in misspelled_variables(os.environ):
        typer.echo(f"warning: {warning}", err=True)
    try:
        cli()
    except (ConfigError, InputError) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except SidecarError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
