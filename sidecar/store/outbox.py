"""Repository functions of the outbox: what each target is still owed, and how a delivery went.

Rows are written by `promotions` in the transaction that makes a version active, so an approval
and what it owes the targets commit together. A delivery commits its attempt first: after a crash
between delivering and `mark_delivered`, the next attempt sees `attempts > 0` and can ask the
target whether it already holds the activation before delivering it again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, select, update

from sidecar.errors import InputError
from sidecar.store.repository import dialect_insert, transaction
from sidecar.store.tables import OutboxEntry

PENDING = "pending"
DELIVERED = "delivered"
SUPERSEDED = "superseded"


@dataclass(frozen=True)
class OutboxItem:
    """One activation owed to one target; `attempts` counts deliveries begun before now."""

    id: int
    activation_id: int
    prompt_name: str
    version: int
    target: str
    document: dict[str, Any]
    attempts: int
    status: str


_COLUMNS = (
    OutboxEntry.id,
    OutboxEntry.activation_id,
    OutboxEntry.prompt_name,
    OutboxEntry.version,
    OutboxEntry.target,
    OutboxEntry.document,
    OutboxEntry.attempts,
    OutboxEntry.status,
)


def _item(row: Row[Any]) -> OutboxItem:
    return OutboxItem(**row._mapping)


def enqueue(
    connection: Connection,
    activation_id: int,
    document: dict[str, Any],
    targets: Sequence[str],
    now: datetime,
) -> None:
    """One pending row per target, inside the caller's transaction (the activation's own)."""
    rows = [
        {
            "activation_id": activation_id,
            "prompt_name": document["name"],
            "version": document["version"],
            "target": target,
            "document": document,
            "status": PENDING,
            "attempts": 0,
            "created_at": now,
        }
        for target in dict.fromkeys(targets)
    ]
    if rows:
        connection.execute(dialect_insert(connection)(OutboxEntry).values(rows))


def pending_outbox(engine: Engine, targets: Sequence[str] | None = None) -> list[OutboxItem]:
    """Rows still owed, oldest first (a target gets activations in the order they were made);
    only those of `targets` when given."""
    query = select(*_COLUMNS).where(OutboxEntry.status == PENDING).order_by(OutboxEntry.id)  # type: ignore[arg-type]
    if targets is not None:
        query = query.where(OutboxEntry.target.in_(list(targets)))  # type: ignore[attr-defined]
    with transaction(engine) as connection:
        return [_item(row) for row in connection.execute(query)]


def begin_attempt(engine: Engine, item_id: int, now: datetime) -> OutboxItem:
    """Count a delivery attempt and commit it before anything is delivered. Returns the item as
    it was before this attempt: `attempts > 0` means an earlier one may have reached the target.
    A row no longer pending is returned unchanged (nothing is owed; its status says why)."""
    with transaction(engine) as connection:
        counted = connection.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id == item_id, OutboxEntry.status == PENDING)  # type: ignore[arg-type]
            .values(attempts=OutboxEntry.attempts + 1, updated_at=now)
        ).rowcount
        row = connection.execute(
            select(*_COLUMNS).where(OutboxEntry.id == item_id)  # type: ignore[arg-type]
        ).first()
    if row is None:
        raise InputError(f"the outbox has no item {item_id}")
    item = _item(row)
    if counted:
        return replace(item, attempts=item.attempts - 1)
    return item


def mark_delivered(engine: Engine, item_id: int, now: datetime) -> None:
    _settle(engine, item_id, now, status=DELIVERED, published_at=now, last_error=None)


def mark_failed(engine: Engine, item_id: int, error: str, now: datetime) -> None:
    """The row stays pending (the target is owed it still); the error is kept, in one line of
    at most 500 characters."""
    _settle(engine, item_id, now, last_error=" ".join(error.split())[:500] or "failed")


def mark_superseded(engine: Engine, item_id: int, now: datetime) -> None:
    """A newer activation of the same prompt replaces this one at a latest-only target."""
    _settle(engine, item_id, now, status=SUPERSEDED)


def _settle(engine: Engine, item_id: int, now: datetime, **values: Any) -> None:
    """Update a pending row; a row already delivered or superseded is left as it is."""
    with transaction(engine) as connection:
        connection.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id == item_id, OutboxEntry.status == PENDING)  # type: ignore[arg-type]
            .values(updated_at=now, **values)
        )
