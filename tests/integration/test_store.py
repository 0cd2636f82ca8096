"""The store against real databases: every test runs on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlmodel import Session, SQLModel, select

from sidecar.errors import StoreError
from sidecar.events import ConsumedEvent, components_sha256
from sidecar.store import repository
from sidecar.store.database import MIGRATIONS, create_database_engine, migrate, ping
from sidecar.store.repository import (
    count_stored_events,
    ingest_totals,
    seed_prompt,
    status_summary,
    store_events,
    stored_event_ids,
)
from sidecar.store.tables import AuditEntry, Candidate, Event, Judgment
from tests.helpers import consumed, scaled

NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
UNREACHABLE_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2"
SEED = {"system_prompt": "You are a helpful customer care assistant."}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_database_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def migrated(engine: Engine) -> Engine:
    migrate(engine)
    return engine


def as_utc(value: datetime) -> datetime:
    """SQLite hands timestamps back naive; they were stored as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# --- migrations -------------------------------------------------------------------------------


def test_migrate_creates_every_table(engine: Engine) -> None:
    assert inspect(engine).get_table_names() == []
    migrate(engine)
    tables = set(inspect(engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables
    assert tables - set(SQLModel.metadata.tables) == {"alembic_version"}


def test_migrate_twice_is_a_no_op(migrated: Engine) -> None:
    rng = random.Random(1)
    store_events(migrated, consumed(rng, 3), {}, NOW)
    before = set(inspect(migrated).get_table_names())
    migrate(migrated)
    assert set(inspect(migrated).get_table_names()) == before
    assert count_stored_events(migrated) == 3


def test_migrated_schema_matches_the_models(migrated: Engine) -> None:
    with migrated.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []


# --- store_events -----------------------------------------------------------------------------


def test_store_events_inserts_and_counts(migrated: Engine) -> None:
    batch = consumed(random.Random(2), 5)
    counts = store_events(migrated, batch, {}, NOW)
    assert dict(counts) == {("customer-care", "accepted"): 5}
    assert count_stored_events(migrated) == 5
    assert count_stored_events(migrated, "customer-care") == 5
    assert count_stored_events(migrated, "other-prompt") == 0
    assert sorted(stored_event_ids(migrated)) == sorted(str(c.event.event_id) for c in batch)
    assert ingest_totals(migrated) == {
        "accepted": 5,
        "sampled_out": 0,
        "invalid": 0,
        "duplicate": 0,
    }


def test_same_id_twice_in_one_batch_is_one_row_and_one_duplicate(migrated: Engine) -> None:
    [item] = consumed(random.Random(3), 1)
    again = ConsumedEvent(item.event, item.partition, item.offset + 1)
    counts = store_events(migrated, [item, again], {}, NOW)
    assert dict(counts) == {("customer-care", "accepted"): 1, ("customer-care", "duplicate"): 1}
    assert stored_event_ids(migrated) == [str(item.event.event_id)]


def test_a_redelivered_batch_is_all_duplicates(migrated: Engine) -> None:
    batch = consumed(random.Random(4), 4)
    store_events(migrated, batch, {}, NOW)
    counts = store_events(migrated, batch, {}, NOW)
    assert dict(counts) == {("customer-care", "duplicate"): 4}
    assert count_stored_events(migrated) == 4
    ids = stored_event_ids(migrated)
    assert len(ids) == len(set(ids)) == 4
    assert ingest_totals(migrated)["accepted"] == 4
    assert ingest_totals(migrated)["duplicate"] == 4


def test_other_outcomes_are_added_and_totals_accumulate(migrated: Engine) -> None:
    rng = random.Random(5)
    others = {("customer-care", "sampled_out"): 2, ("customer-care", "invalid"): 1}
    counts = store_events(migrated, consumed(rng, 3), others, NOW)
    assert dict(counts) == {**others, ("customer-care", "accepted"): 3}
    store_events(migrated, consumed(rng, 2), {("billing-bot", "invalid"): 4}, NOW)
    store_events(migrated, [], {("customer-care", "sampled_out"): 5}, NOW)
    assert ingest_totals(migrated) == {
        "accepted": 5,
        "sampled_out": 7,
        "invalid": 5,
        "duplicate": 0,
    }
    assert count_stored_events(migrated) == 5


LARGE = 500


def test_a_large_batch_then_a_partly_repeated_one(migrated: Engine) -> None:
    n = 2 * LARGE + 200
    batch = consumed(random.Random(6), n)
    counts = store_events(migrated, batch, {}, NOW)
    assert counts[("customer-care", "accepted")] == n
    assert count_stored_events(migrated) == n
    assert len(set(stored_event_ids(migrated))) == n
    # Part of it again, plus new ones: conflict detection still tells them apart.
    mixed = batch[: LARGE + 1] + consumed(random.Random(7), 10)
    counts = store_events(migrated, mixed, {}, NOW)
    assert dict(counts) == {
        ("customer-care", "duplicate"): LARGE + 1,
        ("customer-care", "accepted"): 10,
    }
    assert count_stored_events(migrated) == n + 10


def test_stored_rows_keep_every_field(migrated: Engine) -> None:
    rng = random.Random(8)
    trace = {"model": "m", "latency_ms": 812, "tokens": {"prompt": 120, "completion": 40}}
    metadata = {"segment": "billing", "locale": "en", "nested": {"a": [1, 2]}}
    [item] = consumed(
        rng,
        1,
        partition=1,
        first_offset=2**40,
        inputs={"user_message": "Où est ma commande ?", "order": "A-17"},
        output="Elle arrive demain.",
        trace=trace,
        metadata=metadata,
        prompt_version=3,
    )
    [plain] = consumed(rng, 1, metadata={"segment": 7})
    store_events(migrated, [item, plain], {}, NOW)
    with Session(migrated) as session:
        row = session.exec(select(Event).where(Event.event_id == str(item.event.event_id))).one()
        bare = session.exec(select(Event).where(Event.event_id == str(plain.event.event_id))).one()
    assert row.prompt_name == "customer-care"
    assert row.prompt_version == 3
    assert row.inputs == {"user_message": "Où est ma commande ?", "order": "A-17"}
    assert row.output == "Elle arrive demain."
    assert row.trace == trace
    assert row.meta == metadata
    assert row.segment == "billing"
    assert row.source_partition == 1
    assert row.source_offset == 2**40
    assert as_utc(row.timestamp) == item.event.timestamp
    assert as_utc(row.received_at) == NOW
    assert bare.segment is None
    assert bare.trace is None


# --- seed_prompt and status -------------------------------------------------------------------


def test_seed_prompt_creates_version_one_once(migrated: Engine) -> None:
    assert seed_prompt(migrated, "customer-care", SEED, NOW) is True
    assert seed_prompt(migrated, "customer-care", {"system_prompt": "other"}, NOW) is False
    with Session(migrated) as session:
        candidates = session.exec(select(Candidate)).all()
        audit = session.exec(select(AuditEntry)).all()
    assert len(candidates) == 1
    [seed] = candidates
    assert (seed.prompt_name, seed.version, seed.status) == ("customer-care", 1, "active")
    assert seed.components == SEED
    assert seed.sha256 == components_sha256(SEED)
    assert seed.parents == []
    assert len(audit) == 1
    [entry] = audit
    assert (entry.prompt_name, entry.version, entry.actor) == ("customer-care", 1, "config")
    assert (entry.from_status, entry.to_status) == (None, "active")


def test_status_summary(migrated: Engine) -> None:
    rng = random.Random(9)
    store_events(migrated, consumed(rng, 4), {("customer-care", "sampled_out"): 3}, NOW)
    seed_prompt(migrated, "customer-care", SEED, NOW)
    seed_prompt(migrated, "billing-bot", {"system_prompt": "Billing."}, NOW)
    summary = status_summary(migrated)
    assert summary["events"] == {
        "accepted": 4,
        "sampled_out": 3,
        "invalid": 0,
        "duplicate": 0,
        "judged": 0,
        "judge_errors": 0,
        "expired": 0,
    }
    assert summary["optimization"] == {"runs": 0, "metric_calls": 0, "cost_usd": 0.0}
    nothing_published = {"published": {}, "pending_publishes": 0}
    assert summary["prompts"] == {
        "billing-bot": {"active_version": 1, **nothing_published},
        "customer-care": {"active_version": 1, **nothing_published},
    }


# --- errors -----------------------------------------------------------------------------------


def test_ping_is_true_on_a_live_database(migrated: Engine) -> None:
    assert ping(migrated) is True


def unreachable(database_url: str, tmp_path: Path) -> str:
    """The same kind of database, but one that cannot be reached or opened."""
    if database_url.startswith("postgresql"):
        return UNREACHABLE_POSTGRES
    return f"sqlite:///{tmp_path / 'no-such-directory' / 'sidecar.db'}"


def test_an_unreachable_database_is_a_one_line_store_error(
    database_url: str, tmp_path: Path
) -> None:
    engine = create_database_engine(unreachable(database_url, tmp_path))
    try:
        assert ping(engine) is False
        with pytest.raises(StoreError) as stored:
            store_events(engine, consumed(random.Random(10), 1), {}, NOW)
        with pytest.raises(StoreError) as migrating:
            migrate(engine)
        with pytest.raises(StoreError) as summarising:
            repository.status_summary(engine)
    finally:
        engine.dispose()
    for raised in (stored, migrating, summarising):
        message = str(raised.value)
        assert message.strip()
        assert "\n" not in message
        assert "OperationalError" in message
    if database_url.startswith("postgresql"):
        assert "port 1" in str(stored.value)
    assert not (tmp_path / "no-such-directory").exists()


# --- a replica racing us with the same event ids -----------------------------------------------


def test_an_id_inserted_by_another_replica_meanwhile_is_not_ours(migrated: Engine) -> None:
    """Between our look-up and our insert another consumer stored the same id (from another
    position): ON CONFLICT skips it and it must not count as accepted by us."""
    rng = random.Random(11)
    theirs = consumed(rng, 1, partition=1, first_offset=5)
    ours = [ConsumedEvent(theirs[0].event, 0, 9), *consumed(rng, 2, first_offset=10)]
    store_events(migrated, theirs, {}, NOW)
    with repository.transaction(migrated) as connection:
        new = {str(item.event.event_id): item for item in ours}
        inserted = repository._insert_events(connection, new, NOW)
    assert inserted == {str(item.event.event_id) for item in ours[1:]}
    assert count_stored_events(migrated) == 3


def test_timestamps_with_an_offset_keep_their_instant(migrated: Engine) -> None:
    [item] = consumed(random.Random(12), 1, timestamp="2026-11-25T14:00:00+02:00")
    store_events(migrated, [item], {}, NOW)
    with Session(migrated) as session:
        row = session.exec(select(Event)).one()
    assert as_utc(row.timestamp) == datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


# --- replicas and upgrades ---------------------------------------------------------------------


MIGRATING_REPLICA = """
import sys
from sidecar.store.database import create_database_engine, migrate
engine = create_database_engine(sys.argv[1])
sys.stdin.readline()  # both replicas are up: migrate together
migrate(engine)
"""


def test_two_replicas_migrating_a_fresh_database_at_once_both_succeed(
    database_url: str, engine: Engine
) -> None:
    """Two replicas of a new deployment start together: both migrate, neither fails on the
    other's half-made schema, and the schema is at head once. Processes, as replicas are
    (alembic's `op` and `context` are per process, not per thread)."""
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATING_REPLICA, database_url],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for replica in replicas:
        assert replica.stdin is not None
        replica.stdin.write(b"go\n")
    for replica in replicas:
        assert replica.stdin is not None
        replica.stdin.flush()
    outcomes = [replica.communicate(timeout=scaled(60)) for replica in replicas]
    assert [replica.returncode for replica in replicas] == [0, 0], outcomes
    with engine.connect() as connection:
        heads = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert [found for (found,) in heads] == [head]
    assert differences == []


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config


def upgrade_to(engine: Engine, revision: str) -> None:
    """The schema as an older release left it."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def test_upgrading_a_first_release_database_keeps_its_rows(engine: Engine) -> None:
    """A database the first release (revision 0001) filled: events, counts, a judgment and the
    seed's audit row survive the upgrade to head and read through today's models."""
    upgrade_to(engine, "0001")
    events = consumed(random.Random(21), 5)
    store_events(engine, events, {("customer-care", "invalid"): 2}, NOW)
    with engine.begin() as connection:
        first = connection.execute(text("SELECT min(id) FROM events")).scalar_one()
        connection.execute(
            text(
                "INSERT INTO judgments (event_row_id, prompt_name, prompt_version, judge_version,"
                " status, score, feedback, attempts, created_at)"
                " VALUES (:event, 'customer-care', 1, 'judge-v1', 'ok', 0.75, 'Fine.', 1, :at)"
            ),
            {"event": first, "at": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO audit_log (prompt_name, version, from_status, to_status, actor, at)"
                " VALUES ('customer-care', 1, NULL, 'active', 'config', :at)"
            ),
            {"at": NOW},
        )
    migrate(engine)
    assert sorted(stored_event_ids(engine)) == sorted(str(e.event.event_id) for e in events)
    assert ingest_totals(engine)["invalid"] == 2
    with Session(engine) as session:
        judgment = session.exec(select(Judgment)).one()
        audit = session.exec(select(AuditEntry)).one()
    assert (judgment.event_row_id, judgment.score, judgment.feedback) == (first, 0.75, "Fine.")
    assert judgment.next_attempt_at is None
    assert (audit.action, audit.to_status, as_utc(audit.at)) == ("seed", "active", NOW)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), SQLModel.metadata) == []
