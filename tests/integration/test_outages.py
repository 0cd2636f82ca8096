"""Failure paths of ingest: the database or the broker goes away and comes back. Nothing is
lost, nothing is stored twice, and the consumer never dies of it."""

from __future__ import annotations

import logging
import random
import signal
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, text

from sidecar.ingest.consumer import TrafficConsumer
from sidecar.metrics import Metrics
from sidecar.runtime.broker import EmbeddedBroker, free_port
from sidecar.runtime.kafka import ensure_topics
from sidecar.store.repository import count_stored_events, ingest_totals
from tests.conftest import Topics
from tests.helpers import (
    encode,
    make_event,
    produce,
    read_all,
    scaled,
    sidecar_settings,
    wait_until,
)
from tests.processes import Start, sidecar_env


@pytest.fixture
def engine(postgres_url: str, migrated_engine: Callable[[str], Engine]) -> Engine:
    return migrated_engine(postgres_url)


def start(
    settings: Any, metrics: Metrics | None = None
) -> tuple[TrafficConsumer, threading.Thread]:
    consumer = TrafficConsumer(
        settings, str(settings.kafka_bootstrap_servers), metrics or Metrics(["customer-care"])
    )
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    return consumer, thread


def stop(consumer: TrafficConsumer, thread: threading.Thread) -> None:
    consumer.stop()
    thread.join(timeout=scaled(60))
    assert not thread.is_alive(), "consumer did not stop"


def events_table(engine: Engine, name_from: str, name_to: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE {name_from} RENAME TO {name_to}"))


def store_failures(caplog: pytest.LogCaptureFixture) -> int:
    return sum("ingest batch not stored" in r.getMessage() for r in caplog.records)


def test_database_outage_is_retried_until_it_is_back(
    kafka_bootstrap: str,
    topics: Topics,
    postgres_url: str,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sidecar.ingest")
    settings = sidecar_settings(kafka_bootstrap, topics, postgres_url)
    rng = random.Random(5)
    consumer, thread = start(settings)
    try:
        assert consumer.wait_assigned(scaled(30))
        events_table(engine, "events", "events_away")
        produce(kafka_bootstrap, topics.traffic, [encode(make_event(rng)) for _ in range(50)])
        wait_until(lambda: store_failures(caplog) >= 2, what="the store to fail and be retried")
        assert thread.is_alive()
        events_table(engine, "events_away", "events")
        wait_until(lambda: count_stored_events(engine) == 50, what="the batch stored once back")
    finally:
        stop(consumer, thread)
    assert ingest_totals(engine) == {
        "accepted": 50,
        "sampled_out": 0,
        "invalid": 0,
        "duplicate": 0,
    }


def test_stop_during_a_database_outage_commits_nothing_and_loses_nothing(
    kafka_bootstrap: str,
    topics: Topics,
    postgres_url: str,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sidecar.ingest")
    settings = sidecar_settings(kafka_bootstrap, topics, postgres_url, ingest_batch_size=10)
    rng = random.Random(6)
    consumer, thread = start(settings)
    assert consumer.wait_assigned(scaled(30))
    events_table(engine, "events", "events_away")
    produce(kafka_bootstrap, topics.traffic, [encode(make_event(rng)) for _ in range(30)])
    wait_until(lambda: store_failures(caplog) >= 1, what="the store to fail")
    stop(consumer, thread)
    events_table(engine, "events_away", "events")
    assert count_stored_events(engine) == 0

    consumer, thread = start(settings)
    try:
        wait_until(lambda: count_stored_events(engine) == 30, what="all 30 after the restart")
    finally:
        stop(consumer, thread)
    assert ingest_totals(engine)["accepted"] == 30


def test_broker_restart_is_survived_when_the_new_log_outgrows_the_old_position(
    sqlite_url: str, migrated_engine: Callable[[str], Engine], start_sidecar: Start
) -> None:
    """The embedded broker keeps nothing across a restart. The sidecar is held (SIGSTOP) across
    it, so when it looks again the recreated topic's new log is longer than the position it had
    read the old one to: no fetch is out of range, and the group it rejoins has no offsets, so
    the default reset (`latest`) would skip to the end. Only the topic's new id says that the
    whole new log is unread: it must be read from the start. The dead-letter producer must
    keep working too."""
    port = free_port()
    name = f"t-{uuid.uuid4().hex[:8]}"
    topics = Topics(name, name + ".dlq", f"g-{uuid.uuid4().hex[:8]}")
    engine = migrated_engine(sqlite_url)
    rng = random.Random(8)
    broker = EmbeddedBroker(port=port).start()
    try:
        servers = broker.bootstrap_servers
        ensure_topics(servers, [topics.traffic, topics.dlq])
        env = sidecar_env(servers, topics, sqlite_url)
        env["SIDECAR_KAFKA_AUTO_OFFSET_RESET"] = "latest"  # the default
        sidecar = start_sidecar(env)
        # On `latest` a record produced before the consumer has its position is skipped, and the
        # position is looked up after the assignment: its lag series says it has one.
        wait_until(
            lambda: bool(sidecar.samples("gepa_sidecar_consumer_lag_records")),
            what="the consumer's position on the new topic",
        )
        produce(servers, topics.traffic, [encode(make_event(rng)) for _ in range(20)])
        wait_until(lambda: count_stored_events(engine) == 20, what="20 before the restart")
        sidecar.process.send_signal(signal.SIGSTOP)
        try:
            broker.stop()
            broker = EmbeddedBroker(port=port).start()
            ensure_topics(servers, [topics.traffic, topics.dlq])
            after = [encode(make_event(rng)) for _ in range(30)] + [b"not json"]
            produce(servers, topics.traffic, after)  # one partition: its end is now 31 > 20
        finally:
            sidecar.process.send_signal(signal.SIGCONT)
        wait_until(
            lambda: count_stored_events(engine) == 50,
            timeout=120,
            what="all 30 of the new log, the 20 its old position would skip included",
        )
        wait_until(lambda: ingest_totals(engine)["invalid"] >= 1, what="the bad record")
        assert len(read_all(servers, topics.dlq, expected=1)) >= 1
        assert b"was created again: reading its new log from the start" in sidecar.log.read_bytes()
        sidecar.process.send_signal(signal.SIGTERM)
        assert sidecar.process.wait(timeout=scaled(30)) == 0
    finally:
        broker.stop()


def test_a_blocked_database_pauses_the_partitions_and_loses_nothing(
    kafka_bootstrap: str, topics: Topics, postgres_url: str, engine: Engine
) -> None:
    """The writer blocks on a locked table; the consumer fills its queue, pauses, and keeps
    its group membership; once the lock goes, every event is stored exactly once."""
    settings = sidecar_settings(
        kafka_bootstrap, topics, postgres_url, ingest_batch_size=10, ingest_queue_batches=1
    )
    metrics = Metrics(["customer-care"])
    consumer, thread = start(settings, metrics)
    rng = random.Random(9)
    try:
        assert consumer.wait_assigned(scaled(30))
        with engine.connect() as locker:
            locker.execute(text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
            produce(kafka_bootstrap, topics.traffic, [encode(make_event(rng)) for _ in range(200)])
            wait_until(
                lambda: metrics.registry.get_sample_value("gepa_sidecar_ingest_paused") == 1,
                what="the consumer to pause",
            )
            locker.rollback()
        wait_until(lambda: count_stored_events(engine) == 200, what="all 200 stored")
        wait_until(
            lambda: metrics.registry.get_sample_value("gepa_sidecar_ingest_paused") == 0,
            what="the consumer to resume",
        )
    finally:
        stop(consumer, thread)
    assert ingest_totals(engine) == {
        "accepted": 200,
        "sampled_out": 0,
        "invalid": 0,
        "duplicate": 0,
    }
