"""Mutating routes: a person's approve, reject and rollback, each one store transaction.

Status codes: 401/403 from the guard before anything else; 422 for a malformed body; 404 when
the prompt or version does not exist; 409 when the request is well formed but the version's or
prompt's current state forbids it (an illegal move, a version that needs `force`, nothing to roll
back to, or a decision raced by another one: read again and retry). Every committed decision
calls `on_decision` (the App wakes the publisher, so an activation reaches the targets without
waiting for its next poll)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy import Engine

from sidecar.api.auth import AdminGuard
from sidecar.api.models import (
    INVALID,
    NO_DATABASE,
    NOT_FOUND,
    ApproveRequest,
    DecisionResult,
    ErrorBody,
    RejectRequest,
    RollbackRequest,
)
from sidecar.api.prompts import (
    require_database,
    require_version,
    versions_of,
)
from sidecar.errors import InputError
from sidecar.promote.lifecycle import Action, Status
from sidecar.store.promotions import Activation, approve, reject, rollback

log = logging.getLogger(__name__)

REFUSED = {
    401: {"model": ErrorBody, "description": "Missing, malformed or wrong bearer token."},
    403: {"model": ErrorBody, "description": "No SIDECAR_ADMIN_TOKEN is configured."},
    409: {"model": ErrorBody, "description": "The current state forbids this decision."},
    **NOT_FOUND,
    **NO_DATABASE,
    **INVALID,
}


@contextmanager
def conflicts() -> Iterator[None]:
    """The store's refusals (after the API checked that the name and version exist) are about
    the state the prompt is in now: 409 with the store's one-line reason."""
    try:
        yield
    except InputError as refused:
        raise HTTPException(409, str(refused)) from refused


def activation_result(activation: Activation, action: Action) -> DecisionResult:
    return DecisionResult(
        prompt=activation.prompt_name,
        version=activation.version,
        status=Status.ACTIVE,
        action=action,
        activation_id=activation.id,
        targets=list(activation.targets),
        previous_version=activation.previous,
    )


def decision_routes(
    engine: Engine | None,
    guard: AdminGuard,
    publish_targets: Sequence[str],
    on_decision: Callable[[], None] | None,
) -> APIRouter:
    """The mutating routes; every one passes `guard` first. Activations owe `publish_targets`."""
    router = APIRouter(
        prefix="/v1/prompts", tags=["decisions"], dependencies=[Depends(guard)], responses=REFUSED
    )
    targets = tuple(publish_targets)

    def decided() -> None:
        if on_decision is not None:
            on_decision()

    @router.post("/{name}/candidates/{version}/approve")
    def approve_version(name: str, version: int, body: ApproveRequest) -> DecisionResult:
        """Approve a version: it becomes active, the previous active one retired, and every
        publish target is owed it. A version that has not passed the shadow gate needs
        `force: true`, and the approval is audited as forced."""
        database = require_database(engine)
        require_version(database, name, version)
        with conflicts():
            activation = approve(
                database,
                name,
                version,
                by=body.by,
                note=body.note,
                force=body.force,
                targets=targets,
                now=datetime.now(UTC),
            )
        forced = activation.forced
        log.info("%s v%d approved by %s over HTTP%s", name, version, body.by, " (forced)" * forced)
        decided()
        return activation_result(activation, Action.FORCE_APPROVE if forced else Action.APPROVE)

    @router.post("/{name}/candidates/{version}/reject")
    def reject_version(name: str, version: int, body: RejectRequest) -> DecisionResult:
        """Reject a version that is not yet approved, with a reason; it never breeds again."""
        database = require_database(engine)
        require_version(database, name, version)
        with conflicts():
            reject(database, name, version, by=body.by, reason=body.reason, now=datetime.now(UTC))
        log.info("%s v%d rejected by %s over HTTP", name, version, body.by)
        decided()
        return DecisionResult(
            prompt=name, version=version, status=Status.REJECTED, action=Action.REJECT
        )

    @router.post("/{name}/rollback")
    def rollback_prompt(name: str, body: RollbackRequest) -> DecisionResult:
        """Make an earlier version active again (`to`, or the one active most recently before
        the current one); the current one is retired and never breeds again."""
        database = require_database(engine)
        if body.to is None:
            versions_of(database, name)
        else:
            require_version(database, name, body.to)
        with conflicts():
            activation = rollback(
                database,
                name,
                to=body.to,
                by=body.by,
                reason=body.reason,
                targets=targets,
                now=datetime.now(UTC),
            )
        log.info(
            "%s rolled back from v%s to v%d by %s over HTTP",
            name,
            activation.previous,
            activation.version,
            body.by,
        )
        decided()
        return activation_result(activation, Action.ROLLBACK)

    return router
