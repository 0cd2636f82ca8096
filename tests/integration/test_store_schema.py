"""How a reading client finds the schema, on a real SQLite file and PostgreSQL: the revision is
read against head without migrating, a missing or outdated schema is one line naming the command
that fixes it, and the read-only engine refuses every write."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from sidecar.errors import ConfigError, StoreError
from sidecar.store.database import (
    MIGRATIONS,
    create_database_engine,
    head_revision,
    migrate,
    open_read_only,
    schema_problem,
    schema_state,
)
from sidecar.store.prompt_reads import prompt_names
from sidecar.store.repository import seed_prompt


def previous_revision() -> str:
    """The revision just before head, found from the migrations (head moves as they are added)."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    script = ScriptDirectory.from_config(config)
    previous = script.get_revision(script.get_current_head()).down_revision
    assert isinstance(previous, str)
    return previous


def test_head_is_the_newest_migration_on_disk() -> None:
    versions = Path(__file__).parents[2] / "sidecar" / "store" / "migrations" / "versions"
    newest = max(path.name.split("_")[0] for path in versions.glob("0*.py"))
    assert head_revision() == newest
    assert previous_revision() < newest


def test_an_empty_database_has_no_schema_and_stays_empty(database_url: str) -> None:
    engine = create_database_engine(database_url)
    try:
        state = schema_state(engine)
        assert (state.current, state.head, state.at_head) == (None, head_revision(), False)
        problem = schema_problem(state, "here")
        assert problem == (
            "SIDECAR_DATABASE_URL: the database at here has no sidecar schema "
            "(start `gepa-sidecar run` once to create it)"
        )
        with pytest.raises(ConfigError, match="has no sidecar schema"):
            open_read_only(database_url)
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_an_outdated_schema_is_refused_and_left_as_it_is(database_url: str) -> None:
    previous = previous_revision()
    engine = create_database_engine(database_url)
    try:
        migrate(engine, previous)
        state = schema_state(engine)
        assert (state.current, state.known, state.at_head) == (previous, True, False)
        with pytest.raises(ConfigError) as refused:
            open_read_only(database_url)
        message = str(refused.value)
        assert f"is at revision {previous}, this gepa-sidecar needs {head_revision()}" in message
        assert "run `gepa-sidecar run` (it migrates at start)" in message
        assert "\n" not in message
        assert schema_state(engine).current == previous
    finally:
        engine.dispose()


def test_a_schema_newer_than_this_sidecar_says_to_upgrade(
    database_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    engine = migrated_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    state = schema_state(engine)
    assert (state.current, state.known) == ("9999", False)
    with pytest.raises(ConfigError, match=r"revision 9999, newer than .*: upgrade gepa-sidecar"):
        open_read_only(database_url)


def test_the_read_only_engine_reads_and_refuses_every_write(
    database_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    writer = migrated_engine(database_url)
    seed_prompt(writer, "customer-care", {"system_prompt": "Help."}, datetime.now(UTC))
    reader = open_read_only(database_url)
    try:
        assert schema_state(reader).at_head
        assert prompt_names(reader) == ["customer-care"]
        with pytest.raises(StoreError):
            seed_prompt(reader, "billing", {"system_prompt": "Bill."}, datetime.now(UTC))
    finally:
        reader.dispose()
    assert prompt_names(writer) == ["customer-care"]
