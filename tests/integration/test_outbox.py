"""The outbox against real databases (a SQLite file and PostgreSQL): each activation owed to
each target once, attempts committed before delivery, rows settled once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from sidecar.errors import InputError, StoreError
from sidecar.store.database import aware
from sidecar.store.outbox import (
    begin_attempt,
    enqueue,
    mark_delivered,
    mark_failed,
    mark_superseded,
    pending_outbox,
)
from sidecar.store.repository import seed_prompt, transaction
from sidecar.store.tables import OutboxEntry
from tests.versions import NAME, add_version, approved, table

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str, migrated_engine: Callable[[str], Engine]) -> Engine:
    engine = migrated_engine(database_url)
    seed_prompt(engine, NAME, {"system_prompt": "You help customers."}, NOW)
    return engine


def test_outbox_attempts_are_committed_before_delivery_and_rows_settle_once(
    engine: Engine,
) -> None:
    first = approved(engine, add_version(engine, "awaiting_approval"))
    second = approved(engine, add_version(engine, "awaiting_approval"))
    files = pending_outbox(engine, ["file"])
    assert [(i.activation_id, i.target) for i in files] == [(first.id, "file"), (second.id, "file")]
    assert pending_outbox(engine, []) == []
    old, new = files
    assert begin_attempt(engine, new.id, NOW).attempts == 0
    assert pending_outbox(engine, ["file"])[1].attempts == 1  # committed before delivering
    mark_failed(engine, new.id, "disk full:\n  /prompts\n", NOW)
    [failed] = [row for row in table(engine, OutboxEntry) if row.id == new.id]
    assert (failed.status, failed.last_error) == ("pending", "disk full: /prompts")
    again = begin_attempt(engine, new.id, NOW)
    assert (again.attempts, again.status) == (1, "pending")  # an earlier attempt may have landed
    mark_superseded(engine, old.id, NOW)
    mark_delivered(engine, new.id, NOW)
    assert pending_outbox(engine, ["file"]) == []
    rows = {row.id: row for row in table(engine, OutboxEntry)}
    assert (rows[old.id].status, rows[old.id].published_at) == ("superseded", None)
    assert (rows[new.id].status, aware(rows[new.id].published_at)) == ("delivered", NOW)
    assert rows[new.id].last_error is None and rows[new.id].attempts == 2
    done = begin_attempt(engine, new.id, NOW)  # nothing is owed any more: unchanged
    assert (done.status, done.attempts) == ("delivered", 2)
    mark_failed(engine, new.id, "late", NOW)  # a settled row stays settled
    assert {row.id: row.status for row in table(engine, OutboxEntry)}[new.id] == "delivered"
    with pytest.raises(InputError, match=r"^the outbox has no item 999$"):
        begin_attempt(engine, 999, NOW)


def test_an_activation_is_owed_to_a_target_once(engine: Engine) -> None:
    activation = approved(engine, add_version(engine, "awaiting_approval"))
    with pytest.raises(StoreError), transaction(engine) as connection:
        enqueue(connection, activation.id, activation.document, ["file"], NOW)
    with transaction(engine) as connection:
        enqueue(connection, activation.id + 1, activation.document, ["file", "file"], NOW)
    owed = [(i.activation_id, i.target) for i in pending_outbox(engine, ["file"])]
    assert owed == [(activation.id, "file"), (activation.id + 1, "file")]
