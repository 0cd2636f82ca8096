"""The last failure of each model role, shared by every process that calls models (`run`, the
`optimize` and `shadow` commands) and read by `status`, which runs in a process of its own.

A row per (role, kind of error); the gateway writes one when it logs a failure (the first, then
at most once a minute with the count since), so a provider that fails every call costs a write
a minute, not a write a call.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlmodel import col

from sidecar.llm.failures import FailureNotice
from sidecar.store.database import aware
from sidecar.store.repository import dialect_insert, transaction
from sidecar.store.tables import ModelError


def record_model_error(engine: Engine, notice: FailureNotice) -> None:
    """Add the notice's failures to its (role, kind) row; its message and time become the
    last ones. Raises StoreError when the database cannot take it."""
    with transaction(engine) as connection:
        statement = dialect_insert(connection)(ModelError).values(
            role=notice.role,
            kind=notice.kind,
            message=notice.message,
            count=notice.count,
            first_at=notice.at,
            last_at=notice.at,
        )
        excluded = statement.excluded
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["role", "kind"],
                set_={
                    "message": excluded.message,
                    "count": ModelError.count + excluded.count,
                    "last_at": excluded.last_at,
                },
            )
        )


class StoredFailures:
    """A gateway's failure sink: each notice kept in the database (`record_model_error`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, notice: FailureNotice) -> None:
        record_model_error(self.engine, notice)


def last_model_errors(engine: Engine, roles: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per role: its latest failure (`kind`, `last_error`, `last_error_at`), how many failures
    of that kind were kept (`count`, since `first_error_at`); None and 0 for a role that never
    failed."""
    query = select(
        col(ModelError.role),
        col(ModelError.kind),
        col(ModelError.message),
        col(ModelError.count),
        col(ModelError.first_at),
        col(ModelError.last_at),
    ).order_by(col(ModelError.last_at))
    with transaction(engine) as connection:
        rows = connection.execute(query).all()
    found: dict[str, dict[str, Any]] = {
        role: {
            "kind": None,
            "last_error": None,
            "last_error_at": None,
            "first_error_at": None,
            "count": 0,
        }
        for role in roles
    }
    for role, kind, message, count, first_at, last_at in rows:  # the latest of a role stays
        found[role] = {
            "kind": kind,
            "last_error": message,
            "last_error_at": _iso(last_at),
            "first_error_at": _iso(first_at),
            "count": int(count),
        }
    return found


def _iso(moment: datetime) -> str:
    return aware(moment).isoformat()
