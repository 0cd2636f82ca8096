"""A `gepa-sidecar run` process killed with SIGKILL mid-stream loses nothing and stores nothing
twice after a restart; SIGTERM finishes the batch, commits and exits 0.

"Mid-stream" does not rely on the machine being slow: the test stores and commits a first part
of the traffic, then holds a lock on the database that stalls the writer, produces the rest,
and kills only once the sidecar's /metrics says it has paused its partitions, i.e. it holds
records it fetched and could not store. Offsets committed before storing would then be past
what is stored when the kill lands (asserted against the broker), and the restart would skip
those records.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from sqlalchemy import Engine, make_url, text

from sidecar.ingest.consumer import COMMIT_INTERVAL_S, POLL_TIMEOUT_MS
from sidecar.store.database import create_database_engine
from sidecar.store.repository import count_stored_events, ingest_totals, stored_event_ids
from tests.conftest import Topics
from tests.helpers import encode, make_event, produce, scaled, wait_until
from tests.processes import PAUSED, Sidecar, Start, sidecar_env

BEFORE_LOCK = 200  # stored and committed before the database is locked
TOTAL = 1000  # the rest arrives while the writer is stalled


@pytest.fixture
def admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    yield client
    client.close()


def committed(admin: KafkaAdminClient, group: str) -> int:
    """How many records the group has committed, over all partitions (from the broker)."""
    offsets = admin.list_group_offsets(group)[group]
    return sum(max(meta.offset, 0) for meta in offsets.values())


@contextmanager
def writes_blocked(database_url: str, engine: Engine) -> Iterator[None]:
    """Hold a lock that stalls every write to the events table (reads still go through)."""
    if engine.dialect.name == "sqlite":
        locker = sqlite3.connect(str(make_url(database_url).database), isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")  # in WAL mode: writers wait, readers do not
            yield
            locker.execute("ROLLBACK")
        finally:
            locker.close()
    else:
        with engine.connect() as locker:
            locker.execute(text("LOCK TABLE events IN EXCLUSIVE MODE"))  # SELECT still allowed
            yield
            locker.rollback()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the database the sidecar under test creates and migrates."""
    made = create_database_engine(database_url)
    yield made
    made.dispose()


@dataclass(frozen=True)
class Stalled:
    events: list[dict[str, Any]]
    env: dict[str, str]
    first: Sidecar


@contextmanager
def stalled_mid_stream(
    kafka_bootstrap: str,
    topics: Topics,
    database_url: str,
    engine: Engine,
    start_sidecar: Start,
    admin: KafkaAdminClient,
    seed: int,
) -> Iterator[Stalled]:
    """Start a sidecar, let it store and commit BEFORE_LOCK events, block writes, produce the
    rest, and yield once it has paused holding fetched records it cannot store. The block
    ends with the `with`."""
    rng = random.Random(seed)
    events = [make_event(rng) for _ in range(TOTAL)]
    produce(kafka_bootstrap, topics.traffic, [encode(e) for e in events[:BEFORE_LOCK]])
    env = sidecar_env(kafka_bootstrap, topics, database_url)
    first = start_sidecar(env)
    wait_until(lambda: _stored(engine) == BEFORE_LOCK, what=f"{BEFORE_LOCK} stored")
    wait_until(
        lambda: committed(admin, topics.group) == BEFORE_LOCK, what=f"{BEFORE_LOCK} committed"
    )
    wait_until(lambda: first.metric(PAUSED) == 0.0, what="the consumer not paused")
    with writes_blocked(database_url, engine):
        produce(kafka_bootstrap, topics.traffic, [encode(e) for e in events[BEFORE_LOCK:]])
        wait_until(first.paused, what="the consumer to pause behind the stalled writer")
        # Not a synchronisation (correct code commits nothing more while the writer is
        # stalled, however long this is): the consumer commits at most once per
        # COMMIT_INTERVAL_S, so this gives code that commits offsets before storing them
        # (the bug this file guards against) the time to do it before the kill.
        time.sleep(2 * COMMIT_INTERVAL_S + POLL_TIMEOUT_MS / 1000)
        yield Stalled(events, env, first)


def test_kill_9_mid_stream_then_restart_stores_every_event_exactly_once(
    kafka_bootstrap: str,
    topics: Topics,
    database_url: str,
    engine: Engine,
    start_sidecar: Start,
    admin: KafkaAdminClient,
) -> None:
    with stalled_mid_stream(
        kafka_bootstrap, topics, database_url, engine, start_sidecar, admin, seed=99
    ) as stalled:
        first = stalled.first
        writer = writer_pid(first.process.pid)
        assert writer is not None, "no ingest writer process found"
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=scaled(10))
        # The kill landed with fetched records unstored: none of them may be committed.
        assert _stored(engine) == BEFORE_LOCK
        assert committed(admin, topics.group) == BEFORE_LOCK
    # Unblocked, the orphaned writer may finish its batch (a duplicate later), then exits.
    wait_until(lambda: not alive(writer), timeout=30, what="the orphaned writer to exit")

    second = start_sidecar(stalled.env)
    wait_until(lambda: _stored(engine) == TOTAL, timeout=120, what="every event stored")
    ids = stored_event_ids(engine)
    assert len(ids) == len(set(ids)) == TOTAL
    assert set(ids) == {e["event_id"] for e in stalled.events}
    totals = ingest_totals(engine)
    assert totals["accepted"] == TOTAL
    assert totals["invalid"] == totals["sampled_out"] == 0

    second.process.send_signal(signal.SIGTERM)
    assert second.process.wait(timeout=scaled(30)) == 0


def test_sigterm_exits_zero_with_offsets_committed(
    kafka_bootstrap: str,
    topics: Topics,
    sqlite_url: str,
    start_sidecar: Start,
    admin: KafkaAdminClient,
) -> None:
    rng = random.Random(7)
    produce(kafka_bootstrap, topics.traffic, [encode(make_event(rng)) for _ in range(300)])
    engine = create_database_engine(sqlite_url)
    sidecar = start_sidecar(sidecar_env(kafka_bootstrap, topics, sqlite_url))
    wait_until(lambda: _stored(engine) == 300, what="300 events stored")

    sidecar.process.send_signal(signal.SIGTERM)
    assert sidecar.process.wait(timeout=scaled(30)) == 0
    assert committed(admin, topics.group) == 300
    engine.dispose()


def _stored(engine: object) -> int:
    try:
        return count_stored_events(engine)  # type: ignore[arg-type]
    except Exception:  # the table appears when the sidecar has migrated
        return 0


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


def writer_pid(parent: int) -> int | None:
    """The ingest writer: the child started by multiprocessing's spawn (not its tracker), from
    whichever of the sidecar's threads started it (the consumer's)."""
    tasks = Path(f"/proc/{parent}/task").glob("*/children")
    children = [child for task in tasks for child in task.read_text().split()]
    for child in children:
        command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in command:
            return int(child)
    return None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_dead_writer_process_stops_the_sidecar_and_a_restart_loses_nothing(
    kafka_bootstrap: str,
    topics: Topics,
    database_url: str,
    engine: Engine,
    start_sidecar: Start,
    admin: KafkaAdminClient,
) -> None:
    with stalled_mid_stream(
        kafka_bootstrap, topics, database_url, engine, start_sidecar, admin, seed=13
    ) as stalled:
        first = stalled.first
        pid = writer_pid(first.process.pid)
        assert pid is not None, "no ingest writer process found"
        os.kill(pid, signal.SIGKILL)
    # Unblocked: nothing is left that could store.
    assert first.process.wait(timeout=scaled(60)) == 1
    assert "ingest writer process exited" in first.log.read_text()
    assert _stored(engine) == BEFORE_LOCK
    assert committed(admin, topics.group) == BEFORE_LOCK

    second = start_sidecar(stalled.env)
    wait_until(lambda: _stored(engine) == TOTAL, timeout=120, what="every event stored")
    ids = stored_event_ids(engine)
    assert len(ids) == len(set(ids)) == TOTAL
    second.process.send_signal(signal.SIGTERM)
    assert second.process.wait(timeout=scaled(30)) == 0
