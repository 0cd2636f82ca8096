"""One leader among replicas for each job that must happen once: optimizing, shadow passes and
delivering the outbox each pay or publish, so on PostgreSQL a session advisory lock elects the
replica that does it. SQLite is a one-replica database: its one process always leads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

OPTIMIZER_LOCK = 0x6E7A_5EDA
SHADOW_LOCK = 0x6E7A_5EDB
PUBLISHER_LOCK = 0x6E7A_5EDC


@contextmanager
def leadership(engine: Engine, key: int) -> Iterator[bool]:
    """True while this process holds the lock `key` (always, on SQLite)."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as connection:
        held = bool(
            connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one()
        )
        try:
            yield held
        finally:
            if held:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()
