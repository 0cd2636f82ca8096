"""Where a new consumer group starts (KAFKA_AUTO_OFFSET_RESET), and lag series that follow the
partitions a consumer owns, on a real broker and a real database."""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from kafka import KafkaAdminClient, TopicPartition
from sqlalchemy import Engine

from sidecar.ingest.consumer import TrafficConsumer, _Rebalance
from sidecar.ingest.offsets import StoredBatch
from sidecar.metrics import PREFIX, Metrics
from sidecar.store.repository import stored_event_ids
from tests.conftest import Topics
from tests.helpers import (
    encode,
    make_event,
    metric_value,
    produce,
    scaled,
    sidecar_settings,
    wait_until,
)
from tests.integration.test_crash import committed, writes_blocked

NAME = "customer-care"
LAG = PREFIX + "consumer_lag_records"


@pytest.fixture
def engine(sqlite_url: str, migrated_engine: Callable[[str], Engine]) -> Engine:
    return migrated_engine(sqlite_url)


@contextmanager
def consuming(settings: Any) -> Iterator[tuple[TrafficConsumer, Metrics]]:
    metrics = Metrics([NAME])
    consumer = TrafficConsumer(settings, str(settings.kafka_bootstrap_servers), metrics)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        yield consumer, metrics
    finally:
        consumer.stop()
        thread.join(scaled(60))
        assert not thread.is_alive(), "consumer did not stop"


def lag_partitions(metrics: Metrics, topic: str) -> set[int]:
    """The partitions of `topic` this consumer reports a lag for."""
    return {
        int(sample.labels["partition"])
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == LAG and sample.labels["topic"] == topic
    }


def split(first: Metrics, second: Metrics, topic: str) -> bool:
    """The two consumers of one group report one partition each: the rebalance settled."""
    mine, theirs = lag_partitions(first, topic), lag_partitions(second, topic)
    return len(mine) == len(theirs) == 1 and mine | theirs == {0, 1}


def send(kafka_bootstrap: str, topic: str, seed: int, count: int) -> set[str]:
    """Produce `count` events, one request each: the embedded broker answers a "latest offset"
    request with its last batch's base offset + 1, so a batch of several records would put a
    new group's `latest` start inside it (a real cluster answers the log end)."""
    rng = random.Random(seed)
    events = [make_event(rng) for _ in range(count)]
    for event in events:
        produce(kafka_bootstrap, topic, [encode(event)], [event["event_id"].encode()])
    return {event["event_id"] for event in events}


@pytest.mark.parametrize("reset", ["latest", "earliest"])
def test_a_new_group_starts_where_the_setting_says(
    reset: str, kafka_bootstrap: str, topics: Topics, sqlite_url: str, engine: Engine
) -> None:
    before = send(kafka_bootstrap, topics.traffic, seed=1, count=30)
    settings = sidecar_settings(kafka_bootstrap, topics, sqlite_url, kafka_auto_offset_reset=reset)
    with consuming(settings) as (consumer, metrics):
        assert consumer.wait_assigned(scaled(60))
        # a lag series exists once the consumer has resolved its starting position
        wait_until(lambda: lag_partitions(metrics, topics.traffic) == {0, 1}, 30, "positions")
        after = send(kafka_bootstrap, topics.traffic, seed=2, count=20)
        expected = after if reset == "latest" else before | after
        # per partition the older records come first: once every newer one is stored, a
        # consumer that started at the beginning has stored the older ones too
        wait_until(lambda: after <= set(stored_event_ids(engine)), 60, "the new events stored")
        assert set(stored_event_ids(engine)) == expected


def test_lag_series_follow_the_partitions_the_consumer_owns(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str
) -> None:
    """Two members of one group (the embedded broker rebalances in tens of seconds): the first
    owns both partitions, then only the one it keeps, and reports lag for that one alone; once
    stopped it reports none."""
    send(kafka_bootstrap, topics.traffic, seed=3, count=10)
    settings = sidecar_settings(kafka_bootstrap, topics, sqlite_url)
    with consuming(settings) as (_first, first_metrics):
        wait_until(lambda: lag_partitions(first_metrics, topics.traffic) == {0, 1}, 60, "both")
        with consuming(settings) as (second, second_metrics):
            wait_until(
                lambda: split(first_metrics, second_metrics, topics.traffic),
                120,
                "one lag series each after the rebalance",
            )
            assert second.assigned
    assert lag_partitions(first_metrics, topics.traffic) == set()


def open_sockets() -> int:
    """This process's open sockets, as the kernel counts them."""
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor, gone
            found += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return found


def test_a_consumer_connected_but_never_run_lets_go_of_its_sockets_on_close(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str
) -> None:
    settings = sidecar_settings(kafka_bootstrap, topics, sqlite_url)
    before = open_sockets()
    consumer = TrafficConsumer(settings, kafka_bootstrap, Metrics([NAME]))
    assert open_sockets() > before
    consumer.close()
    assert open_sockets() == before


def test_records_in_flight_at_a_revoke_are_neither_lost_nor_committed_before_stored(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str, engine: Engine
) -> None:
    """The first member holds fetched records its writer cannot store (the database is
    locked) when a second member joins: its revoke drains what it can and commits only what is
    stored; once the lock goes every record is stored once, by one member or the other."""
    before = send(kafka_bootstrap, topics.traffic, seed=5, count=20)
    settings = sidecar_settings(
        kafka_bootstrap, topics, sqlite_url, ingest_batch_size=5, ingest_queue_batches=1
    )
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        with consuming(settings) as (_, first_metrics), ExitStack() as lock:
            wait_until(lambda: committed(admin, topics.group) == 20, 60, "the first 20 committed")
            lock.enter_context(writes_blocked(sqlite_url, engine))
            everything = before | send(kafka_bootstrap, topics.traffic, seed=6, count=30)
            wait_until(lambda: metric_value(first_metrics, "ingest_paused") == 1, 60, "a stall")
            with consuming(settings) as (_, second_metrics):
                wait_until(
                    lambda: split(first_metrics, second_metrics, topics.traffic),
                    120,
                    "the revoke and the new assignment",
                )
                assert len(stored_event_ids(engine)) == 20
                assert committed(admin, topics.group) == 20  # nothing unstored is committed
                lock.close()
                wait_until(lambda: set(stored_event_ids(engine)) == everything, 60, "all stored")
                wait_until(lambda: committed(admin, topics.group) == 50, 60, "all committed")
    finally:
        admin.close()
    ids = stored_event_ids(engine)
    assert len(ids) == len(set(ids)) == 50


@contextmanager
def holding_uncommitted(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str
) -> Iterator[tuple[TrafficConsumer, TopicPartition, KafkaAdminClient]]:
    """A consumer that owns partition 0 (so a revoke would commit its offset) and has stored
    up to offset 5 of it, not committed yet; and an admin client to read the group's offsets."""
    settings = sidecar_settings(kafka_bootstrap, topics, sqlite_url)
    consumer = TrafficConsumer(settings, kafka_bootstrap, Metrics([NAME]))
    partition = TopicPartition(topics.traffic, 0)
    consumer._consumer.assign([partition])
    consumer._offsets.stored(StoredBatch({(topics.traffic, 0): 5}, rewinds=0))
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        yield consumer, partition, admin
    finally:
        admin.close()
        consumer.close()


def forgot_without_committing(
    consumer: TrafficConsumer, admin: KafkaAdminClient, group: str
) -> None:
    owned = {(tp.topic, tp.partition) for tp in consumer._consumer.assignment()}
    assert owned and consumer._offsets.to_commit(owned) == {}
    committed = admin.list_group_offsets(group).get(group, {})
    assert all(meta.offset < 0 for meta in committed.values()), committed


def test_a_lost_membership_forgets_uncommitted_offsets_without_committing(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str
) -> None:
    """Found by R3 (a restarted broker forgets the group): kafka-python reports the eviction
    through on_partitions_lost on its IO thread, where the revoke path's blocking commit raised
    and ended the sidecar. Lost partitions are given up without a commit: redelivered later."""
    with holding_uncommitted(kafka_bootstrap, topics, sqlite_url) as (consumer, partition, admin):
        _Rebalance(consumer).on_partitions_lost({partition})
        forgot_without_committing(consumer, admin, topics.group)


def test_a_revoke_on_kafka_pythons_io_thread_forgets_uncommitted_offsets_without_committing(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str
) -> None:
    """Found by R2 (a restart after kill -9: the dead member's session expires and the group
    rebalances): kafka-python calls on_partitions_revoked on its IO thread, where the drain's
    blocking commit raised and ended the sidecar. The revoke now commits nothing: what was
    stored and not yet committed is redelivered to the next owner and stored once."""
    with holding_uncommitted(kafka_bootstrap, topics, sqlite_url) as (consumer, partition, admin):

        async def revoke_where_kafka_python_does() -> None:
            _Rebalance(consumer).on_partitions_revoked({partition})

        consumer._consumer._coordinator._net.run(revoke_where_kafka_python_does)
        forgot_without_committing(consumer, admin, topics.group)
