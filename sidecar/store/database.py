"""The database engine and its schema migrations; the schema is upgraded at every start-up."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, overload

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic_core import to_json
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError

from sidecar.errors import StoreError

MIGRATIONS = "sidecar.store:migrations"
MIGRATION_LOCK = 0x6E7A_5ED9
"""PostgreSQL advisory lock held by the replica that migrates; the others wait, then find the
schema at head (the leadership locks in sidecar/store/leadership.py are its neighbours)."""


SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite statement waits for another connection's lock before it fails."""

SQLITE_CACHE_KIB = 64 * 1024
"""Page cache per SQLite connection (its default is 2 MiB). The unique index on random event ids
outgrows 2 MiB at ~50,000 events, and from there every batch's inserts and duplicate checks read
index pages back from the OS: ingest slowed as the table grew. Pages are allocated as used."""


def create_database_engine(url: str, read_only: bool = False) -> Engine:
    """An engine for SQLite (WAL, so the CLI can read while `run` writes) or PostgreSQL.
    `read_only`: a SQLite file is left in the journal mode it has, since switching it to WAL
    writes to it (an empty file would become a 4 KiB database)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
            json_serializer=json_text,
        )
        event.listen(engine, "connect", _sqlite_read_pragmas if read_only else _sqlite_pragmas)
        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=5, json_serializer=json_text
    )


def json_text(value: Any) -> str:
    """JSON columns are encoded by pydantic-core (Rust): several times faster than `json`."""
    return to_json(value).decode()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    _write_ahead_log(cursor)
    cursor.close()
    _sqlite_read_pragmas(dbapi_connection, _record)


def _sqlite_read_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _write_ahead_log(cursor: Any) -> None:
    """Switch the file to WAL. The switch takes the whole file and, unlike other statements,
    does not wait for a lock held by another process (two replicas opening a new file at once:
    one fails at once with "database is locked"), so it is tried again within the busy timeout;
    a file already in WAL needs no lock."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe to run on every start and by every replica."""
    config = _alembic_config()
    try:
        with engine.begin() as connection:
            _exclusive(connection)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise StoreError(f"database migration failed: {first_line(exc)}") from exc


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands against this release's migrations."""

    current: str | None
    head: str

    @property
    def problem(self) -> str | None:
        """One line naming what is wrong and the command that fixes it; None at head."""
        if self.current == self.head:
            return None
        if self.current is None:
            return "holds no sidecar schema (`gepa-sidecar run` creates it at start)"
        return (
            f"its schema is at revision {self.current}, this release needs {self.head} "
            "(`gepa-sidecar run` migrates it at start)"
        )


def schema_state(engine: Engine) -> SchemaState:
    """The schema's revision read, never changed: read-only commands must not migrate."""
    script = ScriptDirectory.from_config(_alembic_config())
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise StoreError(f"database unreachable: {first_line(exc)}") from exc
    return SchemaState(current, str(script.get_current_head()))


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config


def _exclusive(connection: Connection) -> None:
    """One migrating replica at a time: a second one waits here until the first has committed,
    then reads the new head, instead of creating the same tables again and failing."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, waited for (30 s)


def ping(engine: Engine) -> bool:
    """True when the database answers a trivial query."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


def first_line(exc: BaseException) -> str:
    """A driver error in one line, for the one-line errors operators see."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@overload
def aware(moment: datetime) -> datetime: ...
@overload
def aware(moment: None) -> None: ...
def aware(moment: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone; the store writes them all in UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
