"""A consumer group the embedded broker stalls, and the sidecar's consumer getting out of it.

Tansu 0.6.0 keeps a member that left during a join as the group's leader; nobody is assigned
after that (issue #15: a `run` stopped before its assignment, and the next `run` never got a
partition). Each test has a broker of its own: a stalled group stays stalled for the broker's
life. Waits are deadlines on what the test waits for; none asserts speed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from kafka import KafkaConsumer
from kafka.coordinator.base import MemberState
from sqlalchemy import Engine

from sidecar.runtime.broker import EmbeddedBroker
from sidecar.runtime.kafka import ensure_topics
from sidecar.settings import Settings
from sidecar.store.repository import stored_event_ids
from tests.conftest import Topics
from tests.helpers import metric_value, scaled, sidecar_settings, wait_until
from tests.integration.test_consumer_offsets import consuming, send

SESSION_MS = 3000  # a rejoin is due after 3 session timeouts: 9 s
GROUP_TIMINGS = {"session_timeout_ms": SESSION_MS, "heartbeat_interval_ms": 500}


@pytest.fixture
def broker() -> Iterator[str]:
    with EmbeddedBroker() as started:
        yield started.bootstrap_servers


@pytest.fixture
def stalled(broker: str) -> Topics:
    """Topics on the test's own broker, and a group stalled the way issue #15 found it."""
    suffix = uuid.uuid4().hex[:8]
    made = Topics(f"traffic-{suffix}", f"traffic-{suffix}.dlq", f"group-{suffix}")
    ensure_topics(broker, [made.traffic, made.dlq], partitions=2)
    leave_during_a_join(broker, made)
    return made


@pytest.fixture
def engine(sqlite_url: str, migrated_engine: Callable[[str], Engine]) -> Engine:
    return migrated_engine(sqlite_url)


def in_a_join(consumer: KafkaConsumer) -> bool:
    """The consumer has its member id and its JoinGroup is out (its state says so until the
    answer comes, which the embedded broker holds for seconds)."""
    coordinator = consumer._coordinator
    return bool(
        coordinator._generation.has_member_id() and coordinator.state is MemberState.REBALANCING
    )


def leave_during_a_join(bootstrap: str, topics: Topics) -> None:
    """A plain kafka-python consumer that is closed (so sends LeaveGroup) while its first join
    is out: what a `run` stopped before its assignment did."""
    consumer = KafkaConsumer(
        topics.traffic, bootstrap_servers=bootstrap, group_id=topics.group, **GROUP_TIMINGS
    )
    deadline = time.monotonic() + scaled(20)
    while not in_a_join(consumer):
        assert time.monotonic() < deadline, "the first join was never sent"
        consumer.poll(timeout_ms=50)
    consumer.close(autocommit=False)


def settings_for(broker: str, topics: Topics, sqlite_url: str) -> Settings:
    return sidecar_settings(
        broker,
        topics,
        sqlite_url,
        kafka_session_timeout_ms=SESSION_MS,
        kafka_heartbeat_interval_ms=500,
    )


def test_the_embedded_broker_never_assigns_a_group_whose_leader_left_during_a_join(
    broker: str, stalled: Topics
) -> None:
    """The fault itself, so that a Tansu that fixes it shows here (and the workaround can go):
    a plain consumer of the stalled group stays unassigned for four session timeouts."""
    consumer = KafkaConsumer(
        stalled.traffic, bootstrap_servers=broker, group_id=stalled.group, **GROUP_TIMINGS
    )
    try:
        deadline = time.monotonic() + 4 * SESSION_MS / 1000
        while time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)
            assert not consumer.assignment(), "the broker assigned the stalled group"
    finally:
        consumer.close(autocommit=False)


def test_the_consumer_of_a_stalled_group_warns_rejoins_and_consumes(
    broker: str,
    stalled: Topics,
    sqlite_url: str,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.ingest.consumer")
    before = send(broker, stalled.traffic, seed=1, count=10)
    with consuming(settings_for(broker, stalled, sqlite_url)) as (consumer, metrics):
        assert consumer.wait_assigned(scaled(60)), "never assigned"
        after = send(broker, stalled.traffic, seed=2, count=10)
        wait_until(lambda: set(stored_event_ids(engine)) == before | after, 60, "all stored")
        assert metric_value(metrics, "consumer_rejoins_total") >= 1
        assert consumer.unassigned_s == 0
        wait_until(lambda: metric_value(metrics, "consumer_unassigned_seconds") == 0, 10, "0 s")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        message.startswith(f"consumer group {stalled.group}: no partition assigned after")
        and "in its place" in message
        for message in warnings
    ), warnings
    assert any(
        r.getMessage().startswith(f"consumer group {stalled.group}: joined after")
        for r in caplog.records
    )


def test_a_consumer_stopped_during_its_first_join_does_not_stall_the_group(
    broker: str, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """It goes without a LeaveGroup (the group drops it a session timeout later), so the next
    consumer of the group is assigned."""
    caplog.set_level(logging.INFO, logger="kafka.coordinator")
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(f"traffic-{suffix}", f"traffic-{suffix}.dlq", f"group-{suffix}")
    ensure_topics(broker, [topics.traffic, topics.dlq], partitions=2)
    settings = settings_for(broker, topics, sqlite_url)
    with consuming(settings) as (first, _):
        wait_until(lambda: in_a_join(first._consumer), 20, "the first join sent")
    assert not [r for r in caplog.records if r.getMessage().startswith("Leaving consumer group")]
    with consuming(settings) as (second, _):
        assert second.wait_assigned(scaled(60)), "the next consumer was never assigned"
