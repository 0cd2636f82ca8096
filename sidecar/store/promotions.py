"""Repository functions of the lifecycle after the optimizer: approve, reject, roll back, the
shadow runner's moves, and what is active and may breed.

Each call is one transaction that asks `promote.lifecycle` whether the move is legal, then
changes the row only if it still holds the status it was read with (compare and set): a decision
raced by another one fails with "changed status meanwhile; try again" and writes nothing, so a
prompt never gets two activations from one state. Approvals and rollbacks write the active
version's row first, so two of them on one prompt queue on that row rather than deadlock.

An activation (approve or rollback) commits the new active version, the previous one retired,
its audit rows and one outbox row per target together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from sidecar.errors import InputError
from sidecar.promote.documents import document_for
from sidecar.promote.lifecycle import (
    Action,
    Actor,
    Status,
    action_for,
    approval_action,
    approval_steps,
    check_rollback,
    check_transition,
    never_breeds,
    sources,
)
from sidecar.store.database import aware
from sidecar.store.outbox import enqueue
from sidecar.store.repository import dialect_insert, transaction
from sidecar.store.tables import AuditEntry, Candidate, OutboxEntry

DECISIONS = (Action.APPROVE, Action.FORCE_APPROVE, Action.REJECT)
"""A person's decisions on a candidate, as `decisions_since` reports them (with rollbacks)."""


@dataclass(frozen=True)
class Activation:
    """A version made active: `id` is its audit row's, `previous` the version it replaced."""

    id: int
    prompt_name: str
    version: int
    previous: int | None
    document: dict[str, Any]
    targets: tuple[str, ...]

    @property
    def forced(self) -> bool:
        """Approved without passing the shadow gate (the document's evidence says so)."""
        return bool((self.document.get("evidence") or {}).get("forced"))


def approve(
    engine: Engine,
    name: str,
    version: int,
    *,
    by: str,
    note: str | None,
    force: bool,
    targets: Sequence[str],
    now: datetime,
) -> Activation:
    """A person's approval: the version goes approved -> active, the previous active one is
    retired, and every target is owed the new document. Without `force`, only a version that
    passed the shadow gate (`awaiting_approval`) is approved; a forced one is audited as such."""
    _require_person(by, "an approval")
    with transaction(engine) as connection:
        row = _candidate(connection, name, version)
        to_approved, to_active = approval_steps(version, row.status, force)
        action = approval_action(row.status)
        previous = _active(connection, name)
        if previous is not None:
            _move(connection, previous, Status.RETIRED, raced=f"{name}'s active version")
        evidence = dict(row.evidence or {})
        if action == Action.FORCE_APPROVE:
            evidence["forced"] = True
        approved = _move(
            connection, row, Status.ACTIVE, approved_by=by, approved_at=now, evidence=evidence
        )
        why = _approval_reason(action, row.status, note)
        _audit(connection, row, to_approved, action, by, why, now)
        activation_id = _audit(connection, row, to_active, Action.ACTIVATE, by, why, now)
        if previous is not None:
            retire = (Status.ACTIVE, Status.RETIRED)
            _audit(connection, previous, retire, Action.RETIRE, by, f"replaced by v{version}", now)
        return _publish(connection, activation_id, approved, previous, targets, now)


def _approval_reason(action: Action, status: str, note: str | None) -> str:
    if action == Action.APPROVE:
        return note or "passed the shadow gate"
    forced = f"forced: approved from {status} without passing the shadow gate"
    return f"{forced}; {note}" if note else forced


def reject(
    engine: Engine,
    name: str,
    version: int,
    *,
    by: str,
    reason: str,
    now: datetime,
    actor: Actor = Actor.PERSON,
) -> None:
    """A rejection, always with a reason; a rejected version never breeds again."""
    if not reason.strip():
        raise InputError(f"rejecting v{version} needs a reason")
    if actor == Actor.PERSON:
        _require_person(by, "a rejection")
    with transaction(engine) as connection:
        row = _candidate(connection, name, version)
        check_transition(version, row.status, Status.REJECTED, actor)
        _move(connection, row, Status.REJECTED)
        moved = (row.status, Status.REJECTED)
        action = action_for(row.status, Status.REJECTED, actor)
        _audit(connection, row, moved, action, by, reason, now)


def rollback(
    engine: Engine,
    name: str,
    *,
    to: int | None,
    by: str,
    reason: str | None,
    targets: Sequence[str],
    now: datetime,
) -> Activation:
    """Make an earlier version active again and owe it to every target; the current one is
    retired by the rollback (and never breeds again). `to=None` goes back to the version that
    was active most recently before the current one."""
    _require_person(by, "a rollback")
    with transaction(engine) as connection:
        current = _active(connection, name)
        if current is None:
            raise InputError(f"{name} has no active version to roll back from")
        if to is None:
            target = _previously_active(connection, name, current.version)
        else:
            target = _candidate(connection, name, to)
        check_rollback(target.version, target.status)
        check_transition(current.version, current.status, Status.RETIRED, Actor.PERSON)
        _move(connection, current, Status.RETIRED)
        restored = _move(connection, target, Status.ACTIVE)
        why = reason or f"rolled back from v{current.version} to v{target.version}"
        retire = (Status.ACTIVE, Status.RETIRED)
        _audit(connection, current, retire, Action.ROLLBACK, by, why, now)
        back = (Status.RETIRED, Status.ACTIVE)
        activation_id = _audit(connection, target, back, Action.ROLLBACK, by, why, now)
        return _publish(connection, activation_id, restored, current, targets, now)


def _previously_active(connection: Connection, name: str, current: int) -> Candidate:
    """The retired version whose latest activation is the most recent, the current one aside."""
    query = (
        select(AuditEntry.version)
        .where(AuditEntry.prompt_name == name, AuditEntry.to_status == Status.ACTIVE.value)
        .order_by(AuditEntry.id.desc())  # type: ignore[union-attr]
    )
    for version in connection.execute(query).scalars():
        if version != current:
            row = _candidate(connection, name, version)
            if row.status == Status.RETIRED:
                return row
    raise InputError(f"{name} has no earlier version to roll back to")


def transition(
    engine: Engine,
    name: str,
    version: int,
    target: str,
    *,
    actor: Actor,
    by: str,
    reason: str,
    now: datetime,
    evidence: dict[str, Any] | None = None,
) -> bool:
    """The shadow runner's moves (proposed -> shadow -> awaiting_approval | rejected), with
    `evidence`'s keys replacing the candidate's top-level ones. False when the version is no
    longer where `actor` could move it from (someone decided first); IllegalTransition when the
    move is never `actor`'s. Activations go through `approve` and `rollback` only."""
    if Status(target) in (Status.APPROVED, Status.ACTIVE, Status.RETIRED) and actor == Actor.PERSON:
        raise ValueError(f"moving to {target} is approve()'s or rollback()'s job")
    with transaction(engine) as connection:
        row = _candidate(connection, name, version)
        possible = sources(target, actor)
        if possible and Status(row.status) not in possible:
            return False
        check_transition(version, row.status, target, actor)
        values = {} if evidence is None else {"evidence": {**(row.evidence or {}), **evidence}}
        if not _compare_and_set(connection, row, target, **values):
            return False
        action = action_for(row.status, target, actor)
        _audit(connection, row, (row.status, target), action, by, reason, now)
    return True


def active_documents(engine: Engine) -> dict[str, dict[str, Any]]:
    """Prompt -> the document its targets should hold: the one its latest activation owed them,
    or, for a version active since the seed (never published through the outbox), its own."""
    latest = (
        select(AuditEntry.prompt_name, func.max(AuditEntry.id).label("activation"))
        .where(AuditEntry.to_status == Status.ACTIVE.value)
        .group_by(AuditEntry.prompt_name)
        .subquery()
    )
    owed = select(OutboxEntry.prompt_name, OutboxEntry.document).join(
        latest,
        (OutboxEntry.prompt_name == latest.c.prompt_name)  # type: ignore[arg-type]
        & (OutboxEntry.activation_id == latest.c.activation),
    )
    with transaction(engine) as connection:
        actives = _rows(
            connection, select(Candidate).where(Candidate.status == Status.ACTIVE.value)
        )
        published = {name: document for name, document in connection.execute(owed)}
    documents: dict[str, dict[str, Any]] = {}
    for row in sorted(actives, key=lambda candidate: candidate.prompt_name):
        document = published.get(row.prompt_name)
        if document is None or document.get("version") != row.version:
            document = document_for(row).model_dump(mode="json")
        documents[row.prompt_name] = document
    return documents


def never_breed(engine: Engine, name: str) -> set[int]:
    """Versions the optimizer's warm pool never takes: rejected, or retired by a rollback."""
    statuses = select(Candidate.version, Candidate.status).where(Candidate.prompt_name == name)
    rolled_back = select(AuditEntry.version).where(
        AuditEntry.prompt_name == name,
        AuditEntry.action == Action.ROLLBACK.value,
        AuditEntry.to_status == Status.RETIRED.value,
    )
    with transaction(engine) as connection:
        current = {int(version): str(status) for version, status in connection.execute(statuses)}
        retired = [int(version) for version in connection.execute(rolled_back).scalars()]
    return never_breeds(current, retired)


def audit_trail(engine: Engine, name: str, version: int | None = None) -> list[AuditEntry]:
    """A prompt's (or one version's) audit rows, oldest first."""
    query = select(AuditEntry).where(AuditEntry.prompt_name == name)
    if version is not None:
        query = query.where(AuditEntry.version == version)
    return _audit_rows(engine, query)


def decisions_since(engine: Engine, after_id: int) -> list[AuditEntry]:
    """A person's decisions recorded after audit row `after_id`, oldest first: approvals (forced
    or not) and rejections (the shadow gate's are `gate` rows, not these), and one row per
    rollback (the one making a version active)."""
    query = select(AuditEntry).where(
        AuditEntry.id > after_id,  # type: ignore[operator]
        AuditEntry.action.in_([action.value for action in DECISIONS])  # type: ignore[union-attr]
        | (
            (AuditEntry.action == Action.ROLLBACK.value)
            & (AuditEntry.to_status == Status.ACTIVE.value)
        ),
    )
    return _audit_rows(engine, query)


def latest_audit_id(engine: Engine) -> int:
    """The newest audit row's id (0 when there is none): where `decisions_since` starts."""
    with transaction(engine) as connection:
        return int(connection.execute(select(func.max(AuditEntry.id))).scalar_one() or 0)


def _audit_rows(engine: Engine, query: Any) -> list[AuditEntry]:
    with transaction(engine) as connection:
        rows = [
            AuditEntry.model_validate(row._mapping)
            for row in connection.execute(query.order_by(AuditEntry.id))
        ]
    return [row.model_copy(update={"at": aware(row.at)}) for row in rows]


def _rows(connection: Connection, query: Any) -> list[Candidate]:
    return [Candidate.model_validate(row._mapping) for row in connection.execute(query)]


def _candidate(connection: Connection, name: str, version: int) -> Candidate:
    query = select(Candidate).where(Candidate.prompt_name == name, Candidate.version == version)
    found = _rows(connection, query)
    if not found:
        raise InputError(f"{name} has no version {version}")
    return found[0]


def _active(connection: Connection, name: str) -> Candidate | None:
    query = select(Candidate).where(
        Candidate.prompt_name == name, Candidate.status == Status.ACTIVE.value
    )
    found = _rows(connection, query)
    return found[0] if found else None


def _require_person(by: str, what: str) -> None:
    if not by.strip():
        raise InputError(f"{what} needs the name of the person who makes it")


def _compare_and_set(connection: Connection, row: Candidate, target: str, **values: Any) -> bool:
    """Write `target` (and `values`) only if the row still has the status it was read with."""
    changed = connection.execute(
        update(Candidate)
        .where(Candidate.id == row.id, Candidate.status == row.status)  # type: ignore[arg-type]
        .values(status=str(target), **values)
    ).rowcount
    return bool(changed)


def _move(
    connection: Connection, row: Candidate, target: Status, raced: str = "", **values: Any
) -> Candidate:
    """Compare and set, or fail the whole decision: someone else moved the row (`raced` names
    it for the person, default its version) first."""
    if not _compare_and_set(connection, row, target, **values):
        raise InputError(f"{raced or f'v{row.version}'} changed status meanwhile; try again")
    return row.model_copy(update={"status": target.value, **values})


def _audit(
    connection: Connection,
    row: Candidate,
    moved: tuple[str, str],
    action: Action,
    by: str,
    reason: str | None,
    now: datetime,
) -> int:
    """One audit row; its id (an activation's id when it makes a version active)."""
    from_status, to_status = moved
    return int(
        connection.execute(
            dialect_insert(connection)(AuditEntry)
            .values(
                prompt_name=row.prompt_name,
                version=row.version,
                from_status=str(from_status),
                to_status=str(to_status),
                action=action.value,
                actor=by,
                reason=reason,
                at=now,
            )
            .returning(AuditEntry.id)  # type: ignore[arg-type]
        ).scalar_one()
    )


def _publish(
    connection: Connection,
    activation_id: int,
    active: Candidate,
    previous: Candidate | None,
    targets: Sequence[str],
    now: datetime,
) -> Activation:
    """Owe every target the newly active version's document, in the activation's transaction."""
    document = document_for(active).model_dump(mode="json")
    enqueue(connection, activation_id, document, targets, now)
    return Activation(
        id=activation_id,
        prompt_name=active.prompt_name,
        version=active.version,
        previous=None if previous is None else previous.version,
        document=document,
        targets=tuple(dict.fromkeys(targets)),
    )
