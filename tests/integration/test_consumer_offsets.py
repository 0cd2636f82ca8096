"""Where a new consumer group starts (KAFKA_AUTO_OFFSET_RESET), and lag series that follow the
partitions a consumer owns, on a real broker and a real database."""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine

from sidecar.ingest.consumer import TrafficConsumer
from sidecar.metrics import PREFIX, Metrics
from sidecar.store.repository import stored_event_ids
from tests.conftest import Topics
from tests.helpers import encode, make_event, produce, scaled, sidecar_settings, wait_until

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

            def split() -> bool:
                mine = lag_partitions(first_metrics, topics.traffic)
                theirs = lag_partitions(second_metrics, topics.traffic)
                return len(mine) == len(theirs) == 1 and mine | theirs == {0, 1}

            wait_until(split, 120, "one lag series each after the rebalance")
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
