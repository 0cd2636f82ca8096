"""`doctor`: is this sidecar set up to work? One line per check, exit 1 on any failure."""

from __future__ import annotations

import json
import logging
import os
from typing import Annotated

import typer

from sidecar.cli.common import JsonFlag

MARKS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


def register(cli: typer.Typer) -> None:
    """Adds this module's commands to `cli`, in the order `--help` lists them."""
    cli.command()(doctor)


def doctor(
    json_output: JsonFlag = False,
    models: Annotated[
        bool, typer.Option(help="Make one tiny call per model role (it costs a few tokens).")
    ] = True,
) -> None:
    """Check the settings, the config file, the database (without migrating it), Kafka and one
    tiny call per model role; one line per check, exit 1 on any failure."""
    from sidecar.runtime.doctor import Doctor

    logging.disable(logging.WARNING)  # each finding is a line of the report, not a log line too
    checking = Doctor(os.environ)
    findings = checking.run(models=models)
    if json_output:
        report = {"ok": not checking.failed, "checks": [f.as_dict() for f in findings]}
        typer.echo(json.dumps(report, indent=2))
    else:
        width = max(len(finding.check) for finding in findings)
        for finding in findings:
            typer.echo(f"{MARKS[finding.status]}  {finding.check:<{width}}  {finding.detail}")
    if checking.failed:
        raise typer.Exit(1)
