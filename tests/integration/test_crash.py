"""A `gepa-sidecar run` process killed with SIGKILL mid-stream loses nothing and stores nothing
twice after a restart; SIGTERM finishes the batch, commits and exits 0."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from kafka import KafkaAdminClient
from sqlalchemy import Engine

from sidecar.store.database import create_database_engine
from sidecar.store.repository import count_stored_events, ingest_totals, stored_event_ids
from tests.conftest import Topics
from tests.helpers import encode, make_event, produce, wait_until

TOTAL = 4000


def sidecar_env(kafka_bootstrap: str, topics: Topics, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update(
        SIDECAR_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        SIDECAR_TRAFFIC_TOPIC=topics.traffic,
        SIDECAR_DLQ_TOPIC=topics.dlq,
        SIDECAR_CONSUMER_GROUP=topics.group,
        SIDECAR_DATABASE_URL=database_url,
        SIDECAR_KAFKA_SESSION_TIMEOUT_MS="6000",
        SIDECAR_KAFKA_HEARTBEAT_INTERVAL_MS="1000",
        SIDECAR_INGEST_BATCH_SIZE="20",
        SIDECAR_HTTP_PORT="0",
        SIDECAR_HTTP_HOST="127.0.0.1",
    )
    return env


@pytest.fixture
def start_sidecar(tmp_path: Path) -> Iterator[object]:
    started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"sidecar-{len(started)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "run"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((process, log))
        return process

    yield start
    for process, log in started:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def stream_and_start(
    kafka_bootstrap: str, topics: Topics, database_url: str, start_sidecar: Any, seed: int
) -> tuple[list[dict[str, Any]], dict[str, str], Engine, subprocess.Popen[bytes]]:
    """Produce TOTAL events, start a sidecar, and return once its first batch is stored."""
    rng = random.Random(seed)
    events = [make_event(rng) for _ in range(TOTAL)]
    produce(kafka_bootstrap, topics.traffic, [encode(e) for e in events])
    env = sidecar_env(kafka_bootstrap, topics, database_url)
    engine = create_database_engine(database_url)
    first = start_sidecar(env)
    wait_until(lambda: _stored(engine) > 0, what="the first batch stored")
    return events, env, engine, first


def test_kill_9_mid_stream_then_restart_stores_every_event_exactly_once(
    kafka_bootstrap: str, topics: Topics, database_url: str, start_sidecar: object
) -> None:
    events, env, engine, first = stream_and_start(
        kafka_bootstrap, topics, database_url, start_sidecar, seed=99
    )
    writer = writer_pid(first.pid)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    stored_at_kill = _stored(engine)
    assert 0 < stored_at_kill < TOTAL, "the kill did not land mid-stream"
    assert writer is not None
    wait_until(lambda: not alive(writer), timeout=30, what="the orphaned writer to exit")

    second = start_sidecar(env)  # type: ignore[operator]
    wait_until(lambda: _stored(engine) == TOTAL, timeout=120, what="every event stored")
    ids = stored_event_ids(engine)
    assert len(ids) == len(set(ids)) == TOTAL
    assert set(ids) == {e["event_id"] for e in events}
    totals = ingest_totals(engine)
    assert totals["accepted"] == TOTAL
    assert totals["invalid"] == totals["sampled_out"] == 0

    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    engine.dispose()


def test_sigterm_exits_zero_with_offsets_committed(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str, start_sidecar: object
) -> None:
    rng = random.Random(7)
    produce(kafka_bootstrap, topics.traffic, [encode(make_event(rng)) for _ in range(300)])
    engine = create_database_engine(sqlite_url)
    process = start_sidecar(sidecar_env(kafka_bootstrap, topics, sqlite_url))  # type: ignore[operator]
    wait_until(lambda: _stored(engine) == 300, what="300 events stored")

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    committed = admin.list_group_offsets(topics.group)[topics.group]
    admin.close()
    assert sum(meta.offset for meta in committed.values()) == 300
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
    """The ingest writer: the child started by multiprocessing's spawn (not its tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    for child in children:
        command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in command:
            return int(child)
    return None


def test_a_dead_writer_process_stops_the_sidecar_and_a_restart_loses_nothing(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str, start_sidecar: object, tmp_path: Path
) -> None:
    _, env, engine, first = stream_and_start(
        kafka_bootstrap, topics, sqlite_url, start_sidecar, seed=13
    )
    pid = writer_pid(first.pid)
    assert pid is not None, "no ingest writer process found"
    os.kill(pid, signal.SIGKILL)
    assert first.wait(timeout=60) == 1
    assert "ingest writer process exited" in (tmp_path / "sidecar-0.log").read_text()
    assert _stored(engine) < TOTAL, "the kill did not land mid-stream"

    second = start_sidecar(env)  # type: ignore[operator]
    wait_until(lambda: _stored(engine) == TOTAL, timeout=120, what="every event stored")
    ids = stored_event_ids(engine)
    assert len(ids) == len(set(ids)) == TOTAL
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    engine.dispose()
