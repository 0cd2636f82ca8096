"""The database engine and its schema migrations; the schema is upgraded at every start-up.
Read-only clients (the CLI's reading commands) open it without migrating, and are refused with
one line when the schema is missing or behind this gepa-sidecar's."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from pydantic_core import to_json
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from sidecar.errors import ConfigError, StoreError

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


def create_database_engine(url: str) -> Engine:
    """An engine for SQLite (WAL, so the CLI can read while `run` writes) or PostgreSQL."""
    return _engine(url, _sqlite_pragmas, None)


def _engine(url: str, on_sqlite: Any, on_postgresql: Any) -> Engine:
    """An engine whose every new connection is set up by the dialect's hook (None: none)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
            json_serializer=json_text,
        )
        event.listen(engine, "connect", on_sqlite)
        return engine
    engine = create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=5, json_serializer=json_text
    )
    if on_postgresql is not None:
        event.listen(engine, "connect", on_postgresql)
    return engine


def missing_sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names when it does not exist (connecting would create it empty,
    which a client must never do because of a typo); None for a file that exists, memory, or
    another database."""
    parsed = make_url(url)
    name = parsed.database
    if not parsed.drivername.startswith("sqlite") or name in (None, "", ":memory:"):
        return None
    path = Path(str(name))
    return None if path.exists() else path


def json_text(value: Any) -> str:
    """JSON columns are encoded by pydantic-core (Rust): several times faster than `json`."""
    return to_json(value).decode()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    _write_ahead_log(cursor)
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


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to the newest revision (or to `revision`, for tests of older schemas);
    safe to run on every start and by every replica."""
    config = _alembic_config()
    try:
        with engine.begin() as connection:
            _exclusive(connection)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except SQLAlchemyError as exc:
        raise StoreError(f"database migration failed: {first_line(exc)}") from exc


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config


def head_revision() -> str:
    """The newest schema revision this gepa-sidecar knows (from its migrations, never typed)."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships its migrations
        raise StoreError(f"no schema migrations found in {MIGRATIONS}")
    return head


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands against this gepa-sidecar's migrations."""

    current: str | None
    """The revision recorded in the database; None when it has no sidecar schema at all."""
    head: str
    known: bool
    """Whether `current` is one of this gepa-sidecar's revisions (else a newer one wrote it)."""

    @property
    def at_head(self) -> bool:
        return self.current == self.head


def schema_state(engine: Engine) -> SchemaState:
    """The database's revision against head, read without migrating or writing anything."""
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise StoreError(f"database error: {first_line(exc)}") from exc
    script = ScriptDirectory.from_config(_alembic_config())
    known = True
    if current is not None:
        try:
            known = script.get_revision(current) is not None
        except CommandError:
            known = False
    return SchemaState(current, head_revision(), known)


def schema_problem(state: SchemaState, where: str) -> str | None:
    """One line saying why a client cannot read the database at `where`, and what fixes it;
    None when the schema is at head."""
    if state.at_head:
        return None
    prefix = f"SIDECAR_DATABASE_URL: the database at {where}"
    if state.current is None:
        return f"{prefix} has no sidecar schema (start `gepa-sidecar run` once to create it)"
    if not state.known:
        return (
            f"{prefix} is at revision {state.current}, newer than this gepa-sidecar knows "
            f"(it needs {state.head}): upgrade gepa-sidecar"
        )
    return (
        f"{prefix} is at revision {state.current}, this gepa-sidecar needs {state.head}: "
        "run `gepa-sidecar run` (it migrates at start)"
    )


def open_read_only(url: str) -> Engine:
    """An engine whose every connection refuses writes, on a schema already at head: what a
    reading client uses, so it never migrates or changes the database it reads. A missing or
    outdated schema is a ConfigError naming the command that fixes it."""
    engine = _engine(url, _sqlite_query_only, _postgresql_read_only)
    try:
        problem = schema_problem(schema_state(engine), _where(engine))
    except BaseException:
        engine.dispose()
        raise
    if problem is not None:
        engine.dispose()
        raise ConfigError(problem)
    return engine


def _sqlite_query_only(dbapi_connection: Any, _record: Any) -> None:
    """No journal-mode switch (it writes the file's header), and no write at all."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


def _postgresql_read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    cursor.close()
    dbapi_connection.commit()


def _where(engine: Engine) -> str:
    """The database a person named: a SQLite file's path, else the URL without its password."""
    if engine.url.get_backend_name() == "sqlite":
        return str(engine.url.database)
    return engine.url.render_as_string(hide_password=True)


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
