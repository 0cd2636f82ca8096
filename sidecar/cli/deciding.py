"""A person's decisions: `approve`, `reject`, `rollback`.

The CLI is a second client of the database a running sidecar uses: a decision commits the new
active version and what every publish target is owed (the outbox) in one transaction, and the
running sidecar's relay delivers it within its poll interval. `--wait` lets a script block until
that delivery happened. Only a person decides, so `--by` is required; missing or wrong input is
one line on stderr with exit 2, and nothing is changed."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from sidecar.cli.common import JsonFlag, PromptOption, database, required_spec
from sidecar.errors import InputError, PublishError
from sidecar.settings import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from sidecar.store.promotions import Activation

WAIT_POLL_S = 0.1
"""How often `--wait` looks at the outbox: short next to a relay's poll interval (default 1 s)."""

ByOption = Annotated[
    str | None, typer.Option("--by", help="Who decides (required: only a person decides).")
]
WaitOption = Annotated[
    float | None,
    typer.Option(
        "--wait",
        metavar="SECONDS",
        help="Wait until every target has the new version; exit 1 if one is still owed it then.",
    ),
]


def register(cli: typer.Typer) -> None:
    """Adds this module's commands to `cli`, in the order `--help` lists them."""
    cli.command()(approve)
    cli.command()(reject)
    cli.command()(rollback)


def approve(
    version: Annotated[int, typer.Argument(help="The version to make active.")],
    by: ByOption = None,
    note: Annotated[str | None, typer.Option("--note", help="Why, for the audit log.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Approve a version that has not passed the gate.")
    ] = False,
    prompt: PromptOption = None,
    wait: WaitOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Make VERSION active (the active one is retired) and publish it to every target."""
    from sidecar.store import promotions

    settings = load_settings()
    person = _person(by, "approves")
    _check_wait(wait)
    name = required_spec(settings, prompt).name
    engine = database(settings)
    try:
        activation = promotions.approve(
            engine,
            name,
            version,
            by=person,
            note=note,
            force=force,
            targets=settings.publish_targets,
            now=datetime.now(UTC),
        )
        forced = activation.forced
        reason = " (forced: it had not passed the shadow gate)" if forced else ""
        _report(settings, activation, forced, f"approved {name} v{version}{reason}", json_output)
        _wait_for_delivery(engine, activation, wait, json_output)
    finally:
        engine.dispose()


def reject(
    version: Annotated[int, typer.Argument(help="The version to reject.")],
    by: ByOption = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (required, for the audit log).")
    ] = None,
    prompt: PromptOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Reject VERSION for good: it is never shadowed, approved or bred from again."""
    from sidecar.store import promotions

    settings = load_settings()
    person = _person(by, "rejects")
    if reason is None or not reason.strip():
        raise InputError("--reason: say why the version is rejected (it goes in the audit log)")
    name = required_spec(settings, prompt).name
    engine = database(settings)
    try:
        promotions.reject(engine, name, version, by=person, reason=reason, now=datetime.now(UTC))
        was = promotions.audit_trail(engine, name, version)[-1].from_status
    finally:
        engine.dispose()
    if json_output:
        report = {"prompt": name, "version": version, "status": "rejected", "was": was}
        typer.echo(json.dumps({**report, "by": person, "reason": reason}, indent=2, sort_keys=True))
        return
    typer.echo(f"rejected {name} v{version} (was {was}): {reason}")


def rollback(
    to: Annotated[
        int | None,
        typer.Option("--to", help="The earlier version (default: the one active before)."),
    ] = None,
    by: ByOption = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the audit log.")] = None,
    prompt: PromptOption = None,
    wait: WaitOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Make an earlier version active again (the current one is retired and never bred from
    again) and publish it to every target."""
    from sidecar.store import promotions

    settings = load_settings()
    person = _person(by, "rolls back")
    _check_wait(wait)
    name = required_spec(settings, prompt).name
    engine = database(settings)
    try:
        activation = promotions.rollback(
            engine,
            name,
            to=to,
            by=person,
            reason=reason,
            targets=settings.publish_targets,
            now=datetime.now(UTC),
        )
        what = f"rolled back {name} from v{activation.previous} to v{activation.version}"
        _report(settings, activation, False, what, json_output)
        _wait_for_delivery(engine, activation, wait, json_output)
    finally:
        engine.dispose()


def _person(by: str | None, does: str) -> str:
    if by is None or not by.strip():
        raise InputError(f"--by: name the person who {does} (only a person decides)")
    return by.strip()


def _check_wait(wait: float | None) -> None:
    if wait is not None and not wait > 0:
        raise InputError(f"--wait: give a number of seconds above 0 (got {wait:g})")


def _report(
    settings: Settings, activation: Activation, forced: bool, what: str, json_output: bool
) -> None:
    """What the decision did, and where the new version goes next."""
    if json_output:
        report = {
            "prompt": activation.prompt_name,
            "version": activation.version,
            "status": "active",
            "previous": activation.previous,
            "activation_id": activation.id,
            "targets": list(activation.targets),
            "forced": forced,
        }
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    retired = "" if activation.previous is None else f", v{activation.previous} retired"
    typer.echo(f"{what}; v{activation.version} is active{retired}")
    if not activation.targets:
        typer.echo("nothing to publish: SIDECAR_PUBLISH_TARGETS is empty")
        return
    typer.echo(
        f"publishing to {', '.join(activation.targets)}: a running sidecar delivers within "
        f"{settings.publish_poll_interval_s:g}s (`gepa-sidecar status`)"
    )


def _wait_for_delivery(
    engine: Engine, activation: Activation, wait: float | None, quiet: bool
) -> None:
    """With `--wait`: poll the outbox until no target is owed this activation any more, or fail
    with the targets still owed it (PublishError: exit 1; the decision itself stands)."""
    if wait is None or not activation.targets:
        return
    deadline = time.monotonic() + wait
    while owed := _owed(engine, activation):
        if time.monotonic() >= deadline:
            raise PublishError(
                f"v{activation.version} not yet delivered to {', '.join(owed)} after {wait:g}s "
                f"(activation {activation.id}; is a sidecar running? `gepa-sidecar status`)"
            )
        time.sleep(WAIT_POLL_S)
    if not quiet:
        typer.echo(f"delivered: no target is owed v{activation.version} any more")


def _owed(engine: Engine, activation: Activation) -> list[str]:
    """The targets whose outbox row for this activation is still pending."""
    from sidecar.store.outbox import pending_outbox

    pending = pending_outbox(engine, activation.targets)
    return [item.target for item in pending if item.activation_id == activation.id]
